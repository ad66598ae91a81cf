//! One Intake node: opens the store, starts the Raft groups it hosts, serves
//! gRPC (public API, Raft transport, health, reflection) on one port, and
//! stops all of it in order on shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use intake_cluster::{Groups, PeerPool, RaftTransportService};
use intake_core::{ClusterMap, META_GROUP};
use intake_proto::pb::admin_service_server::AdminServiceServer;
use intake_proto::pb::intake_service_server::IntakeServiceServer;
use intake_proto::raft::v1::raft_transport_server::RaftTransportServer;
use intake_storage::{NodeId, NodeStorage, Raft, ShardId, StorageConfig, StorageError};
use openraft::{BasicNode, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin_service::AdminServiceImpl;
use crate::admission::Admission;
use crate::admission::lag::RuntimeLag;
use crate::auth::{GateLayer, Guarded, InProcess};
use crate::config::NodeConfig;
use crate::hosting::GroupHost;
use crate::intake_service::IntakeServiceImpl;
use crate::meta;
use crate::observe;
use crate::registry::Registry;
use crate::router::Router;
use crate::surge_watch::SurgeWatch;
use crate::tls::TlsReloader;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error(
        "data directory belongs to node {found}, not node {expected}: use that node id or a new directory"
    )]
    WrongNode { expected: NodeId, found: NodeId },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("raft: {0}")]
    Raft(String),
    #[error(transparent)]
    Join(#[from] crate::join::JoinError),
}

/// A running node. Dropping it without [`Node::shutdown`] leaves tasks running.
pub struct Node {
    id: NodeId,
    addr: String,
    groups: Groups,
    storage: NodeStorage,
    registry: Registry,
    surges: SurgeWatch,
    stop: watch::Sender<bool>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The gRPC door's service, shared with other doors (the HTTP API) so
    /// they pass through the same validation, admission and idempotency.
    intake: Arc<IntakeServiceImpl>,
    /// The gRPC port's gate, which the in-process doors ask too.
    gate: GateLayer,
    /// The port's certificates (reloaded in place), for the HTTP door.
    tls: Option<TlsReloader>,
    /// Turns true when the cluster map no longer lists this node.
    removed: watch::Receiver<bool>,
}

const NODE_ID_KEY: &str = "node_id";
const CLUSTER_MAP_KEY: &str = "cluster_map";

