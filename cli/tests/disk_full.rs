//! A full disk under a node's database, through the real binary: when RocksDB's writes fail with
//! `ENOSPC`, openraft stops the shard's Raft group for good (a failed log write is fatal to it), and
//! the database refuses writes until it is reopened. `cairn serve` must then stop with exit status 74
//! (so that its supervisor restarts it) instead of running on with groups that never come back; once
//! the disk has room again, the restarted node must hold every entry it acknowledged, at its index,
//! and take writes again. Needs root (it mounts a small tmpfs as the data directory).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cairn_chaos::nemesis::fill;
use cairn_client::{HttpLog, LogClient, Submitted, Wait};
use common::{LOOPBACK, Server, keygen_shards, verified_shard_covering};

/// The data directory's size: room for the database (RocksDB preallocates each write-ahead log file
/// by 1.1 times the 64 MiB memtable) and not much more.
const DISK_MIB: u32 = 192;

/// A tmpfs mounted at a directory, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, mib: u32) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "mounting a {mib} MiB tmpfs at {} (this test needs root): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(Self(dir.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Distinct 4 KiB entries, `n` of them from `from`.
fn entries(from: usize, n: usize) -> Vec<Vec<u8>> {
    (from..from + n)
        .map(|i| {
            let mut e = format!("disk-full entry {i} ").into_bytes();
            e.resize(4096, b'.');
            e
        })
        .collect()
}

/// Files each acknowledged entry of `batch` under its (shard, index).
fn record(acked: &mut BTreeMap<(u32, u64), Vec<u8>>, done: &[Submitted], batch: Vec<Vec<u8>>) {
    for (s, e) in done.iter().zip(batch) {
        acked.insert((s.shard, s.index), e);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_the_node_for_a_restart_and_loses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let data = d.join("data");
    let _disk = SmallDisk::mount(&data, DISK_MIB)?;
    let (shards, _) = keygen_shards(d, "disk.test", 2, false)?;
    let config = d.join("cairn.toml");
    // The object store is on another filesystem: only the database meets the full disk.
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\nstore = \"file://{}\"\n\n[tuning]\npublish_interval_ms = 50\n\n{shards}",
            data.display(),
            d.join("bucket").display()
        ),
    )?;
    let mut args = vec!["--config", config.to_str().unwrap_or_default()];
    args.extend(LOOPBACK);
    let log = d.join("serve.log");
    let mut server = Server::start_logging_to(d, &args, "warn,openraft=error", &log)?;

    // Everything acknowledged, by (shard, index).
    let mut acked: BTreeMap<(u32, u64), Vec<u8>> = BTreeMap::new();
    let mut client = LogClient::new(&server.grpc)?;
    let mut next = 0;
    for _ in 0..4 {
        let batch = entries(next, 50);
        next += batch.len();
        let done = client.submit(batch.clone(), Wait::Sequenced).await?;
        record(&mut acked, &done, batch);
    }
    let before_fill = acked.len();

    // Fill the disk, and keep writing: once the write-ahead log's preallocated room is used up (or a
    // memtable flush needs a new file), RocksDB fails with ENOSPC and the node must stop.
    let filler = data.join("filler");
    fill(&filler)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = server.exited()? {
            break status;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the node ran on for 120 s on a full disk ({} entries acknowledged); log: {}",
            acked.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let batch = entries(next, 100);
        next += batch.len();
        // A write the failing node does not acknowledge is simply not counted; the client's retries
        // are cut short so the loop notices the exit.
        let call = client.submit(batch.clone(), Wait::Sequenced);
        if let Ok(Ok(done)) = tokio::time::timeout(Duration::from_secs(5), call).await {
            record(&mut acked, &done, batch);
        }
    };
    let text = std::fs::read_to_string(&log)?;
    anyhow::ensure!(
        status.code() == Some(74),
        "the node exited with {status}, not 74; log: {text}"
    );
    anyhow::ensure!(
        text.contains("No space left on device") && text.contains("stopped on a storage error"),
        "the log does not name the cause: {text}"
    );
    anyhow::ensure!(
        acked.len() > before_fill,
        "no write was acknowledged after the disk filled"
    );
    println!(
        "stopped with {status} after {} acknowledged entries ({} after the disk filled)",
        acked.len(),
        acked.len() - before_fill
    );
    drop(server);

    // Room again: the restarted node holds everything it acknowledged and takes writes.
    std::fs::remove_file(&filler)?;
    let log = d.join("serve-restarted.log");
    let server = Server::start_logging_to(d, &args, "warn,openraft=error", &log)?;
    let mut client = LogClient::new(&server.grpc)?;
    let batch = entries(next, 50);
    let done = client.submit(batch.clone(), Wait::Sequenced).await?;
    record(&mut acked, &done, batch);
    let site = HttpLog::new(&server.http);
    for listing in site.shards().await? {
        let mine: Vec<(u64, &Vec<u8>)> = acked
            .iter()
            .filter(|((s, _), _)| *s == listing.id)
            .map(|((_, i), e)| (*i, e))
            .collect();
        let size = mine.iter().map(|(i, _)| *i as usize + 1).max().unwrap_or(0);
        let verified = verified_shard_covering(&site, &listing, size).await?;
        for (i, e) in mine {
            anyhow::ensure!(
                verified.entries.get(i as usize) == Some(e),
                "shard {} index {i}: the acknowledged entry is not there",
                listing.id
            );
        }
    }
    anyhow::ensure!(server.stop()?.success(), "unclean exit after the restart");
    Ok(())
}
