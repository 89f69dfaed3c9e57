//! Starting and stopping a group on this node: hosting a shard's Raft group (or the control group)
//! with its proposer and publisher, and, for an archived shard, stopping it and deleting its replica.

use std::sync::Arc;

use openraft::Raft;
use tokio::sync::mpsc;

use super::NodeInner;
use crate::config::ShardConfig;
use crate::error::SequencerError;
use crate::network::NetworkFactory;
use crate::shard::HostedShard;
use crate::sm::StateMachine;
use crate::state::ShardSm;
use crate::store::LogStore;
use crate::types::ShardId;
use crate::{proposer, publisher};

impl NodeInner {
    /// At start: the control group, then the configured shards but those its log (as far as this
    /// replica has it) says were archived.
    pub(crate) async fn host_at_start(&self) -> Result<(), SequencerError> {
        let control = crate::control::CONTROL;
        if self.config.shards.iter().any(|sc| sc.shard.id == control) {
            return Err(SequencerError::Invalid(format!(
                "shard id {control} is the control group's; give the shard another id"
            )));
        }
        self.host(crate::control::control_config()).await?;
        let map = self.current_map();
        for sc in &self.config.shards {
            if map.is_archived(sc.shard.id) {
                // Deletes what a replica that was down during the archive still has.
                self.archive(sc.shard.id).await?;
                continue;
            }
            self.host(sc.clone()).await?;
        }
        Ok(())
    }

    /// Starts hosting a shard's Raft group (or the control group): its state machine, Raft instance,
    /// proposer and publisher. The group joins its cluster when a member initializes it or a leader
    /// replicates to it. Hosting a shard twice is a no-op.
    pub(crate) async fn host(&self, sc: ShardConfig) -> Result<(), SequencerError> {
        let id = sc.shard.id;
        if self.shards.get(id).is_some() {
            return Ok(());
        }
        if *self.stop.borrow() {
            return Err(SequencerError::Retryable("the node is shutting down".into()));
        }
        let sm = ShardSm::open(self.db.clone(), id).map_err(|e| SequencerError::Fatal(e.to_string()))?;
        let network = NetworkFactory {
            shard: id,
            from: self.id,
            channels: self.channels.clone(),
            partitions: self.partitions.clone(),
        };
        let raft = Raft::new(
            self.id,
            self.raft_config.clone(),
            network,
            LogStore::new(self.db.clone(), id),
            StateMachine(sm.clone()),
        )
        .await
        .map_err(|e| SequencerError::Fatal(e.to_string()))?;
        let (tx, rx) = mpsc::channel(self.config.batch.queue);
        let bucket = self.config.bucket.child(&sc.shard.prefix());
        let shard = Arc::new(HostedShard::new(sc, raft, sm, bucket, tx, self.recorders.clone()));
        if !self.shards.insert(shard.clone()) {
            // Started meanwhile by another caller; this instance shares its database keys, so stop it.
            let _ = shard.raft.shutdown().await;
            return Ok(());
        }
        if *self.stop.borrow() {
            // `shutdown` set the flag before it listed the groups to stop: it may have missed this one.
            let _ = shard.raft.shutdown().await;
            return Err(SequencerError::Retryable("the node is shutting down".into()));
        }
        // The control group takes no entries from clients and publishes nothing.
        if id != crate::control::CONTROL {
            // The group's tasks stop with the node, or alone when the shard is archived.
            let mut node_stop = self.stop.subscribe();
            let mut halted = shard.halt.subscribe();
            let group = Arc::downgrade(&shard);
            let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = node_stop.wait_for(|s| *s) => {
                        if let Some(g) = group.upgrade() {
                            g.halt.send_replace(true);
                        }
                    }
                    _ = halted.wait_for(|h| *h) => {}
                }
            }));
            tasks.push(tokio::spawn(proposer::run(
                shard.clone(),
                self.config.batch,
                rx,
                shard.halt.subscribe(),
            )));
            tasks.push(tokio::spawn(publisher::run(
                self.config.publishing(self.settings.clone()),
                shard.clone(),
                shard.halt.subscribe(),
            )));
        }
        Ok(())
    }

    /// Stops hosting an archived shard and deletes its replica (Raft log, vote, state machine) from the
    /// database: once per run of the node (after a restart, again, deleting what a node that was down
    /// during the archive still had).
    pub(crate) async fn archive(&self, id: ShardId) -> Result<(), SequencerError> {
        if id == crate::control::CONTROL {
            return Err(SequencerError::UnknownShard(id));
        }
        if self
            .archived
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&id)
        {
            return Ok(());
        }
        if let Some(s) = self.shards.remove(id) {
            s.halt.send_replace(true);
            s.raft
                .shutdown()
                .await
                .map_err(|e| SequencerError::Fatal(format!("stopping shard {id}'s group: {e}")))?;
        }
        crate::store::delete_shard(&self.db, id).map_err(|e| SequencerError::Fatal(e.to_string()))?;
        self.archived.lock().unwrap_or_else(|p| p.into_inner()).insert(id);
        tracing::info!(
            shard = id,
            "archived: its group stopped and its replica was deleted here"
        );
        Ok(())
    }
}
