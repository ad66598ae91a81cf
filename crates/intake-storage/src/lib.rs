//! Durable storage for every Raft group of one node: the Raft logs in one
//! log engine, the state machines in one fjall database (`store.rs`), node
//! metadata in sled.
//!
//! * [`NodeStorage`] opens both and hands out per-shard stores.
//! * [`raftlog::LogEngine`] holds every shard's log in checksummed segment
//!   files, one `fdatasync` per write round across shards.
//! * [`LogStore`] is openraft's log storage over it: entries, vote, committed id.
//! * [`StateMachine`] holds tickets and the idempotency index of one shard,
//!   in its keyspace of the node's state-machine store.
//! * [`Flusher`] is sled's group commit: one sled flush plus one `fdatasync`
//!   of sled's data file serves every metadata or snapshot write waiting.
//!
//! sled's own `flush` ends in `sync_file_range` on Linux, which is not durable
//! across power loss, so no IO is reported complete before our own `fdatasync`.

mod apply_hook;
mod batch_sink;
mod error;
mod flusher;
mod incidents;
mod keys;
mod log_store;
mod migrate;
mod node_storage;
pub mod raftlog;
mod records;
mod snapshot;
mod state_machine;
mod store;
mod tree_view;

pub use apply_hook::ApplyHook;
pub use error::StorageError;
pub use flusher::{FlushStats, Flusher};
pub use incidents::IncidentSummary;
pub use log_store::{LogStore, MAX_ENTRY_BYTES};
pub use node_storage::{NodeStorage, SEGMENT_SIZE_BYTES, StorageConfig};
pub use snapshot::{MAX_SNAPSHOT_BYTES, SnapshotWriter};
pub use state_machine::StateMachine;

use intake_core::{Command, CommandResponse};

/// A shard id, which is also its Raft group id.
pub type ShardId = u32;

/// A node id in the cluster.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// Intake's Raft types: complaints in, ticket outcomes out.
    pub TypeConfig:
        D = Command,
        R = CommandResponse,
        NodeId = NodeId,
        Node = openraft::impls::BasicNode,
);

/// Snapshot bodies are files on disk, so snapshots of large shards neither
/// live in memory nor travel in one message. Each holder opens its own handle
/// positioned at the start.
pub type SnapshotData = tokio::fs::File;

/// The Raft handle of one shard on this node.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

#[cfg(test)]
mod tests;
