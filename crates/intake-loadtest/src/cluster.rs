//! A local cluster of `intake start` processes and a reference sink
//! (`intake sink`) on loopback, owned by the run so faults can kill, freeze
//! and restart them. Every process is killed when the [`LocalCluster`] is
//! dropped, on success, error or panic alike.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;

use crate::engine::channel;
use crate::error::LoadError;

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
    dir: tempfile::TempDir,
    addrs: BTreeMap<u64, String>,
    /// Each node's HTTP door (`--api`), for `--protocol http`.
    api_addrs: BTreeMap<u64, String>,
    nodes: BTreeMap<u64, Proc>,
    sink_addr: String,
    sink_out: PathBuf,
    sink: Proc,
    /// Nodes killed by faults, most recent last.
    killed: Vec<u64>,
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
    /// directory), then waits until every shard has a leader.
    pub async fn spawn(bin: &Path, n: u64) -> Result<LocalCluster, LoadError> {
        if n == 0 {
            return Err(LoadError::Invalid("--spawn needs at least 1 node".into()));
        }
        let dir = tempfile::Builder::new()
            .prefix("intake-load-")
            .tempdir()
            .map_err(|e| LoadError::io("creating a temporary directory", e))?;
        let mut addrs = BTreeMap::new();
        let mut api_addrs = BTreeMap::new();
        for id in 1..=n {
            addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
            api_addrs.insert(id, format!("127.0.0.1:{}", free_port()?));
        }
        let sink_out = dir.path().join("sink.jsonl");
        let mut c = LocalCluster {
            bin: bin.to_path_buf(),
            sink_addr: format!("127.0.0.1:{}", free_port()?),
            sink_out,
            dir,
            nodes: addrs.keys().map(|id| (*id, Proc::none())).collect(),
            addrs,
            api_addrs,
            sink: Proc::none(),
            killed: Vec::new(),
        };
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
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
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
        let child = Command::new(&self.bin)
            .args(["start", "--node-id", &id.to_string(), "--listen", &addr])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node-{id}")))
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--dispatch", &self.sink_addr])
            .args([
                "--api",
                self.api_addrs.get(&id).map_or("127.0.0.1:0", String::as_str),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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
        let child = Command::new(&self.bin)
            .args(["sink", "--listen", &self.sink_addr, "--report-every", "0"])
            .arg("--out")
            .arg(&self.sink_out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
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
