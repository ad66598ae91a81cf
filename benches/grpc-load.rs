//! `grpc-load`: one closed-loop driver for `compare-etcd.sh` and
//! `compare-peers.sh`, so Intake, etcd, NATS JetStream and a no-op server are
//! measured by the same client code, with the same concurrency and payload
//! bytes.
//!
//! `grpc-load drive --target intake|etcd|nats|noop --endpoints A,B,C` runs
//! `--concurrency` workers back to back for `--duration` seconds, worker `i`
//! on endpoint `i % n`, and prints
//! `<target>_per_s=X p50_ms=X p99_ms=X ok=N errors=N` (successful operations
//! only count and are timed; with `--batch N` an operation is one complaint
//! of an N-item `SubmitBatch`, and the latency is the call's).
//! `--spread` sends Intake complaints to the default districts weighted by
//! population instead of one district. For NATS, an operation is one
//! JetStream publish to an R3 file stream with a `Nats-Msg-Id` (dedup id),
//! acknowledged by the stream. `grpc-load serve-noop --listen ADDR` serves
//! the no-op service for at most `--max-seconds`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use hdrhistogram::Histogram;
use intake_benches::etcd::kv_client::KvClient;
use intake_benches::noop::noop_client::NoopClient;
use intake_benches::noop::noop_server::{Noop, NoopServer};
use intake_benches::{etcd, noop};
use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use tonic::transport::{Channel, Endpoint, Server};

#[derive(Parser, Debug)]
#[command(name = "grpc-load", about = "Closed-loop gRPC driver: Intake, etcd or no-op")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Drive one target closed loop and print its rate and latencies.
    Drive(DriveArgs),
    /// Serve the no-op service on ADDR until killed or `--max-seconds`.
    ServeNoop {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Target {
    Intake,
    Etcd,
    Nats,
    Noop,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Intake => "intake",
            Target::Etcd => "etcd",
            Target::Nats => "nats",
            Target::Noop => "noop",
        }
    }
}

#[derive(clap::Args, Debug)]
struct DriveArgs {
    #[arg(long, value_enum)]
    target: Target,
    /// HOST:PORT,HOST:PORT,...; worker i uses endpoint i % n.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Payload bytes: complaint text, etcd value, no-op payload.
    #[arg(long, default_value_t = 400)]
    payload: usize,
    /// Deadline of each call in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    deadline_ms: u64,
    /// District code of Intake complaints (must be in the cluster's table).
    #[arg(long, default_value = "110105")]
    district: String,
    /// Intake: spread complaints over the default district table, weighted
    /// by population (`--district` is then ignored).
    #[arg(long)]
    spread: bool,
    /// Intake: send `SubmitBatch` calls of this many complaints (1: `Submit`).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Intake, unary: send each complaint to the endpoint of its shard's
    /// leader, as `intake-client` routes (from `ClusterStatus` on the first
    /// endpoint, read once), instead of worker i's endpoint. Measures what
    /// forwarding costs: `compare-peers.sh`'s opt-in row `spread_leaders`.
    #[arg(long)]
    leaders: bool,
    /// Intake: idempotency keys that name no district (as a call centre's
    /// own call ids would), instead of `{district}:…` as `intake-client`
    /// mints them. Most such keys have their home on another shard than
    /// their complaint and cost a claim there, a second Raft write:
    /// `compare-peers.sh`'s opt-in row `spread_plain_keys`.
    #[arg(long)]
    plain_keys: bool,
}

/// District codes repeated in proportion to population (one slot per
/// 100,000 people), so a uniform pick is a population-weighted pick.
fn weighted_districts() -> Vec<String> {
    let mut out = Vec::new();
    for d in intake_core::DistrictTable::beijing().iter() {
        let slots = (d.population / 100_000).max(1);
        for _ in 0..slots {
            out.push(d.code.clone());
        }
    }
    out
}

/// A cheap per-worker pseudo-random sequence (xorshift), so district picks
/// differ between workers without a shared generator.
fn next_rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// One connected client of whichever target is driven.
#[derive(Clone)]
enum Client {
    Intake(IntakeServiceClient<Channel>),
    Etcd(KvClient<Channel>),
    Nats(async_nats::jetstream::Context),
    Noop(NoopClient<Channel>),
}

/// The stream the NATS row publishes to: R3, file storage, dedup by id.
const NATS_STREAM: &str = "INTAKE_BENCH";
const NATS_SUBJECT: &str = "bench.complaints";

struct NoopService;

