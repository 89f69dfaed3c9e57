//! The transport ceiling: a `cairn.v1.Log` server that answers `AddEntries` with well-formed results of
//! the same shape (shard, index, 32-byte leaf hash) without hashing, ordering or storing anything.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};

use cairn_proto::v1::log_server::{Log, LogServer};
use cairn_proto::v1::{
    AddEntriesRequest, AddEntriesResponse, EntryResult, FreezeShardRequest, FreezeShardResponse,
    GetCheckpointRequest, GetCheckpointResponse, GetConsistencyProofRequest, GetInclusionProofRequest,
    ListShardsRequest, ListShardsResponse, ProofResponse,
};
use futures::Stream;
use tonic::{Request, Response, Status, Streaming};

#[derive(Default)]
struct Ceiling {
    next: AtomicU64,
}

type Replies = Pin<Box<dyn Stream<Item = Result<AddEntriesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Log for Ceiling {
    async fn add_entries(
        &self,
        req: Request<AddEntriesRequest>,
    ) -> Result<Response<AddEntriesResponse>, Status> {
        let n = req.get_ref().entries.len() as u64;
        let first = self.next.fetch_add(n, Ordering::Relaxed);
        let results = (0..n)
            .map(|i| EntryResult {
                shard_id: 1,
                index: first + i,
                leaf_hash: vec![0; 32],
                ..Default::default()
            })
            .collect();
        Ok(Response::new(AddEntriesResponse { results }))
    }

    type AddEntriesStreamStream = Replies;

    async fn add_entries_stream(
        &self,
        _: Request<Streaming<AddEntriesRequest>>,
    ) -> Result<Response<Replies>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn get_checkpoint(
        &self,
        _: Request<GetCheckpointRequest>,
    ) -> Result<Response<GetCheckpointResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn get_inclusion_proof(
        &self,
        _: Request<GetInclusionProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn get_consistency_proof(
        &self,
        _: Request<GetConsistencyProofRequest>,
    ) -> Result<Response<ProofResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn list_shards(
        &self,
        _: Request<ListShardsRequest>,
    ) -> Result<Response<ListShardsResponse>, Status> {
        Ok(Response::new(ListShardsResponse::default()))
    }
    async fn freeze_shard(
        &self,
        _: Request<FreezeShardRequest>,
    ) -> Result<Response<FreezeShardResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn cluster_status(
        &self,
        _: Request<cairn_proto::v1::ClusterStatusRequest>,
    ) -> Result<Response<cairn_proto::v1::ClusterStatusResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn transfer_leader(
        &self,
        _: Request<cairn_proto::v1::TransferLeaderRequest>,
    ) -> Result<Response<cairn_proto::v1::TransferLeaderResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn add_node(
        &self,
        _: Request<cairn_proto::v1::AddNodeRequest>,
    ) -> Result<Response<cairn_proto::v1::AddNodeResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn remove_node(
        &self,
        _: Request<cairn_proto::v1::RemoveNodeRequest>,
    ) -> Result<Response<cairn_proto::v1::RemoveNodeResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn add_shard(
        &self,
        _: Request<cairn_proto::v1::AddShardRequest>,
    ) -> Result<Response<cairn_proto::v1::AddShardResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn archive_shard(
        &self,
        _: Request<cairn_proto::v1::ArchiveShardRequest>,
    ) -> Result<Response<cairn_proto::v1::ArchiveShardResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn find_entries(
        &self,
        _: Request<cairn_proto::v1::FindEntriesRequest>,
    ) -> Result<Response<cairn_proto::v1::FindEntriesResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn list_settings(
        &self,
        _: Request<cairn_proto::v1::ListSettingsRequest>,
    ) -> Result<Response<cairn_proto::v1::ListSettingsResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
    async fn set_setting(
        &self,
        _: Request<cairn_proto::v1::SetSettingRequest>,
    ) -> Result<Response<cairn_proto::v1::SetSettingResponse>, Status> {
        Err(Status::unimplemented("ceiling server"))
    }
}

/// Starts the ceiling server on a loopback port; returns its URL and a stop handle.
pub async fn start() -> anyhow::Result<(String, tokio::sync::oneshot::Sender<()>)> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    let service = LogServer::new(Ceiling::default()).max_decoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .initial_stream_window_size(Some(4 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                async move {
                    let _ = rx.await;
                },
            ),
    );
    Ok((format!("http://{addr}"), stop))
}
