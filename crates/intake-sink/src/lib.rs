//! The reference downstream: implements `dispatch.v1.DispatchService` by
//! appending each ticket it sees for the first time to a JSON-lines file.
//!
//! It acknowledges a ticket only after its line is on disk (`fdatasync`),
//! so an acknowledged ticket survives a crash of the sink. Intake delivers
//! at least once, so a ticket can arrive again: the sink counts such
//! redeliveries and does not write them twice. On start it reloads the ids
//! the file holds; a line cut short by a crash mid-append was never
//! acknowledged, so it is dropped and will be delivered again.
//!
//! For tests it can refuse a share of deliveries (accepting only a random
//! prefix of the batch, as a downstream that fails part-way would) and can
//! stall each call.

mod alerts;
mod file;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use intake_proto::dispatch::v1 as dpb;
use intake_proto::dispatch::v1::dispatch_service_server::{DispatchService, DispatchServiceServer};
use parking_lot::{Mutex, MutexGuard};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

pub use alerts::{AlertRecord, read_alerts};
pub use file::read_records;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} line {line}: not a ticket record: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("--fail-share must be within 0..=1, got {0}")]
    BadShare(f64),
    #[error("cannot serve on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: tonic::transport::Error,
    },
}

/// One line of the sink's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkRecord {
    pub ticket_id: String,
    pub idempotency_key: String,
    pub district: String,
    pub shard: u32,
    /// Unix milliseconds, the shard leader's clock.
    pub accepted_at: i64,
    pub log_index: u64,
    pub item: u32,
    pub channel: String,
    pub category: String,
    /// The incident the ticket belongs to, when Intake has grouped it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub incident_id: String,
}

impl SinkRecord {
    fn from_pb(t: &dpb::DispatchedTicket) -> Self {
        let accepted_at = t.accepted_at.as_ref().map_or(0, |ts| {
            ts.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(ts.nanos) / 1_000_000)
        });
        Self {
            ticket_id: t.ticket_id.clone(),
            idempotency_key: t.idempotency_key.clone(),
            district: t.district.clone(),
            shard: t.shard,
            accepted_at,
            log_index: t.log_index,
            item: t.item,
            channel: t.channel.clone(),
            category: t.category.clone(),
            incident_id: t.incident_id.clone(),
        }
    }
}

/// Test knobs.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// Share (0..=1) of `Deliver` calls that fail: each accepts only a
    /// random prefix of its batch (possibly none) and refuses the rest.
    pub fail_share: f64,
    /// Wait this long before answering each call.
    pub stall: Duration,
    /// Where `Alert` calls are written (JSON lines); without it they are
    /// answered UNIMPLEMENTED, as a downstream without the call would.
    pub alerts_out: Option<PathBuf>,
}

/// Counters since this process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkStats {
    /// Tickets already in the file when the sink started.
    pub loaded: u64,
    /// Tickets written (first seen) by this process.
    pub written: u64,
    /// Deliveries of tickets already held.
    pub redelivered: u64,
    /// Tickets refused (injected failures or write errors).
    pub refused: u64,
}

struct State {
    file: file::AppendFile,
    seen: HashSet<String>,
    stats: SinkStats,
}

/// The sink; cheap to clone.
#[derive(Clone)]
pub struct Sink {
    state: Arc<Mutex<State>>,
    options: SinkOptions,
    alerts: Option<Arc<alerts::AlertsFile>>,
}

