//! Writes through a three-node cluster while shard leaders fail, through the real binary: writers send
//! through every node (followers forward to leaders) with the client's documented retry behaviour; a
//! leader is SIGKILLed (then restarted) and, separately, SIGSTOPped for longer than the election timeout
//! (then resumed), several times. Every client call must succeed; every answer a node that was not the
//! faulted one gave to a failed attempt must have been a retried `UNAVAILABLE` or `RESOURCE_EXHAUSTED`
//! (failures of the client's own connection are retried at the next server and counted); and the longest
//! interval without a successful write is reported and must stay under 4 s, shorter than the pause, so
//! writers must have left the paused leader rather than waited for it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_client::{FailedAttempt, HttpLog, LogClient, RetryPolicy, Submitted, Wait};
use common::{Server, cairn, cluster_ports, keygen_shards, node_config};
use tokio::sync::Mutex;
use tonic::Code;

const T: Duration = Duration::from_secs(30);

struct Node {
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
    grpc: String,
    http: String,
}

/// The leader of `shard` as `node` reports it on /metrics (`None` while unknown).
async fn leader_seen(http: &reqwest::Client, node: &Node, shard: u32) -> Option<u64> {
    cairn_chaos::cluster::shard_gauge(http, &node.http, "cairn_shard_leader", shard)
        .await
        .filter(|l| *l != 0)
}

/// Waits until every node in `among` names the same leader of `shard`, one of `among`.
async fn agreed_leader(
    http: &reqwest::Client,
    nodes: &[Node],
    among: &[usize],
    shard: u32,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + T;
    loop {
        let mut seen = Vec::new();
        for &i in among {
            seen.push(leader_seen(http, &nodes[i], shard).await);
        }
        if let Some(Some(l)) = seen.first()
            && seen.iter().all(|s| *s == Some(*l))
            && among.contains(&(*l as usize - 1))
        {
            return Ok(*l as usize - 1);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no agreed leader of shard {shard}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Starts three `cairn serve` processes with two shards in `d` (heartbeat 50 ms), and waits for both
/// shards to have a leader every node agrees on.
async fn start_cluster(d: &std::path::Path) -> anyhow::Result<(Vec<Node>, Vec<Option<Server>>)> {
    let (shards, _) = keygen_shards(d, "failover.test", 2, true)?;
    let (ports, peers) = cluster_ports(3)?;
    let mut nodes = Vec::new();
    let mut servers: Vec<Option<Server>> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        // Heartbeat 50 ms: elections time out after 200 to 400 ms. A follower that heard from a leader
        // first waits out the leader's lease (the longest election timeout, 400 ms), so a new leader
        // is elected 0.6 to 0.8 s after the old one stopped, longer when a candidate with a shorter
        // log went first and lost (it then backs off by twice the longest timeout).
        let cluster = format!("{peers}{shards}");
        let (node_dir, path) = node_config(d, i + 1, *p, "heartbeat_ms = 50\n", "", &cluster)?;
        let server = Server::start(&node_dir, &["--config", &path.display().to_string()])?;
        nodes.push(Node {
            config: path,
            dir: node_dir,
            grpc: server.grpc.clone(),
            http: server.http.clone(),
        });
        servers.push(Some(server));
    }
    let http = reqwest::Client::new();
    for shard in 1..=2 {
        agreed_leader(&http, &nodes, &[0, 1, 2], shard).await?;
    }
    Ok((nodes, servers))
}

/// A writer's task: its call count and the attempts it retried.
type Writer = tokio::task::JoinHandle<anyhow::Result<(u64, Vec<FailedAttempt>)>>;

/// A cluster under load: its nodes, the writers, and what they saw.
struct Loaded {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    servers: Vec<Option<Server>>,
    http: reqwest::Client,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    writers: Vec<Writer>,
}

/// A three-node cluster ([`start_cluster`]) with three writers ([`spawn_writers`]) running.
async fn loaded_cluster() -> anyhow::Result<Loaded> {
    let dir = tempfile::tempdir()?;
    let (nodes, servers) = start_cluster(dir.path()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let writers = spawn_writers(&nodes, &stop, &seen);
    Ok(Loaded {
        _dir: dir,
        nodes,
        servers,
        http: reqwest::Client::new(),
        stop,
        seen,
        writers,
    })
}

/// What the writers saw: when each call succeeded, and every acknowledged entry.
#[derive(Default)]
struct Seen {
    successes: Vec<Instant>,
    /// (entry, acknowledgment).
    acks: Vec<(Vec<u8>, Submitted)>,
}

/// Three writers, each starting at a different node and knowing all three, sending calls of 20
/// entries with the client's documented retries until `stop`; each returns its call count and the
/// attempts it retried.
fn spawn_writers(nodes: &[Node], stop: &Arc<AtomicBool>, seen: &Arc<Mutex<Seen>>) -> Vec<Writer> {
    let urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    (0..3usize)
        .map(|w| {
            let mut order = urls.clone();
            order.rotate_left(w);
            let (stop, seen) = (stop.clone(), seen.clone());
            tokio::spawn(async move {
                let mut client = LogClient::with_servers(&order)?.with_retry(RetryPolicy {
                    deadline: Duration::from_secs(60),
                    backoff: Duration::from_millis(20),
                    max_backoff: Duration::from_millis(200),
                    ..RetryPolicy::default()
                })?;
                let mut calls = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let batch: Vec<Vec<u8>> = (0..20)
                        .map(|k| format!("writer {w} call {calls} entry {k}").into_bytes())
                        .collect();
                    let acks = client.submit(batch.clone(), Wait::Sequenced).await?;
                    calls += 1;
                    let mut seen = seen.lock().await;
                    seen.successes.push(Instant::now());
                    seen.acks.extend(batch.into_iter().zip(acks));
                }
                Ok::<_, anyhow::Error>((calls, client.failed_attempts().to_vec()))
            })
        })
        .collect()
}

/// The longest interval without a successful write after `from`, and where it started.
fn longest_gap(seen: &Seen, from: Instant) -> (Instant, Duration) {
    let mut times: Vec<Instant> = seen.successes.iter().copied().filter(|t| *t >= from).collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[0], w[1] - w[0]))
        .max_by_key(|(_, d)| *d)
        .unwrap_or((from, Duration::ZERO))
}

