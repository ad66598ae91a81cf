//! The load engine behind `intake load`: synthetic complaints
//! (`workload`), open- and closed-loop phases (`engine`), counting
//! (`tally`), scenario files (`scenario`), a local cluster to break
//! (`cluster`, `faults`), proof that nothing acknowledged was lost
//! (`verify`) and the report (`report`). The binary only parses flags and
//! prints [`Summary::lines`].

pub mod alerts;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod faults;
pub mod http;
pub mod leaders;
pub mod report;
pub mod scenario;
pub mod tally;
pub mod verify;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
pub use intake_client::{RetryBudgetConfig, ThrottleConfig};
use intake_core::category::CategoryTable;
use intake_core::district::DistrictTable;
use tokio::sync::Mutex;

pub use error::LoadError;
pub use scenario::{Mix, Phase, Rate, Scenario};

use crate::cluster::LocalCluster;
use crate::engine::Engine;
use crate::faults::FaultMark;
use crate::tally::Tally;
use crate::verify::SinkCheck;

/// What the load is sent to.
pub enum Target {
    /// A running cluster; faults cannot be injected into it.
    Endpoints(Vec<String>),
    /// `nodes` new nodes and a reference sink started from `bin`
    /// (`intake start` / `intake sink`), killed when the run ends.
    Spawn { bin: PathBuf, nodes: u64 },
}

pub struct RunOptions {
    pub target: Target,
    /// The JSON-lines file of an external sink to check (with `Endpoints`).
    pub sink_file: Option<PathBuf>,
    /// How long to wait for every shard's dispatch lag to reach 0.
    pub drain_timeout: Duration,
    /// Copy the spawned processes' logs here before they are removed.
    pub keep_logs: Option<PathBuf>,
    /// The retry budget shared by the run's requests; `None` retries
    /// whenever the deadline and the phase's attempts allow.
    pub retry_budget: Option<RetryBudgetConfig>,
    /// One attempt's limit within the deadline (`intake load
    /// --attempt-timeout-ms`); `None`: the whole deadline.
    pub attempt_timeout: Option<Duration>,
    /// Client-side throttling of ordinary complaints, as `intake-client`
    /// does it (`None`: `intake load --no-client-throttle`).
    pub client_throttle: Option<ThrottleConfig>,
    /// Send each complaint to its shard leader's endpoint first, as
    /// `intake-client` does (`intake load --route-to-leaders`); `false`:
    /// the endpoints in turn.
    pub route_to_leaders: bool,
    /// The door complaints go through.
    pub protocol: Protocol,
    /// With `Endpoints` and `Protocol::Http`: each node's HTTP door
    /// (`--api`), in the order of the gRPC endpoints.
    pub api_endpoints: Vec<String>,
}

/// Which of a node's doors the load goes through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Grpc,
    /// The HTTP/JSON API (`intake-http`).
    Http,
}

