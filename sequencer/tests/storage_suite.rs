//! openraft's storage conformance suite against the RocksDB log store and state machine.
//!
//! Every suite test runs on shard 7 of a database in which shard 8 holds data of its own: entries, a
//! published checkpoint, a snapshot record, a Raft log with a purge point, and a vote. When a test ends,
//! its guard checks that every key of shard 8, in every column family, is exactly as it was.
// The suite's signature returns openraft's large `StorageError`.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_sequencer::Shard;
use cairn_sequencer::sm::{ShardSm, StateMachine};
use cairn_sequencer::store::{LogStore, open_db};
use cairn_sequencer::types::{Command, NodeId, Reply, ShardId, TypeConfig};
use cairn_tlog::{Checkpoint, Hash, Signer, TreeEdge, leaf_hash};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite, log_id};
use openraft::{Entry, EntryPayload, RaftSnapshotBuilder, StorageError, StorageIOError};
use rocksdb::{DB, Direction, IteratorMode, Options};
use tempfile::TempDir;

/// The shard the suite runs on.
const SUITE_SHARD: ShardId = 7;
/// The shard that must not be touched.
const OTHER_SHARD: ShardId = 8;

/// Every key of one shard, by column family.
type Dump = BTreeMap<String, BTreeMap<Vec<u8>, Vec<u8>>>;

fn io(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write(&e).into()
}

fn dump(db: &DB, column_families: &[String], shard: ShardId) -> Dump {
    let prefix = shard.to_be_bytes();
    column_families
        .iter()
        .map(|name| {
            let cf = db
                .cf_handle(name)
                .unwrap_or_else(|| panic!("column family {name} is not open"));
            let keys = db
                .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
                .map(|kv| kv.unwrap_or_else(|e| panic!("read {name}: {e}")))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect();
            (name.clone(), keys)
        })
        .collect()
}

/// Holds the database of one suite test; when dropped, checks that the other shard is untouched.
struct Guard {
    db: Arc<DB>,
    column_families: Vec<String>,
    other_before: Dump,
    // Dropped last, after the database handle.
    _dir: TempDir,
}

impl Drop for Guard {
    fn drop(&mut self) {
        // A failing suite test already panics; a second panic here would abort the process.
        if std::thread::panicking() {
            return;
        }
        let after = dump(&self.db, &self.column_families, OTHER_SHARD);
        for (cf, before) in &self.other_before {
            let now = &after[cf];
            let changed: Vec<String> = before
                .iter()
                .filter(|(k, v)| now.get(*k) != Some(v))
                .map(|(k, _)| format!("{k:02x?}"))
                .chain(
                    now.keys()
                        .filter(|k| !before.contains_key(*k))
                        .map(|k| format!("{k:02x?} (new)")),
                )
                .collect();
            assert!(
                changed.is_empty(),
                "a suite test on shard {SUITE_SHARD} changed {} of shard {OTHER_SHARD}'s keys in {cf}, such as {:?}",
                changed.len(),
                &changed[..changed.len().min(4)]
            );
        }
    }
}

/// Gives shard 8 a state machine with data (identity, 300 entries, a checkpoint of 260 that dropped
/// staged entries, a snapshot record) and a Raft log (entries 0..=10, 0..=2 purged, a vote).
async fn populate_other(db: &Arc<DB>) -> Result<(), StorageError<NodeId>> {
    let signer = Signer::from_seed("test.cairn.dev/shard-8", [8u8; 32]).map_err(io)?;
    let entries: Vec<Vec<u8>> = (0..300u32).map(|i| format!("other {i}").into_bytes()).collect();
    let mut edge = TreeEdge::new();
    edge.extend(entries[..260].iter().map(|e| leaf_hash(e)));
    let root: Hash = edge.root();
    let note = Checkpoint::new(signer.name(), 260, root).sign(&signer).to_bytes();
    let commands = [
        Command::Init(Shard {
            id: OTHER_SHARD,
            origin: signer.name().to_owned(),
            vkey: signer.verifier().to_string(),
        }),
        Command::Append(entries),
        Command::Checkpointed { size: 260, note },
    ];
    let batch: Vec<Entry<TypeConfig>> = commands
        .into_iter()
        .zip(1..)
        .map(|(c, index)| Entry {
            log_id: log_id(1, 0, index),
            payload: EntryPayload::Normal(c),
        })
        .collect();
    let mut sm = StateMachine(ShardSm::open(db.clone(), OTHER_SHARD)?);
    let replies = sm.apply(batch).await?;
    assert!(
        replies.iter().all(|r| !matches!(r, Reply::Rejected(_))),
        "populating shard {OTHER_SHARD}: {replies:?}"
    );
    assert_eq!(sm.0.published().size, 260);
    sm.get_snapshot_builder().await.build_snapshot().await?;

    let mut log = LogStore::new(db.clone(), OTHER_SHARD);
    Suite::<TypeConfig, LogStore, StateMachine, RocksBuilder, Guard>::feed_10_logs_vote_self(&mut log)
        .await?;
    log.purge(log_id(1, 0, 2)).await?;
    Ok(())
}

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, Guard> for RocksBuilder {
    async fn build(&self) -> Result<(Guard, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().map_err(io)?;
        let db = open_db(dir.path()).map_err(io)?;
        populate_other(&db).await?;
        let column_families = DB::list_cf(&Options::default(), dir.path()).map_err(io)?;
        let other_before = dump(&db, &column_families, OTHER_SHARD);
        for cf in ["raft_log", "raft_meta", "sm"] {
            assert!(
                other_before.get(cf).is_some_and(|keys| !keys.is_empty()),
                "shard {OTHER_SHARD} holds nothing in {cf}"
            );
        }
        let sm = StateMachine(ShardSm::open(db.clone(), SUITE_SHARD)?);
        let log = LogStore::new(db.clone(), SUITE_SHARD);
        let guard = Guard {
            db,
            column_families,
            other_before,
            _dir: dir,
        };
        Ok((guard, log, sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(RocksBuilder)
}
