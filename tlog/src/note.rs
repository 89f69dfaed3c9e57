//! Signed notes (c2sp.org/signed-note) with Ed25519 signatures, and their key formats.
//!
//! A note is UTF-8 text ending in a newline, a blank line, and one or more lines
//! `— <key name> <base64(key id || signature)>`. A key is identified by its name and a 4-byte key id,
//! `SHA-256(name || 0x0A || type || public key)[:4]`. Verifier keys are written
//! `<name>+<8 hex key id>+<base64(type || public key)>`; signer keys use the Go `note` package form
//! `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || 32-byte seed)>`.
//!
//! Verification follows the spec's rules: signatures from unknown keys are ignored, a signature from a
//! known key must verify or the whole note is rejected, and at least one known key must have signed.
//!
//! Keys of both signature types live here: [`Signer`] (Ed25519, type `0x01`), [`Cosigner`] (witness
//! cosignatures, type `0x04`, whose wire format is [`crate::cosignature`]), and [`VerifierKey`] for either.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::Signer as _;
use sha2::{Digest, Sha256};

use crate::cosignature;

/// Signature type byte of plain Ed25519 note signatures.
pub const TYPE_ED25519: u8 = 0x01;
pub use crate::cosignature::TYPE_COSIGNATURE;
/// The most signatures a note may carry; the spec requires accepting at least 16.
pub const MAX_SIGNATURES: usize = 100;
/// The largest note accepted, in bytes.
pub const MAX_NOTE_SIZE: usize = 1 << 20;

const SIG_PREFIX: &str = "\u{2014} ";

/// A note or key that is malformed, or a note that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The note does not follow the signed-note format.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// No signature by any of the given keys.
    #[error("note has no signature by a known key")]
    Unverified,
    /// A signature by a known key does not verify.
    #[error("invalid signature by known key {0}")]
    InvalidSignature(String),
    /// A key string is malformed.
    #[error("malformed key: {0}")]
    Key(&'static str),
}

/// The full key hash `SHA-256(name || '\n' || type || key)`: the key id is its first four bytes, and
/// Sigstore names a log by all 32 (its `logId`).
pub fn key_hash(name: &str, key_type: u8, public_key: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', key_type]);
    h.update(public_key);
    h.finalize().into()
}

/// Computes a key id: the first four bytes, big-endian, of [`key_hash`].
pub fn key_id(name: &str, key_type: u8, public_key: &[u8]) -> u32 {
    let d = key_hash(name, key_type, public_key);
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Whether a key name is valid: non-empty, no Unicode white space and no `+`.
pub fn valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The key name.
    pub name: String,
    /// The key id.
    pub key_id: u32,
    /// The signature bytes (after the key id).
    pub bytes: Vec<u8>,
}

impl Signature {
    /// The signature line, with its trailing newline.
    pub fn line(&self) -> String {
        let mut raw = self.key_id.to_be_bytes().to_vec();
        raw.extend_from_slice(&self.bytes);
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }

    /// Parses one signature line (without its trailing newline).
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "signature line must start with an em dash and a space",
        ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("signature line has no signature"))?;
        if !valid_key_name(name) {
            return Err(NoteError::Malformed("invalid key name in signature line"));
        }
        let raw = STANDARD
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not valid base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature is too short"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            bytes: raw[4..].to_vec(),
        })
    }
}

/// A parsed note: its text and its signatures, as yet unverified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// The signatures, in the order they appear.
    pub signatures: Vec<Signature>,
}

