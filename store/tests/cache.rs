//! `TileCache` shared by readers: shards kept apart though their relative paths are the same, and the
//! hit and miss counters. Expected tiles are the entries' leaf hashes concatenated by hand.

mod common;

use std::sync::Arc;

use cairn_store::{Bucket, ReadError, TileCache, etag_of};
use cairn_tlog::TileId;
use common::{entries, memory_root, naive_tile0, write};
use object_store::memory::InMemory;
use object_store::path::Path;

#[tokio::test]
async fn one_cache_keeps_two_shards_apart() {
    let root = memory_root();
    let one = write(&root, 1, entries("one", 300), &[]).await;
    let two = write(&root, 2, entries("two", 300), &[]).await;
    let cache = TileCache::new(1 << 20);
    let (r1, r2) = (one.reader_with(cache.clone()), two.reader_with(cache.clone()));

    let expected1 = naive_tile0(&one.leaves()[..256]);
    let expected2 = naive_tile0(&two.leaves()[..256]);
    assert_ne!(expected1, expected2);
    for _ in 0..2 {
        assert!(
            r1.object("tile/0/000").await.expect("tile").body == expected1,
            "shard 1's tile"
        );
        assert!(
            r2.object("tile/0/000").await.expect("tile").body == expected2,
            "shard 2's tile"
        );
    }
    assert_eq!(cache.stats().snapshot(), (2, 2, 0));
    let tile = r2.tile_at(TileId::full(0, 0), 300).await.expect("tile");
    assert!(tile.body == expected2, "shard 2's tile");
    assert_eq!(tile.etag, etag_of(&expected2));
}

#[tokio::test]
async fn stats_count_one_miss_then_hits() {
    let log = write(&memory_root(), 1, entries("e", 600), &[]).await;
    let cache = TileCache::new(1 << 20);
    let reader = log.reader_with(cache.clone());
    assert_eq!(cache.stats().snapshot(), (0, 0, 0));

    reader.object("tile/0/001").await.expect("tile");
    assert_eq!(cache.stats().snapshot(), (0, 1, 0));
    reader.object("tile/0/001").await.expect("tile");
    assert_eq!(cache.stats().snapshot(), (1, 1, 0));

    // Another reader of the same shard over the same cache shares its objects.
    let other = log.reader_with(cache.clone());
    other.object("tile/0/001").await.expect("tile");
    assert_eq!(cache.stats().snapshot(), (2, 1, 0));

    // Not found is a miss, not a storage error, and is not remembered.
    assert_eq!(
        reader.object("tile/0/009").await.err(),
        Some(ReadError::NotFound("tile/0/009".into()))
    );
    assert_eq!(cache.stats().snapshot(), (2, 2, 0));
    log.replace("tile/0/009", vec![1; 32]).await;
    assert_eq!(
        reader.object("tile/0/009").await.expect("now there").body,
        vec![1; 32]
    );
    assert_eq!(cache.stats().snapshot(), (2, 3, 0));

    // Proofs go through the cache too: a second proof of the same index reads nothing from storage.
    reader.inclusion_proof(600, 5).await.expect("proof");
    let (_, misses, _) = cache.stats().snapshot();
    reader.inclusion_proof(600, 5).await.expect("proof");
    assert_eq!(cache.stats().snapshot().1, misses);
}

/// Two different stores that hold a shard of the same id at the same prefix (two nodes' `memory://`
/// buckets in one process, two S3 endpoints with the same bucket name) must not share cached objects.
#[tokio::test]
async fn one_cache_keeps_two_stores_apart() {
    let a = Bucket::new(Arc::new(InMemory::new()), Path::default());
    let b = Bucket::new(Arc::new(InMemory::new()), Path::default());
    let log_a = write(&a, 1, entries("a", 256), &[]).await;
    let log_b = write(&b, 1, entries("b", 256), &[]).await;
    let cache = TileCache::new(1 << 20);
    let (ra, rb) = (log_a.reader_with(cache.clone()), log_b.reader_with(cache.clone()));
    let (a, b) = (ra.object("tile/0/000").await, rb.object("tile/0/000").await);
    assert!(
        a.expect("tile").body == naive_tile0(&log_a.leaves()),
        "store a's tile"
    );
    assert!(
        b.expect("tile").body == naive_tile0(&log_b.leaves()),
        "store b served store a's tile"
    );
}

/// A tile found malformed is reported as `Corrupt`; once storage is repaired the reader must serve it,
/// not the bad copy it cached.
#[tokio::test]
async fn a_repaired_tile_is_read_again() {
    let log = write(&memory_root(), 1, entries("e", 600), &[]).await;
    let reader = log.reader();
    let good = log.object("tile/0/001").await;
    log.replace("tile/0/001", good[..100].to_vec()).await;
    assert!(matches!(
        reader.inclusion_proof(600, 300).await,
        Err(ReadError::Corrupt(_))
    ));
    log.replace("tile/0/001", good).await;
    assert!(reader.inclusion_proof(600, 300).await.is_ok());
}
