//! The Raft groups hosted on this node, by shard id.

use std::sync::Arc;

use dashmap::DashMap;
use intake_storage::{Raft, ShardId};

/// Cheap to clone; shared by the transport service and the node.
#[derive(Clone, Default)]
pub struct Groups {
    inner: Arc<DashMap<ShardId, Raft>>,
}

impl Groups {
    pub fn insert(&self, shard: ShardId, raft: Raft) {
        self.inner.insert(shard, raft);
    }

    pub fn get(&self, shard: ShardId) -> Option<Raft> {
        self.inner.get(&shard).map(|r| r.value().clone())
    }

    pub fn remove(&self, shard: ShardId) -> Option<Raft> {
        self.inner.remove(&shard).map(|(_, r)| r)
    }

    /// Shard ids in ascending order.
    pub fn shards(&self) -> Vec<ShardId> {
        let mut v: Vec<ShardId> = self.inner.iter().map(|e| *e.key()).collect();
        v.sort_unstable();
        v
    }

    pub fn all(&self) -> Vec<(ShardId, Raft)> {
        let mut v: Vec<(ShardId, Raft)> = self.inner.iter().map(|e| (*e.key(), e.value().clone())).collect();
        v.sort_unstable_by_key(|(s, _)| *s);
        v
    }
}
