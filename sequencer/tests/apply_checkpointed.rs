//! Applying `Command::Checkpointed` through the real state machine (openraft's `RaftStateMachine::apply`
//! on RocksDB): every way a checkpoint can be refused leaves the state as it was, and an accepted one
//! advances the published record and drops the staged entries below its bundle floor.
//!
//! Expected roots and tiles are computed here by naive RFC 6962 hashing, not by the code under test.

use std::collections::BTreeMap;
use std::sync::Arc;

use cairn_sequencer::Shard;
use cairn_sequencer::sm::{Published, ReplicatedState, ShardSm, StateMachine};
use cairn_sequencer::store::open_db;
use cairn_sequencer::types::{Command, Reply, ShardId, TypeConfig};
use cairn_tlog::{Checkpoint, EMPTY_ROOT, Hash, Signer, TreeEdge, leaf_hash, node_hash};
use openraft::storage::RaftStateMachine;
use openraft::testing::log_id;
use openraft::{Entry, EntryPayload};
use rocksdb::{DB, Direction, IteratorMode};
use tempfile::TempDir;

const SHARD: ShardId = 5;
/// Entries every fixture sequences.
const SEQUENCED: u64 = 300;
/// The checkpoint the rejection cases start from.
const PUBLISHED: u64 = 100;

/// RFC 6962 §2.1 Merkle tree hash, by its recursive definition.
fn mth(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => EMPTY_ROOT,
        1 => leaves[0],
        n => {
            // The largest power of two smaller than n.
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
        }
    }
}

fn signer(origin: &str) -> Signer {
    Signer::from_seed(origin, [9u8; 32]).expect("test key")
}

fn entries(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("entry {i}").into_bytes()).collect()
}

fn leaves(n: u64) -> Vec<Hash> {
    entries(n).iter().map(|e| leaf_hash(e)).collect()
}

/// The root of the first `size` entries, checked against a second independent computation.
fn root(size: u64) -> Hash {
    let naive = mth(&leaves(size));
    let mut edge = TreeEdge::new();
    edge.extend(leaves(size));
    assert_eq!(
        edge.root(),
        naive,
        "naive hashing and the tree edge disagree at {size}"
    );
    naive
}

fn note(signer: &Signer, size: u64, root: Hash) -> Vec<u8> {
    Checkpoint::new(signer.name(), size, root).sign(signer).to_bytes()
}

struct Fixture {
    _dir: TempDir,
    db: Arc<DB>,
    sm: StateMachine,
    signer: Signer,
    next_index: u64,
}

/// Everything of the shard that a refused command must not change: the state (but for the last applied
/// log id), the published record, and every key of the shard in the state machine's column family but
/// the state record (staged entries, dedup index, published record).
#[derive(Debug, PartialEq)]
struct Observed {
    state: ReplicatedState,
    published: Published,
    keys: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Fixture {
    fn new() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let db = open_db(dir.path()).expect("open db");
        let sm = StateMachine(ShardSm::open(db.clone(), SHARD).expect("open state machine"));
        Self {
            _dir: dir,
            db,
            sm,
            signer: signer("test.cairn.dev/apply"),
            next_index: 1,
        }
    }

    /// Init, then `SEQUENCED` entries.
    async fn sequenced() -> Self {
        let mut f = Self::new();
        let info = Shard {
            id: SHARD,
            origin: f.signer.name().to_owned(),
            vkey: f.signer.verifier().to_string(),
        };
        let replies = f
            .apply(vec![Command::Init(info), Command::Append(entries(SEQUENCED))])
            .await;
        assert_eq!(replies[0], Reply::Done);
        assert!(matches!(&replies[1], Reply::Appended(a) if a.len() == SEQUENCED as usize));
        f
    }

    /// Init, `SEQUENCED` entries, and an accepted checkpoint of `PUBLISHED`.
    async fn published() -> Self {
        let mut f = Self::sequenced().await;
        let n = note(&f.signer, PUBLISHED, root(PUBLISHED));
        assert_eq!(f.checkpointed(PUBLISHED, n).await, Reply::Done);
        assert_eq!(f.sm.0.published().size, PUBLISHED);
        f
    }

    /// Applies `commands` in one `apply` call, as consecutive Raft entries.
    async fn apply(&mut self, commands: Vec<Command>) -> Vec<Reply> {
        let batch: Vec<Entry<TypeConfig>> = commands
            .into_iter()
            .map(|c| {
                let e = Entry {
                    log_id: log_id(1, 1, self.next_index),
                    payload: EntryPayload::Normal(c),
                };
                self.next_index += 1;
                e
            })
            .collect();
        self.sm.apply(batch).await.expect("apply")
    }

    async fn checkpointed(&mut self, size: u64, note: Vec<u8>) -> Reply {
        let mut replies = self.apply(vec![Command::Checkpointed { size, note }]).await;
        assert_eq!(replies.len(), 1);
        replies.remove(0)
    }

    fn observe(&self) -> Observed {
        let mut state = self.sm.0.state();
        state.last_applied = None;
        let cf = self.db.cf_handle("sm").expect("sm column family");
        let prefix = SHARD.to_be_bytes();
        let keys = self
            .db
            .iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward))
            .map(|kv| kv.expect("read"))
            .take_while(|(k, _)| k.starts_with(&prefix))
            // The state record changes with every applied entry (its last applied log id).
            .filter(|(k, _)| k.get(4) != Some(&b's'))
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        Observed {
            state,
            published: self.sm.0.published(),
            keys,
        }
    }

    /// Applies a checkpoint that must be refused, and checks that nothing changed.
    async fn assert_rejected(&mut self, size: u64, note: Vec<u8>) {
        let before = self.observe();
        let reply = self.checkpointed(size, note).await;
        assert!(
            matches!(reply, Reply::Rejected(_)),
            "checkpoint of {size} was not rejected: {reply:?}"
        );
        assert_eq!(
            self.observe(),
            before,
            "a rejected checkpoint of {size} changed the state"
        );
    }
}

