//! The one harness of local clusters made of processes: `intake start`
//! nodes and a reference sink (`intake sink`) on loopback, owned by the
//! caller so that faults can kill, freeze and restart them. `intake load
//! --spawn` runs on it, and so do the process tests of `crates/intake`
//! (`tests/processes.rs`), with the flags they need ([`ClusterOptions`]).
//! Every process is killed when the [`LocalCluster`] is dropped, on success,
//! error or panic alike.
//!
//! The in-process clusters of `crates/intake-server/tests/common` are another
//! thing: nodes started inside the test process, so a test can reach into
//! a node's registry or stop one without a process to kill.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;

use crate::engine::channel;
use crate::error::LoadError;

/// The environment variable that test builds of a node (feature
/// `fault-injection`) read: while the file it names exists, the node's
/// fsyncs fail.
pub const FAIL_FSYNC_ENV: &str = "INTAKE_FAULT_FAIL_FSYNC_IF_EXISTS";

/// What a local cluster is made of, beyond its nodes.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Nodes `1..=nodes`.
    pub nodes: u64,
    /// A reference sink, which every node delivers to (`--dispatch`).
    pub sink: bool,
    /// The sink's `--report-every` (seconds; 0: no reports).
    pub sink_report_every: u32,
    /// Each node's HTTP doors (`--api`).
    pub api: bool,
    /// Each node's `/metrics` and `/ops` port (`--http`).
    pub http: bool,
    /// More `intake start` flags for every node.
    pub extra_args: Vec<String>,
    /// Environment variables for every node (e.g. `INTAKE_LOG`).
    pub envs: Vec<(String, String)>,
    /// Point each node's [`FAIL_FSYNC_ENV`] at
    /// [`LocalCluster::fail_fsync_trigger`].
    pub fault_triggers: bool,
}

struct Proc {
    child: Option<Child>,
    /// SIGSTOP'd and not yet SIGCONT'd.
    frozen: bool,
}

impl Proc {
    fn none() -> Proc {
        Proc {
            child: None,
            frozen: false,
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    /// kill -9: no shutdown path runs. SIGKILL also ends a stopped process.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.frozen = false;
    }

    fn signal(&mut self, sig: libc::c_int) -> Result<(), String> {
        let Some(c) = &self.child else {
            return Err("not running".into());
        };
        let pid = libc::pid_t::try_from(c.id()).map_err(|e| e.to_string())?;
        // SAFETY: kill(2) with a pid this process spawned and still owns
        // (not yet waited for, so the pid cannot have been reused).
        let rc = unsafe { libc::kill(pid, sig) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().to_string());
        }
        self.frozen = sig == libc::SIGSTOP;
        Ok(())
    }
}

pub struct LocalCluster {
    bin: PathBuf,
    options: ClusterOptions,
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    /// Each node's HTTP door (`--api`), for `--protocol http`.
    api_addrs: BTreeMap<u64, String>,
    /// Each node's `--http` port.
    http_addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Proc>,
    sink_addr: String,
    sink_out: PathBuf,
    sink: Proc,
    /// Nodes killed by faults, most recent last.
    killed: Vec<u64>,
    /// Nodes added to the running cluster ([`Self::join`]), with the
    /// members each joins through.
    joined: BTreeMap<u64, Vec<String>>,
}

/// A port the OS just had free on loopback (it may be taken again before
/// use; the window is small and a clash fails the start loudly).
fn free_port() -> Result<u16, LoadError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| LoadError::io("picking a free loopback port", e))
}

impl LocalCluster {
    /// Starts the sink and `n` nodes of a new cluster (data in a temporary
    /// directory), then waits until every shard has a leader: what `intake
    /// load --spawn` runs on.
    pub async fn spawn(bin: &Path, n: u64) -> Result<LocalCluster, LoadError> {
        if n == 0 {
            return Err(LoadError::Invalid("--spawn needs at least 1 node".into()));
        }
        let options = ClusterOptions {
            nodes: n,
            sink: true,
            api: true,
            ..ClusterOptions::default()
        };
        let mut c = LocalCluster::new(bin, options)?;
        c.start_sink()?;
        for id in 1..=n {
            c.start(id)?;
        }
        if let Err(e) = c.wait_leaders(Duration::from_secs(60)).await {
            // The error names the directory: keep it (and the logs in it)
            // for whoever reads the error; the processes still end.
            c.dir.disable_cleanup(true);
            return Err(e);
        }
        Ok(c)
    }