/// A finished run, verified.
pub struct Summary {
    pub scenario: Scenario,
    pub tally: Tally,
    pub latency: Histogram<u64>,
    pub elapsed: Duration,
    pub phase_spans: Vec<(f64, f64)>,
    pub faults: Vec<FaultMark>,
    /// Keys not found through the cluster, plus tickets missing from the sink.
    pub lost: u64,
    /// Keys answered with two ids, plus tickets the sink holds twice.
    pub duplicates: u64,
    pub sink: Option<SinkCheck>,
    /// Things worth knowing that are not counts (e.g. what was undone).
    pub notes: Vec<String>,
    /// Surges the cluster raised during the run (`WatchAlerts`).
    pub alerts: Vec<alerts::AlertSpan>,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.lost == 0 && self.duplicates == 0
    }

    pub fn throughput(&self) -> f64 {
        self.tally.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    /// The contract line, always printed last:
    /// `acked=N rejected=N errors=N lost=N duplicates=N throughput=X/s p50_ms=X p99_ms=X max_ms=X`.
    pub fn contract_line(&self) -> String {
        format!(
            "acked={} rejected={} errors={} lost={} duplicates={} throughput={:.0}/s p50_ms={:.2} p99_ms={:.2} max_ms={:.2}",
            self.tally.acked,
            self.tally.rejected,
            self.tally.errors,
            self.lost,
            self.duplicates,
            self.throughput(),
            self.ms(0.5),
            self.ms(0.99),
            self.latency.max() as f64 / 1000.0,
        )
    }

    /// Stdout of `intake load`, the contract line last.
    pub fn lines(&self) -> Vec<String> {
        let t = &self.tally;
        let mut out = Vec::new();
        for (name, c) in [("emergency", t.emergency), ("ordinary", t.ordinary)] {
            if c.offered > 0 {
                out.push(format!(
                    "class={name} offered={} acked={} rejected={} errors={} acceptance={:.2}%",
                    c.offered,
                    c.acked,
                    c.rejected,
                    c.errors,
                    100.0 * c.acked as f64 / c.offered as f64
                ));
            }
        }
        if !t.error_codes.is_empty() {
            let codes: Vec<String> = t.error_codes.iter().map(|(c, n)| format!("{c}:{n}")).collect();
            out.push(format!("errors_by_code={}", codes.join(",")));
            if !t.emergency_error_codes.is_empty() {
                let codes: Vec<String> = t
                    .emergency_error_codes
                    .iter()
                    .map(|(c, n)| format!("{c}:{n}"))
                    .collect();
                out.push(format!("emergency_errors_by_code={}", codes.join(",")));
            }
            for (code, message) in &t.error_samples {
                if t.error_codes.contains_key(code) {
                    out.push(format!("error_sample code={code} message={message:?}"));
                }
            }
        }
        // What the cluster said when it refused: whether a refusal's delay
        // outlived the deadline is what `rejected` hides.
        if t.rejected > 0
            && let Some(message) = t.error_samples.get("ResourceExhausted")
        {
            out.push(format!(
                "refusal_sample message={message:?} (the first refusal seen)"
            ));
        }
        if t.dropped > 0 {
            out.push(format!(
                "client_dropped={} (arrivals found all --concurrency slots busy; counted as errors)",
                t.dropped
            ));
        }
        if t.retries > 0 || t.retries_throttled > 0 {
            out.push(format!(
                "retries={} retries_throttled={} (requests the retry budget kept from another attempt)",
                t.retries, t.retries_throttled
            ));
        }
        if t.resent_unsent > 0 {
            out.push(format!(
                "resent_unsent={} (requests whose connection was refused, resent at once to another node)",
                t.resent_unsent
            ));
        }
        if t.client_throttled > 0 {
            out.push(format!(
                "client_throttled={} (ordinary complaints this tool's client-side throttle refused without sending; counted as rejected)",
                t.client_throttled
            ));
        }
        for a in &self.alerts {
            out.push(format!(
                "alert district={} category={} raised_s={:.1} cleared_s={}",
                a.district,
                a.category,
                a.raised_s,
                a.cleared_s.map_or("null".to_string(), |c| format!("{c:.1}"))
            ));
        }
        if let Some(s) = &self.sink {
            out.push(format!(
                "sink_missing={} sink_duplicates={}",
                s.missing, s.duplicates
            ));
        }
        out.push(self.contract_line());
        out
    }
}

