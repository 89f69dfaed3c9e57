//! Sequencer throughput without a gRPC front: concurrent writers append batches of 256-byte entries
//! through `Node::append` on a 1-node and a 3-node loopback cluster (RocksDB, fsync on, tiles published
//! to an in-memory store).
//!
//! `cargo bench -p cairn-sequencer --bench sequencer` (options: `-- --secs 10 --writers 32 --batch 100`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cairn_sequencer::Bucket;
use cairn_sequencer::testing::Cluster;
use object_store::memory::InMemory;
use object_store::path::Path;

struct Opts {
    secs: u64,
    writers: usize,
    batch: usize,
    entry: usize,
}

fn opts() -> Opts {
    let mut o = Opts {
        secs: 10,
        writers: 32,
        batch: 100,
        entry: 256,
    };
    let args: Vec<String> = std::env::args().collect();
    for pair in args.windows(2) {
        let v = pair[1].parse().ok();
        match (pair[0].as_str(), v) {
            ("--secs", Some(v)) => o.secs = v,
            ("--writers", Some(v)) => o.writers = v as usize,
            ("--batch", Some(v)) => o.batch = v as usize,
            ("--entry-size", Some(v)) => o.entry = v as usize,
            _ => {}
        }
    }
    o
}

async fn run(nodes: u64, o: &Opts) -> anyhow::Result<()> {
    let bucket = Bucket::new(Arc::new(InMemory::new()), Path::default());
    let cluster = Cluster::start_with(nodes, 1, bucket, |c| {
        c.publish_interval = Duration::from_millis(200);
        c.snapshot_every = 50_000;
        c.timing = cairn_sequencer::RaftTiming {
            heartbeat_ms: 100,
            election_min_ms: 1000,
            election_max_ms: 2000,
        };
    })
    .await?;
    let leader = cluster.wait_for_leader(1, Duration::from_secs(20)).await?;
    let cluster = Arc::new(cluster);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        let (cluster, stop, done) = (cluster.clone(), stop.clone(), done.clone());
        let (batch, size) = (o.batch, o.entry);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut seq = 0u64;
            let node = cluster.node(leader)?;
            while !stop.load(Ordering::Relaxed) {
                let entries: Vec<Vec<u8>> = (0..batch)
                    .map(|_| {
                        let mut e = vec![0u8; size];
                        e[..8].copy_from_slice(&(w as u64).to_be_bytes());
                        e[8..16].copy_from_slice(&seq.to_be_bytes());
                        seq += 1;
                        e
                    })
                    .collect();
                let t = Instant::now();
                match node.append(1, entries).await {
                    Ok(r) => {
                        lat.push(t.elapsed());
                        done.fetch_add(r.len() as u64, Ordering::Relaxed);
                    }
                    Err(cairn_sequencer::SequencerError::Pushback { retry_after }) => {
                        tokio::time::sleep(retry_after).await
                    }
                    Err(e) => return Err(anyhow::anyhow!(e)),
                }
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.secs)).await;
    stop.store(true, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let total = done.load(Ordering::SeqCst);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "{nodes} node(s): {:.0} entries/s ({total} entries of {} bytes in {:.1?}, {} writers x {} per call); append latency p50 {:?} p99 {:?}",
        total as f64 / elapsed.as_secs_f64(),
        o.entry,
        elapsed,
        o.writers,
        o.batch,
        pct(0.5),
        pct(0.99)
    );
    let published = cluster.wait_stored(1, total, Duration::from_secs(60)).await?;
    println!("{nodes} node(s): all {published} entries published");
    Arc::try_unwrap(cluster)
        .map_err(|_| anyhow::anyhow!("cluster shared"))?
        .shutdown()
        .await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = opts();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        run(1, &o).await?;
        run(3, &o).await
    })
}
