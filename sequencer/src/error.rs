//! Errors of the sequencer, classified by how a caller must react.

use std::time::Duration;

use crate::types::{NodeId, ShardId};

/// What went wrong, and so what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum SequencerError {
    /// This node does not lead the shard: retry at the leader (unknown during an election).
    #[error("not the leader of shard {shard}; leader: {leader:?}")]
    NotLeader {
        /// The shard.
        shard: ShardId,
        /// The leader's node id and Raft address, if known.
        leader: Option<(NodeId, String)>,
    },
    /// Queues are full or too much is waiting to be published: retry after the hint.
    #[error("busy: retry after {retry_after:?}")]
    Pushback {
        /// Suggested wait.
        retry_after: Duration,
    },
    /// The shard is frozen and accepts no more entries.
    #[error("shard {0} is frozen")]
    Frozen(ShardId),
    /// No such shard on this node.
    #[error("unknown shard {0}")]
    UnknownShard(ShardId),
    /// The caller sent something invalid.
    #[error("invalid input: {0}")]
    Invalid(String),
    /// The operation cannot be done in the cluster's present state; nothing was changed.
    #[error("refused: {0}")]
    Refused(String),
    /// The operation did not finish in time; it may still take effect.
    #[error("timed out: {0}")]
    Timeout(String),
    /// Storage or Raft failed; retrying may help.
    #[error("retryable: {0}")]
    Retryable(String),
    /// The node cannot continue (storage corruption, Raft stopped).
    #[error("fatal: {0}")]
    Fatal(String),
}

impl SequencerError {
    /// The same error, saying first what an earlier step of the operation already did (a refusal's
    /// "nothing was changed" then holds for this step only).
    pub fn after(self, done: &str) -> Self {
        let put = |m: String| format!("{done}: {m}");
        match self {
            Self::Invalid(m) => Self::Invalid(put(m)),
            Self::Timeout(m) => Self::Timeout(put(m)),
            Self::Retryable(m) => Self::Retryable(put(m)),
            Self::Refused(m) => Self::Refused(put(m)),
            Self::Fatal(m) => Self::Fatal(put(m)),
            other => other,
        }
    }

    /// Whether retrying the same request later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::NotLeader { .. } | Self::Pushback { .. } | Self::Timeout(_) | Self::Retryable(_)
        )
    }
}
