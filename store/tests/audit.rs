//! `TileReader::audit` over logs written by `testing::write_log`: every entry back in order with the
//! checkpoint, and one flipped bit in a bundle or in a hash tile of level 0, 1 or 2 found as `Corrupt`.

mod common;

use cairn_store::ReadError;
use common::{LOG_SIZE, Log, entries, memory_root, usual_log};

async fn assert_audits(log: &Log) {
    let audited = log.reader().audit().await.expect("audit");
    assert_eq!(&audited.checkpoint, log.latest());
    assert_eq!(audited.entries, log.entries);
}

/// Flips a bit of `rel`, expects the audit to fail with `Corrupt`, then restores it and expects a pass
/// (the audit reads around the cache, so the same reader sees the repair).
async fn assert_tamper_found(log: &Log, rel: &str, at: isize) {
    let reader = log.reader();
    let original = log.tamper(rel, at).await;
    match reader.audit().await {
        Err(ReadError::Corrupt(why)) => assert!(!why.is_empty()),
        other => panic!("{rel} tampered at {at}: {other:?}"),
    }
    log.replace(rel, original).await;
    assert!(reader.audit().await.is_ok(), "{rel} restored");
}

#[tokio::test]
async fn audit_returns_every_entry_and_the_checkpoint() {
    let log = usual_log().await;
    assert_eq!(log.entries.len(), LOG_SIZE);
    assert_audits(&log).await;
}

#[tokio::test]
async fn audit_of_an_empty_log() {
    let log = common::write(&memory_root(), 1, Vec::new(), &[]).await;
    let audited = log.reader().audit().await.expect("audit");
    assert_eq!(audited.checkpoint.size, 0);
    assert!(audited.entries.is_empty());
}

#[tokio::test]
async fn audit_finds_a_changed_bundle() {
    let log = usual_log().await;
    // The last byte of a bundle belongs to its last entry's contents.
    assert_tamper_found(&log, "tile/entries/003", -1).await;
    // A length prefix.
    assert_tamper_found(&log, "tile/entries/000", 0).await;
    // The partial bundle at the checkpoint's size.
    assert_tamper_found(&log, "tile/entries/024.p/115", 10).await;
}

#[tokio::test]
async fn audit_finds_a_changed_level_0_tile() {
    let log = usual_log().await;
    assert_tamper_found(&log, "tile/0/003", 100).await;
    assert_tamper_found(&log, "tile/0/024.p/115", -1).await;
    assert_tamper_found(&log, "tile/1/000.p/24", 40).await;
}

#[tokio::test]
async fn audit_finds_a_missing_object() {
    let log = usual_log().await;
    for rel in ["tile/entries/010", "tile/0/010", "tile/1/000.p/24"] {
        let original = log.object(rel).await;
        log.delete(rel).await;
        assert!(
            matches!(log.reader().audit().await, Err(ReadError::Corrupt(_))),
            "{rel} deleted"
        );
        log.replace(rel, original).await;
    }
    assert_audits(&log).await;
}

/// 70,000 entries: 273 level-0 tiles, so one full level-1 tile (and a partial one of 17), and a
/// level-2 tile of one hash.
#[tokio::test]
async fn audit_finds_a_changed_level_1_and_level_2_tile() {
    let log = common::write(&memory_root(), 1, entries("e", 70_000), &[30_000, 40_000]).await;
    assert_eq!(
        log.checkpoints.iter().map(|c| c.size).collect::<Vec<_>>(),
        [30_000, 70_000]
    );
    assert_eq!(log.latest().root, common::naive_root(&log.leaves()));
    assert_audits(&log).await;
    assert_tamper_found(&log, "tile/1/000", 1000).await;
    assert_tamper_found(&log, "tile/1/001.p/17", 0).await;
    assert_tamper_found(&log, "tile/2/000.p/1", 31).await;
    assert_tamper_found(&log, "tile/0/272", -1).await;
    assert_tamper_found(&log, "tile/entries/272", -1).await;
}
