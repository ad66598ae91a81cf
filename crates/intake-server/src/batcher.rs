//! Leader-side batching: concurrent submissions to one shard share a Raft
//! entry, so one replication round and one fsync per replica serve many
//! complaints.
//!
//! Each shard hosted here has one batcher task. Submissions queue on a
//! bounded channel; the task takes whatever has queued (up to the entry
//! limits), proposes it as one `Command::Submit`, and hands each waiter its
//! own outcomes. Several proposals may be in flight at once, so batches form
//! by themselves while the pipeline is busy, with no linger timer adding
//! latency when it is idle. A full queue is reported at once, never waited on.

use std::sync::Arc;

use intake_core::{Command, CommandResponse, Complaint, SubmitOutcome};
use intake_storage::{Raft, ShardId, TypeConfig};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::convert::now_millis;
use crate::intake_service::MAX_ENTRY_COMPLAINT_BYTES;

/// Submissions waiting per shard before new ones are refused.
pub const QUEUE_DEPTH: usize = 4096;
/// Proposals of one shard in flight at once.
pub const MAX_IN_FLIGHT: usize = 8;

/// Why a proposal produced no outcomes.
#[derive(Debug)]
pub enum ProposeError {
    /// This replica does not lead; the error names who does, if known.
    NotLeader(ForwardToLeader<TypeConfig>),
    /// The queue is full: shed, tell the client to come back.
    Overloaded,
    /// The Raft group stopped.
    Stopped(String),
    Other(String),
}

struct Pending {
    complaints: Vec<Complaint>,
    bytes: usize,
    reply: oneshot::Sender<Result<Vec<SubmitOutcome>, ProposeError>>,
}

#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batcher of `shard`; it ends when every handle is dropped.
    pub fn start(shard: ShardId, raft: Raft) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(shard, raft, rx));
        Batcher { tx }
    }

    /// Proposes `complaints` (at most one entry's worth) and waits for their
    /// outcomes, in order.
    pub async fn propose(&self, complaints: Vec<Complaint>) -> Result<Vec<SubmitOutcome>, ProposeError> {
        let bytes = complaints.iter().map(Complaint::approx_bytes).sum();
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Pending {
                complaints,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ProposeError::Overloaded,
                mpsc::error::TrySendError::Closed(_) => ProposeError::Stopped("batcher stopped".into()),
            })?;
        rx.await
            .map_err(|_| ProposeError::Stopped("batcher dropped the request".into()))?
    }
}

fn fits(items: usize, bytes: usize, p: &Pending) -> bool {
    items + p.complaints.len() <= intake_core::ticket_id::MAX_ITEMS_PER_ENTRY
        && bytes + p.bytes <= MAX_ENTRY_COMPLAINT_BYTES
}

async fn run(shard: ShardId, raft: Raft, mut rx: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carry: Option<Pending> = None;
    loop {
        // Wait for a free slot first: requests keep queuing meanwhile, and
        // the next batch takes them all.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let (mut items, mut bytes) = (first.complaints.len(), first.bytes);
        let mut batch = vec![first];
        while let Ok(p) = rx.try_recv() {
            if !fits(items, bytes, &p) {
                carry = Some(p);
                break;
            }
            items += p.complaints.len();
            bytes += p.bytes;
            batch.push(p);
        }
        metrics::histogram!("intake_batch_complaints", "shard" => shard.to_string()).record(items as f64);
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(raft, batch).await;
            drop(permit);
        });
    }
}

async fn propose(raft: Raft, batch: Vec<Pending>) {
    let mut complaints = Vec::with_capacity(batch.iter().map(|p| p.complaints.len()).sum());
    let mut waiters = Vec::with_capacity(batch.len());
    for p in batch {
        waiters.push((p.complaints.len(), p.reply));
        complaints.extend(p.complaints);
    }
    let total = complaints.len();
    let cmd = Command::Submit {
        accepted_at: now_millis(),
        complaints,
    };
    let result = match raft.client_write(cmd).await {
        Ok(resp) => match resp.data {
            CommandResponse::Submitted(v) if v.len() == total => Ok(v),
            _ => Err(ProposeError::Other(
                "state machine gave an unexpected reply".into(),
            )),
        },
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
        | Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => Err(ProposeError::NotLeader(f)),
        Err(RaftError::APIError(e)) => Err(ProposeError::Other(e.to_string())),
        Err(RaftError::Fatal(e)) => Err(ProposeError::Stopped(e.to_string())),
    };
    match result {
        Ok(outcomes) => {
            let mut it = outcomes.into_iter();
            for (n, reply) in waiters {
                let _ = reply.send(Ok(it.by_ref().take(n).collect()));
            }
        }
        Err(e) => {
            for (_, reply) in waiters {
                let _ = reply.send(Err(clone_err(&e)));
            }
        }
    }
}

fn clone_err(e: &ProposeError) -> ProposeError {
    match e {
        ProposeError::NotLeader(f) => ProposeError::NotLeader(f.clone()),
        ProposeError::Overloaded => ProposeError::Overloaded,
        ProposeError::Stopped(s) => ProposeError::Stopped(s.clone()),
        ProposeError::Other(s) => ProposeError::Other(s.clone()),
    }
}
