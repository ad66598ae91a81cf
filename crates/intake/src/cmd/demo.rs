//! `intake demo`: the whole system on one machine, for a first look. Three
//! nodes (8 shards, 3 replicas each) and the reference dispatch sink run in
//! this process on loopback; a trickle of synthetic complaints keeps it
//! moving; a status screen refreshes in place every second. Ctrl-C stops
//! everything in order and exits 0.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use intake_core::{CategoryTable, DistrictTable};
use intake_proto::pb;
use intake_server::config::DispatchConfig;
use intake_server::{Node, NodeConfig};
use intake_sink::{Sink, SinkOptions};
use rand::Rng;
use tokio::sync::watch;

use crate::client;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Keep the cluster's data here (and reuse it next time). Default: a
    /// temporary directory removed on exit.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// First client port: nodes listen on P, P+1, P+2; the sink on P+99.
    #[arg(long, default_value_t = 7001)]
    base_port: u16,
    /// Synthetic complaints per second submitted by the demo itself (0: none).
    #[arg(long, default_value_t = 5.0)]
    traffic: f64,
    /// Prometheus metrics of the demo process on this address.
    #[arg(long, default_value = "127.0.0.1:9100")]
    http: SocketAddr,
    /// First HTTP API port (JSON API, Open311, web page): node N serves on
    /// this port + N - 1.
    #[arg(long, default_value_t = 8080)]
    api_port: u16,
}

pub async fn run(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let temp;
    let dir = match &a.data_dir {
        Some(d) => d.clone(),
        None => {
            temp = tempfile::Builder::new()
                .prefix("intake-demo-")
                .tempdir()
                .context("creating a temporary data directory")?;
            temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("demo.log"))
        .context("opening demo.log")?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("INTAKE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn,sled=warn")),
        )
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(log))
        .try_init();

    let port = |i: u16| {
        a.base_port
            .checked_add(i)
            .with_context(|| format!("--base-port {} leaves no room for port +{i}", a.base_port))
    };
    let addrs: BTreeMap<u64, SocketAddr> = (1..=3u16)
        .map(|i| Ok((u64::from(i), SocketAddr::from(([127, 0, 0, 1], port(i - 1)?)))))
        .collect::<anyhow::Result<_>>()?;
    let sink_addr = SocketAddr::from(([127, 0, 0, 1], port(99)?));
    let initial: BTreeMap<u64, String> = addrs.iter().map(|(id, a)| (*id, a.to_string())).collect();

    // The sink first, so the first tickets have somewhere to go.
    let sink_file = dir.join("dispatched.jsonl");
    let sink = Sink::open(
        &sink_file,
        SinkOptions {
            alerts_out: Some(dir.join("alerts.jsonl")),
            ..SinkOptions::default()
        },
    )?;
    let listener = tokio::net::TcpListener::bind(sink_addr)
        .await
        .with_context(|| format!("the sink cannot listen on {sink_addr} (try another --base-port)"))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let sink_task = {
        let mut stop = stop_rx.clone();
        let sink = sink.clone();
        tokio::spawn(async move {
            let _ = sink
                .serve(listener, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        })
    };

    let mut nodes = Vec::new();
    let mut doors = Vec::new();
    for (id, addr) in &addrs {
        let mut cfg = NodeConfig::new(*id, *addr, dir.join(format!("node-{id}")), initial.clone());
        cfg.cache_capacity_bytes = 32 * 1024 * 1024;
        // Node 1 serves /metrics (the process's) and the ops dashboard.
        if *id == 1 {
            cfg.http = Some(a.http);
        }
        cfg.dispatch = DispatchConfig {
            target: Some(sink_addr.to_string()),
            ..DispatchConfig::default()
        };
        let node = Node::start(cfg)
            .await
            .with_context(|| format!("starting node {id} on {addr} (try another --base-port)"))?;
        let api = SocketAddr::from(([127, 0, 0, 1], api_port(&a, *id)?));
        let door = crate::cmd::api::start(
            api,
            &node,
            DistrictTable::beijing(),
            CategoryTable::default(),
            stop_rx.clone(),
        )
        .await
        .context("try another --api-port")?;
        doors.push(door);
        nodes.push(node);
    }
    let endpoints: Vec<String> = addrs.values().map(ToString::to_string).collect();
    println!("Intake demo: 3 nodes, 8 shards, 3 replicas each, and the reference dispatch sink.");
    println!("  nodes (gRPC)   {}", endpoints.join(", "));
    println!("  sink           {sink_addr}, writing {}", sink_file.display());
    println!("  data and log   {}", dir.display());
    println!("  metrics        http://{}/metrics", a.http);
    println!("  ops dashboard  http://{}/ops", a.http);
    println!(
        "  HTTP API       http://127.0.0.1:{}/ (web page, /v1, /open311/v2; also :{} and :{})",
        a.api_port,
        api_port(&a, 2)?,
        api_port(&a, 3)?
    );
    println!("Submit a complaint from another terminal:");
    println!(
        "  intake submit --endpoint {} --district 110105 --category noise --channel app --text \"Drilling at night\"",
        endpoints[0]
    );
    println!("  intake get --endpoint {} <ticket id>", endpoints[0]);
    println!(
        "  curl -s http://127.0.0.1:{}/v1/complaints -H 'Idempotency-Key: demo-1' -H 'Content-Type: application/json' -d '{{\"district_code\":\"110105\",\"category\":\"noise\",\"text\":\"Drilling at night\"}}'",
        a.api_port
    );
    println!("Ctrl-C stops everything.\n");

    let traffic =
        (a.traffic > 0.0).then(|| tokio::spawn(traffic(endpoints.clone(), a.traffic, stop_rx.clone())));
    let screen = tokio::spawn(screen(endpoints[0].clone(), sink.clone(), stop_rx.clone()));

    crate::cmd::signal::stop().await;
    println!("\nstopping...");
    let _ = stop_tx.send(true);
    let _ = screen.await;
    if let Some(t) = traffic {
        let _ = t.await;
    }
    for door in doors {
        let _ = tokio::time::timeout(Duration::from_secs(5), door).await;
    }
    for node in nodes {
        node.shutdown().await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), sink_task).await;
    println!("stopped; the sink holds {} tickets", sink.held());
    Ok(ExitCode::SUCCESS)
}

