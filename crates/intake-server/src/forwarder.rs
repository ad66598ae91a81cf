//! Submissions forwarded to another node's leaders, batched per peer: the
//! ones waiting for the same node share one `SubmitBatch` call.
//!
//! Why: when adapters reach any node, two of three complaints arrive at a
//! node that does not lead their shard, and each cost a call of its own to
//! the leader's node — a stream, a task and a handful of wake-ups on both
//! sides (issue 15: "forwarded client requests are batched per peer too").
//! Each peer gets a lane: a bounded queue and at most [`CALLS_PER_PEER`]
//! calls in flight, per class. What queues while those are busy leaves
//! together in the next call, so batches grow with the load and an idle
//! lane adds no wait at all.
//!
//! Emergencies have a queue and calls of their own in each lane. With one
//! queue and one set of calls, in a batched surge the calls to a peer were
//! held by ordinary complaints (a forwarded call answers when its slowest
//! shard has committed, and ordinary complaints queue at the leader up to
//! their deadline), the next call took the earliest deadline (the ordinary
//! complaints of a batch admitted for its emergencies get half the time
//! left, so they came first), and an emergency waited in the lane until its
//! own deadline: the batched 5x surge's DEADLINE_EXCEEDED emergencies.
//!
//! Only submissions that the leader's node would treat alike share a call:
//! same class (admission at the door sees one class per call), hop count,
//! retry mark and caller token, and deadlines close enough that the
//! earliest, which the call carries, costs the others little (a quarter of
//! their time left at most). Each submission still gets its own answer, in
//! order, and gives up at its own deadline.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use intake_cluster::PeerPool;
use intake_core::Priority;
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_proto::wire::{mark_retry, set_hops};
use intake_storage::NodeId;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataValue};

use crate::error::{Expiry, RequestError};
use crate::limits::MAX_BATCH_ITEMS;
use crate::router::ItemResult;

/// Calls in flight to one peer at most, per class; more submissions wait
/// and join.
pub const CALLS_PER_PEER: usize = 4;
/// Submissions waiting for one peer at most, per class; beyond, the caller
/// is refused at once (the peer is far behind).
const LANE_QUEUE: usize = 4096;
/// Complaints per forwarded call at most (the leader's limit per call).
const ITEMS_PER_CALL: usize = MAX_BATCH_ITEMS / 4;

type Answers = Result<Vec<ItemResult>, RequestError>;

/// One submission on its way to a peer.
pub struct Forward {
    pub complaints: Vec<pb::Complaint>,
    pub class: Priority,
    pub hops: u32,
    pub retry: bool,
    pub deadline: Instant,
    /// The caller's `authorization`, forwarded without mutual TLS.
    pub token: Option<MetadataValue<Ascii>>,
}

struct Job {
    forward: Forward,
    reply: oneshot::Sender<Answers>,
}

struct Lane {
    addr: String,
    emergency: mpsc::Sender<Job>,
    ordinary: mpsc::Sender<Job>,
}

impl Lane {
    fn jobs(&self, class: Priority) -> &mpsc::Sender<Job> {
        match class {
            Priority::Emergency => &self.emergency,
            Priority::Ordinary => &self.ordinary,
        }
    }
}

/// The node's lanes to its peers. Cheap to clone.
#[derive(Clone)]
pub struct Forwarder {
    peers: PeerPool,
    lanes: Arc<DashMap<NodeId, Lane>>,
}

impl Forwarder {
    pub fn new(peers: PeerPool) -> Self {
        Self {
            peers,
            lanes: Arc::new(DashMap::new()),
        }
    }

    /// Sends `forward` to `node` at `addr` with whatever else waits for it,
    /// and returns this submission's answers, or an error for all of them.
    pub async fn send(&self, node: NodeId, addr: &str, forward: Forward) -> Answers {
        let deadline = forward.deadline;
        let (reply, answer) = oneshot::channel();
        let jobs = self.lane(node, addr, forward.class);
        let job = Job { forward, reply };
        jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => RequestError::Unreachable(format!(
                "node {node} has {LANE_QUEUE} forwarded submissions waiting"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                RequestError::Unreachable(format!("no lane to node {node}"))
            }
        })?;
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(answers)) => answers,
            // The deadline passed, or the lane ended (node shutting down),
            // with the call perhaps already sent.
            Ok(Err(_)) | Err(_) => Err(RequestError::Expired(Expiry::MayHaveCommitted)),
        }
    }

    /// The queue for `class` of the lane to `node`, made (and its task
    /// started) on first use, or anew when the node's address changed.
    fn lane(&self, node: NodeId, addr: &str, class: Priority) -> mpsc::Sender<Job> {
        if let Some(l) = self.lanes.get(&node)
            && l.addr == addr
            && !l.jobs(class).is_closed()
        {
            return l.jobs(class).clone();
        }
        let (emergency, emergency_rx) = mpsc::channel(LANE_QUEUE);
        let (ordinary, ordinary_rx) = mpsc::channel(LANE_QUEUE);
        let sides = [Side::new(emergency_rx), Side::new(ordinary_rx)];
        tokio::spawn(run_lane(self.peers.clone(), node, addr.to_string(), sides));
        let lane = Lane {
            addr: addr.to_string(),
            emergency,
            ordinary,
        };
        let jobs = lane.jobs(class).clone();
        self.lanes.insert(node, lane);
        jobs
    }
}

