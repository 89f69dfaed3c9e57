//! The `cairn.v1.Log` service: the gRPC edge (one span per call) over the write path ([`crate::write`]),
//! forwarding ([`crate::forward`]) and reads ([`crate::read`]).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cairn_proto::metadata::FORWARDED_SHARD;
use cairn_proto::v1::log_client::LogClient;
use cairn_proto::v1::log_server::{Log, LogServer as LogService};
use cairn_proto::v1::{
    AddEntriesRequest, AddEntriesResponse, AddNodeRequest, AddNodeResponse, AddShardRequest,
    AddShardResponse, ArchiveShardRequest, ArchiveShardResponse, ClusterStatusRequest, ClusterStatusResponse,
    FindEntriesRequest, FindEntriesResponse, FoundEntry, FreezeShardRequest, FreezeShardResponse,
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest, GetInclusionProofRequest,
    ListSettingsRequest, ListSettingsResponse, ListShardsRequest, ListShardsResponse, ProofResponse,
    RemoveNodeRequest, RemoveNodeResponse, SetSettingRequest, SetSettingResponse, TransferLeaderRequest,
    TransferLeaderResponse,
};
use cairn_sequencer::{Node, SequencerError, ShardId};
use cairn_store::{Bucket, Lifecycle, Shard, ShardKind, ShardListing, TileReader, unix_now};
use futures::{Stream, StreamExt};
use tonic::metadata::MetadataMap;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::auth::Auth;
use crate::error::LogError;
use crate::metrics::ApiMetrics;
use crate::{Backend, LogServerConfig};

/// Largest message a forwarded reply or a client may need to decode: a `PUBLISHED` reply carries a
/// proof and a checkpoint per entry.
pub(crate) const MAX_REPLY: usize = 256 << 20;

/// The submission API. Cheap to clone.
#[derive(Clone)]
pub struct LogServer {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) metrics: ApiMetrics,
    pub(crate) config: LogServerConfig,
    pub(crate) node: Option<Arc<Node>>,
    /// Each shard's published log, verified against its key (made on first use).
    pub(crate) readers: Mutex<HashMap<ShardId, Arc<TileReader<Bucket>>>>,
    /// Where the shards publish, and the tile cache proofs read through.
    bucket: Bucket,
    cache: cairn_store::TileCache,
    pub(crate) auth: Auth,
    /// gRPC clients of peers, by URL.
    pub(crate) clients: Mutex<HashMap<String, LogClient<Channel>>>,
    /// Without a local node: the last URL that accepted a shard's writes.
    pub(crate) leaders: Mutex<HashMap<ShardId, String>>,
    /// Without a local node: shards a leader reported frozen.
    pub(crate) frozen: Mutex<BTreeSet<ShardId>>,
    /// The active shards of each kind as this server saw them change.
    routing: Mutex<HashMap<&'static str, Routing>>,
}

/// The active shards of one kind, and the sets before them that were replaced less than the reroute
/// grace ago.
#[derive(Default)]
struct Routing {
    current: Vec<ShardId>,
    /// Earlier sets, each with the moment it stopped being current; oldest first.
    past: VecDeque<(std::time::Instant, Vec<ShardId>)>,
}

impl LogServer {
    /// The API over `backend` with `config`. Fails if a shard's verifier key does not parse.
    pub fn new(config: LogServerConfig, backend: Backend) -> Result<Self, LogError> {
        let mut readers = HashMap::new();
        for s in &config.shards {
            readers.insert(s.id, Arc::new(new_reader(&backend.bucket, &backend.cache, s)?));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                auth: Auth::new(&config.auth),
                config,
                node: backend.node,
                readers: Mutex::new(readers),
                bucket: backend.bucket,
                cache: backend.cache,
                clients: Mutex::default(),
                leaders: Mutex::default(),
                frozen: Mutex::default(),
                routing: Mutex::default(),
                metrics: ApiMetrics::default(),
            }),
        })
    }

    /// Request counters and latency histograms of both write APIs.
    pub fn metrics(&self) -> &ApiMetrics {
        &self.inner.metrics
    }

    /// The shards with their current state.
    pub fn shards(&self) -> Vec<ShardListing> {
        self.inner.listings()
    }
}

