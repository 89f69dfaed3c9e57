//! A cluster of `cairn serve` processes in a [`Lab`]: configuration, start, stop, and what each node
//! says about shard leaders.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use cairn_tlog::VerifierKey;

use crate::lab::{Lab, Proc};
use crate::s3::Store;

/// Bearer token of the harness's tenant (writes off loopback need one).
pub const TOKEN: &str = "chaos-token";

/// A shard of the cluster.
#[derive(Clone, Debug)]
pub struct ShardInfo {
    /// Id.
    pub id: u32,
    /// Verifier key.
    pub key: VerifierKey,
    /// Whether it is the Sigstore (Rekor v2) shard.
    pub sigstore: bool,
}

/// One node: its files and its process (none while down).
pub struct NodeSlot {
    config: PathBuf,
    /// Its data directory (a tmpfs of its own).
    pub data: PathBuf,
    log: PathBuf,
    proc: Option<Proc>,
    /// Whether it is SIGSTOPped.
    pub paused: bool,
}

/// The running cluster.
pub struct Cluster {
    /// Nodes, index `i` is node id `i + 1`. Declared before `lab`: processes stop before their
    /// namespaces and disks go away.
    pub nodes: Vec<NodeSlot>,
    /// The network namespaces.
    pub lab: Lab,
    bin: PathBuf,
    /// Shards: opaque ones first, the Sigstore shard last.
    pub shards: Vec<ShardInfo>,
    http: reqwest::Client,
}

