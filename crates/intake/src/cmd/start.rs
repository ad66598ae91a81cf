//! `intake start`: run one node until Ctrl-C or SIGTERM.
//!
//! Settings come from flags, then `INTAKE_*` environment variables, then an
//! optional TOML file (`--config`), then defaults: the first that sets a value
//! wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use intake_core::{CategoryTable, DistrictTable};
use intake_server::{Node, NodeConfig};
use serde::Deserialize;

#[derive(Args, Debug, Default)]
pub struct StartArgs {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long, env = "INTAKE_NODE_ID")]
    node_id: Option<u64>,
    /// Address to serve gRPC on (clients and peers). Default 127.0.0.1:7001.
    #[arg(long, env = "INTAKE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Address others reach this node at, if not --listen (e.g. behind NAT).
    #[arg(long, env = "INTAKE_ADVERTISE")]
    advertise: Option<String>,
    /// Directory for this node's data. Default ./intake-data/node-<id>.
    #[arg(long, env = "INTAKE_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Voters of a new cluster: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT. Ignored
    /// when the data directory already holds a cluster.
    #[arg(long, env = "INTAKE_INITIAL_CLUSTER")]
    initial_cluster: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics.
    #[arg(long, env = "INTAKE_HTTP")]
    http: Option<SocketAddr>,
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
    /// Microseconds a batch waits for more complaints once it has one. Default 2000.
    #[arg(long, env = "INTAKE_BATCH_LINGER_US")]
    batch_linger_us: Option<u64>,
    /// Raft proposals of one shard in flight at once. Default 8.
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
    /// sled cache size in MiB. Default 128.
    /// The downstream dispatch system (a dispatch.v1.DispatchService),
    /// HOST:PORT. Absent: committed tickets wait durably, and `intake status`
    /// says so.
    #[arg(long, env = "INTAKE_DISPATCH")]
    dispatch: Option<String>,
    #[arg(long, env = "INTAKE_CACHE_MB")]
    cache_mb: Option<u64>,
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
    listen: Option<SocketAddr>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    initial_cluster: Option<String>,
    http: Option<SocketAddr>,
    districts: Option<PathBuf>,
    shards: Option<u32>,
    replicas: Option<usize>,
    cache_mb: Option<u64>,
    log_json: Option<bool>,
    categories: Option<PathBuf>,
    key_retention_hours: Option<f64>,
    shard_queue: Option<usize>,
    node_queue: Option<usize>,
    batch_linger_us: Option<u64>,
    max_in_flight: Option<usize>,
    max_runtime_lag_ms: Option<u64>,
    emergency_runtime_lag_ms: Option<u64>,
    dispatch: Option<String>,
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

    let node_id = args.node_id.or(file.node_id).context("--node-id is required")?;
    if node_id == 0 {
        bail!("--node-id must be a positive integer");
    }
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7001)));
    let advertise = args
        .advertise
        .or(file.advertise)
        .unwrap_or_else(|| listen.to_string());
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(|| PathBuf::from(format!("intake-data/node-{node_id}")));
    let initial_cluster = match args.initial_cluster.or(file.initial_cluster) {
        Some(s) => parse_initial_cluster(&s)?,
        None => BTreeMap::from([(node_id, advertise.clone())]),
    };
    if let Some(addr) = initial_cluster.get(&node_id)
        && *addr != advertise
    {
        bail!("--initial-cluster gives node {node_id} the address {addr}, but it advertises {advertise}");
    }

    let mut cfg = NodeConfig::new(node_id, listen, data_dir, initial_cluster);
    cfg.advertise = advertise;
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
        cfg.cache_capacity_bytes = mb * 1024 * 1024;
    }
    if let Some(path) = args.categories.or(file.categories) {
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        cfg.categories = CategoryTable::from_csv(&text).with_context(|| format!("in {}", path.display()))?;
    }
    if let Some(h) = args.key_retention_hours.or(file.key_retention_hours) {
        if !(h.is_finite() && h > 0.0) {
            bail!("--key-retention-hours must be a positive number of hours");
        }
        cfg.key_retention = Duration::from_secs_f64(h * 3600.0);
    }
    if let Some(n) = args.shard_queue.or(file.shard_queue) {
        cfg.admission.shard_queue = n.max(1);
    }
    if let Some(n) = args.node_queue.or(file.node_queue) {
        cfg.admission.node_queue = n.max(1);
    }
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

    if let Some(target) = args.dispatch.or(file.dispatch) {
        if !target.contains(':') {
            bail!("--dispatch {target:?} must be HOST:PORT");
        }
        cfg.dispatch.target = Some(target);
    }

    if crate::cmd::wiped::is_empty(&cfg.data_dir) {
        crate::cmd::wiped::refuse_if_known(cfg.node_id, &cfg.data_dir, &cfg.initial_cluster).await?;
    }
    let node = Node::start(cfg).await?;
    tokio::select! {
        _ = crate::cmd::signal::stop() => {}
        // After a failed fsync the kernel may have dropped written pages, and
        // no later fsync can tell: the node stops at once instead of serving
        // on storage that may have lost acknowledged entries (PostgreSQL's rule
        // since "fsyncgate"). Its peers carry on; restarting it recovers from
        // what really reached the disk.
        e = node.storage().flusher().failure() => {
            tracing::error!(error = %e, "storage fsync failed; stopping this node");
            bail!("storage fsync failed ({e}); this node stopped so it cannot serve from storage that may have lost data. Check the disk, then restart it.");
        }
    }
    tracing::info!("stopping");
    node.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn file_config_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("node_id = 1\nlisten = \"127.0.0.1:7001\"").is_ok());
        assert!(toml::from_str::<FileConfig>("nodeid = 1").is_err());
    }
}