/// Reads the published log from `http` and checks every acknowledgment against it: the entry is at
/// its acknowledged index (so none is lost), each (shard, index) was acknowledged for one entry only,
/// and the log holds nothing that was not acknowledged (a duplicate got its original index). Returns
/// the number of distinct entries acknowledged.
async fn audit(http: &str, acks: &[(Vec<u8>, Submitted)]) -> anyhow::Result<usize> {
    use std::collections::HashMap;
    let site = HttpLog::new(http);
    let mut at: HashMap<(u32, u64), &[u8]> = HashMap::new();
    for (entry, ack) in acks {
        anyhow::ensure!(
            ack.leaf_hash == cairn_tlog::leaf_hash(entry),
            "an ack with another leaf hash"
        );
        if let Some(other) = at.insert((ack.shard, ack.index), entry) {
            anyhow::ensure!(
                other == entry.as_slice(),
                "shard {} index {} acknowledged for two entries",
                ack.shard,
                ack.index
            );
        }
    }
    for s in site.shards().await? {
        let expected = at.keys().filter(|(shard, _)| *shard == s.id).count();
        let log = common::verified_shard_covering(&site, &s, expected).await?;
        anyhow::ensure!(
            log.entries.len() == expected,
            "shard {} holds {} entries, {expected} were acknowledged",
            s.id,
            log.entries.len()
        );
        for (i, e) in log.entries.iter().enumerate() {
            anyhow::ensure!(
                at.get(&(s.id, i as u64)) == Some(&e.as_slice()),
                "shard {} index {i} is not the entry acknowledged there",
                s.id
            );
        }
    }
    Ok(at.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_leader_kills_and_pauses() -> anyhow::Result<()> {
    let Loaded {
        _dir,
        nodes,
        mut servers,
        http,
        stop,
        seen,
        writers,
    } = loaded_cluster().await?;

    // Faults, one at a time: (round, faulted node index, from, to).
    let mut faults: Vec<(usize, Instant, Instant)> = Vec::new();
    let start = Instant::now();
    for round in 0..4 {
        let shard = 1 + (round % 2) as u32;
        let all: Vec<usize> = (0..3).collect();
        let victim = agreed_leader(&http, &nodes, &all, shard).await?;
        let others: Vec<usize> = all.iter().copied().filter(|i| *i != victim).collect();
        let from = Instant::now();
        if round % 2 == 0 {
            // SIGKILL the leader; the others elect a new one; the node comes back.
            let server = servers[victim]
                .take()
                .ok_or_else(|| anyhow::anyhow!("node down"))?;
            server.kill()?;
            agreed_leader(&http, &nodes, &others, shard).await?;
            // Let writes run without the node for a while, then restart it.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let node = &nodes[victim];
            servers[victim] = Some(Server::start(
                &node.dir,
                &["--config", &node.config.display().to_string()],
            )?);
        } else {
            // SIGSTOP the leader for 5 s, over ten times the 400 ms election timeout and longer than
            // the 4 s gap bound: writers whose connection is to the paused node must notice the stall
            // (their client's stall timeout, 2 s) and go elsewhere.
            let server = servers[victim]
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("node down"))?;
            server.signal("STOP")?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            server.signal("CONT")?;
        }
        faults.push((victim, from, Instant::now()));
        // Everyone agrees on leaders again before the next fault.
        for s in 1..=2 {
            agreed_leader(&http, &nodes, &all, s).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut calls = 0;
    let mut transport = 0;
    let mut bad = Vec::new();
    let mut attempts = Vec::new();
    for (w, writer) in writers.into_iter().enumerate() {
        let (c, failed) = writer.await??;
        calls += c;
        attempts.extend(failed.iter().map(|f| (w, f.clone())));
        for f in failed {
            let during_fault_on = faults
                .iter()
                .find(|(_, from, to)| f.at >= *from && f.at <= *to + Duration::from_secs(1))
                .map(|(v, _, _)| nodes[*v].grpc.clone());
            let on_faulted = during_fault_on.as_deref() == Some(f.server.as_str());
            if !f.answered {
                // This client's own connection failed (a connection to a node that was killed, or
                // reset): retried at the next server, as documented.
                transport += 1;
            } else if !on_faulted && !matches!(f.code, Code::Unavailable | Code::ResourceExhausted) {
                bad.push(format!("{} from {}: {}", f.code, f.server, f.message));
            }
        }
    }
    anyhow::ensure!(
        bad.is_empty(),
        "healthy nodes answered with errors the API does not document for retry: {bad:?}"
    );

    // The longest interval without a successful write, from the first fault to the end.
    let seen = seen.lock().await;
    let (gap_start, longest) = longest_gap(&seen, faults[0].1);
    // Where the longest gap fell, and the attempts that failed in it: the diagnosis when it is too long.
    let at = |t: Instant| t.saturating_duration_since(start).as_millis();
    for (v, from, to) in &faults {
        println!("fault on node {} from {} ms to {} ms", v + 1, at(*from), at(*to));
    }
    println!(
        "longest gap from {} ms to {} ms",
        at(gap_start),
        at(gap_start + longest)
    );
    for (w, f) in &attempts {
        if f.at + Duration::from_secs(15) >= gap_start && f.at <= gap_start + longest {
            println!(
                "  writer {w} at {} ms: {:?} from {} (answered {}): {}",
                at(f.at),
                f.code,
                f.server,
                f.answered,
                f.message
            );
        }
    }
    println!(
        "failover: {calls} calls of 20 entries over {:.1} s, 4 faults (2 SIGKILL, 2 SIGSTOP of a leader); \
         longest interval without a successful write: {} ms; {transport} retried client transport failures",
        start.elapsed().as_secs_f64(),
        longest.as_millis()
    );
    anyhow::ensure!(calls > 0, "no writes during the faults");
    anyhow::ensure!(longest < Duration::from_secs(4), "a write gap of {longest:?}");

    // Everything acknowledged is in the published log, at its index.
    audit(&nodes[0].http, &seen.acks).await?;
    for s in servers.into_iter().flatten() {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}

/// A rolling restart under load, as an upgrade does it: each node in turn (leaders included) is
/// stopped with SIGTERM and started again, and the cluster settles (every node names the same leader
/// of both shards) before the next one. Every write call succeeds (with the client's retries),
/// nothing acknowledged is lost or moved, and the longest pause in writes is printed and must stay
/// under 3 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_under_load_loses_nothing() -> anyhow::Result<()> {
    let Loaded {
        _dir,
        nodes,
        mut servers,
        http,
        stop,
        seen,
        writers,
    } = loaded_cluster().await?;
    let all: Vec<usize> = (0..3).collect();
    let start = Instant::now();
    let at = |t: Instant| t.saturating_duration_since(start).as_millis();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let mut led = Vec::new();
        for shard in 1..=2u32 {
            if agreed_leader(&http, &nodes, &all, shard).await? == i {
                led.push(shard);
            }
        }
        let from = Instant::now();
        let server = servers[i]
            .take()
            .ok_or_else(|| anyhow::anyhow!("node {} is down", i + 1))?;
        anyhow::ensure!(server.stop()?.success(), "node {} did not stop cleanly", i + 1);
        let stopped = Instant::now();
        let others: Vec<usize> = all.iter().copied().filter(|n| *n != i).collect();
        for shard in 1..=2 {
            agreed_leader(&http, &nodes, &others, shard).await?;
        }
        // Writes go on without it for a second, then it comes back and catches up.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let node = &nodes[i];
        servers[i] = Some(Server::start(
            &node.dir,
            &["--config", &node.config.display().to_string()],
        )?);
        for shard in 1..=2 {
            agreed_leader(&http, &nodes, &all, shard).await?;
        }
        println!(
            "node {} (leading shards {led:?}): SIGTERM at {} ms, exited at {} ms, back and settled at {} ms",
            i + 1,
            at(from),
            at(stopped),
            at(Instant::now())
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (mut calls, mut retried) = (0, 0);
    for writer in writers {
        let (c, failed) = writer.await??;
        calls += c;
        retried += failed.len();
    }
    let seen = seen.lock().await;
    let (gap_start, longest) = longest_gap(&seen, start);
    let distinct = audit(&nodes[0].http, &seen.acks).await?;
    println!(
        "rolling restart: {calls} calls of 20 entries over {:.1} s, {retried} attempts retried; {distinct} \
         entries acknowledged, all found at their indexes; longest interval without a successful write: \
         {} ms (from {} ms)",
        start.elapsed().as_secs_f64(),
        longest.as_millis(),
        at(gap_start)
    );
    anyhow::ensure!(longest < Duration::from_secs(3), "a write gap of {longest:?}");
    for s in servers.into_iter().flatten() {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}

/// `cairn cluster status --json` against `node`: each shard's leader (0 when unknown).
fn leaders_by_status(dir: &std::path::Path, node: &Node) -> anyhow::Result<Vec<(u64, u64)>> {
    let (ok, out, err) = cairn(
        dir,
        &["cluster", "status", "--json", "--server", &node.grpc],
        None,
    )?;
    anyhow::ensure!(ok, "cairn cluster status failed: {err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    Ok(v["groups"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no groups in {out}"))?
        .iter()
        .map(|g| {
            (
                g["shard"].as_u64().unwrap_or(0),
                g["leader"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

/// Leader placement through the real binary: the balancer puts shard 1's leader on node 1 and shard
/// 2's on node 2 (each shard prefers another node); `cairn cluster status` shows it from any node;
/// `cairn cluster transfer-leader` moves shard 1 to node 3, which then leads it (the operator's choice
/// holds against the balancer), while writes go on; a move to a node that is no member is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_show_and_move_shard_leaders() -> anyhow::Result<()> {
    let mut l = loaded_cluster().await?;
    let dir = l._dir.path().to_path_buf();
    let deadline = Instant::now() + T;
    let mut leaders = leaders_by_status(&dir, &l.nodes[2])?;
    while leaders != vec![(1, 1), (2, 2)] {
        anyhow::ensure!(Instant::now() < deadline, "leaders not placed: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaders = leaders_by_status(&dir, &l.nodes[2])?;
    }
    let placed = Instant::now();
    // Asked of node 2, which forwards to shard 1's leader.
    let (ok, out, err) = cairn(
        &dir,
        &[
            "cluster",
            "transfer-leader",
            "--shard",
            "1",
            "--to",
            "3",
            "--server",
            &l.nodes[1].grpc,
        ],
        None,
    )?;
    anyhow::ensure!(ok, "transfer-leader failed: {err}");
    assert!(out.contains("node 3 leads shard 1"), "{out}");
    for node in &l.nodes {
        let mut seen = leaders_by_status(&dir, node)?;
        while seen != vec![(1, 3), (2, 2)] {
            anyhow::ensure!(placed.elapsed() < T, "node {} sees {seen:?}", node.grpc);
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = leaders_by_status(&dir, node)?;
        }
    }
    // The balancer (every 2 s, after 3 s of leadership) leaves the operator's choice alone.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(leaders_by_status(&dir, &l.nodes[0])?, vec![(1, 3), (2, 2)]);
    let (ok, _, err) = cairn(
        &dir,
        &[
            "cluster",
            "transfer-leader",
            "--shard",
            "2",
            "--to",
            "7",
            "--server",
            &l.nodes[0].grpc,
        ],
        None,
    )?;
    assert!(!ok && err.contains("not a voter"), "{err}");
    l.stop.store(true, Ordering::SeqCst);
    let mut calls = 0;
    for w in l.writers.drain(..) {
        calls += w.await??.0;
    }
    anyhow::ensure!(calls > 0, "no writes went through");
    let acks = std::mem::take(&mut l.seen.lock().await.acks);
    let audited = audit(&l.nodes[0].http, &acks).await?;
    println!("{calls} calls, {audited} entries audited across the moves");
    for s in l.servers.iter_mut().filter_map(Option::take) {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}
