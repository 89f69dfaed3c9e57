//! Cairn's RFC 3161 timestamp authority (TSA).
//!
//! This crate owns everything about timestamps: the TSA's key and its certificate chain `[leaf, root]`
//! ([`Authority`], kept as PEM files), reading `TimeStampReq`s (RFC 3161 §2.4.1), signing `TimeStampResp`s
//! whose token is a CMS `SignedData` (RFC 5652) over a `TSTInfo` with a `signingCertificateV2` attribute
//! (RFC 5035, RFC 5816), and the HTTP routes ([`router`]) that Sigstore clients call (sigstore-go and cosign
//! through digitorus/timestamp and timestamp-authority's verifier, sigstore-python through rfc3161-client)
//! and that `openssl ts -verify` accepts.
//!
//! ```
//! use std::time::{Duration, SystemTime};
//!
//! let tsa = cairn_tsa::Authority::generate("Cairn TSA", Duration::from_secs(86_400))?;
//! // `openssl ts -query -data hello.txt -sha256 -no_nonce`, "hello\n" hashed with SHA-256
//! let request = [
//!     0x30, 0x36, 0x02, 0x01, 0x01, 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
//!     0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20, 0x58, 0x91, 0xb5, 0xb5, 0x22, 0xd5, 0xdf, 0x08,
//!     0x6d, 0x0f, 0xf0, 0xb1, 0x10, 0xfb, 0xd9, 0xd2, 0x1b, 0xb4, 0xfc, 0x71, 0x63, 0xaf, 0x34, 0xd0,
//!     0x82, 0x86, 0xa2, 0xe8, 0x46, 0xf6, 0xbe, 0x03,
//! ];
//! let reply = tsa.timestamp(&request, SystemTime::now())?;
//! assert_eq!(reply[..9], [0x30, 0x82, reply[2], reply[3], 0x30, 0x03, 0x02, 0x01, 0x00]); // granted
//! # Ok::<(), cairn_tsa::TsaError>(())
//! ```

mod authority;
mod chain;
mod error;
mod http;
mod json;
mod key;
mod rejection;
mod request;
mod token;
mod verify;

pub use authority::{Authority, CHAIN_FILE, DEFAULT_POLICY, DEFAULT_VALIDITY, KEY_FILE};
pub use const_oid::ObjectIdentifier;
pub use error::{FailureInfo, Rejection, TsaError};
pub use http::{
    CERTCHAIN_PATH, MAX_REQUEST_BYTES, PEM_CERTIFICATE_CHAIN, TIMESTAMP_PATH, TIMESTAMP_QUERY,
    TIMESTAMP_REPLY, router,
};
pub use key::{Curve, TsaKey};
pub use request::MAX_NONCE_BYTES;
pub use verify::{TrustedAuthority, VerifiedTimestamp, verify_timestamp};