/// One class's half of a lane: its queue, what was taken off it and waits
/// for a call, and its calls in flight.
struct Side {
    rx: mpsc::Receiver<Job>,
    carried: Vec<Job>,
    slots: Arc<Semaphore>,
    open: bool,
}

impl Side {
    fn new(rx: mpsc::Receiver<Job>) -> Self {
        Self {
            rx,
            carried: Vec::new(),
            slots: Arc::new(Semaphore::new(CALLS_PER_PEER)),
            open: true,
        }
    }

    /// Takes what waits in the queue, up to a call's worth.
    fn gather(&mut self) {
        while self.open && self.carried.len() < ITEMS_PER_CALL {
            match self.rx.try_recv() {
                Ok(job) => self.carried.push(job),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => self.open = false,
            }
        }
    }

    /// A job that arrived while nothing was carried, or the queue's end.
    fn arrived(&mut self, job: Option<Job>) {
        match job {
            Some(job) => self.carried.push(job),
            None => self.open = false,
        }
    }
}

/// Takes what waits, in calls of compatible submissions, at most
/// [`CALLS_PER_PEER`] at once per class: `sides` are the emergencies' and
/// the ordinary complaints', and neither waits for the other's calls.
/// Ends when the lane is dropped.
async fn run_lane(peers: PeerPool, node: NodeId, addr: String, mut sides: [Side; 2]) {
    loop {
        for side in &mut sides {
            side.gather();
        }
        let [emergency, ordinary] = &mut sides;
        // A free slot for a class with work waiting; what arrives
        // meanwhile joins its class's next call. Emergencies first.
        let (slot, side) = tokio::select! {
            biased;
            Ok(slot) = Arc::clone(&emergency.slots).acquire_owned(), if !emergency.carried.is_empty() => (slot, emergency),
            Ok(slot) = Arc::clone(&ordinary.slots).acquire_owned(), if !ordinary.carried.is_empty() => (slot, ordinary),
            job = emergency.rx.recv(), if emergency.open && emergency.carried.is_empty() => {
                emergency.arrived(job);
                continue;
            }
            job = ordinary.rx.recv(), if ordinary.open && ordinary.carried.is_empty() => {
                ordinary.arrived(job);
                continue;
            }
            // Both queues ended and nothing is left to send.
            else => return,
        };
        let (call, rest) = take_call(std::mem::take(&mut side.carried), Instant::now());
        side.carried = rest;
        let (peers, addr) = (peers.clone(), addr.clone());
        tokio::spawn(async move {
            send_call(&peers, node, &addr, call).await;
            drop(slot);
        });
    }
}

/// Whether `b` may share a call that carries `a`'s deadline and metadata.
fn compatible(a: &Forward, b: &Forward, now: Instant) -> bool {
    let slack = a.deadline.saturating_duration_since(now) / 4;
    a.class == b.class
        && a.hops == b.hops
        && a.retry == b.retry
        && a.token == b.token
        && b.deadline >= a.deadline
        && b.deadline <= a.deadline + slack
}

/// Splits off the next call: the submission with the earliest deadline and
/// every compatible one, up to [`ITEMS_PER_CALL`] complaints; the rest wait.
/// Submissions already past their deadline are answered at once.
fn take_call(jobs: Vec<Job>, now: Instant) -> (Vec<Job>, Vec<Job>) {
    let (mut jobs, expired): (Vec<Job>, Vec<Job>) = jobs
        .into_iter()
        .partition(|j| j.forward.deadline > now && !j.reply.is_closed());
    for j in expired {
        let _ = j.reply.send(Err(RequestError::Expired(Expiry::NotStored)));
    }
    jobs.sort_by_key(|j| j.forward.deadline);
    let mut call: Vec<Job> = Vec::new();
    let mut rest = Vec::new();
    let mut items = 0;
    for job in jobs {
        let fits = match call.first() {
            None => true,
            Some(first) => {
                compatible(&first.forward, &job.forward, now)
                    && items + job.forward.complaints.len() <= ITEMS_PER_CALL
            }
        };
        if fits {
            items += job.forward.complaints.len();
            call.push(job);
        } else {
            rest.push(job);
        }
    }
    (call, rest)
}

