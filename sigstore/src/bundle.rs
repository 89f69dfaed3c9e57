//! Offline verification of a Sigstore bundle (v0.3, also v0.2) whose log entry is a Rekor v2
//! `hashedrekord` 0.0.2 entry: who signed what, when, and that the log holds it.
//!
//! The checks run in the order Sigstore clients run them, so that a bundle wrong in several ways
//! fails for the same reason here as there (sigstore-python 4.5 is the reference the tests compare
//! with):
//!
//! 1. [`Check::Timestamp`]: every RFC 3161 timestamp over the signature is verified against the
//!    trusted TSAs; those that fail are set aside, and at least one must hold (a Rekor v2 entry has
//!    no integrated time: the timestamps are the only evidence of when the signature existed).
//! 2. [`Check::Certificate`]: the signing certificate chains to a trusted Fulcio CA, every
//!    certificate valid at every verified time; an embedded SCT from a trusted CT log; the
//!    code-signing profile. (Keyed bundles: the key must be the one the verifier names.)
//! 3. [`Check::Issuer`], then [`Check::Identity`]: the policy on the certificate's OIDC issuer and
//!    subject alternative names, exact or by regular expression.
//! 4. [`Check::Inclusion`]: the entry's body is at its index under the proof's root.
//! 5. [`Check::Checkpoint`]: the checkpoint is signed by the log the entry names (found by `logId`
//!    in the trusted root) and commits to that root and size.
//! 6. [`Check::Artifact`], [`Check::Signature`]: the artifact's digest is the signed one; the
//!    signature verifies (for a DSSE envelope: over its PAE, and the artifact is one of the in-toto
//!    statement's subjects).
//! 7. [`Check::Body`]: the logged body is this bundle's: the same digest, signature and
//!    certificate (or key).
//!
//! A witness policy on the checkpoint is the caller's ([`Verified::checkpoint`] is the note).

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_tlog::{Checkpoint, Hash as TreeHash, Note, VerifierKey, leaf_hash, verify_inclusion};
use cairn_tsa::verify_timestamp;
use sha2::{Digest, Sha256, Sha384, Sha512};
use sigstore_protobuf_specs::dev::sigstore::bundle::v1::{Bundle, bundle, verification_material};
use sigstore_protobuf_specs::dev::sigstore::common::v1::HashAlgorithm;

use crate::certificate::{SigningCertificate, hex, rfc3339, verify_fulcio};
use crate::hashedrekord::{API_VERSION, KIND, Signer, parse_logged};
pub use crate::trusted::{Trust, TrustedLog};
use crate::verify::{Hash, KeyType, PublicKey};

/// At most this many timestamps are looked at (as Sigstore clients do).
pub const MAX_TIMESTAMPS: usize = 32;

/// Which check a bundle failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// The bundle is not one this verifier reads.
    Format,
    /// No timestamp verified.
    Timestamp,
    /// The certificate (chain, validity, SCT, profile) or the key.
    Certificate,
    /// The OIDC issuer is not the expected one.
    Issuer,
    /// No subject alternative name is the expected identity.
    Identity,
    /// The inclusion proof does not lead to its root.
    Inclusion,
    /// The checkpoint is not signed by the entry's log, or commits to another tree.
    Checkpoint,
    /// The artifact is not the signed one.
    Artifact,
    /// The signature does not verify.
    Signature,
    /// The logged body is not this bundle's.
    Body,
}

impl Check {
    /// A short name, for JSON output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Format => "format",
            Self::Timestamp => "timestamp",
            Self::Certificate => "certificate",
            Self::Issuer => "issuer",
            Self::Identity => "identity",
            Self::Inclusion => "inclusion",
            Self::Checkpoint => "checkpoint",
            Self::Artifact => "artifact",
            Self::Signature => "signature",
            Self::Body => "body",
        }
    }
}

/// Why a bundle does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    /// The check that failed.
    pub check: Check,
    /// What was wrong, for a person.
    pub message: String,
}

fn fail<T>(check: Check, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure {
        check,
        message: message.into(),
    })
}

/// A value to match: exactly, or by a regular expression (unanchored, as Sigstore clients do).
#[derive(Clone, Debug)]
pub enum Matcher {
    /// Equal to this.
    Exact(String),
    /// Matching this.
    Regex(regex::Regex),
}

impl Matcher {
    /// A regular expression matcher.
    pub fn regex(pattern: &str) -> Result<Self, String> {
        regex::Regex::new(pattern)
            .map(Self::Regex)
            .map_err(|e| format!("not a regular expression: {e}"))
    }

