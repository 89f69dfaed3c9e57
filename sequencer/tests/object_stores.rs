//! The object-store conformance suite, run against every backend the publisher writes to: in-memory,
//! local files, and S3 (a real S3-protocol server, `s3s-fs`, started on loopback by the test).
//! A cluster then publishes a log to S3 and the files there verify with `cairn-tlog` alone.
//!
//! The S3 part needs the `s3s-fs` binary (`scripts/test` installs it). Without it the S3 tests fail,
//! unless `CAIRN_SKIP_S3=1` is set explicitly.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_sequencer::testing::{Cluster, verify_published};
use cairn_store::{Bucket, PutError, open_store};
use object_store::memory::InMemory;
use object_store::path::Path;

/// What every backend must do for the publisher.
async fn conformance(bucket: &Bucket, enforces_create: bool) -> anyhow::Result<()> {
    assert_eq!(
        bucket.get("tile/0/000").await?,
        None,
        "missing objects read as None"
    );
    let tile = Bytes::from(vec![1u8; 8192]);
    bucket.put_immutable("tile/0/000", tile.clone()).await?;
    assert_eq!(bucket.get("tile/0/000").await?, Some(tile.clone()));
    // Writing the same immutable bytes again (a new leader re-publishing) succeeds.
    bucket.put_immutable("tile/0/000", tile.clone()).await?;
    // Different bytes for an immutable object are refused where the store enforces conditional create.
    let other = Bytes::from(vec![2u8; 8192]);
    match bucket.put_immutable("tile/0/000", other).await {
        Err(PutError::Conflict(_)) => assert!(enforces_create),
        Ok(()) => assert!(!enforces_create, "this store should have refused to overwrite"),
        Err(e) => return Err(e.into()),
    }
    if enforces_create {
        assert_eq!(
            bucket.get("tile/0/000").await?,
            Some(tile),
            "a refused write changes nothing"
        );
    }
    // The checkpoint is overwritten in place.
    bucket.put("checkpoint", Bytes::from_static(b"one")).await?;
    bucket.put("checkpoint", Bytes::from_static(b"two")).await?;
    assert_eq!(bucket.get("checkpoint").await?, Some(Bytes::from_static(b"two")));
    // Deep paths (x-prefixed index groups) work.
    bucket
        .put_immutable("tile/entries/x001/x234/067.p/9", Bytes::from_static(b"\x00\x01z"))
        .await?;
    assert_eq!(
        bucket.get("tile/entries/x001/x234/067.p/9").await?,
        Some(Bytes::from_static(b"\x00\x01z"))
    );
    Ok(())
}

#[tokio::test]
async fn in_memory_store() -> anyhow::Result<()> {
    conformance(&Bucket::new(Arc::new(InMemory::new()), Path::default()), true).await
}

#[tokio::test]
async fn local_file_store() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, prefix) = open_store(&format!("file://{}", dir.path().display()), &[])?;
    conformance(&Bucket::new(store, prefix).child("logs/a"), true).await?;
    assert!(
        dir.path().join("logs/a/tile/0/000").is_file(),
        "files land under the directory"
    );
    Ok(())
}

/// An `s3s-fs` server on a free loopback port, killed on drop.
struct S3Server {
    child: Child,
    url: String,
    _root: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_s3() -> anyhow::Result<Option<S3Server>> {
    let bin = std::env::var("CAIRN_S3S_FS").unwrap_or_else(|_| "s3s-fs".into());
    let root = tempfile::tempdir()?;
    std::fs::create_dir(root.path().join("cairn"))?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(&bin)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            "cairn",
            "--secret-key",
            "cairn-secret",
        ])
        .arg(root.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let child = match child {
        Ok(c) => c,
        Err(e) if std::env::var_os("CAIRN_SKIP_S3").is_some() => {
            eprintln!("skipping S3 tests: cannot run {bin}: {e}");
            return Ok(None);
        }
        Err(e) => {
            anyhow::bail!("cannot run {bin} ({e}); install it with scripts/test or set CAIRN_SKIP_S3=1")
        }
    };
    let server = S3Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _root: root,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "s3s-fs did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Some(server))
}

fn s3_bucket(server: &S3Server, prefix: &str) -> anyhow::Result<Bucket> {
    let options: Vec<(String, String)> = [
        ("aws_endpoint", server.url.as_str()),
        ("aws_allow_http", "true"),
        ("aws_access_key_id", "cairn"),
        ("aws_secret_access_key", "cairn-secret"),
        ("aws_region", "us-east-1"),
        ("aws_virtual_hosted_style_request", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let (store, root) = open_store(&format!("s3://cairn/{prefix}"), &options)?;
    Ok(Bucket::new(store, root))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_store_conformance_and_a_published_log() -> anyhow::Result<()> {
    let Some(server) = start_s3()? else { return Ok(()) };
    conformance(&s3_bucket(&server, "conformance")?, true).await?;

    let cluster = Cluster::start_with(3, 1, s3_bucket(&server, "prod")?, |_| {}).await?;
    cluster.wait_for_leader(1, Duration::from_secs(20)).await?;
    let mut acked = Vec::new();
    for round in 0..10 {
        let batch: Vec<Vec<u8>> = (0..70).map(|i| format!("s3 {round}-{i}").into_bytes()).collect();
        let (_, r) = cluster.append(1, batch.clone(), Duration::from_secs(20)).await?;
        acked.extend(batch.into_iter().zip(r.into_iter().map(|a| a.index)));
    }
    cluster.wait_stored(1, 700, Duration::from_secs(30)).await?;
    let log = verify_published(&cluster.shard_bucket(1)?, &cluster.vkey(1)?).await?;
    for (entry, index) in &acked {
        assert_eq!(&log.entries[*index as usize], entry);
    }
    assert_eq!(log.checkpoint.size, 700);
    cluster.shutdown().await;
    Ok(())
}