impl Node {
    pub async fn start(cfg: NodeConfig) -> Result<Node, NodeError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| NodeError::DataDir {
            path: cfg.data_dir.display().to_string(),
            source,
        })?;
        if cfg.join.is_empty() && !cfg.initial_cluster.contains_key(&cfg.node_id) {
            return Err(NodeError::Config(format!(
                "--initial-cluster must list this node ({}); it lists {:?}",
                cfg.node_id,
                cfg.initial_cluster.keys().collect::<Vec<_>>()
            )));
        }
        let storage = NodeStorage::open(StorageConfig {
            dir: cfg.data_dir.clone(),
            cache_capacity_bytes: cfg.cache_capacity_bytes,
        })?;
        check_identity(&storage, cfg.node_id).await?;
        // Before any group starts, so the watch sees every apply. A node
        // restarted into a running cluster learns its baselines from
        // whatever is happening then (perhaps a surge, or the backlog after
        // one): it stays quiet for two minutes instead of the first 10 s.
        let restarted = storage.get_meta(CLUSTER_MAP_KEY)?.is_some();
        let surges = SurgeWatch::new(&cfg.districts, &cfg.categories, restarted);
        storage.set_apply_hook(Arc::new(surges.clone()));

        let raft_config = Arc::new(
            openraft::Config {
                cluster_name: "intake".to_string(),
                heartbeat_interval: cfg.raft.heartbeat_ms,
                election_timeout_min: cfg.raft.election_timeout_min_ms,
                election_timeout_max: cfg.raft.election_timeout_max_ms,
                snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.raft.snapshot_every),
                max_in_snapshot_log_to_keep: cfg.raft.keep_behind_snapshot,
                // A node that was stalled (a GC-like pause, `docker pause`)
                // comes back with every election timer run out. Without
                // Pre-Vote it raised its term at once and its answers deposed
                // healthy leaders: 5 of 8 shards leaderless for 1.2-1.8 s
                // after a 10 s pause had ended (README, cross-container
                // faults). With it, it asks first and, finding leaders, stays
                // a follower. The transport carries the Pre-Vote RPC.
                enable_pre_vote: Some(true),
                ..Default::default()
            }
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?,
        );

        let tls = TlsReloader::load(cfg.tls.clone()).map_err(|e| NodeError::Config(format!("TLS: {e}")))?;
        let peers = PeerPool::new();
        if let Some(t) = &tls {
            peers.set_tls(t.current().peer_client.clone());
        }
        let map = load_join_or_bootstrap_map(&storage, &cfg, &peers).await?;
        if tls.as_ref().is_some_and(|t| !t.mutual()) && map.members.len() > 1 {
            return Err(NodeError::Config(
                "--tls-cert on a cluster of several nodes needs --peer-ca, --peer-cert and --peer-key too: \
                 the port speaks TLS to peers as well, and they verify each other with the cluster CA"
                    .into(),
            ));
        }
        let groups = Groups::default();
        let registry = Registry::new(cfg.node_id, groups.clone(), map.clone());
        let host = GroupHost::new(
            cfg.node_id,
            storage.clone(),
            raft_config.clone(),
            peers.clone(),
            registry.clone(),
            cfg.admission.clone(),
        );
        let hosted: Vec<ShardId> = map.groups_on(cfg.node_id);
        for group in &hosted {
            host.start_group(*group).await?;
        }

        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| NodeError::Bind {
                addr: cfg.listen.to_string(),
                source,
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let admission = Arc::new(Admission::new(
            cfg.admission.clone(),
            RuntimeLag::start(stop_rx.clone()),
        ));
        let router = Router::new(registry.clone(), peers.clone(), admission.clone());
        let admin = Arc::new(AdminServiceImpl::new(
            cfg.node_id,
            registry.clone(),
            peers.clone(),
            surges.clone(),
        ));
        if let Some(t) = &tls {
            let peers = peers.clone();
            t.spawn_watch(stop_rx.clone(), move |state| {
                peers.set_tls(state.peer_client.clone())
            });
        }
        let door_gate = gate(&cfg, tls.as_ref());
        let door_tls = tls.clone();
        let (server, intake) = serve(
            &cfg,
            listener,
            tls,
            &storage,
            &router,
            admin.clone(),
            stop_rx.clone(),
        )
        .await?;

        let stop_tasks = stop_rx.clone();
        // Only a group's voters may initialize it; a learner (a move's
        // target) is caught up by the group's leader.
        for shard in hosted
            .iter()
            .filter(|g| map.voters_of(**g).contains(&cfg.node_id))
        {
            if let Some(raft) = groups.get(*shard) {
                let voters = group_voters(&map, *shard);
                // The placement's first voter; the meta group has none.
                let preferred = map.placement(*shard).and_then(|p| p.voters.first().copied());
                tokio::spawn(initialize_if_new(
                    cfg.node_id,
                    *shard,
                    preferred,
                    raft,
                    voters,
                    stop_tasks.clone(),
                ));
            }
        }
        let (removed_tx, removed) = watch::channel(false);
        tokio::spawn(meta::publish_and_follow(
            registry.clone(),
            peers.clone(),
            storage.clone(),
            host.clone(),
            removed_tx,
            stop_tasks.clone(),
        ));
        tokio::spawn(crate::scheduler::run(
            registry.clone(),
            peers.clone(),
            admin.clone(),
            cfg.max_moves,
            stop_tasks.clone(),
        ));
        crate::dispatcher::spawn(
            cfg.node_id,
            registry.clone(),
            cfg.dispatch.clone(),
            registry.dispatch_board().clone(),
            stop_tasks.clone(),
        );
        tokio::spawn(crate::compaction::run(
            cfg.node_id,
            registry.clone(),
            cfg.key_retention,
            cfg.compaction_interval,
            stop_tasks.clone(),
        ));
        if let Some(target) = cfg.dispatch.target.clone() {
            tokio::spawn(crate::dispatch_alerts::run(
                cfg.node_id,
                registry.clone(),
                surges.clone(),
                target,
                cfg.dispatch.timeout,
                stop_tasks.clone(),
            ));
        }
        tokio::spawn(crate::surge_watch::run(
            surges.clone(),
            cfg.node_id,
            registry.clone(),
            stop_tasks.clone(),
        ));
        if let Some(http) = cfg.http {
            let metrics =
                observe::recorder().map_err(|e| NodeError::Config(format!("--http {http}: {e}")))?;
            let listener = crate::ops::bind(http).await.map_err(|source| NodeError::Bind {
                addr: http.to_string(),
                source,
            })?;
            crate::ops::spawn(
                listener,
                crate::ops::OpsState {
                    metrics,
                    surges: surges.clone(),
                    admin: admin.clone(),
                    districts: Arc::new(cfg.districts.clone()),
                    node_id: cfg.node_id,
                },
                stop_tasks.clone(),
            );
        }
        tokio::spawn(observe::report_loop(
            cfg.node_id,
            groups.clone(),
            storage.clone(),
            registry.clone(),
            stop_rx,
        ));
        tracing::info!(node = cfg.node_id, addr = %cfg.advertise, "node started");
        Ok(Node {
            id: cfg.node_id,
            addr: cfg.advertise.clone(),
            groups,
            storage,
            registry,
            surges,
            stop,
            server,
            intake,
            gate: door_gate,
            tls: door_tls,
            removed,
        })
    }

    /// Resolves once this node has been removed from the cluster
    /// (`intake node remove`): it holds nothing any more, and should exit.
    pub async fn removed(&self) {
        let mut removed = self.removed.clone();
        let _ = removed.wait_for(|r| *r).await;
    }

    /// This node's `intake.v1.IntakeService`, to call in-process, with no
    /// gate in front: whoever holds it may call anything.
    pub fn intake_service(&self) -> Arc<IntakeServiceImpl> {
        self.intake.clone()
    }

    /// The same service behind the gRPC port's gate, for another door in
    /// this process (the HTTP API): a call's `authorization` metadata is
    /// decided as on the gRPC port (tokens, roles, channels, rate limits;
    /// open when the node runs without `--auth`).
    pub fn gated_intake_service(&self) -> Arc<InProcess<IntakeServiceImpl>> {
        Arc::new(InProcess::new(self.gate.clone(), self.intake.clone()))
    }

    /// The certificates the gRPC port presents, when TLS is on; they are
    /// reloaded in place, so a door that takes [`TlsReloader::current`]
    /// for each new connection follows every reload.
    pub fn tls(&self) -> Option<&TlsReloader> {
        self.tls.as_ref()
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn raft(&self, shard: ShardId) -> Option<Raft> {
        self.groups.get(shard)
    }

    /// The shards hosted here and the cluster map.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn storage(&self) -> &NodeStorage {
        &self.storage
    }

    /// The node's surge detector and its events.
    pub fn surges(&self) -> &SurgeWatch {
        &self.surges
    }

    /// Stops serving, stops every Raft group, then flushes and closes storage.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for (shard, raft) in self.groups.all() {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(shard, error = %e, "raft group did not stop cleanly");
            }
        }
        // Graceful shutdown waits for open calls; a peer that never closes
        // one must not keep this node from stopping.
        let mut server = self.server;
        match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => {
                tracing::warn!("gRPC server did not drain within 5 s; closing it");
                server.abort();
            }
        }
        self.storage.shutdown().await;
        tracing::info!(node = self.id, "node stopped");
    }
}

