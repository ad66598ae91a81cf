//! A durable outbox on the adapter's own disk.
//!
//! A citizen on the phone must not be told "try again later" because the
//! cluster is in an election or shedding load. `enqueue` returns as soon as
//! the complaint and its idempotency key are fsync'd locally; a background
//! task then drains the outbox to the cluster, retrying for as long as it
//! takes. The key is stored with the record, so a crash between sending and
//! recording the ticket only leads to a resend with the same key, which the
//! cluster answers with the same ticket: each complaint yields one ticket.
//!
//! Layout (one sled `Db`): `pending` seq → record, where seq comes from
//! sled's monotonic id generator so the outbox drains in enqueue order;
//! `done` key → ticket and `done_seq` seq → key (to trim the oldest);
//! `dead` key → why the cluster refused it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use intake_proto::pb;
use prost::Message;
use serde::{Deserialize, Serialize};
use sled::Transactional;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Client, Submitted};
use crate::error::ClientError;
use crate::redact::key_tag;
use crate::retry::backoff;

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox storage: {0}")]
    Storage(#[from] sled::Error),
    #[error("outbox storage: {0}")]
    Open(#[from] intake_disk::SledOpenError),
    #[error("outbox storage: {0}")]
    Transaction(String),
    #[error("outbox record is corrupt: {0}")]
    Corrupt(#[from] postcard::Error),
    #[error("outbox task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("outbox disk: {0}")]
    Io(#[from] std::io::Error),
    #[error("complaint is {0} bytes encoded, more than the outbox takes ({MAX_RECORD_BYTES})")]
    TooLarge(usize),
    /// An fsync of the outbox failed. The kernel may have dropped the unsynced
    /// pages, so nothing written since the last good fsync can be trusted and
    /// no later fsync proves anything: the outbox refuses every enqueue until
    /// it is reopened (sled then recovers what really reached the disk).
    #[error("outbox fsync failed earlier ({0}); it takes nothing more until it is reopened")]
    SyncFailed(String),
}

/// Largest complaint `enqueue` stores: twice what the cluster accepts. A
/// whole leaf of such records stays below the size at which sled writes a
/// page to a separate blob file, which it never fsyncs (see
/// `intake_disk::SEGMENT_SIZE_BYTES`).
pub const MAX_RECORD_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone)]
pub struct OutboxConfig {
    /// Requests to the cluster in flight at once.
    pub concurrency: usize,
    /// Complaints per request; more than one goes as a `SubmitBatch`, which
    /// the cluster commits as one Raft entry per shard.
    pub batch_size: usize,
    /// Backoff after a submission found no ticket: before that record is
    /// sent again, and before any new record is started, so an outbox
    /// facing a down or overloaded cluster slows down instead of cycling
    /// through its whole backlog.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Finished records kept for `ticket_for`; the oldest go first.
    pub keep_done: usize,
    /// Events buffered for slow subscribers before they lag.
    pub event_capacity: usize,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            batch_size: 64,
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(10),
            keep_done: 100_000,
            event_capacity: 1024,
        }
    }
}

/// What became of an enqueued complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboxEvent {
    Ticketed {
        key: String,
        ticket_id: String,
        duplicate: bool,
    },
    /// The cluster refused it for good; it is kept in the `dead` tree.
    Dead { key: String, reason: String },
}

