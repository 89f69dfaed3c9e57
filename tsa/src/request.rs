//! Reading and checking a DER `TimeStampReq` (RFC 3161 §2.4.1): what we accept, and for anything else the
//! `PKIFailureInfo` and a message saying what to change.

use const_oid::ObjectIdentifier;
use const_oid::db::rfc5912::{ID_SHA_256, ID_SHA_384, ID_SHA_512};
use der::Decode;
use der::asn1::Int;
use x509_tsp::{MessageImprint, TimeStampReq};

use crate::error::FailureInfo;

/// The longest nonce we echo, in octets (256 bits; clients send 64 to 160).
pub const MAX_NONCE_BYTES: usize = 32;

/// A request we will timestamp.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Copied into the TSTInfo unchanged.
    pub(crate) imprint: MessageImprint,
    /// Echoed in the TSTInfo.
    pub(crate) nonce: Option<Int>,
    /// Whether the reply carries the signing certificate.
    pub(crate) cert_req: bool,
}

/// A request we refuse.
#[derive(Debug)]
pub(crate) struct Refusal {
    pub(crate) failure: FailureInfo,
    pub(crate) message: String,
}

fn refuse(failure: FailureInfo, message: String) -> Refusal {
    Refusal { failure, message }
}

/// Parses `der` and checks it against what we serve under `policy`.
pub(crate) fn check(der: &[u8], policy: &ObjectIdentifier) -> Result<Accepted, Refusal> {
    if der.is_empty() {
        return Err(refuse(
            FailureInfo::BadDataFormat,
            "empty request: send a DER-encoded RFC 3161 TimeStampReq \
             (e.g. `openssl ts -query -data FILE -sha256 -cert`)"
                .to_owned(),
        ));
    }
    let request = TimeStampReq::from_der(der).map_err(|e| {
        refuse(
            FailureInfo::BadDataFormat,
            format!(
                "not a DER-encoded RFC 3161 TimeStampReq version 1 ({e}); \
                 create one with e.g. `openssl ts -query -data FILE -sha256 -cert`"
            ),
        )
    })?;
    if request.extensions.is_some() {
        return Err(refuse(
            FailureInfo::UnacceptedExtension,
            "request extensions are not supported: send the request without extensions".to_owned(),
        ));
    }

    let algorithm = &request.message_imprint.hash_algorithm;
    let (name, length) = match hash_name_and_length(&algorithm.oid) {
        Some(known) => known,
        None => {
            let known = const_oid::db::DB
                .by_oid(&algorithm.oid)
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            return Err(refuse(
                FailureInfo::BadAlg,
                format!(
                    "hash algorithm {}{known} is not accepted: hash with SHA-256, SHA-384 or SHA-512",
                    algorithm.oid
                ),
            ));
        }
    };
    if algorithm.parameters.as_ref().is_some_and(|p| !p.is_null()) {
        return Err(refuse(
            FailureInfo::BadAlg,
            format!("the {name} algorithm identifier has parameters: they must be absent or NULL"),
        ));
    }
    let digest_length = request.message_imprint.hashed_message.as_bytes().len();
    if digest_length != length {
        return Err(refuse(
            FailureInfo::BadDataFormat,
            format!(
                "hashedMessage is {digest_length} bytes but a {name} digest is {length} bytes: \
                 send the digest itself, not the data or its hex"
            ),
        ));
    }

    if let Some(requested) = &request.req_policy
        && requested != policy
    {
        return Err(refuse(
            FailureInfo::UnacceptedPolicy,
            format!("policy {requested} is not served here: ask for {policy} or omit reqPolicy"),
        ));
    }
    if let Some(nonce) = &request.nonce {
        // The magnitude's length: a positive INTEGER whose top bit is set carries a 0x00 sign byte
        // (a 256-bit nonce is 33 bytes of DER half the time).
        let length = match nonce.as_bytes() {
            [0, rest @ ..] if !rest.is_empty() => rest.len(),
            bytes => bytes.len(),
        };
        if length > MAX_NONCE_BYTES {
            return Err(refuse(
                FailureInfo::BadRequest,
                format!("the nonce is {length} bytes: send at most {MAX_NONCE_BYTES} (256 bits)"),
            ));
        }
    }

    Ok(Accepted {
        imprint: request.message_imprint,
        nonce: request.nonce,
        cert_req: request.cert_req,
    })
}

/// The accepted message imprint hashes: their names and digest lengths. SHA-1 is refused: its collisions are
/// practical (SHAttered, 2017).
fn hash_name_and_length(oid: &ObjectIdentifier) -> Option<(&'static str, usize)> {
    match *oid {
        ID_SHA_256 => Some(("SHA-256", 32)),
        ID_SHA_384 => Some(("SHA-384", 48)),
        ID_SHA_512 => Some(("SHA-512", 64)),
        _ => None,
    }
}