#[tonic::async_trait]
impl Noop for NoopService {
    async fn call(
        &self,
        _req: tonic::Request<noop::NoopRequest>,
    ) -> Result<tonic::Response<noop::NoopResponse>, tonic::Status> {
        Ok(tonic::Response::new(noop::NoopResponse {}))
    }
}

/// Key prefix unique to this run, so etcd keys and Intake idempotency keys
/// never repeat across runs on the same cluster.
fn run_nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// One operation (or, with `--batch`, one call of `batch` operations);
/// returns how many succeeded.
async fn call(
    client: &mut Client,
    args: &DriveArgs,
    keys: Vec<(String, String)>,
    payload: &[u8],
    text: &str,
) -> Result<u64, String> {
    let timeout = Duration::from_millis(args.deadline_ms);
    let status = |s: tonic::Status| format!("{:?}: {}", s.code(), s.message());
    let complaint = |(key, district): (String, String)| pb::Complaint {
        idempotency_key: key,
        channel: "phone".into(),
        district_code: district,
        category: "noise".into(),
        text: text.to_string(),
        ..Default::default()
    };
    let one = keys.len() == 1 && args.batch <= 1;
    let mut keys = keys.into_iter();
    match client {
        Client::Intake(c) if one => {
            let Some(k) = keys.next() else { return Ok(0) };
            let mut req = tonic::Request::new(pb::SubmitRequest {
                complaint: Some(complaint(k)),
            });
            req.set_timeout(timeout);
            c.submit(req).await.map(|_| 1).map_err(status)
        }
        Client::Intake(c) => {
            let mut req = tonic::Request::new(pb::SubmitBatchRequest {
                complaints: keys.map(complaint).collect(),
            });
            req.set_timeout(timeout);
            let resp = c.submit_batch(req).await.map_err(status)?.into_inner();
            let ok = resp
                .results
                .iter()
                .filter(|r| matches!(r.outcome, Some(pb::submit_result::Outcome::Accepted(_))))
                .count() as u64;
            if ok == 0
                && let Some(r) = resp.results.first()
            {
                return Err(format!("batch item: {:?}", r.outcome));
            }
            Ok(ok)
        }
        Client::Nats(js) => {
            let Some((key, _)) = keys.next() else { return Ok(0) };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", key.as_str());
            let ack = js
                .publish_with_headers(NATS_SUBJECT, headers, payload.to_vec().into())
                .await
                .map_err(|e| format!("publish: {e}"))?;
            tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| "ack timed out".to_string())?
                .map_err(|e| format!("ack: {e}"))?;
            Ok(1)
        }
        Client::Etcd(c) => {
            let Some((key, _)) = keys.next() else { return Ok(0) };
            let mut req = tonic::Request::new(etcd::PutRequest {
                key: key.into_bytes(),
                value: payload.to_vec(),
                ..Default::default()
            });
            req.set_timeout(timeout);
            c.put(req).await.map(|_| 1).map_err(status)
        }
        Client::Noop(c) => {
            let mut req = tonic::Request::new(noop::NoopRequest {
                payload: payload.to_vec(),
            });
            req.set_timeout(timeout);
            c.call(req).await.map(|_| 1).map_err(status)
        }
    }
}

