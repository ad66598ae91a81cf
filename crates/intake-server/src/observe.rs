//! Metrics: what operators graph. Names carry units and `_total` per
//! Prometheus conventions; every family is described in [`FAMILIES`], the
//! one place to add a new metric, so `/metrics` has HELP for each and
//! `promtool check metrics` stays clean. Labels take values from fixed sets
//! only (node and shard ids, outcomes, classes), never from request fields.

use openraft::async_runtime::WatchReceiver;
use std::time::Duration;

use intake_cluster::Groups;
use intake_storage::{NodeId, NodeStorage};
use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Submissions refused with RESOURCE_EXHAUSTED by any node of this process
/// (forwarded ones count on each node that answered them): for `intake
/// demo`, which has no metrics scraper to ask.
static SHED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn shed_total() -> u64 {
    SHED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Counts one submission by outcome and records its latency.
pub fn record_submit(failed: Option<tonic::Code>, started: std::time::Instant) {
    use tonic::Code;
    if failed == Some(Code::ResourceExhausted) {
        SHED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let outcome = match failed {
        None => "accepted",
        Some(Code::InvalidArgument) => "invalid",
        Some(Code::AlreadyExists) => "conflict",
        Some(Code::ResourceExhausted) => "shed",
        Some(Code::Unavailable) => "unavailable",
        Some(Code::DeadlineExceeded) => "deadline",
        Some(_) => "error",
    };
    metrics::counter!("intake_submit_total", "outcome" => outcome).increment(1);
    metrics::histogram!("intake_submit_duration_seconds").record(started.elapsed().as_secs_f64());
}

/// Counts one refused complaint: which bound refused it, for which class,
/// from how far (emergencies refused are what a surge must not show).
pub fn record_refusal(reason: &crate::admission::Reason, class: intake_core::Priority, hops: u32) {
    metrics::counter!(
        "intake_submit_refused_total",
        "reason" => reason.label(),
        "class" => class.label(),
        "hops" => hops_label(hops)
    )
    .increment(1);
}

/// The process's Prometheus recorder, installed on first use (one per
/// process: nodes started in one process, as in `intake demo` and the
/// tests, share it). `/metrics` renders it (see `ops.rs`).
pub fn recorder() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    static INSTALL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());
    let _once = INSTALL.lock();
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = PrometheusBuilder::new()
        // Latencies get fixed buckets (aggregatable across nodes); other
        // histograms, such as entries per flush, are summaries.
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_string()),
            &[
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    // Descriptions go to the installed recorder; given before it exists
    // they would be lost.
    describe_all();
    // The exporter's upkeep (draining histograms), which its own HTTP
    // listener used to do.
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                upkeep.run_upkeep();
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// The kind of a metric family, as the `metrics` macros record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Exported as a Prometheus histogram when the name ends in `_seconds`
    /// (fixed buckets, see [`serve_metrics`]), else as a summary.
    Histogram,
}

/// One metric family the node exports.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// The label names, for the reader; values come from fixed sets.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn family(
    name: &'static str,
    kind: Kind,
    unit: Unit,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        kind,
        unit,
        labels,
        help,
    }
}

use Kind::{Counter, Gauge, Histogram};

