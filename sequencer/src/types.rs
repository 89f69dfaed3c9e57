//! The Raft type configuration and the commands a shard's Raft log carries.

use std::io::Cursor;

use cairn_store::Shard;
use openraft::{BasicNode, TokioRuntime};
use serde::{Deserialize, Serialize};

/// A node of the cluster.
pub type NodeId = u64;
/// A shard: one log, one Raft group.
pub use cairn_store::ShardId;

openraft::declare_raft_types!(
    /// openraft types of a shard's Raft group.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = NodeId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = TokioRuntime,
);

/// A command in a shard's Raft log. Applying it is deterministic on every replica.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Command {
    /// Records the shard's identity (the first command of every shard; later ones must match).
    Init(Shard),
    /// A batch of entries to log, in order.
    Append(Vec<Vec<u8>>),
    /// The leader has written every tile and bundle of the tree of `size` and signed `note`, its
    /// checkpoint: from now on that is the published state that no later checkpoint may regress from.
    Checkpointed {
        /// Tree size.
        size: u64,
        /// Signed checkpoint note.
        note: Vec<u8>,
    },
    /// Freezes the shard: later appends are refused; the publisher writes a final checkpoint.
    Freeze,
}

/// The result of one appended entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appended {
    /// Index in the shard's log (the original index for a duplicate).
    pub index: u64,
    /// RFC 6962 leaf hash.
    pub leaf_hash: [u8; 32],
    /// Whether the entry was already in the log.
    pub duplicate: bool,
}

/// What applying a command returned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// Nothing to report.
    #[default]
    Done,
    /// Per-entry results of an `Append`, in order.
    Appended(Vec<Appended>),
    /// The shard is frozen; nothing was appended.
    Frozen,
    /// The command was refused; the state did not change.
    Rejected(String),
}
