//! `intake load`: offered load against a cluster, then proof that nothing
//! acknowledged was lost. The engine is `intake-loadtest`; this file maps
//! flags to a plan and prints.
//!
//! Without `--rate` each of `--concurrency` workers submits back to back
//! (closed loop: the cluster's maximum). With `--rate` arrivals are scheduled
//! on a fixed clock whatever the cluster does (open loop), and latency is
//! measured from the scheduled arrival. `--scenario FILE` runs phases and
//! faults from a TOML file instead (see `loadtests/README.md`).
//!
//! The last line of stdout is a contract read by scripts:
//! `acked=N rejected=N errors=N lost=N duplicates=N throughput=X/s p50_ms=X p99_ms=X max_ms=X`,
//! where the latencies are those of acknowledged requests. Lines before it
//! give acceptance per class (emergency, ordinary), and with a sink
//! `sink_missing=N sink_duplicates=N`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use intake_core::DistrictTable;
use intake_loadtest::report::Report;
use intake_loadtest::{Mix, Phase, Rate, RetryBudgetConfig, RunOptions, Scenario, Target};

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Nodes to spread requests over: HOST:PORT,HOST:PORT,...
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "spawn",
        conflicts_with = "spawn"
    )]
    endpoints: Vec<String>,
    /// TLS and token for an external cluster (--endpoints).
    #[command(flatten)]
    conn: crate::client::Conn,
    /// Start N nodes and a reference sink on loopback (temporary data), run
    /// against them, and kill them at the end; needed for scenario faults.
    #[arg(long)]
    spawn: Option<u64>,
    /// The door complaints go through: grpc, or http (the nodes' JSON API,
    /// `intake start --api`; with --endpoints give --api-endpoints too).
    #[arg(long, default_value = "grpc", value_parser = ["grpc", "http"])]
    protocol: String,
    /// With --protocol http and --endpoints: each node's --api HOST:PORT,
    /// in the same order as --endpoints.
    #[arg(long, value_delimiter = ',')]
    api_endpoints: Vec<String>,
    /// A scenario file (TOML: phases and faults); replaces --rate,
    /// --duration, --concurrency, --batch, --text-bytes, --emergency-share,
    /// --deadline-ms and --max-attempts.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Multiply the scenario's rates and totals by F (quick runs, CI).
    #[arg(long)]
    scale: Option<f64>,
    /// Write report.json, report.md and chart.svg (and, with --spawn, the
    /// processes' logs) into this directory.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The JSON-lines file of an external sink: check that every
    /// acknowledged ticket reached it exactly once. (--spawn checks its own sink.)
    #[arg(long, conflicts_with = "spawn")]
    sink_file: Option<PathBuf>,
    /// Arrivals per second (open loop). Absent: closed loop at full speed.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds to offer load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Requests in flight at most (closed loop: workers).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Complaints per request; 1 uses unary Submit, more use SubmitBatch.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Deadline of each request in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// Bytes of complaint text.
    #[arg(long, default_value_t = 400)]
    text_bytes: usize,
    /// Write `<idempotency_key> <ticket_id>` per acknowledged submission.
    #[arg(long)]
    acked_out: Option<PathBuf>,
    /// Share of complaints (0..1) in emergency categories (flood, fire, ...);
    /// the rest are ordinary. Acceptance per class is printed.
    #[arg(long, default_value_t = 0.0)]
    emergency_share: f64,
    /// Attempts per request at most (retries honour the server's RetryInfo
    /// and reuse the idempotency keys), all within the deadline.
    #[arg(long, default_value_t = 3)]
    max_attempts: u32,
    /// The run's retry budget in tokens, as intake-client's (gRPC retry
    /// throttling): a retryable failure takes a token, a request answered
    /// for good gives back 0.1, and retries go out only while more than
    /// half the tokens are left. 0 sends no retries.
    #[arg(long, default_value_t = 10.0)]
    retry_budget: f64,
    /// Retry whenever the deadline and --max-attempts allow, as clients
    /// without a budget do: the retry storm a surge brings.
    #[arg(long, conflicts_with = "retry_budget")]
    no_retry_budget: bool,
    /// Give up on one attempt after this many milliseconds (within the
    /// deadline) and send the next to another node, as intake-client's
    /// attempt timeout does; a node that let an attempt run out without an
    /// answer leaves the rotation until a health check hears it, and one
    /// that answered UNAVAILABLE is passed over for a while.
    /// Default: an attempt may take the whole deadline.
    #[arg(long)]
    attempt_timeout_ms: Option<u64>,
    /// Send every arrival, as a client without intake-client's client-side
    /// throttle would. By default ordinary complaints of a district that the
    /// cluster has lately been turning away at capacity are refused here
    /// with some probability (counted as rejected and printed as
    /// client_throttled), as intake-client does; emergencies never are.
    #[arg(long)]
    no_client_throttle: bool,
    /// Send each complaint first to the endpoint of its district's shard
    /// leader (from ClusterStatus, asked about once a second), as
    /// intake-client routes it, instead of to the next endpoint in turn
    /// (the default, as a client that does not know the leaders; any node
    /// forwards to the leader, at the cost of a second call).
    #[arg(long)]
    route_to_leaders: bool,
    /// Seconds to wait for the sink to have every ticket before checking it.
    #[arg(long, default_value_t = 120)]
    drain_timeout_s: u64,
}

