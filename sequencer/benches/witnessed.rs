//! Witnessing costs, on loopback:
//!
//! 1. Witness throughput: one Cairn witness (HTTP, RocksDB with fsync per cosigned checkpoint) and
//!    `--logs` logs each sending growing checkpoints (+`--step` entries, with consistency proofs) as
//!    fast as it answers: cosigned add-checkpoint/s and latency.
//! 2. Publication delay: a 3-node cluster publishing every `--interval-ms`, probed by a writer that
//!    appends one entry and waits for the checkpoint covering it, first without witnesses, then with a
//!    2-of-3 quorum of Cairn witnesses: p50/p99 of append-to-published.
//!
//! `cargo bench --workspace --profile dev --bench witnessed` (options: `-- --secs 10 --logs 8 --step 100
//! --interval-ms 50`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_sequencer::Bucket;
use cairn_sequencer::testing::Cluster;
use cairn_tlog::{Cosigner, Signer, VerifierKey};
use cairn_witness::collect::{Answer, add_checkpoint};
use cairn_witness::testing::{Served, TestLog, spawn};
use cairn_witness::{CollectConfig, CollectMetrics, Collector, Policy, RocksState, Witness, WitnessConfig};
use object_store::memory::InMemory;
use object_store::path::Path;

struct Opts {
    secs: u64,
    logs: usize,
    step: u64,
    interval_ms: u64,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 10,
        logs: 8,
        step: 100,
        interval_ms: 50,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let v: Option<u64> = pair[1].parse().ok();
        match (pair[0].as_str(), v) {
            ("--secs", Some(v)) => o.secs = v,
            ("--logs", Some(v)) => o.logs = v as usize,
            ("--step", Some(v)) => o.step = v,
            ("--interval-ms", Some(v)) => o.interval_ms = v,
            _ => {}
        }
    }
    o
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn witness_at(dir: &std::path::Path, i: usize, logs: Vec<VerifierKey>) -> anyhow::Result<Arc<Witness>> {
    let cosigner = Cosigner::from_seed(&format!("bench.witness/w{i}"), [60 + i as u8; 32])?;
    let mut config = WitnessConfig::new(cosigner, logs);
    config.rate_per_log = None;
    Ok(Arc::new(Witness::new(config, Box::new(RocksState::open(dir)?))))
}

async fn throughput(o: &Opts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let signers: Vec<Signer> = (0..o.logs)
        .map(|i| Signer::from_seed(&format!("bench.log/{i}"), [i as u8 + 1; 32]))
        .collect::<Result<_, _>>()?;
    let witness = witness_at(dir.path(), 0, signers.iter().map(Signer::verifier).collect())?;
    let served = spawn(witness, "127.0.0.1:0".parse()?).await?;
    let deadline = Instant::now() + Duration::from_secs(o.secs);
    let mut tasks = Vec::new();
    for signer in signers {
        let url = served.url.clone();
        let step = o.step;
        tasks.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut log = TestLog::new(signer, "bench");
            let mut old = 0;
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                log.grow_to(log.size() + step);
                let t = Instant::now();
                match add_checkpoint(&http, &url, &log.request(old))
                    .await
                    .map_err(anyhow::Error::msg)?
                {
                    Answer::Cosigned(_) => {
                        lat.push(t.elapsed());
                        old = log.size();
                    }
                    other => anyhow::bail!("witness refused an honest checkpoint: {other:?}"),
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let start = Instant::now();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed();
    lat.sort();
    println!(
        "witness: {:.0} cosigned add-checkpoint/s ({} in {elapsed:.1?}, {} logs, +{} entries each, RocksDB fsync); latency p50 {:?} p99 {:?}",
        lat.len() as f64 / elapsed.as_secs_f64(),
        lat.len(),
        o.logs,
        o.step,
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    served.stop().await;
    Ok(())
}

/// Append-to-published latency of single entries on a 3-node cluster, with `witnesses` (policy,
/// servers) or without.
async fn delay(o: &Opts, policy: Option<Policy>) -> anyhow::Result<Vec<Duration>> {
    let interval = Duration::from_millis(o.interval_ms);
    let metrics = CollectMetrics::default();
    let bucket = Bucket::new(Arc::new(InMemory::new()), Path::default());
    let cluster = Cluster::start_with(3, 1, bucket, move |c| {
        c.publish_interval = interval;
        for s in &mut c.shards {
            s.witnesses = policy.clone().map(|policy| {
                let config = CollectConfig {
                    policy,
                    timeout: Duration::from_secs(2),
                    fail_open: false,
                    greedy: false,
                };
                Arc::new(Collector::new(config, &s.shard.origin, &metrics).expect("collector"))
            });
        }
    })
    .await?;
    let leader = cluster.wait_for_leader(1, Duration::from_secs(20)).await?;
    let node = cluster.node(leader)?;
    let deadline = Instant::now() + Duration::from_secs(o.secs);
    let mut lat = Vec::new();
    let mut i = 0u64;
    while Instant::now() < deadline {
        let t = Instant::now();
        let appended = node.append(1, vec![format!("probe {i}").into_bytes()]).await?;
        node.wait_published(1, appended[0].index, Duration::from_secs(30))
            .await?;
        lat.push(t.elapsed());
        i += 1;
    }
    cluster.shutdown().await;
    lat.sort();
    Ok(lat)
}

async fn publication_delay(o: &Opts) -> anyhow::Result<()> {
    let plain = delay(o, None).await?;
    let dir = tempfile::tempdir()?;
    let log = cairn_sequencer::testing::test_signer(1).verifier();
    let mut served: Vec<Served> = Vec::new();
    let mut text = String::new();
    for i in 0..3 {
        let w = witness_at(&dir.path().join(format!("w{i}")), i, vec![log.clone()])?;
        let vkey = w.verifier();
        let s = spawn(w, SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        text += &format!("witness w{i} {vkey} {}\n", s.url);
        served.push(s);
    }
    text += "group q 2 w0 w1 w2\nquorum q\n";
    let witnessed = delay(o, Some(Policy::parse(&text)?)).await?;
    for s in served {
        s.stop().await;
    }
    for (what, lat) in [("no witnesses", &plain), ("2-of-3 witnesses", &witnessed)] {
        println!(
            "3 nodes, publish every {} ms, {what}: append-to-published p50 {:?} p99 {:?} ({} probes)",
            o.interval_ms,
            pct(lat, 0.5),
            pct(lat, 0.99),
            lat.len()
        );
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        throughput(&o).await?;
        publication_delay(&o).await
    })
}
