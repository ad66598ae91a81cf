//! `intake start`: run one node until Ctrl-C or SIGTERM.
//!
//! Settings come from flags, then `INTAKE_*` environment variables, then an
//! optional TOML file (`--config`), then defaults: the first that sets a value
//! wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use intake_core::{CategoryTable, DistrictTable};
use intake_server::auth::AuthTable;
use intake_server::tls::{PeerFiles, TlsFiles};
use intake_server::{Node, NodeConfig};
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct StartArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "INTAKE_NODE_ID")]
    node_id: Option<u64>,
    /// Take the node id from the host name as a Kubernetes StatefulSet names
    /// its pods: `NAME-N` (first label) is node N+1, so `intake-0` is node 1.
    #[arg(long, env = "INTAKE_NODE_ID_FROM_HOSTNAME", num_args = 0..=1, default_missing_value = "true")]
    node_id_from_hostname: Option<bool>,
    /// Address to serve gRPC on (clients and peers). Default 127.0.0.1:7001.
    #[arg(long, env = "INTAKE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address others reach this node at. Default: this node's entry in
    /// --initial-cluster, else --listen.
    #[arg(long, env = "INTAKE_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for this node's data. Default ./intake-data/node-<id>.
    #[arg(long, env = "INTAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Voters of a new cluster: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT. Ignored
    /// when the data directory already holds a cluster.
    #[arg(long, env = "INTAKE_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Join a running cluster through any of its members:
    /// HOST:PORT[,HOST:PORT]. For a new node only (--initial-cluster is for
    /// bootstrap); ignored when the data directory already holds a cluster.
    #[arg(long, env = "INTAKE_JOIN")]
    join: Option<String>,
    /// Replica moves the cluster runs at once while rebalancing (when this
    /// node leads the meta group). Default 2.
    #[arg(long, env = "INTAKE_MAX_MOVES")]
    max_moves: Option<usize>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, env = "INTAKE_HTTP")]
    http: Option<SocketAddr>,
    /// Serve the HTTP/JSON API, Open311 GeoReport v2 and the citizen web
    /// page at http://HOST:PORT/.
    #[arg(long, env = "INTAKE_API")]
    api: Option<SocketAddr>,
    /// District table CSV (code,name_zh,name_en,population). Default: Beijing.
    #[arg(long, env = "INTAKE_DISTRICTS")]
    districts: Option<PathBuf>,
    /// Shards of a new cluster (fixed when the cluster is first started). Default 8.
    #[arg(long, env = "INTAKE_SHARDS")]
    shards: Option<u32>,
    /// Replicas per shard of a new cluster, on distinct nodes. Default 3
    /// (fewer if the initial cluster has fewer nodes).
    #[arg(long, env = "INTAKE_REPLICAS")]
    replicas: Option<usize>,
    /// Category table CSV (name,emergency): which categories are admitted
    /// first under overload. Default: the built-in table (flood, fire, ...).
    #[arg(long, env = "INTAKE_CATEGORIES")]
    categories: Option<PathBuf>,
    /// Hours an idempotency key keeps returning its ticket. Default 168 (7 days).
    #[arg(long, env = "INTAKE_KEY_RETENTION_HOURS")]
    key_retention_hours: Option<f64>,
    /// Complaints queued per shard before even emergencies are refused. Default 2048.
    #[arg(long, env = "INTAKE_SHARD_QUEUE")]
    shard_queue: Option<usize>,
    /// Complaints queued over all shards this node leads. Default 8192.
    #[arg(long, env = "INTAKE_NODE_QUEUE")]
    node_queue: Option<usize>,
    /// Submit and SubmitBatch calls from clients in progress on this node
    /// before new ones are refused (ordinary calls may take 3/4 of them,
    /// the rest is kept for emergencies). Default 1024.
    #[arg(long, env = "INTAKE_MAX_CALLS")]
    max_calls: Option<usize>,
    /// Calls in progress on one client connection, their handlers started
    /// or not, before tonic refuses more with RESOURCE_EXHAUSTED whatever
    /// their class. Default 4 x --max-calls.
    #[arg(long, env = "INTAKE_MAX_CALLS_PER_CONNECTION")]
    max_calls_per_connection: Option<usize>,
    /// Microseconds a batch waits for more complaints once it has one. Default 2000.
    #[arg(long, env = "INTAKE_BATCH_LINGER_US")]
    batch_linger_us: Option<u64>,
    /// Raft proposals of one shard in flight at once. Default 1.
    #[arg(long, env = "INTAKE_MAX_IN_FLIGHT")]
    max_in_flight: Option<usize>,
    /// While this node's runtime runs timers later than this many
    /// milliseconds (smoothed), it is out of CPU and refuses new ordinary
    /// complaints at the door. Default 100.
    #[arg(long, env = "INTAKE_MAX_RUNTIME_LAG_MS")]
    max_runtime_lag_ms: Option<u64>,
    /// The same limit while emergencies are arriving at this node (one came
    /// in the last few seconds), so ordinary complaints leave them CPU
    /// headroom. Default 20.
    #[arg(long, env = "INTAKE_EMERGENCY_RUNTIME_LAG_MS")]
    emergency_runtime_lag_ms: Option<u64>,
    /// The downstream dispatch system (a dispatch.v1.DispatchService),
    /// HOST:PORT. Absent: committed tickets wait durably, and `intake status`
    /// says so.
    #[arg(long, env = "INTAKE_DISPATCH")]
    dispatch: Option<String>,
    /// sled cache size in MiB. Default 128.
    #[arg(long, env = "INTAKE_CACHE_MB")]
    cache_mb: Option<u64>,
    /// TLS certificate chain (PEM) the gRPC port presents to clients, with
    /// --tls-key. Reloaded on SIGHUP or when the file changes.
    #[arg(long, env = "INTAKE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "INTAKE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS between nodes: the cluster CA (PEM). Only connections with
    /// a certificate it signed reach the Raft transport or forward requests.
    #[arg(long, env = "INTAKE_PEER_CA")]
    peer_ca: Option<PathBuf>,
    /// This node's certificate (PEM) for peer connections, signed by
    /// --peer-ca; also the port's certificate when --tls-cert is absent.
    #[arg(long, env = "INTAKE_PEER_CERT")]
    peer_cert: Option<PathBuf>,
    /// Private key (PEM) of --peer-cert.
    #[arg(long, env = "INTAKE_PEER_KEY")]
    peer_key: Option<PathBuf>,
    /// Tokens and their roles (TOML, README "Security"). Absent: the node is
    /// open to anyone who can reach its port, and says so when it starts.
    #[arg(long, env = "INTAKE_AUTH")]
    auth: Option<PathBuf>,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "INTAKE_LOG_JSON", num_args = 0..=1, default_missing_value = "true")]
    log_json: Option<bool>,
    /// TOML file with any of the settings above (snake_case keys).
    #[arg(long, env = "INTAKE_CONFIG")]
    config: Option<PathBuf>,
}