    /// A cluster with its directory and ports chosen and nothing running:
    /// start the nodes (and the sink) with [`Self::start`] and
    /// [`Self::start_sink`].
    pub fn new(bin: &Path, options: ClusterOptions) -> Result<LocalCluster, LoadError> {
        let dir = tempfile::Builder::new()
            .prefix("intake-load-")
            .tempdir()
            .map_err(|e| LoadError::io("creating a temporary directory", e))?;
        let ports = |on: bool| -> Result<BTreeMap<u64, String>, LoadError> {
            let n = if on { options.nodes } else { 0 };
            (1..=n)
                .map(|id| Ok((id, format!("127.0.0.1:{}", free_port()?))))
                .collect()
        };
        let addrs = ports(true)?;
        let api_addrs = ports(options.api)?;
        let http_addrs = ports(options.http)?;
        Ok(LocalCluster {
            bin: bin.to_path_buf(),
            sink_addr: format!("127.0.0.1:{}", free_port()?),
            sink_out: dir.path().join("sink.jsonl"),
            dir,
            nodes: addrs.keys().map(|id| (*id, Proc::none())).collect(),
            addrs,
            api_addrs,
            http_addrs,
            options,
            sink: Proc::none(),
            killed: Vec::new(),
            joined: BTreeMap::new(),
        })
    }

    /// Each node's gRPC address, by id.
    pub fn addrs(&self) -> &BTreeMap<u64, String> {
        &self.addrs
    }

    /// Each node's `--http` address, by id (empty without `http`).
    pub fn http_addrs(&self) -> &BTreeMap<u64, String> {
        &self.http_addrs
    }

    /// Each node's `--api` address, by id (empty without `api`).
    pub fn api_addrs(&self) -> &BTreeMap<u64, String> {
        &self.api_addrs
    }

