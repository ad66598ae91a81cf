//! What a node needs to start. The binary fills this from flags, `INTAKE_*`
//! variables and a TOML file; tests fill it directly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use intake_core::{CategoryTable, DistrictTable, Limits};
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

/// Batching and admission control on the submit path. The defaults keep a
/// node's queued complaints to a few tens of MiB whatever is offered.
#[derive(Debug, Clone)]
pub struct AdmissionConfig {
    /// Complaints queued per shard before even emergencies are refused.
    pub shard_queue: usize,
    /// Complaints queued over all the shards this node leads.
    pub node_queue: usize,
    /// Share of either bound that ordinary complaints may fill; the rest
    /// stays free for emergencies.
    pub ordinary_share: f64,
    /// Submit and SubmitBatch calls from clients in progress on this node
    /// before new ones are refused; calls forwarded by other nodes have a
    /// pool of the same size.
    pub node_requests: usize,
    /// Calls in progress per client connection, handlers started or not;
    /// beyond it tonic's load shedding answers RESOURCE_EXHAUSTED, blind to
    /// class. So it must stay well above `node_requests`, which knows the
    /// class: at twice it, in a 5x unary surge over one connection per node
    /// (calls waiting for a worker count too), this bound refused more
    /// emergencies than every class-aware rule together (docs/benchmarks.md).
    pub per_connection: usize,
    /// Proposals of one shard in flight at once. One by default: while it
    /// commits, the next proposal gathers everything that arrives, so a
    /// spread load makes fewer, fuller entries (fewer Raft rounds, appends
    /// and applies per complaint); measured in docs/benchmarks.md.
    pub max_in_flight: usize,
    /// Most complaints in one Raft entry (ticket ids number items in 8 bits).
    pub max_batch_items: usize,
    /// Most complaint bytes in one Raft entry (below the store's entry limit).
    pub max_batch_bytes: usize,
    /// How long a batch waits for more complaints once it has one. Zero:
    /// batches form only while earlier proposals are in flight.
    pub linger: Duration,
    /// While ordinary complaints take longer than this from queue to commit
    /// (smoothed), new ordinary ones are refused; emergencies are not. At
    /// 500 ms a batch fanned out to several shards often waited out its
    /// whole 2 s deadline in a 5x surge; at 200 ms the commit pipeline stays
    /// short enough for the emergencies behind it (benches/overload.sh).
    pub target_latency: Duration,
    /// While this node's runtime runs timers later than this (smoothed), it
    /// is out of CPU and refuses new ordinary complaints at the door.
    pub max_runtime_lag: Duration,
    /// The same limit while emergencies are arriving at this node (one came
    /// in the last few seconds): ordinary complaints then leave the CPU
    /// headroom that keeps the emergencies fast. A commit waits on about ten
    /// wake-ups in turn over three nodes, so a lag of 20 ms already makes it
    /// some 200 ms slower; with 100 ms, emergencies in a 5x surge were late
    /// often enough to miss 99 % (benches/overload.sh, README).
    pub emergency_runtime_lag: Duration,
}

/// The per-connection bound for a node call pool of `node_requests`: well
/// above it (see [`AdmissionConfig::per_connection`]).
pub fn per_connection_for(node_requests: usize) -> usize {
    node_requests.saturating_mul(4)
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        let node_requests = 1024;
        Self {
            shard_queue: 2048,
            node_queue: 8192,
            ordinary_share: 0.75,
            node_requests,
            per_connection: per_connection_for(node_requests),
            max_in_flight: 1,
            max_batch_items: intake_core::ticket_id::MAX_ITEMS_PER_ENTRY,
            max_batch_bytes: crate::limits::MAX_ENTRY_COMPLAINT_BYTES,
            linger: Duration::from_micros(2000),
            target_latency: Duration::from_millis(200),
            max_runtime_lag: Duration::from_millis(100),
            emergency_runtime_lag: Duration::from_millis(20),
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
    /// Members of a running cluster to join through (`--join`), when the
    /// data directory holds no cluster yet; empty to bootstrap from
    /// `initial_cluster` instead.
    pub join: Vec<String>,
    /// Replica moves the meta leader runs at once (`--max-moves`).
    pub max_moves: usize,
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
    /// Which categories are emergencies.
    pub categories: CategoryTable,
    pub admission: AdmissionConfig,
    /// How long an idempotency key keeps returning its ticket (measured on
    /// the leader's `accepted_at`); older keys are compacted away.
    pub key_retention: Duration,
    /// How often each shard leader proposes compaction of expired keys.
    pub compaction_interval: Duration,
    /// Delivery of committed tickets to the downstream.
    pub dispatch: DispatchConfig,
    /// TLS on the gRPC port and mutual TLS between nodes; default off.
    pub tls: crate::tls::TlsFiles,
    /// Tokens and roles (`--auth`); `None`: the node is open to anyone who
    /// reaches its port.
    pub auth: Option<std::sync::Arc<crate::auth::AuthTable>>,
}

/// Delivery to the downstream dispatch system.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The downstream's `HOST:PORT`. `None`: tickets wait, durably, until
    /// one is configured.
    pub target: Option<String>,
    /// Tickets per `Deliver` call at most (one call in flight per shard).
    pub batch: usize,
    /// Longest one `Deliver` call may take before it counts as failed.
    pub timeout: Duration,
    /// Backoff after a failure: starts here, doubles, with full jitter...
    pub backoff_min: Duration,
    /// ...up to this.
    pub backoff_max: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            target: None,
            batch: 256,
            timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
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
            join: Vec::new(),
            max_moves: 2,
            http: None,
            districts: DistrictTable::beijing(),
            limits: Limits::default(),
            raft: RaftTuning::default(),
            cache_capacity_bytes: 128 * 1024 * 1024,
            submit_timeout: Duration::from_secs(10),
            shards: 8,
            replicas: None,
            categories: CategoryTable::default(),
            admission: AdmissionConfig::default(),
            key_retention: Duration::from_secs(7 * 24 * 3600),
            compaction_interval: Duration::from_secs(600),
            dispatch: DispatchConfig::default(),
            tls: crate::tls::TlsFiles::default(),
            auth: None,
        }
    }
}
