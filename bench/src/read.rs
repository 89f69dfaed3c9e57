//! Read-path load over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_tlog::tile::encode_index;
use hdrhistogram::Histogram;

use crate::write::{Report, Rng, sampler};

/// What to request.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Kind {
    /// One level-0 tile, over and over (served from memory).
    TileHot,
    /// Every full level-0 tile in turn.
    Tiles,
    /// Every full entry bundle in turn.
    Bundles,
    /// Inclusion proofs for random indexes at the checkpoint's size.
    Proofs,
}

/// Runs read load of `kind` against the site at `http`.
pub async fn run(http: &str, kind: Kind, duration: Duration, concurrency: usize) -> anyhow::Result<Report> {
    let client = reqwest::Client::new();
    let list: serde_json::Value = client
        .get(format!("{http}/shards.json"))
        .send()
        .await?
        .json_like()
        .await?;
    let prefix = list["shards"][0]["prefix"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("shards.json lists no shard"))?
        .to_owned();
    let checkpoint = client
        .get(format!("{http}{prefix}/checkpoint"))
        .send()
        .await?
        .text()
        .await?;
    let size: u64 = checkpoint
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("unreadable checkpoint"))?;
    let full = size / 256;
    anyhow::ensure!(
        full > 0 || matches!(kind, Kind::Proofs),
        "the log has no full tile yet"
    );
    anyhow::ensure!(size > 0, "the log is empty");
    let base = format!("{http}{prefix}");
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let samples = sampler(duration.as_secs(), done.clone(), false);
    let mut workers = Vec::new();
    for w in 0..concurrency.max(1) {
        let client = client.clone();
        let base = base.clone();
        let done = done.clone();
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut rng = Rng::new(w as u64 * 7919 + 1);
            let mut i = w as u64;
            while Instant::now() < deadline {
                let path = match kind {
                    Kind::TileHot => "/tile/0/000".to_owned(),
                    Kind::Tiles => format!("/tile/0/{}", encode_index(i % full)),
                    Kind::Bundles => format!("/tile/entries/{}", encode_index(i % full)),
                    Kind::Proofs => format!("/proof/inclusion/{size}/{}", rng.next() % size),
                };
                i += concurrency as u64;
                let t0 = Instant::now();
                match client.get(format!("{base}{path}")).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await?;
                        hist.saturating_record(t0.elapsed().as_micros() as u64);
                        ok += 1;
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => errors += 1,
                }
            }
            Ok::<_, anyhow::Error>((hist, ok, errors))
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0, 0);
    for w in workers {
        let (h, ok, e) = w.await??;
        latency.add(h)?;
        requests += ok;
        errors += e;
    }
    Ok(Report {
        name: format!("read {http} {kind:?} (tree size {size})"),
        duration_s: start.elapsed().as_secs_f64(),
        requests,
        entries: requests,
        errors,
        pushback: 0,
        latency,
        per_second: samples.await?,
        settings: serde_json::json!({"http": http, "kind": format!("{kind:?}"), "concurrency": concurrency, "tree_size": size}),
    })
}

/// `reqwest` without its `json` feature: parse the body with serde_json.
trait JsonLike {
    async fn json_like(self) -> anyhow::Result<serde_json::Value>;
}

impl JsonLike for reqwest::Response {
    async fn json_like(self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&self.bytes().await?)?)
    }
}