/// Every family the node exports, described once.
pub const FAMILIES: &[Family] = &[
    // The door.
    family(
        "intake_auth_refused_total",
        Counter,
        Unit::Count,
        &["code"],
        "Calls the authentication gate refused, by answer: unauthenticated (no or unknown token, or not a peer on an internal service), permission_denied (role), resource_exhausted (the token's rate limit), plaintext (a call without TLS to a TLS port).",
    ),
    family(
        "intake_submit_total",
        Counter,
        Unit::Count,
        &["outcome"],
        "Complaints answered by this node (Submit calls and SubmitBatch items), by outcome: accepted, invalid, conflict, shed, unavailable, deadline, error.",
    ),
    family(
        "intake_submit_refused_total",
        Counter,
        Unit::Count,
        &["reason", "class", "hops"],
        "Complaints this node refused (RESOURCE_EXHAUSTED), by the bound that refused them (node_busy, out_of_cpu, shard_slow, shard_at_capacity, rate_limited, peer: a leader's refusal passed on), class (emergency, ordinary) and hops (0: from a client, 1 or 2: forwarded).",
    ),
    family(
        "intake_submit_duration_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Time from a submission's handler start to its answer, whatever the outcome.",
    ),
    family(
        "intake_submit_batch_seconds",
        Histogram,
        Unit::Seconds,
        &["hops"],
        "Time to answer one SubmitBatch call, by hops (0: from a client, 1 or 2: forwarded by another node).",
    ),
    family(
        "intake_handler_delay_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Time from a call's arrival at the server to its handler's start (reading the body, waiting for a worker).",
    ),
    family(
        "intake_key_claims_total",
        Counter,
        Unit::Count,
        &[],
        "Idempotency keys claimed at a home shard other than their complaint's (keys that name no district of theirs): each costs a second Raft write.",
    ),
    family(
        "intake_forward_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Time of submissions forwarded to the shard leader on another node, until its answer.",
    ),
    family(
        "intake_runtime_lag_seconds",
        Gauge,
        Unit::Seconds,
        &[],
        "How late the node's runtime fires a 20 ms timer (smoothed); above --max-runtime-lag-ms ordinary complaints are refused.",
    ),
    // Batching and admission on a shard's leader.
    family(
        "intake_admission_queued_complaints",
        Gauge,
        Unit::Count,
        &["shard", "class"],
        "Complaints waiting in a shard's queue on this node, by class (emergency, ordinary).",
    ),
    family(
        "intake_submit_expired_total",
        Counter,
        Unit::Count,
        &["shard"],
        "Queued complaints dropped before proposal because their deadline had passed.",
    ),
    family(
        "intake_batch_complaints",
        Histogram,
        Unit::Count,
        &["shard"],
        "Complaints per proposed Raft entry.",
    ),
    family(
        "intake_queue_wait_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Time the oldest complaint of a batch waited in its shard's queue before the batch was proposed.",
    ),
    family(
        "intake_commit_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Time from proposing a batch to Raft until it was committed and applied.",
    ),
    // Raft progress, per group this node hosts.
    family(
        "intake_raft_term",
        Gauge,
        Unit::Count,
        &["node", "shard"],
        "The Raft group's current term on this node.",
    ),
    family(
        "intake_raft_commit_index",
        Gauge,
        Unit::Count,
        &["node", "shard"],
        "The highest log index this node knows committed in the group.",
    ),
    family(
        "intake_raft_applied_index",
        Gauge,
        Unit::Count,
        &["node", "shard"],
        "The highest log index this node applied to the group's state machine.",
    ),
    family(
        "intake_raft_last_log_index",
        Gauge,
        Unit::Count,
        &["node", "shard"],
        "The highest log index in this node's copy of the group's log.",
    ),
    family(
        "intake_raft_is_leader",
        Gauge,
        Unit::Count,
        &["node", "shard"],
        "1 if this node leads the group, else 0.",
    ),
    // What the city is calling about, and its surges (surge_watch.rs).
    family(
        "intake_complaints_total",
        Counter,
        Unit::Count,
        &["district", "category_class"],
        "Committed complaints by district code (from the district table) and category class (emergency, ordinary), counted by the node leading the district's shard once each second is final: sum over nodes for the cluster.",
    ),
    family(
        "intake_surges_active",
        Gauge,
        Unit::Count,
        &[],
        "Surges (a district, or a category within one, far above its baseline) this node's detector holds in progress.",
    ),
    family(
        "intake_dispatch_alerts_total",
        Counter,
        Unit::Count,
        &["outcome"],
        "Surge alerts sent to the downstream's optional DispatchService.Alert, by outcome: delivered, unimplemented (the downstream lacks the call; not asked again), failed.",
    ),
    // Delivery to the downstream.
    family(
        "intake_dispatch_lag_tickets",
        Gauge,
        Unit::Count,
        &["shard"],
        "Committed tickets of the shard the downstream has not acknowledged yet.",
    ),
    family(
        "intake_dispatch_lag_seconds",
        Gauge,
        Unit::Seconds,
        &["shard"],
        "Age of the shard's oldest committed ticket the downstream has not acknowledged yet.",
    ),
    family(
        "intake_dispatch_delivered_total",
        Counter,
        Unit::Count,
        &["shard"],
        "Tickets the downstream acknowledged, counted by this node while it led the shard.",
    ),
    family(
        "intake_dispatch_failures_total",
        Counter,
        Unit::Count,
        &["shard"],
        "Deliver calls to the downstream that failed; the dispatcher backs off after each.",
    ),
    // Storage.
    family(
        "intake_storage_disk_bytes",
        Gauge,
        Unit::Bytes,
        &[],
        "Size of this node's store on disk.",
    ),
    family(
        "intake_storage_flushes_total",
        Counter,
        Unit::Count,
        &[],
        "sled group commits done (one sled flush plus one fdatasync each): state-machine and node metadata writes that must be durable, not the Raft log.",
    ),
    family(
        "intake_storage_flush_duration_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Duration of one group commit (sled flush plus fdatasync).",
    ),
    family(
        "intake_storage_entries_per_flush",
        Histogram,
        Unit::Count,
        &[],
        "Callers served by one sled group commit.",
    ),
    family(
        "intake_raftlog_fsyncs_total",
        Counter,
        Unit::Count,
        &[],
        "Write rounds of the Raft log engine, each one write and one fdatasync serving every shard's appends, votes, truncations and purges waiting at that moment.",
    ),
    family(
        "intake_raftlog_bytes_total",
        Counter,
        Unit::Bytes,
        &[],
        "Bytes written to the Raft log engine's segment files.",
    ),
    family(
        "intake_forward_call_submissions",
        Histogram,
        Unit::Count,
        &[],
        "Forwarded submissions that shared one SubmitBatch call to a peer.",
    ),
    family(
        "intake_raftlog_round_seconds",
        Histogram,
        Unit::Seconds,
        &[],
        "Duration of one Raft log write round (encode, write, fdatasync, index update).",
    ),
    // The process, under the name Prometheus' client libraries give it, so
    // stock dashboards and alerts find it.
    family(
        "process_resident_memory_bytes",
        Gauge,
        Unit::Bytes,
        &[],
        "Resident memory of this node's process (VmRSS), against the container's memory limit.",
    ),
];