    /// The nodes whose process runs (frozen ones included).
    pub fn running_nodes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, p)| p.running())
            .map(|(id, _)| *id)
            .collect()
    }

    pub fn is_running(&self, id: u64) -> bool {
        self.nodes.get(&id).is_some_and(Proc::running)
    }

    /// The file whose existence makes node `id`'s fsyncs fail (test builds,
    /// with `fault_triggers`).
    pub fn fail_fsync_trigger(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("fail-fsync-{id}"))
    }

    /// Node `id`'s log so far (both its output streams).
    pub fn node_log(&self, id: u64) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("node-{id}.log"))).unwrap_or_default()
    }

    /// Waits (polling, without a runtime) until node `id` exits by itself;
    /// its exit status.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Result<ExitStatus, LoadError> {
        let end = Instant::now() + timeout;
        // Bounded by `timeout`.
        loop {
            if let Some(status) = self.exited(id)? {
                return Ok(status);
            }
            if Instant::now() >= end {
                return Err(LoadError::NotReady {
                    seconds: timeout.as_secs(),
                    detail: format!("node {id} still running; log:\n{}", self.node_log(id)),
                });
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Node `id`'s exit status if its process has ended by itself (it is
    /// then no longer running), without waiting.
    pub fn exited(&mut self, id: u64) -> Result<Option<ExitStatus>, LoadError> {
        let p = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| LoadError::Invalid(format!("no node {id} in this cluster")))?;
        let Some(child) = p.child.as_mut() else {
            return Err(LoadError::Invalid(format!("node {id} is not running")));
        };
        let status = child
            .try_wait()
            .map_err(|e| LoadError::io(format!("waiting for node {id}"), e))?;
        if status.is_some() {
            p.child = None;
            p.frozen = false;
        }
        Ok(status)
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.addrs.values().cloned().collect()
    }

    /// The nodes' HTTP doors, in the order of [`Self::endpoints`].
    pub fn api_endpoints(&self) -> Vec<String> {
        self.api_addrs.values().cloned().collect()
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.addrs.keys().copied().collect()
    }

    pub fn sink_file(&self) -> &Path {
        &self.sink_out
    }

    /// Where node and sink logs are (gone once the cluster is dropped).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Endpoints of nodes that run and are not frozen.
    pub fn live_endpoints(&self) -> Vec<String> {
        self.live()
            .iter()
            .filter_map(|id| self.addrs.get(id).cloned())
            .collect()
    }

    fn live(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, p)| p.running() && !p.frozen)
            .map(|(id, _)| *id)
            .collect()
    }

    fn log(&self, name: &str) -> Result<std::fs::File, LoadError> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .map_err(|e| LoadError::io(format!("opening log {name}"), e))
    }

    fn initial_cluster(&self) -> String {
        self.addrs
            .iter()
            .filter(|(id, _)| !self.joined.contains_key(id))
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Adds node `id` to the running cluster: picks its ports and starts it
    /// with `--join` through the members `through` (restarts pass the same
    /// flag, which a node with its data directory ignores).
    pub fn join(&mut self, id: u64, through: &[u64]) -> Result<(), LoadError> {
        if self.addrs.contains_key(&id) {
            return Err(LoadError::Invalid(format!(
                "node {id} is already in this cluster"
            )));
        }
        let through = through
            .iter()
            .map(|t| {
                self.addrs
                    .get(t)
                    .cloned()
                    .ok_or_else(|| LoadError::Invalid(format!("no node {t} to join through")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        if self.options.api {
            self.api_addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        if self.options.http {
            self.http_addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        self.nodes.insert(id, Proc::none());
        self.joined.insert(id, through);
        self.start(id)
    }

    /// Forgets node `id` after it was removed from the cluster: its
    /// addresses and process leave this harness (its logs stay).
    pub fn forget(&mut self, id: u64) {
        self.nodes.remove(&id);
        self.addrs.remove(&id);
        self.api_addrs.remove(&id);
        self.http_addrs.remove(&id);
        self.joined.remove(&id);
    }

    /// Starts node `id` (or restarts it with its data directory).
    pub fn start(&mut self, id: u64) -> Result<(), LoadError> {
        let addr = self
            .addrs
            .get(&id)
            .cloned()
            .ok_or_else(|| LoadError::Invalid(format!("no node {id} in this cluster")))?;
        if self.nodes.get(&id).is_some_and(Proc::running) {
            return Err(LoadError::Invalid(format!("node {id} is already running")));
        }
        let log = self.log(&format!("node-{id}.log"))?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["start", "--node-id", &id.to_string(), "--listen", &addr])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{id}")));
        match self.joined.get(&id) {
            Some(through) => cmd.args(["--join", &through.join(",")]),
            None => cmd.args(["--initial-cluster", &self.initial_cluster()]),
        };
        if self.options.sink {
            cmd.args(["--dispatch", &self.sink_addr]);
        }
        if let Some(api) = self.api_addrs.get(&id) {
            cmd.args(["--api", api]);
        }
        if let Some(http) = self.http_addrs.get(&id) {
            cmd.args(["--http", http]);
        }
        if self.options.fault_triggers {
            cmd.env(FAIL_FSYNC_ENV, self.fail_fsync_trigger(id));
        }
        let child = cmd
            .args(&self.options.extra_args)
            .envs(self.options.envs.iter().cloned())
            .stdin(Stdio::null())
            // Both streams into the node's log: what an operator keeps.
            .stdout(log_copy(&log, &format!("node {id}"))?)
            .stderr(log)
            .spawn()
            .map_err(|source| LoadError::Spawn {
                what: format!("node {id}"),
                bin: self.bin.clone(),
                source,
            })?;
        self.nodes.insert(
            id,
            Proc {
                child: Some(child),
                frozen: false,
            },
        );
        self.killed.retain(|k| *k != id);
        Ok(())
    }

    /// kill -9 of node `id`.
    pub fn kill(&mut self, id: u64) -> Result<(), LoadError> {
        match self.nodes.get_mut(&id) {
            Some(p) if p.running() => {
                p.kill();
                self.killed.push(id);
                Ok(())
            }
            _ => Err(LoadError::Invalid(format!("node {id} is not running"))),
        }
    }

    /// The node most recently killed and not restarted since.
    pub fn last_killed(&self) -> Option<u64> {
        self.killed.last().copied()
    }

    pub fn freeze(&mut self, id: u64) -> Result<(), LoadError> {
        self.signal_node(id, libc::SIGSTOP)
    }

    pub fn thaw(&mut self, id: u64) -> Result<(), LoadError> {
        self.signal_node(id, libc::SIGCONT)
    }

    fn signal_node(&mut self, id: u64, sig: libc::c_int) -> Result<(), LoadError> {
        let p = self
            .nodes
            .get_mut(&id)
            .ok_or_else(|| LoadError::Invalid(format!("no node {id} in this cluster")))?;
        p.signal(sig)
            .map_err(|e| LoadError::Invalid(format!("node {id}: {e}")))
    }

    pub fn start_sink(&mut self) -> Result<(), LoadError> {
        if self.sink.running() {
            return Err(LoadError::Invalid("the sink is already running".into()));
        }
        let log = self.log("sink.log")?;
        let every = self.options.sink_report_every.to_string();
        let child = Command::new(&self.bin)
            .args(["sink", "--listen", &self.sink_addr, "--report-every", &every])
            .arg("--out")
            .arg(&self.sink_out)
            .stdin(Stdio::null())
            .stdout(log_copy(&log, "the sink")?)
            .stderr(log)
            .spawn()
            .map_err(|source| LoadError::Spawn {
                what: "the sink".into(),
                bin: self.bin.clone(),
                source,
            })?;
        self.sink = Proc {
            child: Some(child),
            frozen: false,
        };
        Ok(())
    }

    pub fn stop_sink(&mut self) -> Result<(), LoadError> {
        if !self.sink.running() {
            return Err(LoadError::Invalid("the sink is not running".into()));
        }
        self.sink.kill();
        Ok(())
    }

    pub fn freeze_sink(&mut self) -> Result<(), LoadError> {
        self.sink
            .signal(libc::SIGSTOP)
            .map_err(|e| LoadError::Invalid(format!("sink: {e}")))
    }

    pub fn thaw_sink(&mut self) -> Result<(), LoadError> {
        self.sink
            .signal(libc::SIGCONT)
            .map_err(|e| LoadError::Invalid(format!("sink: {e}")))
    }

    /// Ends what faults left in place, except killed nodes: frozen processes
    /// resume and a stopped sink restarts, so that verification measures
    /// what was lost rather than a fault still in force.
    pub fn quiesce(&mut self) -> Vec<String> {
        let mut done = Vec::new();
        let frozen: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, p)| p.frozen)
            .map(|(id, _)| *id)
            .collect();
        for id in frozen {
            if self.thaw(id).is_ok() {
                done.push(format!("node {id} resumed"));
            }
        }
        if self.sink.frozen && self.thaw_sink().is_ok() {
            done.push("sink resumed".into());
        }
        if !self.sink.running() && self.start_sink().is_ok() {
            done.push("sink restarted".into());
        }
        done
    }

    /// The leader of the shard holding `district`, as live nodes see it.
    pub async fn leader_of(&self, district: &str, timeout: Duration) -> Result<u64, LoadError> {
        let end = Instant::now() + timeout;
        let mut last = String::from("no status answer");
        // Bounded by `timeout`.
        while Instant::now() < end {
            let live = self.live();
            if let Some(s) = cluster_status(&self.live_endpoints()).await {
                match s
                    .shards
                    .iter()
                    .find(|sh| sh.districts.iter().any(|d| d == district))
                {
                    Some(sh) => match sh.leader {
                        Some(l) if live.contains(&l) => return Ok(l),
                        other => last = format!("shard {} has leader {other:?}", sh.id),
                    },
                    None => last = format!("no shard holds district {district}"),
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(LoadError::NotReady {
            seconds: timeout.as_secs(),
            detail: last,
        })
    }

    /// Waits until node `id` answers a status request itself.
    pub async fn wait_answering(&self, id: u64, timeout: Duration) -> Result<(), LoadError> {
        let addr = self
            .addrs
            .get(&id)
            .cloned()
            .ok_or_else(|| LoadError::Invalid(format!("no node {id} in this cluster")))?;
        let end = Instant::now() + timeout;
        // Bounded by `timeout`.
        while Instant::now() < end {
            if cluster_status(std::slice::from_ref(&addr)).await.is_some() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(LoadError::NotReady {
            seconds: timeout.as_secs(),
            detail: format!(
                "node {id} does not answer (logs in {})",
                self.dir.path().display()
            ),
        })
    }

    /// Waits until every shard has a leader among the live nodes.
    pub async fn wait_leaders(&self, timeout: Duration) -> Result<(), LoadError> {
        let end = Instant::now() + timeout;
        let mut last = String::from("no status answer");
        // Bounded by `timeout`.
        while Instant::now() < end {
            let live = self.live();
            if let Some(s) = cluster_status(&self.live_endpoints()).await {
                let leaderless: Vec<u32> = s
                    .shards
                    .iter()
                    .filter(|sh| !sh.leader.is_some_and(|l| live.contains(&l)))
                    .map(|sh| sh.id)
                    .collect();
                if leaderless.is_empty() && !s.shards.is_empty() {
                    return Ok(());
                }
                last = format!("shards without a live leader: {leaderless:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err(LoadError::NotReady {
            seconds: timeout.as_secs(),
            detail: format!("{last} (logs in {})", self.dir.path().display()),
        })
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for p in self.nodes.values_mut() {
            p.kill();
        }
        self.sink.kill();
    }
}

/// A second handle on a log file, for a process's other stream.
fn log_copy(log: &std::fs::File, what: &str) -> Result<std::fs::File, LoadError> {
    log.try_clone()
        .map_err(|e| LoadError::io(format!("sharing the log of {what}"), e))
}

/// `intake node remove`: asks the first of `endpoints` that answers to
/// remove node `id`, then waits (at most `timeout`) until the map no
/// longer lists it.
pub async fn remove_node(endpoints: &[String], id: u64, timeout: Duration) -> Result<(), LoadError> {
    let mut asked = Err(LoadError::Invalid(format!(
        "no endpoint to remove node {id} through"
    )));
    for e in endpoints {
        let Ok(ch) = channel(e) else { continue };
        let mut c = AdminServiceClient::with_interceptor(ch, crate::engine::auth());
        let mut req = tonic::Request::new(pb::RemoveNodeRequest { id, force: false });
        req.set_timeout(Duration::from_secs(10));
        match c.remove_node(req).await {
            Ok(_) => {
                asked = Ok(());
                break;
            }
            Err(s) => asked = Err(LoadError::Invalid(format!("removing node {id}: {}", s.message()))),
        }
    }
    asked?;
    let end = Instant::now() + timeout;
    // Bounded by `timeout`.
    while Instant::now() < end {
        if let Some(s) = cluster_status(endpoints).await
            && !s.nodes.iter().any(|n| n.id == id)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(LoadError::NotReady {
        seconds: timeout.as_secs(),
        detail: format!("node {id} still on the cluster map"),
    })
}

/// The cluster's status from the first of `endpoints` that answers within
/// two seconds.
pub async fn cluster_status(endpoints: &[String]) -> Option<pb::ClusterStatusResponse> {
    for e in endpoints {
        let Ok(ch) = channel(e) else { continue };
        let mut c = AdminServiceClient::with_interceptor(ch, crate::engine::auth());
        let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: false });
        req.set_timeout(Duration::from_secs(2));
        if let Ok(Ok(r)) = tokio::time::timeout(Duration::from_secs(3), c.cluster_status(req)).await {
            return Some(r.into_inner());
        }
    }
    None
}
