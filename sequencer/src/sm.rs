//! A shard's state machine: deterministic integration of committed entries.
//!
//! Applying a command does the same thing on every replica: exact dedup by leaf hash, index
//! assignment, the tree's right edge, and staging of entries until they are published. When the
//! leader reports a published checkpoint (`Command::Checkpointed`), every replica advances its copy of
//! the published partial tiles and drops staged entries below the last full bundle, so the state stays
//! small: tree edge, partial tiles, staged entries and the dedup index.
//!
//! Layout in the `sm` column family, under the shard's prefix: `s` the state record, `p` the
//! published record, `e || index` staged entries, `h || leaf hash` the dedup index.

use std::collections::HashMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_tlog::tile::{TILE_WIDTH, TileId};
use cairn_tlog::{Checkpoint, Hash, Note, TileBuilder, TreeEdge, leaf_hash};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership,
};
use rocksdb::{DB, IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{CF_SM, cf, key, prefix_bounds};
use crate::types::{Appended, Command, NodeId, Reply, ShardId, ShardInfo, TypeConfig};

const STATE: u8 = b's';
const PUBLISHED: u8 = b'p';
const STAGED: u8 = b'e';
const DEDUP: u8 = b'h';
const SNAPSHOT: u8 = b'z';

/// The replicated state of a shard, apart from staged entries and the dedup index.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ShardState {
    /// Last applied Raft log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The shard's identity, once `Init` is applied.
    pub info: Option<ShardInfo>,
    /// Whether the shard is frozen.
    pub frozen: bool,
    /// Number of entries in the log (sequenced, not necessarily published).
    pub size: u64,
    /// Right edge of the tree of `size` leaves.
    pub edge: Vec<[u8; 32]>,
}

impl ShardState {
    /// The tree edge.
    pub fn tree_edge(&self) -> TreeEdge {
        let subtrees = self.edge.iter().map(|h| Hash(*h)).collect();
        TreeEdge::from_parts(self.size, subtrees).unwrap_or_default()
    }
}

/// The last checkpoint the leader reported as written, with the partial tiles of that tree.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Tree size of the checkpoint.
    pub size: u64,
    /// Signed checkpoint note (empty before the first checkpoint).
    pub note: Vec<u8>,
    /// Partial hash tiles of the tree of `size`: (level, index, width, contents).
    pub partial_tiles: Vec<(u8, u64, u16, Vec<u8>)>,
}

impl Published {
    /// A tile builder positioned at the published size.
    pub fn tile_builder(&self) -> Result<TileBuilder, cairn_tlog::builder::BuildError> {
        TileBuilder::from_partial_tiles(
            self.size,
            self.partial_tiles.iter().map(|(level, index, width, data)| {
                (
                    TileId {
                        level: *level,
                        index: *index,
                        width: *width,
                    },
                    data.as_slice(),
                )
            }),
        )
    }
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    state: ShardState,
    published: Published,
    staged: Vec<(u64, Vec<u8>)>,
    dedup: Vec<([u8; 32], u64)>,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, BasicNode>,
    data: Vec<u8>,
}

/// Writes of one `apply` call, applied atomically at its end, and what they add, so that later commands
/// in the same call see earlier ones without a partial write reaching the database.
#[derive(Default)]
struct Pending {
    batch: WriteBatch,
    dedup: HashMap<[u8; 32], u64>,
    staged: std::collections::BTreeMap<u64, Vec<u8>>,
}

struct Inner {
    state: ShardState,
    published: Published,
}

/// A shard's state machine (shared by openraft, the publisher and readers).
pub struct ShardSm {
    db: Arc<DB>,
    shard: ShardId,
    inner: Mutex<Inner>,
    /// Sequenced size, for anyone waiting for entries to be applied.
    size_tx: watch::Sender<u64>,
    /// Size of the last checkpoint committed through Raft.
    checkpointed_tx: watch::Sender<u64>,
    /// Whether openraft has read the current snapshot since start (its first read only wants the meta).
    snapshot_read: std::sync::atomic::AtomicBool,
}

fn sm_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

fn sm_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

fn index_key(shard: ShardId, tag: u8, index: u64) -> Vec<u8> {
    key(shard, tag, &index.to_be_bytes())
}

/// Staged entries are dropped below the first entry of the published tree's partial bundle.
fn bundle_floor(size: u64) -> u64 {
    size - size % u64::from(TILE_WIDTH)
}