impl Note {
    /// A note with no signatures yet.
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_text(&text)?;
        Ok(Self {
            text,
            signatures: Vec::new(),
        })
    }

    /// Parses a signed note without verifying it.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_SIZE {
            return Err(NoteError::Malformed("note is too large"));
        }
        let s = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("note is not UTF-8"))?;
        if s.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("note contains control characters"));
        }
        if !s.ends_with('\n') {
            return Err(NoteError::Malformed("note does not end in a newline"));
        }
        let split = s
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let (text, sigs) = (&s[..split + 1], &s[split + 2..]);
        check_text(text)?;
        let lines: Vec<&str> = sigs.strip_suffix('\n').unwrap_or(sigs).split('\n').collect();
        if sigs.is_empty() {
            return Err(NoteError::Malformed("note has no signatures"));
        }
        if lines.len() > MAX_SIGNATURES {
            return Err(NoteError::Malformed("note has too many signatures"));
        }
        let signatures = lines
            .into_iter()
            .map(Signature::parse_line)
            .collect::<Result<_, _>>()?;
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The note in wire form: text, blank line, signature lines.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.text.clone();
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.line());
        }
        out.into_bytes()
    }

    /// Adds a signature line.
    pub fn push(&mut self, signature: Signature) {
        self.signatures.push(signature);
    }

    /// Signs the text with `signer` and adds the signature.
    pub fn sign(&mut self, signer: &Signer) {
        self.push(signer.sign(&self.text));
    }

    /// Verifies the note against known keys. Returns the signatures that verified (in note order).
    /// Fails if a known key's signature does not verify, or if no known key signed.
    pub fn verify<'n>(&'n self, known: &[VerifierKey]) -> Result<Vec<&'n Signature>, NoteError> {
        let mut verified = Vec::new();
        for sig in &self.signatures {
            let Some(key) = known
                .iter()
                .find(|k| k.name == sig.name && k.key_id == sig.key_id)
            else {
                continue;
            };
            if !key.verify(self.text.as_bytes(), &sig.bytes) {
                return Err(NoteError::InvalidSignature(sig.name.clone()));
            }
            verified.push(sig);
        }
        if verified.is_empty() {
            Err(NoteError::Unverified)
        } else {
            Ok(verified)
        }
    }

    /// Parses and verifies in one step.
    pub fn open(bytes: &[u8], known: &[VerifierKey]) -> Result<Self, NoteError> {
        let note = Self::parse(bytes)?;
        note.verify(known)?;
        Ok(note)
    }
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::Malformed("note text must end in a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("note text contains control characters"));
    }
    Ok(())
}

/// A public key that verifies note signatures: plain Ed25519 (type 0x01) or a witness cosignature
/// key (type 0x04).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    /// Key name.
    pub name: String,
    /// Key id.
    pub key_id: u32,
    /// Signature type byte.
    pub key_type: u8,
    key: ed25519_dalek::VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl VerifierKey {
    /// Builds a verifier key from its parts.
    pub fn new(name: &str, key_type: u8, public_key: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::Key("key name must be non-empty without spaces or '+'"));
        }
        if key_type != TYPE_ED25519 && key_type != TYPE_COSIGNATURE {
            return Err(NoteError::Key(
                "unsupported key type; Ed25519 (1) and Ed25519 cosignature (4) are supported",
            ));
        }
        let key = ed25519_dalek::VerifyingKey::from_bytes(&public_key)
            .map_err(|_| NoteError::Key("invalid Ed25519 public key"))?;
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, key_type, &public_key),
            key_type,
            key,
        })
    }

    /// Parses `<name>+<hex key id>+<base64(type || public key)>`, checking the key id.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        // Names contain no '+', but base64 keys may.
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key("verifier key must be <name>+<key id>+<key>"));
        };
        let id = parse_key_id(id)?;
        let raw = STANDARD
            .decode(key)
            .map_err(|_| NoteError::Key("key is not valid base64"))?;
        let (&key_type, public) = raw.split_first().ok_or(NoteError::Key("key is empty"))?;
        let public: [u8; 32] = public
            .try_into()
            .map_err(|_| NoteError::Key("Ed25519 public keys are 32 bytes"))?;
        let vk = Self::new(name, key_type, public)?;
        if vk.key_id != id {
            return Err(NoteError::Key("key id does not match the key"));
        }
        Ok(vk)
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The full 32-byte key hash (see [`key_hash`]).
    pub fn key_hash(&self) -> [u8; 32] {
        key_hash(&self.name, self.key_type, &self.key.to_bytes())
    }

    /// Verifies `sig` (without the key id) over a note's `text`.
    pub fn verify(&self, text: &[u8], sig: &[u8]) -> bool {
        match self.key_type {
            TYPE_ED25519 => self.verify_raw(text, sig),
            TYPE_COSIGNATURE => match cosignature::split(sig) {
                Some((timestamp, sig)) => self.verify_raw(&cosignature::message(text, timestamp), sig),
                None => false,
            },
            _ => false,
        }
    }

    fn verify_raw(&self, msg: &[u8], sig: &[u8]) -> bool {
        let Ok(sig) = <[u8; 64]>::try_from(sig) else {
            return false;
        };
        self.key
            .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
            .is_ok()
    }
}

