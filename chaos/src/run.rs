//! One run: start the cluster, load it, inject faults for the profile's duration, lose the quorum
//! once, stop the load, and check the published log against the history.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_client::{HttpLog, LogClient, RetryPolicy, Wait};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::checker::{Availability, FinalLog, Report, availability, check};
use crate::cluster::{Cluster, TOKEN};
use crate::history::FaultRecord;
use crate::lab::Lab;
use crate::load::{Recorder, observer, opaque_writer, sigstore_writer};
use crate::nemesis::{Kind, heal, inject, next_kind, plan};
use crate::s3::Store;

/// What to run.
#[derive(Clone, Debug)]
pub struct Profile {
    /// Seed of every random choice (faults, targets, durations, resubmissions).
    pub seed: u64,
    /// How long faults are injected.
    pub duration: Duration,
    /// Sequencer nodes (3 or 5).
    pub nodes: usize,
    /// Opaque shards (one Sigstore shard is added).
    pub opaque_shards: u32,
    /// Opaque writers.
    pub writers: usize,
    /// The fault kinds to draw from.
    pub kinds: Vec<Kind>,
    /// Whether to end with a loss of quorum.
    pub quorum_loss: bool,
    /// The `cairn` binary.
    pub bin: PathBuf,
    /// Where node logs, `history.json` and `report.json` go.
    pub out: PathBuf,
}

/// What the quorum loss showed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct QuorumLoss {
    /// The nodes stopped.
    pub stopped: Vec<usize>,
    /// The answer a write to the surviving node got (gRPC status and message).
    pub refusal: String,
    /// How long after the quorum came back the first write succeeded (ms).
    pub recovered_ms: u64,
    /// The longest interval without a successful write from the loss to the end of the load (ms).
    pub write_gap_ms: u64,
}

/// The result of a run.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// The checker's findings.
    pub report: Report,
    /// Write availability.
    pub availability: Availability,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// Faults injected in all (a combined fault counts each part).
    pub fault_count: usize,
    /// Nodes that exited on their own, with the fault in force and their exit status (a stop on a
    /// storage error is not a crash: see `storage_stops`).
    pub crashes: Vec<String>,
    /// Nodes that stopped on a storage error as documented (exit status 74, so that a supervisor
    /// restarts them), with the fault in force; the harness restarted them once the fault was healed.
    pub storage_stops: Vec<String>,
    /// Disk-full faults the node noticed (it logged a write failing for want of space).
    pub disk_full_felt: Vec<String>,
    /// The quorum loss, when run.
    pub quorum: Option<QuorumLoss>,
    /// Successful write calls.
    pub calls: u64,
    /// Run length (s).
    pub seconds: f64,
    /// Everything that makes the run fail: the checker's violations, and a cluster that did not
    /// recover.
    pub violations: Vec<String>,
}

/// What the OS says when a write finds the disk full (ENOSPC), as a node logs it.
const NO_SPACE: &str = "No space left on device";

/// How long the cluster may take to agree on leaders again after a fault is healed.
const RECOVERY: Duration = Duration::from_secs(30);