/// Gauge `name{shard="<shard>"}` from the /metrics of the node at `http` (`None` when unreachable or
/// absent).
pub async fn shard_gauge(client: &reqwest::Client, http: &str, name: &str, shard: u32) -> Option<u64> {
    let text = client
        .get(format!("{http}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{name}{{shard=\"{shard}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<u64>().ok())
}

/// Each node's data directory is a tmpfs of this size: room for a 30-minute soak, small enough to
/// fill in a second.
pub const DISK_MIB: u32 = 2048;

impl Cluster {
    /// Writes the configuration of `nodes` nodes with `opaque` opaque shards and one Sigstore shard
    /// under `dir`, all sharing `store`, and starts them.
    pub fn start(
        bin: &Path,
        dir: &Path,
        store: &Store,
        nodes: usize,
        opaque: u32,
        lab: Lab,
    ) -> anyhow::Result<Self> {
        let mut cluster = Self {
            nodes: Vec::new(),
            lab,
            bin: bin.to_path_buf(),
            shards: Vec::new(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        let mut shards = String::new();
        for id in 1..=opaque + 1 {
            let sigstore = id == opaque + 1;
            let origin = if sigstore {
                "rekor.chaos.test".to_owned()
            } else {
                format!("chaos.test/shard-{id}")
            };
            let key = dir.join(format!("shard-{id}.key"));
            let out = std::process::Command::new(bin)
                .args(["keygen", "--origin", &origin, "--out"])
                .arg(&key)
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "keygen: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let vkey = String::from_utf8(out.stdout)?.trim().to_owned();
            cluster.shards.push(ShardInfo {
                id,
                key: VerifierKey::parse(&vkey)?,
                sigstore,
            });
            let kind = if sigstore { "sigstore" } else { "opaque" };
            shards.push_str(&format!(
                "[[shards]]\nid = {id}\norigin = \"{origin}\"\nkey_file = \"{}\"\nvkey = \"{vkey}\"\n\
                 kind = \"{kind}\"\n",
                key.display()
            ));
            if sigstore {
                shards.push_str(&format!("base_url = \"http://{origin}/logs/{id}\"\n"));
            }
            shards.push('\n');
        }
        let peers: String = (0..nodes)
            .map(|i| {
                let ip = cluster.lab.ip(i);
                format!(
                    "[[peers]]\nid = {}\nraft = \"{ip}:7401\"\ngrpc = \"http://{ip}:7400\"\n\n",
                    i + 1
                )
            })
            .collect();
        for i in 0..nodes {
            let node_dir = dir.join(format!("node-{}", i + 1));
            let data = node_dir.join("data");
            cluster.lab.small_disk(&data, DISK_MIB)?;
            let ip = cluster.lab.ip(i);
            // Heartbeat 50 ms: elections time out after 200 to 400 ms.
            let config = format!(
                "node_id = {id}\ndata_dir = \"{data}\"\ngrpc_addr = \"{ip}:7400\"\nhttp_addr = \"{ip}:7480\"\n\
                 raft_addr = \"{ip}:7401\"\nroles = [\"sequencer\", \"log\", \"tiles\"]\n\
                 store = \"s3://cairn/log\"\n{options}\n[tuning]\npublish_interval_ms = 200\nheartbeat_ms = 50\n\n\
                 [[tenants]]\nname = \"chaos\"\ntoken = \"{TOKEN}\"\n\n{peers}{shards}",
                id = i + 1,
                data = data.display(),
                options = store.options(),
            );
            let path = node_dir.join("cairn.toml");
            std::fs::write(&path, config)?;
            cluster.nodes.push(NodeSlot {
                config: path,
                data,
                log: node_dir.join("serve.log"),
                proc: None,
                paused: false,
            });
        }
        for i in 0..nodes {
            cluster.up(i)?;
        }
        Ok(cluster)
    }

    /// How many lines of node `i`'s log mention `needle`.
    pub fn log_mentions(&self, i: usize, needle: &str) -> usize {
        std::fs::read_to_string(&self.nodes[i].log)
            .map(|t| t.lines().filter(|l| l.contains(needle)).count())
            .unwrap_or(0)
    }

    /// Node `i`'s gRPC URL.
    pub fn grpc(&self, i: usize) -> String {
        format!("http://{}:7400", self.lab.ip(i))
    }

    /// Node `i`'s HTTP URL (read path, Rekor v2 API, metrics).
    pub fn http(&self, i: usize) -> String {
        format!("http://{}:7480", self.lab.ip(i))
    }

    /// Starts node `i` (its process must be down).
    pub fn up(&mut self, i: usize) -> anyhow::Result<()> {
        let slot = &self.nodes[i];
        let proc = Proc::start(self.lab.command(i, &self.bin), &slot.config, &slot.log)
            .with_context(|| format!("starting node {}", i + 1))?;
        self.nodes[i].proc = Some(proc);
        self.nodes[i].paused = false;
        Ok(())
    }

    /// SIGKILLs node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].proc.take() {
            p.kill();
        }
        self.nodes[i].paused = false;
    }

    /// SIGSTOPs (`pause`) or SIGCONTs node `i`.
    pub fn pause(&mut self, i: usize, pause: bool) -> anyhow::Result<()> {
        let p = self.nodes[i].proc.as_ref().context("node is down")?;
        p.signal(if pause { "STOP" } else { "CONT" })?;
        self.nodes[i].paused = pause;
        Ok(())
    }

    /// Whether node `i`'s process is running (not paused, not exited).
    pub fn running(&mut self, i: usize) -> bool {
        let slot = &mut self.nodes[i];
        match slot.proc.as_mut() {
            Some(p) => p.exited().is_none() && !slot.paused,
            None => false,
        }
    }

    /// Nodes whose process exited on its own (a crash, or a deliberate stop on a fatal error), with
    /// their exit status; they are marked down.
    pub fn reap(&mut self) -> Vec<(usize, std::process::ExitStatus)> {
        let mut gone = Vec::new();
        for (i, slot) in self.nodes.iter_mut().enumerate() {
            if let Some(p) = slot.proc.as_mut()
                && let Some(status) = p.exited()
            {
                gone.push((i, status));
                slot.proc = None;
            }
        }
        gone
    }

    /// Gauge `name{shard="<shard>"}` as node `i` reports it on /metrics.
    async fn gauge(&self, i: usize, name: &str, shard: u32) -> Option<u64> {
        shard_gauge(&self.http, &self.http(i), name, shard).await
    }

    /// The leader of `shard` as node `i` reports it on /metrics (`None` while unknown or unreachable).
    pub async fn leader_seen(&self, i: usize, shard: u32) -> Option<usize> {
        let l = self.gauge(i, "cairn_shard_leader", shard).await?;
        (l != 0).then(|| l as usize - 1)
    }

    /// Waits until every running node has applied, in every shard, everything its leader had applied
    /// when the wait began: a restarted or wiped node holds the log again before the next fault.
    pub async fn caught_up(&mut self, leaders: &[usize], within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let live: Vec<usize> = (0..self.nodes.len()).filter(|i| self.running(*i)).collect();
        for (s, leader) in self.shards.clone().iter().zip(leaders) {
            let target = self
                .gauge(*leader, "cairn_raft_applied_index", s.id)
                .await
                .unwrap_or(0);
            for i in &live {
                loop {
                    let applied = self
                        .gauge(*i, "cairn_raft_applied_index", s.id)
                        .await
                        .unwrap_or(0);
                    if applied >= target {
                        break;
                    }
                    anyhow::ensure!(
                        Instant::now() < deadline,
                        "node-{} applied shard {} to {applied}, its leader to {target}, after {within:?}",
                        i + 1,
                        s.id
                    );
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Ok(())
    }

    /// The leader of `shard` that every running node agrees on, if they do.
    pub async fn agreed_leader(&mut self, shard: u32) -> Option<usize> {
        let live: Vec<usize> = (0..self.nodes.len()).filter(|i| self.running(*i)).collect();
        let mut agreed = None;
        for i in &live {
            let l = self.leader_seen(*i, shard).await?;
            if agreed.is_some_and(|a| a != l) {
                return None;
            }
            agreed = Some(l);
        }
        agreed.filter(|l| live.contains(l))
    }

    /// Waits until every running node agrees on a running leader of every shard, and has caught up
    /// with it ([`Cluster::caught_up`]); returns the leaders.
    pub async fn settled(&mut self, within: Duration) -> anyhow::Result<Vec<usize>> {
        let deadline = Instant::now() + within;
        loop {
            let mut leaders = Vec::new();
            for s in self.shards.clone() {
                match self.agreed_leader(s.id).await {
                    Some(l) => leaders.push(l),
                    None => break,
                }
            }
            if leaders.len() == self.shards.len() {
                self.caught_up(&leaders, deadline.saturating_duration_since(Instant::now()))
                    .await?;
                return Ok(leaders);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster did not agree on shard leaders within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
