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

/// Held by the two tests with the heaviest load (the leader faults and the temporal schedule), so
/// that they do not run at once on a 2-core machine: the faults test bounds how soon publication
/// catches up, which a concurrent 700k-entry load can starve.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Node {
    config: std::path::PathBuf,
    dir: std::path::PathBuf,
    grpc: String,
    http: String,
}

impl Node {
    /// Starts the node's process again with its configuration.
    fn restart(&self) -> anyhow::Result<Server> {
        Server::start(&self.dir, &["--config", &self.config.display().to_string()])
    }
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

/// Starts three `cairn serve` processes with `shard_count` shards in `d` (heartbeat 50 ms, and the
/// `[tuning]` lines in `tuning`), and waits for every shard to have a leader every node agrees on.
/// Returns the nodes, their processes and the `[[shards]]` tables.
async fn start_cluster(
    d: &std::path::Path,
    shard_count: u32,
    tuning: &str,
) -> anyhow::Result<(Vec<Node>, Vec<Option<Server>>, String)> {
    let (shards, _) = keygen_shards(d, "failover.test", shard_count, true)?;
    let (ports, peers) = cluster_ports(3)?;
    let mut nodes = Vec::new();
    let mut servers: Vec<Option<Server>> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        // Heartbeat 50 ms: elections time out after 200 to 400 ms. A follower that heard from a leader
        // first waits out the leader's lease (the longest election timeout, 400 ms), so a new leader
        // is elected 0.6 to 0.8 s after the old one stopped, longer when a candidate with a shorter
        // log went first and lost (it then backs off by twice the longest timeout).
        let cluster = format!("{peers}{shards}");
        let tuning = format!("heartbeat_ms = 50\n{tuning}");
        let (node_dir, path) = node_config(d, i + 1, *p, &tuning, "", &cluster)?;
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
    for shard in 1..=shard_count {
        agreed_leader(&http, &nodes, &[0, 1, 2], shard).await?;
    }
    Ok((nodes, servers, shards))
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

/// A three-node cluster with two shards ([`start_cluster`]) and three writers ([`spawn_writers`])
/// running.
async fn loaded_cluster() -> anyhow::Result<Loaded> {
    let dir = tempfile::tempdir()?;
    let (nodes, servers, _) = start_cluster(dir.path(), 2, "").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let writers = spawn_writers(&urls, &stop, &seen);
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

/// Three writers, each starting at a different one of `urls` and knowing all of them, sending calls
/// of 20 entries with the client's documented retries until `stop`; each returns its call count and
/// the attempts it retried.
fn spawn_writers(urls: &[String], stop: &Arc<AtomicBool>, seen: &Arc<Mutex<Seen>>) -> Vec<Writer> {
    (0..3usize)
        .map(|w| {
            let mut order = urls.to_vec();
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

/// Waits for the writers (stopped): their calls and retried attempts in all. Fails if a server
/// answered an attempt with anything but the documented retryable codes (`UNAVAILABLE`,
/// `RESOURCE_EXHAUSTED`).
async fn join_writers(writers: Vec<Writer>) -> anyhow::Result<(u64, usize)> {
    let (mut calls, mut retried) = (0, 0);
    let mut bad = Vec::new();
    for writer in writers {
        let (c, failed) = writer.await??;
        calls += c;
        retried += failed.len();
        bad.extend(
            failed
                .iter()
                .filter(|f| f.answered && !matches!(f.code, Code::Unavailable | Code::ResourceExhausted))
                .map(|f| format!("{} from {}: {}", f.code, f.server, f.message)),
        );
    }
    anyhow::ensure!(
        bad.is_empty(),
        "answers the API does not document for retry: {bad:?}"
    );
    Ok((calls, retried))
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

/// Reads the published log of every shard `http` lists and checks every acknowledgment against it:
/// the entry is at its acknowledged index (so none is lost), each (shard, index) was acknowledged for
/// one entry only, and the log holds nothing that was not acknowledged there (a duplicate got its
/// original index; a retry routed among another set of active shards, a shard added or frozen in
/// between, was answered from where its first attempt landed rather than logged twice). Returns the
/// number of distinct entries acknowledged.
async fn audit(http: &str, acks: &[(Vec<u8>, Submitted)]) -> anyhow::Result<usize> {
    use std::collections::{HashMap, HashSet};
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
    let acked: HashSet<&[u8]> = at.values().copied().collect();
    for s in site.shards().await? {
        let expected = at.keys().filter(|(shard, _)| *shard == s.id).count();
        if s.state == cairn_store::Lifecycle::Planned && expected == 0 {
            // Ahead of its window: nothing published yet, perhaps not even a first checkpoint.
            continue;
        }
        let covering = at
            .keys()
            .filter(|(shard, _)| *shard == s.id)
            .map(|(_, i)| i + 1)
            .max()
            .unwrap_or(0) as usize;
        let log = common::verified_shard_covering(&site, &s, covering).await?;
        let mut found = 0;
        for (i, e) in log.entries.iter().enumerate() {
            match at.get(&(s.id, i as u64)) {
                Some(a) => {
                    anyhow::ensure!(
                        *a == e.as_slice(),
                        "shard {} index {i} is not the entry acknowledged there",
                        s.id
                    );
                    found += 1;
                }
                None if acked.contains(e.as_slice()) => anyhow::bail!(
                    "shard {} index {i} holds an entry acknowledged in another shard (logged twice)",
                    s.id
                ),
                None => anyhow::bail!("shard {} index {i} holds an entry never acknowledged", s.id),
            }
        }
        anyhow::ensure!(
            found == expected,
            "shard {} holds {found} of the {expected} entries acknowledged in it",
            s.id
        );
    }
    Ok(at.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_leader_kills_and_pauses() -> anyhow::Result<()> {
    let _heavy = HEAVY.lock().await;
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
            servers[victim] = Some(node.restart()?);
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
        servers[i] = Some(node.restart()?);
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

/// `cairn cluster status --json` against `node`: each shard's (id, leader (0 when unknown), voters).
fn groups_by_status(dir: &std::path::Path, node: &Node) -> anyhow::Result<Vec<(u64, u64, Vec<u64>)>> {
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
            let voters = g["voters"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            (
                g["shard"].as_u64().unwrap_or(0),
                g["leader"].as_u64().unwrap_or(0),
                voters,
            )
        })
        .collect())
}

/// `cairn cluster status --json` against `node`: each shard's leader (0 when unknown).
fn leaders_by_status(dir: &std::path::Path, node: &Node) -> anyhow::Result<Vec<(u64, u64)>> {
    Ok(groups_by_status(dir, node)?
        .into_iter()
        .map(|(shard, leader, _)| (shard, leader))
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

/// Polls until every node of `among` (indexes) reports, for every shard, the voters `voters` (node
/// ids) and the same leader, the leaders of the shards all different: the cluster's membership is
/// `voters` everywhere and its shard leaders are spread one per node. Returns how long it took.
async fn balanced(
    dir: &std::path::Path,
    nodes: &[Node],
    among: &[usize],
    voters: &[u64],
    within: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut views = Vec::new();
        for &i in among {
            views.push(groups_by_status(dir, &nodes[i]).unwrap_or_default());
        }
        let first = &views[0];
        let mut leaders: Vec<u64> = first.iter().map(|(_, l, _)| *l).collect();
        leaders.sort_unstable();
        leaders.dedup();
        if !first.is_empty()
            && views.iter().all(|v| v == first)
            && first.iter().all(|(_, l, v)| v == voters && voters.contains(l))
            && leaders.len() == first.len()
        {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "not balanced over voters {voters:?} within {within:?}: {views:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Membership changes under load through the real binary, with three shards: a fourth node is
/// started and `cairn cluster add-node` makes it a voter of every shard; `cairn cluster remove-node`
/// removes node 1 (which leads a shard: it hands the leadership over first) and node 1, now refusing
/// writes, is stopped; node 2 loses its disk (SIGKILL, data directory deleted), is removed, and a new
/// node 5 on an empty disk takes its place. After each change the shard leaders spread again, one per
/// node, within 60 s (each time is printed). A removal that would leave the remaining voters
/// without an answering majority is refused with nothing changed. Writers run through it all: every
/// call succeeds with the client's retries, and every acknowledged entry is in the published log at
/// its index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_removed_and_replaced_under_load() -> anyhow::Result<()> {
    // A failed leader move makes the balancer leave the shard alone for 20 s: room for one.
    const BALANCE: Duration = Duration::from_secs(60);
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    let (mut nodes, mut servers, shards) = start_cluster(d, 3, "").await?;
    let extra: Vec<common::Ports> = (0..2)
        .map(|_| Ok((common::free_port()?, common::free_port()?, common::free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let peer = |id: usize, (g, _, r): common::Ports| {
        format!("[[peers]]\nid = {id}\nraft = \"127.0.0.1:{r}\"\ngrpc = \"http://127.0.0.1:{g}\"\n\n")
    };
    let grpc_of = |(g, _, _): common::Ports| format!("http://127.0.0.1:{g}");
    let mut urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    urls.extend(extra.iter().map(|p| grpc_of(*p)));
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let writers = spawn_writers(&urls, &stop, &seen);
    let start = Instant::now();
    let at = |t: Instant| t.saturating_duration_since(start).as_millis();
    let ports_of = |n: &Node| -> anyhow::Result<common::Ports> {
        let text = std::fs::read_to_string(&n.config)?;
        let port = |key: &str| -> anyhow::Result<u16> {
            let line = text
                .lines()
                .find(|l| l.starts_with(key))
                .ok_or_else(|| anyhow::anyhow!("no {key}"))?;
            Ok(line
                .trim_end_matches('"')
                .rsplit(':')
                .next()
                .unwrap_or_default()
                .parse()?)
        };
        Ok((port("grpc_addr")?, port("http_addr")?, port("raft_addr")?))
    };
    let original: Vec<common::Ports> = nodes.iter().map(ports_of).collect::<anyhow::Result<_>>()?;
    let start_node = |id: usize, ports: common::Ports, peers: &[(usize, common::Ports)]| {
        let peers: String = peers.iter().map(|(i, p)| peer(*i, *p)).collect();
        let (dir, config) = node_config(
            d,
            id,
            ports,
            "heartbeat_ms = 50\n",
            "",
            &format!("{peers}{shards}"),
        )?;
        let server = Server::start(&dir, &["--config", &config.display().to_string()])?;
        Ok::<_, anyhow::Error>((
            Node {
                config,
                dir,
                grpc: server.grpc.clone(),
                http: server.http.clone(),
            },
            server,
        ))
    };
    let admin = |server: &Node, args: &[&str]| -> anyhow::Result<(bool, String, String)> {
        let mut full = vec!["cluster"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--server", &server.grpc]);
        cairn(d, &full, None)
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    // 1. A fourth node: started with the shards and the peers, then added to every group.
    let (n4, s4) = start_node(
        4,
        extra[0],
        &[
            (1, original[0]),
            (2, original[1]),
            (3, original[2]),
            (4, extra[0]),
        ],
    )?;
    nodes.push(n4);
    servers.push(Some(s4));
    let raft4 = format!("127.0.0.1:{}", extra[0].2);
    let t = Instant::now();
    let (ok, out, err) = admin(&nodes[0], &["add-node", "--id", "4", "--raft", &raft4])?;
    anyhow::ensure!(ok, "add-node 4 failed: {err}");
    assert!(
        out.contains("node 4 is a voter of the control group and shards [1, 2, 3]"),
        "{out}"
    );
    let added = t.elapsed();
    // Adding it again changes nothing; a wrong address is refused before anything changes.
    let (ok, _, err) = admin(&nodes[1], &["add-node", "--id", "4", "--raft", &raft4])?;
    anyhow::ensure!(ok, "repeating add-node 4 failed: {err}");
    let (ok, _, err) = admin(&nodes[1], &["add-node", "--id", "6", "--raft", &raft4])?;
    assert!(!ok && err.contains("is node 4, not node 6"), "{err}");
    for (shard, _, voters) in groups_by_status(d, &nodes[3])? {
        assert_eq!(voters, vec![1, 2, 3, 4], "shard {shard} as node 4 sees it");
    }
    println!(
        "{} ms: node 4 added to every group in {} ms",
        at(Instant::now()),
        added.as_millis()
    );

    // 2. Node 1 removed (asked of node 2), then stopped.
    let t = Instant::now();
    let (ok, out, err) = admin(&nodes[1], &["remove-node", "--id", "1"])?;
    anyhow::ensure!(ok, "remove-node 1 failed: {err}");
    assert!(
        out.contains("node 1 is no longer a member of the control group and shards [1, 2, 3]"),
        "{out}"
    );
    let removed = t.elapsed();
    // Node 1 learns it was removed and refuses writes, naming the reason.
    let mut client = LogClient::with_servers(&[nodes[0].grpc.clone()])?.with_retry(RetryPolicy {
        deadline: Duration::ZERO,
        ..RetryPolicy::default()
    })?;
    let deadline = Instant::now() + T;
    loop {
        match client
            .submit(vec![b"to a removed node".to_vec()], Wait::Sequenced)
            .await
        {
            Err(e) if e.to_string().contains("votes in no shard's group") => break,
            other => anyhow::ensure!(
                Instant::now() < deadline,
                "node 1 still takes writes after its removal: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s1 = servers[0].take().ok_or_else(|| anyhow::anyhow!("node 1 down"))?;
    anyhow::ensure!(s1.stop()?.success(), "node 1 did not stop cleanly");
    let spread = balanced(d, &nodes, &[1, 2, 3], &[2, 3, 4], BALANCE).await?;
    println!(
        "{} ms: node 1 removed in {} ms; leaders one per node of 2, 3, 4 {} ms after",
        at(Instant::now()),
        removed.as_millis(),
        spread.as_millis()
    );

    // 3. Node 2's disk is lost: it is killed, its data deleted, removed, and node 5 replaces it.
    let s2 = servers[1].take().ok_or_else(|| anyhow::anyhow!("node 2 down"))?;
    s2.kill()?;
    std::fs::remove_dir_all(nodes[1].dir.join("db"))?;
    let t = Instant::now();
    let (ok, _, err) = admin(&nodes[2], &["remove-node", "--id", "2"])?;
    anyhow::ensure!(ok, "remove-node 2 failed: {err}");
    let (n5, s5) = start_node(5, extra[1], &[(3, original[2]), (4, extra[0]), (5, extra[1])])?;
    nodes.push(n5);
    servers.push(Some(s5));
    let raft5 = format!("127.0.0.1:{}", extra[1].2);
    let (ok, _, err) = admin(&nodes[3], &["add-node", "--id", "5", "--raft", &raft5])?;
    anyhow::ensure!(ok, "add-node 5 failed: {err}");
    let replaced = t.elapsed();
    let spread = balanced(d, &nodes, &[2, 3, 4], &[3, 4, 5], BALANCE).await?;
    println!(
        "{} ms: node 2 (disk lost) replaced by node 5 in {} ms; leaders one per node of 3, 4, 5 {} ms after",
        at(Instant::now()),
        replaced.as_millis(),
        spread.as_millis()
    );

    // 4. With node 5 paused, removing node 4 would leave voters 3 and 5 with one answering: refused,
    // nothing changed.
    let s5 = servers[4]
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("node 5 down"))?;
    s5.signal("STOP")?;
    let (ok, _, err) = admin(&nodes[2], &["remove-node", "--id", "4"])?;
    s5.signal("CONT")?;
    assert!(!ok && err.contains("majority of the remaining voters"), "{err}");
    for (shard, _, voters) in groups_by_status(d, &nodes[2])? {
        assert_eq!(voters, vec![3, 4, 5], "shard {shard} after the refused removal");
    }
    balanced(d, &nodes, &[2, 3, 4], &[3, 4, 5], BALANCE).await?;

    stop.store(true, Ordering::SeqCst);
    let (calls, retried) = join_writers(writers).await?;
    let seen = seen.lock().await;
    let (gap_start, longest) = longest_gap(&seen, start);
    let distinct = audit(&nodes[2].http, &seen.acks).await?;
    println!(
        "membership: {calls} calls of 20 entries over {:.1} s, {retried} attempts retried; {distinct} entries \
         acknowledged, all found at their indexes; longest interval without a successful write: {} ms (from {} ms)",
        start.elapsed().as_secs_f64(),
        longest.as_millis(),
        at(gap_start)
    );
    anyhow::ensure!(calls > 0, "no writes went through");
    for s in servers.into_iter().flatten() {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}

/// `cairn shard list` against `node`: each shard's (id, state).
fn states(dir: &std::path::Path, node: &Node) -> anyhow::Result<Vec<(u64, String)>> {
    let (ok, out, err) = cairn(dir, &["shard", "list", "--server", &node.grpc], None)?;
    anyhow::ensure!(ok, "cairn shard list failed: {err}");
    out.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            Ok((
                v["id"].as_u64().unwrap_or(0),
                v["state"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect()
}

/// Operator changes with a node down and with the quorum lost, through the real binary: with one of
/// three nodes killed, `cairn shard freeze` freezes shard 1; with a second one killed too, freezing
/// shard 2 (asked of its leader, the one node left) fails within seconds, saying that the leader does
/// not reach a majority (`FAILED_PRECONDITION`; or `UNAVAILABLE` if it has stepped down already), and so
/// does removing a node. Nothing was half-applied: once
/// the nodes are back, shard 2 is still active, takes writes, and every group still has its three
/// voters.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_changes_need_a_quorum_and_half_apply_nothing() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    // Leaders stay where elections put them: the node kept must stay shard 2's leader.
    let (nodes, mut servers, _) = start_cluster(d, 2, "balance_leaders_ms = 0\n").await?;
    let http = reqwest::Client::new();
    let all: Vec<usize> = (0..3).collect();
    let keep = agreed_leader(&http, &nodes, &all, 2).await?;
    let others: Vec<usize> = all.iter().copied().filter(|i| *i != keep).collect();

    // One node down: the freeze goes through.
    servers[others[0]]
        .take()
        .ok_or_else(|| anyhow::anyhow!("node down"))?
        .kill()?;
    agreed_leader(&http, &nodes, &[keep, others[1]], 1).await?;
    let (ok, out, err) = cairn(d, &["shard", "freeze", "1", "--server", &nodes[keep].grpc], None)?;
    anyhow::ensure!(ok, "freeze with a node down failed: {err}");
    assert!(out.contains("shard 1 frozen"), "{out}");

    // Two nodes down: refused, quickly, with the documented retryable error.
    servers[others[1]]
        .take()
        .ok_or_else(|| anyhow::anyhow!("node down"))?
        .kill()?;
    let t = Instant::now();
    let (ok, _, err) = cairn(d, &["shard", "freeze", "2", "--server", &nodes[keep].grpc], None)?;
    let refused = t.elapsed();
    assert!(!ok, "a freeze without a quorum succeeded");
    assert!(
        err.contains("does not reach a majority") || err.contains("no reachable leader"),
        "{err}"
    );
    anyhow::ensure!(refused < Duration::from_secs(10), "the refusal took {refused:?}");
    let t = Instant::now();
    let (ok, _, remove_err) = cairn(
        d,
        &[
            "cluster",
            "remove-node",
            "--id",
            &(others[0] + 1).to_string(),
            "--server",
            &nodes[keep].grpc,
        ],
        None,
    )?;
    let remove_refused = t.elapsed();
    assert!(!ok, "a removal without a quorum succeeded");
    assert!(
        remove_err.contains("does not reach a majority")
            || remove_err.contains("majority of the remaining voters")
            || remove_err.contains("no reachable leader"),
        "{remove_err}"
    );
    let t = Instant::now();
    let (ok, _, set_err) = cairn(
        d,
        &[
            "cluster",
            "set",
            "publish_interval_ms",
            "100",
            "--server",
            &nodes[keep].grpc,
        ],
        None,
    )?;
    let set_refused = t.elapsed();
    assert!(!ok, "a cluster setting was recorded without a quorum");
    println!(
        "without a quorum: freeze refused in {} ms ({}); remove-node refused in {} ms ({}); cluster set refused in {} ms ({})",
        refused.as_millis(),
        err.trim(),
        remove_refused.as_millis(),
        remove_err.trim(),
        set_refused.as_millis(),
        set_err.trim()
    );

    // The nodes come back: nothing of the refused changes happened.
    for &i in &others {
        let node = &nodes[i];
        servers[i] = Some(node.restart()?);
    }
    for shard in 1..=2 {
        agreed_leader(&http, &nodes, &all, shard).await?;
    }
    // The node that was down first catches up with the freeze it missed; shard 2 stays active.
    let expected = vec![(1, "frozen".to_owned()), (2, "active".to_owned())];
    let deadline = Instant::now() + T;
    for &i in &all {
        let mut seen = states(d, &nodes[i])?;
        while seen != expected {
            anyhow::ensure!(Instant::now() < deadline, "node {} lists {seen:?}", i + 1);
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen = states(d, &nodes[i])?;
        }
    }
    for (shard, _, voters) in groups_by_status(d, &nodes[keep])? {
        assert_eq!(voters, vec![1, 2, 3], "shard {shard}");
    }
    for &i in &all {
        let (ok, out, err) = cairn(
            d,
            &["cluster", "settings", "--json", "--server", &nodes[i].grpc],
            None,
        )?;
        anyhow::ensure!(ok, "cluster settings: {err}");
        let settings: serde_json::Value = serde_json::from_str(out.trim())?;
        anyhow::ensure!(
            settings["settings"]["publish_interval_ms"]["recorded"] == false,
            "node {} runs with a setting refused without a quorum: {settings}",
            i + 1
        );
    }
    let urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let mut client = LogClient::with_servers(&urls)?;
    let acks = client
        .submit(vec![b"after the quorum came back".to_vec()], Wait::Sequenced)
        .await?;
    assert_eq!(acks[0].shard, 2, "the write went to shard {}", acks[0].shard);
    for s in servers.into_iter().flatten() {
        anyhow::ensure!(s.stop()?.success(), "unclean exit");
    }
    Ok(())
}

/// Copies the signing key file `key` into `node`'s key directory (`<data_dir>/keys`), mode 0600: what
/// mounting a Secret does.
fn give_key(node: &Node, key: &std::path::Path, id: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = node.dir.join("keys");
    std::fs::create_dir_all(&dir)?;
    let to = dir.join(format!("shard-{id}.key"));
    std::fs::copy(key, &to)?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `shard`'s state as `node`'s `shards.json` lists it (`None`: not listed).
async fn listed_state(http: &reqwest::Client, node: &Node, shard: u32) -> anyhow::Result<Option<String>> {
    Ok(listing(http, node, shard)
        .await?
        .and_then(|s| s["state"].as_str().map(str::to_owned)))
}

/// `shard`'s entry in `node`'s `shards.json`.
async fn listing(
    http: &reqwest::Client,
    node: &Node,
    shard: u32,
) -> anyhow::Result<Option<serde_json::Value>> {
    let body = http
        .get(format!("{}/shards.json", node.http))
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let doc: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(doc["shards"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["id"].as_u64() == Some(u64::from(shard)))
        .cloned())
}

/// Polls until `shard` is listed as `state` by every node of `among` (bound [`T`]); returns how long
/// that took.
async fn until_listed(
    http: &reqwest::Client,
    nodes: &[Node],
    among: &[usize],
    shard: u32,
    state: &str,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for &i in among {
            seen.push(listed_state(http, &nodes[i], shard).await?);
        }
        if seen.iter().all(|s| s.as_deref() == Some(state)) {
            return Ok(start.elapsed());
        }
        anyhow::ensure!(
            start.elapsed() < T,
            "shard {shard} is not {state} on nodes {among:?} after {T:?}: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Shards added and frozen at runtime under load, through the real binary and the admin API only: no
/// configuration edit, no restart. Three nodes, two configured shards, three writers throughout.
/// Shard 3 is added with its key on node 1 only: it stays planned and `cairn shard add` says which
/// nodes have not reported the key; once node 2 has it too (a majority) it becomes active, and node 3,
/// without the key, still takes writes for it (forwarding to its leader); node 3 gets the key later
/// and joins. Adding it again is a no-op; another origin under its id is refused. Writes land in
/// shard 3, then it is frozen. With node 3 down, shard 4 is added and becomes active (a quorum is
/// there); with nodes 2 and 3 stopped, adding shard 5 fails cleanly and, once they are back, shard 5
/// was never recorded. Every acknowledged entry is at its index in the audited published log, whose
/// shard list (`shards.json`) names the new shards, and no entry is logged in two shards. Then shard 3
/// is archived (an active shard is refused): no node runs its group, `shards.json` says so, and the
/// audit passes again from object storage alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_added_and_frozen_at_runtime_under_load() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    // A reroute grace of 20 s (90 s by default): retries here come within seconds, and the frozen
    // shard can be archived 20 s after its final checkpoint.
    let (nodes, mut servers, _) = start_cluster(d, 2, "reroute_grace_s = 20\n").await?;
    let http = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let writers = spawn_writers(&urls, &stop, &seen);
    let keygen = |id: u32| -> anyhow::Result<std::path::PathBuf> {
        let key = d.join(format!("added-{id}.key"));
        let (ok, _, err) = cairn(
            d,
            &[
                "keygen",
                "--origin",
                &format!("failover.test/added-{id}"),
                "--out",
                &key.display().to_string(),
            ],
            None,
        )?;
        anyhow::ensure!(ok, "keygen: {err}");
        Ok(key)
    };
    let add = |id: u32, key: &std::path::Path, origin: &str, server: &str| {
        cairn(
            d,
            &[
                "shard",
                "add",
                "--id",
                &id.to_string(),
                "--origin",
                origin,
                "--key-file",
                &key.display().to_string(),
                "--server",
                server,
            ],
            None,
        )
    };

    // Shard 3 with its key on one node of three: planned, and the answer says who lacks the key.
    let key3 = keygen(3)?;
    give_key(&nodes[0], &key3, 3)?;
    let (ok, out, err) = add(3, &key3, "failover.test/added-3", &nodes[1].grpc)?;
    anyhow::ensure!(ok, "shard add: {err}");
    anyhow::ensure!(out.contains("planned"), "shard add said: {out}");
    until_listed(&http, &nodes, &[0, 1, 2], 3, "planned").await?;
    // Node 1 reports the key; nodes 2 and 3 have not: the shard waits for them.
    let deadline = Instant::now() + T;
    loop {
        let (ok, out, err) = add(3, &key3, "failover.test/added-3", &nodes[0].grpc)?;
        anyhow::ensure!(ok, "repeated shard add: {err}");
        if out.contains("nodes [2, 3] have not reported") {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "shard add never named nodes 2 and 3: {out}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    anyhow::ensure!(
        listed_state(&http, &nodes[2], 3).await?.as_deref() == Some("planned"),
        "shard 3 became active with one key holder of three"
    );
    // A majority holds the key: active everywhere, node 3 included.
    give_key(&nodes[1], &key3, 3)?;
    let activation = until_listed(&http, &nodes, &[0, 1, 2], 3, "active").await?;
    // Writes reach shard 3, through every node (node 3 forwards: it does not host it yet).
    let deadline = Instant::now() + T;
    while !seen.lock().await.acks.iter().any(|(_, a)| a.shard == 3) {
        anyhow::ensure!(Instant::now() < deadline, "no write landed in shard 3");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    give_key(&nodes[2], &key3, 3)?;
    // The same again is a no-op; another origin under the id is refused.
    let (ok, out, err) = add(3, &key3, "failover.test/added-3", &nodes[2].grpc)?;
    anyhow::ensure!(ok && out.contains("active"), "repeated add: {out} {err}");
    let key_other = keygen(30)?;
    let (ok, _, err) = add(3, &key_other, "failover.test/added-30", &nodes[0].grpc)?;
    anyhow::ensure!(!ok && err.contains("exists already"), "reused id: {err}");

    // Freeze it at runtime; writes go on in the other shards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, _, err) = cairn(d, &["shard", "freeze", "--server", &nodes[0].grpc, "3"], None)?;
    anyhow::ensure!(ok, "freeze: {err}");
    until_listed(&http, &nodes, &[0, 1, 2], 3, "frozen").await?;
    let frozen_at = seen.lock().await.acks.len();

    // A node down, the quorum present: shard 4 is added and becomes active.
    servers[2].take().expect("node 3 runs").kill()?;
    let key4 = keygen(4)?;
    give_key(&nodes[0], &key4, 4)?;
    give_key(&nodes[1], &key4, 4)?;
    let (ok, _, err) = add(4, &key4, "failover.test/added-4", &nodes[0].grpc)?;
    anyhow::ensure!(ok, "shard add with a node down: {err}");
    let with_node_down = until_listed(&http, &nodes, &[0, 1], 4, "active").await?;
    let deadline = Instant::now() + T;
    while !seen.lock().await.acks[frozen_at..]
        .iter()
        .any(|(_, a)| a.shard == 4)
    {
        anyhow::ensure!(Instant::now() < deadline, "no write landed in shard 4");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    servers[2] = Some(nodes[2].restart()?);
    give_key(&nodes[2], &key4, 4)?;
    until_listed(&http, &nodes, &[0, 1, 2], 4, "active").await?;

    // Writers stop; the audit covers every shard, the added ones too.
    stop.store(true, Ordering::SeqCst);
    let (calls, _) = join_writers(writers).await?;
    let seen = seen.lock().await;
    let in_shard = |id: u32| seen.acks.iter().filter(|(_, a)| a.shard == id).count();
    let (in3, in4) = (in_shard(3), in_shard(4));
    anyhow::ensure!(
        seen.acks[frozen_at..]
            .iter()
            .all(|(_, a)| a.shard != 3 || a.duplicate),
        "an entry was acknowledged in shard 3 after its freeze"
    );
    let audited = audit(&nodes[0].http, &seen.acks).await?;
    let acks = seen.acks.clone();
    drop(seen);

    // The quorum lost: adding shard 5 fails, and nothing was recorded.
    let key5 = keygen(5)?;
    servers[1].as_ref().expect("node 2 runs").signal("STOP")?;
    servers[2].as_ref().expect("node 3 runs").signal("STOP")?;
    let refused_at = Instant::now();
    let (ok, _, err) = add(5, &key5, "failover.test/added-5", &nodes[0].grpc)?;
    let refused_in = refused_at.elapsed();
    servers[1].as_ref().expect("node 2 runs").signal("CONT")?;
    servers[2].as_ref().expect("node 3 runs").signal("CONT")?;
    anyhow::ensure!(!ok, "shard add succeeded without a quorum");
    anyhow::ensure!(
        err.contains("majority")
            || err.contains("no leader")
            || err.contains("UNAVAILABLE")
            || err.contains("Unavailable"),
        "shard add without a quorum said: {err}"
    );
    // Once the nodes are back, the map has no shard 5.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        for (i, node) in nodes.iter().enumerate() {
            anyhow::ensure!(
                listed_state(&http, node, 5).await?.is_none(),
                "node {} lists shard 5 after a refused add",
                i + 1
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Archiving: refused for an active shard; frozen shard 3 is archived: no node runs its group any
    // more, shards.json lists it frozen and archived, and its published log still verifies from
    // object storage alone (the audit again).
    let archive = |id: u32| {
        cairn(
            d,
            &["shard", "archive", &id.to_string(), "--server", &nodes[0].grpc],
            None,
        )
    };
    let (ok, _, err) = archive(4)?;
    anyhow::ensure!(
        !ok && err.contains("not frozen"),
        "archiving an active shard: {err}"
    );
    // Refused until its final checkpoint is as old as the cluster setting archive_after_s (the
    // configured reroute grace, 20 s, lowered to 5 s at node 2 and in effect at node 1, which
    // answers); the answer says how long.
    let (ok, _, err) = cairn(
        d,
        &[
            "cluster",
            "set",
            "archive_after_s",
            "5",
            "--server",
            &nodes[1].grpc,
        ],
        None,
    )?;
    anyhow::ensure!(ok, "cluster set: {err}");
    let set_at = Instant::now();
    loop {
        let (ok, out, err) = cairn(
            d,
            &["cluster", "settings", "--json", "--server", &nodes[0].grpc],
            None,
        )?;
        anyhow::ensure!(ok, "cluster settings: {err}");
        let settings: serde_json::Value = serde_json::from_str(out.trim())?;
        if settings["settings"]["archive_after_s"]["value"] == "5" {
            break;
        }
        anyhow::ensure!(
            set_at.elapsed() < T,
            "node 1 runs with {settings} {T:?} after archive_after_s was set at node 2"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, _, err) = archive(3)?;
        if ok {
            break;
        }
        anyhow::ensure!(
            err.contains("can be archived 5 s after") && Instant::now() < deadline,
            "archive: {err}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let archived_at = Instant::now();
    loop {
        let mut hosting = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let (ok, out, err) = cairn(d, &["cluster", "status", "--json", "--server", &node.grpc], None)?;
            anyhow::ensure!(ok, "cluster status: {err}");
            let status: serde_json::Value = serde_json::from_str(out.trim())?;
            if status["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|g| g["shard"] == 3)
            {
                hosting.push(i + 1);
            }
        }
        if hosting.is_empty() {
            break;
        }
        anyhow::ensure!(
            archived_at.elapsed() < T,
            "nodes {hosting:?} still run shard 3's group {T:?} after it was archived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let archived_in = archived_at.elapsed();
    for node in &nodes {
        let s3 = listing(&http, node, 3).await?.unwrap_or_default();
        anyhow::ensure!(
            s3["state"] == "frozen" && s3["archived"] == true,
            "shards.json at {} lists shard 3 as {s3}",
            node.http
        );
    }
    let reaudited = audit(&nodes[0].http, &acks).await?;
    anyhow::ensure!(
        reaudited == audited,
        "the audit after archiving covered {reaudited} entries, not {audited}"
    );
    let (ok, _, err) = archive(3)?;
    anyhow::ensure!(ok, "repeated archive: {err}");
    println!(
        "runtime shards: shard 3 active {:.2} s after a majority held its key; shard 4 active {:.2} s after add with node 3 down; add refused without a quorum in {:.2} s; \
         shard 3's groups stopped {:.2} s after archive; \
         {calls} calls, {audited} entries audited ({in3} in shard 3, {in4} in shard 4), none logged twice",
        activation.as_secs_f64(),
        with_node_down.as_secs_f64(),
        refused_in.as_secs_f64(),
        archived_in.as_secs_f64()
    );
    for s in servers.into_iter().flatten() {
        s.stop()?;
    }
    Ok(())
}

/// Seconds since the Unix epoch.
fn unix_secs(t: std::time::SystemTime) -> f64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Temporal shards on a schedule, through the real binary: three nodes with no configured shard and a
/// `[schedule]` of 20-second windows (15 s lead time), writers following only what the servers route,
/// over more than four windows. Each window's shard is listed ahead of its window (planned), takes
/// entries during it and is frozen at its end with a final checkpoint. Every call succeeds (retries
/// only on the documented retryable codes); every acknowledged entry is at its index in the audited
/// log of a shard whose window contains the moment it was acknowledged (within the documented 1 s
/// clock skew); every window's shard took entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_shards_rotate_on_schedule_under_load() -> anyhow::Result<()> {
    let _heavy = HEAVY.lock().await;
    const PERIOD: u64 = 20;
    const WINDOWS: u64 = 4;
    let tmp = tempfile::tempdir()?;
    let d = tmp.path();
    let seed = d.join("schedule.seed");
    std::fs::write(&seed, "5a".repeat(32))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&seed, std::fs::Permissions::from_mode(0o600))?;
    }
    let now = unix_secs(std::time::SystemTime::now()) as u64;
    // Window 0 opens 12 s from now: its shard is created as soon as the cluster runs (inside the
    // 15 s lead time) and listed as planned until then, however slowly the nodes start.
    let start = now + 12;
    let schedule = format!(
        "[schedule]\nperiod_s = {PERIOD}\nlead_time_s = 15\norigin = \"failover.test/window-{{n}}\"\n\
         start = {start}\nfirst_id = 100\nseed_file = \"{}\"\n\n",
        seed.display()
    );
    // No configured shard: every shard comes from the schedule.
    let (ports, peers) = cluster_ports(3)?;
    let mut nodes = Vec::new();
    let mut servers = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let (node_dir, path) = node_config(d, i + 1, *p, "heartbeat_ms = 50\n", &schedule, &peers)?;
        let server = Server::start(&node_dir, &["--config", &path.display().to_string()])?;
        nodes.push(Node {
            config: path,
            dir: node_dir,
            grpc: server.grpc.clone(),
            http: server.http.clone(),
        });
        servers.push(server);
    }
    let http = reqwest::Client::new();
    // Listed ahead of its window, then active from its start.
    until_listed(&http, &nodes, &[0, 1, 2], 100, "planned").await?;
    until_listed(&http, &nodes, &[0, 1, 2], 100, "active").await?;
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let urls: Vec<String> = nodes.iter().map(|n| n.grpc.clone()).collect();
    let (clock, wall) = (Instant::now(), std::time::SystemTime::now());
    let writers = spawn_writers(&urls, &stop, &seen);
    // Past the end of window WINDOWS - 1: at least four windows of writes.
    let end = start + WINDOWS * PERIOD;
    while unix_secs(std::time::SystemTime::now()) < end as f64 + 1.0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (calls, _) = join_writers(writers).await?;
    // Every window that ended is frozen, on every node.
    for n in 0..WINDOWS {
        until_listed(&http, &nodes, &[0, 1, 2], 100 + n as u32, "frozen").await?;
    }
    let listing = HttpLog::new(&nodes[0].http).shards().await?;
    let seen = seen.lock().await;
    // Acknowledged within its shard's window (the acknowledgment's wall time from the monotonic clock).
    const SKEW: f64 = 1.0;
    let mut per_window = vec![0usize; WINDOWS as usize + 1];
    let acked_at: Vec<f64> = seen
        .successes
        .iter()
        .map(|t| unix_secs(wall + t.saturating_duration_since(clock)))
        .collect();
    // Each call's 20 acks share its success time, in order.
    for (call, chunk) in seen.acks.chunks(20).enumerate() {
        let at = acked_at[call];
        for (_, a) in chunk {
            let s = listing
                .iter()
                .find(|s| s.id == a.shard)
                .ok_or_else(|| anyhow::anyhow!("shard {} is not listed", a.shard))?;
            let (from, until) = (
                s.valid_from.unwrap_or(0) as f64,
                s.valid_until.map_or(f64::MAX, |u| u as f64),
            );
            anyhow::ensure!(
                at + SKEW >= from && at - SKEW <= until,
                "an entry acknowledged at {at:.3} is in shard {} of window [{from}, {until})",
                a.shard
            );
            if let Some(k) = per_window.get_mut((a.shard - 100) as usize) {
                *k += 1;
            }
        }
    }
    anyhow::ensure!(
        per_window[..WINDOWS as usize].iter().all(|k| *k > 0),
        "a window's shard took no entries: {per_window:?}"
    );
    let audited = audit(&nodes[0].http, &seen.acks).await?;
    println!(
        "temporal shards: {WINDOWS}+ windows of {PERIOD} s, entries acknowledged per window {per_window:?}; \
         {calls} calls, {audited} entries audited, none logged twice"
    );
    drop(seen);
    for s in servers {
        s.stop()?;
    }
    Ok(())
}
