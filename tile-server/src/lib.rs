//! `cairn-tile-server`: the read path. It serves each shard's files from object storage exactly as the
//! C2SP tlog-tiles layout names them, and adds what a static file server cannot: proofs computed from
//! tiles, a bounded in-memory cache, and metrics. It talks to the sequencer through object storage
//! only, so any number of them can run as a stateless fleet in front of the same bucket.
//!
//! Routes (`<p>` is a shard's prefix, `/logs/<id>`):
//!
//! | route | body | caching |
//! |---|---|---|
//! | `/shards.json` | the shard list | short |
//! | `<p>/checkpoint` | signed checkpoint | a few seconds |
//! | `<p>/tile/<L>/<N>[.p/<W>]` | hash tile | immutable |
//! | `<p>/tile/entries/<N>[.p/<W>]` | entry bundle (gzip when accepted) | immutable |
//! | `<p>/proof/inclusion/<size>/<index>` | base64 hashes, leaf to root | immutable |
//! | `<p>/proof/consistency/<size1>/<size2>` | base64 hashes | immutable |
//! | `<p>/proof/<index>` | c2sp tlog-proof against the current checkpoint | a few seconds |
//! | `/metrics`, `/healthz`, `/readyz` | Prometheus text, liveness, readiness | none |
//!
//! Paths are parsed strictly with `cairn-tlog`: anything else is a 400 or 404 with a short text body.

mod cache;
mod error;
mod handlers;
mod metrics;
pub mod testing;

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path;
use serde::Serialize;

pub use error::ApiError;
pub use handlers::router;

/// Lifecycle state of a shard, as shown to clients.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ShardState {
    /// Accepting entries.
    Active,
    /// Read-only forever; its checkpoint is final.
    Frozen,
}

/// A shard served by this server.
#[derive(Clone, Debug)]
pub struct ShardEntry {
    /// Shard id; served under `/logs/<id>`.
    pub id: u32,
    /// Checkpoint origin.
    pub origin: String,
    /// Verifier key string.
    pub vkey: String,
    /// Lifecycle state.
    pub state: ShardState,
    /// Where the shard's files are in the object store.
    pub store_prefix: Path,
}

/// Reports a shard's current state (for example from the sequencer's replicated state), or `None` to
/// keep the configured one.
pub type StateSource = Arc<dyn Fn(u32) -> Option<ShardState> + Send + Sync>;

/// Tile-server configuration.
#[derive(Clone)]
pub struct Config {
    /// Shards to serve.
    pub shards: Vec<ShardEntry>,
    /// The object store holding them.
    pub store: Arc<dyn ObjectStore>,
    /// Bytes of tiles and bundles kept in memory.
    pub cache_bytes: u64,
    /// How long a fetched checkpoint is reused before asking the store again.
    pub checkpoint_ttl: Duration,
    /// `max-age` for the checkpoint and other mutable responses.
    pub mutable_max_age: Duration,
    /// Live shard states for `shards.json`; without it the configured states are served.
    pub live_state: Option<StateSource>,
}

impl Config {
    /// A configuration with a 256 MiB cache and a 1-second checkpoint refresh.
    pub fn new(shards: Vec<ShardEntry>, store: Arc<dyn ObjectStore>) -> Self {
        Self {
            shards,
            store,
            cache_bytes: 256 << 20,
            checkpoint_ttl: Duration::from_secs(1),
            mutable_max_age: Duration::from_secs(2),
            live_state: None,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<handlers::Inner>,
}

impl AppState {
    /// Builds the state (cache, metrics registry) from a configuration.
    pub fn new(config: Config) -> Self {
        Self {
            inner: Arc::new(handlers::Inner::new(config)),
        }
    }
}

/// Serves the read path on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