/// The one-phase plan the classic flags describe.
fn flags_scenario(a: &LoadArgs) -> Scenario {
    let batch = a.batch.max(1);
    Scenario {
        name: "flags".into(),
        description: "intake load without --scenario".into(),
        scale: 1.0,
        phases: vec![Phase {
            name: "load".into(),
            // NaN (clap parses "nan") would make the clock arithmetic panic.
            duration_s: if a.duration.is_nan() {
                0.1
            } else {
                a.duration.clamp(0.1, intake_loadtest::scenario::MAX_DURATION_S)
            },
            rate: a.rate.map_or(Rate::Max, Rate::PerSecond),
            total: None,
            concurrency: a.concurrency.max(1),
            deadline_ms: a.deadline_ms,
            max_attempts: a.max_attempts.max(1),
            mix: Mix {
                emergency_share: a.emergency_share.clamp(0.0, 1.0),
                text_bytes: (a.text_bytes.max(1), a.text_bytes.max(1)),
                batch_share: if batch > 1 { 1.0 } else { 0.0 },
                batch_size: batch,
                ..Mix::default()
            },
        }],
        faults: Vec::new(),
    }
}

pub async fn run(args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.retry_budget.is_finite() && args.retry_budget >= 0.0,
        "--retry-budget {} must be a number of tokens, 0 or more",
        args.retry_budget
    );
    intake_loadtest::engine::set_security(args.conn.security()?);
    let mut scenario = match &args.scenario {
        Some(path) => intake_loadtest::scenario::load(path, &DistrictTable::beijing())?,
        None => flags_scenario(&args),
    };
    if let Some(f) = args.scale {
        anyhow::ensure!(f.is_finite() && f > 0.0, "--scale {f} must be > 0");
        scenario = scenario.scaled(f);
    } else if scenario.scale != 1.0 {
        let f = scenario.scale;
        scenario = scenario.scaled(f);
    }
    let target = match args.spawn {
        Some(n) => Target::Spawn {
            bin: std::env::current_exe().context("finding this binary to spawn nodes")?,
            nodes: n,
        },
        None => Target::Endpoints(args.endpoints.clone()),
    };
    let run = intake_loadtest::run(
        scenario,
        RunOptions {
            target,
            sink_file: args.sink_file.clone(),
            drain_timeout: Duration::from_secs(args.drain_timeout_s),
            keep_logs: args.report.clone(),
            protocol: if args.protocol == "http" {
                intake_loadtest::Protocol::Http
            } else {
                intake_loadtest::Protocol::Grpc
            },
            api_endpoints: args.api_endpoints.clone(),
            retry_budget: (!args.no_retry_budget).then(|| RetryBudgetConfig {
                max_tokens: args.retry_budget,
                ..RetryBudgetConfig::default()
            }),
            attempt_timeout: args.attempt_timeout_ms.map(|ms| Duration::from_millis(ms.max(1))),
            client_throttle: (!args.no_client_throttle).then(intake_loadtest::ThrottleConfig::default),
            route_to_leaders: args.route_to_leaders,
        },
    );
    // On Ctrl-C the run is dropped, and with it the spawned processes
    // (the cluster's Drop kills them), rather than leaving them orphaned.
    let summary = tokio::select! {
        r = run => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    if let Some(path) = &args.acked_out {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for (key, tickets) in &summary.tally.tickets {
            for t in tickets {
                writeln!(f, "{key} {t}")?;
            }
        }
        f.flush()?;
    }
    if let Some(dir) = &args.report {
        Report::from_summary(&summary).write(dir)?;
    }
    for n in &summary.notes {
        eprintln!("note: {n}");
    }
    if args.protocol == "http" {
        eprintln!("note: complaints went through the nodes' HTTP/JSON door (--protocol http)");
    }
    for line in summary.lines() {
        println!("{line}");
    }
    Ok(if summary.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
