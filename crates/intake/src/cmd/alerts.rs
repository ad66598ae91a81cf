//! `intake alerts`: surges of complaints (a district, or a category within
//! one, calling far above its baseline) as the answering node's detector
//! sees them. Without `--follow`, the surges in progress, then exit; with
//! it, every change as it happens until Ctrl-C.
//!
//! One line per event: `started|updated|cleared district=CODE
//! category=NAME rate=X/s baseline=Y/s since=RFC3339`, or with `--json` one
//! JSON object per line: `{"kind", "district", "category", "rate",
//! "baseline", "since", "at", "in_progress", "node"}` (times in Unix ms).

use std::process::ExitCode;

use clap::Args;
use intake_proto::pb;
use serde_json::json;

use crate::client;

#[derive(Args, Debug)]
pub struct AlertsArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    #[command(flatten)]
    conn: client::Conn,
    /// Keep watching: print each change as it happens.
    #[arg(long)]
    follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

fn millis(ts: Option<&intake_proto::Timestamp>) -> i64 {
    ts.map_or(0, |t| {
        t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000
    })
}

fn kind(e: &pb::AlertEvent) -> &'static str {
    match pb::AlertKind::try_from(e.kind) {
        Ok(pb::AlertKind::Started) => "started",
        Ok(pb::AlertKind::Updated) => "updated",
        Ok(pb::AlertKind::Cleared) => "cleared",
        _ => "unknown",
    }
}

pub fn line(e: &pb::AlertEvent, as_json: bool) -> String {
    if as_json {
        return json!({
            "kind": kind(e),
            "district": e.district,
            "category": e.category,
            "rate": e.rate,
            "baseline": e.baseline,
            "since": millis(e.since.as_ref()),
            "at": millis(e.at.as_ref()),
            "in_progress": e.in_progress,
            "node": e.node_id,
        })
        .to_string();
    }
    format!(
        "{} district={} category={} rate={:.1}/s baseline={:.2}/s since={}",
        kind(e),
        e.district,
        e.category,
        e.rate,
        e.baseline,
        e.since.as_ref().map_or("?".to_string(), ToString::to_string)
    )
}

pub async fn run(a: AlertsArgs) -> anyhow::Result<ExitCode> {
    let mut c = client::admin(&a.endpoint, &a.conn.security()?).await?;
    let mut stream = match c.watch_alerts(pb::WatchAlertsRequest { follow: a.follow }).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!("error: {}", client::explain(&status));
            return Ok(ExitCode::FAILURE);
        }
    };
    let stop = crate::cmd::signal::stop();
    tokio::pin!(stop);
    let mut printed = 0usize;
    loop {
        tokio::select! {
            m = stream.message() => match m {
                Ok(Some(e)) => {
                    println!("{}", line(&e, a.json));
                    printed += 1;
                }
                Ok(None) => break,
                Err(status) => {
                    eprintln!("error: {}", client::explain(&status));
                    return Ok(ExitCode::FAILURE);
                }
            },
            _ = &mut stop => break,
        }
    }
    if printed == 0 && !a.follow && !a.json {
        println!("no surges in progress");
    }
    Ok(ExitCode::SUCCESS)
}