/// The same settings, as a TOML file may give them.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    node_id: Option<u64>,
    node_id_from_hostname: Option<bool>,
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    initial_cluster: Option<String>,
    join: Option<String>,
    max_moves: Option<usize>,
    http: Option<SocketAddr>,
    api: Option<SocketAddr>,
    districts: Option<PathBuf>,
    shards: Option<u32>,
    replicas: Option<usize>,
    cache_mb: Option<u64>,
    log_json: Option<bool>,
    categories: Option<PathBuf>,
    key_retention_hours: Option<f64>,
    shard_queue: Option<usize>,
    node_queue: Option<usize>,
    max_calls: Option<usize>,
    max_calls_per_connection: Option<usize>,
    batch_linger_us: Option<u64>,
    max_in_flight: Option<usize>,
    max_runtime_lag_ms: Option<u64>,
    emergency_runtime_lag_ms: Option<u64>,
    dispatch: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    peer_ca: Option<PathBuf>,
    peer_cert: Option<PathBuf>,
    peer_key: Option<PathBuf>,
    auth: Option<PathBuf>,
}

/// Parses `host:port,host:port`: the members `--join` may ask.
pub fn parse_join(s: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for addr in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if addr.contains('=') {
            bail!("--join takes HOST:PORT of running members, not ID=HOST:PORT ({addr:?})");
        }
        match addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => bail!("--join: {addr:?} is not HOST:PORT"),
        }
        out.push(addr.to_string());
    }
    if out.is_empty() {
        bail!("--join is empty: give HOST:PORT of at least one running member");
    }
    Ok(out)
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_initial_cluster(s: &str) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry {part:?} is not ID=HOST:PORT"))?;
        let id: u64 = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster: node id {id:?} is not a number"))?;
        if id == 0 {
            bail!("--initial-cluster: node ids start at 1");
        }
        if !addr.contains(':') {
            bail!("--initial-cluster: address {addr:?} of node {id} has no port");
        }
        if out.insert(id, addr.trim().to_string()).is_some() {
            bail!("--initial-cluster lists node {id} twice");
        }
    }
    if out.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(out)
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("INTAKE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn,h2=warn,tower=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

pub async fn run(args: StartArgs) -> anyhow::Result<ExitCode> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{} is not a valid config file", path.display()))?
        }
        None => FileConfig::default(),
    };
    init_logging(args.log_json.or(file.log_json).unwrap_or(false));

    let api = args.api.or(file.api);
    let auth_file = args.auth.clone().or(file.auth.clone());
    let cfg = node_config(args, file)?;
    // The first line says whether anyone at all may call this node.
    match (&cfg.auth, &auth_file) {
        (Some(table), Some(path)) => tracing::info!(
            tokens = table.len(),
            file = %path.display(),
            tls = cfg.tls.enabled(),
            peer_mtls = cfg.tls.peer.is_some(),
            "authentication on: calls need a token from the --auth file"
        ),
        _ => tracing::warn!(
            tls = cfg.tls.enabled(),
            peer_mtls = cfg.tls.peer.is_some(),
            "authentication off (no --auth): anyone who can reach this node's port may submit, read and update tickets"
        ),
    }
    if crate::cmd::wiped::is_empty(&cfg.data_dir) {
        let peer = match &cfg.tls.peer {
            Some(p) => intake_client::Security::from_files(Some(&p.ca), Some(&p.cert), Some(&p.key), None)?,
            None => intake_client::Security::default(),
        };
        crate::cmd::wiped::refuse_if_known(cfg.node_id, &cfg.data_dir, &cfg.initial_cluster, &peer).await?;
    }
    let (districts, categories) = (cfg.districts.clone(), cfg.categories.clone());
    let node = Node::start(cfg).await?;
    let (api_stop, api_stopped) = tokio::sync::watch::channel(false);
    let api = match api {
        Some(addr) => Some(crate::cmd::api::start(addr, &node, districts, categories, api_stopped).await?),
        None => None,
    };
    tokio::select! {
        _ = crate::cmd::signal::stop() => {}
        _ = node.removed() => {
            tracing::info!("this node was removed from the cluster (intake node remove); exiting");
        }
        // After a failed fsync the kernel may have dropped written pages, and
        // no later fsync can tell: the node stops at once instead of serving
        // on storage that may have lost acknowledged entries (PostgreSQL's rule
        // since "fsyncgate"). Its peers carry on; restarting it recovers from
        // what really reached the disk.
        e = node.storage().failure() => {
            tracing::error!(error = %e, "storage fsync failed; stopping this node");
            bail!("storage fsync failed ({e}); this node stopped so it cannot serve from storage that may have lost data. Check the disk, then restart it.");
        }
    }
    tracing::info!("stopping");
    let _ = api_stop.send(true);
    if let Some(api) = api {
        let _ = tokio::time::timeout(Duration::from_secs(5), api).await;
    }
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// The node's settings from flags (and environment) over the file's. Pure
/// but for reading the district and category files it names, so every value
/// a config file can hold is checked here, with an error, never a panic.
fn node_config(args: StartArgs, file: FileConfig) -> anyhow::Result<NodeConfig> {
    let node_id = match (
        args.node_id.or(file.node_id),
        args.node_id_from_hostname.or(file.node_id_from_hostname),
    ) {
        (Some(_), Some(true)) => bail!("give --node-id or --node-id-from-hostname, not both"),
        (Some(id), _) => id,
        (None, Some(true)) => {
            let host = hostname().context("--node-id-from-hostname: cannot read the host name")?;
            node_id_from_hostname(&host)?
        }
        (None, _) => bail!("--node-id is required"),
    };
    if node_id == 0 {
        bail!("--node-id must be a positive integer");
    }
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001)));
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(format!("intake-data/node-{node_id}")));
    let initial = args
        .initial_cluster
        .or(file.initial_cluster)
        .map(|s| parse_initial_cluster(&s))
        .transpose()?;
    let join = args.join.or(file.join).map(|s| parse_join(&s)).transpose()?;
    if initial.is_some() && join.is_some() {
        bail!(
            "give --initial-cluster or --join, not both: --initial-cluster starts a new cluster, \
             --join adds this node to a running one"
        );
    }
    // In a container the node listens on 0.0.0.0 and is reached by a name:
    // the one --initial-cluster already gives it, so it need not be repeated.
    let advertise = args
        .advertise
        .or(file.advertise)
        .or_else(|| initial.as_ref().and_then(|m| m.get(&node_id).cloned()))
        .unwrap_or_else(|| listen.to_string());
    let initial_cluster = initial.unwrap_or_else(|| BTreeMap::from([(node_id, advertise.clone())]));
    if let Some(addr) = initial_cluster.get(&node_id)
        && *addr != advertise
    {
        bail!("--initial-cluster gives node {node_id} the address {addr}, but it advertises {advertise}");
    }

    let mut cfg = NodeConfig::new(node_id, listen, data_dir, initial_cluster);
    cfg.advertise = advertise;
    cfg.join = join.unwrap_or_default();
    if let Some(n) = args.max_moves.or(file.max_moves) {
        if n == 0 {
            bail!("--max-moves must be at least 1");
        }
        cfg.max_moves = n;
    }
    cfg.http = args.http.or(file.http);
    if let Some(path) = args.districts.or(file.districts) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        cfg.districts = DistrictTable::from_csv(&text).with_context(|| format!("in {}", path.display()))?;
    }
    if let Some(n) = args.shards.or(file.shards) {
        cfg.shards = n;
    }
    cfg.replicas = args.replicas.or(file.replicas);
    if let Some(mb) = args.cache_mb.or(file.cache_mb) {
        cfg.cache_capacity_bytes = mb
            .checked_mul(1024 * 1024)
            .with_context(|| format!("--cache-mb {mb} is more bytes than this machine can count"))?;
    }
    if let Some(path) = args.categories.or(file.categories) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        cfg.categories = CategoryTable::from_csv(&text).with_context(|| format!("in {}", path.display()))?;
    }
    if let Some(h) = args.key_retention_hours.or(file.key_retention_hours) {
        if !(h.is_finite() && h > 0.0) {
            bail!("--key-retention-hours must be a positive number of hours");
        }
        // A finite but huge number of hours overflows a Duration, which
        // from_secs_f64 answers with a panic.
        cfg.key_retention = Duration::try_from_secs_f64(h * 3600.0)
            .ok()
            .context("--key-retention-hours is too large")?;
    }
    if let Some(n) = args.shard_queue.or(file.shard_queue) {
        cfg.admission.shard_queue = n.max(1);
    }
    if let Some(n) = args.node_queue.or(file.node_queue) {
        cfg.admission.node_queue = n.max(1);
    }
    if let Some(n) = args.max_calls.or(file.max_calls) {
        cfg.admission.node_requests = n.max(1);
    }
    cfg.admission.per_connection = args
        .max_calls_per_connection
        .or(file.max_calls_per_connection)
        .unwrap_or_else(|| intake_server::config::per_connection_for(cfg.admission.node_requests))
        .max(1);
    if let Some(us) = args.batch_linger_us.or(file.batch_linger_us) {
        cfg.admission.linger = Duration::from_micros(us);
    }
    if let Some(n) = args.max_in_flight.or(file.max_in_flight) {
        cfg.admission.max_in_flight = n.max(1);
    }
    if let Some(ms) = args.max_runtime_lag_ms.or(file.max_runtime_lag_ms) {
        cfg.admission.max_runtime_lag = Duration::from_millis(ms.max(1));
    }
    if let Some(ms) = args.emergency_runtime_lag_ms.or(file.emergency_runtime_lag_ms) {
        cfg.admission.emergency_runtime_lag = Duration::from_millis(ms.max(1));
    }

    cfg.tls = tls_files(
        (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)),
        (
            args.peer_ca.or(file.peer_ca),
            args.peer_cert.or(file.peer_cert),
            args.peer_key.or(file.peer_key),
        ),
    )?;
    if let Some(path) = args.auth.or(file.auth) {
        cfg.auth = Some(Arc::new(AuthTable::load(&path)?));
    }

    if let Some(target) = args.dispatch.or(file.dispatch) {
        if !target.contains(':') {
            bail!("--dispatch {target:?} must be HOST:PORT");
        }
        cfg.dispatch.target = Some(target);
    }
    Ok(cfg)
}

