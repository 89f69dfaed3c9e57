//! Cluster administration on the gRPC API (admin token): the Raft groups as a sequencer sees them
//! (`ClusterStatus`), moving a shard's leadership (`TransferLeader`), and adding and removing
//! sequencer nodes (`AddNode`, `RemoveNode`, every shard's group in turn). Each change is made by the
//! shard's leader: a request reaching another node is forwarded to it once.

use cairn_proto::metadata::FORWARDED_SHARD;
use std::time::Duration;

use cairn_proto::v1::{
    AddNodeRequest, AddShardRequest, AddShardResponse, ClusterSetting, ClusterStatusResponse, GroupStatus,
    ListSettingsResponse, MemberProgress, RemoveNodeRequest, SetSettingRequest, TransferLeaderRequest,
};
use cairn_sequencer::{Node, NodeId, ShardId};
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

    /// Where a request for `shard`'s leader goes: here, or (once: a forwarded request is not
    /// forwarded again) to the leader's API.
    fn route(&self, shard: ShardId, metadata: &MetadataMap) -> Result<Route<'_>, LogError> {
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        let leader = node.leader(shard);
        if leader == Some(node.id()) {
            return Ok(Route::Here(node));
        }
        match leader {
            Some(l) if metadata.get(FORWARDED_SHARD).is_none() => self.peer(l),
            _ => None,
        }
        .map(Route::There)
        .ok_or_else(|| LogError::Unavailable {
            reason: format!("no reachable leader for shard {shard}; retry"),
            leader: None,
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
        if node.leader(shard) == Some(to) {
            return Ok(());
        }
        let url = match self.route(shard, metadata)? {
            Route::Here(node) => return node.transfer_leader(shard, to).await.map_err(|e| self.seq_err(e)),
            Route::There(url) => url,
        };
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

    /// Adds a shard through the control group (`AddShard`).
    pub(crate) async fn add_shard(
        &self,
        metadata: &MetadataMap,
        req: AddShardRequest,
    ) -> Result<AddShardResponse, LogError> {
        self.auth.admin(metadata)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        let id = req.shard_id;
        if id == cairn_sequencer::CONTROL {
            return Err(LogError::Invalid(format!(
                "shard_id must be set, and not {}: that is the control group's",
                cairn_sequencer::CONTROL
            )));
        }
        if req.origin.is_empty() || req.vkey.is_empty() {
            return Err(LogError::Invalid(
                "origin and vkey must be set (`cairn keygen --origin <origin>` prints the vkey)".into(),
            ));
        }
        let kind = match req.kind.as_str() {
            "" | "opaque" if !req.base_url.is_empty() => {
                return Err(LogError::Invalid(
                    "base_url is for Sigstore shards (kind sigstore) only: an opaque shard is read under the read path's /logs/<id>".into(),
                ));
            }
            "" | "opaque" => cairn_store::ShardKind::Opaque,
            "sigstore" => {
                if req.base_url.is_empty() {
                    return Err(LogError::Invalid(format!(
                        "a Sigstore shard needs its base URL (base_url), e.g. https://{}: clients sign to <base_url>/api/v2/log/entries",
                        req.origin
                    )));
                }
                cairn_sigstore::trust::check_base_url(id, &req.origin, &req.base_url)
                    .map_err(LogError::Invalid)?;
                cairn_store::ShardKind::Sigstore
            }
            other => {
                return Err(LogError::Invalid(format!(
                    "kind {other:?} is unknown: opaque or sigstore"
                )));
            }
        };
        if let Some(s) = self
            .config
            .shards
            .iter()
            .find(|s| s.id == id || s.origin == req.origin)
        {
            return Err(LogError::Invalid(format!(
                "shard {} ({}) is in the configuration already",
                s.id, s.origin
            )));
        }
        let spec = cairn_sequencer::ShardSpec {
            shard: cairn_store::Shard {
                id,
                origin: req.origin,
                vkey: req.vkey,
            },
            kind,
            base_url: (!req.base_url.is_empty()).then(|| req.base_url.trim_end_matches('/').to_owned()),
            valid_from: (req.valid_from > 0).then_some(req.valid_from),
            valid_until: (req.valid_until > 0).then_some(req.valid_until),
        };
        node.add_shard(spec).await.map_err(|e| self.seq_err(e))?;
        let state = node
            .catalog()
            .into_iter()
            .find(|l| l.id == id)
            .map_or(cairn_store::Lifecycle::Planned, |l| l.state);
        Ok(AddShardResponse {
            state: state.as_str().into(),
            waiting_for: node.waiting_for(id).unwrap_or_default(),
        })
    }

    /// Archives a frozen shard of the control map (`ArchiveShard`).
    pub(crate) async fn archive_shard(&self, metadata: &MetadataMap, shard: ShardId) -> Result<(), LogError> {
        self.auth.admin(metadata)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        self.shard(shard)?;
        node.archive_shard(shard).await.map_err(|e| self.seq_err(e))
    }

    /// The cluster settings in effect on this node's sequencer (`ListSettings`).
    pub(crate) fn settings(&self, metadata: &MetadataMap) -> Result<ListSettingsResponse, LogError> {
        self.auth.admin(metadata)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        Ok(ListSettingsResponse {
            node_id: node.id(),
            settings: node
                .settings()
                .into_iter()
                .map(|s| ClusterSetting {
                    key: s.key.to_string(),
                    value: s.value,
                    recorded: s.recorded,
                    about: s.about.to_string(),
                })
                .collect(),
        })
    }

    /// Records (or unsets) a cluster setting through the control group (`SetSetting`).
    pub(crate) async fn set_setting(
        &self,
        metadata: &MetadataMap,
        req: SetSettingRequest,
    ) -> Result<(), LogError> {
        self.auth.admin(metadata)?;
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        let value = (!req.unset).then_some(req.value.as_str());
        node.set_setting(&req.key, value)
            .await
            .map_err(|e| self.seq_err(e))
    }

    /// The groups a membership request names: one shard's, or every group this sequencer hosts (the
    /// control group's and every shard's).
    /// A request one node forwarded to a group's leader names that one group, the control group's
    /// id 0 included.
    fn member_shards(&self, shard: ShardId, metadata: &MetadataMap) -> Result<Vec<ShardId>, LogError> {
        let node = self.node.as_ref().ok_or_else(no_sequencer)?;
        if shard == cairn_sequencer::CONTROL {
            if metadata.get(FORWARDED_SHARD).is_some() {
                return Ok(vec![shard]);
            }
            return Ok(node.group_ids());
        }
        self.shard(shard)?;
        Ok(vec![shard])
    }

    /// Adds a node to the groups of the requested shards, one after the other, each on its leader.
    pub(crate) async fn add_node(
        &self,
        metadata: &MetadataMap,
        req: AddNodeRequest,
    ) -> Result<Vec<ShardId>, LogError> {
        self.auth.admin(metadata)?;
        if req.node_id == 0 {
            return Err(LogError::Invalid(
                "node_id must be set (node ids start at 1)".into(),
            ));
        }
        if req.raft_addr.is_empty() {
            return Err(LogError::Invalid(
                "raft_addr must be set: the node's Raft address (host:port), as the sequencers reach it"
                    .into(),
            ));
        }
        let shards = self.member_shards(req.shard_id, metadata)?;
        self.each_shard(metadata, &shards, Change::Add(&req)).await?;
        Ok(shards)
    }

    /// Removes a node from the groups of the requested shards, one after the other, each on its
    /// leader.
    pub(crate) async fn remove_node(
        &self,
        metadata: &MetadataMap,
        req: RemoveNodeRequest,
    ) -> Result<Vec<ShardId>, LogError> {
        self.auth.admin(metadata)?;
        if req.node_id == 0 {
            return Err(LogError::Invalid(
                "node_id must be set (node ids start at 1)".into(),
            ));
        }
        let shards = self.member_shards(req.shard_id, metadata)?;
        self.each_shard(metadata, &shards, Change::Remove(req.node_id))
            .await?;
        Ok(shards)
    }

    /// The change on each of `shards` in turn; a failure stops there and says which groups changed.
    async fn each_shard(
        &self,
        metadata: &MetadataMap,
        shards: &[ShardId],
        change: Change<'_>,
    ) -> Result<(), LogError> {
        if let [shard] = shards {
            return self.change_member(metadata, *shard, change).await;
        }
        for (i, &shard) in shards.iter().enumerate() {
            self.change_member(metadata, shard, change).await.map_err(|e| {
                let done = &shards[..i];
                e.in_context(&if done.is_empty() {
                    format!("shard {shard}")
                } else {
                    format!("shard {shard} (shards {done:?} were changed; repeat the request to go on)")
                })
            })?;
        }
        Ok(())
    }

    /// One shard's membership change, on its leader. While leadership moves (an election, the
    /// balancer, or the removal of the leader itself) the change goes to the new leader, until
    /// [`MEMBERSHIP_DEADLINE`].
    async fn change_member(
        &self,
        metadata: &MetadataMap,
        shard: ShardId,
        change: Change<'_>,
    ) -> Result<(), LogError> {
        let deadline = tokio::time::Instant::now() + MEMBERSHIP_DEADLINE;
        loop {
            let result = match self.route(shard, metadata) {
                Ok(Route::Here(node)) => match change {
                    Change::Add(r) => node.add_member(shard, r.node_id, &r.raft_addr, CATCH_UP).await,
                    Change::Remove(id) => node.remove_member(shard, id).await,
                }
                .map_err(|e| self.seq_err(e)),
                Ok(Route::There(url)) => self.forward_change(&url, metadata, shard, change).await,
                Err(e) => Err(e),
            };
            match result {
                Err(LogError::Unavailable { .. } | LogError::LeaderUnreachable { .. })
                    if metadata.get(FORWARDED_SHARD).is_none() && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => return other,
            }
        }
    }

    async fn forward_change(
        &self,
        url: &str,
        metadata: &MetadataMap,
        shard: ShardId,
        change: Change<'_>,
    ) -> Result<(), LogError> {
        let mut client = self.client(url)?;
        match change {
            Change::Add(r) => {
                let body = AddNodeRequest {
                    shard_id: shard,
                    ..r.clone()
                };
                client
                    .add_node(Self::forward_request(shard, body, metadata))
                    .await
                    .map(drop)
            }
            Change::Remove(id) => {
                let body = RemoveNodeRequest {
                    node_id: id,
                    shard_id: shard,
                };
                client
                    .remove_node(Self::forward_request(shard, body, metadata))
                    .await
                    .map(drop)
            }
        }
        .map_err(LogError::from_forwarded)
    }
}

/// Where a request for a shard's leader goes.
enum Route<'a> {
    Here(&'a Node),
    There(String),
}

/// A membership change of one node.
#[derive(Clone, Copy)]
enum Change<'a> {
    Add(&'a AddNodeRequest),
    Remove(NodeId),
}

/// How long a membership request keeps following a shard's moving leadership.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a node being added may take to catch up with one shard as a learner.
const CATCH_UP: Duration = Duration::from_secs(120);
