//! `cairn-search`: search a log with proofs.
//!
//! An indexer follows logs through their read path (the monitor's follower: each checkpoint trusted
//! only when consistent with the last, every entry read and the root recomputed), so it runs beside
//! the log, on another machine, or on another operator's log alike. It keeps an [`Index`] in
//! RocksDB from artifact digest, certificate identity (SAN, and SAN with OIDC issuer) and
//! certificate or key fingerprint to (log, index), and resumes where it stopped after a crash.
//! [`router`] answers `GET /api/v1/search` with every match's entry and its inclusion proof against
//! a checkpoint the indexer trusts, so a client checks each result itself ([`http`] has the format).
//! A search proves that the entries it returns are in the log; it cannot prove that there are no
//! others.

pub mod http;
pub mod index;

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cairn_client::monitor::{Alert, Logs, Monitor, Trusted};

pub use http::{Searcher, router};
pub use index::{Index, IndexError, Query};

/// The indexer: its index and the checkpoints it trusts, shared with the search routes.
pub struct Indexer {
    index: Arc<Index>,
    trusted: Arc<RwLock<Vec<Trusted>>>,
    monitor: Monitor,
}

impl Indexer {
    /// An indexer of the Cairn read path `log_url` (every shard of its `shards.json`), keeping its
    /// index and progress under `dir`.
    pub fn open(log_url: &str, dir: &Path) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let index = Arc::new(Index::open(&dir.join("db")).map_err(|e| e.to_string())?);
        let mut monitor = Monitor::new(
            Logs::Cairn(log_url.to_owned()),
            None,
            None,
            &dir.join("follower.json"),
        )
        .map_err(|e| e.to_string())?;
        // Every posting durable before the follower records its entries as read: after a crash the
        // entries it had not recorded are read (and indexed) again, and none is left out.
        let synced = index.clone();
        monitor.before_save(move || synced.sync().map_err(|e| e.to_string()));
        let trusted = Arc::new(RwLock::new(monitor.trusted()));
        Ok(Self {
            index,
            trusted,
            monitor,
        })
    }

    /// The search routes' view of this indexer.
    pub fn searcher(&self) -> Searcher {
        Searcher::new(self.index.clone(), self.trusted.clone())
    }

    /// Reads every log up to its latest checkpoint once, indexing each new entry. Returns the
    /// number of entries read.
    pub async fn round(&mut self) -> Result<u64, String> {
        let index = self.index.clone();
        let mut visit = |log: &cairn_client::monitor::Followed, i: u64, body: &[u8]| -> Result<(), String> {
            if log.sigstore {
                index
                    .add(&log.key.to_string(), i, body)
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        };
        let mut alert = |a: &Alert| tracing::warn!(alert = %a.to_json(), "indexer: the log misbehaved; its checkpoint is not trusted");
        let round = self
            .monitor
            .round_visiting(&mut alert, &|_, _, _| {}, &mut visit)
            .await;
        // Also when the round stopped early: what was read is searchable.
        self.index.flush().map_err(|e| e.to_string())?;
        let round = round.map_err(|e| e.to_string())?;
        *self
            .trusted
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.monitor.trusted();
        Ok(round.entries)
    }

    /// Rounds every `interval` until `shutdown` resolves.
    pub async fn run(mut self, interval: Duration, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            match self.round().await {
                Ok(n) if n > 0 => tracing::debug!(entries = n, "indexed"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "indexer round failed; retrying"),
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