/// This host's name: `HOSTNAME` (Kubernetes sets it to the pod's name),
/// else the kernel's.
fn hostname() -> std::io::Result<String> {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.trim().is_empty() => Ok(h),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname"),
    }
}

/// `intake-2` (or `intake-2.intake.ns.svc`) is node 3: StatefulSet
/// ordinals count from 0, node ids from 1.
fn node_id_from_hostname(host: &str) -> anyhow::Result<u64> {
    let first = host.trim().split('.').next().unwrap_or_default();
    let ordinal = first
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .with_context(|| format!("host name {first:?} does not end in -ORDINAL (as StatefulSet pods' do)"))?;
    ordinal
        .checked_add(1)
        .with_context(|| format!("host name {first:?}: ordinal too large"))
}

/// TLS settings from the five paths: a server pair and a peer triple, each
/// complete or absent. (The HTTP door, `--api`, takes the same
/// `cfg.tls`: `intake_server::tls::TlsReloader` gives it a rustls
/// configuration that follows the files.)
fn tls_files(
    server: (Option<PathBuf>, Option<PathBuf>),
    peer: (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>),
) -> anyhow::Result<TlsFiles> {
    let server = match server {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    let peer = match peer {
        (Some(ca), Some(cert), Some(key)) => Some(PeerFiles { ca, cert, key }),
        (None, None, None) => None,
        _ => bail!("--peer-ca, --peer-cert and --peer-key go together"),
    };
    Ok(TlsFiles { server, peer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn initial_cluster_parses_and_rejects() {
        let m = parse_initial_cluster("1=127.0.0.1:7001, 2=127.0.0.1:7002").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&2], "127.0.0.1:7002");
        for bad in ["", "1", "x=a:1", "0=a:1", "1=a:1,1=b:2", "1=nohost"] {
            assert!(parse_initial_cluster(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn join_parses_and_rejects() {
        assert_eq!(
            parse_join("10.0.0.1:7001, node-2:7001").unwrap(),
            vec!["10.0.0.1:7001", "node-2:7001"]
        );
        for bad in ["", ",", "1=a:1", "nohost", "a:", ":7001", "a:port"] {
            assert!(parse_join(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn join_and_initial_cluster_exclude_each_other() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            start: StartArgs,
        }
        let args = |extra: &[&str]| {
            let mut all = vec!["start", "--node-id", "4"];
            all.extend_from_slice(extra);
            <Cli as clap::Parser>::try_parse_from(all).unwrap().start
        };
        let both = node_config(
            args(&[
                "--join",
                "127.0.0.1:7001",
                "--initial-cluster",
                "4=127.0.0.1:7004",
            ]),
            FileConfig::default(),
        );
        assert!(format!("{:#}", both.unwrap_err()).contains("not both"));
        let cfg = node_config(
            args(&["--join", "127.0.0.1:7001", "--listen", "127.0.0.1:7004"]),
            FileConfig::default(),
        )
        .unwrap();
        assert_eq!(cfg.join, vec!["127.0.0.1:7001"]);
        assert_eq!(cfg.advertise, "127.0.0.1:7004");
    }

    /// Values a TOML file can hold for each key, odd ones included.
    fn toml_value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            Just("nan".to_string()),
            Just("inf".to_string()),
            Just("-inf".to_string()),
            Just("1e308".to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            ".{0,24}".prop_map(|s| format!("{s:?}")),
            "[0-9]{1,3}=[a-z0-9.:]{0,16}(,[0-9]{1,3}=[a-z0-9.:]{0,16}){0,3}".prop_map(|s| format!("{s:?}")),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
        ]
    }

    /// Every key but node_id, which each file below sets first.
    const KEYS: [&str; 23] = [
        "listen",
        "advertise",
        "data_dir",
        "initial_cluster",
        "join",
        "max_moves",
        "http",
        "api",
        "shards",
        "replicas",
        "cache_mb",
        "log_json",
        "key_retention_hours",
        "shard_queue",
        "node_queue",
        "max_calls",
        "max_calls_per_connection",
        "batch_linger_us",
        "max_in_flight",
        "max_runtime_lag_ms",
        "emergency_runtime_lag_ms",
        "dispatch",
        "nodeid",
    ];

    proptest! {
        /// Any text as a config file is a config or an error; any config
        /// that parses becomes node settings or an error. (District and
        /// category files are left out: they would be read from disk.)
        #[test]
        fn any_config_file_is_settings_or_an_error(text in any::<String>()) {
            if let Ok(file) = toml::from_str::<FileConfig>(&text) {
                let _ = node_config(StartArgs::default(), FileConfig { districts: None, categories: None, ..file });
            }
        }

        #[test]
        fn config_files_of_known_keys_and_odd_values_are_settings_or_an_error(
            lines in prop::collection::vec((prop::sample::select(KEYS.to_vec()), toml_value()), 0..8),
        ) {
            let text: String = std::iter::once("node_id = 1\n".to_string())
                .chain(lines.iter().map(|(k, v)| format!("{k} = {v}\n")))
                .collect();
            if let Ok(file) = toml::from_str::<FileConfig>(&text) {
                let _ = node_config(StartArgs::default(), file);
            }
        }

        #[test]
        fn any_initial_cluster_is_a_map_or_an_error(s in any::<String>()) {
            let _ = parse_initial_cluster(&s);
            let _ = parse_join(&s);
        }
    }

    #[test]
    fn huge_but_valid_numbers_are_errors_not_panics() {
        for text in [
            "node_id = 1\ncache_mb = 18446744073709551615",
            "node_id = 1\nkey_retention_hours = 1e300",
        ] {
            let file: FileConfig = toml::from_str(text).expect(text);
            assert!(node_config(StartArgs::default(), file).is_err(), "{text}");
        }
    }

    #[test]
    fn node_id_comes_from_a_statefulset_pod_name() {
        assert_eq!(node_id_from_hostname("intake-0").unwrap(), 1);
        assert_eq!(node_id_from_hostname("intake-2.intake.default.svc\n").unwrap(), 3);
        assert_eq!(node_id_from_hostname("my-intake-11").unwrap(), 12);
        for bad in ["intake", "intake-", "intake-x", "", "-18446744073709551615"] {
            assert!(node_id_from_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn advertise_defaults_to_the_nodes_initial_cluster_entry() {
        let args = StartArgs {
            node_id: Some(2),
            listen: Some("0.0.0.0:7001".parse().unwrap()),
            initial_cluster: Some("1=node1:7001,2=node2:7001".into()),
            ..Default::default()
        };
        assert_eq!(
            node_config(args, FileConfig::default()).unwrap().advertise,
            "node2:7001"
        );
        let both = StartArgs {
            node_id: Some(2),
            node_id_from_hostname: Some(true),
            ..Default::default()
        };
        assert!(node_config(both, FileConfig::default()).is_err());
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("node_id = 1\nlisten = \"127.0.0.1:7001\"").is_ok());
        assert!(toml::from_str::<FileConfig>("nodeid = 1").is_err());
    }
}
