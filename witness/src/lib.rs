//! `cairn-witness`: transparency log witnessing.
//!
//! | module | what |
//! |---|---|
//! | [`policy`] | c2sp.org/tlog-policy: known logs and witnesses, quorum rules, checkpoint verification |
//! | [`protocol`] | c2sp.org/tlog-witness `add-checkpoint` wire format |
//! | [`server`] | the witness: checks consistency, cosigns (c2sp.org/tlog-cosignature), persists its view |
//! | [`collect`] | the log's side: asks a policy's witnesses in parallel until the quorum holds |

pub mod collect;
pub mod policy;
pub mod protocol;
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use collect::{CollectConfig, CollectMetrics, Collected, Collector, QuorumFailed};
pub use policy::{Policy, PolicyError, QuorumError};
pub use protocol::AddCheckpoint;
pub use server::{MemoryState, RocksState, Witness, WitnessConfig, WitnessError, WitnessState, router};
