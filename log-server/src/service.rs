//! The `cairn.v1.Log` service.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use cairn_proto::v1::log_client::LogClient;
use cairn_proto::v1::log_server::{Log, LogServer as LogService};
use cairn_proto::v1::{
    AddEntriesRequest, AddEntriesResponse, EntryResult, FreezeShardRequest, FreezeShardResponse,
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest, GetInclusionProofRequest,
    ListShardsRequest, ListShardsResponse, ProofResponse, Shard, Wait,
};
use cairn_sequencer::{Bucket, Node, SequencerError, ShardId};
use cairn_tlog::bundle::MAX_ENTRY_SIZE;
use cairn_tlog::checkpoint::Checkpoint;
use cairn_tlog::hash::{Hash, leaf_hash};
use cairn_tlog::note::Note;
use cairn_tlog::proof::{
    ProofError, TileMap, consistency_proof, consistency_tiles, inclusion_proof, inclusion_tiles,
};
use cairn_tlog::tile::{TileId, tile_width};
use futures::{Stream, StreamExt, future::try_join_all};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Auth;
use crate::error::{LEADER, LogError, is_unavailable};
use crate::{Backend, FORWARDED_SHARD, LogServerConfig, ShardMeta, route};

/// Largest message a forwarded reply or a client may need to decode: a `PUBLISHED` reply carries a
/// proof and a checkpoint per entry.
const MAX_REPLY: usize = 256 << 20;

/// The submission API. Cheap to clone.
#[derive(Clone)]
pub struct LogServer {
    inner: Arc<Inner>,
}

struct Inner {
    config: LogServerConfig,
    node: Option<Arc<Node>>,
    bucket: Bucket,
    auth: Auth,
    /// gRPC clients of peers, by URL.
    clients: Mutex<HashMap<String, LogClient<Channel>>>,
    /// Without a local node: the last URL that accepted a shard's writes.
    leaders: Mutex<HashMap<ShardId, String>>,
    /// Without a local node: shards a leader reported frozen.
    frozen: Mutex<BTreeSet<ShardId>>,
}

impl LogServer {
    /// The API over `backend` with `config`.
    pub fn new(config: LogServerConfig, backend: Backend) -> Self {
        Self {
            inner: Arc::new(Inner {
                auth: Auth::new(&config.auth),
                config,
                node: backend.node,
                bucket: backend.bucket,
                clients: Mutex::default(),
                leaders: Mutex::default(),
                frozen: Mutex::default(),
            }),
        }
    }

    /// The shards with their current state.
    pub fn shards(&self) -> Vec<(ShardMeta, bool)> {
        self.inner
            .config
            .shards
            .iter()
            .map(|s| (s.clone(), self.inner.is_frozen(s.id)))
            .collect()
    }
}

/// Checks a whole request before anything is appended.
fn validate(entries: &[Vec<u8>], limits: &crate::Limits) -> Result<(), LogError> {
    if entries.is_empty() {
        return Err(LogError::Invalid("the request has no entries".into()));
    }
    if entries.len() > limits.max_entries {
        return Err(LogError::Invalid(format!(
            "the request has {} entries; the limit is {} per request",
            entries.len(),
            limits.max_entries
        )));
    }
    let mut total = 0usize;
    for (i, e) in entries.iter().enumerate() {
        if e.is_empty() {
            return Err(LogError::Invalid(format!(
                "entry {i} is empty; entries are 1 to {MAX_ENTRY_SIZE} bytes"
            )));
        }
        if e.len() > MAX_ENTRY_SIZE {
            return Err(LogError::Invalid(format!(
                "entry {i} is {} bytes; the limit is {MAX_ENTRY_SIZE} bytes",
                e.len()
            )));
        }
        total += e.len();
    }
    if total > limits.max_bytes {
        return Err(LogError::Invalid(format!(
            "the request carries {total} bytes of entries; the limit is {} bytes per request",
            limits.max_bytes
        )));
    }
    Ok(())
}