/// One `SubmitBatch` call for `call`'s submissions; each gets its slice of
/// the answer, or the call's error.
async fn send_call(peers: &PeerPool, node: NodeId, addr: &str, call: Vec<Job>) {
    let Some(first) = call.first() else { return };
    let head = CallHead {
        deadline: first.forward.deadline,
        hops: first.forward.hops,
        retry: first.forward.retry,
        token: first.forward.token.clone(),
    };
    let mut sizes = Vec::with_capacity(call.len());
    let mut replies = Vec::with_capacity(call.len());
    let mut complaints = Vec::new();
    for job in call {
        sizes.push(job.forward.complaints.len());
        complaints.extend(job.forward.complaints);
        replies.push(job.reply);
    }
    metrics::histogram!("intake_forward_call_submissions").record(sizes.len() as f64);
    let deadline = head.deadline;
    // The local timer also covers the wait for the channel to take the
    // call, which tonic's grpc-timeout timer does not.
    let answer = tokio::time::timeout_at(deadline, call_peer(peers, node, addr, head, complaints))
        .await
        .unwrap_or(Err(RequestError::Expired(Expiry::MayHaveCommitted)));
    match answer {
        Ok(results) => {
            let mut results = results.into_iter();
            for (size, reply) in sizes.into_iter().zip(replies) {
                let mine = results
                    .by_ref()
                    .take(size)
                    .map(|r| crate::router::item_from_peer(r, deadline))
                    .collect();
                let _ = reply.send(Ok(mine));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// What the submissions of one call share (they were put together only if
/// they do), taken from the first.
struct CallHead {
    deadline: Instant,
    hops: u32,
    retry: bool,
    token: Option<MetadataValue<Ascii>>,
}

/// The call itself: one answer per complaint, in order, or the error of the
/// whole call.
async fn call_peer(
    peers: &PeerPool,
    node: NodeId,
    addr: &str,
    head: CallHead,
    complaints: Vec<pb::Complaint>,
) -> Result<Vec<pb::SubmitResult>, RequestError> {
    let total = complaints.len();
    let channel = peers
        .forward_channel(node, addr)
        .map_err(|e| RequestError::Unreachable(e.to_string()))?;
    let mut client = IntakeServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024);
    let mut req = tonic::Request::new(pb::SubmitBatchRequest { complaints });
    set_hops(req.metadata_mut(), head.hops);
    if let Some(t) = head.token {
        req.metadata_mut().insert("authorization", t);
    }
    mark_retry(req.metadata_mut(), u32::from(head.retry));
    req.set_timeout(
        head.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1)),
    );
    let resp = client
        .submit_batch(req)
        .await
        .map_err(|s| RequestError::from_peer(&s, head.deadline, Expiry::MayHaveCommitted))?
        .into_inner();
    if resp.results.len() != total {
        return Err(RequestError::Internal(
            "leader answered a different number of items".into(),
        ));
    }
    Ok(resp.results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(class: Priority, deadline: Instant, items: usize) -> (Job, oneshot::Receiver<Answers>) {
        let (reply, rx) = oneshot::channel();
        let forward = Forward {
            complaints: vec![pb::Complaint::default(); items],
            class,
            hops: 1,
            retry: false,
            deadline,
            token: None,
        };
        (Job { forward, reply }, rx)
    }

    #[tokio::test]
    async fn a_call_takes_the_earliest_and_those_that_can_share_its_deadline() {
        let now = Instant::now();
        let s = Duration::from_secs(1);
        let (early, _a) = job(Priority::Ordinary, now + 2 * s, 1);
        let (close, _b) = job(Priority::Ordinary, now + 2 * s + s / 4, 2);
        let (late, _c) = job(Priority::Ordinary, now + 5 * s, 1);
        let (emergency, _d) = job(Priority::Emergency, now + 2 * s + s / 8, 1);
        let (call, rest) = take_call(vec![late, close, emergency, early], now);
        let deadlines: Vec<Instant> = call.iter().map(|j| j.forward.deadline).collect();
        assert_eq!(deadlines, vec![now + 2 * s, now + 2 * s + s / 4]);
        assert!(call.iter().all(|j| j.forward.class == Priority::Ordinary));
        assert_eq!(rest.len(), 2);
        // The rest leave in calls of their own.
        let (next, rest) = take_call(rest, now);
        assert_eq!(next.len(), 1);
        assert_eq!(rest.len(), 1);
    }

    #[tokio::test]
    async fn a_call_stops_at_its_item_limit_and_the_expired_are_answered_at_once() {
        let now = Instant::now();
        let later = now + Duration::from_secs(2);
        let (big, _a) = job(Priority::Ordinary, later, ITEMS_PER_CALL - 1);
        let (two, _b) = job(Priority::Ordinary, later, 2);
        let (gone, gone_rx) = job(Priority::Ordinary, now, 1);
        let (call, rest) = take_call(vec![big, two, gone], now);
        assert_eq!((call.len(), rest.len()), (1, 1));
        assert!(matches!(
            gone_rx.await,
            Ok(Err(RequestError::Expired(Expiry::NotStored)))
        ));
    }
}
