//! One writer for the state machines of every shard on a node: the sled
//! batches that applies of several shards have ready are written together,
//! as one atomic sled transaction over their trees.
//!
//! Why: each `Tree::apply_batch` makes sled seal its IO buffer twice (before
//! and after the batch's manifest, sled 0.34 `PageCache::pin_log`), and each
//! seal is a hand-off to sled's IO thread pool with a `pwrite` and a
//! `sync_file_range`. Spread over eight shards, applies of a few complaints
//! each made that 40 % of a node's samples (docs/benchmarks.md). A
//! transaction over several trees pays it once; sled already serialises
//! every batch behind one process-wide lock, so nothing that ran in parallel
//! before is serialised now. Like the Raft log's writer, it takes whatever
//! is waiting, so rounds grow with the load, and a lone batch is written
//! the way it was before.
//!
//! Atomicity per shard is unchanged (each shard's effects and its applied
//! id are in its batch, and the round is all or nothing); nothing is made
//! durable here: the Raft log is, and snapshots flush.

use std::io;
use std::sync::mpsc;

use sled::Transactional;
use tokio::sync::oneshot;

/// Batches written in one round at most.
const MAX_ROUND: usize = 64;
/// Batches waiting at most; a full queue makes applies wait (back-pressure).
const QUEUE: usize = 1024;

struct Job {
    tree: sled::Tree,
    batch: sled::Batch,
    reply: oneshot::Sender<Result<(), String>>,
}

/// Hands batches to the node's writer thread. Cheap to clone; the thread
/// ends when the last handle is dropped.
#[derive(Clone)]
pub struct SmWriter {
    jobs: mpsc::SyncSender<Job>,
}

impl std::fmt::Debug for SmWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmWriter").finish()
    }
}

impl SmWriter {
    pub fn start() -> io::Result<Self> {
        let (jobs, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sm-writer".into())
            .spawn(move || run(rx))?;
        Ok(Self { jobs })
    }

    /// Writes `batch` to `tree` atomically, with whatever other shards have
    /// waiting. Returns once it is in the tree (readable), not durable.
    pub async fn apply(&self, tree: &sled::Tree, batch: sled::Batch) -> io::Result<()> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tree: tree.clone(),
            batch,
            reply,
        };
        // The queue is bounded and drained by a thread that never waits on
        // us, so a full one is a short wait.
        let jobs = self.jobs.clone();
        let sent = match jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(mpsc::TrySendError::Full(job)) => tokio::task::spawn_blocking(move || jobs.send(job))
                .await
                .map_err(|e| io::Error::other(format!("state machine writer: {e}")))?
                .map_err(|_| ()),
            Err(mpsc::TrySendError::Disconnected(_)) => Err(()),
        };
        sent.map_err(|()| io::Error::other("state machine writer stopped"))?;
        answer
            .await
            .map_err(|_| io::Error::other("state machine writer stopped"))?
            .map_err(io::Error::other)
    }
}

fn run(rx: mpsc::Receiver<Job>) {
    // A shard's next batch waits for the round after its previous one: the
    // apply awaits each, so this only happens if a caller gave up and sent
    // again, but one tree must never appear twice in a transaction.
    let mut deferred: Vec<Job> = Vec::new();
    loop {
        let mut round: Vec<Job> = Vec::new();
        for job in std::mem::take(&mut deferred) {
            add(&mut round, &mut deferred, job);
        }
        if round.is_empty() {
            match rx.recv() {
                Ok(job) => round.push(job),
                Err(_) => return,
            }
        }
        while round.len() < MAX_ROUND {
            match rx.try_recv() {
                Ok(job) => add(&mut round, &mut deferred, job),
                Err(_) => break,
            }
        }
        let result = write_round(&mut round);
        metrics::histogram!("intake_sm_write_round_batches").record(round.len() as f64);
        for job in round {
            // A caller that went away has nothing to be told.
            let _ = job.reply.send(result.clone());
        }
    }
}

fn add(round: &mut Vec<Job>, deferred: &mut Vec<Job>, job: Job) {
    if round.iter().any(|j| j.tree.name() == job.tree.name()) {
        deferred.push(job);
    } else {
        round.push(job);
    }
}

fn write_round(round: &mut [Job]) -> Result<(), String> {
    match round {
        [] => Ok(()),
        [one] => one
            .tree
            .apply_batch(std::mem::take(&mut one.batch))
            .map_err(|e| e.to_string()),
        _ => {
            let trees: Vec<sled::Tree> = round.iter().map(|j| j.tree.clone()).collect();
            trees
                .as_slice()
                .transaction(|views| {
                    for (view, job) in views.iter().zip(round.iter()) {
                        view.apply_batch(&job.batch)?;
                    }
                    Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
                })
                .map_err(|e| format!("{e:?}"))
        }
    }
}
