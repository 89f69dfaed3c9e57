//! The sequencer of a `cairn serve` process, and the shards added at runtime as a process learns them
//! (from its sequencer, else from the cluster's).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use cairn_sequencer::{BatchConfig, Bucket, Node, NodeConfig, RaftTiming};
use tokio::sync::watch;

use super::Resolved;
use crate::config::{Role, ServeConfig};

/// Starts this process's sequencer node with the configured shards (initializing the groups on the
/// node that bootstraps them), and waits up to 10 s for their leaders on a single node.
pub(super) async fn start_sequencer(
    config: &ServeConfig,
    shards: &[Resolved],
    bucket: &Bucket,
    tls: Option<Arc<cairn_proto::tls::Tls>>,
    scheme: &str,
) -> anyhow::Result<Arc<Node>> {
    let mut nc = NodeConfig::new(
        config.node_id,
        config.data_dir.join("db"),
        config.raft_addr,
        bucket.clone(),
        shards.iter().map(|s| s.config.clone()).collect(),
    );
    nc.raft_advertise = config
        .peers
        .iter()
        .find(|p| p.id == config.node_id)
        .map(|p| p.raft.clone());
    let hb = config.tuning.heartbeat_ms.max(10);
    nc.timing = RaftTiming {
        heartbeat_ms: hb,
        election_min_ms: hb * 4,
        election_max_ms: hb * 8,
    };
    nc.batch = BatchConfig {
        max_entries: config.tuning.batch_max_entries.max(1),
        max_delay: Duration::from_millis(config.tuning.batch_max_delay_ms),
        ..BatchConfig::default()
    };
    nc.publish_interval = Duration::from_millis(config.tuning.publish_interval_ms.max(1));
    nc.archive_after = Duration::from_secs(config.tuning.reroute_grace_s);
    nc.balance_interval = (config.tuning.balance_leaders_ms > 0)
        .then(|| Duration::from_millis(config.tuning.balance_leaders_ms));
    nc.tls = tls.clone();
    let plan = match &config.schedule {
        Some(f) => Some(Arc::new(crate::schedule::Plan::load(f, &config.data_dir)?)),
        None => None,
    };
    nc.schedule = plan.clone().map(|p| p as Arc<dyn cairn_sequencer::Schedule>);
    nc.keys = Some(Arc::new(crate::schedule::Keys {
        dir: crate::config::KeyDir(config.data_path(config.key_dir.as_deref().unwrap_or(Path::new("keys")))),
        plan,
    }));
    nc.peer_urls = config
        .peers
        .iter()
        .map(|p| (p.id, (p.raft.clone(), p.grpc.clone())))
        .collect();
    // What this node tells peers that ask: its own `[[peers]]` entry, else its gRPC listener when
    // that names a host others can reach.
    nc.api_url = match config.peers.iter().find(|p| p.id == config.node_id) {
        Some(me) => Some(me.grpc.clone()),
        None if config.has(Role::Log) && !config.grpc_addr.ip().is_unspecified() => {
            Some(format!("{scheme}://{}", config.grpc_addr))
        }
        None => None,
    };
    let node = Node::start(nc).await?;
    if config.initializes() {
        let members: BTreeMap<u64, String> = if config.peers.is_empty() {
            BTreeMap::from([(config.node_id, node.advertise_addr())])
        } else {
            config.peers.iter().map(|p| (p.id, p.raft.clone())).collect()
        };
        node.initialize(members).await?;
    }
    if config.peers.len() <= 1 && !wait_for_leader(&node, Duration::from_secs(10)).await {
        tracing::warn!("no leader elected yet");
    }
    Ok(Arc::new(node))
}

pub(super) async fn wait_for_leader(node: &Node, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if node.shard_ids().iter().all(|s| node.leader(*s).is_some()) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The shards added at runtime, as the sequencer in this process has applied the control log.
pub(super) fn catalog(node: &Arc<Node>) -> cairn_store::Catalog {
    let weak: Weak<Node> = Arc::downgrade(node);
    cairn_store::Catalog::new(move || weak.upgrade().map(|n| n.catalog()).unwrap_or_default())
}

/// How often a process without a sequencer asks the sequencers for the shards added at runtime.
const CATALOG_EVERY: Duration = Duration::from_secs(1);

/// Every shard as the sequencers list it (configured ones with their state and end too), for a
/// process without a sequencer; empty until they first answer.
#[derive(Clone, Default)]
pub(super) struct PeerListing(Arc<std::sync::RwLock<Vec<cairn_store::ShardListing>>>);

impl PeerListing {
    /// Shard `id` as last listed.
    pub(super) fn get(&self, id: u32) -> Option<cairn_store::ShardListing> {
        self.0.read().ok()?.iter().find(|l| l.id == id).cloned()
    }
}

/// For a process without a sequencer (a stateless log-server or read path): the shards added at
/// runtime, and every shard's listing, as the sequencers among `peers` list them, asked every
/// [`CATALOG_EVERY`] until `stop`.
pub(super) fn catalog_from_peers(
    config: &ServeConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<(cairn_store::Catalog, PeerListing, tokio::task::JoinHandle<()>)> {
    let urls: Vec<String> = config.peers.iter().map(|p| p.grpc.clone()).collect();
    let configured: Vec<u32> = config.shards.iter().map(|s| s.id).collect();
    let known = PeerListing::default();
    // The cluster CA and this node's certificate, as for forwarded writes.
    let tls = config.tls.as_ref().map(|t| cairn_client::TlsOptions {
        ca: Some(t.ca.clone()),
        cert: Some(t.cert.clone()),
        key: Some(t.key.clone()),
    });
    let mut client = cairn_client::LogClient::with_servers_tls(&urls, tls.as_ref())?;
    let writer = known.clone();
    let task = tokio::spawn(async move {
        loop {
            match client.shards().await {
                Ok(shards) => {
                    let all: Vec<cairn_store::ShardListing> = shards
                        .into_iter()
                        .filter_map(|s| cairn_store::ShardListing::try_from(s).ok())
                        .collect();
                    if let Ok(mut k) = writer.0.write() {
                        *k = all;
                    }
                }
                Err(e) => tracing::debug!(error = %e, "asking the sequencers for the shard list"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(CATALOG_EVERY) => {}
            }
        }
    });
    let listing = known.clone();
    let catalog = cairn_store::Catalog::new(move || {
        let all = listing.0.read().map(|k| k.clone()).unwrap_or_default();
        all.into_iter().filter(|l| !configured.contains(&l.id)).collect()
    });
    Ok((catalog, known, task))
}
