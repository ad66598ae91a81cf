//! The Raft groups this node hosts, following the cluster map (issue 16).
//!
//! At start a node runs a group for every shard (and the meta group) the
//! map gives it, voter or learner; afterwards each newer map is reconciled:
//! a group the map now gives this node (a move's target) starts empty, as
//! a learner that its leader catches up; a group the map no longer gives it
//! (its replica moved away; the map drops a replica only after the group's
//! own membership has) is shut down and its data wiped. Reconciles run one
//! at a time.

use std::collections::BTreeSet;
use std::sync::Arc;

use intake_cluster::{GroupNetworkFactory, PeerPool};
use intake_core::ClusterMap;
use intake_storage::{NodeId, NodeStorage, Raft, ShardId};

use crate::config::AdmissionConfig;
use crate::node::NodeError;
use crate::registry::Registry;

#[derive(Clone)]
pub struct GroupHost {
    node: NodeId,
    storage: NodeStorage,
    config: Arc<openraft::Config>,
    peers: PeerPool,
    registry: Registry,
    admission: AdmissionConfig,
    one_at_a_time: Arc<tokio::sync::Mutex<()>>,
}

impl GroupHost {
    pub fn new(
        node: NodeId,
        storage: NodeStorage,
        config: Arc<openraft::Config>,
        peers: PeerPool,
        registry: Registry,
        admission: AdmissionConfig,
    ) -> Self {
        Self {
            node,
            storage,
            config,
            peers,
            registry,
            admission,
            one_at_a_time: Arc::default(),
        }
    }

    /// Starts this node's replica of `group` from what its storage holds.
    pub async fn start_group(&self, group: ShardId) -> Result<Raft, NodeError> {
        let log = self.storage.log_store(group)?;
        let sm = self.storage.state_machine(group)?;
        let network = GroupNetworkFactory::new(group, self.peers.clone());
        let raft = Raft::new(self.node, self.config.clone(), network, log, sm.clone())
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        self.registry.groups().insert(group, raft.clone());
        self.registry.add_shard(group, sm, raft.clone(), &self.admission);
        Ok(raft)
    }

    /// Starts the groups `map` gives this node and it does not run, and
    /// stops (and wipes) those it runs and `map` no longer gives it.
    pub async fn reconcile(&self, map: &ClusterMap) {
        let _one = self.one_at_a_time.lock().await;
        let want: BTreeSet<ShardId> = map.groups_on(self.node).into_iter().collect();
        let have: BTreeSet<ShardId> = self.registry.groups().shards().into_iter().collect();
        for group in want.difference(&have) {
            // A new learner: whatever an interrupted wipe left here goes
            // first, so the leader's snapshot lands on an empty replica.
            if let Err(e) = self.storage.wipe_shard_if_unvoted(*group) {
                tracing::error!(group, error = %e, "cannot clear an earlier replica's leftovers; not hosting the group");
                continue;
            }
            match self.start_group(*group).await {
                Ok(_) => tracing::info!(
                    group,
                    version = map.version,
                    "hosting a new replica (learner until caught up)"
                ),
                Err(e) => {
                    tracing::error!(group, error = %e, "cannot start a replica the map gives this node")
                }
            }
        }
        for group in have.difference(&want) {
            self.stop_group(*group).await;
        }
    }

    async fn stop_group(&self, group: ShardId) {
        let Some(raft) = self.registry.groups().remove(group) else {
            return;
        };
        self.registry.remove_shard(group);
        if let Err(e) = raft.shutdown().await {
            tracing::warn!(group, error = %e, "replica did not shut down cleanly");
        }
        match self.storage.wipe_shard(group).await {
            Ok(()) => tracing::info!(group, "replica moved away: stopped and its data removed"),
            Err(e) => {
                tracing::error!(group, error = %e, "replica stopped, but its data could not be removed")
            }
        }
    }
}
