//! `testing::FaultyStore`: injected write failures land exactly where asked, reads pass through, and
//! checkpoint delays touch only checkpoints.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use cairn_store::Bucket;
use cairn_store::testing::{Faults, FaultyStore};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio::time::Instant;

fn faulty() -> (Bucket, Arc<Faults>, Arc<dyn ObjectStore>) {
    let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let (store, faults) = FaultyStore::wrap(inner.clone());
    (Bucket::new(store, Path::default()), faults, inner)
}

fn data(i: usize) -> Bytes {
    Bytes::from(format!("object {i}"))
}

async fn read(bucket: &Bucket, rel: &str) -> Option<Bytes> {
    bucket
        .get(rel)
        .await
        .unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

#[tokio::test]
async fn fail_one_in_three_fails_exactly_every_third_write() {
    let (bucket, faults, inner) = faulty();
    faults.fail_one_in(3);
    let mut failed = Vec::new();
    for i in 1..=9 {
        if bucket.put(&format!("o/{i}"), data(i)).await.is_err() {
            failed.push(i);
        }
    }
    assert_eq!(failed, [3, 6, 9]);

    // Reads pass through (through the wrapper and underneath it) and do not count as writes.
    for i in 1..=9 {
        let expected = (!failed.contains(&i)).then(|| data(i));
        assert_eq!(read(&bucket, &format!("o/{i}")).await, expected, "o/{i}");
        let direct = inner.get(&Path::from(format!("o/{i}"))).await;
        assert_eq!(direct.is_ok(), expected.is_some());
    }
    let outcomes: Vec<bool> = put_each(&bucket, 10..=12).await;
    assert_eq!(outcomes, [true, true, false]);

    // Overwrites, copies and renames are writes too.
    assert!(bucket.put("o/1", data(100)).await.is_ok());
    assert!(
        bucket
            .store()
            .copy(&Path::from("o/1"), &Path::from("o/copy"))
            .await
            .is_ok()
    );
    assert!(
        bucket
            .store()
            .rename(&Path::from("o/2"), &Path::from("o/renamed"))
            .await
            .is_err()
    );
    assert_eq!(read(&bucket, "o/2").await, Some(data(2)));

    faults.fail_one_in(0);
    assert_eq!(put_each(&bucket, 20..=29).await, [true; 10]);
}

/// Writes `o/<i>` for each `i` in turn; whether each succeeded.
async fn put_each(bucket: &Bucket, range: std::ops::RangeInclusive<usize>) -> Vec<bool> {
    let mut out = Vec::new();
    for i in range {
        out.push(bucket.put(&format!("o/{i}"), data(i)).await.is_ok());
    }
    out
}

#[tokio::test]
async fn fail_all_fails_every_write_until_healed() {
    let (bucket, faults, _) = faulty();
    assert!(bucket.put("before", data(0)).await.is_ok());

    faults.fail_all(true);
    assert_eq!(put_each(&bucket, 1..=5).await, [false; 5]);
    assert!(bucket.put("checkpoint", data(0)).await.is_err());
    assert!(bucket.put_immutable("tile/0/000", data(0)).await.is_err());
    assert!(
        bucket
            .store()
            .copy(&Path::from("before"), &Path::from("after"))
            .await
            .is_err()
    );
    // Reads are unaffected.
    assert_eq!(read(&bucket, "before").await, Some(data(0)));
    assert_eq!(read(&bucket, "o/1").await, None);

    faults.fail_all(false);
    assert_eq!(put_each(&bucket, 1..=5).await, [true; 5]);
    assert!(bucket.put_immutable("tile/0/000", data(0)).await.is_ok());
    assert_eq!(read(&bucket, "o/5").await, Some(data(5)));
}

/// Each write's duration, measured on tokio's clock.
async fn timed_put(bucket: &Bucket, rel: &str) -> Duration {
    let start = Instant::now();
    bucket
        .put(rel, data(0))
        .await
        .unwrap_or_else(|e| panic!("put {rel}: {e}"));
    start.elapsed()
}

#[tokio::test]
async fn delay_checkpoints_delays_only_checkpoints() {
    const DELAY: Duration = Duration::from_millis(300);
    // Generous: only a machine stalled for seconds breaks it.
    const SLACK: Duration = Duration::from_secs(10);
    let (bucket, faults, _) = faulty();
    faults.delay_checkpoints(DELAY);

    for rel in ["checkpoint", "logs/1/checkpoint"] {
        let took = timed_put(&bucket, rel).await;
        assert!(took >= DELAY && took < DELAY + SLACK, "{rel} took {took:?}");
    }
    // Only objects named exactly `checkpoint`.
    for rel in [
        "logs/1/tile/0/000",
        "logs/1/checkpoint.new",
        "checkpoint/x",
        "logs/1/tile/entries/000",
    ] {
        let took = timed_put(&bucket, rel).await;
        assert!(took < DELAY, "{rel} took {took:?}");
    }
    // Reads of a checkpoint are not delayed.
    let start = Instant::now();
    assert_eq!(read(&bucket, "checkpoint").await, Some(data(0)));
    assert!(start.elapsed() < DELAY);

    faults.delay_checkpoints(Duration::ZERO);
    assert!(timed_put(&bucket, "checkpoint").await < DELAY);
}

#[tokio::test]
async fn delay_delays_every_write() {
    const DELAY: Duration = Duration::from_millis(150);
    let (bucket, faults, _) = faulty();
    faults.delay(DELAY);
    assert!(timed_put(&bucket, "tile/0/000").await >= DELAY);
    faults.delay_checkpoints(DELAY);
    assert!(
        timed_put(&bucket, "checkpoint").await >= 2 * DELAY,
        "both delays add up"
    );
    faults.delay(Duration::ZERO);
    faults.delay_checkpoints(Duration::ZERO);
    assert!(timed_put(&bucket, "tile/0/001").await < DELAY);
}