/// A data directory remembers its node id; starting it as another node would
/// make one replica vote twice.
async fn check_identity(storage: &NodeStorage, id: NodeId) -> Result<(), NodeError> {
    match storage.get_meta(NODE_ID_KEY)? {
        Some(bytes) => {
            let found = <[u8; 8]>::try_from(bytes.as_slice())
                .map(u64::from_be_bytes)
                .map_err(|_| NodeError::Config("data directory has a corrupt node id".into()))?;
            if found != id {
                return Err(NodeError::WrongNode { expected: id, found });
            }
        }
        None => storage.put_meta(NODE_ID_KEY, &id.to_be_bytes()).await?,
    }
    Ok(())
}

/// The cluster map: the one this node stored (when the cluster began, when
/// it joined, or since), else the one the cluster answers a `--join` with,
/// else a new one computed from the initial member list (every initial node
/// computes the same one), stored before anything else happens.
async fn load_join_or_bootstrap_map(
    storage: &NodeStorage,
    cfg: &NodeConfig,
    peers: &PeerPool,
) -> Result<ClusterMap, NodeError> {
    if let Some(bytes) = storage.get_meta(CLUSTER_MAP_KEY)? {
        let map: ClusterMap = serde_json::from_slice(&bytes)
            .map_err(|e| NodeError::Config(format!("data directory has an unreadable cluster map: {e}")))?;
        if !cfg.join.is_empty() {
            tracing::info!(
                version = map.version,
                "the data directory already belongs to a cluster: --join ignored"
            );
        }
        return Ok(map);
    }
    if !cfg.join.is_empty() {
        tracing::info!(through = ?cfg.join, "joining a running cluster");
        let map = crate::join::join(peers, cfg.node_id, &cfg.advertise, &cfg.join, JOIN_PATIENCE).await?;
        tracing::info!(
            version = map.version,
            members = map.members.len(),
            "joined the cluster"
        );
        store_map(storage, &map).await?;
        return Ok(map);
    }
    let replicas = cfg.replicas.unwrap_or_else(|| cfg.initial_cluster.len().min(3));
    let map = ClusterMap::bootstrap(&cfg.initial_cluster, cfg.shards, replicas, &cfg.districts)
        .map_err(|e| NodeError::Config(e.to_string()))?;
    store_map(storage, &map).await?;
    Ok(map)
}

