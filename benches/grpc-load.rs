//! `grpc-load`: one closed-loop gRPC driver for `compare-etcd.sh`, so Intake,
//! etcd and a no-op server are measured by the same client code, with the
//! same concurrency and payload bytes.
//!
//! `grpc-load drive --target intake|etcd|noop --endpoints A,B,C` runs
//! `--concurrency` workers back to back for `--duration` seconds, worker `i`
//! on endpoint `i % n`, and prints
//! `<target>_per_s=X p50_ms=X p99_ms=X ok=N errors=N` (successful calls only
//! count and are timed). `grpc-load serve-noop --listen ADDR` serves the
//! no-op service for at most `--max-seconds`.

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
    Noop,
}

impl Target {
    fn name(self) -> &'static str {
        match self {
            Target::Intake => "intake",
            Target::Etcd => "etcd",
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
}

/// One connected client of whichever target is driven.
#[derive(Clone)]
enum Client {
    Intake(IntakeServiceClient<Channel>),
    Etcd(KvClient<Channel>),
    Noop(NoopClient<Channel>),
}

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

async fn call(
    client: &mut Client,
    args: &DriveArgs,
    key: String,
    payload: &[u8],
    text: &str,
) -> Result<(), tonic::Status> {
    let timeout = Duration::from_millis(args.deadline_ms);
    match client {
        Client::Intake(c) => {
            let mut req = tonic::Request::new(pb::SubmitRequest {
                complaint: Some(pb::Complaint {
                    idempotency_key: key,
                    channel: "phone".into(),
                    district_code: args.district.clone(),
                    category: "noise".into(),
                    text: text.to_string(),
                    ..Default::default()
                }),
            });
            req.set_timeout(timeout);
            c.submit(req).await.map(|_| ())
        }
        Client::Etcd(c) => {
            let mut req = tonic::Request::new(etcd::PutRequest {
                key: key.into_bytes(),
                value: payload.to_vec(),
                ..Default::default()
            });
            req.set_timeout(timeout);
            c.put(req).await.map(|_| ())
        }
        Client::Noop(c) => {
            let mut req = tonic::Request::new(noop::NoopRequest {
                payload: payload.to_vec(),
            });
            req.set_timeout(timeout);
            c.call(req).await.map(|_| ())
        }
    }
}

async fn connect(target: Target, endpoint: &str) -> anyhow::Result<Client> {
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
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(tokio::sync::Mutex::new(None::<String>));
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(args.duration.max(0.0));
    let mut workers = Vec::new();
    for w in 0..args.concurrency.max(1) {
        let mut client = clients[w % clients.len()].clone();
        let (args, text, payload) = (args.clone(), text.clone(), payload.clone());
        let (errors, first_error) = (errors.clone(), first_error.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut seq: u64 = 0;
            while Instant::now() < stop {
                let key = format!("bench-{nonce}-{w}-{seq}");
                seq += 1;
                let t = Instant::now();
                match call(&mut client, &args, key, &payload, &text).await {
                    Ok(()) => {
                        let us = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                    }
                    Err(s) => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        let mut f = first_error.lock().await;
                        if f.is_none() {
                            *f = Some(format!("{:?}: {}", s.code(), s.message()));
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
    let ok = all.len();
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
