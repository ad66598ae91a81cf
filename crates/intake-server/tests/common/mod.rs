//! An in-process cluster of real nodes: real sled on temp dirs, real gRPC on
//! loopback ports, real Raft.
//!
//! Not the process harness (`intake_loadtest::cluster::LocalCluster`, which
//! `intake load --spawn` and `crates/intake/tests/processes.rs` share): these
//! nodes run inside the test process, so a test can read a node's registry
//! and metrics, tune Raft per node and stop a node without a binary to spawn.

#![allow(dead_code)]

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_server::{Node, NodeConfig, RaftTuning};
use tonic::transport::Channel;

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub configs: BTreeMap<u64, NodeConfig>,
    pub nodes: BTreeMap<u64, Node>,
}

/// A free loopback port. The listener is dropped before the node binds it; on
/// a shared machine another process could take it in between, so callers retry.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=info`).
pub fn init_tracing() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

impl TestCluster {
    /// `n` nodes, one shard.
    pub async fn start(n: u64, tuning: RaftTuning) -> TestCluster {
        Self::start_with(n, 1, tuning).await
    }

    /// `n` nodes, `shards` shards of min(3, n) replicas.
    pub async fn start_with(n: u64, shards: u32, tuning: RaftTuning) -> TestCluster {
        Self::start_configured(n, shards, tuning, |_| {}).await
    }

    /// As `start_with`, with `adjust` applied to every node's config.
    pub async fn start_configured(
        n: u64,
        shards: u32,
        tuning: RaftTuning,
        adjust: impl Fn(&mut NodeConfig),
    ) -> TestCluster {
        init_tracing();
        let dir = tempfile::tempdir().unwrap();
        let addrs: BTreeMap<u64, SocketAddr> = (1..=n)
            .map(|id| (id, SocketAddr::from(([127, 0, 0, 1], free_port()))))
            .collect();
        let initial: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();
        let mut configs = BTreeMap::new();
        for (id, addr) in &addrs {
            let mut cfg = NodeConfig::new(*id, *addr, dir.path().join(format!("node-{id}")), initial.clone());
            cfg.raft = tuning.clone();
            cfg.shards = shards;
            cfg.cache_capacity_bytes = 16 * 1024 * 1024;
            adjust(&mut cfg);
            configs.insert(*id, cfg);
        }
        let mut cluster = TestCluster {
            dir,
            configs,
            nodes: BTreeMap::new(),
        };
        for id in 1..=n {
            cluster.start_node(id).await;
        }
        cluster
    }

    /// Starts (or restarts) a node from its config and data dir. A node that
    /// was just stopped may still be releasing its store, so this retries.
    pub async fn start_node(&mut self, id: u64) {
        let cfg = self.configs[&id].clone();
        let mut last = String::new();
        for _ in 0..50 {
            match Node::start(cfg.clone()).await {
                Ok(node) => {
                    self.nodes.insert(id, node);
                    return;
                }
                Err(e) => {
                    last = e.to_string();
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        panic!("node {id} did not start: {last}");
    }

    pub async fn stop_node(&mut self, id: u64) {
        if let Some(node) = self.nodes.remove(&id) {
            node.shutdown().await;
        }
    }

    pub fn addr(&self, id: u64) -> String {
        self.configs[&id].advertise.clone()
    }

    pub async fn client(&self, id: u64) -> IntakeServiceClient<Channel> {
        let ch = Channel::from_shared(format!("http://{}", self.addr(id)))
            .unwrap()
            .connect_lazy();
        IntakeServiceClient::new(ch)
    }

    /// The leader of shard 0 as the running nodes agree on it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        self.wait_shard_leader(0, timeout).await
    }

    /// The leader of `shard` as its running replicas agree on it.
    pub async fn wait_shard_leader(&self, shard: u32, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let mut seen = Vec::new();
            for node in self.nodes.values() {
                if let Some(raft) = node.raft(shard) {
                    seen.push(raft.metrics().borrow_watched().current_leader);
                }
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && self.nodes.contains_key(l)
            {
                return *l;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no agreed leader within {timeout:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every running node has applied at least `index` on shard 0.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let behind: Vec<(u64, Option<u64>)> = self
                .nodes
                .iter()
                .filter_map(|(id, n)| {
                    let applied = n
                        .raft(0)?
                        .metrics()
                        .borrow_watched()
                        .last_applied
                        .map(|l| l.index);
                    (applied < Some(index)).then_some((*id, applied))
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "nodes behind index {index}: {behind:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop_node(id).await;
        }
    }
}

pub fn complaint(key: &str, district: &str, text: &str) -> pb::Complaint {
    pb::Complaint {
        idempotency_key: key.to_string(),
        channel: "phone".into(),
        district_code: district.into(),
        category: "noise".into(),
        text: text.into(),
        ..Default::default()
    }
}

/// Submits with retries on UNAVAILABLE (e.g. while the cluster elects) and on
/// RESOURCE_EXHAUSTED (a loaded test machine may shed ordinary work), always
/// with the same key, as an adapter would.
pub async fn submit(
    client: &mut IntakeServiceClient<Channel>,
    c: pb::Complaint,
) -> Result<pb::SubmitResponse, tonic::Status> {
    let mut last = None;
    for _ in 0..40 {
        let mut req = tonic::Request::new(pb::SubmitRequest {
            complaint: Some(c.clone()),
        });
        req.set_timeout(Duration::from_secs(5));
        match client.submit(req).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
                ) =>
            {
                last = Some(s);
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            Err(s) => return Err(s),
        }
    }
    Err(last.unwrap_or_else(|| tonic::Status::unknown("no attempt")))
}

pub async fn get_local(client: &mut IntakeServiceClient<Channel>, ticket: &str) -> Option<pb::Ticket> {
    client
        .get_ticket(pb::GetTicketRequest {
            ticket_id: ticket.to_string(),
            local: true,
        })
        .await
        .ok()
        .and_then(|r| r.into_inner().ticket)
}

pub fn fast_tuning() -> RaftTuning {
    RaftTuning {
        heartbeat_ms: 100,
        election_timeout_min_ms: 800,
        election_timeout_max_ms: 1600,
        ..Default::default()
    }
}

pub fn data_dir(cluster: &TestCluster, id: u64) -> PathBuf {
    cluster.configs[&id].data_dir.clone()
}
