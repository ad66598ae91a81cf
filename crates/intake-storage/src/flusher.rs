//! Group commit: one sled flush plus one `fdatasync` serves every caller that
//! was waiting when it started, whichever shard or Raft operation it came from.
//!
//! Durability is expensive (a few ms per `fdatasync`) and Raft needs it for
//! every append and vote. With many groups per node, fsyncing per call would
//! cap throughput at one group's worth; sharing the flush makes the cost per
//! entry fall as load rises.
//!
//! Protocol: a caller bumps the *requested* generation, rings a one-slot
//! doorbell and waits until the *completed* generation reaches its number. The
//! background task reads the requested generation *before* starting a flush
//! and publishes it when done, so a completed generation `g` always means a
//! flush that started after every request numbered `<= g`.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use intake_disk::DataFile;

/// Counters since the flusher started, for benchmarks and notes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Completed flush+fdatasync rounds.
    pub flushes: u64,
    /// Entries reported by callers, summed over all rounds.
    pub entries: u64,
}

/// What the task publishes after each round.
#[derive(Debug, Clone, Default)]
struct Progress {
    completed: u64,
    /// Sticky: after a failed fsync the kernel may have dropped dirty pages,
    /// so a later "successful" fsync would prove nothing. Every later flush fails.
    failed: Option<(io::ErrorKind, String)>,
    stopped: bool,
}

struct Shared {
    requested: AtomicU64,
    pending_entries: AtomicU64,
    flushes: AtomicU64,
    entries: AtomicU64,
    doorbell: mpsc::Sender<()>,
    progress: watch::Receiver<Progress>,
    stop: watch::Sender<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the node's group-commit task. Cheap to clone.
#[derive(Clone)]
pub struct Flusher {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher").field("stats", &self.stats()).finish()
    }
}

impl Flusher {
    /// Starts the flush task. `data_file` must be our own handle on sled's
    /// data file: sled's flush ends in `sync_file_range`, which is not durable.
    /// Must run inside a tokio runtime.
    pub(crate) fn start(db: sled::Db, data_file: DataFile) -> Flusher {
        let (doorbell, bell_rx) = mpsc::channel(1);
        let (progress_tx, progress) = watch::channel(Progress::default());
        let progress_tx = Arc::new(progress_tx);
        let (stop, stop_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            requested: AtomicU64::new(0),
            pending_entries: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            doorbell,
            progress,
            stop,
            task: Mutex::new(None),
        });
        // The task holds only a weak view of `Shared`, so dropping every
        // Flusher clone drops the doorbell sender and ends the task.
        let weak = Arc::downgrade(&shared);
        let handle = tokio::spawn(run(weak, db, data_file, bell_rx, progress_tx, stop_rx));
        *shared.task.lock() = Some(handle);
        Flusher { shared }
    }

    /// Returns once a sled flush and an `fdatasync` of the data file that
    /// started after this call have both completed. `entries` is only counted
    /// for metrics (how many log entries this flush makes durable).
    pub async fn flush(&self, entries: usize) -> io::Result<()> {
        let s = &self.shared;
        s.pending_entries.fetch_add(entries as u64, Ordering::Relaxed);
        let target = s.requested.fetch_add(1, Ordering::AcqRel) + 1;
        // A full doorbell means a wake-up is already pending; that wake-up is
        // consumed after our increment, so it covers our request too.
        if let Err(mpsc::error::TrySendError::Closed(())) = s.doorbell.try_send(()) {
            return Err(stopped_error());
        }
        let mut rx = s.progress.clone();
        let progress = rx
            .wait_for(|p| p.failed.is_some() || p.stopped || p.completed >= target)
            .await
            .map_err(|_| stopped_error())?;
        if let Some((kind, msg)) = &progress.failed {
            return Err(io::Error::new(
                *kind,
                format!("storage flush failed earlier: {msg}"),
            ));
        }
        if progress.completed >= target {
            return Ok(());
        }
        Err(stopped_error())
    }

    /// Resolves with the error once a flush has failed. After that the node's storage can no longer promise anything:
    /// the node must stop serving (PostgreSQL's rule since "fsyncgate").
    pub async fn failure(&self) -> io::Error {
        let mut rx = self.shared.progress.clone();
        match rx.wait_for(|p| p.failed.is_some()).await {
            Ok(p) => match &p.failed {
                Some((kind, msg)) => io::Error::new(*kind, msg.clone()),
                None => io::Error::other("storage failed"),
            },
            // The task is gone and never failed: wait forever.
            Err(_) => std::future::pending().await,
        }
    }

    /// Flushes counted so far.
    pub fn stats(&self) -> FlushStats {
        FlushStats {
            flushes: self.shared.flushes.load(Ordering::Relaxed),
            entries: self.shared.entries.load(Ordering::Relaxed),
        }
    }

    /// Serves every pending request, then stops the task and waits for it,
    /// so the database can be reopened afterwards. Later flushes fail.
    pub async fn shutdown(&self) {
        let _ = self.shared.stop.send(true);
        // Wake the task in case it is idle; if the slot is full it wakes anyway.
        let _ = self.shared.doorbell.try_send(());
        let handle = self.shared.task.lock().take();
        if let Some(handle) = handle
            && let Err(e) = handle.await
        {
            tracing::error!(error = %e, "flusher task ended abnormally");
        }
    }
}

fn stopped_error() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "storage flusher is stopped")
}

async fn run(
    shared: std::sync::Weak<Shared>,
    db: sled::Db,
    data_file: DataFile,
    mut doorbell: mpsc::Receiver<()>,
    progress: Arc<watch::Sender<Progress>>,
    stop: watch::Receiver<bool>,
) {
    let data_file = Arc::new(data_file);
    loop {
        let rang = doorbell.recv().await.is_some();
        let Some(s) = shared.upgrade() else { break };
        let generation = s.requested.load(Ordering::Acquire);
        let entries = s.pending_entries.swap(0, Ordering::Relaxed);
        let needed = {
            let p = progress.borrow();
            p.failed.is_none() && generation > p.completed
        };
        if needed {
            let started = Instant::now();
            let (db2, file2) = (db.clone(), Arc::clone(&data_file));
            let result = tokio::task::spawn_blocking(move || sync_once(&db2, &file2))
                .await
                .unwrap_or_else(|e| Err(io::Error::other(format!("flush task panicked: {e}"))));
            metrics::histogram!("intake_storage_flush_duration_seconds")
                .record(started.elapsed().as_secs_f64());
            match result {
                Ok(()) => {
                    s.flushes.fetch_add(1, Ordering::Relaxed);
                    s.entries.fetch_add(entries, Ordering::Relaxed);
                    metrics::counter!("intake_storage_flushes_total").increment(1);
                    metrics::histogram!("intake_storage_entries_per_flush").record(entries as f64);
                    progress.send_modify(|p| p.completed = p.completed.max(generation));
                }
                Err(e) => {
                    tracing::error!(error = %e, "storage flush failed; storage is now read-only broken");
                    progress.send_modify(|p| p.failed = Some((e.kind(), e.to_string())));
                }
            }
        }
        drop(s);
        if !rang || *stop.borrow() {
            break;
        }
    }
    progress.send_modify(|p| p.stopped = true);
}

/// sled's flush writes its buffers and ends in `sync_file_range`; the
/// `fdatasync` on our own handle is what makes the bytes survive power loss.
fn sync_once(db: &sled::Db, data_file: &DataFile) -> io::Result<()> {
    db.flush().map_err(io::Error::other)?;
    data_file.sync_data()
}
