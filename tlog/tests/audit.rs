//! The whole-log audit, on logs published with the builders and on tampered copies of them. Expected
//! values come from the log's own inputs and a naive reference (the recursive RFC 6962 Merkle tree hash,
//! applied to each tile hash's range of leaves), never from `audit` itself.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use cairn_tlog::audit::{AuditError, AuditSource, audit, required_objects};
use cairn_tlog::bundle::{self, BundleError};
use cairn_tlog::checkpoint::CheckpointError;
use cairn_tlog::note::NoteError;
use cairn_tlog::proof::TileMap;
use cairn_tlog::tile::{BundleId, TileId, TilePath};
use cairn_tlog::{BundleBuilder, Checkpoint, EMPTY_ROOT, Hash, Signer, TileBuilder, leaf_hash, node_hash};
use proptest::prelude::*;

const ORIGIN: &str = "example.com/audit";
const BIG: u64 = 65_536 + 3;

fn log_key() -> Signer {
    Signer::from_seed(ORIGIN, [7; 32]).expect("valid key")
}

/// MTH(D[n]), as RFC 6962 §2.1 defines it.
fn mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => EMPTY_ROOT,
        1 => d[0],
        n => {
            let k = 1 << (n - 1).ilog2();
            node_hash(&mth(&d[..k]), &mth(&d[k..]))
        }
    }
}

/// Entry `i`: distinct, of varying lengths.
fn entry(i: u64) -> Vec<u8> {
    let mut e = format!("entry {i}").into_bytes();
    e.resize(e.len() + (i % 37) as usize, b'.');
    e
}

/// A published log: every file a publisher appending in batches writes, keyed by path. Partial tiles and
/// bundles of intermediate sizes stay in the store, as they may in a real bucket.
#[derive(Clone)]
struct Log {
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    files: HashMap<TilePath, Vec<u8>>,
    note: Vec<u8>,
}

impl Log {
    fn size(&self) -> u64 {
        self.entries.len() as u64
    }

    fn file(&mut self, path: TilePath) -> &mut Vec<u8> {
        self.files
            .get_mut(&path)
            .unwrap_or_else(|| panic!("{path} is published"))
    }
}

/// Publishes `size` entries in batches of 1 to 600, their sizes drawn from `seed`.
fn publish(size: u64, seed: u64) -> Log {
    let entries: Vec<Vec<u8>> = (0..size).map(entry).collect();
    let leaves: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
    let mut tiles = TileBuilder::new();
    let mut bundles = BundleBuilder::new();
    let mut files = HashMap::new();
    let mut state = seed | 1;
    let mut done = 0;
    while done < entries.len() {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let n = (1 + (state % 600) as usize).min(entries.len() - done);
        for b in bundles.extend(&entries[done..done + n]).expect("valid entries") {
            files.insert(TilePath::Entries(b.id), b.data);
        }
        for t in tiles.extend(&leaves[done..done + n]) {
            files.insert(TilePath::Hash(t.id), t.data);
        }
        done += n;
    }
    let note = Checkpoint::new(ORIGIN, size, mth(&leaves))
        .sign(&log_key())
        .to_bytes();
    Log {
        entries,
        leaves,
        files,
        note,
    }
}

fn big_log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| publish(BIG, 42))
}

/// Every hash tile of the tree, naively: hash `i` of tile (`l`, `n`) is the MTH of the `256^l` leaves
/// from `(n * 256 + i) * 256^l`.
fn naive_tiles(leaves: &[Hash]) -> TileMap {
    let mut out = TileMap::new();
    let (mut level, mut span) = (0u8, 1usize);
    while leaves.len() / span > 0 {
        let count = leaves.len() / span;
        for n in 0..count.div_ceil(256) {
            let data = (n * 256..(n * 256 + 256).min(count))
                .flat_map(|i| mth(&leaves[i * span..(i + 1) * span]).0)
                .collect();
            out.insert((level, n as u64), data);
        }
        level += 1;
        span *= 256;
    }
    out
}

