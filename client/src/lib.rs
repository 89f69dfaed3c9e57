//! `cairn-client`: a Rust client for Cairn.
//!
//! - [`LogClient`]: submission over gRPC (`cairn.v1.Log`) with retries that follow leader hints and
//!   honour `RESOURCE_EXHAUSTED` retry hints; checkpoints, proofs and shard admin.
//! - [`HttpLog`]: the read path over plain HTTP (any static server or CDN serving the C2SP tlog-tiles
//!   layout): shard list, checkpoints, tiles and bundles; full verification of a shard from its tiles;
//!   proofs built locally; following a log with consistency checks.
//! - [`verify_tlog_proof`]: offline verification of a c2sp tlog-proof.
//! - [`monitor`]: a monitor that follows logs (consistency of every checkpoint, every entry read)
//!   and checks entries against a [`watch`] list in rekor-monitor's format.
//!
//! Formats and proof math are `cairn-tlog`'s; this crate adds transport.

mod error;
mod grpc;
mod http;
pub mod monitor;
mod tls;
pub mod watch;

pub use cairn_proto::v1::Wait;
pub use cairn_store::{Lifecycle, ShardListing};
pub use error::ClientError;
pub use grpc::{FailedAttempt, LogClient, RetryPolicy, Submitted};
pub use http::{HttpLog, HttpShard, VerifiedShard};
pub use tls::TlsOptions;

use cairn_tlog::{Checkpoint, TlogProof, VerifierKey};

/// Verifies a c2sp tlog-proof for `entry` against the log key `vkey` (text form), offline. Returns the
/// checkpoint the entry is proven against.
pub fn verify_tlog_proof(vkey: &str, proof: &[u8], entry: &[u8]) -> Result<(u64, Checkpoint), ClientError> {
    let key =
        VerifierKey::parse(vkey.trim()).map_err(|e| ClientError::Verify(format!("verifier key: {e}")))?;
    let proof = TlogProof::parse(proof).map_err(|e| ClientError::Verify(format!("proof file: {e}")))?;
    let (checkpoint, _) = proof
        .verify(entry, &key, &[])
        .map_err(|e| ClientError::Verify(e.to_string()))?;
    Ok((proof.index, checkpoint))
}
