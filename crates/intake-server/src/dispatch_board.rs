//! What this node's delivery tasks report about the shards they lead, read
//! by `ClusterStatus` and `/metrics`: kept apart from the tasks, so that the
//! shard registry can hold it without depending on delivery.

use std::sync::Arc;

use dashmap::DashMap;
use intake_storage::ShardId;

/// What this node's dispatch tasks report about the shards they lead, for
/// `ClusterStatus`.
#[derive(Clone, Default)]
pub struct DispatchBoard {
    shards: Arc<DashMap<ShardId, ShardReport>>,
}

#[derive(Clone, Debug, Default)]
pub struct ShardReport {
    /// Failed `Deliver` calls while this node led the shard.
    pub failures: u64,
    /// "delivering", "caught up", "backing off: ...", "no downstream
    /// configured", or "" when this node does not lead the shard.
    pub state: String,
}

impl DispatchBoard {
    pub fn report(&self, shard: ShardId) -> ShardReport {
        self.shards
            .get(&shard)
            .map(|r| r.value().clone())
            .unwrap_or_default()
    }

    pub(crate) fn set_state(&self, shard: ShardId, state: impl Into<String>) {
        self.shards.entry(shard).or_default().state = state.into();
    }

    pub(crate) fn failed(&self, shard: ShardId, why: String) {
        let mut r = self.shards.entry(shard).or_default();
        r.failures += 1;
        r.state = format!("backing off: {why}");
    }
}
