//! A shard's replicated state and the deterministic application of committed commands to it.
//!
//! Applying a command does the same thing on every replica: exact dedup by leaf hash, index
//! assignment, the tree's right edge, and staging of entries until they are published. When the
//! leader reports a published checkpoint (`Command::Checkpointed`), every replica advances its copy of
//! the published partial tiles and drops staged entries below the last full bundle, so the state stays
//! small: tree edge, partial tiles, staged entries and the dedup index. How openraft drives this and
//! how the state travels in snapshots is [`crate::sm`]'s.
//!
//! Layout in the `sm` column family, under the shard's prefix: `s` the state record, `p` the
//! published record, `e || index` staged entries, `h || leaf hash` the dedup index, `z` the current
//! snapshot's meta (written by [`crate::sm`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};

use cairn_store::Shard;
use cairn_tlog::tile::TileId;
use cairn_tlog::{Checkpoint, Hash, TileBuilder, TreeEdge, bundle, leaf_hash};
use openraft::{BasicNode, Entry, EntryPayload, LogId, StorageError, StorageIOError, StoredMembership};
use rocksdb::{DB, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::store::{CF_SM, cf, key, prefix_bounds};
use crate::types::{Appended, Command, NodeId, Reply, ShardId, TypeConfig};

pub(crate) const STATE: u8 = b's';
pub(crate) const PUBLISHED: u8 = b'p';
pub(crate) const STAGED: u8 = b'e';
pub(crate) const DEDUP: u8 = b'h';
pub(crate) const SNAPSHOT: u8 = b'z';

/// The replicated state of a shard, apart from staged entries and the dedup index.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicatedState {
    /// Last applied Raft log id.
    pub last_applied: Option<LogId<NodeId>>,
    /// Last applied membership.
    pub membership: StoredMembership<NodeId, BasicNode>,
    /// The shard's identity, once `Init` is applied.
    pub info: Option<Shard>,
    /// Whether the shard is frozen.
    pub frozen: bool,
    /// Number of entries in the log (sequenced, not necessarily published).
    pub size: u64,
    /// Right edge of the tree of `size` leaves.
    pub edge: Vec<[u8; 32]>,
}

impl ReplicatedState {
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

/// Writes of one `apply` call, applied atomically at its end, and what they add, so that later commands
/// in the same call see earlier ones without a partial write reaching the database.
#[derive(Default)]
struct Pending {
    batch: WriteBatch,
    dedup: HashMap<[u8; 32], u64>,
    staged: BTreeMap<u64, Vec<u8>>,
}

/// The in-memory copy of the state record and the published record.
pub(crate) struct Inner {
    pub(crate) state: ReplicatedState,
    pub(crate) published: Published,
}

/// A shard's state machine (shared by openraft, the publisher and readers).
pub struct ShardSm {
    pub(crate) db: Arc<DB>,
    pub(crate) shard: ShardId,
    inner: Mutex<Inner>,
    /// Sequenced size, for anyone waiting for entries to be applied.
    size_tx: watch::Sender<u64>,
    /// Size of the last checkpoint committed through Raft.
    checkpointed_tx: watch::Sender<u64>,
    /// Whether openraft has read the current snapshot since start (its first read only wants the meta).
    /// Kept here because every clone of openraft's handle must see it.
    pub(crate) snapshot_read: AtomicBool,
    /// Proposals' spans, for the apply and publishing spans of the same traces.
    pub(crate) traces: crate::trace::Traces,
}

pub(crate) fn sm_read(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(&e).into()
}

pub(crate) fn sm_write(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(&e).into()
}

pub(crate) fn index_key(shard: ShardId, tag: u8, index: u64) -> Vec<u8> {
    key(shard, tag, &index.to_be_bytes())
}

impl ShardSm {
    /// Loads the state machine of `shard` from the node's database.
    pub fn open(db: Arc<DB>, shard: ShardId) -> Result<Arc<Self>, StorageError<NodeId>> {
        let sm = cf(&db, CF_SM);
        let state: ReplicatedState = match db.get_cf(sm, key(shard, STATE, &[])).map_err(sm_read)? {
            Some(v) => postcard::from_bytes(&v).map_err(sm_read)?,
            None => ReplicatedState::default(),
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
            snapshot_read: AtomicBool::new(false),
            traces: crate::trace::Traces::default(),
        }))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves the in-memory copy possibly ahead of the database; the
        // database is the truth, and a poisoned lock only happens after a bug already crashed a task.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the shard is frozen (without copying the whole state).
    pub fn frozen(&self) -> bool {
        self.lock().state.frozen
    }

