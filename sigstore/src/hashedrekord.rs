//! `hashedrekord` v0.0.2 submissions: the request as clients send it, the checks made before anything
//! is appended, and the canonical body that is logged.

use prost::Message;
use serde_json::Value;
use sigstore_protobuf_specs::dev::sigstore::common::v1::{HashAlgorithm, HashOutput, PublicKeyDetails};
use sigstore_protobuf_specs::dev::sigstore::rekor::v2::{
    CreateEntryRequest, Entry, HashedRekordLogEntryV002, HashedRekordRequestV002, Spec, create_entry_request,
    spec, verifier,
};

use crate::verify::{Hash, KeyType, PublicKey};

/// The entry kind and version a Sigstore shard logs.
pub const KIND: &str = "hashedrekord";
/// The API version of [`KIND`].
pub const API_VERSION: &str = "0.0.2";

/// Why a submission was refused. Every variant is the client's to fix (HTTP 400, gRPC
/// `INVALID_ARGUMENT`); the message says what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// The request body is not a `CreateEntryRequest`.
    #[error("the request is not a CreateEntryRequest: {0}")]
    Malformed(String),
    /// A DSSE request: Rekor v2 logs DSSE envelopes as hashedrekord entries.
    #[error(
        "dsseRequestV002 is not accepted: log a DSSE envelope as a hashedRekordRequestV002 whose digest is the \
         hash of the envelope's PAE encoding, signed by the envelope's key"
    )]
    Dsse,
    /// A field is missing or malformed.
    #[error("invalid hashedrekord request: {0}")]
    Invalid(String),
    /// The key type or hash is not accepted by this log.
    #[error("unsupported signing algorithm: {0}")]
    Unsupported(String),
    /// The signature does not verify.
    #[error("invalid signature: {0}")]
    Signature(String),
}

/// The key details (algorithm and hash) a log accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    accepted: Vec<PublicKeyDetails>,
}

impl Default for Policy {
    /// rekor-tiles' default: RSA PKCS#1 v1.5 2048/3072/4096 with SHA-256, ECDSA P-256/SHA-256,
    /// P-384/SHA-384, P-521/SHA-512, and Ed25519ph.
    fn default() -> Self {
        Self {
            accepted: vec![
                PublicKeyDetails::PkixRsaPkcs1v152048Sha256,
                PublicKeyDetails::PkixRsaPkcs1v153072Sha256,
                PublicKeyDetails::PkixRsaPkcs1v154096Sha256,
                PublicKeyDetails::PkixEcdsaP256Sha256,
                PublicKeyDetails::PkixEcdsaP384Sha384,
                PublicKeyDetails::PkixEcdsaP521Sha512,
                PublicKeyDetails::PkixEd25519Ph,
            ],
        }
    }
}

impl Policy {
    /// A policy accepting these key details (a subset of the default; others are refused with a
    /// message, since this log cannot verify them).
    pub fn new(accepted: &[PublicKeyDetails]) -> Result<Self, String> {
        let all = Self::default();
        if let Some(d) = accepted.iter().find(|d| !all.accepted.contains(d)) {
            return Err(format!("{} cannot be accepted: {}", d.as_str_name(), refusal(*d)));
        }
        Ok(Self {
            accepted: accepted.to_vec(),
        })
    }

