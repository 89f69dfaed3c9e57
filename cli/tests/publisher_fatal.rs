//! A fatal publishing error through the real binary: the object store holds a tile of shard 1 with
//! bytes the log did not write (an immutable object that conflicts with the log). Shard 1's publisher
//! must stop instead of retrying forever or signing over it, `/readyz` must say so, the metric must
//! show it, shard 2 must keep publishing, and no checkpoint of shard 1 may ever cover the tile.

mod common;

use std::time::{Duration, Instant};

use cairn_client::{HttpLog, LogClient, Wait};
use cairn_tlog::{Checkpoint, VerifierKey};
use common::{LOOPBACK, Server, keygen_shards};

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflicting_tile_stops_only_that_shards_publisher() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (shards, vkeys) = keygen_shards(d, "fatal.test", 2, false)?;
    let vkeys: Vec<VerifierKey> = vkeys
        .iter()
        .map(|v| VerifierKey::parse(v))
        .collect::<Result<_, _>>()?;
    // The first full level-0 tile of shard 1, with bytes no log of these entries has.
    let bucket = d.join("bucket");
    let planted = bucket.join("logs/1/tile/0/000");
    std::fs::create_dir_all(planted.parent().ok_or_else(|| anyhow::anyhow!("path"))?)?;
    std::fs::write(&planted, vec![0xAA; 8192])?;
    let config = d.join("cairn.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nstore = \"file://{}\"\n\n[tuning]\npublish_interval_ms = 50\n\n{shards}",
            d.join("data").display(),
            bucket.display()
        ),
    )?;
    let mut args = vec!["--config", config.to_str().unwrap_or_default()];
    args.extend(LOOPBACK);
    let server = Server::start(d, &args)?;

    // 1,000 entries: about half go to each shard, well past the planted tile's 256 entries.
    let entries: Vec<Vec<u8>> = (0..1_000).map(|i| format!("entry {i}").into_bytes()).collect();
    let mut client = LogClient::new(&server.grpc)?;
    let mut per_shard = [0u64; 2];
    for chunk in entries.chunks(100) {
        for s in client.submit(chunk.to_vec(), Wait::Sequenced).await? {
            let i = usize::try_from(s.shard - 1)?;
            per_shard[i] = per_shard[i].max(s.index + 1);
        }
    }
    anyhow::ensure!(per_shard[0] > 256 && per_shard[1] > 256, "{per_shard:?}");

    // /readyz turns red and names the shard and the cause.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + T;
    let body = loop {
        let r = http.get(format!("{}/readyz", server.http)).send().await?;
        let status = r.status();
        let body = r.text().await?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE {
            break body;
        }
        anyhow::ensure!(Instant::now() < deadline, "readyz stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    anyhow::ensure!(
        body.contains("shard 1") && body.contains("tile/0/000") && !body.contains("shard 2"),
        "readyz: {body}"
    );
    let metrics = http
        .get(format!("{}/metrics", server.http))
        .send()
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        metrics.contains("cairn_shard_publishing_stopped{shard=\"1\"} 1")
            && metrics.contains("cairn_shard_publishing_stopped{shard=\"2\"} 0"),
        "metrics: {metrics}"
    );

    // Shard 2 publishes everything it sequenced, and verifies end to end.
    let site = HttpLog::new(&server.http);
    let listing = site.shards().await?;
    let deadline = Instant::now() + T;
    loop {
        let size = site.checkpoint(&listing[1]).await?.size;
        if size == per_shard[1] {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shard 2 stuck at {size} of {}",
            per_shard[1]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    site.verify_shard(&listing[1]).await?;

    // Shard 1's stored checkpoint (if any) is below the planted tile, and the tile is untouched.
    let stored = std::fs::read(bucket.join("logs/1/checkpoint")).ok();
    if let Some(note) = stored {
        let (cp, _): (Checkpoint, _) = Checkpoint::open(&note, &vkeys[0], &[])?;
        anyhow::ensure!(
            cp.size < 256,
            "shard 1 published a checkpoint of size {}",
            cp.size
        );
    }
    anyhow::ensure!(
        std::fs::read(&planted)? == vec![0xAA; 8192],
        "the planted tile changed"
    );
    anyhow::ensure!(server.stop()?.success(), "unclean exit");
    Ok(())
}
