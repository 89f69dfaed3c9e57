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
//! | `/`, `/explorer/*` | the web explorer (see [`explorer`]) | revalidated |
//! | `/metrics`, `/healthz`, `/readyz` | Prometheus text, liveness, readiness (503 with the reason when a shard's publisher in this process stopped, or storage is unreachable) | none |
//!
//! Paths are parsed strictly with `cairn-tlog`: anything else is a 400 or 404 with a short text body.

mod error;
pub mod explorer;
mod handlers;
mod metrics;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;

use cairn_store::{Bucket, Lifecycle, Shard, ShardId, ShardKind, TileCache};

pub use error::{ApiError, ConfigError};
pub use handlers::router;

/// Reports a shard's current state (for example from the sequencer's replicated state), or `None` to
/// keep the configured one.
pub type StateSource = Arc<dyn Fn(ShardId) -> Option<Lifecycle> + Send + Sync>;

/// What the sequencer in the same process knows of a shard, for `/readyz` and `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStatus {
    /// Shard id.
    pub id: ShardId,
    /// The shard's Raft leader as this node knows it.
    pub leader: Option<u64>,
    /// Set when the shard's publisher on this node stopped on a fatal error: the reason. `/readyz` is
    /// red while any shard has one.
    pub publishing_stopped: Option<String>,
}

/// Reports the status of every shard the process's sequencer hosts.
pub type StatusSource = Arc<dyn Fn() -> Vec<ShardStatus> + Send + Sync>;

/// Tile-server configuration.
#[derive(Clone)]
pub struct Config {
    /// Shards to serve, at their published layout prefixes.
    pub shards: Vec<Shard>,
    /// The log's object storage, at its root.
    pub bucket: Bucket,
    /// Tiles and bundles kept in memory (one cache can be shared with other readers in the process).
    pub cache: TileCache,
    /// How long a fetched checkpoint is reused before asking the store again.
    pub checkpoint_ttl: Duration,
    /// `max-age` for the checkpoint and other mutable responses.
    pub mutable_max_age: Duration,
    /// Configured state of every shard, where `live_state` does not say.
    pub default_state: Lifecycle,
    /// Live shard states for `shards.json`; without it the configured states are served.
    pub live_state: Option<StateSource>,
    /// The sequencer's view of its shards in this process, for `/readyz` and `/metrics`.
    pub status: Option<StatusSource>,
    /// What each shard logs, for `shards.json` (a shard not listed is opaque).
    pub kinds: BTreeMap<ShardId, ShardKind>,
    /// Start of each shard's validity window (Unix seconds), for `shards.json`.
    pub valid_from: BTreeMap<ShardId, u64>,
    /// Each Sigstore shard's base URL, for `shards.json` and the trust documents.
    pub base_urls: BTreeMap<ShardId, String>,
    /// The recorded end of a configured shard's validity (Unix seconds, once it was frozen), for
    /// `shards.json` and the trust documents.
    pub valid_until: Option<EndSource>,
    /// Whether a configured shard was archived (its groups stopped: object storage alone holds it),
    /// for `shards.json`.
    pub archived: Option<ArchivedSource>,
    /// Shards added while the process runs (the cluster's control group), listed and served beside
    /// `shards`.
    pub catalog: Option<cairn_store::Catalog>,
    /// Discovery documents built from the shards now (`/trusted_root.json`, ...).
    pub documents: Option<DocumentSource>,
    /// Metrics of other parts of the process (such as witness collection), appended to `/metrics`.
    pub extra_metrics: Vec<prometheus::Registry>,
}

/// Reports the recorded end of a shard's validity (Unix seconds), if any.
pub type EndSource = Arc<dyn Fn(ShardId) -> Option<u64> + Send + Sync>;

/// Reports whether a shard was archived.
pub type ArchivedSource = Arc<dyn Fn(ShardId) -> bool + Send + Sync>;

/// Builds the documents for a listing of the shards.
pub type BuildDocuments =
    Arc<dyn Fn(&[cairn_store::ShardListing]) -> Result<Vec<Document>, String> + Send + Sync>;

/// Documents that depend on the shards (the Sigstore trust documents list each Sigstore shard with
/// its window): built from `shards.json`'s listing when it changed, else served from the last build.
#[derive(Clone)]
pub struct DocumentSource {
    /// The paths it answers, e.g. `/trusted_root.json` (a path the build leaves out is a 404).
    pub paths: Vec<String>,
    /// The documents for a listing of the shards.
    pub build: BuildDocuments,
}

/// A document the read path serves at a fixed path.
#[derive(Clone, Debug)]
pub struct Document {
    /// Path, e.g. `/trusted_root.json`.
    pub path: String,
    /// Content type.
    pub content_type: &'static str,
    /// The bytes.
    pub body: Bytes,
}

impl Config {
    /// A configuration with a 256 MiB cache and a 1-second checkpoint refresh.
    pub fn new(shards: Vec<Shard>, bucket: Bucket) -> Self {
        Self {
            shards,
            bucket,
            cache: TileCache::new(256 << 20),
            checkpoint_ttl: Duration::from_secs(1),
            mutable_max_age: Duration::from_secs(2),
            default_state: Lifecycle::Active,
            live_state: None,
            status: None,
            kinds: BTreeMap::new(),
            valid_from: BTreeMap::new(),
            base_urls: BTreeMap::new(),
            valid_until: None,
            archived: None,
            catalog: None,
            documents: None,
            extra_metrics: Vec::new(),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<handlers::Inner>,
}

impl AppState {
    /// Builds the state (readers, metrics registry) from a configuration. Fails if a shard's verifier key
    /// does not parse.
    pub fn new(config: Config) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Arc::new(handlers::Inner::new(config)?),
        })
    }
}

/// Serves the read path on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serves `app` (the read path merged with other HTTP roles of the process) on `listener` (a
/// `TcpListener`, or an `Incoming` with TLS) until `shutdown`.
pub async fn serve_router(
    listener: impl Into<cairn_proto::tls::Incoming>,
    app: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(Listener(listener.into()), app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// axum's view of an [`Incoming`](cairn_proto::tls::Incoming).
struct Listener(cairn_proto::tls::Incoming);

impl axum::serve::Listener for Listener {
    type Io = cairn_proto::tls::Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.0.local_addr())
    }
}