    /// Whether `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => s == value,
            Self::Regex(r) => r.is_match(value),
        }
    }
}

impl std::fmt::Display for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(s) => write!(f, "{s:?}"),
            Self::Regex(r) => write!(f, "/{}/", r.as_str()),
        }
    }
}

/// Whom the verifier expects to have signed.
#[derive(Clone, Debug)]
pub enum Expect {
    /// A Fulcio certificate for this identity (a subject alternative name) from this OIDC issuer.
    Identity {
        /// The identity.
        identity: Matcher,
        /// The issuer.
        issuer: Matcher,
    },
    /// A signature by this key (a keyed, certificate-less bundle, or a certificate for this key).
    Key(PublicKey),
}

/// What is signed: the artifact's bytes, or only its SHA-256 digest.
#[derive(Clone, Copy, Debug)]
pub enum Artifact<'a> {
    /// The bytes.
    Bytes(&'a [u8]),
    /// A SHA-256 digest of them.
    Sha256(&'a [u8; 32]),
}

impl Artifact<'_> {
    fn digest(&self, hash: Hash) -> Option<Vec<u8>> {
        match (self, hash) {
            (Self::Bytes(b), Hash::Sha256) => Some(Sha256::digest(b).to_vec()),
            (Self::Bytes(b), Hash::Sha384) => Some(Sha384::digest(b).to_vec()),
            (Self::Bytes(b), Hash::Sha512) => Some(Sha512::digest(b).to_vec()),
            (Self::Sha256(d), Hash::Sha256) => Some(d.to_vec()),
            (Self::Sha256(_), _) => None,
        }
    }
}

/// A bundle that verified.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The entry's index in its log.
    pub log_index: u64,
    /// The log's id (hex).
    pub log_id: String,
    /// The log's base URL from the trusted root.
    pub log_url: String,
    /// The checkpoint's tree size.
    pub tree_size: u64,
    /// The signed checkpoint (the whole note: witness cosignatures are the caller's to check).
    pub checkpoint: Vec<u8>,
    /// The verified signing times (the timestamps' `genTime`s).
    pub signed_at: Vec<SystemTime>,
    /// The signing certificate's subject alternative names (empty for a keyed bundle).
    pub sans: Vec<String>,
    /// Its OIDC issuer.
    pub issuer: Option<String>,
}

/// What the bundle says was signed, with what.
struct Signed {
    /// The digest the log entry records: the artifact's, or the DSSE PAE's.
    digest: Vec<u8>,
    hash: Hash,
    signature: Vec<u8>,
    /// A DSSE envelope's PAE and payload.
    dsse: Option<(Vec<u8>, Vec<u8>)>,
}