impl ShardSm {
    /// Loads the state machine of `shard` from the node's database.
    pub fn open(db: Arc<DB>, shard: ShardId) -> Result<Arc<Self>, StorageError<NodeId>> {
        let sm = cf(&db, CF_SM);
        let state: ShardState = match db.get_cf(sm, key(shard, STATE, &[])).map_err(sm_read)? {
            Some(v) => postcard::from_bytes(&v).map_err(sm_read)?,
            None => ShardState::default(),
        };
        let published: Published = match db.get_cf(sm, key(shard, PUBLISHED, &[])).map_err(sm_read)? {
            Some(v) => postcard::from_bytes(&v).map_err(sm_read)?,
            None => Published::default(),
        };
        let (size_tx, _) = watch::channel(state.size);
        let (checkpointed_tx, _) = watch::channel(published.size);
        Ok(Arc::new(Self {
            db,
            shard,
            inner: Mutex::new(Inner { state, published }),
            size_tx,
            checkpointed_tx,
            snapshot_read: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the in-memory copy possibly ahead of the database; the
        // database is the truth, and a poisoned lock only happens after a bug already crashed a task.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the shard is frozen (without copying the whole state).
    pub fn frozen(&self) -> bool {
        self.lock().state.frozen
    }

    /// The current replicated state.
    pub fn state(&self) -> ShardState {
        self.lock().state.clone()
    }

    /// The last published checkpoint record.
    pub fn published(&self) -> Published {
        self.lock().published.clone()
    }

    /// State and published record read together.
    pub fn view(&self) -> (ShardState, Published) {
        let inner = self.lock();
        (inner.state.clone(), inner.published.clone())
    }

    /// Watches the sequenced size.
    pub fn watch_size(&self) -> watch::Receiver<u64> {
        self.size_tx.subscribe()
    }

    /// Watches the size of the last checkpoint committed through Raft.
    pub fn watch_checkpointed(&self) -> watch::Receiver<u64> {
        self.checkpointed_tx.subscribe()
    }

    /// Staged entries `[from, to)`; fails if any is missing (already dropped or not yet applied).
    pub fn staged_entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StorageError<NodeId>> {
        let mut out = Vec::with_capacity((to - from) as usize);
        let start = index_key(self.shard, STAGED, from);
        let it = self.db.iterator_cf_opt(
            cf(&self.db, CF_SM),
            prefix_bounds(self.shard, STAGED),
            IteratorMode::From(&start, rocksdb::Direction::Forward),
        );
        for item in it {
            if out.len() as u64 == to - from {
                break;
            }
            let (k, v) = item.map_err(sm_read)?;
            let index = u64::from_be_bytes(
                k[5..13]
                    .try_into()
                    .map_err(|_| sm_read(std::io::Error::other("bad key")))?,
            );
            if index != from + out.len() as u64 {
                break;
            }
            out.push(v.to_vec());
        }
        if out.len() as u64 != to - from {
            return Err(sm_read(std::io::Error::other(format!(
                "staged entries {from}..{to} are not all present (found {})",
                out.len()
            ))));
        }
        Ok(out)
    }

    /// The index of an entry already in the log, by leaf hash.
    pub fn lookup(&self, leaf: &[u8; 32]) -> Result<Option<u64>, StorageError<NodeId>> {
        let v = self
            .db
            .get_cf(cf(&self.db, CF_SM), key(self.shard, DEDUP, leaf))
            .map_err(sm_read)?;
        Ok(v.and_then(|v| v.as_slice().try_into().ok().map(u64::from_be_bytes)))
    }

    fn apply_append(
        &self,
        st: &mut ShardState,
        pending: &mut Pending,
        entries: Vec<Vec<u8>>,
    ) -> Result<Reply, StorageError<NodeId>> {
        if st.frozen {
            return Ok(Reply::Frozen);
        }
        let sm = cf(&self.db, CF_SM);
        let mut edge = st.tree_edge();
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let lh = leaf_hash(&entry).0;
            let existing = match pending.dedup.get(&lh) {
                Some(i) => Some(*i),
                None => self.lookup(&lh)?,
            };
            if let Some(index) = existing {
                out.push(Appended {
                    index,
                    leaf_hash: lh,
                    duplicate: true,
                });
                continue;
            }
            let index = edge.size();
            edge.append(Hash(lh));
            pending.dedup.insert(lh, index);
            pending
                .batch
                .put_cf(sm, key(self.shard, DEDUP, &lh), index.to_be_bytes());
            pending
                .batch
                .put_cf(sm, index_key(self.shard, STAGED, index), &entry);
            pending.staged.insert(index, entry);
            out.push(Appended {
                index,
                leaf_hash: lh,
                duplicate: false,
            });
        }
        st.size = edge.size();
        st.edge = edge.subtrees().iter().map(|h| h.0).collect();
        Ok(Reply::Appended(out))
    }

    fn apply_checkpointed(
        &self,
        st: &ShardState,
        published: &mut Published,
        pending: &mut Pending,
        size: u64,
        note: Vec<u8>,
    ) -> Result<Reply, StorageError<NodeId>> {
        if size < published.size || size > st.size {
            return Ok(Reply::Rejected(format!(
                "checkpoint size {size} is outside published {}..=sequenced {}",
                published.size, st.size
            )));
        }
        let Some(info) = &st.info else {
            return Ok(Reply::Rejected("shard has no identity yet".into()));
        };
        // Advance the published partial tiles with the staged entries' leaf hashes, and check that the
        // signed checkpoint is for exactly that tree.
        let mut builder = match published.tile_builder() {
            Ok(b) => b,
            Err(e) => return Err(sm_read(std::io::Error::other(e.to_string()))),
        };
        // Entries staged earlier in this apply call are not in the database yet.
        let in_db_until = pending
            .staged
            .keys()
            .next()
            .copied()
            .unwrap_or(size)
            .clamp(published.size, size);
        let mut leaves: Vec<Hash> = self
            .staged_entries(published.size, in_db_until)?
            .iter()
            .map(|e| leaf_hash(e))
            .collect();
        leaves.extend(pending.staged.range(in_db_until..size).map(|(_, e)| leaf_hash(e)));
        if leaves.len() as u64 != size - published.size {
            return Err(sm_read(std::io::Error::other(format!(
                "staged entries up to {size} are missing"
            ))));
        }
        builder.extend(&leaves);
        let claimed = Note::parse(&note)
            .ok()
            .and_then(|n| Checkpoint::parse(&n.text).ok());
        match claimed {
            Some(c) if c.size == size && c.root == builder.root() && c.origin == info.origin => {}
            _ => {
                return Ok(Reply::Rejected(format!(
                    "checkpoint note does not match the tree of size {size}"
                )));
            }
        }
        let sm = cf(&self.db, CF_SM);
        pending.batch.delete_range_cf(
            sm,
            index_key(self.shard, STAGED, bundle_floor(published.size)),
            index_key(self.shard, STAGED, bundle_floor(size)),
        );
        *published = Published {
            size,
            note,
            partial_tiles: builder
                .partial_tiles()
                .into_iter()
                .map(|t| (t.id.level, t.id.index, t.id.width, t.data))
                .collect(),
        };
        pending.batch.put_cf(
            sm,
            key(self.shard, PUBLISHED, &[]),
            postcard::to_allocvec(&*published).map_err(sm_write)?,
        );
        Ok(Reply::Done)
    }

    fn build_snapshot_data(&self) -> Result<(ShardState, Vec<u8>), StorageError<NodeId>> {
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
        let mut state = data.state;
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        batch.put_cf(
            sm,
            key(self.shard, STATE, &[]),
            postcard::to_allocvec(&state).map_err(sm_write)?,
        );
        batch.put_cf(
            sm,
            key(self.shard, PUBLISHED, &[]),
            postcard::to_allocvec(&data.published).map_err(sm_write)?,
        );
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: Vec::new(),
        };
        batch.put_cf(
            sm,
            key(self.shard, SNAPSHOT, &[]),
            postcard::to_allocvec(&stored).map_err(sm_write)?,
        );
        let mut inner = self.lock();
        self.db
            .write_opt(batch, &crate::store::synced())
            .map_err(sm_write)?;
        let (size, checkpointed) = (state.size, data.published.size);
        *inner = Inner {
            state,
            published: data.published,
        };
        drop(inner);
        self.size_tx.send_replace(size);
        self.checkpointed_tx.send_replace(checkpointed);
        Ok(())
    }
}

/// openraft's handle on a shard's state machine.
#[derive(Clone)]
pub struct StateMachine(pub Arc<ShardSm>);

fn snapshot_meta(state: &ShardState) -> SnapshotMeta<NodeId, BasicNode> {
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

impl ShardSm {
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
        let inner = self.0.lock();
        Ok((inner.state.last_applied, inner.state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let sm = &self.0;
        let mut inner = sm.lock();
        let Inner { state, published } = &mut *inner;
        let mut st = state.clone();
        let mut pubd = published.clone();
        let mut pending = Pending::default();
        let mut replies = Vec::new();
        for entry in entries {
            st.last_applied = Some(entry.log_id);
            let reply = match entry.payload {
                EntryPayload::Blank => Reply::Done,
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m);
                    Reply::Done
                }
                EntryPayload::Normal(Command::Init(info)) => match &st.info {
                    None => {
                        st.info = Some(info);
                        Reply::Done
                    }
                    Some(existing) if *existing == info => Reply::Done,
                    Some(existing) => Reply::Rejected(format!("shard is already {existing:?}")),
                },
                EntryPayload::Normal(Command::Append(entries)) => {
                    sm.apply_append(&mut st, &mut pending, entries)?
                }
                EntryPayload::Normal(Command::Checkpointed { size, note }) => {
                    sm.apply_checkpointed(&st, &mut pubd, &mut pending, size, note)?
                }
                EntryPayload::Normal(Command::Freeze) => {
                    st.frozen = true;
                    Reply::Done
                }
            };
            replies.push(reply);
        }
        let mut batch = pending.batch;
        batch.put_cf(
            cf(&sm.db, CF_SM),
            key(sm.shard, STATE, &[]),
            postcard::to_allocvec(&st).map_err(sm_write)?,
        );
        // One atomic write per apply call: the state record (with the last applied log id) and everything
        // derived from the applied entries land together or not at all.
        sm.db.write(batch).map_err(sm_write)?;
        let (size, checkpointed) = (st.size, pubd.size);
        *state = st;
        *published = pubd;
        drop(inner);
        sm.size_tx.send_replace(size);
        sm.checkpointed_tx.send_replace(checkpointed);
        Ok(replies)
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
        let first = !sm.snapshot_read.swap(true, std::sync::atomic::Ordering::AcqRel);
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
