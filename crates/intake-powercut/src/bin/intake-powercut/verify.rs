//! `intake-powercut verify`: after the power came back, is everything that
//! was acknowledged there, once, and does every shard have a leader?
//!
//! Prints one line, a contract read by `deploy/tests/power-loss.sh`:
//! `case=NAME acked=N found=N lost=N duplicates=N leaders=L/S sink_missing=N`
//! and exits 1 when anything is lost or duplicated or a shard has no leader.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use intake_loadtest::cluster::cluster_status;
use intake_loadtest::tally::Tally;
use intake_loadtest::verify;

use crate::BoxError;

#[derive(Args)]
pub struct VerifyArgs {
    /// The case's name, echoed in the summary line.
    #[arg(long)]
    case: String,
    /// The cluster's nodes, HOST:PORT,...
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Files of `<idempotency_key> <ticket_id>` lines (`intake load
    /// --acked-out`, `intake-powercut adapter --tickets-out`); repeatable.
    #[arg(long, required = true)]
    acked: Vec<PathBuf>,
    /// The reference sink's JSON-lines file: every acknowledged ticket must
    /// reach it, and no key may appear there under two tickets.
    #[arg(long)]
    sink_file: Option<PathBuf>,
    /// Seconds to wait for every shard to have a leader (and, with a sink,
    /// for every shard to have delivered everything).
    #[arg(long, default_value_t = 90)]
    wait_s: u64,
}

/// Reads `key ticket` lines into a tally, as `intake load` would have it.
fn read_acked(paths: &[PathBuf]) -> Result<Tally, BoxError> {
    let mut tally = Tally::default();
    for p in paths {
        let f = std::fs::File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
        for line in std::io::BufReader::new(f).lines() {
            let line = line?;
            let mut it = line.split_whitespace();
            if let (Some(k), Some(t)) = (it.next(), it.next()) {
                tally
                    .tickets
                    .entry(k.to_string())
                    .or_default()
                    .push(t.to_string());
                tally.acked += 1;
            }
        }
    }
    Ok(tally)
}

#[derive(serde::Deserialize)]
struct SinkLine {
    ticket_id: String,
    idempotency_key: String,
}

/// Keys the sink received under more than one ticket: a complaint ticketed
/// twice (a retry that the cluster no longer recognised).
fn sink_keys_twice(path: &Path) -> Result<u64, BoxError> {
    let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut by_key: HashMap<String, HashSet<String>> = HashMap::new();
    for line in std::io::BufReader::new(f).lines() {
        // A torn last line was never acknowledged by the sink; skip it.
        if let Ok(l) = serde_json::from_str::<SinkLine>(&line?) {
            by_key.entry(l.idempotency_key).or_default().insert(l.ticket_id);
        }
    }
    Ok(by_key.values().filter(|t| t.len() > 1).count() as u64)
}

/// Shards with a leader, and shards, as the first answering node says.
async fn leaders(endpoints: &[String], deadline: Instant) -> (usize, usize) {
    let mut last = (0, 0);
    // Bounded by `deadline`.
    loop {
        if let Some(s) = cluster_status(endpoints).await {
            let led = s.shards.iter().filter(|sh| sh.leader.is_some()).count();
            last = (led, s.shards.len());
            if led == s.shards.len() && led > 0 {
                return last;
            }
        }
        if Instant::now() >= deadline {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn run(a: VerifyArgs) -> Result<ExitCode, BoxError> {
    let tally = read_acked(&a.acked)?;
    let deadline = Instant::now() + Duration::from_secs(a.wait_s);
    let (led, shards) = leaders(&a.endpoints, deadline).await;
    let clients = intake_loadtest::engine::clients(&a.endpoints)?;
    let (lost, answered_twice) = verify::acked(&clients, &tally).await;
    let keys = tally.tickets.len() as u64;
    let mut sink_missing = 0;
    let mut sink_twice = 0;
    if let Some(path) = &a.sink_file {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(10));
        if !verify::wait_drained(&a.endpoints, left).await {
            eprintln!("note: the shards had not delivered everything to the sink in time");
        }
        sink_missing = verify::sink_file(path, &tally)?.missing;
        sink_twice = sink_keys_twice(path)?;
    }
    let duplicates = answered_twice + sink_twice;
    println!(
        "case={} acked={keys} found={} lost={lost} duplicates={duplicates} leaders={led}/{shards} sink_missing={sink_missing}",
        a.case,
        keys - lost,
    );
    let ok = lost == 0 && duplicates == 0 && sink_missing == 0 && shards > 0 && led == shards;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