/// Node `id`'s HTTP API port.
fn api_port(a: &DemoArgs, id: u64) -> anyhow::Result<u16> {
    u16::try_from(id - 1)
        .ok()
        .and_then(|i| a.api_port.checked_add(i))
        .with_context(|| format!("--api-port {} leaves no room for node {id}", a.api_port))
}

/// Synthetic complaints at `rate` per second, districts weighted by
/// population, a tenth of them emergencies.
async fn traffic(endpoints: Vec<String>, rate: f64, mut stop: watch::Receiver<bool>) {
    let districts: Vec<(String, u64)> = DistrictTable::beijing()
        .iter()
        .map(|d| (d.code.clone(), d.population))
        .collect();
    let total: u64 = districts.iter().map(|d| d.1).sum();
    let table = CategoryTable::default();
    let emergencies: Vec<String> = table.emergencies().map(String::from).collect();
    let ordinary: Vec<String> = table.ordinary().map(String::from).collect();
    let mut clients = Vec::new();
    for e in &endpoints {
        if let Ok(c) = client::intake(e, &Default::default()).await {
            clients.push(c);
        }
    }
    if clients.is_empty() || districts.is_empty() || ordinary.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.clamp(0.01, 1000.0)));
    // In-flight submissions are bounded: a tick that finds none free is
    // skipped, so a stalled cluster cannot pile up tasks here.
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let complaint = {
            let mut rng = rand::rng();
            let mut pick = rng.random_range(0..total.max(1));
            let district = districts
                .iter()
                .find(|(_, p)| {
                    if pick < *p {
                        true
                    } else {
                        pick -= p;
                        false
                    }
                })
                .map_or(districts[0].0.clone(), |d| d.0.clone());
            let category = if rng.random_bool(0.1) && !emergencies.is_empty() {
                emergencies[rng.random_range(0..emergencies.len())].clone()
            } else {
                ordinary[rng.random_range(0..ordinary.len())].clone()
            };
            pb::Complaint {
                idempotency_key: intake_client::mint_key(&district),
                channel: ["phone", "app", "web"][n % 3].into(),
                district_code: district,
                category,
                text: "demo complaint".into(),
                ..Default::default()
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let mut client = clients[n % clients.len()].clone();
        n += 1;
        tokio::spawn(async move {
            let _slot = slot;
            let mut req = tonic::Request::new(pb::SubmitRequest {
                complaint: Some(complaint),
            });
            req.set_timeout(Duration::from_secs(5));
            let _ = client.submit(req).await;
        });
    }
}

