//! The crate's errors: a refused request ([`Rejection`], the caller's fault) and everything else (ours).

use std::path::PathBuf;

/// Why a timestamp request was refused, as RFC 3161 §2.4.2 `PKIFailureInfo` names it.
///
/// The discriminant is the bit number in the `failInfo` BIT STRING.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureInfo {
    /// `badAlg` (bit 0): the hash algorithm of the message imprint is not one we accept.
    BadAlg = 0,
    /// `badRequest` (bit 2): a request we do not serve (e.g. an oversized nonce).
    BadRequest = 2,
    /// `badDataFormat` (bit 5): not a DER `TimeStampReq`, or a digest of the wrong length.
    BadDataFormat = 5,
    /// `unacceptedPolicy` (bit 15): `reqPolicy` names a policy other than ours.
    UnacceptedPolicy = 15,
    /// `unacceptedExtension` (bit 16): the request carries extensions.
    UnacceptedExtension = 16,
}

impl FailureInfo {
    /// The bit number of this failure in the `PKIFailureInfo` BIT STRING.
    pub fn bit(self) -> u8 {
        self as u8
    }

    /// The RFC 3161 name of this failure (`badAlg`, `badDataFormat`, ...).
    pub fn name(self) -> &'static str {
        match self {
            FailureInfo::BadAlg => "badAlg",
            FailureInfo::BadRequest => "badRequest",
            FailureInfo::BadDataFormat => "badDataFormat",
            FailureInfo::UnacceptedPolicy => "unacceptedPolicy",
            FailureInfo::UnacceptedExtension => "unacceptedExtension",
        }
    }
}

/// A request the authority refused: the RFC 3161 reply to send back and a message for the caller.
///
/// The HTTP layer answers 400 with [`Rejection::reply_der`] as an `application/timestamp-reply`, so RFC 3161
/// clients see the `failInfo`; the message is also in the reply's `statusString`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    failure: FailureInfo,
    message: String,
    reply: Vec<u8>,
}

impl Rejection {
    pub(crate) fn new(failure: FailureInfo, message: String, reply: Vec<u8>) -> Self {
        Rejection {
            failure,
            message,
            reply,
        }
    }

    /// Why the request was refused.
    pub fn failure(&self) -> FailureInfo {
        self.failure
    }

    /// What is wrong with the request and what to change, for a person.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The DER `TimeStampResp` with status `rejection` (2), this failure and the message.
    pub fn reply_der(&self) -> &[u8] {
        &self.reply
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.failure.name())
    }
}

/// Errors of the timestamp authority.
///
/// [`TsaError::Rejected`] is the caller's fault (HTTP 400); every other variant is ours: a key or certificate
/// that cannot be read or made, or a reply that cannot be encoded or signed (HTTP 500, details in the log).
#[derive(Debug, thiserror::Error)]
pub enum TsaError {
    /// The request was refused; the rejection carries the reply to send.
    #[error("timestamp request rejected: {0}")]
    Rejected(Rejection),
    /// A key or certificate file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key or certificate files are not usable (wrong format, wrong permissions, key and certificate differ).
    #[error("{path}: {reason}")]
    BadKeyMaterial {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A structure could not be DER-encoded or decoded.
    #[error("ASN.1 encoding: {0}")]
    Encoding(#[from] der::Error),
    /// The signing key failed (to sign, or to be encoded).
    #[error("signing key: {0}")]
    Key(String),
    /// The leaf certificate is not valid at the time of the request: issue a new chain.
    #[error(
        "the TSA certificate is not valid at {at} (valid from {not_before} to {not_after}): issue a new chain"
    )]
    CertificateNotValid {
        /// The time of the request.
        at: der::DateTime,
        /// The leaf's notBefore.
        not_before: der::DateTime,
        /// The leaf's notAfter.
        not_after: der::DateTime,
    },
    /// A certificate could not be built.
    #[error("certificate: {0}")]
    Certificate(String),
}

impl From<x509_cert::builder::Error> for TsaError {
    fn from(e: x509_cert::builder::Error) -> Self {
        TsaError::Certificate(e.to_string())
    }
}

impl From<spki::Error> for TsaError {
    fn from(e: spki::Error) -> Self {
        TsaError::Certificate(e.to_string())
    }
}
