//! `TileReader` over an in-memory bucket filled by `testing::write_log`: the checkpoint (verified, never
//! backwards, split views refused, offered notes), proofs at every published size checked with
//! `cairn_tlog`'s verifiers against roots from `write_log`'s checkpoints and a naive Merkle tree hash,
//! and the errors callers act on. The audit and the cache are in `audit.rs` and `cache.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use cairn_store::{ReadError, Source, TileCache, TileReader};
use cairn_tlog::{
    Checkpoint, Hash, Signer, TileId, TlogProof, leaf_hash, verify_consistency, verify_inclusion,
};
use common::{LOG_SIZE, Log, entries, memory_root, naive_bundle, naive_root, naive_tile0, usual_log, write};

/// Indexes to prove in a tree of `size`: all of them in small trees, else tile edges, the ends, and
/// a stride.
fn sample(size: u64) -> Vec<u64> {
    if size <= 300 {
        return (0..size).collect();
    }
    const EDGES: [u64; 10] = [0, 1, 2, 127, 128, 255, 256, 257, 511, 512];
    let ends = [size / 3, size / 2, size - 2, size - 1];
    let mut v: BTreeSet<u64> = EDGES.into_iter().chain(ends).filter(|&i| i < size).collect();
    v.extend((0..size).step_by(97));
    v.into_iter().collect()
}

/// Tree sizes that no checkpoint has, below the usual log's size.
const OTHER_SIZES: [u64; 13] = [2, 3, 255, 257, 511, 512, 513, 1000, 1257, 4096, 4097, 6000, 6258];

/// The root of every size to prove at: the checkpoints' roots (which must equal the naive roots), and
/// naive roots of [`OTHER_SIZES`].
fn roots(log: &Log) -> BTreeMap<u64, Hash> {
    let leaves = log.leaves();
    let mut roots = BTreeMap::new();
    for cp in &log.checkpoints {
        let size = usize::try_from(cp.size).unwrap_or(usize::MAX);
        assert_eq!(
            cp.root,
            naive_root(&leaves[..size]),
            "write_log's root at size {}",
            cp.size
        );
        roots.insert(cp.size, cp.root);
    }
    for s in OTHER_SIZES {
        roots.insert(s, naive_root(&leaves[..s as usize]));
    }
    roots
}

fn is_corrupt<T: std::fmt::Debug>(r: &Result<T, ReadError>) -> bool {
    matches!(r, Err(ReadError::Corrupt(_)))
}

#[tokio::test]
async fn checkpoint_is_the_last_one_written_and_verified() {
    let log = usual_log().await;
    let sizes: Vec<u64> = log.checkpoints.iter().map(|c| c.size).collect();
    assert_eq!(sizes, [1, 256, 1256, 1259, 6259]);

    let cp = log.reader().checkpoint().await.expect("checkpoint");
    assert_eq!(&cp.checkpoint, log.latest());
    assert_eq!(cp.note.body, log.object("checkpoint").await);
    assert!(Checkpoint::open(&cp.note.body, &log.signer().verifier(), &[]).is_ok());
}

#[tokio::test]
async fn checkpoint_signed_by_another_key_is_corrupt() {
    let log = usual_log().await;
    let other_shard = TileReader::new(
        log.bucket.clone(),
        cairn_store::testing::test_signer(2).verifier(),
        TileCache::new(0),
    );
    assert!(is_corrupt(&other_shard.checkpoint().await));

    // Same name as the shard's key, different key.
    let impostor = Signer::from_seed(log.signer().name(), [9; 32]).expect("key");
    log.store_checkpoint(log.latest().sign(&impostor).to_bytes())
        .await;
    assert!(is_corrupt(&log.reader().checkpoint().await));

    log.store_checkpoint(b"not a note\n".to_vec()).await;
    assert!(is_corrupt(&log.reader().checkpoint().await));
}