/// The status screen: redrawn in place on a terminal, one block per second
/// otherwise (so a log of it stays readable).
async fn screen(endpoint: String, sink: Sink, mut stop: watch::Receiver<bool>) {
    let tty = std::io::stdout().is_terminal();
    let mut drawn = 0usize;
    let mut last: Option<(Instant, u64)> = None;
    loop {
        let lines = match status(&endpoint).await {
            Ok(s) => {
                let committed: u64 = s
                    .shards
                    .iter()
                    .filter_map(|sh| sh.dispatch_lag.as_ref())
                    .map(|d| d.delivered + d.tickets)
                    .sum();
                let now = Instant::now();
                let rate = last.map_or(0.0, |(t, c)| {
                    committed.saturating_sub(c) as f64 / now.duration_since(t).as_secs_f64().max(0.001)
                });
                last = Some((now, committed));
                render(&s, committed, rate, &sink)
            }
            Err(e) => vec![format!("status unavailable: {e:#}")],
        };
        {
            let mut out = std::io::stdout().lock();
            if tty && drawn > 0 {
                // Up to the first line of the previous block, then clear below.
                let _ = write!(out, "\x1b[{drawn}F\x1b[J");
            }
            for l in &lines {
                let _ = writeln!(out, "{l}");
            }
            let _ = out.flush();
        }
        drawn = lines.len();
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

async fn status(endpoint: &str) -> anyhow::Result<pb::ClusterStatusResponse> {
    let mut c = client::admin(endpoint, &Default::default()).await?;
    let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: false });
    req.set_timeout(Duration::from_secs(2));
    Ok(c.cluster_status(req).await?.into_inner())
}

fn render(s: &pb::ClusterStatusResponse, committed: u64, rate: f64, sink: &Sink) -> Vec<String> {
    let nodes: Vec<String> = s
        .nodes
        .iter()
        .map(|n| format!("{} {}", n.id, if n.up { "up" } else { "DOWN" }))
        .collect();
    let mut lines = vec![
        format!(
            "throughput {rate:7.1} tickets/s   committed {committed}   in sink {}   refused (shed) {}",
            sink.held(),
            intake_server::observe::shed_total()
        ),
        format!("nodes: {}", nodes.join(", ")),
        "SHARD  LEADER  TERM  LAG  LAG_S  DISPATCH             DISTRICTS".to_string(),
    ];
    for sh in &s.shards {
        let d = sh.dispatch_lag.clone().unwrap_or_default();
        lines.push(format!(
            "{:<6} {:<7} {:<5} {:<4} {:<6.1} {:<20} {}",
            sh.id,
            sh.leader.map_or("none".to_string(), |l| l.to_string()),
            sh.term,
            d.tickets,
            d.seconds,
            d.state,
            sh.districts.join(",")
        ));
    }
    lines
}