/// How long `--join` keeps trying members that do not answer (yet).
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// Keeps `map` as this node's own, so that a restart starts from it.
pub(crate) async fn store_map(storage: &NodeStorage, map: &ClusterMap) -> Result<(), NodeError> {
    let bytes = serde_json::to_vec(map).map_err(|e| NodeError::Config(e.to_string()))?;
    storage.put_meta(CLUSTER_MAP_KEY, &bytes).await?;
    Ok(())
}

/// The voters of a group with their addresses.
fn group_voters(map: &ClusterMap, shard: ShardId) -> BTreeMap<NodeId, BasicNode> {
    let ids: Vec<NodeId> = if shard == META_GROUP {
        map.meta_voters.clone()
    } else {
        map.placement(shard).map(|p| p.voters.clone()).unwrap_or_default()
    };
    ids.into_iter()
        .filter_map(|id| map.members.get(&id).map(|a| (id, BasicNode { addr: a.clone() })))
        .collect()
}

/// A new group is initialized by its preferred leader (its first voter),
/// which then wins the first election, so leaders start spread over the
/// nodes. The other voters wait, and initialize too only if the group is
/// still empty after a while (the preferred node may be down); openraft
/// allows several voters to initialize with the same members. A group with
/// state skips this, so a restart rejoins with what it has.
async fn initialize_if_new(
    node: NodeId,
    shard: ShardId,
    preferred: Option<NodeId>,
    raft: Raft,
    voters: BTreeMap<NodeId, BasicNode>,
    mut stop: watch::Receiver<bool>,
) {
    let wait = if shard == META_GROUP || preferred == Some(node) {
        Duration::ZERO
    } else {
        // Longer than an election, so the preferred node normally wins.
        Duration::from_secs(5)
    };
    tokio::select! {
        _ = tokio::time::sleep(wait) => {}
        _ = stop.wait_for(|s| *s) => return,
    }
    match raft.is_initialized().await {
        Ok(true) => return,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(shard, error = %e, "cannot tell whether the group is initialized");
            return;
        }
    }
    match raft.initialize(voters).await {
        Ok(()) => tracing::info!(shard, "initialized new raft group"),
        Err(openraft::error::RaftError::APIError(openraft::error::InitializeError::NotAllowed(_))) => {}
        Err(e) => tracing::warn!(shard, error = %e, "initializing raft group failed"),
    }
}