impl fmt::Display for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![self.key_type];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.key_id, STANDARD.encode(raw))
    }
}

fn parse_key_id(hex: &str) -> Result<u32, NoteError> {
    if hex.len() != 8
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(NoteError::Key("key id must be 8 lower-case hex digits"));
    }
    u32::from_str_radix(hex, 16).map_err(|_| NoteError::Key("key id must be 8 lower-case hex digits"))
}

/// An Ed25519 note signer (signature type 0x01). Signatures are deterministic (RFC 8032).
#[derive(Clone)]
pub struct Signer {
    name: String,
    key_id: u32,
    key: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        write!(f, "Signer({}+{:08x})", self.name, self.key_id)
    }
}

impl Signer {
    /// A signer for key `name` from a 32-byte Ed25519 seed (the caller supplies the randomness).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        if !valid_key_name(name) {
            return Err(NoteError::Key("key name must be non-empty without spaces or '+'"));
        }
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let key_id = key_id(name, TYPE_ED25519, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            key_id,
            key,
        })
    }

    /// Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`.
    pub fn parse(skey: &str) -> Result<Self, NoteError> {
        let rest = skey
            .trim_end()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or(NoteError::Key("signer key must start with PRIVATE+KEY+"))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::Key(
                "signer key must be PRIVATE+KEY+<name>+<key id>+<key>",
            ));
        };
        let id = parse_key_id(id)?;
        let raw = STANDARD
            .decode(key)
            .map_err(|_| NoteError::Key("key is not valid base64"))?;
        let (&key_type, seed) = raw.split_first().ok_or(NoteError::Key("key is empty"))?;
        if key_type != TYPE_ED25519 {
            return Err(NoteError::Key("only Ed25519 (type 1) signer keys are supported"));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| NoteError::Key("Ed25519 seeds are 32 bytes"))?;
        let signer = Self::from_seed(name, seed)?;
        if signer.key_id != id {
            return Err(NoteError::Key("key id does not match the key"));
        }
        Ok(signer)
    }

    /// The signer key string, `PRIVATE+KEY+...`. Treat it as a secret.
    pub fn to_skey(&self) -> String {
        let mut raw = vec![TYPE_ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_id,
            STANDARD.encode(raw)
        )
    }

    /// Key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Key id.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key_id: self.key_id,
            key_type: TYPE_ED25519,
            key: self.key.verifying_key(),
        }
    }

    /// Signs a note text.
    pub fn sign(&self, text: &str) -> Signature {
        Signature {
            name: self.name.clone(),
            key_id: self.key_id,
            bytes: self.key.sign(text.as_bytes()).to_bytes().to_vec(),
        }
    }

    fn sign_raw(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// A witness's cosigning key (c2sp.org/tlog-cosignature, signature type 0x04).
#[derive(Clone)]
pub struct Cosigner {
    inner: Signer,
    key_id: u32,
}

impl fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cosigner({}+{:08x})", self.inner.name(), self.key_id)
    }
}

