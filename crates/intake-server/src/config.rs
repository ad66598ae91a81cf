//! What a node needs to start. The binary fills this from flags, `INTAKE_*`
//! variables and a TOML file; tests fill it directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use intake_core::{DistrictTable, Limits};
use intake_storage::NodeId;

/// Raft timing and log compaction. Defaults suit a loaded 2-core machine:
/// elections must not fire because a busy peer answered a heartbeat late.
#[derive(Debug, Clone)]
pub struct RaftTuning {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Entries kept in the log behind a snapshot, so briefly lagging
    /// followers catch up from the log rather than by snapshot.
    pub keep_behind_snapshot: u64,
}

impl Default for RaftTuning {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 1000,
            election_timeout_max_ms: 2000,
            snapshot_every: 20_000,
            keep_behind_snapshot: 5_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// Address the gRPC server binds.
    pub listen: SocketAddr,
    /// Address peers and clients use to reach this node; usually `listen`.
    pub advertise: String,
    pub data_dir: PathBuf,
    /// Every voter of a new cluster, this node included.
    pub initial_cluster: BTreeMap<NodeId, String>,
    /// Where `/metrics` is served, if anywhere.
    pub http: Option<SocketAddr>,
    pub districts: DistrictTable,
    pub limits: Limits,
    pub raft: RaftTuning,
    pub cache_capacity_bytes: u64,
    /// Longest a submission waits for its quorum before the client is told.
    pub submit_timeout: Duration,
    /// Shards of a new cluster (fixed at bootstrap).
    pub shards: u32,
    /// Replicas per shard of a new cluster; `None` means 3, or fewer when
    /// the cluster has fewer nodes.
    pub replicas: Option<usize>,
}

impl NodeConfig {
    /// A config with defaults for everything but identity and addresses.
    pub fn new(
        node_id: NodeId,
        listen: SocketAddr,
        data_dir: PathBuf,
        initial_cluster: BTreeMap<NodeId, String>,
    ) -> Self {
        Self {
            node_id,
            listen,
            advertise: listen.to_string(),
            data_dir,
            initial_cluster,
            http: None,
            districts: DistrictTable::beijing(),
            limits: Limits::default(),
            raft: RaftTuning::default(),
            cache_capacity_bytes: 256 * 1024 * 1024,
            submit_timeout: Duration::from_secs(10),
            shards: 8,
            replicas: None,
        }
    }
}