/// The gate in front of the node's services; every copy shares the token
/// table, and with it the tokens' rate limits.
fn gate(cfg: &NodeConfig, tls: Option<&TlsReloader>) -> GateLayer {
    GateLayer::new(cfg.auth.clone(), tls.is_some_and(TlsReloader::mutual))
}

async fn serve(
    cfg: &NodeConfig,
    listener: TcpListener,
    tls: Option<TlsReloader>,
    storage: &NodeStorage,
    router: &Router,
    admin: Arc<AdminServiceImpl>,
    stop: watch::Receiver<bool>,
) -> Result<
    (
        JoinHandle<Result<(), tonic::transport::Error>>,
        Arc<IntakeServiceImpl>,
    ),
    NodeError,
> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<IntakeServiceServer<IntakeServiceImpl>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(intake_proto::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| NodeError::Config(format!("reflection: {e}")))?;
    let intake = Arc::new(IntakeServiceImpl::new(
        router.clone(),
        router.admission().clone(),
        Arc::new(cfg.districts.clone()),
        Arc::new(cfg.categories.clone()),
        cfg.limits.clone(),
        cfg.submit_timeout,
    ));
    let registry = router.registry();
    let maps = registry.clone();
    let transport = RaftTransportService::new(
        registry.groups().clone(),
        storage.clone(),
        Arc::new(move || maps.map()),
        stop.clone(),
    );
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // A bound per connection, shed (RESOURCE_EXHAUSTED) rather than
        // queued, so one client cannot hold unbounded work on this node.
        .concurrency_limit_per_connection(cfg.admission.per_connection)
        .load_shed(true)
        // More streams than the limit above: otherwise HTTP/2 makes excess
        // calls wait silently in the client, where no one sheds them.
        .max_concurrent_streams(Some(
            u32::try_from(cfg.admission.per_connection.saturating_mul(2)).unwrap_or(u32::MAX),
        ))
        // In a surge clients time out and reset streams before this server
        // has accepted them. h2's default (20 such resets) then sends GOAWAY,
        // failing every call on the connection, done or nearly done: a
        // collapse. The node's call pool instead: each pending reset holds
        // its request until accepted, so this also caps what a rapid-reset
        // flood pins (at 4,096 a node peaked at 515 MiB in the 10x surge).
        .http2_max_pending_accept_reset_streams(Some(cfg.admission.node_requests.max(20)))
        // Deadlines count from here, not from when a handler got its body.
        .layer(tonic::service::InterceptorLayer::new(crate::arrival::stamp))
        // A deadline that runs out is DEADLINE_EXCEEDED, not tonic's CANCELLED.
        .layer(crate::deadline::DeadlineLayer)
        // Unreadable framing on the public API is INVALID_ARGUMENT, not INTERNAL.
        .layer(crate::bad_frames::BadFramesLayer)
        // Who may call what; every refusal is answered here (crate::auth).
        .layer(gate(cfg, tls.as_ref()))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            IntakeServiceServer::new(Guarded::new(intake.clone())).max_decoding_message_size(8 * 1024 * 1024),
        )
        .add_service(AdminServiceServer::from_arc(admin))
        .add_service(
            RaftTransportServer::new(transport)
                .max_decoding_message_size(64 * 1024 * 1024)
                .max_encoding_message_size(64 * 1024 * 1024),
        );
    // Server::tcp_nodelay covers only sockets tonic binds itself; these are
    // ours, and without TCP_NODELAY small Raft responses wait out Nagle and
    // delayed ACKs (~40 ms).
    let mut stopped = stop.clone();
    let stopped = async move {
        let _ = stopped.wait_for(|s| *s).await;
    };
    if let Some(tls) = tls {
        let incoming = crate::tls::incoming(listener, tls, stop.clone());
        return Ok((
            tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped)),
            intake,
        ));
    }
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok((
        tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped)),
        intake,
    ))
}
