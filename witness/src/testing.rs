//! Test support (feature `testing`): an in-memory log that signs checkpoints and makes consistency
//! proofs (forks of it are logs with the same key and a different history), and a witness served on
//! loopback.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use cairn_tlog::{Checkpoint, Hash, Signer, TileBuilder, consistency_proof, leaf_hash};

use crate::protocol::AddCheckpoint;
use crate::server::{Witness, router};

/// An in-memory log: its tiles, and checkpoints signed by its key.
pub struct TestLog {
    /// The log's key (its name is the origin).
    pub signer: Signer,
    builder: TileBuilder,
    tiles: HashMap<(u8, u64), Vec<u8>>,
    tag: String,
}

impl TestLog {
    /// A log signed by `signer` whose entry `i` is `"common <i>"` below 3 and `"<tag> <i>"` from there:
    /// two logs with different tags are forks of each other after their first three entries.
    pub fn new(signer: Signer, tag: &str) -> Self {
        Self {
            signer,
            builder: TileBuilder::new(),
            tiles: HashMap::new(),
            tag: tag.to_owned(),
        }
    }

    /// The tree size.
    pub fn size(&self) -> u64 {
        self.builder.size()
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.builder.root()
    }

    /// Appends entries until the tree has `size` leaves; returns the signed checkpoint.
    pub fn grow_to(&mut self, size: u64) -> Vec<u8> {
        let start = self.builder.size();
        let leaves: Vec<Hash> = (start..size)
            .map(|i| {
                let tag = if i < 3 { "common" } else { self.tag.as_str() };
                leaf_hash(format!("{tag} {i}").as_bytes())
            })
            .collect();
        let completed = self.builder.extend(&leaves);
        for t in completed.into_iter().chain(self.builder.partial_tiles()) {
            self.tiles.insert((t.id.level, t.id.index), t.data);
        }
        self.note()
    }

    /// The signed checkpoint of the current tree.
    pub fn note(&self) -> Vec<u8> {
        Checkpoint::new(self.signer.name(), self.size(), self.root())
            .sign(&self.signer)
            .to_bytes()
    }

    /// The consistency proof from `old` to the current size.
    pub fn proof(&self, old: u64) -> Vec<Hash> {
        consistency_proof(&self.tiles, old, self.size()).expect("a proof within the tree")
    }

    /// An `add-checkpoint` request for the current checkpoint from `old`.
    pub fn request(&self, old: u64) -> AddCheckpoint {
        AddCheckpoint {
            old,
            proof: if old == 0 { Vec::new() } else { self.proof(old) },
            checkpoint: self.note(),
        }
    }
}

/// A witness served on loopback.
pub struct Served {
    /// Its URL (the submission prefix).
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    /// Stops the server and waits until every connection is closed and the witness is dropped (so its
    /// database can be opened again).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Serves `witness` on `addr` (port 0 picks one).
pub async fn spawn(witness: Arc<Witness>, addr: SocketAddr) -> std::io::Result<Served> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let app = router(witness);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Served {
        url: format!("http://{addr}"),
        addr,
        stop,
        task,
    })
}