/// A reader of `shard`'s published log. Every request reads the stored checkpoint afresh (as the read
/// path's short TTL would otherwise hide a just-published one); tiles come from the cache.
fn new_reader(
    bucket: &Bucket,
    cache: &cairn_store::TileCache,
    s: &Shard,
) -> Result<TileReader<Bucket>, LogError> {
    let key = s
        .verifier()
        .map_err(|e| LogError::Invalid(format!("shard {}: verifier key: {e}", s.id)))?;
    Ok(TileReader::new(bucket.child(&s.prefix()), key, cache.clone())
        .with_checkpoint_ttl(std::time::Duration::ZERO))
}

impl Inner {
    pub(crate) fn new_reader(&self, s: &Shard) -> Result<TileReader<Bucket>, LogError> {
        new_reader(&self.bucket, &self.cache, s)
    }

    /// Every shard: the configured ones, then those added at runtime, with their state now.
    pub(crate) fn listings(&self) -> Vec<ShardListing> {
        let mut out: Vec<ShardListing> = self
            .config
            .shards
            .iter()
            .map(|s| {
                let state = if self.is_frozen(s.id) {
                    Lifecycle::Frozen
                } else {
                    Lifecycle::Active
                };
                let mut listing = ShardListing::new(s.clone(), self.kind(s.id), state);
                listing.valid_from = self.config.valid_from.get(&s.id).copied();
                listing.valid_until = match &self.node {
                    Some(n) => n.valid_until(s.id),
                    None => self.listed_by_sequencers(s.id).and_then(|l| l.valid_until),
                };
                listing.base_url = self.config.base_urls.get(&s.id).cloned();
                listing.archived = self.is_archived(s.id);
                listing
            })
            .collect();
        if let Some(catalog) = &self.config.catalog {
            let added: Vec<ShardListing> = catalog
                .shards()
                .into_iter()
                .filter(|l| !out.iter().any(|c| c.id == l.id))
                .collect();
            out.extend(added);
        }
        out
    }

    /// A shard added at runtime.
    fn added(&self, id: ShardId) -> Option<ShardListing> {
        let catalog = self.config.catalog.as_ref()?;
        catalog.shards().into_iter().find(|l| l.id == id)
    }

    pub(crate) fn shard(&self, id: ShardId) -> Result<Shard, LogError> {
        if let Some(s) = self.config.shards.iter().find(|s| s.id == id) {
            return Ok(s.clone());
        }
        self.added(id)
            .map(|l| l.shard)
            .ok_or_else(|| LogError::NotFound(format!("unknown shard {id}")))
    }

    /// Whether `id` is an archived shard (its groups stopped; object storage holds it alone).
    pub(crate) fn is_archived(&self, id: ShardId) -> bool {
        if self.config.shards.iter().any(|s| s.id == id) {
            return match &self.node {
                Some(n) => n.archived(id),
                None => self.listed_by_sequencers(id).is_some_and(|l| l.archived),
            };
        }
        self.added(id).is_some_and(|l| l.archived)
    }

    /// A configured shard as the sequencers list it, for a server without one.
    fn listed_by_sequencers(&self, id: ShardId) -> Option<ShardListing> {
        self.config.configured_state.as_ref().and_then(|f| (f.0)(id))
    }

    pub(crate) fn is_frozen(&self, id: ShardId) -> bool {
        if !self.config.shards.iter().any(|s| s.id == id) {
            return self.added(id).is_some_and(|l| l.state == Lifecycle::Frozen);
        }
        match &self.node {
            Some(node) => node.frozen(id).unwrap_or(false),
            None => {
                self.frozen.lock().map(|f| f.contains(&id)).unwrap_or(false)
                    || self
                        .listed_by_sequencers(id)
                        .is_some_and(|l| l.state == Lifecycle::Frozen)
            }
        }
    }

    /// What `id` logs.
    pub(crate) fn kind(&self, id: ShardId) -> ShardKind {
        match self.config.kinds.get(&id) {
            Some(k) => *k,
            None if self.config.shards.iter().any(|s| s.id == id) => ShardKind::default(),
            None => self.added(id).map(|l| l.kind).unwrap_or_default(),
        }
    }

    /// The active shards of `kind`, in id order: where entries of that kind are routed. A shard added
    /// at runtime counts while it is active and its window holds now; a configured one while it is
    /// active (the start its listing gives may be a key file's time, which differs between nodes).
    pub(crate) fn active(&self, kind: ShardKind) -> Vec<ShardId> {
        // The clock first: see `routing`.
        let now = unix_now();
        self.active_in(&self.listings(), kind, now)
    }