/// Runs a scenario (or the one-phase plan made from `intake load`'s flags)
/// and verifies it.
pub async fn run(scenario: Scenario, opts: RunOptions) -> Result<Summary, LoadError> {
    let districts = DistrictTable::beijing();
    let categories = CategoryTable::default();
    let cluster = match &opts.target {
        Target::Spawn { bin, nodes } => Some(Arc::new(Mutex::new(LocalCluster::spawn(bin, *nodes).await?))),
        Target::Endpoints(_) if !scenario.faults.is_empty() => {
            return Err(LoadError::Invalid(format!(
                "scenario {:?} injects faults: it needs --spawn N, a cluster this run starts itself",
                scenario.name
            )));
        }
        Target::Endpoints(e) => {
            engine::check_reachable(e).await?;
            None
        }
    };
    let endpoints = match (&opts.target, &cluster) {
        (Target::Endpoints(e), _) => e.clone(),
        (_, Some(c)) => c.lock().await.endpoints(),
        (_, None) => Vec::new(),
    };
    let doors = match (opts.protocol, &cluster) {
        (Protocol::Grpc, _) => None,
        (Protocol::Http, Some(c)) => Some(c.lock().await.api_endpoints()),
        (Protocol::Http, None) => Some(opts.api_endpoints.clone()),
    };
    if let Some(d) = &doors
        && d.len() != endpoints.len()
    {
        return Err(LoadError::Invalid(format!(
            "--protocol http needs one --api-endpoint per --endpoint ({} and {})",
            d.len(),
            endpoints.len()
        )));
    }
    let engine = Engine::build(
        &endpoints,
        opts.retry_budget,
        opts.attempt_timeout,
        doors.map(|d| http::HttpDoors::new(&d)),
        opts.client_throttle,
        opts.route_to_leaders,
    )?;
    let alert_watch = alerts::AlertWatch::start(&endpoints, engine.start());
    let fault_task = cluster
        .as_ref()
        .map(|c| tokio::spawn(faults::run(scenario.faults.clone(), c.clone(), engine.start())));
    let driven = engine.run(&scenario.phases, &districts, &categories).await;
    let mut notes = Vec::new();
    let marks = match fault_task {
        Some(t) => t.await.unwrap_or_else(|e| {
            notes.push(format!("the fault task failed: {e}"));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let mut status_endpoints = endpoints.clone();
    if let Some(c) = &cluster {
        let mut c = c.lock().await;
        notes.extend(c.quiesce());
        if let Err(e) = c.wait_leaders(Duration::from_secs(30)).await {
            notes.push(format!("before verification: {e}"));
        }
        status_endpoints = c.live_endpoints();
    }
    let (mut lost, mut duplicates) = verify::acked(engine.clients(), &driven.tally).await;
    let sink_path = match &cluster {
        Some(c) => Some(c.lock().await.sink_file().to_path_buf()),
        None => opts.sink_file.clone(),
    };
    let sink = match sink_path {
        Some(path) => {
            let begin = std::time::Instant::now();
            let drained = verify::wait_drained(&status_endpoints, opts.drain_timeout).await;
            let mut check = verify::sink_file(&path, &driven.tally)?;
            check.drained = drained;
            check.waited_s = begin.elapsed().as_secs_f64();
            if !drained {
                notes.push(format!(
                    "dispatch lag did not reach 0 within {} s",
                    opts.drain_timeout.as_secs()
                ));
            }
            lost += check.missing;
            duplicates += check.duplicates;
            Some(check)
        }
        None => None,
    };
    let alerts = alert_watch.finish();
    if let (Some(c), Some(dir)) = (&cluster, &opts.keep_logs) {
        copy_logs(c.lock().await.dir(), dir, &mut notes);
    }
    Ok(Summary {
        scenario,
        tally: driven.tally,
        latency: driven.latency,
        elapsed: driven.elapsed,
        phase_spans: driven.phase_spans,
        faults: marks,
        lost,
        duplicates,
        sink,
        notes,
        alerts,
    })
}

/// Copies `*.log` (node and sink logs) into `to/logs/`; failures become notes.
fn copy_logs(from: &Path, to: &Path, notes: &mut Vec<String>) {
    let dest = to.join("logs");
    let result = std::fs::create_dir_all(&dest).and_then(|_| {
        for e in std::fs::read_dir(from)?.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "log")
                && let Some(name) = p.file_name()
            {
                std::fs::copy(&p, dest.join(name))?;
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        notes.push(format!("could not copy logs to {}: {e}", dest.display()));
    }
}