/// Verifies `bundle` (JSON) for `artifact` against `trust`, expecting `expect`, at no network cost.
pub fn verify(
    bundle: &[u8],
    artifact: Artifact<'_>,
    trust: &Trust,
    expect: &Expect,
) -> Result<Verified, Failure> {
    let bundle: Bundle = serde_json::from_slice(bundle).map_err(|e| Failure {
        check: Check::Format,
        message: format!("not a Sigstore bundle: {e}"),
    })?;
    if !bundle
        .media_type
        .starts_with("application/vnd.dev.sigstore.bundle")
    {
        return fail(
            Check::Format,
            format!("unknown bundle media type {:?}", bundle.media_type),
        );
    }
    let material = bundle.verification_material.as_ref().ok_or_else(|| Failure {
        check: Check::Format,
        message: "the bundle has no verification material".into(),
    })?;
    let [entry] = material.tlog_entries.as_slice() else {
        return fail(
            Check::Format,
            format!(
                "the bundle must have exactly one tlog entry, not {}",
                material.tlog_entries.len()
            ),
        );
    };
    let kv = entry.kind_version.as_ref();
    if kv.map(|k| (k.kind.as_str(), k.version.as_str())) != Some((KIND, API_VERSION)) {
        return fail(
            Check::Format,
            format!(
                "the tlog entry is {} {}; only {KIND} {API_VERSION} (Rekor v2) entries are verified here",
                kv.map_or("", |k| k.kind.as_str()),
                kv.map_or("", |k| k.version.as_str())
            ),
        );
    }
    let proof = entry.inclusion_proof.as_ref().ok_or_else(|| Failure {
        check: Check::Format,
        message: "the tlog entry has no inclusion proof".into(),
    })?;
    let checkpoint = proof
        .checkpoint
        .as_ref()
        .map(|c| c.envelope.clone())
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Failure {
            check: Check::Format,
            message: "the inclusion proof has no checkpoint".into(),
        })?;
    let mut signed = signed_content(&bundle)?;

    // 1. When: the timestamps over the signature.
    let stamps = material
        .timestamp_verification_data
        .as_ref()
        .map(|t| t.rfc3161_timestamps.as_slice())
        .unwrap_or_default();
    if stamps.is_empty() {
        return fail(
            Check::Timestamp,
            "the bundle has no RFC 3161 timestamp; a Rekor v2 entry has no integrated time, so a timestamp \
             is the only evidence of when the signature was made",
        );
    }
    if stamps.len() > MAX_TIMESTAMPS {
        return fail(Check::Timestamp, format!("more than {MAX_TIMESTAMPS} timestamps"));
    }
    let mut signed_at = Vec::new();
    let mut why = Vec::new();
    for stamp in stamps {
        match verify_timestamp(&stamp.signed_timestamp, &signed.signature, &trust.tsas) {
            Ok(v) => signed_at.push(v.time),
            Err(e) => why.push(e),
        }
    }
    if signed_at.is_empty() {
        return fail(
            Check::Timestamp,
            format!(
                "no timestamp verifies against the trusted root's TSAs: {}",
                why.join("; ")
            ),
        );
    }

    // 2. Who: the certificate (or key), then the policy.
    let certificate = match &material.content {
        Some(verification_material::Content::Certificate(c)) => Some(c.raw_bytes.clone()),
        Some(verification_material::Content::X509CertificateChain(c)) => {
            c.certificates.first().map(|c| c.raw_bytes.clone())
        }
        Some(verification_material::Content::PublicKey(_)) | None => None,
    };
    let (key, cert) = match (&certificate, expect) {
        (Some(der), _) => {
            let cert = SigningCertificate::parse(der).map_err(|e| Failure {
                check: Check::Certificate,
                message: e,
            })?;
            if trust.ctlogs.is_empty() && !trust.ignore_sct_without_ctlogs {
                return fail(
                    Check::Certificate,
                    "the trusted root lists no CT logs, so the certificate's embedded SCT cannot be \
                     checked: use a root with the CA's CT log, or accept certificates without SCTs \
                     (cairn verify-bundle --insecure-ignore-sct)",
                );
            }
            verify_fulcio(&cert, &signed_at, &trust.cas, &trust.ctlogs).map_err(|e| Failure {
                check: Check::Certificate,
                message: e,
            })?;
            (cert.key.clone(), Some(cert))
        }
        (None, Expect::Key(key)) => (key.clone(), None),
        (None, Expect::Identity { .. }) => {
            return fail(
                Check::Certificate,
                "the bundle is signed with a key, not a certificate; verify it with --key",
            );
        }
    };
    match (expect, &cert) {
        (Expect::Identity { identity, issuer }, Some(cert)) => {
            let got = cert.issuer.as_deref().unwrap_or_default();
            if !issuer.matches(got) {
                return fail(
                    Check::Issuer,
                    format!("the certificate's OIDC issuer is {got:?}, not {issuer}"),
                );
            }
            if !cert.sans.iter().any(|s| identity.matches(s)) {
                return fail(
                    Check::Identity,
                    format!("the certificate is for {:?}, not {identity}", cert.sans),
                );
            }
        }
        (Expect::Key(want), _) => {
            if want.spki() != key.spki() {
                return fail(
                    Check::Certificate,
                    "the bundle is signed with another key than --key",
                );
            }
        }
        (Expect::Identity { .. }, None) => unreachable!("a keyed bundle was refused above"),
    }

    // 3. Where: the entry in the log.
    let index = u64::try_from(proof.log_index).map_err(|_| Failure {
        check: Check::Inclusion,
        message: "negative log index".into(),
    })?;
    let size = u64::try_from(proof.tree_size).map_err(|_| Failure {
        check: Check::Inclusion,
        message: "negative tree size".into(),
    })?;
    let hashes = proof
        .hashes
        .iter()
        .map(|h| TreeHash::from_slice(h))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Failure {
            check: Check::Inclusion,
            message: "an inclusion proof hash is not 32 bytes".into(),
        })?;
    let root = TreeHash::from_slice(&proof.root_hash).map_err(|_| Failure {
        check: Check::Inclusion,
        message: "the proof's root hash is not 32 bytes".into(),
    })?;
    let leaf = leaf_hash(&entry.canonicalized_body);
    if let Err(e) = verify_inclusion(&leaf, index, size, &hashes, &root) {
        return fail(
            Check::Inclusion,
            format!(
                "the inclusion proof for entry {index} in a tree of {size} does not lead to its root: {e}"
            ),
        );
    }
    let log_id = entry
        .log_id
        .as_ref()
        .map(|l| l.key_id.clone())
        .unwrap_or_default();
    let log = trust
        .tlogs
        .iter()
        .find(|l| l.log_id == log_id)
        .ok_or_else(|| Failure {
            check: Check::Checkpoint,
            message: format!(
                "the entry's log (logId {}) is not in the trusted root",
                hex(&log_id)
            ),
        })?;
    let (tree, note) = open_checkpoint(checkpoint.as_bytes(), log)?;
    if tree.root != root || tree.size != size {
        return fail(
            Check::Checkpoint,
            format!(
                "the checkpoint is for a tree of {} with root {}, but the proof is for a tree of {size} with root {}",
                tree.size,
                tree.root.to_base64(),
                root.to_base64()
            ),
        );
    }
    // A signature is timestamped before it is logged, so a time before the log's start is what a
    // bundle logged as a shard opens carries (sigstore-go, cosign and sigstore-python check no
    // window of the log's key for a Rekor v2 entry). A time after its end is not: the log took no
    // entries once its key stopped being trusted.
    if let Some(until) = log.valid_until
        && let Some(t) = signed_at.iter().find(|t| **t > until)
    {
        return fail(
            Check::Checkpoint,
            format!(
                "the log's key was trusted until {}, before the signing time {}",
                rfc3339(until),
                rfc3339(*t)
            ),
        );
    }

    // 4. What: the artifact and the signature over it.
    match &signed.dsse {
        None => {
            let want = artifact.digest(signed.hash).ok_or_else(|| Failure {
                check: Check::Artifact,
                message: format!(
                    "the bundle signs a {} digest; give the artifact itself",
                    signed.hash.name()
                ),
            })?;
            if want != signed.digest {
                return fail(
                    Check::Artifact,
                    "the artifact's digest is not the one the bundle signs",
                );
            }
        }
        Some((_, payload)) => in_toto_subject(payload, artifact)?,
    }
    let key_hash = key_hash(&key);
    if signed.dsse.is_some() && *key.key_type() == KeyType::Ed25519 {
        return fail(
            Check::Signature,
            "DSSE envelopes signed with Ed25519 (pure, over the PAE) are not verified here",
        );
    }
    if let Some((pae, _)) = &signed.dsse {
        // The log records the PAE's digest with the key's hash (SHA-384 for P-384, ...).
        signed.digest = digest_of(key_hash, pae);
    }
    let signed_digest = signed.digest.clone();
    key.verify_digest(key_hash, &signed_digest, &signed.signature)
        .map_err(|e| Failure {
            check: Check::Signature,
            message: e,
        })?;

    // 5. The logged body is this bundle's.
    check_body(&entry.canonicalized_body, &signed, certificate.as_deref(), &key)?;

    Ok(Verified {
        log_index: index,
        log_id: hex(&log_id),
        log_url: log.base_url.clone(),
        tree_size: size,
        checkpoint: note.to_bytes(),
        signed_at,
        sans: cert.as_ref().map(|c| c.sans.clone()).unwrap_or_default(),
        issuer: cert.and_then(|c| c.issuer),
    })
}