/// Connects to NATS and makes sure the bench stream exists (R3, file).
async fn connect_nats(endpoint: &str) -> anyhow::Result<Client> {
    let client = async_nats::connect(endpoint)
        .await
        .with_context(|| format!("connecting to NATS at {endpoint}"))?;
    let js = async_nats::jetstream::new(client);
    let config = async_nats::jetstream::stream::Config {
        name: NATS_STREAM.to_string(),
        subjects: vec![NATS_SUBJECT.to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        num_replicas: 3,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    // A freshly formed cluster may not have a meta leader yet: retry a while.
    let mut last = String::new();
    for _ in 0..100 {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => return Ok(Client::Nats(js)),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    anyhow::bail!("creating the NATS stream: {last}")
}

async fn connect(target: Target, endpoint: &str) -> anyhow::Result<Client> {
    if let Target::Nats = target {
        return connect_nats(endpoint).await;
    }
    let uri = if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    };
    let channel = Endpoint::from_shared(uri)
        .with_context(|| format!("bad endpoint {endpoint}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to {endpoint}"))?;
    Ok(match target {
        Target::Intake => Client::Intake(IntakeServiceClient::new(channel)),
        Target::Etcd => Client::Etcd(KvClient::new(channel)),
        Target::Noop => Client::Noop(NoopClient::new(channel)),
        Target::Nats => anyhow::bail!("NATS is connected by connect_nats"),
    })
}

async fn drive(args: DriveArgs) -> anyhow::Result<()> {
    let args = Arc::new(args);
    let mut clients = Vec::new();
    for e in &args.endpoints {
        clients.push(connect(args.target, e).await?);
    }
    // Printable text for Intake (validated as UTF-8 without control chars),
    // the same number of bytes as the etcd value and the no-op payload.
    let text: Arc<str> = Arc::from("x".repeat(args.payload));
    let payload: Arc<[u8]> = Arc::from(vec![b'x'; args.payload]);
    let nonce = run_nonce();
    let districts: Arc<Vec<String>> = Arc::new(if args.spread {
        weighted_districts()
    } else {
        vec![args.district.clone()]
    });
    let leader_of: Arc<HashMap<String, usize>> = Arc::new(if args.leaders {
        leader_endpoints(&args.endpoints).await?
    } else {
        HashMap::new()
    });
    let errors = Arc::new(AtomicU64::new(0));
    let ops = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(tokio::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(args.duration.max(0.0));
    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let mut clients = clients.clone();
        let leader_of = leader_of.clone();
        let (args, text, payload) = (args.clone(), text.clone(), payload.clone());
        let (errors, first_error) = (errors.clone(), first_error.clone());
        let (ops, districts) = (ops.clone(), districts.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut seq: u64 = 0;
            let mut rand = 0x9e37_79b9_7f4a_7c15_u64 ^ ((w as u64 + 1) << 17);
            while Instant::now() < stop {
                let keys: Vec<(String, String)> = (0..args.batch.max(1))
                    .map(|_| {
                        seq += 1;
                        let d = &districts[next_rand(&mut rand) as usize % districts.len()];
                        let unique = format!("bench-{nonce}-{w}-{seq}");
                        // Named after its district, as intake-client mints
                        // keys: at home on the complaint's shard, no claim.
                        let key = if args.plain_keys {
                            unique
                        } else {
                            intake_core::district_key(d, &unique)
                        };
                        (key, d.clone())
                    })
                    .collect();
                // Worker w's own endpoint, unless routing names the leader's.
                let routed = keys.first().and_then(|(_, d)| leader_of.get(d)).copied();
                let at = routed.filter(|_| args.batch <= 1).unwrap_or(w % clients.len());
                let t = Instant::now();
                match call(&mut clients[at], &args, keys, &payload, &text).await {
                    Ok(n) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                        ops.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(s) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_error.lock().await;
                        if f.is_none() {
                            *f = Some(s);
                        }
                    }
                }
            }
            anyhow::Ok(hist)
        }));
    }
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for w in workers {
        let h = w.await.context("worker panicked")??;
        all.add(&h)?;
    }
    let elapsed = start.elapsed().as_secs_f64().max(1e-9);
    let ok = ops.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    if let Some(e) = first_error.lock().await.as_ref() {
        eprintln!("{}: first error: {e}", args.target.name());
    }
    println!(
        "{}_per_s={:.0} p50_ms={:.2} p99_ms={:.2} ok={ok} errors={errors}",
        args.target.name(),
        ok as f64 / elapsed,
        all.value_at_quantile(0.50) as f64 / 1000.0,
        all.value_at_quantile(0.99) as f64 / 1000.0,
    );
    Ok(())
}

/// District code to the index in `endpoints` of its shard leader's
/// address, from the first endpoint's `ClusterStatus` (the map `intake load
/// --route-to-leaders` uses).
async fn leader_endpoints(endpoints: &[String]) -> anyhow::Result<HashMap<String, usize>> {
    let first = endpoints.first().context("no endpoints")?;
    let mut admin = AdminServiceClient::connect(format!("http://{first}")).await?;
    let status = admin
        .cluster_status(pb::ClusterStatusRequest::default())
        .await?
        .into_inner();
    let out = intake_loadtest::leaders::from_status(&status, endpoints);
    anyhow::ensure!(!out.is_empty(), "--leaders: no shard leader among the endpoints");
    Ok(out)
}

async fn serve_noop(listen: SocketAddr, max_seconds: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::sleep(Duration::from_secs(max_seconds));
    Server::builder()
        .add_service(NoopServer::new(NoopService))
        .serve_with_shutdown(listen, deadline)
        .await
        .with_context(|| format!("serving no-op on {listen}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Drive(args) => drive(args).await,
        Cmd::ServeNoop { listen, max_seconds } => serve_noop(listen, max_seconds).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("grpc-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