/// Runs `profile`. Errors are failures of the harness itself; violations of the log's guarantees are
/// in [`Outcome::violations`].
pub async fn run(profile: &Profile) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&profile.out)?;
    let mut rng = StdRng::seed_from_u64(profile.seed);
    let lab = Lab::create(profile.nodes)?;
    let store = Store::start(&profile.out.join("s3"), &lab.host_ip()).await?;
    let mut cluster = Cluster::start(
        &profile.bin,
        &profile.out,
        &store,
        profile.nodes,
        profile.opaque_shards,
        lab,
    )?;
    cluster.settled(Duration::from_secs(60)).await?;

    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let grpc: Vec<String> = (0..profile.nodes).map(|i| cluster.grpc(i)).collect();
    let http: Vec<String> = (0..profile.nodes).map(|i| cluster.http(i)).collect();
    let ids: Vec<u32> = cluster.shards.iter().map(|s| s.id).collect();
    let sigstore = cluster
        .shards
        .iter()
        .find(|s| s.sigstore)
        .map(|s| s.id)
        .unwrap_or(0);
    let mut writers = Vec::new();
    for w in 0..profile.writers {
        writers.push(opaque_writer(
            w,
            grpc.clone(),
            profile.seed,
            rec.clone(),
            stop.clone(),
        ));
    }
    writers.push(sigstore_writer(
        http.clone(),
        sigstore,
        profile.seed,
        rec.clone(),
        stop.clone(),
    ));
    let observers: Vec<_> = (0..profile.nodes)
        .map(|i| {
            observer(
                format!("node-{}", i + 1),
                http[i].clone(),
                ids.clone(),
                rec.clone(),
                stop.clone(),
            )
        })
        .collect();

    let mut violations = Vec::new();
    let mut crashes = Vec::new();
    let mut storage_stops = Vec::new();
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut fault_count = 0;
    let mut queue = Vec::new();
    let mut disk_full_felt = Vec::new();
    let load_start = rec.now();
    let end = Instant::now() + profile.duration;
    tokio::time::sleep(Duration::from_secs(1)).await;
    while Instant::now() < end && violations.is_empty() {
        // A node that stopped on its own between faults: note it and start it again, as its supervisor
        // would.
        for (i, status) in cluster.reap() {
            let at = format!("between faults, at {} ms", rec.now());
            exited(i, status, &at, &mut crashes, &mut storage_stops);
        }
        if let Err(e) = restart_down(&mut cluster) {
            violations.push(format!("at {} ms: {e:#}", rec.now()));
            break;
        }
        let leaders = match cluster.settled(RECOVERY).await {
            Ok(l) => l,
            Err(e) => {
                violations.push(format!("at {} ms: {e}", rec.now()));
                break;
            }
        };
        let kind = next_kind(&mut rng, &mut queue, &profile.kinds);
        let mut planned = vec![plan(&mut rng, kind, profile.nodes, &leaders)];
        // One time in four, a store fault joins a node fault.
        let store_kinds: Vec<Kind> = profile.kinds.iter().copied().filter(|k| !k.on_node()).collect();
        if kind.on_node() && !store_kinds.is_empty() && rng.random_bool(0.25) {
            let extra = store_kinds[rng.random_range(0..store_kinds.len())];
            planned.push(plan(&mut rng, extra, profile.nodes, &leaders));
        }
        let from = rec.now();
        let enospc = |c: &Cluster, f: &crate::nemesis::Fault| c.log_mentions(f.node, NO_SPACE);
        let before: Vec<usize> = planned.iter().map(|f| enospc(&cluster, f)).collect();
        for f in &planned {
            inject(f, &mut cluster, &store)?;
        }
        let hold = planned.iter().map(|f| f.hold).max().unwrap_or_default();
        tokio::time::sleep(hold).await;
        for f in &planned {
            heal(f, &mut cluster, &store)?;
        }
        for (f, b) in planned.iter().zip(&before) {
            let felt = enospc(&cluster, f).saturating_sub(*b);
            if f.kind == Kind::DiskFull && felt > 0 {
                disk_full_felt.push(format!(
                    "node-{} logged {felt} \"{NO_SPACE}\" errors during disk-full at {from} ms",
                    f.node + 1
                ));
            }
        }
        for (i, status) in cluster.reap() {
            let during = planned.iter().map(|f| f.kind.name()).collect::<Vec<_>>();
            let at = format!("during {} at {from} ms", during.join("+"));
            exited(i, status, &at, &mut crashes, &mut storage_stops);
        }
        if let Err(e) = restart_down(&mut cluster) {
            violations.push(format!(
                "at {} ms, after {}: {e:#}",
                rec.now(),
                planned[0].kind.name()
            ));
        }
        let to = rec.now();
        let mut h = rec.history.lock().await;
        for f in &planned {
            fault_count += 1;
            *faults.entry(f.kind.name().to_owned()).or_default() += 1;
            h.faults.push(FaultRecord {
                kind: f.kind.name().into(),
                target: f.target(),
                shards: if f.kind.on_node() {
                    (cluster.shards.iter().zip(&leaders))
                        .filter(|(_, l)| **l == f.node)
                        .map(|(s, _)| s.id)
                        .collect()
                } else {
                    Vec::new()
                },
                from_ms: from,
                to_ms: to,
            });
        }
        drop(h);
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..2000))).await;
    }

    let faults_end = rec.now();
    // A node that stopped after the last fault's check (a storage stop takes a moment) is started
    // again before the quorum loss and the final reading, which count on every node.
    for (i, status) in cluster.reap() {
        let at = format!("after the last fault, at {faults_end} ms");
        exited(i, status, &at, &mut crashes, &mut storage_stops);
    }
    if violations.is_empty()
        && let Err(e) = restart_down(&mut cluster)
    {
        violations.push(format!("at {faults_end} ms: {e:#}"));
    }
    let quorum = if profile.quorum_loss && violations.is_empty() {
        match lose_quorum(&mut cluster, &rec, &grpc).await {
            Ok(q) => Some(q),
            Err(e) => {
                violations.push(format!("quorum loss: {e}"));
                None
            }
        }
    } else {
        None
    };
    let load_end = rec.now();

    stop.store(true, Ordering::SeqCst);
    let mut calls = 0;
    for w in writers {
        calls += w.await??;
    }
    for o in observers {
        o.await??;
    }

    // Everything acknowledged must be published; wait for the checkpoints to cover it, then read the
    // logs as a verifier does. The history is kept first, whatever the reading finds.
    let history = rec.history.lock().await.clone();
    std::fs::write(profile.out.join("history.json"), serde_json::to_vec(&history)?)?;
    let report = match final_logs(&cluster, &rec).await {
        Ok(logs) => check(&history, &logs),
        Err(e) => {
            violations.push(format!("reading the published logs: {e:#}"));
            Report::default()
        }
    };
    violations.extend(report.violations());
    let availability = availability(&history, load_start, faults_end);
    let mut quorum = quorum;
    if let Some(q) = quorum.as_mut() {
        q.write_gap_ms = crate::checker::availability(&history, faults_end, load_end).longest_gap_ms;
    }
    let outcome = Outcome {
        seed: profile.seed,
        report,
        availability,
        faults,
        fault_count,
        crashes,
        storage_stops,
        disk_full_felt,
        quorum,
        calls,
        seconds: rec.start.elapsed().as_secs_f64(),
        violations,
    };
    std::fs::write(
        profile.out.join("report.json"),
        serde_json::to_vec_pretty(&outcome)?,
    )?;
    for i in 0..profile.nodes {
        cluster.kill(i);
    }
    Ok(outcome)
}

