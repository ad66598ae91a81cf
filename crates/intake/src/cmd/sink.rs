//! `intake sink`: the reference downstream dispatch system. It appends each
//! ticket it sees for the first time to `--out` as one JSON line, fsync'd
//! before it acknowledges, and reloads that file when restarted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use intake_sink::{Sink, SinkOptions};

#[derive(Args, Debug)]
pub struct SinkArgs {
    /// Where to serve dispatch.v1.DispatchService, HOST:PORT.
    #[arg(long, env = "INTAKE_SINK_LISTEN", default_value = "127.0.0.1:7100")]
    listen: String,
    /// The JSON-lines file of delivered tickets (created if absent).
    #[arg(long, env = "INTAKE_SINK_OUT")]
    out: PathBuf,
    /// For tests: share (0..1) of deliveries that fail part-way (a random
    /// prefix of the batch is accepted, the rest refused).
    #[arg(long, default_value_t = 0.0)]
    fail_share: f64,
    /// For tests: wait this many milliseconds before answering each delivery.
    #[arg(long, default_value_t = 0)]
    stall_ms: u64,
    /// The JSON-lines file of surge alerts received (DispatchService.Alert);
    /// default: alerts.jsonl beside --out.
    #[arg(long)]
    alerts_out: Option<PathBuf>,
    /// Seconds between the `sink ...` counter lines on stdout (0: none).
    #[arg(long, env = "INTAKE_SINK_REPORT_EVERY", default_value_t = 5)]
    report_every: u64,
}

pub async fn run(a: SinkArgs) -> anyhow::Result<ExitCode> {
    let sink = Sink::open(
        &a.out,
        SinkOptions {
            fail_share: a.fail_share,
            stall: Duration::from_millis(a.stall_ms),
            alerts_out: Some(
                a.alerts_out
                    .clone()
                    .unwrap_or_else(|| a.out.with_file_name("alerts.jsonl")),
            ),
        },
    )?;
    let listener = tokio::net::TcpListener::bind(&a.listen)
        .await
        .with_context(|| format!("cannot listen on {}", a.listen))?;
    println!(
        "sink listening on {} writing {} ({} tickets already there)",
        listener.local_addr().map_or(a.listen.clone(), |l| l.to_string()),
        a.out.display(),
        sink.held()
    );
    let reporter = {
        let sink = sink.clone();
        let every = a.report_every;
        tokio::spawn(async move {
            if every == 0 {
                return;
            }
            loop {
                tokio::time::sleep(Duration::from_secs(every)).await;
                let s = sink.stats();
                println!(
                    "sink held={} written={} redelivered={} refused={}",
                    sink.held(),
                    s.written,
                    s.redelivered,
                    s.refused
                );
            }
        })
    };
    sink.clone().serve(listener, crate::cmd::signal::stop()).await?;
    reporter.abort();
    let s = sink.stats();
    println!(
        "sink stopped held={} written={} redelivered={} refused={}",
        sink.held(),
        s.written,
        s.redelivered,
        s.refused
    );
    Ok(ExitCode::SUCCESS)
}