#[tokio::test]
async fn no_checkpoint_object_is_no_checkpoint() {
    let log = common::write(&memory_root(), 1, common::entries("e", 10), &[]).await;
    log.delete("checkpoint").await;
    let reader = log.reader();
    assert_eq!(reader.checkpoint().await.err(), Some(ReadError::NoCheckpoint));
    assert_eq!(
        reader.inclusion_proof(1, 0).await.err(),
        Some(ReadError::NoCheckpoint)
    );
    assert_eq!(reader.tlog_proof(0).await.err(), Some(ReadError::NoCheckpoint));
}

#[tokio::test]
async fn checkpoint_is_reread_after_its_ttl_only() {
    let log = usual_log().await;
    log.store_checkpoint(log.note(&log.checkpoints[1])).await;
    let cached = log.reader().with_checkpoint_ttl(Duration::from_secs(3600));
    assert_eq!(
        cached.checkpoint().await.expect("checkpoint").checkpoint.size,
        256
    );

    log.store_checkpoint(log.note(log.latest())).await;
    assert_eq!(
        cached.checkpoint().await.expect("checkpoint").checkpoint.size,
        256
    );
    assert!(matches!(
        cached.checkpoint_covering(LOG_SIZE as u64).await,
        Err(ReadError::NotPublished(_))
    ));
    let fresh = log.reader();
    assert_eq!(
        fresh.checkpoint().await.expect("checkpoint").checkpoint.size,
        LOG_SIZE as u64
    );
}

/// For each checkpoint in turn as the latest one (so tiles are read at every published width, partial
/// tiles of intermediate sizes included): inclusion proofs at every size it covers, checked against
/// independent roots.
#[tokio::test]
async fn inclusion_proofs_verify_at_every_published_size() {
    let log = usual_log().await;
    let roots = roots(&log);
    let cache = TileCache::new(16 << 20);
    for latest in &log.checkpoints {
        log.store_checkpoint(log.note(latest)).await;
        let reader = log.reader_with(cache.clone());
        for (&size, root) in roots.range(..=latest.size) {
            let indexes = sample(size);
            let proofs = reader
                .inclusion_proofs(size, &indexes)
                .await
                .expect("inclusion proofs");
            assert_eq!(proofs.len(), indexes.len());
            for (&i, proof) in indexes.iter().zip(&proofs) {
                let leaf = leaf_hash(&log.entries[i as usize]);
                assert_eq!(
                    verify_inclusion(&leaf, i, size, proof, root),
                    Ok(()),
                    "index {i} in size {size}, read as of {}",
                    latest.size
                );
            }
            // The single-proof form agrees, and a proof is not valid for a neighbouring entry.
            let last = size - 1;
            let single = reader.inclusion_proof(size, last).await.expect("inclusion proof");
            assert_eq!(Some(&single), proofs.last());
            if size > 1 {
                let wrong = leaf_hash(&log.entries[last as usize - 1]);
                assert!(verify_inclusion(&wrong, last, size, &single, root).is_err());
            }
        }
    }
}

#[tokio::test]
async fn consistency_proofs_verify_between_every_pair_of_sizes() {
    let log = usual_log().await;
    let roots = roots(&log);
    let cache = TileCache::new(16 << 20);
    for latest in &log.checkpoints {
        log.store_checkpoint(log.note(latest)).await;
        let reader = log.reader_with(cache.clone());
        let covered: Vec<(u64, Hash)> = roots.range(..=latest.size).map(|(&s, &r)| (s, r)).collect();
        for (a, &(size1, root1)) in covered.iter().enumerate() {
            for &(size2, root2) in &covered[a..] {
                let proof = reader
                    .consistency_proof(size1, size2)
                    .await
                    .expect("consistency proof");
                assert_eq!(
                    verify_consistency(size1, size2, &proof, &root1, &root2),
                    Ok(()),
                    "{size1} -> {size2}, read as of {}",
                    latest.size
                );
            }
        }
    }
    // Every pair of successive checkpoints, as of the latest.
    let reader = log.reader();
    for pair in log.checkpoints.windows(2) {
        let (old, new) = (&pair[0], &pair[1]);
        let proof = reader
            .consistency_proof(old.size, new.size)
            .await
            .expect("consistency proof");
        assert_eq!(
            verify_consistency(old.size, new.size, &proof, &old.root, &new.root),
            Ok(())
        );
        assert!(verify_consistency(old.size, new.size, &proof, &old.root, &Hash([0; 32])).is_err());
    }
}