/// Gives the installed recorder the HELP text and unit of every family.
pub fn describe_all() {
    for f in FAMILIES {
        match f.kind {
            Counter => metrics::describe_counter!(f.name, f.unit, f.help),
            Gauge => metrics::describe_gauge!(f.name, f.unit, f.help),
            Histogram => metrics::describe_histogram!(f.name, f.unit, f.help),
        }
    }
}

/// The `hops` label of a forwarded call. The count comes from a request
/// header anyone can set, so it is clamped to the values the router uses
/// (0 to `MAX_HOPS`): a label must not take unbounded values.
pub fn hops_label(hops: u32) -> &'static str {
    match hops {
        0 => "0",
        1 => "1",
        _ => "2",
    }
}

/// Publishes each group's Raft progress and the store's size once a second,
/// until `stop` fires.
pub async fn report_loop(
    node: NodeId,
    groups: Groups,
    storage: NodeStorage,
    registry: crate::registry::Registry,
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
        for (shard, emergency, ordinary) in registry.queues() {
            let shard = shard.to_string();
            // Counters of rare events exist from the start, at zero, so
            // that `increase()` sees their first event (Prometheus practice).
            metrics::counter!("intake_submit_expired_total", "shard" => shard.clone()).increment(0);
            metrics::counter!("intake_dispatch_failures_total", "shard" => shard.clone()).increment(0);
            metrics::gauge!("intake_admission_queued_complaints", "shard" => shard.clone(), "class" => "emergency")
                .set(emergency as f64);
            metrics::gauge!("intake_admission_queued_complaints", "shard" => shard, "class" => "ordinary")
                .set(ordinary as f64);
        }
        // The flusher counts flushes itself (intake_storage_flushes_total);
        // since the Raft log left sled they are rare, so the family starts
        // at zero like the other rare-event counters.
        metrics::counter!("intake_storage_flushes_total").increment(0);
        // Refusals by the auth gate are rare too (and absent on an open node).
        for code in [
            "unauthenticated",
            "permission_denied",
            "resource_exhausted",
            "plaintext",
        ] {
            metrics::counter!("intake_auth_refused_total", "code" => code).increment(0);
        }
        // So are refusals of emergencies, which a surge must not show: each
        // reason and class from a client starts at zero.
        for reason in crate::admission::Reason::LABELS {
            for class in [intake_core::Priority::Emergency, intake_core::Priority::Ordinary] {
                metrics::counter!(
                    "intake_submit_refused_total",
                    "reason" => reason,
                    "class" => class.label(),
                    "hops" => "0"
                )
                .increment(0);
            }
        }
        storage.report_metrics();
        if let Some(bytes) = resident_bytes() {
            metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
        }
    }
}

/// The process's resident set (`VmRSS` in `/proc/self/status`), where
/// there is one (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}
