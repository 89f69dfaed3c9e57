//! Raft transport over gRPC: one `cairn.raft.v1.Raft` service per node carries every shard's messages.
//!
//! Payloads are openraft's own types encoded with postcard. A [`Partitions`] table lets tests cut links
//! between nodes (both directions, at the sender and at the receiver) without touching sockets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cairn_proto::raft::raft_client::RaftClient;
use cairn_proto::raft::raft_server;
use cairn_proto::raft::{RaftReply, RaftRequest};
use futures::future::BoxFuture;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::types::{NodeId, ShardId, TypeConfig};

/// Links a node refuses to use: Raft messages to or from these nodes are dropped.
#[derive(Default, Debug)]
pub struct Partitions {
    blocked: RwLock<HashSet<NodeId>>,
}

impl Partitions {
    /// Stops talking to `peer`.
    pub fn block(&self, peer: NodeId) {
        self.blocked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer);
    }

    /// Talks to every peer again.
    pub fn heal(&self) {
        self.blocked.write().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn is_blocked(&self, peer: NodeId) -> bool {
        self.blocked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&peer)
    }
}

/// Lazily connected gRPC channels, one per peer address, shared by every shard's Raft group.
#[derive(Clone, Default)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, Channel>>>,
    /// TLS to peers (mutual), when the node has it.
    tls: Option<cairn_proto::tls::Connector>,
}

impl Channels {
    /// Channels over TLS with `tls`, or plain TCP without.
    pub fn new(tls: Option<cairn_proto::tls::Connector>) -> Self {
        Self {
            by_addr: Arc::default(),
            tls,
        }
    }

    pub(crate) fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get(addr) {
            return Ok(c.clone());
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10));
        let channel = match &self.tls {
            Some(tls) => endpoint.connect_with_connector_lazy(tls.clone()),
            None => endpoint.connect_lazy(),
        };
        map.insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }
}

/// Creates connections from one node to its peers for one shard's Raft group.
#[derive(Clone)]
pub struct NetworkFactory {
    /// The shard whose messages this factory carries.
    pub shard: ShardId,
    /// The sending node.
    pub from: NodeId,
    /// Shared channels.
    pub channels: Channels,
    /// Test-controlled partitions.
    pub partitions: Arc<Partitions>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Connection;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Connection {
        Connection {
            factory: self.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// A connection to one peer for one shard.
pub struct Connection {
    factory: NetworkFactory,
    target: NodeId,
    addr: String,
}

type RpcResult<T, E> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl Connection {
    async fn call<Req, Resp, E>(
        &mut self,
        method: Method,
        req: &Req,
        option: &RPCOption,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        if self.factory.partitions.is_blocked(self.target) {
            return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::other(
                "partitioned",
            ))));
        }
        let payload = postcard::to_allocvec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self
            .factory
            .channels
            .get(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = RaftClient::new(channel)
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20);
        let mut request = Request::new(RaftRequest {
            shard: self.factory.shard,
            from: self.factory.from,
            payload,
        });
        request.set_timeout(option.hard_ttl());
        let reply = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply
            .map_err(|s| RPCError::Unreachable(Unreachable::new(&std::io::Error::other(s.to_string()))))?;
        let result: Result<Resp, RaftError<NodeId, E>> = postcard::from_bytes(&reply.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

enum Method {
    Append,
    Vote,
    Snapshot,
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>, openraft::error::Infallible> {
        self.call(Method::Vote, &rpc, &option).await
    }
}

/// Finds the local Raft instance of a shard.
pub trait RaftRegistry: Send + Sync + 'static {
    /// The Raft group of `shard` on this node, if hosted.
    fn raft(&self, shard: ShardId) -> Option<Raft<TypeConfig>>;
    /// Links this node refuses.
    fn partitions(&self) -> &Partitions;
    /// Answers a `Campaign` request (leader placement) for `shard`: a postcard payload in, the
    /// postcard reply out.
    fn campaign(&self, shard: ShardId, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
    /// Answers `Describe`: this node's identity (`membership::Identity`), postcard-encoded.
    fn describe(&self) -> Result<Vec<u8>, Status>;
    /// Answers `Control`: appends a peer's operation to the control log if this node leads the control
    /// group (`control::Op` in, its result out, postcard-encoded).
    fn control(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<Vec<u8>, Status>>;
}

/// The gRPC server side of the Raft transport.
pub struct RaftService<R> {
    registry: Arc<R>,
}

impl<R: RaftRegistry> RaftService<R> {
    /// A service dispatching to the shards in `registry`.
    pub fn new(registry: Arc<R>) -> raft_server::RaftServer<Self> {
        raft_server::RaftServer::new(Self { registry })
            .max_decoding_message_size(256 << 20)
            .max_encoding_message_size(256 << 20)
    }

    fn open<T: DeserializeOwned>(&self, req: Request<RaftRequest>) -> Result<(Raft<TypeConfig>, T), Status> {
        let req = req.into_inner();
        if self.registry.partitions().is_blocked(req.from) {
            return Err(Status::unavailable("partitioned"));
        }
        let raft = self
            .registry
            .raft(req.shard)
            .ok_or_else(|| Status::not_found(format!("shard {} is not hosted here", req.shard)))?;
        let rpc = postcard::from_bytes(&req.payload)
            .map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))?;
        Ok((raft, rpc))
    }
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let payload = postcard::to_allocvec(result).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl<R: RaftRegistry> raft_server::Raft for RaftService<R> {
    async fn append_entries(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, AppendEntriesRequest<TypeConfig>) = self.open(req)?;
        reply(&raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, VoteRequest<NodeId>) = self.open(req)?;
        reply(&raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let (raft, rpc): (_, InstallSnapshotRequest<TypeConfig>) = self.open(req)?;
        reply(&raft.install_snapshot(rpc).await)
    }

    async fn campaign(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        if self.registry.partitions().is_blocked(req.from) {
            return Err(Status::unavailable("partitioned"));
        }
        let payload = self.registry.campaign(req.shard, req.payload).await?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn describe(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        if self.registry.partitions().is_blocked(req.get_ref().from) {
            return Err(Status::unavailable("partitioned"));
        }
        let payload = self.registry.describe()?;
        Ok(Response::new(RaftReply { payload }))
    }

    async fn control(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        if self.registry.partitions().is_blocked(req.from) {
            return Err(Status::unavailable("partitioned"));
        }
        let payload = self.registry.control(req.payload).await?;
        Ok(Response::new(RaftReply { payload }))
    }
}