/// The hash a key signs with in hashedrekord (ECDSA by curve, RSA SHA-256, Ed25519ph SHA-512).
fn key_hash(key: &PublicKey) -> Hash {
    match key.key_type() {
        KeyType::P384 => Hash::Sha384,
        KeyType::P521 | KeyType::Ed25519 => Hash::Sha512,
        _ => Hash::Sha256,
    }
}

fn digest_of(hash: Hash, data: &[u8]) -> Vec<u8> {
    match hash {
        Hash::Sha256 => Sha256::digest(data).to_vec(),
        Hash::Sha384 => Sha384::digest(data).to_vec(),
        Hash::Sha512 => Sha512::digest(data).to_vec(),
    }
}

fn signed_content(bundle: &Bundle) -> Result<Signed, Failure> {
    match &bundle.content {
        Some(bundle::Content::MessageSignature(m)) => {
            let d = m.message_digest.as_ref().ok_or_else(|| Failure {
                check: Check::Format,
                message: "the message signature has no digest".into(),
            })?;
            let hash = match HashAlgorithm::try_from(d.algorithm) {
                Ok(HashAlgorithm::Sha2256) => Hash::Sha256,
                Ok(HashAlgorithm::Sha2384) => Hash::Sha384,
                Ok(HashAlgorithm::Sha2512) => Hash::Sha512,
                _ => {
                    return fail(
                        Check::Format,
                        format!("unsupported digest algorithm {}", d.algorithm),
                    );
                }
            };
            Ok(Signed {
                digest: d.digest.clone(),
                hash,
                signature: m.signature.clone(),
                dsse: None,
            })
        }
        Some(bundle::Content::DsseEnvelope(env)) => {
            let [sig] = env.signatures.as_slice() else {
                return fail(Check::Format, "the DSSE envelope must have exactly one signature");
            };
            let pae = pae(&env.payload_type, &env.payload);
            Ok(Signed {
                digest: Sha256::digest(&pae).to_vec(),
                hash: Hash::Sha256,
                signature: sig.sig.clone(),
                dsse: Some((pae, env.payload.clone())),
            })
        }
        None => fail(
            Check::Format,
            "the bundle has neither a message signature nor a DSSE envelope",
        ),
    }
}

