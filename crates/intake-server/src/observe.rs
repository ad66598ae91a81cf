//! Metrics: what operators graph. Names carry units and `_total` per
//! Prometheus conventions.

use openraft::async_runtime::WatchReceiver;
use std::net::SocketAddr;
use std::time::Duration;

use intake_cluster::Groups;
use intake_storage::{NodeId, NodeStorage};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tonic::Status;

/// Submissions refused with RESOURCE_EXHAUSTED by any node of this process
/// (forwarded ones count on each node that answered them): for `intake
/// demo`, which has no metrics scraper to ask.
static SHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn shed_total() -> u64 {
    SHED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one submission by outcome and records its latency.
pub fn record_submit<T>(result: &Result<T, Status>, started: std::time::Instant) {
    if matches!(result, Err(s) if s.code() == tonic::Code::ResourceExhausted) {
        SHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let outcome = match result {
        Ok(_) => "accepted",
        Err(s) => match s.code() {
            tonic::Code::InvalidArgument => "invalid",
            tonic::Code::AlreadyExists => "conflict",
            tonic::Code::ResourceExhausted => "shed",
            tonic::Code::Unavailable => "unavailable",
            tonic::Code::DeadlineExceeded => "deadline",
            _ => "error",
        },
    };
    metrics::counter!("intake_submit_total", "outcome" => outcome).increment(1);
    metrics::histogram!("intake_submit_duration_seconds").record(started.elapsed().as_secs_f64());
}

/// Serves `/metrics` on `addr`. Only one exporter can exist per process.
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Latencies get fixed buckets (aggregatable across nodes); other
        // histograms, such as entries per flush, are summaries.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install()
        .map_err(|e| e.to_string())
}

/// Publishes each group's Raft progress and the store's size once a second,
/// until `stop` fires.
pub async fn report_loop(
    node: NodeId,
    groups: Groups,
    storage: NodeStorage,
    router: crate::router::Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        for (shard, raft) in groups.all() {
            let m = raft.metrics().borrow_watched().clone();
            let labels = [("node", node.to_string()), ("shard", shard.to_string())];
            metrics::gauge!("intake_raft_term", &labels).set(m.current_term as f64);
            metrics::gauge!("intake_raft_commit_index", &labels)
                .set(m.local_committed.map_or(0, |l| l.index) as f64);
            metrics::gauge!("intake_raft_applied_index", &labels)
                .set(m.last_applied.map_or(0, |l| l.index) as f64);
            metrics::gauge!("intake_raft_last_log_index", &labels).set(m.last_log_index.unwrap_or(0) as f64);
            let leads = m.current_leader == Some(node);
            metrics::gauge!("intake_raft_is_leader", &labels).set(if leads { 1.0 } else { 0.0 });
        }
        for (shard, emergency, ordinary) in router.queues() {
            let shard = shard.to_string();
            metrics::gauge!("intake_admission_queued_complaints", "shard" => shard.clone(), "class" => "emergency")
                .set(emergency as f64);
            metrics::gauge!("intake_admission_queued_complaints", "shard" => shard, "class" => "ordinary")
                .set(ordinary as f64);
        }
        // The flusher counts flushes itself (intake_storage_flushes_total).
        storage.report_metrics();
    }
}
