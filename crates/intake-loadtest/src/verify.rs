//! Proof that nothing acknowledged was lost: every acknowledged key resolves
//! through the cluster to its ticket, and, when a sink is in the loop, every
//! acknowledged ticket reached it exactly once.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use intake_proto::pb;
use serde::Serialize;
use tokio::sync::Semaphore;
use tonic::Code;

use crate::cluster::cluster_status;
use crate::error::LoadError;
use crate::tally::Tally;

/// Lookups per acknowledged key at most, each on the next endpoint.
const LOOKUP_ATTEMPTS: usize = 5;

/// Every acknowledged key must resolve, through the cluster, to a ticket
/// that carries that key; a key answered with two different ids is a
/// duplicate. Returns (lost, duplicates).
pub async fn acked(clients: &[crate::engine::Intake], tally: &Tally) -> (u64, u64) {
    let mut lost = 0;
    let mut duplicates = 0;
    let mut checks = Vec::new();
    for (key, tickets) in &tally.tickets {
        let mut distinct = tickets.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() > 1 {
            duplicates += 1;
        }
        if let Some(first) = distinct.first() {
            checks.push((key.clone(), first.clone()));
        }
    }
    if clients.is_empty() {
        return (checks.len() as u64, duplicates);
    }
    let sem = Arc::new(Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (key, ticket)) in checks.into_iter().enumerate() {
        let clients: Vec<_> = clients.to_vec();
        let sem = sem.clone();
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            for attempt in 0..LOOKUP_ATTEMPTS {
                // The next endpoint each time: one may be a killed node.
                let mut client = clients[(i + attempt) % clients.len()].clone();
                let mut req = tonic::Request::new(pb::GetTicketRequest {
                    ticket_id: ticket.clone(),
                    local: false,
                });
                req.set_timeout(Duration::from_secs(5));
                match client.get_ticket(req).await {
                    Ok(r) => {
                        let found = r
                            .into_inner()
                            .ticket
                            .and_then(|t| t.complaint)
                            .map(|c| c.idempotency_key);
                        return found.as_deref() == Some(key.as_str());
                    }
                    Err(s) if s.code() == Code::NotFound => return false,
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
            false
        });
    }
    while let Some(ok) = tasks.join_next().await {
        if !matches!(ok, Ok(true)) {
            lost += 1;
        }
    }
    (lost, duplicates)
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SinkCheck {
    /// Acknowledged tickets absent from the sink file.
    pub missing: u64,
    /// Acknowledged tickets present more than once.
    pub duplicates: u64,
    /// Whether every shard reported no undelivered ticket before the check.
    pub drained: bool,
    /// Seconds spent waiting for that.
    pub waited_s: f64,
    /// Lines of the file that were not a ticket record (a torn last write).
    pub unreadable_lines: u64,
}

/// Waits (at most `timeout`) until every shard's `dispatch_lag.tickets` is
/// 0, as `endpoints` report it.
pub async fn wait_drained(endpoints: &[String], timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    // Bounded by `timeout`.
    while Instant::now() < end {
        if let Some(s) = cluster_status(endpoints).await
            && !s.shards.is_empty()
            && s.shards
                .iter()
                .all(|sh| sh.leader.is_some() && sh.dispatch_lag.as_ref().is_some_and(|d| d.tickets == 0))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

#[derive(serde::Deserialize)]
struct SinkRecord {
    ticket_id: String,
}

/// Counts each acknowledged ticket id in the sink's JSON-lines file.
pub fn sink_file(path: &Path, tally: &Tally) -> Result<SinkCheck, LoadError> {
    let file = std::fs::File::open(path)
        .map_err(|e| LoadError::io(format!("opening sink file {}", path.display()), e))?;
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut check = SinkCheck::default();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.map_err(|e| LoadError::io(format!("reading sink file {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<SinkRecord>(&line) {
            Ok(r) => *seen.entry(r.ticket_id).or_default() += 1,
            Err(_) => check.unreadable_lines += 1,
        }
    }
    let mut acked: Vec<&String> = tally.tickets.values().flatten().collect();
    acked.sort();
    acked.dedup();
    for t in acked {
        match seen.get(t).copied().unwrap_or(0) {
            0 => check.missing += 1,
            1 => {}
            _ => check.duplicates += 1,
        }
    }
    Ok(check)
}