/// Staged entries `[from, to)` as the state machine returns them.
fn staged(sm: &ShardSm, from: u64, to: u64) -> Option<Vec<Vec<u8>>> {
    sm.staged_entries(from, to).ok()
}

#[tokio::test]
async fn rejects_size_below_published() {
    let mut f = Fixture::published().await;
    let n = note(&f.signer, 50, root(50));
    f.assert_rejected(50, n).await;
}

#[tokio::test]
async fn rejects_size_above_sequenced() {
    let mut f = Fixture::published().await;
    // The tree of 301 leaves does not exist yet; sign the one-leaf-longer tree a caller might imagine.
    let mut longer = leaves(SEQUENCED);
    longer.push(leaf_hash(b"not sequenced"));
    let n = note(&f.signer, SEQUENCED + 1, mth(&longer));
    f.assert_rejected(SEQUENCED + 1, n).await;
}

#[tokio::test]
async fn rejects_checkpoint_before_init() {
    let mut f = Fixture::new();
    let replies = f.apply(vec![Command::Append(entries(10))]).await;
    assert!(matches!(&replies[0], Reply::Appended(a) if a.len() == 10));
    assert!(f.sm.0.state().info.is_none());
    let n = note(&f.signer, 10, root(10));
    f.assert_rejected(10, n).await;
}

#[tokio::test]
async fn rejects_unparsable_note() {
    let mut f = Fixture::published().await;
    f.assert_rejected(200, b"not a signed note\n".to_vec()).await;
    // A valid note cut short.
    let mut cut = note(&f.signer, 200, root(200));
    cut.truncate(cut.len() / 2);
    f.assert_rejected(200, cut).await;
}

#[tokio::test]
async fn rejects_note_for_another_origin() {
    let mut f = Fixture::published().await;
    let other = signer("test.cairn.dev/another-log");
    let n = note(&other, 200, root(200));
    f.assert_rejected(200, n).await;
}

#[tokio::test]
async fn rejects_note_with_another_root() {
    let mut f = Fixture::published().await;
    // The root of a different tree of the same size, and the root of a smaller tree.
    let mut different = leaves(200);
    different[150] = leaf_hash(b"something else");
    let n = note(&f.signer, 200, mth(&different));
    f.assert_rejected(200, n).await;
    let n = note(&f.signer, 200, root(199));
    f.assert_rejected(200, n).await;
}

#[tokio::test]
async fn rejects_note_of_another_size() {
    let mut f = Fixture::published().await;
    // A correct checkpoint, but for a size other than the command's.
    let n = note(&f.signer, 210, root(210));
    f.assert_rejected(200, n).await;
    let n = note(&f.signer, 190, root(190));
    f.assert_rejected(200, n).await;
}

#[tokio::test]
async fn accepts_checkpoint_and_drops_staged_entries_below_the_bundle_floor() {
    let mut f = Fixture::published().await;
    let all = entries(SEQUENCED);
    let n = note(&f.signer, 260, root(260));
    assert_eq!(f.checkpointed(260, n.clone()).await, Reply::Done);

    let published = f.sm.0.published();
    assert_eq!(published.size, 260);
    assert_eq!(published.note, n);
    // The partial tiles of the tree of 260: level 0 holds leaves 256..260, level 1 the root of the
    // first full tile.
    let lh = leaves(SEQUENCED);
    let level0: Vec<u8> = lh[256..260].iter().flat_map(|h| h.0).collect();
    let mut expected = vec![(0u8, 1u64, 4u16, level0), (1, 0, 1, mth(&lh[..256]).0.to_vec())];
    let mut got = published.partial_tiles.clone();
    expected.sort();
    got.sort();
    assert_eq!(got, expected);

    // Below the floor of the bundle that holds entry 260 (256) nothing is staged any more; from there
    // on everything still is, with its contents.
    assert!(staged(&f.sm.0, 0, 1).is_none());
    assert!(staged(&f.sm.0, 255, 256).is_none());
    assert_eq!(staged(&f.sm.0, 256, SEQUENCED).as_deref(), Some(&all[256..]));
    // The dedup index keeps every entry.
    for (i, e) in all.iter().enumerate() {
        assert_eq!(f.sm.0.lookup(&leaf_hash(e).0).expect("lookup"), Some(i as u64));
    }
    // The state itself is untouched by publishing.
    let state = f.sm.0.state();
    assert_eq!(state.size, SEQUENCED);
    assert_eq!(state.tree_edge().root(), root(SEQUENCED));
}

#[tokio::test]
async fn accepts_checkpoint_of_entries_applied_in_the_same_call() {
    let mut f = Fixture::published().await;
    let more: Vec<Vec<u8>> = (SEQUENCED..SEQUENCED + 20)
        .map(|i| format!("entry {i}").into_bytes())
        .collect();
    let mut lh = leaves(SEQUENCED);
    lh.extend(more.iter().map(|e| leaf_hash(e)));
    let n = note(&f.signer, 320, mth(&lh));
    let replies = f
        .apply(vec![
            Command::Append(more.clone()),
            Command::Checkpointed { size: 320, note: n },
        ])
        .await;
    assert!(matches!(&replies[0], Reply::Appended(a) if a.len() == 20));
    assert_eq!(replies[1], Reply::Done);
    assert_eq!(f.sm.0.published().size, 320);
    assert!(staged(&f.sm.0, 255, 256).is_none());
    assert_eq!(staged(&f.sm.0, 300, 320).as_deref(), Some(&more[..]));
}