    fn active_in(&self, listings: &[ShardListing], kind: ShardKind, now: u64) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = listings
            .iter()
            .filter(|l| {
                let configured = self.config.shards.iter().any(|s| s.id == l.id);
                l.kind == kind
                    && l.state == Lifecycle::Active
                    && (configured
                        || l.valid_from.is_none_or(|from| from <= now)
                            && l.valid_until.is_none_or(|until| now < until))
            })
            .map(|l| l.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Why no shard of `kind` takes entries: retryable while one is planned (its window is still
    /// to come, or it is being activated: a schedule's next shard at a window's boundary), final when
    /// every one is frozen.
    pub(crate) fn none_active(&self, kind: ShardKind) -> LogError {
        let planned: Vec<ShardId> = self
            .listings()
            .into_iter()
            .filter(|l| l.kind == kind && l.state == Lifecycle::Planned)
            .map(|l| l.id)
            .collect();
        if planned.is_empty() {
            return LogError::Frozen(format!(
                "no {} shard accepts entries: every one is frozen or none is configured",
                kind.as_str()
            ));
        }
        LogError::Unavailable {
            reason: format!(
                "no {} shard takes entries right now; shards {planned:?} are planned (see shards.json); retry",
                kind.as_str()
            ),
            leader: None,
        }
    }

    /// The active shards of `kind` (see [`Self::active`]), and the earlier sets of them within the
    /// reroute grace, newest first: where an earlier attempt of an entry may have landed. Those this
    /// server saw replaced, and those the shards' windows give (see [`crate::reroute`]).
    pub(crate) fn routing(&self, kind: ShardKind) -> (Vec<ShardId>, Vec<Vec<ShardId>>) {
        // The clock is read before the listing: a shard of the map is listed planned until its window
        // starts by the listing's own clock, so that clock must not be behind this one (read in the
        // other order across a second's boundary, the ending shard was out of its window and the next
        // one still planned: no shard active for an instant).
        let now = unix_now();
        let listings = self.listings();
        let active = self.active_in(&listings, kind, now);
        let mut derived = crate::reroute::sets_before_changes(
            &listings,
            kind,
            |id| self.config.shards.iter().any(|s| s.id == id),
            now,
            self.config.reroute_grace.as_secs(),
        );
        derived.retain(|set| *set != active);
        let Ok(mut all) = self.routing.lock() else {
            return (active, derived);
        };
        let r = all.entry(kind.as_str()).or_default();
        let now = std::time::Instant::now();
        if r.current != active {
            let old = std::mem::replace(&mut r.current, active.clone());
            if !old.is_empty() {
                r.past.push_back((now, old));
            }
        }
        while r
            .past
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > self.config.reroute_grace)
        {
            r.past.pop_front();
        }
        let mut past: Vec<Vec<ShardId>> = r.past.iter().rev().map(|(_, set)| set.clone()).collect();
        for set in derived {
            if !past.contains(&set) {
                past.push(set);
            }
        }
        (active, past)
    }

    /// The gRPC API URL of node `id`: as the sequencer here last heard it from the node (which covers
    /// nodes added at runtime and addresses that changed), else as configured.
    pub(crate) fn peer(&self, id: u64) -> Option<String> {
        self.node
            .as_ref()
            .and_then(|n| n.api_url(id))
            .or_else(|| self.config.peers.get(&id).cloned())
    }

    pub(crate) fn seq_err(&self, e: SequencerError) -> LogError {
        LogError::from_sequencer(e, |id| self.peer(id))
    }

    pub(crate) async fn freeze(&self, metadata: &MetadataMap, shard: ShardId) -> Result<(), LogError> {
        self.auth.admin(metadata)?;
        self.shard(shard)?;
        if self.is_archived(shard) {
            // Frozen for good already.
            return Ok(());
        }
        let forwarded = metadata.get(FORWARDED_SHARD).is_some();
        let leader_url = match &self.node {
            Some(node) => match node.leader(shard) {
                Some(l) if l == node.id() => {
                    return node.freeze(shard).await.map_err(|e| self.seq_err(e));
                }
                Some(l) if !forwarded => self.peer(l),
                _ => None,
            },
            None => self.config.peers.values().next().cloned(),
        };
        let url = leader_url.ok_or_else(|| LogError::Unavailable {
            reason: format!("no reachable leader for shard {shard}"),
            leader: None,
        })?;
        let req = Self::forward_request(shard, FreezeShardRequest { shard_id: shard }, metadata);
        self.client(&url)?
            .freeze_shard(req)
            .await
            .map_err(LogError::from_forwarded)?;
        if let Ok(mut f) = self.frozen.lock() {
            f.insert(shard);
        }
        Ok(())
    }
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<AddEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Log for LogServer {
    async fn add_entries(
        &self,
        req: Request<AddEntriesRequest>,
    ) -> Result<Response<AddEntriesResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let span = tracing::info_span!(
            "add_entries",
            entries = body.entries.len(),
            wait = ?body.wait(),
            otel.kind = "server"
        );
        crate::trace::continue_from(&span, &metadata);
        Ok(Response::new(
            self.inner.add_entries(&metadata, body).instrument(span).await?,
        ))
    }

    type AddEntriesStreamStream = ResponseStream;

    async fn add_entries_stream(
        &self,
        req: Request<Streaming<AddEntriesRequest>>,
    ) -> Result<Response<ResponseStream>, Status> {
        let (metadata, _, inbound) = req.into_parts();
        let metadata = Arc::new(metadata);
        let inner = self.inner.clone();
        let window = inner.config.stream_window.max(1);
        let out = inbound
            .map(move |r| {
                let inner = inner.clone();
                let metadata = metadata.clone();
                async move {
                    match r {
                        Ok(req) => inner.add_entries(&metadata, req).await.map_err(Status::from),
                        Err(s) => Err(s),
                    }
                }
            })
            .buffered(window);
        Ok(Response::new(Box::pin(out)))
    }

    async fn get_checkpoint(
        &self,
        req: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        let shard = req.get_ref().shard_id;
        let checkpoint = self
            .inner
            .checkpoint(shard)
            .instrument(tracing::info_span!("get_checkpoint", shard))
            .await?;
        Ok(Response::new(GetCheckpointResponse { checkpoint }))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<GetInclusionProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        let req = req.into_inner();
        let span = tracing::info_span!(
            "get_inclusion_proof",
            shard = req.shard_id,
            size = req.tree_size,
            index = req.index
        );
        Ok(Response::new(
            self.inner.get_inclusion_proof(req).instrument(span).await?.into(),
        ))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        let req = req.into_inner();
        let span = tracing::info_span!(
            "get_consistency_proof",
            shard = req.shard_id,
            size1 = req.first_size,
            size2 = req.second_size
        );
        Ok(Response::new(
            self.inner
                .get_consistency_proof(req)
                .instrument(span)
                .await?
                .into(),
        ))
    }

    async fn list_shards(
        &self,
        _req: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let shards = self.shards().into_iter().map(Into::into).collect();
        Ok(Response::new(ListShardsResponse { shards }))
    }

    async fn freeze_shard(
        &self,
        req: Request<FreezeShardRequest>,
    ) -> Result<Response<FreezeShardResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        self.inner
            .freeze(&metadata, body.shard_id)
            .instrument(tracing::info_span!("freeze_shard", shard = body.shard_id))
            .await?;
        tracing::info!(shard = body.shard_id, "shard frozen");
        Ok(Response::new(FreezeShardResponse {}))
    }

