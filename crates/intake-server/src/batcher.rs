//! Leader-side batching and admission: concurrent submissions to one shard
//! share a Raft entry, and a surge is refused at the door instead of piling up.
//!
//! Each shard hosted here has one batcher task with two bounded queues,
//! emergencies and ordinary complaints. The task takes what has queued,
//! emergencies first and up to the entry limits, proposes it as one
//! `Command::Submit`, and hands each waiter its own outcomes. Several
//! proposals may be in flight at once, so batches form by themselves while
//! the pipeline is busy; an optional linger waits a little longer for fuller
//! entries.
//!
//! Whether a submission may join the queue is decided when it arrives,
//! never by waiting, by [`crate::admission::queue`]; a queued submission
//! whose deadline passes, or whose caller left, is dropped before it is
//! proposed, never after.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use intake_core::{Command, CommandResponse, Complaint, Priority, SubmitOutcome};
use intake_storage::{Raft, ShardId, TypeConfig};
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use crate::admission::Refusal;
use crate::admission::latency::FadingLatency;
use crate::admission::queue::{QueueState, admit_to_queue};
use crate::config::AdmissionConfig;
use crate::convert::now_millis;

/// Why a proposal produced no outcomes.
#[derive(Debug)]
pub enum ProposeError {
    /// This replica does not lead; the error names who does, if known.
    NotLeader(ForwardToLeader<TypeConfig>),
    /// Over an admission bound: shed, and come back later.
    Overloaded(Refusal),
    /// The deadline passed while queued; it was never proposed.
    Expired,
    /// The Raft group stopped.
    Stopped(String),
    Other(String),
}

type Reply = oneshot::Sender<Result<Vec<SubmitOutcome>, ProposeError>>;

struct Pending {
    complaints: Vec<Complaint>,
    bytes: usize,
    deadline: Instant,
    enqueued: Instant,
    reply: Reply,
}

/// Complaints queued on this node's leaders, over all shards: the per-node
/// bound of admission.
#[derive(Debug, Default)]
pub struct NodeBacklog {
    queued: AtomicUsize,
}

impl NodeBacklog {
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Queues {
    emergency: VecDeque<Pending>,
    ordinary: VecDeque<Pending>,
    /// Complaints (not requests) queued, by class.
    emergency_items: usize,
    ordinary_items: usize,
}

impl Queues {
    fn items(&self) -> usize {
        self.emergency_items + self.ordinary_items
    }
}

/// Committed complaints per second while the shard had a backlog: the
/// shard's capacity as observed, not merely its current offered load.
#[derive(Default)]
struct DrainRate {
    window_start: Option<Instant>,
    window_items: usize,
    per_sec: Option<f64>,
}

const RATE_WINDOW: Duration = Duration::from_millis(500);

impl DrainRate {
    fn record(&mut self, items: usize, backlogged: bool, now: Instant) {
        let start = *self.window_start.get_or_insert(now);
        self.window_items += items;
        let elapsed = now.duration_since(start);
        if elapsed < RATE_WINDOW {
            return;
        }
        // Idle windows say how much was offered, not how much could be
        // done; only windows that ended with work waiting update the rate.
        if backlogged {
            let measured = self.window_items as f64 / elapsed.as_secs_f64();
            self.per_sec = Some(match self.per_sec {
                Some(old) => 0.7 * old + 0.3 * measured,
                None => measured,
            });
        }
        self.window_start = Some(now);
        self.window_items = 0;
    }

    /// How long `backlog` complaints take to drain, if the rate is known.
    #[cfg(test)]
    fn wait_for(&self, backlog: usize) -> Option<Duration> {
        crate::admission::delay::drain_time(backlog, self.per_sec)
    }
}

struct Shared {
    shard: ShardId,
    cfg: AdmissionConfig,
    node: Arc<NodeBacklog>,
    queues: Mutex<Queues>,
    wake: Notify,
    rate: Mutex<DrainRate>,
    /// Smoothed time from enqueue to commit of ordinary complaints. Above
    /// the target, new ordinary ones are refused (as CoDel does with
    /// packets): a queue that stays slow is a standing queue, and serving it
    /// only makes everyone late.
    sojourn: FadingLatency,
    closed: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
}

impl Shared {
    /// Removes a request from the counts once it leaves a queue.
    fn dequeued(&self, q: &mut Queues, p: &Pending, class: Priority) {
        let n = p.complaints.len();
        match class {
            Priority::Emergency => q.emergency_items -= n,
            Priority::Ordinary => q.ordinary_items -= n,
        }
        self.node.queued.fetch_sub(n, Ordering::Relaxed);
    }

