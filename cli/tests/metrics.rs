//! `/metrics` of the real binary, parsed as Prometheus text exposition: the per-shard sequencer series
//! exist with sensible values and move under load (entries sequenced but unpublished rise while the
//! publisher waits, then fall to zero), the latency histograms count what happened, and the process's
//! own series (resident memory, open and allowed file descriptors) are there.

mod common;

use std::time::{Duration, Instant};

use common::{Server, cairn, free_port};
use prometheus_parse::{Scrape, Value};

async fn scrape(http: &str) -> anyhow::Result<Scrape> {
    let text = reqwest::get(format!("{http}/metrics"))
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?)
}

/// The value of `name{shard="1"}` (a gauge, counter or untyped sample).
fn value(s: &Scrape, name: &str) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && x.labels.get("shard") == Some("1"))
        .and_then(|x| match &x.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

/// The observation count of histogram `name{shard="1"}`.
fn observations(s: &Scrape, name: &str) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == name && x.labels.get("shard") == Some("1"))
        .and_then(|x| match &x.value {
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).reduce(f64::max),
            _ => None,
        })
}

#[tokio::test]
async fn sequencer_series_exist_and_move() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let (grpc, http, raft) = (free_port()?, free_port()?, free_port()?);
    // A slow publisher, so that sequenced-but-unpublished entries are visible between rounds.
    std::fs::write(
        d.join("cairn.toml"),
        format!(
            "grpc_addr = \"127.0.0.1:{grpc}\"\nhttp_addr = \"127.0.0.1:{http}\"\nraft_addr = \"127.0.0.1:{raft}\"\n\
             data_dir = \"{}\"\n\n[tuning]\npublish_interval_ms = 1500\n\n[[shards]]\nid = 1\norigin = \"metrics.test/1\"\n",
            d.join("data").display()
        ),
    )?;
    let server = Server::start(d, &["--config", "cairn.toml"])?;
    let idle = scrape(&server.http).await?;
    for name in [
        "cairn_raft_term",
        "cairn_raft_is_leader",
        "cairn_raft_last_log_index",
        "cairn_raft_applied_index",
        "cairn_shard_sequenced_entries",
        "cairn_shard_published_entries",
        "cairn_shard_unpublished_entries",
        "cairn_shard_queue_depth",
    ] {
        anyhow::ensure!(value(&idle, name).is_some(), "{name}{{shard=\"1\"}} missing");
    }
    anyhow::ensure!(
        value(&idle, "cairn_raft_is_leader") == Some(1.0),
        "single node leads"
    );
    anyhow::ensure!(value(&idle, "cairn_raft_term").unwrap_or(0.0) >= 1.0);
    // The process's own series.
    for name in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
    ] {
        let v = idle
            .samples
            .iter()
            .find(|x| x.metric == name)
            .and_then(|x| match x.value {
                Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            });
        anyhow::ensure!(v.is_some_and(|v| v > 0.0), "{name}: {v:?}");
    }

    // Sequenced: the entries are counted before the next publishing round covers them.
    let lines: String = (0..500).map(|i| format!("metrics entry {i}\n")).collect();
    let (ok, _, err) = cairn(
        d,
        &["submit", "--server", &server.grpc, "--lines"],
        Some(lines.as_bytes()),
    )?;
    anyhow::ensure!(ok, "submit: {err}");
    let loaded = scrape(&server.http).await?;
    let sequenced = value(&loaded, "cairn_shard_sequenced_entries").unwrap_or(0.0);
    anyhow::ensure!(sequenced >= 500.0, "sequenced {sequenced}");
    let unpublished_then = value(&loaded, "cairn_shard_unpublished_entries").unwrap_or(0.0);
    anyhow::ensure!(
        unpublished_then > 0.0,
        "right after a SEQUENCED write and with a 1.5 s publishing interval, something should be unpublished"
    );
    anyhow::ensure!(observations(&loaded, "cairn_raft_proposal_seconds").unwrap_or(0.0) >= 1.0);
    // The write API counted the call, by method and gRPC status.
    let calls = loaded
        .samples
        .iter()
        .find(|x| {
            x.metric == "cairn_api_requests_total"
                && x.labels.get("api") == Some("grpc")
                && x.labels.get("method") == Some("cairn.v1.Log/AddEntries")
                && x.labels.get("code") == Some("0")
        })
        .map(|x| match x.value {
            Value::Counter(v) | Value::Untyped(v) => v,
            _ => 0.0,
        });
    anyhow::ensure!(calls.unwrap_or(0.0) >= 1.0, "AddEntries calls: {calls:?}");

    // Then it falls to zero as the publisher catches up, and the publishing histogram counts rounds.
    // (The round that published is observed once it has returned, a moment after the replicated
    // state says the entries are published: both are waited for.)
    let deadline = Instant::now() + Duration::from_secs(15);
    let settled = loop {
        let s = scrape(&server.http).await?;
        let caught_up = value(&s, "cairn_shard_unpublished_entries") == Some(0.0)
            && value(&s, "cairn_shard_published_entries").unwrap_or(0.0) >= 500.0;
        let rounds = observations(&s, "cairn_publish_round_seconds").unwrap_or(0.0);
        if caught_up && rounds >= 1.0 {
            break s;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "within 15 s: unpublished entries back to 0 ({caught_up}), a publishing round observed ({rounds})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let age = value(&settled, "cairn_shard_seconds_since_publication");
    anyhow::ensure!(
        age.is_some_and(|a| (0.0..15.0).contains(&a)),
        "seconds since publication: {age:?}"
    );
    anyhow::ensure!(value(&settled, "cairn_shard_pushbacks_total").is_none_or(|v| v == 0.0));
    eprintln!("unpublished after the write: {unpublished_then}; settled at 0");
    Ok(())
}