    /// Parses key detail names (`PKIX_ECDSA_P256_SHA_256`, ...).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        let details = names
            .iter()
            .map(|n| {
                PublicKeyDetails::from_str_name(n.as_ref())
                    .ok_or_else(|| format!("{} is not a Sigstore PublicKeyDetails name", n.as_ref()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(&details)
    }

    /// The accepted key details.
    pub fn accepted(&self) -> &[PublicKeyDetails] {
        &self.accepted
    }

    fn names(&self) -> String {
        self.accepted
            .iter()
            .map(|d| d.as_str_name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a key detail this crate knows is not one it verifies.
fn refusal(d: PublicKeyDetails) -> &'static str {
    match d {
        PublicKeyDetails::PkixEd25519 => {
            "pure Ed25519 signs the whole artifact, which a hashedrekord entry does not carry; sign the \
             SHA-512 digest with Ed25519ph and say PKIX_ED25519_PH"
        }
        PublicKeyDetails::PkixRsaPss2048Sha256
        | PublicKeyDetails::PkixRsaPss3072Sha256
        | PublicKeyDetails::PkixRsaPss4096Sha256 => {
            "RSA-PSS is not accepted; sign with RSA PKCS#1 v1.5 (PKIX_RSA_PKCS1V15_<bits>_SHA256)"
        }
        _ => "it is deprecated or not a signing algorithm for artifacts",
    }
}

/// What a key detail means: the key type it needs and the hash signed.
fn meaning(d: PublicKeyDetails) -> Option<(KeyType, Hash)> {
    Some(match d {
        PublicKeyDetails::PkixRsaPkcs1v152048Sha256 => (KeyType::Rsa(2048), Hash::Sha256),
        PublicKeyDetails::PkixRsaPkcs1v153072Sha256 => (KeyType::Rsa(3072), Hash::Sha256),
        PublicKeyDetails::PkixRsaPkcs1v154096Sha256 => (KeyType::Rsa(4096), Hash::Sha256),
        PublicKeyDetails::PkixEcdsaP256Sha256 => (KeyType::P256, Hash::Sha256),
        PublicKeyDetails::PkixEcdsaP384Sha384 => (KeyType::P384, Hash::Sha384),
        PublicKeyDetails::PkixEcdsaP521Sha512 => (KeyType::P521, Hash::Sha512),
        PublicKeyDetails::PkixEd25519Ph => (KeyType::Ed25519, Hash::Sha512),
        _ => return None,
    })
}

fn hash_algorithm(h: Hash) -> HashAlgorithm {
    match h {
        Hash::Sha256 => HashAlgorithm::Sha2256,
        Hash::Sha384 => HashAlgorithm::Sha2384,
        Hash::Sha512 => HashAlgorithm::Sha2512,
    }
}

/// A checked submission.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submission {
    /// The canonical body: the bytes logged, whose RFC 6962 leaf hash is the entry's.
    pub body: Vec<u8>,
    /// The key details it was signed with.
    pub key_details: PublicKeyDetails,
}

/// Parses a protojson `CreateEntryRequest` (field names in lowerCamelCase or as in the .proto; unknown
/// fields refused).
pub fn parse_json(bytes: &[u8]) -> Result<CreateEntryRequest, EntryError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(EntryError::Malformed(
            "the body is empty; send a JSON CreateEntryRequest".into(),
        ));
    }
    serde_json::from_slice(bytes).map_err(|e| EntryError::Malformed(e.to_string()))
}

/// Parses a protobuf `CreateEntryRequest`.
pub fn parse_protobuf(bytes: &[u8]) -> Result<CreateEntryRequest, EntryError> {
    CreateEntryRequest::decode(bytes).map_err(|e| EntryError::Malformed(e.to_string()))
}

/// Checks a request as rekor-tiles does, then builds what is logged. Nothing is normalised: the
/// signature and verifier go into the body as the client sent them, since verifiers rebuild the body
/// from their bundle.
pub fn check(req: CreateEntryRequest, policy: &Policy) -> Result<Submission, EntryError> {
    let req = match req.spec {
        Some(create_entry_request::Spec::HashedRekordRequestV002(r)) => r,
        Some(create_entry_request::Spec::DsseRequestV002(_)) => return Err(EntryError::Dsse),
        None => {
            return Err(EntryError::Invalid(
                "the request has no spec; send {\"hashedRekordRequestV002\": {...}}".into(),
            ));
        }
    };
    let HashedRekordRequestV002 { digest, signature } = req;
    let signature = signature.ok_or_else(|| EntryError::Invalid("missing signature".into()))?;
    if signature.content.is_empty() {
        return Err(EntryError::Invalid("missing signature content".into()));
    }
    if digest.is_empty() {
        return Err(EntryError::Invalid("missing digest".into()));
    }
    let verifier = signature
        .verifier
        .as_ref()
        .ok_or_else(|| EntryError::Invalid("missing signature verifier".into()))?;
    let details = PublicKeyDetails::try_from(verifier.key_details).map_err(|_| {
        EntryError::Unsupported(format!(
            "keyDetails {} is not a Sigstore PublicKeyDetails value",
            verifier.key_details
        ))
    })?;
    let key = match &verifier.verifier {
        Some(verifier::Verifier::PublicKey(k)) if !k.raw_bytes.is_empty() => {
            PublicKey::from_spki(&k.raw_bytes).map_err(EntryError::Invalid)?
        }
        Some(verifier::Verifier::X509Certificate(c)) if !c.raw_bytes.is_empty() => {
            PublicKey::from_certificate(&c.raw_bytes).map_err(EntryError::Invalid)?
        }
        Some(verifier::Verifier::PublicKey(_)) => {
            return Err(EntryError::Invalid("missing public key rawBytes".into()));
        }
        Some(verifier::Verifier::X509Certificate(_)) => {
            return Err(EntryError::Invalid("missing X.509 certificate rawBytes".into()));
        }
        None => {
            return Err(EntryError::Invalid(
                "the verifier has neither publicKey nor x509Certificate".into(),
            ));
        }
    };
    if !policy.accepted.contains(&details) {
        let why = match meaning(details) {
            Some(_) => format!("this log accepts {}", policy.names()),
            None => format!("{}; this log accepts {}", refusal(details), policy.names()),
        };
        return Err(EntryError::Unsupported(format!(
            "keyDetails {}: {why}",
            details.as_str_name()
        )));
    }
    let (needs, hash) = meaning(details).ok_or_else(|| {
        EntryError::Unsupported(format!(
            "keyDetails {} has no meaning here",
            details.as_str_name()
        ))
    })?;
    if *key.key_type() != needs {
        return Err(EntryError::Unsupported(format!(
            "keyDetails {} needs a {needs} key, but the verifier holds a {} key",
            details.as_str_name(),
            key.key_type()
        )));
    }
    if digest.len() != hash.len() {
        return Err(EntryError::Invalid(format!(
            "the digest is {} bytes; {} (from keyDetails {}) digests are {} bytes",
            digest.len(),
            hash.name(),
            details.as_str_name(),
            hash.len()
        )));
    }
    key.verify_digest(hash, &digest, &signature.content)
        .map_err(EntryError::Signature)?;
    if let Some(body) = write_body(hash, &digest, &signature, details) {
        return Ok(Submission {
            body,
            key_details: details,
        });
    }
    let entry = Entry {
        kind: KIND.into(),
        api_version: API_VERSION.into(),
        spec: Some(Spec {
            spec: Some(spec::Spec::HashedRekordV002(HashedRekordLogEntryV002 {
                data: Some(HashOutput {
                    algorithm: hash_algorithm(hash) as i32,
                    digest,
                }),
                signature: Some(signature),
            })),
        }),
    };
    Ok(Submission {
        body: canonical_body(&entry)?,
        key_details: details,
    })
}

/// JCS of the protojson form of `entry` (default protojson: lowerCamelCase, zero values left out).
pub fn canonical_body(entry: &Entry) -> Result<Vec<u8>, EntryError> {
    let value: Value = serde_json::to_value(entry)
        .map_err(|e| EntryError::Invalid(format!("the entry does not encode: {e}")))?;
    Ok(crate::jcs::canonical(&value))
}

/// The canonical body of a checked request, written member by member in JCS order: the same bytes as
/// [`canonical_body`] of its `Entry` (a property test holds the two equal), without the generic
/// protobuf-JSON mapping, which cost more per entry than everything but the signature check. Only for
/// requests with every field set (what [`check`] lets through); `None` leaves the rest to
/// [`canonical_body`]. Base64 and enum names need no escaping.
fn write_body(
    hash: Hash,
    digest: &[u8],
    signature: &sigstore_protobuf_specs::dev::sigstore::rekor::v2::Signature,
    details: PublicKeyDetails,
) -> Option<Vec<u8>> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let verifier = signature.verifier.as_ref()?;
    let (signer, raw) = match verifier.verifier.as_ref()? {
        verifier::Verifier::PublicKey(k) => ("publicKey", &k.raw_bytes),
        verifier::Verifier::X509Certificate(c) => ("x509Certificate", &c.raw_bytes),
    };
    if digest.is_empty() || signature.content.is_empty() || raw.is_empty() || verifier.key_details == 0 {
        return None;
    }
    let mut out = String::with_capacity(256 + (digest.len() + signature.content.len() + raw.len()) * 4 / 3);
    out.push_str(r#"{"apiVersion":""#);
    out.push_str(API_VERSION);
    out.push_str(r#"","kind":""#);
    out.push_str(KIND);
    out.push_str(r#"","spec":{"hashedRekordV002":{"data":{"algorithm":""#);
    out.push_str(hash_algorithm(hash).as_str_name());
    out.push_str(r#"","digest":""#);
    b64.encode_string(digest, &mut out);
    out.push_str(r#""},"signature":{"content":""#);
    b64.encode_string(&signature.content, &mut out);
    out.push_str(r#"","verifier":{"keyDetails":""#);
    out.push_str(details.as_str_name());
    out.push_str(r#"",""#);
    out.push_str(signer);
    out.push_str(r#"":{"rawBytes":""#);
    b64.encode_string(raw, &mut out);
    out.push_str(r#""}}}}}}"#);
    Some(out.into_bytes())
}

/// Checks bytes offered as an already canonical body (a write forwarded between servers for a Sigstore
/// shard): it must be a hashedrekord v0.0.2 entry that passes [`check`] and re-encodes to exactly these
/// bytes, so nothing but checked, canonical entries ever reaches a Sigstore shard.
pub fn check_body(body: &[u8], policy: &Policy) -> Result<(), EntryError> {
    let entry: Entry = serde_json::from_slice(body)
        .map_err(|e| EntryError::Malformed(format!("not a hashedrekord entry body: {e}")))?;
    if entry.kind != KIND || entry.api_version != API_VERSION {
        return Err(EntryError::Invalid(format!(
            "the entry is {} {}; this shard logs {KIND} {API_VERSION}",
            entry.kind, entry.api_version
        )));
    }
    let Some(spec::Spec::HashedRekordV002(logged)) = entry.spec.and_then(|s| s.spec) else {
        return Err(EntryError::Invalid(
            "the entry has no hashedRekordV002 spec".into(),
        ));
    };
    let request = CreateEntryRequest {
        spec: Some(create_entry_request::Spec::HashedRekordRequestV002(
            HashedRekordRequestV002 {
                digest: logged.data.map(|d| d.digest).unwrap_or_default(),
                signature: logged.signature,
            },
        )),
    };
    if check(request, policy)?.body != body {
        return Err(EntryError::Invalid(
            "the entry is not in canonical form (JCS of its protojson encoding)".into(),
        ));
    }
    Ok(())
}

/// What a logged `hashedrekord` 0.0.2 body records: read by monitors, indexers and bundle verifiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// The artifact's digest (SHA-256 for every key type Cairn accepts but P-384 and P-521).
    pub digest: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// The signer: a DER certificate or a DER public key.
    pub signer: Signer,
}

/// Who a logged entry names as its signer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A DER X.509 certificate.
    Certificate(Vec<u8>),
    /// A DER SubjectPublicKeyInfo.
    PublicKey(Vec<u8>),
}

/// The logged body's shape (JCS of the protojson `Entry`), read with plain serde: monitors and
/// indexers read every entry of a log, and the generic protobuf-JSON mapping costs several times more.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct BodyJson {
    api_version: String,
    kind: String,
    spec: SpecJson,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecJson {
    hashed_rekord_v002: Option<HashedRekordJson>,
}

#[derive(serde::Deserialize)]
struct HashedRekordJson {
    data: Option<DataJson>,
    signature: Option<SignatureJson>,
}

#[derive(serde::Deserialize)]
struct DataJson {
    #[serde(default)]
    digest: String,
}

#[derive(serde::Deserialize)]
struct SignatureJson {
    #[serde(default)]
    content: String,
    verifier: Option<VerifierJson>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct VerifierJson {
    x509_certificate: Option<RawJson>,
    public_key: Option<RawJson>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawJson {
    #[serde(default)]
    raw_bytes: String,
}

/// Reads a logged body (no signature is checked: the log did that when it took the entry).
pub fn parse_logged(body: &[u8]) -> Result<Logged, String> {
    use base64::Engine;
    let b64 = |s: &str, what: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| format!("the entry's {what} is not base64"))
    };
    let entry: BodyJson =
        serde_json::from_slice(body).map_err(|e| format!("not a hashedrekord entry body: {e}"))?;
    if entry.kind != KIND || entry.api_version != API_VERSION {
        return Err(format!(
            "the entry is {} {}, not {KIND} {API_VERSION}",
            entry.kind, entry.api_version
        ));
    }
    let logged = entry
        .spec
        .hashed_rekord_v002
        .ok_or("the entry has no hashedRekordV002 spec")?;
    let signature = logged.signature.ok_or("the entry has no signature")?;
    let signer = match signature.verifier {
        Some(VerifierJson {
            x509_certificate: Some(c),
            public_key: None,
        }) => Signer::Certificate(b64(&c.raw_bytes, "certificate")?),
        Some(VerifierJson {
            x509_certificate: None,
            public_key: Some(k),
        }) => Signer::PublicKey(b64(&k.raw_bytes, "public key")?),
        _ => return Err("the entry names no signer, or two".into()),
    };
    Ok(Logged {
        digest: b64(&logged.data.map(|d| d.digest).unwrap_or_default(), "digest")?,
        signature: b64(&signature.content, "signature")?,
        signer,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sigstore_protobuf_specs::dev::sigstore::common::v1::X509Certificate;
    use sigstore_protobuf_specs::dev::sigstore::rekor::v2::{PublicKey as PbKey, Signature, Verifier};

    use super::*;

    fn details() -> impl Strategy<Value = PublicKeyDetails> {
        prop::sample::select(Policy::default().accepted)
    }

    proptest! {
        /// The direct writer gives exactly the JCS of the generic protojson mapping.
        #[test]
        fn the_direct_body_is_the_generic_one(
            digest in prop::collection::vec(any::<u8>(), 1..80),
            content in prop::collection::vec(any::<u8>(), 1..600),
            raw in prop::collection::vec(any::<u8>(), 1..900),
            certificate in any::<bool>(),
            details in details(),
        ) {
            let hash = meaning(details).map(|(_, h)| h).unwrap_or(Hash::Sha256);
            let signer = if certificate {
                verifier::Verifier::X509Certificate(X509Certificate { raw_bytes: raw })
            } else {
                verifier::Verifier::PublicKey(PbKey { raw_bytes: raw })
            };
            let signature = Signature {
                content,
                verifier: Some(Verifier { key_details: details as i32, verifier: Some(signer) }),
            };
            let direct = write_body(hash, &digest, &signature, details);
            let entry = Entry {
                kind: KIND.into(),
                api_version: API_VERSION.into(),
                spec: Some(Spec {
                    spec: Some(spec::Spec::HashedRekordV002(HashedRekordLogEntryV002 {
                        data: Some(HashOutput { algorithm: hash_algorithm(hash) as i32, digest }),
                        signature: Some(signature),
                    })),
                }),
            };
            let generic = canonical_body(&entry).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(direct.map(String::from_utf8), Some(String::from_utf8(generic)));
        }
    }
}
