//! A fatal error in a shard's publisher stops that shard's publisher, says why, and leaves the other
//! shards publishing; nothing that covers the offending data is ever signed, committed or written.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_sequencer::testing::{Cluster, parse_checkpoint, stored_checkpoint, test_shards};
use cairn_sequencer::{Bucket, SequencerError, ShardId};
use object_store::memory::InMemory;
use object_store::path::Path;

const T: Duration = Duration::from_secs(30);
/// The first full level-0 tile covers entries 0..256.
const TILE: u64 = 256;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn entries(shard: ShardId, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range
        .map(|i| format!("shard {shard} entry {i}").into_bytes())
        .collect()
}

/// The bucket of `shard` (as the test harness lays shards out) inside `bucket`.
fn shard_bucket(bucket: &Bucket, shard: ShardId) -> Bucket {
    let shards = test_shards(shard);
    bucket.child(&shards[shard as usize - 1].shard.prefix())
}

/// Polls until the shard's current leader reports its publisher stopped; returns the leader and reason.
async fn wait_stopped(cluster: &Cluster, shard: ShardId) -> anyhow::Result<(u64, String)> {
    let deadline = Instant::now() + T;
    loop {
        let leader = cluster.wait_for_leader(shard, T).await?;
        if let Some(why) = cluster.node(leader)?.publishing_stopped(shard) {
            return Ok((leader, why));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shard {shard}'s publisher did not stop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records the largest stored checkpoint of a shard seen until stopped.
fn watch_largest(bucket: Bucket, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut largest = 0;
        while !stop.load(Ordering::SeqCst) {
            if let Ok(Some(c)) = stored_checkpoint(&bucket).await {
                largest = largest.max(c.size);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        largest
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tile_conflict_stops_only_that_shards_publisher() -> anyhow::Result<()> {
    init_tracing();
    let bucket = Bucket::new(Arc::new(InMemory::new()), Path::default());
    // Someone else's level-0 tile where shard 1's first full tile belongs.
    let garbage = Bytes::from(vec![0xA5u8; 8192]);
    shard_bucket(&bucket, 1)
        .put("tile/0/000", garbage.clone())
        .await?;
    let cluster = Cluster::start_with(3, 2, bucket.clone(), |_| {}).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let largest = watch_largest(shard_bucket(&bucket, 1), stop.clone());

    // Below one full tile shard 1 publishes as usual (partial tiles only).
    cluster.append(1, entries(1, 0..100), T).await?;
    cluster.append(2, entries(2, 0..100), T).await?;
    assert_eq!(cluster.wait_stored(1, 100, T).await?, 100);
    cluster.append(1, entries(1, 100..200), T).await?;
    assert_eq!(cluster.wait_stored(1, 200, T).await?, 200);
    // The next round writes tile/0/000 and finds the garbage there.
    cluster.append(1, entries(1, 200..300), T).await?;
    cluster.append(2, entries(2, 100..300), T).await?;

    let (leader, why) = wait_stopped(&cluster, 1).await?;
    assert!(why.contains("tile/0/000"), "reason: {why}");
    let node = cluster.node(leader)?;
    assert_eq!(node.stopped_shards(), vec![(1, why.clone())]);
    assert_eq!(node.publisher_stops(), 1);
    assert_eq!(node.publishing_stopped(2), None);
    // A waiter learns at once that the entry will not be published by this node.
    let started = Instant::now();
    match node.wait_published(1, 299, T).await {
        Err(SequencerError::Fatal(m)) => assert!(m.contains("tile/0/000"), "{m}"),
        other => anyhow::bail!("wait_published returned {other:?}"),
    }
    assert!(started.elapsed() < T / 2);

    // The other shard keeps publishing.
    assert!(cluster.wait_stored(2, 300, T).await? >= 300);
    // Shard 1 is still sequencing: appends are accepted.
    let (_, appended) = cluster.append(1, entries(1, 300..310), T).await?;
    assert_eq!(appended.last().map(|a| a.index), Some(309));

    stop.store(true, Ordering::SeqCst);
    let largest = largest.await?;
    assert!(
        (200..TILE).contains(&largest),
        "largest stored checkpoint of shard 1: {largest}"
    );
    let stored = stored_checkpoint(&shard_bucket(&bucket, 1)).await?;
    assert!(stored.is_some_and(|c| c.size < TILE));
    // Nothing covering the garbage was committed through Raft either, on any replica.
    for id in cluster.running() {
        let committed = cluster
            .node(id)?
            .checkpoint(1)?
            .and_then(|n| parse_checkpoint(&n))
            .map_or(0, |c| c.size);
        assert!(
            committed < TILE,
            "node {id} committed a checkpoint of {committed}"
        );
    }
    // The conflicting object is left as it was.
    assert_eq!(shard_bucket(&bucket, 1).get("tile/0/000").await?, Some(garbage));
    cluster.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_signing_key_stops_only_that_shards_publisher() -> anyhow::Result<()> {
    init_tracing();
    let bucket = Bucket::new(Arc::new(InMemory::new()), Path::default());
    let cluster = Cluster::start_with(1, 2, bucket.clone(), |c| {
        if let Some(s) = c.shards.iter_mut().find(|s| s.shard.id == 1) {
            s.signer = None;
        }
    })
    .await?;
    cluster.append(1, entries(1, 0..10), T).await?;
    cluster.append(2, entries(2, 0..10), T).await?;
    let (_, why) = wait_stopped(&cluster, 1).await?;
    assert!(why.contains("signing key"), "reason: {why}");
    assert_eq!(cluster.wait_stored(2, 10, T).await?, 10);
    assert!(stored_checkpoint(&shard_bucket(&bucket, 1)).await?.is_none());
    assert_eq!(cluster.node(1)?.publishing_stopped(2), None);
    cluster.shutdown().await;
    Ok(())
}
