//! What a run saw from outside: every acknowledgment, every write whose outcome is unknown, every
//! checkpoint an observer read, every successful call and every fault. The checker judges the log
//! against this record alone; it is written to `history.json` so a failed run can be studied.

use serde::Serialize;

/// An entry the log acknowledged: it said the entry is sequenced at `index` of `shard`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Ack {
    /// Shard the answer named.
    pub shard: u32,
    /// Index the answer named.
    pub index: u64,
    /// RFC 6962 leaf hash of the entry the writer sent (computed by the writer).
    pub leaf: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// Whether this was a deliberate resubmission of an entry acknowledged before.
    pub resubmitted: bool,
}

/// A write that failed after all retries: the entry may or may not be in the log, at most once.
#[derive(Clone, Debug, Serialize)]
pub struct Unknown {
    /// Leaf hash of the entry.
    pub leaf: String,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// The last error.
    pub error: String,
}

/// A signed checkpoint someone read: a node's read path, or a Rekor v2 reply's inclusion proof.
#[derive(Clone, Debug, Serialize)]
pub struct Observation {
    /// Who read it (`node-2`, `rekor-reply`).
    pub observer: String,
    /// Shard.
    pub shard: u32,
    /// Milliseconds since the run started.
    pub at_ms: u64,
    /// The signed note, as served.
    pub note: String,
}

/// A fault the nemesis injected, from its start to its heal.
#[derive(Clone, Debug, Serialize)]
pub struct FaultRecord {
    /// What it was (`kill`, `pause`, `partition`, `disk-full`, `wipe`, `s3-slow`, `s3-fail`,
    /// `quorum-loss`).
    pub kind: String,
    /// Its target, as text (`node-2`, `node-1|node-3`, `store`).
    pub target: String,
    /// The shards whose leader it hit (empty for faults on followers or the store).
    pub shards: Vec<u32>,
    /// Milliseconds since the run started.
    pub from_ms: u64,
    /// When it was healed.
    pub to_ms: u64,
}

/// Everything a run recorded.
#[derive(Clone, Debug, Default, Serialize)]
pub struct History {
    /// Acknowledged entries (a resubmitted entry is acknowledged more than once).
    pub acks: Vec<Ack>,
    /// Writes with unknown outcome.
    pub unknown: Vec<Unknown>,
    /// Checkpoints observed.
    pub observations: Vec<Observation>,
    /// When a write call succeeded, once per shard it wrote to: (milliseconds since the start, shard).
    pub successes: Vec<(u64, u32)>,
    /// Answers that break the API's contract, seen by a writer (an acknowledgment for another entry,
    /// a missing one).
    pub anomalies: Vec<String>,
    /// The faults.
    pub faults: Vec<FaultRecord>,
}
