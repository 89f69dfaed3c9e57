//! Starting the servers under test: the embedded default, or a 3-node cluster on loopback.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::Context;

/// What to start.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Topology {
    /// `cairn serve` with no configuration: one node, one shard.
    Embedded,
    /// Three sequencer nodes, one shard, on loopback.
    Cluster3,
    /// Three sequencer nodes and three shards on loopback; measured once each node leads one shard
    /// (leader placement).
    Cluster3x3,
    /// The same with leader placement off and every shard's leadership moved to node 1: the layout
    /// before leader placement, for comparison.
    Cluster3x3Packed,
}

/// Running servers; stopped (SIGTERM) by [`Spawned::stop`] or killed on drop.
pub struct Spawned {
    children: Vec<Child>,
    /// gRPC URL of the first node.
    pub grpc: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn serve(bin: &Path, dir: &Path, args: &[String]) -> anyhow::Result<(Child, String)> {
    let mut child = Command::new(bin)
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env(
            "CAIRN_LOG",
            std::env::var("CAIRN_LOG").unwrap_or_else(|_| "warn,openraft=error".into()),
        )
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.strip_prefix("cairn serving: ") {
            let grpc = rest
                .split(' ')
                .find_map(|kv| kv.strip_prefix("grpc="))
                .ok_or_else(|| anyhow::anyhow!("no grpc address in {line:?}"))?;
            // Keep draining stdout so the server never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines {});
            return Ok((child, format!("http://{grpc}")));
        }
    }
    anyhow::bail!("cairn serve exited before listening")
}

/// Starts `topology` with the `cairn` binary `bin` (default: next to this executable).
pub async fn start(topology: Topology, bin: Option<PathBuf>) -> anyhow::Result<Spawned> {
    let bin = match bin {
        Some(b) => b,
        None => std::env::current_exe()?
            .parent()
            .ok_or_else(|| anyhow::anyhow!("no executable directory"))?
            .join("cairn"),
    };
    let dir = tempfile::tempdir()?;
    let local = |s: &str| vec![s.to_owned()];
    let mut children = Vec::new();
    let grpc = match topology {
        Topology::Embedded => {
            let mut args = local("--data-dir");
            args.push(dir.path().join("data").display().to_string());
            for flag in ["--grpc-addr", "--http-addr", "--raft-addr"] {
                args.push(flag.into());
                args.push("127.0.0.1:0".into());
            }
            let (c, g) = serve(&bin, dir.path(), &args)?;
            children.push(c);
            g
        }
        Topology::Cluster3 | Topology::Cluster3x3 | Topology::Cluster3x3Packed => {
            let shards = if matches!(topology, Topology::Cluster3) {
                1
            } else {
                3
            };
            let tuning = if matches!(topology, Topology::Cluster3x3Packed) {
                "[tuning]\nbalance_leaders_ms = 0\n\n"
            } else {
                ""
            };
            let ports: Vec<(u16, u16, u16)> = (0..3)
                .map(|_| Ok((free_port()?, free_port()?, free_port()?)))
                .collect::<anyhow::Result<_>>()?;
            let mut common = String::new();
            for (i, (g, _, r)) in ports.iter().enumerate() {
                common.push_str(&format!(
                    "[[peers]]\nid = {}\nraft = \"127.0.0.1:{r}\"\ngrpc = \"http://127.0.0.1:{g}\"\n\n",
                    i + 1
                ));
            }
            for id in 1..=shards {
                let origin = format!("bench.cairn/{id}");
                let key = dir.path().join(format!("shard-{id}.key"));
                let out = Command::new(&bin)
                    .args(["keygen", "--origin", &origin, "--out"])
                    .arg(&key)
                    .output()?;
                anyhow::ensure!(out.status.success(), "keygen failed");
                let vkey = String::from_utf8(out.stdout)?.trim().to_owned();
                common.push_str(&format!(
                    "[[shards]]\nid = {id}\norigin = \"{origin}\"\nkey_file = \"{}\"\nvkey = \"{vkey}\"\n\n",
                    key.display()
                ));
            }
            let store = dir.path().join("bucket");
            let mut first = None;
            for (i, (g, h, r)) in ports.iter().enumerate() {
                let node = dir.path().join(format!("node-{}", i + 1));
                std::fs::create_dir_all(&node)?;
                let config = format!(
                    "node_id = {}\ndata_dir = \"{}\"\ngrpc_addr = \"127.0.0.1:{g}\"\nhttp_addr = \"127.0.0.1:{h}\"\n\
                     raft_addr = \"127.0.0.1:{r}\"\nstore = \"file://{}\"\n\n{tuning}{common}",
                    i + 1,
                    node.display(),
                    store.display()
                );
                let path = node.join("cairn.toml");
                std::fs::write(&path, config)?;
                let (c, g) = serve(&bin, &node, &["--config".into(), path.display().to_string()])?;
                children.push(c);
                first.get_or_insert(g);
            }
            first.ok_or_else(|| anyhow::anyhow!("no node"))?
        }
    };
    let spawned = Spawned {
        children,
        grpc,
        _dir: dir,
    };
    // On an error the servers are killed (dropping `spawned`) before the directory goes.
    ready(&spawned.grpc, topology).await?;
    Ok(spawned)
}

/// Ready means a leader accepts writes (one entry through the retrying client), and the shard
/// leaders are where the topology wants them.
async fn ready(grpc: &str, topology: Topology) -> anyhow::Result<()> {
    let mut client = cairn_client::LogClient::new(grpc)?;
    client
        .submit(
            vec![b"cairn-bench warm-up".to_vec()],
            cairn_client::Wait::Sequenced,
        )
        .await
        .context("the servers under test did not accept a first entry")?;
    match topology {
        Topology::Cluster3x3 => wait_for_spread_leaders(grpc, 3).await?,
        Topology::Cluster3x3Packed => {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            for shard in 1..=3 {
                // A leader elected moments ago asks to retry.
                while let Err(e) = client.transfer_leader(shard, 1).await {
                    anyhow::ensure!(
                        std::time::Instant::now() < deadline,
                        "shard {shard} could not be moved to node 1: {e}"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
            eprintln!("every shard led by node 1");
        }
        _ => {}
    }
    Ok(())
}

/// Waits until `shards` shards have leaders on as many different nodes (leader placement runs in
/// every node, every 2 s by default).
async fn wait_for_spread_leaders(grpc: &str, shards: usize) -> anyhow::Result<()> {
    let mut client = cairn_client::LogClient::new(grpc)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = client.cluster_status().await?;
        let mut leaders: Vec<u64> = status
            .groups
            .iter()
            .map(|g| g.leader)
            .filter(|l| *l != 0)
            .collect();
        leaders.sort_unstable();
        leaders.dedup();
        if leaders.len() == shards {
            eprintln!(
                "leaders spread: {:?}",
                status
                    .groups
                    .iter()
                    .map(|g| (g.shard_id, g.leader))
                    .collect::<Vec<_>>()
            );
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "shard leaders did not spread over the nodes within 60 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

impl Spawned {
    /// SIGTERM to every server, then waits for them.
    pub fn stop(mut self) {
        for c in &mut self.children {
            let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
