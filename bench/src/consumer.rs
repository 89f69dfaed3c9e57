//! The consumer side: how fast a monitor catches up, how fast the search index builds, and search
//! latency at a given rate.
//!
//! A Sigstore-shaped log of `--entries` hashedrekord bodies (each a distinct digest and signature, a
//! certificate from a pool of 64 real X.509 ECDSA P-256 certificates, made here with the TSA crate's
//! chain builder: Fulcio's certificates carry more extensions, so they parse somewhat slower) is
//! written as tiles into a temporary directory and served over HTTP on loopback by a plain file
//! server: the local read path the monitor and the indexer read, as they would read a CDN.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_client::monitor::{Logs, Monitor};
use cairn_client::watch::WatchList;
use cairn_store::{Lifecycle, ShardKind, ShardListing, ShardsJson};
use hdrhistogram::Histogram;
use serde_json::json;

use crate::write::Rng;

/// What `consumer` measured.
pub struct Measured {
    pub entries: u64,
    pub monitor_plain_s: f64,
    pub monitor_watch_s: f64,
    pub index_s: f64,
    pub search_rate: u64,
    pub search_p50_ms: f64,
    pub search_p99_ms: f64,
    pub search_errors: u64,
}

fn body(rng: &mut Rng, certs: &[String]) -> Vec<u8> {
    let mut digest = [0u8; 32];
    let mut sig = [0u8; 71];
    for chunk in digest.chunks_mut(8).chain(sig.chunks_mut(8)) {
        let r = rng.next().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
    let cert = &certs[(rng.next() % certs.len() as u64) as usize];
    serde_json::to_vec(&json!({
        "apiVersion": "0.0.2",
        "kind": "hashedrekord",
        "spec": {"hashedRekordV002": {
            "data": {"algorithm": "SHA2_256", "digest": STANDARD.encode(digest)},
            "signature": {"content": STANDARD.encode(sig), "verifier": {
                "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                "x509Certificate": {"rawBytes": cert}}}}}
    }))
    .unwrap_or_default()
}

/// Serves `root` (a bucket directory) and `shards.json` on loopback.
async fn serve(root: PathBuf, shards: Vec<u8>) -> anyhow::Result<String> {
    let app = axum::Router::new()
        .route(
            "/shards.json",
            axum::routing::get(move || async move { shards.clone() }),
        )
        .route(
            "/logs/{shard}/{*rest}",
            axum::routing::get(
                move |axum::extract::Path((shard, rest)): axum::extract::Path<(String, String)>| {
                    let path = root.join("logs").join(&shard).join(&rest);
                    async move {
                        match tokio::fs::read(&path).await {
                            Ok(b) if !rest.contains("..") && !shard.contains("..") => Ok(b),
                            _ => Err(axum::http::StatusCode::NOT_FOUND),
                        }
                    }
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(url)
}

/// Builds the log, then measures.
pub async fn run(entries: u64, rate: u64, duration: Duration) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    eprintln!("consumer: making {entries} hashedrekord bodies and their tiles…");
    let certs: Vec<String> = (0..64)
        .map(|i| -> anyhow::Result<String> {
            let a =
                cairn_tsa::Authority::generate(&format!("bench signer {i}"), Duration::from_secs(86_400))?;
            Ok(STANDARD.encode(&a.chain_der()[0]))
        })
        .collect::<Result<_, _>>()?;
    let mut rng = Rng::new(7);
    let bodies: Vec<Vec<u8>> = (0..entries).map(|_| body(&mut rng, &certs)).collect();
    let signer = cairn_store::testing::test_signer(2);
    let shard = cairn_store::testing::test_shard(2);
    let bucket = cairn_store::open_bucket(&format!("file://{}", dir.path().display()), &[])?;
    cairn_store::testing::write_log(&bucket.child(&shard.prefix()), &signer, &bodies, &[]).await?;
    let listing = ShardListing::new(shard, ShardKind::Sigstore, Lifecycle::Active);
    let shards = ShardsJson {
        shards: vec![listing],
    }
    .to_bytes();
    let url = serve(dir.path().to_path_buf(), shards).await?;
    let digests: Vec<Vec<u8>> = bodies
        .iter()
        .step_by(997)
        .filter_map(|b| cairn_client::watch::Claims::of_body(b).ok().map(|c| c.digest))
        .collect();
    drop(bodies);

    let quiet = |_: &str, _: u64, _: u64| {};
    let time_round = |watch: Option<WatchList>| -> anyhow::Result<_> {
        let state = dir.path().join(format!("monitor-{}.json", watch.is_some()));
        let mut m = Monitor::new(Logs::Cairn(url.clone()), watch, None, &state)?;
        Ok(async move {
            let t = Instant::now();
            let r = m.round(&mut |_| {}, &quiet).await?;
            anyhow::ensure!(r.entries == entries, "read {} of {entries}", r.entries);
            Ok::<_, anyhow::Error>(t.elapsed().as_secs_f64())
        })
    };
    let monitor_plain_s = time_round(None)?.await?;
    eprintln!(
        "consumer: monitor without a watch list: {:.0} entries/s",
        entries as f64 / monitor_plain_s
    );
    let watch = WatchList::parse(
        "monitoredValues:\n  certIdentities:\n    - certSubject: '^nobody@example\\.org$'\n  subjects: ['@example\\.net$']\n  fingerprints: ['00']\n",
    )
    .map_err(anyhow::Error::msg)?;
    let monitor_watch_s = time_round(Some(watch))?.await?;
    eprintln!(
        "consumer: monitor with a watch list: {:.0} entries/s",
        entries as f64 / monitor_watch_s
    );

    let mut indexer =
        cairn_search::Indexer::open(&url, &dir.path().join("search")).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let n = indexer.round().await.map_err(anyhow::Error::msg)?;
    let index_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(n == entries, "indexed {n} of {entries}");
    eprintln!(
        "consumer: index built at {:.0} entries/s",
        entries as f64 / index_s
    );

    // Search latency: digest queries at `rate` per second, each answered with entry and proof.
    let router = cairn_search::router(indexer.searcher());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let search_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = reqwest::Client::new();
    let hist = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let start = Instant::now();
    let total = rate * duration.as_secs();
    let mut tasks = Vec::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let digest = &digests[(i as usize) % digests.len()];
        let u = format!(
            "{search_url}/api/v1/search?digest=sha256:{}",
            cairn_sigstore::certificate::hex(digest)
        );
        let (client, hist, errors) = (client.clone(), hist.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = match client.get(&u).send().await {
                Ok(r) if r.status().is_success() => r
                    .bytes()
                    .await
                    .ok()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                    .is_some_and(|v| v["results"].as_array().is_some_and(|a| a.len() == 1)),
                _ => false,
            };
            if ok {
                let us = t.elapsed().as_micros() as u64;
                let _ = hist
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .record(us.max(1));
            } else {
                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let h = hist
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    Ok(Measured {
        entries,
        monitor_plain_s,
        monitor_watch_s,
        index_s,
        search_rate: rate,
        search_p50_ms: h.value_at_quantile(0.5) as f64 / 1000.0,
        search_p99_ms: h.value_at_quantile(0.99) as f64 / 1000.0,
        search_errors: errors.load(std::sync::atomic::Ordering::Relaxed),
    })
}

impl Measured {
    /// Prints the numbers (JSON last line with `json`).
    pub fn print(&self, json_line: bool) -> anyhow::Result<()> {
        let per = |s: f64| self.entries as f64 / s;
        println!(
            "entries {}: monitor {:.0}/s without a watch list, {:.0}/s with one; index {:.0}/s; search at {}/s: p50 {:.2} ms, p99 {:.2} ms, {} errors",
            self.entries,
            per(self.monitor_plain_s),
            per(self.monitor_watch_s),
            per(self.index_s),
            self.search_rate,
            self.search_p50_ms,
            self.search_p99_ms,
            self.search_errors
        );
        if json_line {
            println!(
                "{}",
                json!({
                    "entries": self.entries,
                    "monitor_entries_per_s": per(self.monitor_plain_s),
                    "monitor_watch_entries_per_s": per(self.monitor_watch_s),
                    "index_entries_per_s": per(self.index_s),
                    "search_rate": self.search_rate,
                    "search_p50_ms": self.search_p50_ms,
                    "search_p99_ms": self.search_p99_ms,
                    "search_errors": self.search_errors,
                })
            );
        }
        Ok(())
    }
}