/// DSSE's pre-authentication encoding.
fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// The artifact must be a subject of the in-toto statement.
fn in_toto_subject(payload: &[u8], artifact: Artifact<'_>) -> Result<(), Failure> {
    let statement: serde_json::Value = serde_json::from_slice(payload).map_err(|e| Failure {
        check: Check::Artifact,
        message: format!("the DSSE payload is not an in-toto statement: {e}"),
    })?;
    let want = hex(&artifact.digest(Hash::Sha256).unwrap_or_default());
    let found = statement["subject"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|s| s["digest"]["sha256"].as_str() == Some(want.as_str()));
    if found {
        Ok(())
    } else {
        fail(
            Check::Artifact,
            "the artifact is not a subject of the signed in-toto statement",
        )
    }
}

/// Opens the checkpoint with the log's key: a signature line whose key id is the first four bytes of
/// the log id, by the same name, verifying over the text with the log's key.
fn open_checkpoint(note: &[u8], log: &TrustedLog) -> Result<(Checkpoint, Note), Failure> {
    let bad = |m: String| Failure {
        check: Check::Checkpoint,
        message: m,
    };
    let parsed = Note::parse(note).map_err(|e| bad(format!("the checkpoint is not a signed note: {e}")))?;
    let mut signed_by = None;
    for sig in &parsed.signatures {
        let Ok(key) = VerifierKey::new(&sig.name, 0x01, log.key) else {
            continue;
        };
        if key.key_id != sig.key_id || key.key_hash().as_slice() != log.log_id.as_slice() {
            continue;
        }
        if !key.verify(parsed.text.as_bytes(), &sig.bytes) {
            return Err(bad(format!(
                "the checkpoint's signature by {} does not verify",
                sig.name
            )));
        }
        signed_by = Some(sig.name.clone());
    }
    let Some(signer) = signed_by else {
        return Err(bad(format!(
            "the checkpoint is not signed by the entry's log ({})",
            log.base_url
        )));
    };
    let tree =
        Checkpoint::parse(&parsed.text).map_err(|e| bad(format!("the checkpoint does not parse: {e}")))?;
    if tree.origin != signer {
        return Err(bad(format!(
            "the checkpoint's origin {:?} is not the name of the key that signed it ({signer:?})",
            tree.origin
        )));
    }
    Ok((tree, parsed))
}

fn check_body(
    body: &[u8],
    signed: &Signed,
    certificate: Option<&[u8]>,
    key: &PublicKey,
) -> Result<(), Failure> {
    let mismatch = |what: &str| Failure {
        check: Check::Body,
        message: format!("the log entry is not this bundle's: it records {what}"),
    };
    let logged = parse_logged(body).map_err(|e| Failure {
        check: Check::Body,
        message: format!("the log entry's body does not parse: {e}"),
    })?;
    if logged.digest != signed.digest {
        return Err(mismatch("another digest"));
    }
    if logged.signature != signed.signature {
        return Err(mismatch("another signature"));
    }
    let same_signer = match &logged.signer {
        Signer::Certificate(c) => certificate == Some(c.as_slice()),
        Signer::PublicKey(k) => certificate.is_none() && k.as_slice() == key.spki(),
    };
    if !same_signer {
        return Err(mismatch("another certificate or key"));
    }
    Ok(())
}

/// Standard base64, for callers printing bundle fields.
pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}
