//! Cluster administration on the gRPC API (admin token): the Raft groups as a sequencer sees them
//! (`ClusterStatus`), and moving a shard's leadership (`TransferLeader`, answered by the shard's
//! leader: a request reaching another node is forwarded to it once).

use cairn_proto::metadata::FORWARDED_SHARD;
use cairn_proto::v1::{ClusterStatusResponse, GroupStatus, MemberProgress, TransferLeaderRequest};
use cairn_sequencer::{NodeId, ShardId};
use tonic::metadata::MetadataMap;

use crate::error::LogError;
use crate::service::Inner;

fn no_sequencer() -> LogError {
    LogError::Unavailable {
        reason: "this server runs no sequencer; ask a sequencer node".into(),
        leader: None,
    }
}

impl Inner {
    pub(crate) fn cluster_status(&self, metadata: &MetadataMap) -> Result<ClusterStatusResponse, LogError> {
        self.auth.admin(metadata)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        let groups = node
            .shard_ids()
            .into_iter()
            .map(|id| {
                let g = node.group_status(id).map_err(|e| self.seq_err(e))?;
                Ok(GroupStatus {
                    shard_id: g.shard,
                    leader: g.leader.unwrap_or(0),
                    term: g.term,
                    voters: g.voters,
                    learners: g.learners,
                    joint: g.joint,
                    last_log_index: g.last_log_index.unwrap_or(0),
                    applied_index: g.applied_index.unwrap_or(0),
                    members: g
                        .matched
                        .into_iter()
                        .map(|(node_id, m)| MemberProgress {
                            node_id,
                            matched_index: m.unwrap_or(0),
                        })
                        .collect(),
                })
            })
            .collect::<Result<_, LogError>>()?;
        Ok(ClusterStatusResponse {
            node_id: node.id(),
            groups,
        })
    }

    pub(crate) async fn transfer_leader(
        &self,
        metadata: &MetadataMap,
        shard: ShardId,
        to: NodeId,
    ) -> Result<(), LogError> {
        self.auth.admin(metadata)?;
        self.shard(shard)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        let leader = node.leader(shard);
        if leader == Some(node.id()) {
            return node.transfer_leader(shard, to).await.map_err(|e| self.seq_err(e));
        }
        if leader == Some(to) {
            return Ok(());
        }
        let url = match leader {
            Some(l) if metadata.get(FORWARDED_SHARD).is_none() => self.peer(l),
            _ => None,
        }
        .ok_or_else(|| LogError::Unavailable {
            reason: format!("no reachable leader for shard {shard}; retry"),
            leader: None,
        })?;
        let req = Self::forward_request(
            shard,
            TransferLeaderRequest {
                shard_id: shard,
                to_node: to,
            },
            metadata,
        );
        self.client(&url)?
            .transfer_leader(req)
            .await
            .map_err(LogError::from_forwarded)?;
        Ok(())
    }
}