#[derive(Serialize, Deserialize)]
struct Pending {
    key: String,
    /// The complaint as protobuf bytes, key included.
    complaint: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct Done {
    ticket_id: String,
    shard: u32,
    at_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct Dead {
    reason: String,
    complaint: Vec<u8>,
}

#[derive(Clone)]
struct Trees {
    db: sled::Db,
    pending: sled::Tree,
    done: sled::Tree,
    done_seq: sled::Tree,
    dead: sled::Tree,
    /// Record counts, kept here because sled's `len` walks the whole tree.
    pending_n: Arc<AtomicUsize>,
    done_n: Arc<AtomicUsize>,
    /// Our own handle on sled's data file: sled's flush ends in
    /// `sync_file_range`, which survives a process crash but not a power
    /// cut, so `durable` adds an `fdatasync` (as intake-storage does).
    data_file: Arc<intake_disk::DataFile>,
    /// Sticky: set by the first failed fsync, never cleared while open.
    sync_failed: Arc<std::sync::OnceLock<String>>,
}

impl Trees {
    fn open(dir: &Path) -> Result<Self, OutboxError> {
        let (db, data_file) = intake_disk::open_sled(dir, OUTBOX_CACHE_BYTES)?;
        let data_file = Arc::new(data_file);
        let pending = db.open_tree("pending")?;
        let done_seq = db.open_tree("done_seq")?;
        Ok(Self {
            pending_n: Arc::new(AtomicUsize::new(pending.len())),
            done_n: Arc::new(AtomicUsize::new(done_seq.len())),
            pending,
            done: db.open_tree("done")?,
            done_seq,
            dead: db.open_tree("dead")?,
            data_file,
            sync_failed: Arc::new(std::sync::OnceLock::new()),
            db,
        })
    }

    /// Fails if an fsync has failed since the outbox was opened.
    fn check_sync(&self) -> Result<(), OutboxError> {
        match self.sync_failed.get() {
            Some(why) => Err(OutboxError::SyncFailed(why.clone())),
            None => Ok(()),
        }
    }

    /// Returns once everything written so far would survive a power cut.
    async fn durable(&self) -> Result<(), OutboxError> {
        self.check_sync()?;
        let result = match self.db.flush_async().await {
            Ok(_) => {
                let file = self.data_file.clone();
                tokio::task::spawn_blocking(move || file.sync_data()).await?
            }
            Err(e) => Err(std::io::Error::other(e)),
        };
        if let Err(e) = result {
            tracing::error!(error = %e, "outbox fsync failed; the outbox takes nothing more until reopened");
            let _ = self.sync_failed.set(e.to_string());
            return self.check_sync();
        }
        Ok(())
    }

    /// Moves a pending record to `done` in one transaction, so a record is
    /// never both or neither.
    fn finish(&self, seq: u64, key: &str, s: &Submitted) -> Result<(), OutboxError> {
        let done = postcard::to_stdvec(&Done {
            ticket_id: s.ticket_id.clone(),
            shard: s.shard,
            at_ms: now_ms(),
        })?;
        (&self.pending, &self.done, &self.done_seq)
            .transaction(|(p, d, ds)| {
                p.remove(&seq.to_be_bytes())?;
                d.insert(key.as_bytes(), done.as_slice())?;
                ds.insert(&seq.to_be_bytes(), key.as_bytes())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError| OutboxError::Transaction(e.to_string()))?;
        self.pending_n.fetch_sub(1, Ordering::Relaxed);
        self.done_n.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn bury(&self, seq: u64, key: &str, record: &Pending, reason: &str) -> Result<(), OutboxError> {
        let dead = postcard::to_stdvec(&Dead {
            reason: reason.to_string(),
            complaint: record.complaint.clone(),
        })?;
        (&self.pending, &self.dead)
            .transaction(|(p, d)| {
                p.remove(&seq.to_be_bytes())?;
                d.insert(key.as_bytes(), dead.as_slice())?;
                Ok(())
            })
            .map_err(|e: sled::transaction::TransactionError| OutboxError::Transaction(e.to_string()))?;
        self.pending_n.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the oldest finished records beyond `keep`, once there are a
    /// sixteenth more than that, so the cost is paid in batches.
    fn trim_done(&self, keep: usize) -> Result<(), OutboxError> {
        let n = self.done_n.load(Ordering::Relaxed);
        if n <= keep + keep / 16 {
            return Ok(());
        }
        for kv in self.done_seq.iter().take(n - keep) {
            let (seq, key) = kv?;
            self.done.remove(&key)?;
            self.done_seq.remove(seq)?;
            self.done_n.fetch_sub(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// The outbox. Dropping it stops draining (like a crash: whatever is pending
/// stays pending); `shutdown` also flushes.
pub struct Outbox {
    trees: Trees,
    wake: Arc<Notify>,
    events: broadcast::Sender<OutboxEvent>,
    stop: watch::Sender<bool>,
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl Outbox {
    /// Opens (or creates) the outbox in `dir` and starts draining what it
    /// holds — after a crash, what was left — to the cluster through `client`.
    pub async fn open(
        dir: impl AsRef<Path>,
        client: Client,
        config: OutboxConfig,
    ) -> Result<Outbox, OutboxError> {
        let dir = dir.as_ref().to_path_buf();
        let trees = tokio::task::spawn_blocking(move || Trees::open(&dir)).await??;
        let wake = Arc::new(Notify::new());
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let (stop, stopped) = watch::channel(false);
        let drainer = Drainer {
            trees: trees.clone(),
            client,
            config,
            wake: wake.clone(),
            events: events.clone(),
            stopped,
        };
        let drain = tokio::spawn(drainer.run());
        Ok(Outbox {
            trees,
            wake,
            events,
            stop,
            drain: Some(drain),
        })
    }

    /// Stores the complaint durably and returns its idempotency key (the
    /// caller's, or a fresh one, [`crate::mint_key`]). Once this returns, the complaint survives
    /// a crash of the adapter and will get exactly one ticket.
    pub async fn enqueue(&self, mut complaint: pb::Complaint) -> Result<String, OutboxError> {
        if complaint.idempotency_key.is_empty() {
            complaint.idempotency_key = crate::mint_key(&complaint.district_code);
        }
        let key = complaint.idempotency_key.clone();
        let encoded = complaint.encode_to_vec();
        if encoded.len() > MAX_RECORD_BYTES {
            return Err(OutboxError::TooLarge(encoded.len()));
        }
        let record = postcard::to_stdvec(&Pending {
            key: key.clone(),
            complaint: encoded,
        })?;
        // Nothing is stored after a failed fsync: it could not be made durable.
        self.trees.check_sync()?;
        let seq = self.trees.db.generate_id()?;
        self.trees.pending.insert(seq.to_be_bytes(), record)?;
        self.trees.pending_n.fetch_add(1, Ordering::Relaxed);
        self.trees.durable().await?;
        self.wake.notify_one();
        Ok(key)
    }

    /// The ticket of a drained complaint, while it is still kept.
    pub fn ticket_for(&self, key: &str) -> Result<Option<String>, OutboxError> {
        match self.trees.done.get(key.as_bytes())? {
            Some(v) => Ok(Some(postcard::from_bytes::<Done>(&v)?.ticket_id)),
            None => Ok(None),
        }
    }

    /// Why the cluster refused a complaint, if it did.
    pub fn dead_reason(&self, key: &str) -> Result<Option<String>, OutboxError> {
        match self.trees.dead.get(key.as_bytes())? {
            Some(v) => Ok(Some(postcard::from_bytes::<Dead>(&v)?.reason)),
            None => Ok(None),
        }
    }

    /// Complaints stored but not yet ticketed or refused.
    pub fn pending_count(&self) -> usize {
        self.trees.pending_n.load(Ordering::Relaxed)
    }

    /// Keys of the complaints not yet ticketed, in enqueue order.
    pub fn pending_keys(&self) -> Result<Vec<String>, OutboxError> {
        self.trees
            .pending
            .iter()
            .values()
            .map(|v| Ok(postcard::from_bytes::<Pending>(&v?)?.key))
            .collect()
    }

    /// Results as they land. A subscriber that falls more than
    /// `event_capacity` behind misses events (`RecvError::Lagged`) but can
    /// always ask `ticket_for`.
    pub fn subscribe(&self) -> broadcast::Receiver<OutboxEvent> {
        self.events.subscribe()
    }

    /// Waits until nothing is pending, or `timeout`; true if drained.
    pub async fn wait_drained(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.pending_count() > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Stops draining (submissions in flight are abandoned and stay pending)
    /// and flushes the store.
    pub async fn shutdown(mut self) -> Result<(), OutboxError> {
        let _ = self.stop.send(true);
        if let Some(drain) = self.drain.take() {
            drain.abort();
            let _ = drain.await;
        }
        self.trees.durable().await?;
        Ok(())
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(drain) = self.drain.take() {
            drain.abort();
        }
    }
}

struct Drainer {
    trees: Trees,
    client: Client,
    config: OutboxConfig,
    wake: Arc<Notify>,
    events: broadcast::Sender<OutboxEvent>,
    stopped: watch::Receiver<bool>,
}

/// When a record that found no ticket may be sent again.
struct Retry {
    at: Instant,
    failures: u32,
}

type Outcome = (u64, Pending, Result<Submitted, ClientError>);

/// What settling one record leaves to do.
enum Settled {
    Final {
        ticketed: bool,
    },
    /// Found no ticket; send again, not before the server's delay if any.
    Again(Option<Duration>),
}

/// The drain task's memory; lost in a crash, which only means resending
/// sooner.
#[derive(Default)]
struct DrainState {
    in_flight: HashSet<u64>,
    retries: HashMap<u64, Retry>,
    /// Submissions in a row that found no ticket, across records.
    streak: u32,
    /// No new record starts before this.
    paused_until: Option<Instant>,
}

impl Drainer {
    async fn run(mut self) {
        let mut state = DrainState::default();
        let mut tasks: JoinSet<Vec<Outcome>> = JoinSet::new();
        loop {
            if *self.stopped.borrow() {
                return;
            }
            let next_due = self.start_due(&mut tasks, &mut state);
            let idle = async {
                match next_due {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(joined) = tasks.join_next() => {
                    let Ok(outcomes) = joined else { continue };
                    self.settle_request(outcomes, &mut state);
                }
                _ = self.wake.notified() => {}
                _ = idle => {}
                _ = self.stopped.changed() => return,
            }
        }
    }

    /// Starts requests for due pending records, up to the concurrency
    /// limit; returns when to look again if something is waiting.
    fn start_due(&self, tasks: &mut JoinSet<Vec<Outcome>>, state: &mut DrainState) -> Option<Instant> {
        let now = Instant::now();
        if let Some(until) = state.paused_until.filter(|u| *u > now) {
            return Some(until);
        }
        let mut earliest: Option<Instant> = None;
        let mut batch: Vec<(u64, Pending, pb::Complaint)> = Vec::new();
        for kv in self.trees.pending.iter() {
            if tasks.len() >= self.config.concurrency.max(1) {
                break;
            }
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => {
                    tracing::error!(error = %e, "outbox scan failed");
                    // Try again later rather than spin on a failing disk.
                    earliest = Some(now + self.config.retry_base);
                    break;
                }
            };
            let Some(seq) = seq_of(&k) else { continue };
            if state.in_flight.contains(&seq) {
                continue;
            }
            if let Some(r) = state.retries.get(&seq)
                && r.at > now
            {
                earliest = Some(earliest.map_or(r.at, |e| e.min(r.at)));
                continue;
            }
            let record: Pending = match postcard::from_bytes(&v) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(seq, error = %e, "corrupt outbox record left in place");
                    continue;
                }
            };
            let complaint = match pb::Complaint::decode(record.complaint.as_slice()) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(seq, key_tag = %key_tag(&record.key), error = %e, "undecodable complaint left in place");
                    continue;
                }
            };
            state.in_flight.insert(seq);
            batch.push((seq, record, complaint));
            if batch.len() >= self.config.batch_size.max(1) {
                self.spawn_request(tasks, std::mem::take(&mut batch));
            }
        }
        if !batch.is_empty() {
            self.spawn_request(tasks, batch);
        }
        earliest
    }

    fn spawn_request(&self, tasks: &mut JoinSet<Vec<Outcome>>, batch: Vec<(u64, Pending, pb::Complaint)>) {
        let client = self.client.clone();
        tasks.spawn(async move {
            let (heads, complaints): (Vec<(u64, Pending)>, Vec<pb::Complaint>) =
                batch.into_iter().map(|(seq, p, c)| ((seq, p), c)).unzip();
            let results = if complaints.len() == 1 {
                let mut one = complaints;
                match one.pop() {
                    Some(c) => vec![client.submit(c).await],
                    None => vec![],
                }
            } else {
                client.submit_batch(complaints).await
            };
            heads
                .into_iter()
                .zip(results)
                .map(|((seq, p), r)| (seq, p, r))
                .collect()
        });
    }

    /// Settles the records of one request. Any that found no ticket pause
    /// new starts, for longer the more requests in a row did so; one that
    /// got through lifts the pause.
    fn settle_request(&self, outcomes: Vec<Outcome>, state: &mut DrainState) {
        let (mut again, mut ticketed) = (false, false);
        let mut floor: Option<Duration> = None;
        for (seq, record, result) in outcomes {
            state.in_flight.remove(&seq);
            match self.settle(seq, record, result, state) {
                Settled::Final { ticketed: t } => ticketed |= t,
                Settled::Again(f) => {
                    again = true;
                    floor = floor.max(f);
                }
            }
        }
        if again {
            state.streak = state.streak.saturating_add(1);
            let pause = backoff(self.config.retry_base, self.config.retry_max, state.streak, floor);
            state.paused_until = Some(Instant::now() + pause);
        } else if ticketed {
            state.streak = 0;
            state.paused_until = None;
        }
    }

    fn settle(
        &self,
        seq: u64,
        record: Pending,
        result: Result<Submitted, ClientError>,
        state: &mut DrainState,
    ) -> Settled {
        let outcome = match result {
            Ok(s) => {
                state.retries.remove(&seq);
                self.trees
                    .finish(seq, &record.key, &s)
                    .map(|()| OutboxEvent::Ticketed {
                        key: record.key.clone(),
                        ticket_id: s.ticket_id,
                        duplicate: s.duplicate,
                    })
            }
            Err(ClientError::Rejected { code, message, .. }) => {
                state.retries.remove(&seq);
                let reason = format!("{code:?}: {message}");
                self.trees
                    .bury(seq, &record.key, &record, &reason)
                    .map(|()| OutboxEvent::Dead {
                        key: record.key.clone(),
                        reason,
                    })
            }
            Err(e) => {
                // Not accepted, or not known to be: the outbox never gives
                // up; the same key makes the resend safe.
                let floor = match &e {
                    ClientError::Overloaded { retry_after } => Some(*retry_after),
                    _ => None,
                };
                let failures = state.retries.get(&seq).map_or(0, |r| r.failures) + 1;
                let now = Instant::now();
                let wait = backoff(self.config.retry_base, self.config.retry_max, failures, floor);
                state.retries.insert(
                    seq,
                    Retry {
                        at: now + wait,
                        failures,
                    },
                );
                tracing::debug!(seq, key_tag = %key_tag(&record.key), error = %e, ?wait, "outbox will resend");
                return Settled::Again(floor);
            }
        };
        match outcome {
            Ok(event) => {
                let ticketed = matches!(event, OutboxEvent::Ticketed { .. });
                let _ = self.events.send(event);
                if let Err(e) = self.trees.trim_done(self.config.keep_done) {
                    tracing::warn!(error = %e, "could not trim finished outbox records");
                }
                Settled::Final { ticketed }
            }
            // The record stays pending and is sent again later; its key
            // makes that harmless.
            Err(e) => {
                tracing::error!(seq, key_tag = %key_tag(&record.key), error = %e, "could not record outbox result");
                state.retries.insert(
                    seq,
                    Retry {
                        at: Instant::now() + self.config.retry_max,
                        failures: 0,
                    },
                );
                Settled::Again(None)
            }
        }
    }
}

/// sled's page cache for the outbox: sled's own default, as before the
/// opening moved to intake-disk.
const OUTBOX_CACHE_BYTES: u64 = 1 << 30;

fn seq_of(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
#[path = "outbox_disk_tests.rs"]
mod disk_tests;

#[cfg(test)]
mod tests {
    use super::*;

    fn submitted(ticket: &str) -> Submitted {
        Submitted {
            ticket_id: ticket.into(),
            shard: 0,
            duplicate: false,
            accepted_at: None,
            idempotency_key: String::new(),
            attempts: 1,
        }
    }

    #[test]
    fn finished_records_are_trimmed_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let trees = Trees::open(dir.path()).unwrap();
        for seq in 0..40u64 {
            let key = format!("k{seq}");
            let record = postcard::to_stdvec(&Pending {
                key: key.clone(),
                complaint: vec![],
            })
            .unwrap();
            trees.pending.insert(seq.to_be_bytes(), record).unwrap();
            trees.pending_n.fetch_add(1, Ordering::Relaxed);
            trees.finish(seq, &key, &submitted(&format!("t{seq}"))).unwrap();
            trees.trim_done(16).unwrap();
        }
        assert_eq!(trees.pending_n.load(Ordering::Relaxed), 0);
        assert_eq!(trees.pending.len(), 0);
        let kept = trees.done_n.load(Ordering::Relaxed);
        assert_eq!(kept, trees.done_seq.len());
        assert!((16..=17).contains(&kept), "{kept}");
        assert!(trees.done.get("k0").unwrap().is_none(), "the oldest went first");
        assert!(trees.done.get("k39").unwrap().is_some());
    }
}
