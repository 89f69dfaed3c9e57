//! openraft's view of a shard's state machine ([`StateMachine`]) and its snapshots.
//!
//! The state and how committed commands change it are [`crate::state`]'s; this module adapts it to
//! openraft's `RaftStateMachine` and `RaftSnapshotBuilder`, builds the data of a snapshot when a
//! replica needs one, and installs a received one.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership,
};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

// The state types were defined here first; `sm::ShardSm` and friends stay valid paths.
use crate::state::{DEDUP, SNAPSHOT, STAGED, index_key, sm_read, sm_write};
pub use crate::state::{Published, ReplicatedState, ShardSm};
use crate::store::{CF_SM, cf, key, prefix_bounds};
use crate::types::{NodeId, Reply, TypeConfig};

/// A snapshot's data: the whole state of the shard.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: ReplicatedState,
    published: Published,
    staged: Vec<(u64, Vec<u8>)>,
    dedup: Vec<([u8; 32], u64)>,
}

/// The current snapshot's record in the database: its meta only (see [`ShardSm::record_snapshot`]).
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

impl ShardSm {
    fn build_snapshot_data(&self) -> Result<(ReplicatedState, Vec<u8>), StorageError<NodeId>> {
        // Hold the lock while taking a database snapshot so that the in-memory state and the keys
        // read below describe the same applied log id.
        let inner = self.lock();
        let snap = self.db.snapshot();
        let (state, published) = (inner.state.clone(), inner.published.clone());
        drop(inner);
        let sm = cf(&self.db, CF_SM);
        let mut staged = Vec::new();
        for item in snap.iterator_cf_opt(sm, prefix_bounds(self.shard, STAGED), IteratorMode::Start) {
            let (k, v) = item.map_err(sm_read)?;
            let index = u64::from_be_bytes(
                k[5..13]
                    .try_into()
                    .map_err(|_| sm_read(std::io::Error::other("bad key")))?,
            );
            staged.push((index, v.to_vec()));
        }
        let mut dedup = Vec::new();
        for item in snap.iterator_cf_opt(sm, prefix_bounds(self.shard, DEDUP), IteratorMode::Start) {
            let (k, v) = item.map_err(sm_read)?;
            let lh: [u8; 32] = k[5..]
                .try_into()
                .map_err(|_| sm_read(std::io::Error::other("bad key")))?;
            let index = u64::from_be_bytes(
                v.as_ref()
                    .try_into()
                    .map_err(|_| sm_read(std::io::Error::other("bad value")))?,
            );
            dedup.push((lh, index));
        }
        let data = SnapshotData {
            state: state.clone(),
            published,
            staged,
            dedup,
        };
        Ok((state, postcard::to_allocvec(&data).map_err(sm_read)?))
    }

    fn install(
        &self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        bytes: Vec<u8>,
    ) -> Result<(), StorageError<NodeId>> {
        let data: SnapshotData = postcard::from_bytes(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        let sm = cf(&self.db, CF_SM);
        let mut batch = WriteBatch::default();
        for tag in [STAGED, DEDUP] {
            batch.delete_range_cf(sm, key(self.shard, tag, &[]), key(self.shard, tag + 1, &[]));
        }
        for (index, entry) in &data.staged {
            batch.put_cf(sm, index_key(self.shard, STAGED, *index), entry);
        }
        for (lh, index) in &data.dedup {
            batch.put_cf(sm, key(self.shard, DEDUP, lh), index.to_be_bytes());
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Vec::new(),
        };
        batch.put_cf(
            sm,
            key(self.shard, SNAPSHOT, &[]),
            postcard::to_allocvec(&stored).map_err(sm_write)?,
        );
        let mut state = data.state;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        self.replace(batch, &crate::store::synced(), state, data.published)
    }

    /// Records `meta` as the current snapshot. The state machine lives in RocksDB, so a snapshot needs no
    /// copy of it: its data is serialized only when a replica has to be sent one, from the state as it is
    /// then (a later snapshot is as good as an earlier one, and the log before it is no longer needed).
    fn record_snapshot(&self, meta: &SnapshotMeta<NodeId, BasicNode>) -> Result<(), StorageError<NodeId>> {
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Vec::new(),
        };
        self.db
            .put_cf(
                cf(&self.db, CF_SM),
                key(self.shard, SNAPSHOT, &[]),
                postcard::to_allocvec(&stored).map_err(sm_write)?,
            )
            .map_err(sm_write)
    }
}

/// openraft's handle on a shard's state machine.
#[derive(Clone)]
pub struct StateMachine(pub Arc<ShardSm>);

fn snapshot_meta(state: &ReplicatedState) -> SnapshotMeta<NodeId, BasicNode> {
    let id = match state.last_applied {
        Some(l) => format!("{}-{}-{}", l.leader_id, l.index, state.size),
        None => format!("empty-{}", state.size),
    };
    SnapshotMeta {
        last_log_id: state.last_applied,
        last_membership: state.membership.clone(),
        snapshot_id: id,
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    // Cheap whatever the log's size: a snapshot is a marker (see `record_snapshot`); openraft uses only the
    // meta of what this returns, to purge the log behind it.
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let meta = snapshot_meta(&self.0.state());
        self.0.record_snapshot(&meta)?;
        tracing::debug!(shard = self.0.shard, snapshot = %meta.snapshot_id, "recorded snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(Vec::new())),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>), StorageError<NodeId>> {
        Ok(self.0.applied())
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.0.apply(entries)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        tracing::info!(shard = self.0.shard, snapshot = %meta.snapshot_id, "installing snapshot");
        self.0.install(meta, snapshot.into_inner())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let sm = &self.0;
        // openraft's first read, at start, only learns which log prefix a snapshot covers: the recorded
        // meta. Later reads are for replicas that fell behind the purged log: serialize the state now.
        let first = !sm.snapshot_read.swap(true, Ordering::AcqRel);
        let Some(raw) = sm
            .db
            .get_cf(cf(&sm.db, CF_SM), key(sm.shard, SNAPSHOT, &[]))
            .map_err(sm_read)?
        else {
            return Ok(None);
        };
        if first {
            let stored: StoredSnapshot = postcard::from_bytes(&raw).map_err(sm_read)?;
            return Ok(Some(Snapshot {
                meta: stored.meta,
                snapshot: Box::new(Cursor::new(Vec::new())),
            }));
        }
        let (state, data) = sm.build_snapshot_data()?;
        let meta = snapshot_meta(&state);
        sm.record_snapshot(&meta)?;
        tracing::info!(shard = sm.shard, snapshot = %meta.snapshot_id, bytes = data.len(), "serialized snapshot");
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