#[tokio::test]
async fn tlog_proofs_verify_for_their_entries() {
    let log = usual_log().await;
    let key = log.signer().verifier();
    for latest in &log.checkpoints {
        log.store_checkpoint(log.note(latest)).await;
        let reader = log.reader();
        for i in sample(latest.size) {
            let proof = reader.tlog_proof(i).await.expect("tlog proof");
            let entry = &log.entries[i as usize];
            let (cp, _) = proof.verify(entry, &key, &[]).expect("verifies");
            assert_eq!(&cp, latest);
            // It survives its wire form, and does not prove another entry.
            let parsed = TlogProof::parse(&proof.to_bytes()).expect("parses");
            assert!(parsed.verify(entry, &key, &[]).is_ok());
            assert!(parsed.verify(b"something else", &key, &[]).is_err());
        }
    }
}

#[tokio::test]
async fn requests_beyond_the_tree_or_malformed_are_refused() {
    let log = usual_log().await;
    let reader = log.reader();
    let size = LOG_SIZE as u64;
    let invalid = |r: Result<Vec<Hash>, ReadError>| matches!(r, Err(ReadError::Invalid(_)));
    let not_published = |r: Result<Vec<Hash>, ReadError>| matches!(r, Err(ReadError::NotPublished(_)));

    // Index not below the size.
    assert!(invalid(reader.inclusion_proof(size, size).await));
    assert!(invalid(reader.inclusion_proof(256, 256).await));
    assert!(invalid(reader.inclusion_proof(1, 5).await));
    assert!(invalid(reader.inclusion_proof(0, 0).await));
    assert!(matches!(
        reader.inclusion_proofs(10, &[0, 3, 10]).await,
        Err(ReadError::Invalid(_))
    ));
    assert!(matches!(
        reader.tlog_proof(size).await,
        Err(ReadError::NotPublished(_))
    ));
    assert!(matches!(
        reader.tlog_proof(u64::MAX).await,
        Err(ReadError::NotPublished(_))
    ));

    // A size beyond the checkpoint.
    assert!(not_published(reader.inclusion_proof(size + 1, 0).await));
    assert!(not_published(reader.inclusion_proof(u64::MAX, 0).await));
    assert!(not_published(reader.consistency_proof(1, size + 1).await));
    assert!(matches!(
        reader.checkpoint_covering(size + 1).await,
        Err(ReadError::NotPublished(_))
    ));
    assert!(reader.checkpoint_covering(size).await.is_ok());

    // Consistency sizes out of order, or from the empty tree.
    assert!(invalid(reader.consistency_proof(0, 5).await));
    assert!(invalid(reader.consistency_proof(0, 0).await));
    assert!(invalid(reader.consistency_proof(6, 5).await));
    assert!(invalid(reader.consistency_proof(size, 1).await));
    assert_eq!(reader.consistency_proof(5, 5).await, Ok(vec![]));

    // Tiles and bundles the tree does not have.
    assert!(matches!(
        reader.tile_at(TileId::full(0, 25), size).await,
        Err(ReadError::Invalid(_))
    ));
    assert!(matches!(
        reader.tile_at(TileId::full(1, 1), size).await,
        Err(ReadError::Invalid(_))
    ));
    assert!(matches!(
        reader.bundle_at(25, size).await,
        Err(ReadError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_empty_log_proves_nothing() {
    let log = common::write(&memory_root(), 1, Vec::new(), &[]).await;
    let reader = log.reader();
    let cp = reader.checkpoint().await.expect("checkpoint");
    assert_eq!(cp.checkpoint.size, 0);
    assert_eq!(cp.checkpoint.root, naive_root(&[]));
    assert!(matches!(
        reader.inclusion_proof(0, 0).await,
        Err(ReadError::Invalid(_))
    ));
    assert!(matches!(
        reader.tlog_proof(0).await,
        Err(ReadError::NotPublished(_))
    ));
    assert!(matches!(
        reader.consistency_proof(0, 0).await,
        Err(ReadError::Invalid(_))
    ));
}

#[tokio::test]
async fn tiles_and_bundles_are_read_at_the_width_of_the_size() {
    let log = usual_log().await;
    let reader = log.reader();
    let leaves = log.leaves();

    let full = reader
        .tile_at(TileId::full(0, 0), LOG_SIZE as u64)
        .await
        .expect("tile");
    assert!(full.body == naive_tile0(&leaves[..256]), "full");
    // Partial tiles at the latest size and at an earlier checkpoint's size.
    let last = reader
        .tile_at(TileId::full(0, 24), LOG_SIZE as u64)
        .await
        .expect("tile");
    assert!(last.body == naive_tile0(&leaves[6144..LOG_SIZE]), "last");
    let earlier = reader.tile_at(TileId::full(0, 4), 1256).await.expect("tile");
    assert!(earlier.body == naive_tile0(&leaves[1024..1256]), "earlier");
    // Level 1 holds the roots of full level-0 tiles.
    let level1 = reader
        .tile_at(TileId::full(1, 0), LOG_SIZE as u64)
        .await
        .expect("tile");
    let roots: Vec<[u8; 32]> = leaves[..24 * 256].chunks(256).map(|c| naive_root(c).0).collect();
    assert!(level1.body == naive_tile0(&roots), "level1");

    let bundle = reader.bundle_at(4, 1256).await.expect("bundle");
    assert!(bundle.body == naive_bundle(&log.entries[1024..1256]), "bundle");
    let bundle = reader.bundle_at(0, LOG_SIZE as u64).await.expect("bundle");
    assert!(bundle.body == naive_bundle(&log.entries[..256]), "bundle");
}

#[tokio::test]
async fn never_goes_backwards() {
    let log = usual_log().await;
    let reader = log.reader();
    assert_eq!(
        reader.checkpoint().await.expect("checkpoint").checkpoint,
        *log.latest()
    );

    for older in &log.checkpoints[..4] {
        log.store_checkpoint(log.note(older)).await;
        let cp = reader.checkpoint().await.expect("checkpoint");
        assert_eq!(cp.checkpoint, *log.latest(), "after storing size {}", older.size);
        assert!(reader.checkpoint_covering(LOG_SIZE as u64).await.is_ok());
    }
    // A reader that never saw the newer one does go by the store.
    assert_eq!(
        log.reader()
            .checkpoint()
            .await
            .expect("checkpoint")
            .checkpoint
            .size,
        1259
    );
}

#[tokio::test]
async fn a_second_root_for_a_size_already_seen_is_a_split_view() {
    let log = usual_log().await;
    let reader = log.reader();
    reader.checkpoint().await.expect("checkpoint");

    let forked = Checkpoint::new(log.signer().name(), LOG_SIZE as u64, Hash([7; 32]));
    let forked_note = log.note(&forked);
    assert!(Checkpoint::open(&forked_note, &log.signer().verifier(), &[]).is_ok());
    log.store_checkpoint(forked_note.clone()).await;
    assert!(is_corrupt(&reader.checkpoint().await));
    assert!(is_corrupt(&reader.offer(&forked_note)));

    // The reader still holds the first root.
    log.store_checkpoint(log.note(log.latest())).await;
    assert_eq!(
        reader.checkpoint().await.expect("checkpoint").checkpoint,
        *log.latest()
    );
}

#[tokio::test]
async fn a_larger_checkpoint_must_extend_the_one_read_before() {
    // Growth of the same log is accepted: every checkpoint in turn.
    let all = entries("entry", 3000);
    let log = write(&memory_root(), 1, all.clone(), &[700, 1, 1299, 1000]).await;
    let reader = log.reader();
    for cp in &log.checkpoints {
        log.store_checkpoint(log.note(cp)).await;
        assert_eq!(reader.checkpoint().await.expect("growth").checkpoint, *cp);
    }

    // Another history, validly signed, larger than what the reader saw: a fork over time.
    let root = memory_root();
    let small = write(&root, 1, all[..700].to_vec(), &[700]).await;
    let small_reader = small.reader();
    assert_eq!(
        small_reader.checkpoint().await.expect("first").checkpoint.size,
        700
    );
    let mut other = all[..699].to_vec();
    other.push(b"rewritten".to_vec());
    other.extend(all[700..2000].iter().cloned());
    let rewritten = write(&root, 1, other, &[2000]).await;
    assert_eq!(rewritten.latest().size, 2000);
    let r = small_reader.checkpoint().await;
    assert!(is_corrupt(&r), "a rewritten history was adopted: {r:?}");
    // A reader that saw nothing before has no history to hold it to.
    assert_eq!(
        rewritten
            .reader()
            .checkpoint()
            .await
            .expect("fresh")
            .checkpoint
            .size,
        2000
    );
}

#[tokio::test]
async fn a_valid_newer_note_offered_is_adopted() {
    // The tiles of the whole log are in the store, its checkpoint is still the one of size 256.
    let log = usual_log().await;
    let old = log.checkpoints[1].clone();
    log.store_checkpoint(log.note(&old)).await;
    let reader = log.reader();
    assert_eq!(reader.checkpoint().await.expect("checkpoint").checkpoint, old);
    assert!(matches!(
        reader.checkpoint_covering(LOG_SIZE as u64).await,
        Err(ReadError::NotPublished(_))
    ));

    let newest = log.latest().clone();
    let offered = reader.offer(&log.note(&newest)).expect("offer");
    assert_eq!(offered.checkpoint, newest);
    assert_eq!(
        log.object("checkpoint").await,
        log.note(&old),
        "the store is unchanged"
    );

    let cp = reader
        .checkpoint_covering(LOG_SIZE as u64)
        .await
        .expect("covering");
    assert_eq!(cp.checkpoint, newest);
    let i = LOG_SIZE as u64 - 3;
    let proof = reader.inclusion_proof(LOG_SIZE as u64, i).await.expect("proof");
    let leaf = leaf_hash(&log.entries[i as usize]);
    assert_eq!(
        verify_inclusion(&leaf, i, newest.size, &proof, &newest.root),
        Ok(())
    );
    let tlog = reader.tlog_proof(i).await.expect("tlog proof");
    assert_eq!(
        tlog.verify(&log.entries[i as usize], reader.key(), &[])
            .map(|(c, _)| c),
        Ok(newest.clone())
    );
    let proof = reader
        .consistency_proof(old.size, newest.size)
        .await
        .expect("proof");
    assert_eq!(
        verify_consistency(old.size, newest.size, &proof, &old.root, &newest.root),
        Ok(())
    );

    // Proofs in the offered checkpoint's tree, read at its size.
    let indexes = [0, 255, 256, 6000, 6258];
    let proofs = reader
        .inclusion_proofs_in(&offered, &indexes)
        .await
        .expect("proofs");
    for (&i, proof) in indexes.iter().zip(&proofs) {
        let leaf = leaf_hash(&log.entries[i as usize]);
        assert_eq!(
            verify_inclusion(&leaf, i, newest.size, proof, &newest.root),
            Ok(())
        );
    }

    // An older note offered later is verified but does not move the reader back.
    let older = reader.offer(&log.note(&log.checkpoints[0])).expect("offer");
    assert_eq!(older.checkpoint.size, 1);
    assert_eq!(reader.checkpoint().await.expect("checkpoint").checkpoint, newest);
}

#[tokio::test]
async fn a_note_offered_under_another_key_changes_nothing() {
    let log = usual_log().await;
    log.store_checkpoint(log.note(&log.checkpoints[1])).await;
    let reader = log.reader();
    assert_eq!(
        reader.checkpoint().await.expect("checkpoint").checkpoint.size,
        256
    );

    let impostor = Signer::from_seed(log.signer().name(), [9; 32]).expect("key");
    assert!(is_corrupt(
        &reader.offer(&log.latest().sign(&impostor).to_bytes())
    ));
    let other_shard = cairn_store::testing::test_signer(2);
    assert!(is_corrupt(
        &reader.offer(&log.latest().sign(&other_shard).to_bytes())
    ));
    assert!(is_corrupt(&reader.offer(b"garbage")));

    assert_eq!(
        reader.checkpoint().await.expect("checkpoint").checkpoint.size,
        256
    );
    assert!(matches!(
        reader.checkpoint_covering(LOG_SIZE as u64).await,
        Err(ReadError::NotPublished(_))
    ));
}

#[tokio::test]
async fn a_missing_tile_the_checkpoint_implies_is_corrupt() {
    let log = usual_log().await;
    log.delete("tile/0/005").await;
    let reader = log.reader();
    assert!(is_corrupt(
        &reader.inclusion_proof(LOG_SIZE as u64, 5 * 256 + 3).await
    ));
    assert!(is_corrupt(&reader.tlog_proof(5 * 256 + 3).await));
    assert!(is_corrupt(
        &reader.tile_at(TileId::full(0, 5), LOG_SIZE as u64).await
    ));
    // Proofs that do not need it still work.
    assert!(reader.inclusion_proof(LOG_SIZE as u64, 3).await.is_ok());

    // (A fresh reader: the one above has this tile in its cache from the last proof.)
    log.delete("tile/0/024.p/115").await;
    let reader = log.reader();
    assert!(is_corrupt(&reader.consistency_proof(1256, LOG_SIZE as u64).await));

    log.delete("tile/entries/003").await;
    assert!(is_corrupt(&reader.bundle_at(3, LOG_SIZE as u64).await));
}

#[tokio::test]
async fn a_truncated_tile_the_checkpoint_implies_is_corrupt() {
    let log = usual_log().await;
    let reader = log.reader();
    // The level-1 tile (24 hashes at the latest size) is on the path of every proof of an early index.
    let level1 = log.object("tile/1/000.p/24").await;
    log.replace("tile/1/000.p/24", level1[..23 * 32].to_vec()).await;
    assert!(is_corrupt(&reader.inclusion_proof(LOG_SIZE as u64, 0).await));
    assert!(is_corrupt(&reader.tlog_proof(0).await));

    // Not a whole number of hashes, and empty.
    let log = usual_log().await;
    let reader = log.reader();
    let tile = log.object("tile/0/024.p/115").await;
    log.replace("tile/0/024.p/115", tile[..tile.len() - 5].to_vec())
        .await;
    assert!(is_corrupt(&reader.inclusion_proof(LOG_SIZE as u64, 6200).await));
    log.replace("tile/0/003", Vec::new()).await;
    assert!(is_corrupt(
        &reader.inclusion_proof(LOG_SIZE as u64, 3 * 256).await
    ));
    // Too long is wrong too.
    let mut long = log.object("tile/0/002").await;
    long.extend_from_slice(&[0; 32]);
    log.replace("tile/0/002", long).await;
    assert!(is_corrupt(
        &reader.inclusion_proof(LOG_SIZE as u64, 2 * 256).await
    ));
}

/// A source whose every read fails, as an unreachable store would.
struct Down;

impl Source for Down {
    async fn get(&self, _rel: &str) -> Result<Option<Bytes>, ReadError> {
        Err(ReadError::Unavailable("storage is down".into()))
    }

    fn describe(&self) -> String {
        "down".into()
    }
}

#[tokio::test]
async fn storage_failures_are_unavailable() {
    let cache = TileCache::new(1 << 20);
    let reader = TileReader::new(
        Down,
        cairn_store::testing::test_signer(1).verifier(),
        cache.clone(),
    );
    assert!(matches!(
        reader.checkpoint().await,
        Err(ReadError::Unavailable(_))
    ));
    assert!(matches!(
        reader.object("tile/0/000").await,
        Err(ReadError::Unavailable(_))
    ));
    assert!(matches!(
        reader.tile_at(TileId::full(0, 0), 256).await,
        Err(ReadError::Unavailable(_))
    ));
    assert_eq!(cache.stats().snapshot(), (0, 2, 2));
}

/// The log's bucket, with reads of one path failing while `down` is set; counts those reads.
struct Flaky {
    bucket: cairn_store::Bucket,
    path: &'static str,
    down: std::sync::atomic::AtomicBool,
    reads: std::sync::atomic::AtomicU32,
}

/// A [`Source`] reading through a shared [`Flaky`].
struct FlakySource(std::sync::Arc<Flaky>);

impl Source for FlakySource {
    async fn get(&self, rel: &str) -> Result<Option<Bytes>, ReadError> {
        use std::sync::atomic::Ordering;
        let flaky = &self.0;
        if rel == flaky.path {
            flaky.reads.fetch_add(1, Ordering::SeqCst);
            // Slow enough that every concurrent proof asks while the read is on its way.
            tokio::time::sleep(Duration::from_millis(20)).await;
            if flaky.down.load(Ordering::SeqCst) {
                return Err(ReadError::Unavailable("storage is down".into()));
            }
        }
        Source::get(&flaky.bucket, rel).await
    }

    fn describe(&self) -> String {
        "flaky".into()
    }
}

#[tokio::test]
async fn proofs_waiting_together_share_one_read_of_a_tile_and_its_failure() {
    use std::sync::atomic::Ordering;
    let log = usual_log().await;
    let size = LOG_SIZE as u64;
    // Index 6200 is in the partial level-0 tile of the latest tree.
    let flaky = std::sync::Arc::new(Flaky {
        bucket: log.bucket.clone(),
        path: "tile/0/024.p/115",
        down: true.into(),
        reads: 0.into(),
    });
    let reader = TileReader::new(
        FlakySource(flaky.clone()),
        cairn_store::testing::test_signer(log.id).verifier(),
        TileCache::new(1 << 20),
    );
    let cp = reader
        .offer(&log.note(log.latest()))
        .expect("the latest note verifies");
    let indexes: Vec<u64> = (6200..6240).collect();
    let prove = |i: u64| {
        let (reader, cp) = (&reader, &cp);
        async move { reader.inclusion_proofs_in(cp, &[i]).await }
    };
    // Forty proofs at once: one read of the tile, and its failure answers all of them.
    let failed = futures::future::join_all(indexes.iter().map(|&i| prove(i))).await;
    assert!(
        failed.iter().all(|r| matches!(r, Err(ReadError::Unavailable(_)))),
        "{failed:?}"
    );
    assert_eq!(flaky.reads.load(Ordering::SeqCst), 1);
    // The failure is not kept: once storage is back the next proofs read the tile again, once.
    flaky.down.store(false, Ordering::SeqCst);
    let proved = futures::future::join_all(indexes.iter().map(|&i| prove(i))).await;
    assert_eq!(flaky.reads.load(Ordering::SeqCst), 2);
    let leaves = log.leaves();
    for (&i, r) in indexes.iter().zip(proved) {
        let proof = r.expect("proved once storage is back").remove(0);
        verify_inclusion(&Hash(leaves[i as usize]), i, size, &proof, &log.latest().root)
            .expect("the proof verifies");
    }
}