    async fn add_shard(&self, req: Request<AddShardRequest>) -> Result<Response<AddShardResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let (id, origin) = (body.shard_id, body.origin.clone());
        let span = tracing::info_span!("add_shard", shard = id, %origin);
        let reply = self.inner.add_shard(&metadata, body).instrument(span).await?;
        tracing::info!(shard = id, %origin, state = %reply.state, "shard added");
        Ok(Response::new(reply))
    }

    async fn list_settings(
        &self,
        req: Request<ListSettingsRequest>,
    ) -> Result<Response<ListSettingsResponse>, Status> {
        Ok(Response::new(self.inner.settings(req.metadata())?))
    }

    async fn set_setting(
        &self,
        req: Request<SetSettingRequest>,
    ) -> Result<Response<SetSettingResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let (key, value) = (body.key.clone(), (!body.unset).then(|| body.value.clone()));
        self.inner
            .set_setting(&metadata, body)
            .instrument(tracing::info_span!("set_setting", %key))
            .await?;
        tracing::info!(%key, value = ?value, "cluster setting recorded");
        Ok(Response::new(SetSettingResponse {}))
    }

    async fn archive_shard(
        &self,
        req: Request<ArchiveShardRequest>,
    ) -> Result<Response<ArchiveShardResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let shard = body.shard_id;
        self.inner
            .archive_shard(&metadata, shard)
            .instrument(tracing::info_span!("archive_shard", shard))
            .await?;
        tracing::info!(shard, "shard archived");
        Ok(Response::new(ArchiveShardResponse {}))
    }

    async fn find_entries(
        &self,
        req: Request<FindEntriesRequest>,
    ) -> Result<Response<FindEntriesResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let span = tracing::info_span!(
            "find_entries",
            shard = body.shard_id,
            leaves = body.leaf_hashes.len(),
            otel.kind = "server"
        );
        let found = self.inner.find_entries(&metadata, body).instrument(span).await?;
        let results = found
            .into_iter()
            .map(|index| FoundEntry {
                found: index.is_some(),
                index: index.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(FindEntriesResponse { results }))
    }

    async fn cluster_status(
        &self,
        req: Request<ClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusResponse>, Status> {
        Ok(Response::new(self.inner.cluster_status(req.metadata())?))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let span = tracing::info_span!("transfer_leader", shard = body.shard_id, to = body.to_node);
        self.inner
            .transfer_leader(&metadata, body.shard_id, body.to_node)
            .instrument(span)
            .await?;
        tracing::info!(shard = body.shard_id, to = body.to_node, "shard leadership moved");
        Ok(Response::new(TransferLeaderResponse {}))
    }

    async fn add_node(&self, req: Request<AddNodeRequest>) -> Result<Response<AddNodeResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let (node, addr) = (body.node_id, body.raft_addr.clone());
        let span = tracing::info_span!("add_node", node, addr = %addr, shard = body.shard_id);
        let shards = self.inner.add_node(&metadata, body).instrument(span).await?;
        tracing::info!(node, %addr, ?shards, "node added");
        Ok(Response::new(AddNodeResponse { shards }))
    }

    async fn remove_node(
        &self,
        req: Request<RemoveNodeRequest>,
    ) -> Result<Response<RemoveNodeResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        let node = body.node_id;
        let span = tracing::info_span!("remove_node", node, shard = body.shard_id);
        let shards = self.inner.remove_node(&metadata, body).instrument(span).await?;
        tracing::info!(node, ?shards, "node removed");
        Ok(Response::new(RemoveNodeResponse { shards }))
    }
}