impl Cosigner {
    /// A cosigner named `name` from a 32-byte Ed25519 seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        Ok(Self::from_signer(Signer::from_seed(name, seed)?))
    }

    /// A cosigner with the same name and Ed25519 key as `signer` (so a witness key can be stored in the
    /// signed-note private key form `PRIVATE+KEY+...`). Its key id differs: it is computed with type 0x04.
    pub fn from_signer(signer: Signer) -> Self {
        let key_id = key_id(
            &signer.name,
            TYPE_COSIGNATURE,
            signer.key.verifying_key().as_bytes(),
        );
        Self {
            inner: signer,
            key_id,
        }
    }

    /// The cosigner's verifier key (type 0x04).
    pub fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.inner.name.clone(),
            key_id: self.key_id,
            key_type: TYPE_COSIGNATURE,
            key: self.inner.key.verifying_key(),
        }
    }

    /// Cosigns a checkpoint's note text at `timestamp` (seconds since the epoch).
    pub fn sign(&self, text: &str, timestamp: u64) -> Result<Signature, NoteError> {
        if timestamp > cosignature::MAX_TIMESTAMP {
            return Err(NoteError::Key("cosignature timestamps are at most 2^63 - 1"));
        }
        let sig = self
            .inner
            .sign_raw(&cosignature::message(text.as_bytes(), timestamp));
        Ok(Signature {
            name: self.inner.name.clone(),
            key_id: self.key_id,
            bytes: cosignature::encode(timestamp, &sig),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_strings_round_trip() {
        let s = Signer::from_seed("example.com/log", [7; 32]).expect("valid");
        let again = Signer::parse(&s.to_skey()).expect("parses");
        assert_eq!(again.verifier(), s.verifier());
        let v = VerifierKey::parse(&s.verifier().to_string()).expect("parses");
        assert_eq!(v, s.verifier());
        assert!(
            format!("{s:?}").find(&s.to_skey()[12..]).is_none(),
            "debug output must not leak the key"
        );
        for bad in [
            "",
            "a+b",
            "name+0000000g+AQ==",
            "na me+00000000+AQ==",
            "n+00000000+AQ==",
            "n+00000000+!!",
        ] {
            assert!(VerifierKey::parse(bad).is_err(), "{bad}");
        }
        assert!(Signer::from_seed("has+plus", [0; 32]).is_err());
    }

    #[test]
    fn cosigner_signs_type_4() {
        let c = Cosigner::from_seed("witness", [3; 32]).expect("valid");
        let plain = Signer::from_seed("witness", [3; 32]).expect("valid");
        let v = c.verifier();
        assert_eq!(v.key_type, TYPE_COSIGNATURE);
        assert_ne!(
            v.key_id,
            plain.key_id(),
            "the type byte separates the two key ids"
        );
        assert_eq!(VerifierKey::parse(&v.to_string()), Ok(v.clone()));
        let sig = c.sign("t\n", 1234).expect("signs");
        assert_eq!(cosignature::timestamp(&sig.bytes), Some(1234));
        assert!(v.verify(b"t\n", &sig.bytes));
        assert!(!v.verify(b"u\n", &sig.bytes));
        assert!(!plain.verifier().verify(b"t\n", &sig.bytes));
        assert!(c.sign("t\n", cosignature::MAX_TIMESTAMP + 1).is_err());
        assert!(Cosigner::from_seed("has space", [3; 32]).is_err());
    }

    #[test]
    fn parse_rejects_malformed() {
        let good = "t\n\n\u{2014} k AAAAAAA=\n";
        assert!(Note::parse(good.as_bytes()).is_ok());
        for bad in [
            "t\n\u{2014} k AAAAAAA=\n",
            "t\n\n\u{2014} k AAAAAAA=",
            "t\n\n\u{2014} k AAAA\n",
            "t\n\n- k AAAAAAA=\n",
            "t\n\n\u{2014} k+x AAAAAAA=\n",
            "t\r\n\n\u{2014} k AAAAAAA=\n",
            "t\n\n",
        ] {
            assert!(Note::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(Note::parse(b"t\n\n\xff\n").is_err());
    }
}