fn proof_err(e: ProofError) -> LogError {
    match e {
        ProofError::IndexOutOfRange { .. } | ProofError::Sizes { .. } => LogError::Invalid(e.to_string()),
        other => LogError::Internal(format!("proof from published tiles: {other}")),
    }
}

/// The size of a signed checkpoint note (already trusted: it comes from our own store or sequencer).
fn checkpoint_size(note: &[u8]) -> Result<u64, LogError> {
    let note = Note::parse(note).map_err(|e| LogError::Internal(format!("stored checkpoint: {e}")))?;
    Checkpoint::parse(&note.text)
        .map(|c| c.size)
        .map_err(|e| LogError::Internal(format!("stored checkpoint: {e}")))
}

fn leader_hint(s: &Status) -> Option<String> {
    s.metadata()
        .get(LEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl Inner {
    fn shard(&self, id: ShardId) -> Result<&ShardMeta, LogError> {
        self.config
            .shards
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| LogError::NotFound(format!("unknown shard {id}")))
    }

    fn is_frozen(&self, id: ShardId) -> bool {
        match &self.node {
            Some(node) => node.frozen(id).unwrap_or(false),
            None => self.frozen.lock().map(|f| f.contains(&id)).unwrap_or(false),
        }
    }

    fn active(&self) -> Vec<ShardId> {
        let mut ids: Vec<ShardId> = self
            .config
            .shards
            .iter()
            .map(|s| s.id)
            .filter(|id| !self.is_frozen(*id))
            .collect();
        ids.sort_unstable();
        ids
    }

    fn peer(&self, id: u64) -> Option<String> {
        self.config.peers.get(&id).cloned()
    }

    fn seq_err(&self, e: SequencerError) -> LogError {
        LogError::from_sequencer(e, |id| self.peer(id))
    }

    fn client(&self, url: &str) -> Result<LogClient<Channel>, LogError> {
        let mut clients = self
            .clients
            .lock()
            .map_err(|_| LogError::Internal("client cache poisoned".into()))?;
        if let Some(c) = clients.get(url) {
            return Ok(c.clone());
        }
        let channel = Channel::from_shared(url.to_owned())
            .map_err(|e| LogError::Internal(format!("peer URL {url}: {e}")))?
            .connect_lazy();
        let client = LogClient::new(channel)
            .max_decoding_message_size(MAX_REPLY)
            .max_encoding_message_size(MAX_REPLY);
        clients.insert(url.to_owned(), client.clone());
        Ok(client)
    }

    async fn add_entries(
        &self,
        metadata: &MetadataMap,
        req: AddEntriesRequest,
    ) -> Result<AddEntriesResponse, LogError> {
        let wait = req.wait();
        let entries = req.entries;
        validate(&entries, &self.config.limits)?;
        let forwarded = match metadata.get(FORWARDED_SHARD) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|s| s.parse::<ShardId>().ok())
                    .ok_or_else(|| LogError::Invalid(format!("{FORWARDED_SHARD} must be a shard id")))?,
            ),
        };
        self.auth.writer(metadata, entries.len())?;
        let active = self.active();
        let n = entries.len();
        let mut groups: BTreeMap<ShardId, (Vec<usize>, Vec<Vec<u8>>)> = BTreeMap::new();
        for (i, entry) in entries.into_iter().enumerate() {
            let shard = route(leaf_hash(&entry).as_bytes(), &active)
                .ok_or_else(|| LogError::Frozen("no shard accepts entries: every shard is frozen".into()))?;
            if forwarded.is_some_and(|f| f != shard) {
                // The forwarding server routed with another set of active shards (a freeze in between).
                return Err(LogError::Unavailable {
                    reason: "the set of active shards changed; retry".into(),
                    leader: None,
                });
            }
            let g = groups.entry(shard).or_default();
            g.0.push(i);
            g.1.push(entry);
        }
        let outs = try_join_all(
            groups
                .into_iter()
                .map(|(shard, (positions, entries))| async move {
                    let results = self
                        .append_group(shard, entries, wait, metadata, forwarded.is_some())
                        .await?;
                    if results.len() != positions.len() {
                        return Err(LogError::Internal(format!(
                            "shard {shard} answered {} results for {} entries",
                            results.len(),
                            positions.len()
                        )));
                    }
                    Ok::<_, LogError>(positions.into_iter().zip(results).collect::<Vec<_>>())
                }),
        )
        .await?;
        let mut results = vec![EntryResult::default(); n];
        for (i, r) in outs.into_iter().flatten() {
            results[i] = r;
        }
        Ok(AddEntriesResponse { results })
    }

    async fn append_group(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
        forwarded: bool,
    ) -> Result<Vec<EntryResult>, LogError> {
        if let Some(node) = &self.node {
            return match node.leader(shard) {
                Some(l) if l == node.id() => self.append_local(node, shard, entries, wait).await,
                Some(l) if !forwarded => {
                    let url = self.peer(l).ok_or_else(|| LogError::Unavailable {
                        reason: format!(
                            "the leader of shard {shard} (node {l}) is not among the configured peers"
                        ),
                        leader: None,
                    })?;
                    self.forward(&url, shard, entries, wait, metadata).await
                }
                leader => Err(LogError::Unavailable {
                    reason: format!("no leader for shard {shard} here (election in progress?)"),
                    leader: leader.and_then(|l| self.peer(l)),
                }),
            };
        }
        if forwarded {
            return Err(LogError::Unavailable {
                reason: "this server runs no sequencer".into(),
                leader: None,
            });
        }
        self.forward_to_leader(shard, entries, wait, metadata).await
    }

    async fn append_local(
        &self,
        node: &Node,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
    ) -> Result<Vec<EntryResult>, LogError> {
        let appended = node.append(shard, entries).await.map_err(|e| self.seq_err(e))?;
        let mut results: Vec<EntryResult> = appended
            .iter()
            .map(|a| EntryResult {
                shard_id: shard,
                index: a.index,
                leaf_hash: a.leaf_hash.to_vec(),
                duplicate: a.duplicate,
                ..Default::default()
            })
            .collect();
        if wait == Wait::Published {
            let Some(last) = appended.iter().map(|a| a.index).max() else {
                return Ok(results);
            };
            let note = node
                .wait_published(shard, last, self.config.publish_timeout)
                .await
                .map_err(|e| self.seq_err(e))?;
            let size = checkpoint_size(&note)?;
            let indexes: Vec<u64> = appended.iter().map(|a| a.index).collect();
            let proofs = self.inclusion_proofs(shard, size, &indexes).await?;
            for (r, proof) in results.iter_mut().zip(proofs) {
                r.inclusion_proof = proof.iter().map(|h| h.as_bytes().to_vec()).collect();
                r.checkpoint = note.clone();
            }
        }
        Ok(results)
    }

    /// `body` as a forwarded request for `shard`: the caller's token travels with it, and the marker
    /// tells the receiving server not to route or forward again.
    fn forward_request<T>(shard: ShardId, body: T, metadata: &MetadataMap) -> Request<T> {
        let mut req = Request::new(body);
        if let Some(auth) = metadata.get("authorization") {
            req.metadata_mut().insert("authorization", auth.clone());
        }
        req.metadata_mut()
            .insert(FORWARDED_SHARD, MetadataValue::from(shard));
        req
    }

    async fn forward(
        &self,
        url: &str,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
    ) -> Result<Vec<EntryResult>, LogError> {
        let mut client = self.client(url)?;
        let reply = client
            .add_entries(Self::forward_request(
                shard,
                AddEntriesRequest {
                    entries,
                    wait: wait as i32,
                },
                metadata,
            ))
            .await
            .map_err(LogError::Forwarded)?;
        Ok(reply.into_inner().results)
    }

    /// Without a local node: tries the last known leader, then each peer, following leader hints.
    async fn forward_to_leader(
        &self,
        shard: ShardId,
        entries: Vec<Vec<u8>>,
        wait: Wait,
        metadata: &MetadataMap,
    ) -> Result<Vec<EntryResult>, LogError> {
        let cached = self.leaders.lock().ok().and_then(|l| l.get(&shard).cloned());
        let mut candidates: VecDeque<String> = cached.into_iter().collect();
        candidates.extend(self.config.peers.values().cloned());
        let mut tried = BTreeSet::new();
        let mut last = LogError::Unavailable {
            reason: "no sequencer peers are configured".into(),
            leader: None,
        };
        while let Some(url) = candidates.pop_front() {
            if !tried.insert(url.clone()) {
                continue;
            }
            match self.forward(&url, shard, entries.clone(), wait, metadata).await {
                Ok(results) => {
                    if let Ok(mut l) = self.leaders.lock() {
                        l.insert(shard, url);
                    }
                    return Ok(results);
                }
                Err(LogError::Forwarded(s)) if s.code() == tonic::Code::FailedPrecondition => {
                    return Err(LogError::Forwarded(s));
                }
                Err(LogError::Forwarded(s)) if is_unavailable(&s) => {
                    if s.message().contains("frozen")
                        && let Ok(mut f) = self.frozen.lock()
                    {
                        f.insert(shard);
                    }
                    if let Some(hint) = leader_hint(&s) {
                        candidates.push_front(hint);
                    }
                    last = LogError::Forwarded(s);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// Inclusion proofs for `indexes` in the published tree of `size`, from the stored tiles.
    async fn inclusion_proofs(
        &self,
        shard: ShardId,
        size: u64,
        indexes: &[u64],
    ) -> Result<Vec<Vec<Hash>>, LogError> {
        let mut tiles = BTreeSet::new();
        for &i in indexes {
            tiles.extend(inclusion_tiles(size, i).map_err(proof_err)?);
        }
        let src = self.fetch_tiles(shard, tiles, size).await?;
        indexes
            .iter()
            .map(|&i| inclusion_proof(&src, size, i).map_err(proof_err))
            .collect()
    }

    /// Fetches hash tiles as of the published size `latest` (a full or wider tile serves every smaller
    /// tree).
    async fn fetch_tiles(
        &self,
        shard: ShardId,
        tiles: BTreeSet<TileId>,
        latest: u64,
    ) -> Result<TileMap, LogError> {
        let bucket = self.bucket.child(&self.shard(shard)?.bucket_prefix);
        let bucket = &bucket;
        let fetched = try_join_all(tiles.into_iter().map(|t| async move {
            let width = tile_width(latest, t.level, t.index)
                .ok_or_else(|| LogError::Internal(format!("tile {t} is not in the tree of size {latest}")))?;
            let id = TileId { width, ..t };
            let data = bucket
                .get(&id.path())
                .await
                .map_err(|e| LogError::Unavailable {
                    reason: format!("object storage: {e}"),
                    leader: None,
                })?
                .ok_or_else(|| LogError::Internal(format!("published tile {id} is missing from storage")))?;
            Ok::<_, LogError>(((t.level, t.index), data.to_vec()))
        }))
        .await?;
        Ok(fetched.into_iter().collect())
    }

    async fn checkpoint(&self, shard: ShardId) -> Result<Vec<u8>, LogError> {
        let meta = self.shard(shard)?;
        self.bucket
            .child(&meta.bucket_prefix)
            .get("checkpoint")
            .await
            .map_err(|e| LogError::Unavailable {
                reason: format!("object storage: {e}"),
                leader: None,
            })?
            .map(|b| b.to_vec())
            .ok_or_else(|| LogError::NotFound(format!("shard {shard} has no published checkpoint yet")))
    }

    async fn published_size(&self, shard: ShardId) -> Result<u64, LogError> {
        checkpoint_size(&self.checkpoint(shard).await?)
    }

    fn unpublished(size: u64, latest: u64) -> LogError {
        LogError::NotFound(format!(
            "tree size {size} is not published; the latest checkpoint has size {latest}"
        ))
    }

    async fn get_inclusion_proof(&self, req: GetInclusionProofRequest) -> Result<Vec<Hash>, LogError> {
        let latest = self.published_size(req.shard_id).await?;
        if req.tree_size > latest {
            return Err(Self::unpublished(req.tree_size, latest));
        }
        if req.index >= req.tree_size {
            return Err(LogError::Invalid(format!(
                "index {} is not below tree size {}",
                req.index, req.tree_size
            )));
        }
        let tiles = inclusion_tiles(req.tree_size, req.index).map_err(proof_err)?;
        let src = self
            .fetch_tiles(req.shard_id, tiles.into_iter().collect(), latest)
            .await?;
        inclusion_proof(&src, req.tree_size, req.index).map_err(proof_err)
    }

    async fn get_consistency_proof(&self, req: GetConsistencyProofRequest) -> Result<Vec<Hash>, LogError> {
        let latest = self.published_size(req.shard_id).await?;
        if req.second_size > latest {
            return Err(Self::unpublished(req.second_size, latest));
        }
        if req.first_size == 0 || req.first_size > req.second_size {
            return Err(LogError::Invalid(format!(
                "sizes must satisfy 0 < first_size <= second_size; got {} and {}",
                req.first_size, req.second_size
            )));
        }
        let tiles = consistency_tiles(req.first_size, req.second_size).map_err(proof_err)?;
        let src = self
            .fetch_tiles(req.shard_id, tiles.into_iter().collect(), latest)
            .await?;
        consistency_proof(&src, req.first_size, req.second_size).map_err(proof_err)
    }

    async fn freeze(&self, metadata: &MetadataMap, shard: ShardId) -> Result<(), LogError> {
        self.auth.admin(metadata)?;
        self.shard(shard)?;
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
            .map_err(LogError::Forwarded)?;
        if let Ok(mut f) = self.frozen.lock() {
            f.insert(shard);
        }
        Ok(())
    }
}

fn hashes(v: Vec<Hash>) -> ProofResponse {
    ProofResponse {
        hashes: v.iter().map(|h| h.as_bytes().to_vec()).collect(),
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
        let n = body.entries.len();
        let span = tracing::debug_span!("add_entries", entries = n);
        let _ = span.enter();
        Ok(Response::new(self.inner.add_entries(&metadata, body).await?))
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
        let checkpoint = self.inner.checkpoint(req.get_ref().shard_id).await?;
        Ok(Response::new(GetCheckpointResponse { checkpoint }))
    }

    async fn get_inclusion_proof(
        &self,
        req: Request<GetInclusionProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        Ok(Response::new(hashes(
            self.inner.get_inclusion_proof(req.into_inner()).await?,
        )))
    }

    async fn get_consistency_proof(
        &self,
        req: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        Ok(Response::new(hashes(
            self.inner.get_consistency_proof(req.into_inner()).await?,
        )))
    }

    async fn list_shards(
        &self,
        _req: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        let shards = self
            .shards()
            .into_iter()
            .map(|(s, frozen)| Shard {
                id: s.id,
                origin: s.origin,
                vkey: s.vkey,
                state: if frozen { "frozen" } else { "active" }.into(),
                prefix: s.http_prefix,
            })
            .collect();
        Ok(Response::new(ListShardsResponse { shards }))
    }

    async fn freeze_shard(
        &self,
        req: Request<FreezeShardRequest>,
    ) -> Result<Response<FreezeShardResponse>, Status> {
        let (metadata, _, body) = req.into_parts();
        self.inner.freeze(&metadata, body.shard_id).await?;
        tracing::info!(shard = body.shard_id, "shard frozen");
        Ok(Response::new(FreezeShardResponse {}))
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
    let log = LogService::new(server)
        .max_decoding_message_size(limits.max_bytes.saturating_mul(4).max(64 << 20))
        .max_encoding_message_size(MAX_REPLY);
    Ok(tonic::service::Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(log))
}

/// Serves `routes` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            // `tcp_nodelay` on the builder only applies to sockets tonic binds itself.
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            shutdown,
        )
        .await
}