/// The gRPC services a log-server exposes: `cairn.v1.Log`, the standard health service (reporting
/// `cairn.v1.Log` as serving) and server reflection.
pub async fn grpc_routes(server: LogServer) -> Result<tonic::service::Routes, LogError> {
    let limits = server.inner.config.limits;
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<LogService<LogServer>>().await;
    // Both reflection versions: grpcurl speaks v1, many language runtimes still only v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(cairn_proto::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_err = |e: tonic_reflection::server::Error| LogError::Internal(format!("reflection: {e}"));
    let reflection_v1 = reflection().build_v1().map_err(reflection_err)?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_err)?;
    // tonic's own limit sits well above ours so that oversized requests get our INVALID_ARGUMENT
    // message naming the limit; beyond it tonic answers OUT_OF_RANGE without reading the body.
    let log = LogService::new(server.clone())
        .max_decoding_message_size(limits.max_bytes.saturating_mul(4).max(64 << 20))
        .max_encoding_message_size(MAX_REPLY);
    let rekor = crate::rekor::grpc_service(server.clone())?;
    let routes = tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(rekor)
        .add_service(log);
    Ok(tonic::service::Routes::from(
        routes.into_axum_router().layer(server.metrics().layer("grpc")),
    ))
}

/// Serves `routes` on `listener` (a `TcpListener`, or an `Incoming` with TLS) until `shutdown`
/// resolves.
pub async fn serve(
    listener: impl Into<cairn_proto::tls::Incoming>,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Error statuses are answers, not server failures: the API's errors are logged where they arise.
        .layer(
            tower_http::trace::TraceLayer::new_for_grpc()
                .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .add_routes(routes)
        // `Incoming` sets `TCP_NODELAY` (the builder's applies only to sockets tonic binds itself).
        .serve_with_incoming_shutdown(listener.into(), shutdown)
        .await
}