/// The files a tree of `leaves.len()` serves, from the naive tiles and the bundle arithmetic.
fn naive_objects(leaves: &[Hash]) -> BTreeSet<TilePath> {
    let size = leaves.len() as u64;
    let tiles = naive_tiles(leaves).into_iter().map(|((level, index), data)| {
        TilePath::Hash(TileId {
            level,
            index,
            width: (data.len() / 32) as u16,
        })
    });
    let bundles = (0..size.div_ceil(256)).map(|index| {
        TilePath::Entries(BundleId {
            index,
            width: (size - index * 256).min(256) as u16,
        })
    });
    tiles.chain(bundles).collect()
}

/// A source that records what the audit reads.
struct Recorder<'a> {
    files: &'a HashMap<TilePath, Vec<u8>>,
    read: RefCell<BTreeSet<TilePath>>,
}

impl AuditSource for Recorder<'_> {
    fn tile(&self, id: TileId) -> Option<&[u8]> {
        self.read.borrow_mut().insert(TilePath::Hash(id));
        self.files.tile(id)
    }

    fn bundle(&self, id: BundleId) -> Option<&[u8]> {
        self.read.borrow_mut().insert(TilePath::Entries(id));
        self.files.bundle(id)
    }
}

fn run(log: &Log) -> Result<cairn_tlog::audit::AuditedLog, AuditError> {
    audit(&log.note, &log_key().verifier(), &log.files)
}

fn assert_audits(log: &Log) {
    let size = log.size();
    let audited = run(log).unwrap_or_else(|e| panic!("size {size}: {e}"));
    assert_eq!(
        audited.checkpoint,
        Checkpoint::new(ORIGIN, size, mth(&log.leaves))
    );
    assert_eq!(audited.entries, log.entries, "size {size}");
    assert_eq!(audited.tiles, naive_tiles(&log.leaves), "size {size}");

    let want = naive_objects(&log.leaves);
    assert_eq!(
        required_objects(size),
        want.iter().copied().collect::<Vec<_>>(),
        "size {size}"
    );
    let rec = Recorder {
        files: &log.files,
        read: RefCell::default(),
    };
    assert_eq!(
        audit(&log.note, &log_key().verifier(), &rec).as_ref(),
        Ok(&audited)
    );
    assert_eq!(
        rec.read.into_inner(),
        want,
        "the audit reads every required object and no other"
    );

    let sorted: BTreeMap<TilePath, Vec<u8>> = log.files.clone().into_iter().collect();
    assert_eq!(audit(&log.note, &log_key().verifier(), &sorted), Ok(audited));
}

#[test]
fn audits_logs_of_edge_sizes() {
    for size in [0, 1, 255, 256, 257, 511, 512, 513] {
        for seed in [1, 2, 3] {
            assert_audits(&publish(size, seed));
        }
    }
    let big = big_log();
    assert!(
        big.files.len() > required_objects(BIG).len(),
        "the store holds stale partial files the audit must skip"
    );
    assert_audits(big);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn audits_logs_of_random_sizes(size in 0u64..3000, seed in any::<u64>()) {
        assert_audits(&publish(size, seed));
    }
}

#[test]
fn required_objects_by_hand() {
    assert_eq!(required_objects(0), vec![]);
    let paths: Vec<String> = required_objects(257).iter().map(TilePath::to_string).collect();
    assert_eq!(
        paths,
        [
            "tile/0/000",
            "tile/0/001.p/1",
            "tile/1/000.p/1",
            "tile/entries/000",
            "tile/entries/001.p/1"
        ]
    );
}

#[test]
fn flipped_byte_in_any_tile() {
    let log = publish(600, 5);
    let tiles: Vec<TileId> = naive_objects(&log.leaves)
        .into_iter()
        .filter_map(|p| match p {
            TilePath::Hash(id) => Some(id),
            TilePath::Entries(_) => None,
        })
        .collect();
    assert_eq!(tiles.len(), 4, "0/000, 0/001, 0/002.p/88, 1/000.p/2");
    for id in tiles {
        let mut bad = log.clone();
        bad.file(TilePath::Hash(id))[33] ^= 1;
        assert_eq!(run(&bad).map(drop), Err(AuditError::Tile(id)));
    }
}