    /// Takes queued requests for one entry, emergencies first. Requests whose
    /// deadline passed, or whose caller went away, are dropped unproposed.
    fn take(&self, items: &mut usize, bytes: &mut usize, batch: &mut Vec<Pending>) {
        let now = Instant::now();
        let mut q = lock(&self.queues);
        for class in [Priority::Emergency, Priority::Ordinary] {
            loop {
                let deque = match class {
                    Priority::Emergency => &mut q.emergency,
                    Priority::Ordinary => &mut q.ordinary,
                };
                let Some(front) = deque.front() else { break };
                let stale = front.reply.is_closed() || front.deadline <= now;
                if !stale && !batch.is_empty() && !self.fits(*items, *bytes, front) {
                    return;
                }
                let Some(p) = deque.pop_front() else { break };
                self.dequeued(&mut q, &p, class);
                if p.reply.is_closed() {
                    continue;
                }
                if p.deadline <= now {
                    metrics::counter!("intake_submit_expired_total", "shard" => self.shard.to_string())
                        .increment(p.complaints.len() as u64);
                    let _ = p.reply.send(Err(ProposeError::Expired));
                    continue;
                }
                *items += p.complaints.len();
                *bytes += p.bytes;
                batch.push(p);
            }
        }
    }

    fn fits(&self, items: usize, bytes: usize, p: &Pending) -> bool {
        items + p.complaints.len() <= self.cfg.max_batch_items && bytes + p.bytes <= self.cfg.max_batch_bytes
    }

    fn full(&self, items: usize, bytes: usize) -> bool {
        items >= self.cfg.max_batch_items || bytes >= self.cfg.max_batch_bytes
    }

    fn fail_all(&self, why: &str) {
        let mut q = lock(&self.queues);
        let q = &mut *q;
        let mut drained: Vec<(Pending, Priority)> =
            q.emergency.drain(..).map(|p| (p, Priority::Emergency)).collect();
        drained.extend(q.ordinary.drain(..).map(|p| (p, Priority::Ordinary)));
        for (p, class) in drained {
            self.dequeued(q, &p, class);
            let _ = p.reply.send(Err(ProposeError::Stopped(why.to_string())));
        }
    }
}

/// Ends the batcher task when the last handle goes.
struct Stopper(Arc<Shared>);

impl Drop for Stopper {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        self.0.wake.notify_one();
    }
}

#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
    _stopper: Arc<Stopper>,
}

impl Batcher {
    /// Starts the batcher of `shard`; it ends when every handle is dropped.
    pub fn start(shard: ShardId, raft: Raft, cfg: AdmissionConfig, node: Arc<NodeBacklog>) -> Batcher {
        let shared = Arc::new(Shared {
            shard,
            cfg,
            node,
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            rate: Mutex::new(DrainRate::default()),
            sojourn: FadingLatency::default(),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(run(shared.clone(), raft));
        Batcher {
            _stopper: Arc::new(Stopper(shared.clone())),
            shared,
        }
    }

    /// Complaints queued here, emergencies and ordinary.
    pub fn queued(&self) -> (usize, usize) {
        let q = lock(&self.shared.queues);
        (q.emergency_items, q.ordinary_items)
    }

    /// Admits `complaints` (at most one entry's worth, all of one class) or
    /// refuses them at once; admitted ones are proposed and their outcomes
    /// returned in order.
    pub async fn propose(
        &self,
        complaints: Vec<Complaint>,
        class: Priority,
        deadline: Instant,
    ) -> Result<Vec<SubmitOutcome>, ProposeError> {
        let s = &self.shared;
        let n = complaints.len();
        let bytes = complaints.iter().map(Complaint::approx_bytes).sum();
        let (reply, rx) = oneshot::channel();
        {
            let mut q = lock(&s.queues);
            let state = QueueState {
                emergency_items: q.emergency_items,
                ordinary_items: q.ordinary_items,
                node_items: s.node.queued(),
                drain_per_sec: lock(&s.rate).per_sec,
                sojourn_above_target: s.sojourn.above(s.cfg.target_latency),
            };
            admit_to_queue(&s.cfg, s.shard, &state, class, n, deadline, Instant::now())
                .map_err(ProposeError::Overloaded)?;
            let p = Pending {
                complaints,
                bytes,
                deadline,
                enqueued: Instant::now(),
                reply,
            };
            s.node.queued.fetch_add(n, Ordering::Relaxed);
            match class {
                Priority::Emergency => {
                    q.emergency_items += n;
                    q.emergency.push_back(p);
                }
                Priority::Ordinary => {
                    q.ordinary_items += n;
                    q.ordinary.push_back(p);
                }
            }
        }
        s.wake.notify_one();
        rx.await
            .map_err(|_| ProposeError::Stopped("batcher dropped the request".into()))?
    }
}

async fn run(shared: Arc<Shared>, raft: Raft) {
    let slots = Arc::new(Semaphore::new(shared.cfg.max_in_flight.max(1)));
    let shard = shared.shard.to_string();
    loop {
        // Wait for a free slot first: requests keep queuing meanwhile, and
        // the next batch takes them all.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (mut items, mut bytes, mut batch) = (0, 0, Vec::new());
        loop {
            if shared.closed.load(Ordering::Acquire) {
                shared.fail_all("the shard's batcher stopped");
                return;
            }
            shared.take(&mut items, &mut bytes, &mut batch);
            if !batch.is_empty() {
                break;
            }
            shared.wake.notified().await;
        }
        if !shared.cfg.linger.is_zero() && !shared.full(items, bytes) {
            tokio::time::sleep(shared.cfg.linger).await;
            shared.take(&mut items, &mut bytes, &mut batch);
        }
        metrics::histogram!("intake_batch_complaints", "shard" => shard.clone()).record(items as f64);
        let (raft, shared2) = (raft.clone(), shared.clone());
        let oldest = batch.iter().map(|p| p.enqueued).min();
        if let Some(oldest) = oldest {
            metrics::histogram!("intake_queue_wait_seconds").record(oldest.elapsed().as_secs_f64());
        }
        tokio::spawn(async move {
            let proposed = Instant::now();
            let committed = propose(raft, batch).await;
            metrics::histogram!("intake_commit_seconds").record(proposed.elapsed().as_secs_f64());
            if let Some(oldest) = oldest {
                shared2.sojourn.record(oldest.elapsed());
            }
            let backlogged = lock(&shared2.queues).items() > 0;
            lock(&shared2.rate).record(committed, backlogged, Instant::now());
            drop(permit);
        });
    }
}

/// Proposes one entry and answers its waiters; returns how many complaints
/// were committed.
async fn propose(raft: Raft, batch: Vec<Pending>) -> usize {
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
            total
        }
        Err(e) => {
            for (_, reply) in waiters {
                let _ = reply.send(Err(clone_err(&e)));
            }
            0
        }
    }
}