impl Sink {
    /// Opens (or creates) `path`, reloading the ticket ids it holds.
    pub fn open(path: &Path, options: SinkOptions) -> Result<Sink, SinkError> {
        if !(0.0..=1.0).contains(&options.fail_share) {
            return Err(SinkError::BadShare(options.fail_share));
        }
        let (file, records) = file::AppendFile::open(path)?;
        let seen: HashSet<String> = records.into_iter().map(|r| r.ticket_id).collect();
        let stats = SinkStats {
            loaded: seen.len() as u64,
            ..SinkStats::default()
        };
        let alerts = match &options.alerts_out {
            Some(p) => Some(Arc::new(alerts::AlertsFile::open(p)?)),
            None => None,
        };
        Ok(Sink {
            state: Arc::new(Mutex::new(State { file, seen, stats })),
            options,
            alerts,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// The alerts file, when `alerts_out` was given.
    pub fn alerts_path(&self) -> Option<&Path> {
        self.alerts.as_deref().map(alerts::AlertsFile::path)
    }

    pub fn stats(&self) -> SinkStats {
        self.lock().stats
    }

    /// Tickets the file holds.
    pub fn held(&self) -> usize {
        self.lock().seen.len()
    }

    /// Takes the first `accept` tickets (writing new ones durably) and
    /// refuses the rest. Blocking: it writes and syncs the file.
    fn take(&self, tickets: &[dpb::DispatchedTicket], accept: usize) -> Vec<dpb::DeliverResult> {
        let mut st = self.lock();
        let mut fresh = Vec::new();
        let mut in_batch = HashSet::new();
        for t in &tickets[..accept] {
            if st.seen.contains(&t.ticket_id) || !in_batch.insert(t.ticket_id.clone()) {
                st.stats.redelivered += 1;
            } else {
                fresh.push(SinkRecord::from_pb(t));
            }
        }
        let write_error = st.file.append(&fresh).err();
        let mut results = Vec::with_capacity(tickets.len());
        for (i, t) in tickets.iter().enumerate() {
            let error = if i >= accept {
                Some("injected failure (sink --fail-share)".to_string())
            } else {
                write_error
                    .as_ref()
                    .map(|e| format!("sink could not store the ticket: {e}"))
            };
            results.push(dpb::DeliverResult {
                ticket_id: t.ticket_id.clone(),
                accepted: error.is_none(),
                error: error.unwrap_or_default(),
            });
        }
        match write_error {
            None => {
                st.stats.written += fresh.len() as u64;
                st.stats.refused += (tickets.len() - accept) as u64;
                for r in fresh {
                    st.seen.insert(r.ticket_id);
                }
            }
            Some(e) => {
                tracing::error!(error = %e, "sink write failed; refusing the batch");
                st.stats.refused += tickets.len() as u64;
                // Redeliveries counted above were not acknowledged either.
            }
        }
        results
    }

    /// Serves on `addr` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), SinkError> {
        let addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(DispatchServiceServer::new(self).max_decoding_message_size(64 * 1024 * 1024))
            .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(|source| SinkError::Serve { addr, source })
    }
}

#[tonic::async_trait]
impl DispatchService for Sink {
    async fn alert(
        &self,
        request: Request<dpb::AlertRequest>,
    ) -> Result<Response<dpb::AlertResponse>, Status> {
        let Some(file) = self.alerts.clone() else {
            return Err(Status::unimplemented(
                "this sink keeps no alerts (no --alerts-out)",
            ));
        };
        let req = request.into_inner();
        let records: Vec<AlertRecord> = req
            .alerts
            .iter()
            .map(|a| AlertRecord::from_pb(req.shard, a))
            .collect();
        tokio::task::spawn_blocking(move || file.append(&records))
            .await
            .map_err(|e| Status::internal(format!("sink task failed: {e}")))?
            .map_err(|e| Status::unavailable(format!("sink could not store the alerts: {e}")))?;
        Ok(Response::new(dpb::AlertResponse {}))
    }

    async fn deliver(
        &self,
        request: Request<dpb::DeliverRequest>,
    ) -> Result<Response<dpb::DeliverResponse>, Status> {
        if !self.options.stall.is_zero() {
            tokio::time::sleep(self.options.stall).await;
        }
        let tickets = request.into_inner().tickets;
        let accept = {
            let mut rng = rand::rng();
            if self.options.fail_share > 0.0 && rng.random_bool(self.options.fail_share) {
                rng.random_range(0..=tickets.len().saturating_sub(1))
            } else {
                tickets.len()
            }
        };
        let sink = self.clone();
        let results = tokio::task::spawn_blocking(move || sink.take(&tickets, accept))
            .await
            .map_err(|e| Status::internal(format!("sink task failed: {e}")))?;
        Ok(Response::new(dpb::DeliverResponse { results }))
    }
}

#[cfg(test)]
mod tests;
