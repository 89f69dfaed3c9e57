//! A client in another language: `clients/python/cairn_check.py` (grpcio, stubs generated from
//! `proto/`) logs entries against the real binary and verifies every proof itself; then the log, read
//! over HTTP and verified in Rust, holds each entry at the index Python was given.
//!
//! The Python environment comes from `CAIRN_PYTHON` or `~/.cache/cairn-py/bin/python` (`scripts/test`
//! creates it from `clients/python/requirements.txt` and sets `CAIRN_REQUIRE_PYTHON=1`, so in CI this
//! test cannot pass by skipping).

mod common;

use std::path::PathBuf;
use std::process::Command;

use cairn_client::HttpLog;
use common::Server;

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CAIRN_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(std::env::var_os("HOME")?).join(".cache/cairn-py/bin/python");
    p.exists().then_some(p)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_logs_entries_with_valid_proofs() -> anyhow::Result<()> {
    let Some(python) = python() else {
        anyhow::ensure!(
            std::env::var_os("CAIRN_REQUIRE_PYTHON").is_none(),
            "no Python environment with grpcio (run scripts/test, or set CAIRN_PYTHON)"
        );
        eprintln!("skipped: no Python environment with grpcio; scripts/test creates one");
        return Ok(());
    };
    let dir = tempfile::tempdir()?;
    let server = Server::start_loopback(dir.path())?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../clients/python/cairn_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([
            "--server",
            server.grpc.trim_start_matches("http://"),
            "--entries",
            "200",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout)?;
    let summary: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())?;
    anyhow::ensure!(summary["verified"] == 200, "{summary}");
    anyhow::ensure!(summary["health"] == "SERVING", "{summary}");
    anyhow::ensure!(summary["empty_entry"] == "INVALID_ARGUMENT", "{summary}");
    let services = summary["services"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(
        services.iter().any(|s| s == "cairn.v1.Log"),
        "reflection: {services:?}"
    );

    let site = HttpLog::new(&server.http);
    let shard = site
        .shards()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("no shard"))?;
    let log = common::verified_shard_covering(&site, &shard, 200).await?;
    let results = summary["results"].as_array().cloned().unwrap_or_default();
    anyhow::ensure!(results.len() == 200);
    for r in results {
        let index = r["index"].as_u64().ok_or_else(|| anyhow::anyhow!("index"))? as usize;
        let entry = r["entry"].as_str().ok_or_else(|| anyhow::anyhow!("entry"))?;
        anyhow::ensure!(
            log.entries.get(index).map(Vec::as_slice) == Some(entry.as_bytes()),
            "entry {index}"
        );
    }
    anyhow::ensure!(server.stop()?.success());
    Ok(())
}
