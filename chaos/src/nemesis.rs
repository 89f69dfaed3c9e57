//! The nemesis: faults of every kind the harness injects, chosen from a seeded random stream so a run
//! can be replayed, each injected, held, and healed.

use std::io::Write;
use std::time::Duration;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde::Serialize;

use crate::cluster::Cluster;
use crate::s3::{Store, StoreFault};

/// A kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
pub enum Kind {
    /// SIGKILL a node, restart it after a while.
    Kill,
    /// SIGSTOP a node for longer than the election timeout, then SIGCONT.
    Pause,
    /// Drop every packet between a node and its peers (or between two nodes only), then heal.
    Partition,
    /// Fill a node's data disk, then free it (restarting the node if it stopped).
    DiskFull,
    /// SIGKILL a node, delete its data directory, restart it empty.
    Wipe,
    /// Delay every object-store request.
    StoreSlow,
    /// Answer a share of object-store requests `503 SlowDown`.
    StoreFail,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 7] = [
        Kind::Kill,
        Kind::Pause,
        Kind::Partition,
        Kind::DiskFull,
        Kind::Wipe,
        Kind::StoreSlow,
        Kind::StoreFail,
    ];

    /// Its name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Partition => "partition",
            Kind::DiskFull => "disk-full",
            Kind::Wipe => "wipe",
            Kind::StoreSlow => "store-slow",
            Kind::StoreFail => "store-fail",
        }
    }

    /// Whether it hits a node (rather than the object store).
    pub fn on_node(self) -> bool {
        !matches!(self, Kind::StoreSlow | Kind::StoreFail)
    }
}

/// One planned fault.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Kind.
    pub kind: Kind,
    /// The node (for node faults).
    pub node: usize,
    /// For a partition: the one peer cut off, or every peer when `None`.
    pub peer: Option<usize>,
    /// How long it is held.
    pub hold: Duration,
    /// Store faults: the delay, or the failing share per mille.
    pub level: u64,
}

impl Fault {
    /// Its target, as text.
    pub fn target(&self) -> String {
        match (self.kind.on_node(), self.peer) {
            (false, _) => format!("store ({})", self.level_text()),
            (true, Some(p)) => format!("node-{}|node-{}", self.node + 1, p + 1),
            (true, None) => format!("node-{}", self.node + 1),
        }
    }

    fn level_text(&self) -> String {
        match self.kind {
            Kind::StoreSlow => format!("+{} ms", self.level),
            _ => format!("{}% failing", self.level / 10),
        }
    }
}

/// Draws the next fault kind from `queue`, refilled with a shuffle of `kinds` when empty: every kind
/// comes once in each round, in a random order.
pub fn next_kind(rng: &mut StdRng, queue: &mut Vec<Kind>, kinds: &[Kind]) -> Kind {
    if queue.is_empty() {
        queue.extend_from_slice(kinds);
        queue.shuffle(rng);
    }
    queue.pop().unwrap_or(Kind::Kill)
}

/// Plans a fault of `kind`: its target is a shard leader (`leaders`) two times in three, else any
/// node.
pub fn plan(rng: &mut StdRng, kind: Kind, nodes: usize, leaders: &[usize]) -> Fault {
    let node = if !leaders.is_empty() && rng.random_range(0..3) < 2 {
        leaders[rng.random_range(0..leaders.len())]
    } else {
        rng.random_range(0..nodes)
    };
    let peer = (kind == Kind::Partition && rng.random_bool(0.3)).then(|| {
        let p = rng.random_range(0..nodes - 1);
        if p >= node { p + 1 } else { p }
    });
    let (hold, level) = match kind {
        Kind::Kill | Kind::Wipe => (rng.random_range(500..3000), 0),
        Kind::Pause => (rng.random_range(1000..4000), 0),
        Kind::Partition => (rng.random_range(1000..5000), 0),
        Kind::DiskFull => (rng.random_range(3000..12000), 0),
        Kind::StoreSlow => (rng.random_range(2000..6000), rng.random_range(200..1500)),
        Kind::StoreFail => (rng.random_range(2000..5000), rng.random_range(300..1000)),
    };
    Fault {
        kind,
        node,
        peer,
        hold: Duration::from_millis(hold),
        level,
    }
}

/// Starts `f`.
pub fn inject(f: &Fault, cluster: &mut Cluster, store: &Store) -> anyhow::Result<()> {
    match f.kind {
        Kind::Kill => cluster.kill(f.node),
        Kind::Pause => cluster.pause(f.node, true)?,
        Kind::Partition => {
            for p in peers(f, cluster.nodes.len()) {
                cluster.lab.cut(f.node, p)?;
            }
        }
        Kind::DiskFull => fill(&cluster.nodes[f.node].data.join(FILLER))?,
        Kind::Wipe => {
            cluster.kill(f.node);
            let data = &cluster.nodes[f.node].data;
            for e in std::fs::read_dir(data)? {
                let p = e?.path();
                if p.is_dir() {
                    std::fs::remove_dir_all(&p)?;
                } else {
                    std::fs::remove_file(&p)?;
                }
            }
        }
        Kind::StoreSlow => store.set(StoreFault::Slow(Duration::from_millis(f.level))),
        Kind::StoreFail => store.set(StoreFault::Failing(f.level as u32)),
    }
    Ok(())
}

/// Ends `f`. A node that is down afterwards (killed, or stopped on its own while the fault was on) is
/// started again by the caller.
pub fn heal(f: &Fault, cluster: &mut Cluster, store: &Store) -> anyhow::Result<()> {
    match f.kind {
        Kind::Kill | Kind::Wipe => {}
        Kind::Pause => {
            if cluster.nodes[f.node].paused {
                cluster.pause(f.node, false)?;
            }
        }
        Kind::Partition => {
            for p in peers(f, cluster.nodes.len()) {
                cluster.lab.mend(f.node, p)?;
            }
        }
        Kind::DiskFull => std::fs::remove_file(cluster.nodes[f.node].data.join(FILLER))?,
        Kind::StoreSlow | Kind::StoreFail => store.set(StoreFault::None),
    }
    Ok(())
}

fn peers(f: &Fault, nodes: usize) -> Vec<usize> {
    match f.peer {
        Some(p) => vec![p],
        None => (0..nodes).filter(|p| *p != f.node).collect(),
    }
}

/// The file that fills a node's disk.
const FILLER: &str = "chaos-filler";

/// Writes zeros to the file `path` until its filesystem is full.
pub fn fill(path: &std::path::Path) -> anyhow::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let block = vec![0u8; 1 << 20];
    loop {
        match f.write(&block) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => return Ok(()), // ENOSPC
            Err(e) => return Err(e.into()),
        }
    }
}
