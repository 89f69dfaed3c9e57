//! openraft's storage conformance suite against the RocksDB log store and state machine.
// The suite's signature returns openraft's large `StorageError`.
#![allow(clippy::result_large_err)]

use cairn_sequencer::sm::{ShardSm, StateMachine};
use cairn_sequencer::store::{LogStore, open_db};
use cairn_sequencer::types::{NodeId, TypeConfig};
use openraft::StorageError;
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<NodeId>> {
        let dir = TempDir::new().map_err(|e| openraft::StorageIOError::write(&e))?;
        let db = open_db(dir.path()).map_err(|e| openraft::StorageIOError::write(&e))?;
        // Two shards share the database: the suite runs on shard 7 while shard 8 holds unrelated data.
        let other = ShardSm::open(db.clone(), 8)?;
        drop(other);
        let sm = StateMachine(ShardSm::open(db.clone(), 7)?);
        Ok((dir, LogStore::new(db, 7), sm))
    }
}

#[test]
fn openraft_storage_suite() -> Result<(), StorageError<NodeId>> {
    Suite::test_all(RocksBuilder)
}