#[test]
fn flipped_byte_in_level_0_and_level_1_tiles() {
    let partial_2 = TileId {
        level: 2,
        index: 0,
        width: 1,
    };
    for id in [TileId::full(0, 5), TileId::full(1, 0), partial_2] {
        let mut bad = big_log().clone();
        bad.file(TilePath::Hash(id))[7] ^= 0x80;
        assert_eq!(run(&bad).map(drop), Err(AuditError::Tile(id)), "{id}");
    }
}

#[test]
fn flipped_byte_in_a_bundle() {
    let partial = BundleId { index: 256, width: 3 };
    for (id, last) in [(BundleId::full(5), 5 * 256 + 255), (partial, BIG - 1)] {
        let mut bad = big_log().clone();
        let data = bad.file(TilePath::Entries(id));
        *data.last_mut().expect("not empty") ^= 1;
        assert_eq!(
            run(&bad).map(drop),
            Err(AuditError::Entry {
                index: last,
                bundle: id
            }),
            "{id}"
        );
    }
    // In a length prefix, the bundle no longer parses.
    let mut bad = big_log().clone();
    bad.file(TilePath::Entries(BundleId::full(5)))[0] = 0xff;
    assert_eq!(
        run(&bad).map(drop),
        Err(AuditError::Bundle {
            bundle: BundleId::full(5),
            source: BundleError::Truncated { index: 0 }
        })
    );
}

#[test]
fn bundle_with_one_entry_too_few() {
    let partial = BundleId { index: 256, width: 3 };
    for id in [BundleId::full(5), partial] {
        let mut bad = big_log().clone();
        let first = usize::try_from(id.first_entry()).expect("small");
        let short = &bad.entries[first..first + usize::from(id.width) - 1];
        *bad.file(TilePath::Entries(id)) = bundle::encode(short).expect("valid entries");
        assert_eq!(
            run(&bad).map(drop),
            Err(AuditError::Bundle {
                bundle: id,
                source: BundleError::Count {
                    expected: usize::from(id.width),
                    got: usize::from(id.width) - 1
                }
            }),
            "{id}"
        );
    }
}

#[test]
fn missing_files() {
    let partial_0 = TileId {
        level: 0,
        index: 256,
        width: 3,
    };
    let partial_2 = TileId {
        level: 2,
        index: 0,
        width: 1,
    };
    for path in [
        TilePath::Hash(partial_0),
        TilePath::Hash(partial_2),
        TilePath::Hash(TileId::full(1, 0)),
        TilePath::Entries(BundleId::full(100)),
        TilePath::Entries(BundleId { index: 256, width: 3 }),
    ] {
        let mut bad = big_log().clone();
        assert!(bad.files.remove(&path).is_some(), "{path} is published");
        assert_eq!(run(&bad).map(drop), Err(AuditError::Missing(path)));
    }
}

#[test]
fn checkpoint_signed_by_another_key() {
    let mut bad = big_log().clone();
    let other = Signer::from_seed(ORIGIN, [8; 32]).expect("valid key");
    bad.note = Checkpoint::new(ORIGIN, BIG, mth(&bad.leaves))
        .sign(&other)
        .to_bytes();
    assert_eq!(
        run(&bad).map(drop),
        Err(AuditError::Checkpoint(CheckpointError::Note(
            NoteError::Unverified
        )))
    );
    bad.note = b"not a note".to_vec();
    assert!(matches!(run(&bad), Err(AuditError::Checkpoint(_))));
}

#[test]
fn checkpoint_with_another_root() {
    let mut bad = big_log().clone();
    let other = leaf_hash(b"another root");
    bad.note = Checkpoint::new(ORIGIN, BIG, other).sign(&log_key()).to_bytes();
    assert_eq!(
        run(&bad).map(drop),
        Err(AuditError::Root {
            computed: mth(&bad.leaves),
            checkpoint: other
        })
    );
}

#[test]
fn checkpoint_larger_than_the_files() {
    let mut bad = big_log().clone();
    for (size, missing) in [
        (BIG + 1, BundleId { index: 256, width: 4 }),
        (u64::MAX, BundleId::full(256)),
    ] {
        bad.note = Checkpoint::new(ORIGIN, size, EMPTY_ROOT)
            .sign(&log_key())
            .to_bytes();
        assert_eq!(
            run(&bad).map(drop),
            Err(AuditError::Missing(TilePath::Entries(missing))),
            "{size}"
        );
    }
}