    /// The current replicated state.
    pub fn state(&self) -> ReplicatedState {
        self.lock().state.clone()
    }

    /// The last published checkpoint record.
    pub fn published(&self) -> Published {
        self.lock().published.clone()
    }

    /// The last published checkpoint's signed note alone (what every publication waiter reads).
    pub fn published_note(&self) -> Vec<u8> {
        self.lock().published.note.clone()
    }

    /// Whether the shard is frozen, and how many entries are sequenced but not yet published: what
    /// every append checks, read without copying the state.
    pub fn admission(&self) -> (bool, u64) {
        let inner = self.lock();
        (
            inner.state.frozen,
            inner.state.size.saturating_sub(inner.published.size),
        )
    }

    /// State and published record read together.
    pub fn view(&self) -> (ReplicatedState, Published) {
        let inner = self.lock();
        (inner.state.clone(), inner.published.clone())
    }

    /// The last applied log id and membership (what openraft asks at start).
    pub(crate) fn applied(&self) -> (Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>) {
        let inner = self.lock();
        (inner.state.last_applied, inner.state.membership.clone())
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
        st: &mut ReplicatedState,
        pending: &mut Pending,
        entries: Vec<Vec<u8>>,
    ) -> Result<Reply, StorageError<NodeId>> {
        if st.frozen {
            return Ok(Reply::Frozen);
        }
        let traced = self.traces.apply_span(self.shard, &entries);
        let _entered = traced.as_ref().map(|(span, _)| span.enter());
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
        if let Some((span, proposal)) = &traced {
            crate::proposer::record_range(span, &out);
            if let Some(last) = out.iter().filter(|a| !a.duplicate).map(|a| a.index).max() {
                self.traces.applied(proposal.clone(), last);
            }
        }
        st.size = edge.size();
        st.edge = edge.subtrees().iter().map(|h| h.0).collect();
        Ok(Reply::Appended(out))
    }

    fn apply_checkpointed(
        &self,
        st: &ReplicatedState,
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
        // Staged entries are dropped below the first entry of the published tree's partial bundle.
        match Checkpoint::parse_note_unverified(&note).ok() {
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
            index_key(self.shard, STAGED, bundle::bundle_floor(published.size)),
            index_key(self.shard, STAGED, bundle::bundle_floor(size)),
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

    /// Applies committed entries in order and returns one reply per entry. Everything the call changes
    /// reaches the database in one atomic write at its end, and memory only after that write.
    pub(crate) fn apply(
        &self,
        entries: impl IntoIterator<Item = Entry<TypeConfig>>,
    ) -> Result<Vec<Reply>, StorageError<NodeId>> {
        let mut inner = self.lock();
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
                    self.apply_append(&mut st, &mut pending, entries)?
                }
                EntryPayload::Normal(Command::Checkpointed { size, note }) => {
                    self.apply_checkpointed(&st, &mut pubd, &mut pending, size, note)?
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
            cf(&self.db, CF_SM),
            key(self.shard, STATE, &[]),
            postcard::to_allocvec(&st).map_err(sm_write)?,
        );
        // One atomic write per apply call: the state record (with the last applied log id) and everything
        // derived from the applied entries land together or not at all.
        self.db.write(batch).map_err(sm_write)?;
        let (size, checkpointed) = (st.size, pubd.size);
        *state = st;
        *published = pubd;
        drop(inner);
        self.size_tx.send_replace(size);
        self.checkpointed_tx.send_replace(checkpointed);
        Ok(replies)
    }

    /// Replaces the whole state (installing a snapshot): `batch` holds the other writes (staged entries,
    /// dedup index, snapshot meta); the state and published records are added to it, it is written
    /// with `opts`, and then memory follows.
    pub(crate) fn replace(
        &self,
        mut batch: WriteBatch,
        opts: &WriteOptions,
        state: ReplicatedState,
        published: Published,
    ) -> Result<(), StorageError<NodeId>> {
        let sm = cf(&self.db, CF_SM);
        batch.put_cf(
            sm,
            key(self.shard, STATE, &[]),
            postcard::to_allocvec(&state).map_err(sm_write)?,
        );
        batch.put_cf(
            sm,
            key(self.shard, PUBLISHED, &[]),
            postcard::to_allocvec(&published).map_err(sm_write)?,
        );
        let mut inner = self.lock();
        self.db.write_opt(batch, opts).map_err(sm_write)?;
        let (size, checkpointed) = (state.size, published.size);
        *inner = Inner { state, published };
        drop(inner);
        self.size_tx.send_replace(size);
        self.checkpointed_tx.send_replace(checkpointed);
        Ok(())
    }
}
