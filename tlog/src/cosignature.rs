//! Witness cosignatures (c2sp.org/tlog-cosignature), the timestamped Ed25519 type `0x04`.
//!
//! A cosignature is a note signature whose bytes are `u64 big-endian timestamp || Ed25519 signature`
//! over the message `"cosignature/v1\ntime <timestamp>\n" || checkpoint text`. Its key id is
//! computed with type byte `0x04`, so the same key cannot be confused with a plain note signer.
//! Verification lives in [`crate::note::VerifierKey`], which accepts keys of either type.

use std::fmt;

use crate::note::{NoteError, Signature, Signer, TYPE_COSIGNATURE, VerifierKey, key_id, valid_key_name};

/// Timestamps above this are invalid (the spec caps them at 2^63 - 1).
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;

/// The signed message for a cosignature at `timestamp` over a checkpoint's note text.
pub fn message(text: &[u8], timestamp: u64) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// Splits cosignature bytes into timestamp and Ed25519 signature; `None` if malformed.
pub(crate) fn split(sig: &[u8]) -> Option<(u64, &[u8])> {
    let (ts, sig) = sig.split_first_chunk::<8>()?;
    let ts = u64::from_be_bytes(*ts);
    (sig.len() == 64 && ts <= MAX_TIMESTAMP).then_some((ts, sig))
}

/// The timestamp of a cosignature line, if it is well-formed.
pub fn timestamp(signature: &Signature) -> Option<u64> {
    split(&signature.bytes).map(|(ts, _)| ts)
}

/// A witness's cosigning key.
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
        if !valid_key_name(name) {
            return Err(NoteError::Key("key name must be non-empty without spaces or '+'"));
        }
        let inner = Signer::from_seed(name, seed)?;
        let key_id = key_id(name, TYPE_COSIGNATURE, &inner.verifier().public_key());
        Ok(Self { inner, key_id })
    }

    /// The cosigner's verifier key (type 0x04).
    pub fn verifier(&self) -> VerifierKey {
        // The name was validated and the key is a valid Ed25519 point, so this cannot fail; fall back to
        // the inner key's form rather than panicking if it ever did.
        VerifierKey::new(
            self.inner.name(),
            TYPE_COSIGNATURE,
            self.inner.verifier().public_key(),
        )
        .unwrap_or_else(|_| self.inner.verifier())
    }

    /// Cosigns a checkpoint's note text at `timestamp` (seconds since the epoch).
    pub fn sign(&self, text: &str, timestamp: u64) -> Result<Signature, NoteError> {
        if timestamp > MAX_TIMESTAMP {
            return Err(NoteError::Key("cosignature timestamps are at most 2^63 - 1"));
        }
        let sig = self.inner.sign_raw(&message(text.as_bytes(), timestamp));
        let mut bytes = timestamp.to_be_bytes().to_vec();
        bytes.extend_from_slice(&sig);
        Ok(Signature {
            name: self.inner.name().to_owned(),
            key_id: self.key_id,
            bytes,
        })
    }
}