/// Files node `i`'s exit (`status`, `at` says when) as a stop on a storage error (the documented exit
/// status, for a supervisor to restart it) or as a crash.
fn exited(
    i: usize,
    status: std::process::ExitStatus,
    at: &str,
    crashes: &mut Vec<String>,
    storage_stops: &mut Vec<String>,
) {
    if status.code() == Some(STORAGE_FAILED) {
        storage_stops.push(format!(
            "node-{} stopped on a storage error ({status}) {at}; restarted",
            i + 1
        ));
    } else {
        crashes.push(format!("node-{} exited ({status}) {at}", i + 1));
    }
}

/// The exit status of `cairn serve` when a Raft group stops on a storage error.
const STORAGE_FAILED: i32 = 74;

/// Starts every node that is down (not paused).
fn restart_down(cluster: &mut Cluster) -> anyhow::Result<()> {
    for i in 0..cluster.nodes.len() {
        if !cluster.running(i) && !cluster.nodes[i].paused {
            cluster.up(i)?;
        }
    }
    Ok(())
}

/// Stops all nodes but one, shows that writes are refused with a retryable status (nothing
/// acknowledged), brings them back and measures how long writes take to resume.
async fn lose_quorum(cluster: &mut Cluster, rec: &Recorder, grpc: &[String]) -> anyhow::Result<QuorumLoss> {
    cluster.settled(RECOVERY).await?;
    let n = cluster.nodes.len();
    let stopped: Vec<usize> = (1..n).collect();
    let from = rec.now();
    for i in &stopped {
        cluster.kill(*i);
    }
    // A write to the survivor, with a short deadline: it must be refused, not acknowledged.
    let mut probe = LogClient::with_servers(&grpc[..1])?
        .with_retry(RetryPolicy {
            deadline: Duration::from_secs(3),
            ..RetryPolicy::default()
        })?
        .with_token(TOKEN);
    let refusal = match probe
        .submit(vec![b"chaos quorum probe".to_vec()], Wait::Sequenced)
        .await
    {
        Ok(acks) => anyhow::bail!("a write was acknowledged without a quorum: {acks:?}"),
        Err(e) => e.to_string(),
    };
    rec.history.lock().await.unknown.push(crate::history::Unknown {
        leaf: cairn_tlog::leaf_hash(b"chaos quorum probe").to_base64(),
        at_ms: rec.now(),
        error: refusal.clone(),
    });
    // The documented answer: UNAVAILABLE (retry later), whatever its wording.
    anyhow::ensure!(
        refusal.contains("Unavailable"),
        "a write without a quorum was refused with other than UNAVAILABLE: {refusal}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    for i in &stopped {
        cluster.up(*i)?;
    }
    let healed = rec.now();
    cluster.settled(RECOVERY).await?;
    let deadline = Instant::now() + RECOVERY;
    let recovered_ms = loop {
        let h = rec.history.lock().await;
        if let Some((t, _)) = h.successes.iter().find(|(t, _)| *t > healed) {
            break t - healed;
        }
        drop(h);
        anyhow::ensure!(
            Instant::now() < deadline,
            "no write succeeded within 30 s of the heal"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    rec.history.lock().await.faults.push(FaultRecord {
        kind: "quorum-loss".into(),
        target: stopped
            .iter()
            .map(|i| format!("node-{}", i + 1))
            .collect::<Vec<_>>()
            .join("+"),
        shards: cluster.shards.iter().map(|s| s.id).collect(),
        from_ms: from,
        to_ms: healed,
    });
    Ok(QuorumLoss {
        stopped,
        refusal,
        recovered_ms,
        write_gap_ms: 0,
    })
}

/// Waits until every shard's served checkpoint covers every index acknowledged in it and stops
/// growing, then reads and audits each shard's whole log from node 1's read path.
async fn final_logs(cluster: &Cluster, rec: &Recorder) -> anyhow::Result<Vec<FinalLog>> {
    let site = HttpLog::new(&cluster.http(0));
    let listings = site.shards().await?;
    let mut logs = Vec::new();
    for info in &cluster.shards {
        let listing = listings
            .iter()
            .find(|l| l.shard.id == info.id)
            .ok_or_else(|| anyhow::anyhow!("shard {} is not in shards.json", info.id))?;
        let needed = {
            let h = rec.history.lock().await;
            h.acks
                .iter()
                .filter(|a| a.shard == info.id)
                .map(|a| a.index + 1)
                .max()
                .unwrap_or(0)
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (0u64, Instant::now());
        let verified = loop {
            let size = site.checkpoint(listing).await.map(|c| c.size).unwrap_or(0);
            if size != last.0 {
                last = (size, Instant::now());
            }
            if size >= needed && last.1.elapsed() > Duration::from_secs(2) {
                break site.verify_shard(listing).await?;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "shard {}'s checkpoint covers {size} entries, {needed} were acknowledged, after 60 s",
                info.id
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        logs.push(FinalLog {
            shard: info.id,
            key: info.key.clone(),
            leaves: verified
                .entries
                .iter()
                .map(|e| cairn_tlog::leaf_hash(e))
                .collect(),
        });
    }
    Ok(logs)
}
