//! The shards hosted on this node and the cluster map: what every part of
//! the node looks up (the router, delivery, compaction, status, metrics),
//! kept apart from the request path so that those parts need not reach
//! through the router.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use intake_cluster::Groups;
use intake_core::{ClusterMap, Complaint, META_GROUP, slot_of};
use intake_storage::{NodeId, Raft, ShardId, StateMachine};
use openraft::Instant as _;
use openraft::async_runtime::WatchReceiver;
use parking_lot::RwLock;

use crate::batcher::{Batcher, NodeBacklog};
use crate::config::AdmissionConfig;
use crate::dispatch_board::DispatchBoard;

#[derive(Clone)]
pub struct Registry {
    node_id: NodeId,
    groups: Groups,
    state_machines: Arc<DashMap<ShardId, StateMachine>>,
    batchers: Arc<DashMap<ShardId, Batcher>>,
    map: Arc<RwLock<Arc<ClusterMap>>>,
    backlog: Arc<NodeBacklog>,
    /// What this node's delivery tasks report, for `ClusterStatus`.
    dispatch: DispatchBoard,
}

impl Registry {
    pub fn new(node_id: NodeId, groups: Groups, map: ClusterMap) -> Self {
        Self {
            node_id,
            groups,
            state_machines: Default::default(),
            batchers: Default::default(),
            map: Arc::new(RwLock::new(Arc::new(map))),
            backlog: Default::default(),
            dispatch: Default::default(),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Registers a group hosted here; data shards get a batcher.
    pub fn add_shard(&self, shard: ShardId, sm: StateMachine, raft: Raft, admission: &AdmissionConfig) {
        self.state_machines.insert(shard, sm);
        if shard != META_GROUP {
            self.batchers.insert(
                shard,
                Batcher::start(shard, raft, admission.clone(), self.backlog.clone()),
            );
        }
    }

    /// Forgets a group no longer hosted here (its batcher stops once the
    /// last handle is gone).
    pub fn remove_shard(&self, shard: ShardId) {
        self.state_machines.remove(&shard);
        self.batchers.remove(&shard);
    }

    pub fn state_machine(&self, shard: ShardId) -> Option<StateMachine> {
        self.state_machines.get(&shard).map(|s| s.value().clone())
    }

    pub fn batcher(&self, shard: ShardId) -> Option<Batcher> {
        self.batchers.get(&shard).map(|b| b.value().clone())
    }

    /// This node's Raft handle for `shard`, if it hosts one.
    pub fn raft(&self, shard: ShardId) -> Option<Raft> {
        self.groups.get(shard)
    }

    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn dispatch_board(&self) -> &DispatchBoard {
        &self.dispatch
    }

    /// Complaints queued on this node's leaders, all shards.
    pub fn backlog(&self) -> usize {
        self.backlog.queued()
    }

    /// Complaints queued per shard led here: (shard, emergency, ordinary).
    pub fn queues(&self) -> Vec<(ShardId, usize, usize)> {
        let mut v: Vec<_> = self
            .batchers
            .iter()
            .map(|b| {
                let (e, o) = b.value().queued();
                (*b.key(), e, o)
            })
            .collect();
        v.sort();
        v
    }

    /// The current cluster map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.read().clone()
    }

    /// Installs `map` if it is newer than the current one.
    pub fn update_map(&self, map: ClusterMap) -> bool {
        let mut guard = self.map.write();
        if map.version > guard.version {
            *guard = Arc::new(map);
            true
        } else {
            false
        }
    }

    /// Whether `shard` is one of the cluster's data shards (not the meta
    /// group, not a number the map does not know): the only groups public
    /// requests may reach.
    pub fn is_data_shard(&self, shard: ShardId) -> bool {
        shard != META_GROUP && self.map().placement(shard).is_some()
    }

    /// The shard of a complaint, by (district, slot of its key).
    pub fn shard_for(&self, complaint: &Complaint) -> Option<ShardId> {
        self.map()
            .shard_for(&complaint.district, slot_of(&complaint.idempotency_key))
    }

    /// The leader of `shard` as this node's replica knows it, if any.
    pub fn known_leader(&self, shard: ShardId) -> Option<NodeId> {
        let raft = self.raft(shard)?;
        let metrics = raft.metrics();
        metrics.borrow_watched().current_leader
    }

    /// Whether this node's replica of `shard` leads it but has had no
    /// acknowledgement from a quorum for longer than `silence`: the node is
    /// cut off from its peers (or they stalled), so what it proposed waits
    /// on the network, not on load. openraft stops taking new proposals at
    /// such a leader once its lease (the maximum election timeout) lapses;
    /// this tells the ones taken before that apart.
    pub fn leads_without_quorum(&self, shard: ShardId, silence: Duration) -> bool {
        let Some(raft) = self.raft(shard) else {
            return false;
        };
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        if m.current_leader != Some(self.node_id) {
            return false;
        }
        // Never acknowledged (a new or single-voter leader): not known to
        // be cut off.
        m.last_quorum_acked
            .as_ref()
            .is_some_and(|acked| acked.elapsed() > silence)
    }

    /// The leader of `shard` and its address, when this node's replica
    /// knows it is another node.
    pub fn leader_elsewhere(&self, shard: ShardId) -> Option<(NodeId, String)> {
        let raft = self.raft(shard)?;
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader.filter(|id| *id != self.node_id)?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// Voters of a shard hosted elsewhere, preferred leader first; `None`
    /// for a shard the map does not know.
    pub fn remote_voters(&self, shard: ShardId) -> Option<Vec<(NodeId, String)>> {
        let map = self.map();
        let p = map.placement(shard)?;
        Some(
            p.voters
                .iter()
                .filter(|v| **v != self.node_id)
                .filter_map(|v| map.members.get(v).map(|a| (*v, a.clone())))
                .collect(),
        )
    }
}