fn clone_err(e: &ProposeError) -> ProposeError {
    match e {
        ProposeError::NotLeader(f) => ProposeError::NotLeader(f.clone()),
        ProposeError::Overloaded(r) => ProposeError::Overloaded(r.clone()),
        ProposeError::Expired => ProposeError::Expired,
        ProposeError::Stopped(s) => ProposeError::Stopped(s.clone()),
        ProposeError::Other(s) => ProposeError::Other(s.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Shared {
        Shared {
            shard: 0,
            cfg: AdmissionConfig::default(),
            node: Arc::default(),
            queues: Mutex::new(Queues::default()),
            wake: Notify::new(),
            rate: Mutex::new(DrainRate::default()),
            sojourn: FadingLatency::default(),
            closed: AtomicBool::new(false),
        }
    }

    fn pending(
        key: &str,
        deadline: Instant,
    ) -> (
        Pending,
        oneshot::Receiver<Result<Vec<SubmitOutcome>, ProposeError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let c = Complaint {
            idempotency_key: key.into(),
            channel: "web".into(),
            district: "110105".into(),
            category: "noise".into(),
            text: "t".into(),
            location: None,
            contact: String::new(),
            reported_at: None,
            attachments: vec![],
        };
        let p = Pending {
            bytes: c.approx_bytes(),
            complaints: vec![c],
            deadline,
            enqueued: Instant::now(),
            reply,
        };
        (p, rx)
    }

    #[tokio::test]
    async fn expired_and_abandoned_requests_are_dropped_before_proposing_and_emergencies_go_first() {
        let s = shared();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        let (expired, mut expired_rx) = pending("expired", now - Duration::from_millis(1));
        let (gone, gone_rx) = pending("gone", later);
        drop(gone_rx);
        let (ordinary, _o) = pending("ordinary", later);
        let (emergency, _e) = pending("emergency", later);
        {
            let mut q = lock(&s.queues);
            for p in [expired, gone, ordinary] {
                q.ordinary_items += 1;
                q.ordinary.push_back(p);
            }
            q.emergency_items += 1;
            q.emergency.push_back(emergency);
        }
        s.node.queued.fetch_add(4, Ordering::Relaxed);
        let (mut items, mut bytes, mut batch) = (0, 0, Vec::new());
        s.take(&mut items, &mut bytes, &mut batch);
        let keys: Vec<&str> = batch
            .iter()
            .map(|p| p.complaints[0].idempotency_key.as_str())
            .collect();
        assert_eq!(keys, ["emergency", "ordinary"]);
        assert!(matches!(expired_rx.try_recv(), Ok(Err(ProposeError::Expired))));
        assert_eq!(lock(&s.queues).items(), 0);
        assert_eq!(s.node.queued(), 0);
    }

    #[test]
    fn drain_rate_ignores_idle_windows() {
        let t0 = Instant::now();
        let mut r = DrainRate::default();
        r.record(100, false, t0);
        r.record(100, false, t0 + Duration::from_secs(1));
        assert!(r.wait_for(10).is_none(), "idle windows must not set a rate");
        r.record(1000, true, t0 + Duration::from_secs(2));
        let wait = r.wait_for(1000).unwrap();
        assert!(
            wait >= Duration::from_millis(900) && wait <= Duration::from_millis(1100),
            "{wait:?}"
        );
    }
}
