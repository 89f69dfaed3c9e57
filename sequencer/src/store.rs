//! RocksDB storage of a node: one database for every shard the node hosts.
//!
//! Column families: `raft_log` (Raft entries), `raft_meta` (vote, purge point), `sm` (each shard's
//! state machine). Every key starts with the shard id (4 bytes, big-endian), so shards share the
//! database without sharing keys. Writes that acknowledge anything — log appends, votes, purges —
//! are fsynced; state-machine writes ride on the same write-ahead log and become durable with the
//! next synced write, and the Raft log keeps every entry they depend on until then.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, StorageIOError, Vote};
use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options,
    ReadOptions, WriteBatch, WriteOptions,
};

use crate::types::{NodeId, ShardId, TypeConfig};

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_META: &str = "raft_meta";
pub(crate) const CF_SM: &str = "sm";

/// Opens (or creates) a node's database.
pub fn open_db(path: &Path) -> Result<Arc<DB>, rocksdb::Error> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    // The state machine's dedup index is probed once per submitted entry, nearly always for a key it
    // does not hold: whole-key bloom filters (in SST blocks and in the memtable) answer those without
    // searching, so the probe stays cheap as the index grows.
    let mut sm = Options::default();
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    sm.set_block_based_table_factory(&table);
    sm.set_memtable_whole_key_filtering(true);
    sm.set_memtable_prefix_bloom_ratio(0.1);
    let cfs = [
        ColumnFamilyDescriptor::new(CF_LOG, Options::default()),
        ColumnFamilyDescriptor::new(CF_META, Options::default()),
        ColumnFamilyDescriptor::new(CF_SM, sm),
    ];
    Ok(Arc::new(DB::open_cf_descriptors(&opts, path, cfs)?))
}

pub(crate) fn cf<'a>(db: &'a DB, name: &str) -> &'a ColumnFamily {
    // The three column families are created by `open_db`; a database without them was not opened by
    // this crate, which is a programming error, not an input error.
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is missing"))
}

/// `shard || tag || rest`.
pub(crate) fn key(shard: ShardId, tag: u8, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(5 + rest.len());
    k.extend_from_slice(&shard.to_be_bytes());
    k.push(tag);
    k.extend_from_slice(rest);
    k
}

/// Deletes everything of `shard` (its Raft log and vote, its state machine) from the database: an
/// archived shard's replica.
pub(crate) fn delete_shard(db: &DB, shard: ShardId) -> Result<(), rocksdb::Error> {
    let from = shard.to_be_bytes().to_vec();
    let to = match shard.checked_add(1) {
        Some(next) => next.to_be_bytes().to_vec(),
        None => vec![0xff; 5],
    };
    for name in [CF_LOG, CF_META, CF_SM] {
        db.delete_range_cf(cf(db, name), &from, &to)?;
    }
    Ok(())
}

/// Read options bounded to keys `shard || tag || *`.
pub(crate) fn prefix_bounds(shard: ShardId, tag: u8) -> ReadOptions {
    let mut ro = ReadOptions::default();
    ro.set_iterate_lower_bound(key(shard, tag, &[]));
    ro.set_iterate_upper_bound(key(shard, tag + 1, &[]));
    ro
}

pub(crate) fn synced() -> WriteOptions {
    let mut wo = WriteOptions::default();
    wo.set_sync(true);
    wo
}

const LOG_ENTRY: u8 = b'l';
const META_VOTE: &[u8] = b"vote";
const META_PURGED: &[u8] = b"purged";
const META_COMMITTED: &[u8] = b"committed";

fn log_key(shard: ShardId, index: u64) -> Vec<u8> {
    key(shard, LOG_ENTRY, &index.to_be_bytes())
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(&e).into()
}

/// One shard's Raft log and vote in the node's database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<DB>,
    shard: ShardId,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogStore(shard {})", self.shard)
    }
}

impl LogStore {
    /// The log of `shard` in `db`.
    pub fn new(db: Arc<DB>, shard: ShardId) -> Self {
        Self { db, shard }
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        name: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let raw = self
            .db
            .get_cf(cf(&self.db, CF_META), key(self.shard, b'm', name))
            .map_err(read_err)?;
        raw.map(|v| postcard::from_bytes(&v).map_err(read_err))
            .transpose()
    }

    fn put_meta<T: serde::Serialize>(&self, name: &[u8], value: &T) -> Result<(), StorageError<NodeId>> {
        let bytes = postcard::to_allocvec(value).map_err(write_err)?;
        self.db
            .put_cf_opt(
                cf(&self.db, CF_META),
                key(self.shard, b'm', name),
                bytes,
                &synced(),
            )
            .map_err(write_err)
    }

    fn last_entry_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let mut it = self.db.iterator_cf_opt(
            cf(&self.db, CF_LOG),
            prefix_bounds(self.shard, LOG_ENTRY),
            IteratorMode::End,
        );
        match it.next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(read_err)?;
                let entry: Entry<TypeConfig> = postcard::from_bytes(&v).map_err(read_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        let from = log_key(self.shard, start);
        let it = self.db.iterator_cf_opt(
            cf(&self.db, CF_LOG),
            prefix_bounds(self.shard, LOG_ENTRY),
            IteratorMode::From(&from, Direction::Forward),
        );
        for item in it {
            let (k, v) = item.map_err(read_err)?;
            let index = u64::from_be_bytes(
                k[5..13]
                    .try_into()
                    .map_err(|_| read_err(std::io::Error::other("bad log key")))?,
            );
            if !range.contains(&index) {
                break;
            }
            out.push(postcard::from_bytes(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.get_meta(META_PURGED)?;
        let last_log_id = self.last_entry_id()?.or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(META_VOTE, vote)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.get_meta(META_VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), StorageError<NodeId>> {
        self.put_meta(META_COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self.get_meta::<Option<LogId<NodeId>>>(META_COMMITTED)?.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        let log = cf(&self.db, CF_LOG);
        for entry in entries {
            let bytes = postcard::to_allocvec(&entry).map_err(write_err)?;
            batch.put_cf(log, log_key(self.shard, entry.log_id.index), bytes);
        }
        // Durable before Raft counts this node towards a majority.
        let res = self.db.write_opt(batch, &synced()).map_err(std::io::Error::other);
        let failed = res.as_ref().err().map(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(res);
        match failed {
            Some(e) => Err(write_err(e)),
            None => Ok(()),
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(self.shard, log_id.index),
            key(self.shard, LOG_ENTRY + 1, &[]),
        );
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Recording the purge point is a synced write, which also makes every earlier state-machine
        // write durable before the log entries it was derived from are deleted.
        self.put_meta(META_PURGED, &log_id)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOG),
            log_key(self.shard, 0),
            log_key(self.shard, log_id.index + 1),
        );
        self.db.write_opt(batch, &synced()).map_err(write_err)
    }
}
