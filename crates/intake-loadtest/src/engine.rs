//! The scheduler: phases of open-loop arrivals (a fixed clock, whatever the
//! cluster does) or closed-loop workers, each request retried with the same
//! idempotency keys within its deadline.
//!
//! Latency is measured from the scheduled arrival, so a stall shows in the
//! numbers instead of hiding (no coordinated omission).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use intake_client::{
    Attempts, Authorize, Backoff, HealthProbe, RetryBudget, RetryBudgetConfig, RetryPolicy, Rotation,
    RotationConfig, Security, Stop, Throttle, ThrottleAnswer, ThrottleConfig, Verdict, never_sent,
    nothing_heard,
};
use intake_core::category::CategoryTable;
use intake_core::district::DistrictTable;
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_proto::wire::{item_outcome, item_retry_delay, mark_retry, retry_delay};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::error::LoadError;
use crate::http::HttpDoors;
use crate::leaders::Leaders;
use crate::scenario::{Phase, Rate};
use crate::tally::{Outcome, Tally, histogram};
use crate::workload::{Request, Workload};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Responses can be large (batches); the default 4 MiB is not enough.
const MAX_DECODING_BYTES: usize = 16 * 1024 * 1024;

/// TLS and token for every connection of this process. One run talks to one
/// cluster, and the endpoints are opened deep inside the engine, the
/// verifier and the spawned cluster's probes: set once by `intake load`
/// before it starts, rather than threaded through each of them.
static SECURITY: OnceLock<Security> = OnceLock::new();

/// Uses `security` for every connection from now on; only the first call
/// counts.
pub fn set_security(security: Security) {
    let _ = SECURITY.set(security);
}

fn security() -> Security {
    SECURITY.get().cloned().unwrap_or_default()
}

/// The token interceptor for this run's calls.
pub fn auth() -> Authorize {
    security().interceptor()
}

/// A client of the public service with this run's token.
pub type Intake = IntakeServiceClient<InterceptedService<Channel, Authorize>>;

/// The endpoint with this tool's connection settings.
fn endpoint(endpoint: &str) -> Result<Endpoint, LoadError> {
    let ep = security().endpoint(endpoint).map_err(|e| LoadError::Endpoint {
        endpoint: endpoint.to_string(),
        message: e.to_string(),
    })?;
    Ok(ep.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

/// A channel that connects on first use, so a node that is down when the run
/// starts (or killed during it) costs errors on its requests, not the run.
pub fn channel(endpoint_addr: &str) -> Result<Channel, LoadError> {
    Ok(endpoint(endpoint_addr)?.connect_lazy())
}

/// Connects once to each endpoint, so a mistyped or stopped endpoint fails
/// the run at once (as `intake load` always did) instead of turning every
/// request into an error.
pub async fn check_reachable(endpoints: &[String]) -> Result<(), LoadError> {
    for e in endpoints {
        endpoint(e)?.connect().await.map_err(|err| LoadError::Endpoint {
            endpoint: e.clone(),
            message: format!("cannot connect: {err}"),
        })?;
    }
    Ok(())
}

pub fn clients(endpoints: &[String]) -> Result<Vec<Intake>, LoadError> {
    check_any(endpoints)?;
    endpoints
        .iter()
        .map(|e| {
            Ok(
                IntakeServiceClient::with_interceptor(channel(e)?, security().interceptor())
                    .max_decoding_message_size(MAX_DECODING_BYTES),
            )
        })
        .collect()
}

fn check_any(endpoints: &[String]) -> Result<(), LoadError> {
    if endpoints.is_empty() {
        return Err(LoadError::Invalid("no endpoints to send load to".into()));
    }
    Ok(())
}

/// What a run produced, before verification.
pub struct Driven {
    pub tally: Tally,
    /// Latency of acknowledged requests, microseconds from scheduled arrival.
    pub latency: Histogram<u64>,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// Each phase's (start, end) in seconds from the start.
    pub phase_spans: Vec<(f64, f64)>,
}

struct PhaseCtx {
    index: usize,
    workload: Workload,
    deadline: Duration,
    max_attempts: u32,
}

pub struct Engine {
    clients: Vec<Intake>,
    /// `--protocol http`: complaints go to these doors instead (same order
    /// as `clients`, which still serve verification's look-ups).
    http: Option<HttpDoors>,
    /// Which endpoint each attempt goes to, and which are out of rotation,
    /// as in `intake-client` (the same type); its endpoints are `clients`'
    /// addresses, in order.
    rotation: Rotation,
    /// Shared by every request of the run, as one `intake-client` shares
    /// one among its calls; `None` retries whenever the deadline allows.
    budget: Option<RetryBudget>,
    /// One attempt's limit (within the deadline), as `intake-client`'s
    /// `attempt_timeout`; `None`: an attempt may take the whole deadline.
    attempt_timeout: Option<Duration>,
    /// Client-side throttling of ordinary complaints, as `intake-client`
    /// does it; `None` sends every arrival (`--no-client-throttle`).
    throttle: Option<Throttle>,
    /// Each district's shard leader among the endpoints, when routing to
    /// leaders as `intake-client` does (`leaders.rs`, `intake load
    /// --route-to-leaders`); `None` sends each attempt to the next endpoint
    /// in turn.
    leaders: Option<Arc<Leaders>>,
    tally: Mutex<Tally>,
    latency: Mutex<Histogram<u64>>,
    start: Instant,
}

impl Engine {
    /// The clock of the run starts now: per-second series and fault times
    /// count from here.
    pub fn new(endpoints: &[String], budget: Option<RetryBudgetConfig>) -> Result<Arc<Engine>, LoadError> {
        Self::build(endpoints, budget, None, None, None, false)
    }

    /// As [`Engine::new`], each attempt limited to `attempt_timeout`: a node
    /// that lets one run out without a word (paused, or its process stuck)
    /// costs that part of the deadline, not all of it, and leaves the
    /// rotation until a health probe hears it, as a refusing node does; one
    /// that answers that it cannot serve (UNAVAILABLE, or DEADLINE_EXCEEDED
    /// waiting on peers it cannot reach) is passed over for a while.
    pub fn with_attempt_timeout(
        endpoints: &[String],
        budget: Option<RetryBudgetConfig>,
        attempt_timeout: Option<Duration>,
    ) -> Result<Arc<Engine>, LoadError> {
        Self::build(endpoints, budget, attempt_timeout, None, None, false)
    }

    /// As `new`, submitting through the HTTP doors when `http` is given.
    pub fn with_http(
        endpoints: &[String],
        http: Option<HttpDoors>,
        budget: Option<RetryBudgetConfig>,
    ) -> Result<Arc<Engine>, LoadError> {
        Self::build(endpoints, budget, None, http, None, false)
    }

    /// Every option at once: the nodes' gRPC endpoints, the retry budget,
    /// one attempt's limit, the HTTP doors to submit through (gRPC when
    /// `None`; the doors are probed through the gRPC endpoints), and the
    /// client-side throttle (none when `None`), and whether complaints go
    /// to their shard leader's endpoint first.
    pub fn build(
        endpoints: &[String],
        budget: Option<RetryBudgetConfig>,
        attempt_timeout: Option<Duration>,
        http: Option<HttpDoors>,
        throttle: Option<ThrottleConfig>,
        route_to_leaders: bool,
    ) -> Result<Arc<Engine>, LoadError> {
        let clients = clients(endpoints)?;
        let probe = Arc::new(HealthProbe::new(security(), CONNECT_TIMEOUT));
        Ok(Arc::new(Engine {
            http,
            rotation: Rotation::new(endpoints.to_vec(), RotationConfig::default(), probe),
            clients,
            budget: budget.map(RetryBudget::new),
            attempt_timeout,
            throttle: throttle.map(Throttle::new),
            leaders: route_to_leaders.then(|| Arc::new(Leaders::default())),
            tally: Mutex::new(Tally::default()),
            latency: Mutex::new(histogram()),
            start: Instant::now(),
        }))
    }

    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn clients(&self) -> &[Intake] {
        &self.clients
    }

    fn second(&self) -> usize {
        self.start.elapsed().as_secs() as usize
    }

    /// Runs the phases one after another, then waits for every request still
    /// in flight (each ends by its own deadline).
    pub async fn run(
        self: &Arc<Self>,
        phases: &[Phase],
        districts: &DistrictTable,
        categories: &CategoryTable,
    ) -> Driven {
        let mut follower = None;
        if let Some(l) = &self.leaders {
            // Known before the first arrival; without an answer the run
            // starts on the rotation and the follower fills the map in.
            l.refresh(self.rotation.endpoints()).await;
            follower = Some(tokio::spawn(l.clone().follow(self.rotation.endpoints().to_vec())));
        }
        let mut tasks = JoinSet::new();
        let mut spans = Vec::new();
        for (index, phase) in phases.iter().enumerate() {
            let ctx = Arc::new(PhaseCtx {
                index,
                workload: Workload::new(&phase.mix, districts, categories),
                deadline: Duration::from_millis(phase.deadline_ms),
                max_attempts: phase.max_attempts.max(1),
            });
            let from = self.start.elapsed().as_secs_f64();
            match phase.rate {
                Rate::PerSecond(rate) => self.open_loop(phase, rate, ctx, &mut tasks).await,
                Rate::Max => self.closed_loop(phase, ctx, &mut tasks).await,
            }
            spans.push((from, self.start.elapsed().as_secs_f64()));
        }
        while tasks.join_next().await.is_some() {}
        if let Some(f) = follower {
            f.abort();
        }
        let elapsed = self.start.elapsed();
        Driven {
            tally: std::mem::take(&mut *self.tally.lock()),
            latency: self.latency.lock().clone(),
            elapsed,
            phase_spans: spans,
        }
    }

    /// Arrivals on a fixed clock; in-flight requests are bounded, and an
    /// arrival that finds no room is counted as an error rather than queued
    /// without bound.
    async fn open_loop(
        self: &Arc<Self>,
        phase: &Phase,
        rate: f64,
        ctx: Arc<PhaseCtx>,
        tasks: &mut JoinSet<()>,
    ) {
        let slots = Arc::new(Semaphore::new(phase.concurrency.max(1)));
        let begin = Instant::now();
        let end = begin + Duration::from_secs_f64(phase.duration_s);
        let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
        let total = phase.total.unwrap_or(u64::MAX);
        let mut offered: u64 = 0;
        let mut n: u64 = 0;
        // Bounded by `end` (the clock) and by `total`.
        loop {
            let scheduled = begin + interval.mul_f64(n as f64);
            if scheduled >= end || offered >= total {
                break;
            }
            tokio::time::sleep_until(scheduled.into()).await;
            let req = ctx.workload.request(&mut rand::rng());
            let size = req.items.len() as u64;
            offered += size;
            let second = self.second();
            match slots.clone().try_acquire_owned() {
                Ok(permit) => {
                    self.tally.lock().offered(ctx.index, second, size);
                    let (me, ctx) = (self.clone(), ctx.clone());
                    tasks.spawn(async move {
                        me.one(&ctx, scheduled, req).await;
                        drop(permit);
                    });
                }
                Err(_) => self.tally.lock().dropped(ctx.index, second, size),
            }
            n += 1;
            while tasks.try_join_next().is_some() {}
        }
    }

    /// `concurrency` workers back to back until the phase's end or `total`.
    async fn closed_loop(self: &Arc<Self>, phase: &Phase, ctx: Arc<PhaseCtx>, tasks: &mut JoinSet<()>) {
        let end = Instant::now() + Duration::from_secs_f64(phase.duration_s);
        let total = phase.total.unwrap_or(u64::MAX);
        let offered = Arc::new(AtomicU64::new(0));
        let workers = phase.concurrency.max(1);
        for _ in 0..workers {
            let (me, ctx, offered) = (self.clone(), ctx.clone(), offered.clone());
            tasks.spawn(async move {
                while Instant::now() < end {
                    let req = ctx.workload.request(&mut rand::rng());
                    let size = req.items.len() as u64;
                    // Reserve before sending so `total` is never overshot
                    // by more than one request.
                    if offered.fetch_add(size, Ordering::Relaxed) >= total {
                        break;
                    }
                    me.tally.lock().offered(ctx.index, me.second(), size);
                    me.one(&ctx, Instant::now(), req).await;
                }
            });
        }
        // The phase lasts until its end or until `total` is reached; the
        // workers finish their last request in the next phase's time.
        while Instant::now() < end && offered.load(Ordering::Relaxed) < total {
            tokio::time::sleep(Duration::from_millis(20).min(end.saturating_duration_since(Instant::now())))
                .await;
        }
    }

    fn sample_error(&self, code: Code, message: &str) {
        self.tally.lock().sample_error(&format!("{code:?}"), message);
    }

    /// One request (unary or batch), retried on UNAVAILABLE or overload with
    /// the same keys until its deadline, honouring the server's RetryInfo,
    /// on `intake-client`'s retry loop: each complaint goes again on its own
    /// time (an emergency that timed out is resent after the pause even
    /// when the ordinary complaints beside it were told to stay away
    /// longer), the pause doubles from 20 ms to 500 ms, and the budget
    /// (when set) is shared by every request of the run.
    async fn one(&self, ctx: &PhaseCtx, scheduled: Instant, req: Request) {
        let items = req.items;
        let mut results: Vec<Option<Result<String, Code>>> = vec![None; items.len()];
        let start = tokio::time::Instant::from_std(scheduled);
        let mut attempts = Attempts::new(
            RETRY_POLICY.with_max_attempts(ctx.max_attempts),
            self.budget.as_ref(),
            items.len(),
            start,
            start + ctx.deadline,
        );
        let deadline = scheduled + ctx.deadline;
        // The endpoint the last attempt went to: the next goes elsewhere.
        let mut last: Vec<String> = Vec::new();
        while let Some(round) = attempts.next_round().await {
            if round.is_retry() {
                self.tally.lock().retries += 1;
            }
            // Each attempt goes to the shard leader's endpoint if it is
            // known and in rotation, else to the next endpoint in rotation,
            // so the retries of a request sent to a dead or paused node
            // reach a live one, and the nodes out of rotation get none.
            let hint = self.leader_hint(&items);
            let at = self.rotation.pick(hint, &last);
            let (sending, mut verdicts) = self.throttled(ctx, &items, round.items, &mut results);
            if sending.is_empty() {
                attempts.settle(tokio::time::Instant::now(), verdicts);
                continue;
            }
            let complaints: Vec<pb::Complaint> = sending.iter().map(|i| items[*i].clone()).collect();
            let (to, answers) = self
                .send_somewhere(at, req.batch, complaints, deadline, round.number)
                .await;
            last = vec![to];
            let answered = tokio::time::Instant::now();
            self.count_for_throttle(ctx, &items, &sending, &answers, answered);
            verdicts.extend(sending.iter().zip(answers).map(|(i, answer)| {
                let verdict = match &answer {
                    Ok(_) => Verdict::Accepted,
                    Err((code, after)) if retryable(*code) => Verdict::Retry(*after),
                    Err(_) => Verdict::Refused,
                };
                results[*i] = Some(answer.map_err(|(code, _)| code));
                (*i, verdict)
            }));
            attempts.settle(answered, verdicts);
        }
        if attempts.stopped() == Some(Stop::Throttled) {
            self.tally.lock().retries_throttled += 1;
        }
        self.record(ctx, scheduled, &items, results);
    }

    /// The endpoint leading the shard of every complaint in `items`, when
    /// routing to leaders and they share one district.
    fn leader_hint(&self, items: &[pb::Complaint]) -> Option<&str> {
        let leaders = self.leaders.as_ref()?;
        let district = &items.first()?.district_code;
        if items.iter().any(|c| &c.district_code != district) {
            return None;
        }
        let i = leaders.of(district)?;
        self.rotation.endpoints().get(i).map(String::as_str)
    }

    /// The round's complaints to send, and the verdicts of those the
    /// client-side throttle refused here (ordinary complaints of districts
    /// the cluster has lately been turning away at capacity): answered
    /// RESOURCE_EXHAUSTED, as the cluster would, and not retried within
    /// this request, as a refusal with a retry delay longer than the
    /// deadline is not.
    fn throttled(
        &self,
        ctx: &PhaseCtx,
        items: &[pb::Complaint],
        round: Vec<usize>,
        results: &mut [Option<Result<String, Code>>],
    ) -> (Vec<usize>, Vec<(usize, Verdict)>) {
        let Some(throttle) = &self.throttle else {
            return (round, Vec::new());
        };
        let now = tokio::time::Instant::now();
        let (mut sending, mut refused) = (Vec::with_capacity(round.len()), Vec::new());
        for i in round {
            let c = &items[i];
            if !ctx.workload.is_emergency(&c.category) && throttle.admit(&c.district_code, now).is_err() {
                results[i] = Some(Err(Code::ResourceExhausted));
                refused.push((i, Verdict::Refused));
            } else {
                sending.push(i);
            }
        }
        if !refused.is_empty() {
            self.tally.lock().client_throttled += refused.len() as u64;
        }
        (sending, refused)
    }

    /// Tells the throttle what the cluster answered the ordinary complaints
    /// of `sent`.
    fn count_for_throttle(
        &self,
        ctx: &PhaseCtx,
        items: &[pb::Complaint],
        sent: &[usize],
        answers: &Answers,
        now: tokio::time::Instant,
    ) {
        let Some(throttle) = &self.throttle else { return };
        for (i, answer) in sent.iter().zip(answers) {
            let c = &items[*i];
            if ctx.workload.is_emergency(&c.category) {
                continue;
            }
            let counted = ThrottleAnswer::of(answer.as_ref().err().map(|(code, _)| *code));
            throttle.answered(&c.district_code, counted, now);
        }
    }

    /// What became of each complaint of a request that arrived (was due)
    /// at `scheduled`, counted; `None` is a complaint never sent.
    fn record(
        &self,
        ctx: &PhaseCtx,
        scheduled: Instant,
        items: &[pb::Complaint],
        results: Vec<Option<Result<String, Code>>>,
    ) {
        // Latency is that of acknowledgements, from the scheduled arrival:
        // fast refusals would otherwise flatter the percentiles.
        let elapsed_us = scheduled.elapsed().as_micros() as u64;
        let second = self.second();
        let acked = results.iter().any(|r| matches!(r, Some(Ok(_))));
        if acked {
            let _ = self.latency.lock().record(elapsed_us.max(1));
        }
        let mut t = self.tally.lock();
        if acked {
            t.latency(second, elapsed_us);
        }
        for (item, r) in items.iter().zip(results) {
            let outcome = match r {
                Some(Ok(ticket)) => Outcome::Acked(ticket),
                Some(Err(Code::ResourceExhausted)) => Outcome::Rejected,
                Some(Err(c)) => Outcome::Error(format!("{c:?}")),
                // This tool got to the request only after its deadline (it
                // is starved of CPU itself).
                None => Outcome::Error("NotSent".into()),
            };
            let emergency = ctx.workload.is_emergency(&item.category);
            t.record(ctx.index, second, &item.idempotency_key, emergency, outcome);
        }
    }
}

/// What each complaint of one request was told: its ticket, or its code and
/// how long to stay away, if the server said.
type Answers = Vec<Result<String, (Code, Option<Duration>)>>;

impl Engine {
    /// One request, to endpoint `at` or, while it never reaches a server
    /// (the connection is refused or does not open in time), to the other
    /// endpoints in turn at once: nothing was sent, so this is no retry and
    /// costs no attempt and no retry budget (gRPC's transparent retry). Each
    /// endpoint is tried at most once, within `deadline`. Returns where the
    /// last call went and its answers; the rotation learns from each call
    /// (`judge_node`).
    async fn send_somewhere(
        &self,
        mut at: String,
        batch: bool,
        complaints: Vec<pb::Complaint>,
        deadline: Instant,
        previous_attempts: u32,
    ) -> (String, Answers) {
        let mut tried: Vec<String> = Vec::new();
        loop {
            let sent = Instant::now();
            let left = deadline.saturating_duration_since(sent);
            let timeout = self.attempt_timeout.map_or(left, |t| t.min(left));
            let status = match self
                .send(&at, batch, complaints.clone(), timeout, previous_attempts)
                .await
            {
                Ok(answers) => {
                    self.judge_node(&at, sent.elapsed() >= timeout, &answers);
                    return (at, answers);
                }
                Err(status) if never_sent(&status) => status,
                Err(status) => {
                    let answers = self.failed(&status, complaints.len());
                    let silent = nothing_heard(&status) || sent.elapsed() >= timeout;
                    self.judge_node(&at, silent, &answers);
                    return (at, answers);
                }
            };
            self.rotation.heard_nothing(&at);
            tried.push(at.clone());
            let next = self.rotation.pick(None, &tried);
            if tried.contains(&next) || self.rotation.is_out(&next) || Instant::now() >= deadline {
                let answers = self.failed(&status, complaints.len());
                return (at, answers);
            }
            self.tally.lock().resent_unsent += 1;
            at = next;
        }
    }

    /// What a call to `at` that reached it tells the rotation. With an
    /// attempt timeout: a node that let the attempt run out without a word
    /// (`silent`: paused, stuck) is out until a health probe hears it; one
    /// that answered every complaint UNAVAILABLE or DEADLINE_EXCEEDED (it
    /// reaches no leader: cut off, or forwarding to a leader that cannot
    /// answer) is passed over for a while, as intake-client passes over a
    /// node that could not serve, so that first attempts go to nodes that
    /// serve and the retry budget is not spent on the one that does not.
    /// Overload (RESOURCE_EXHAUSTED) is the cluster's, not the node's, and
    /// does not count. Without an attempt timeout (the benchmarks) only a
    /// refused connection takes a node out, as before, so their figures keep
    /// their meaning.
    fn judge_node(&self, at: &str, silent: bool, answers: &Answers) {
        let served = answers.iter().any(Result::is_ok);
        if self.attempt_timeout.is_none() || served {
            self.rotation.answered(at);
            return;
        }
        if silent {
            self.rotation.heard_nothing(at);
            return;
        }
        self.rotation.answered(at);
        let unserved = !answers.is_empty()
            && answers.iter().all(|a| {
                matches!(
                    a,
                    Err((Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled, _))
                )
            });
        if unserved {
            self.rotation.could_not_serve(at);
        }
    }

    /// Every complaint's answer when the whole call failed with `status`.
    fn failed(&self, status: &tonic::Status, n: usize) -> Answers {
        self.sample_error(status.code(), status.message());
        vec![Err((status.code(), retry_delay(status))); n]
    }

    /// One call to endpoint `addr`, given `timeout`: the answer per
    /// complaint, or the status that failed the whole call.
    async fn send(
        &self,
        addr: &str,
        batch: bool,
        mut complaints: Vec<pb::Complaint>,
        timeout: Duration,
        previous_attempts: u32,
    ) -> Result<Answers, tonic::Status> {
        let at = self
            .rotation
            .endpoints()
            .iter()
            .position(|e| e == addr)
            .ok_or_else(|| tonic::Status::internal(format!("{addr} is not an endpoint of this run")))?;
        if let Some(doors) = &self.http {
            let answers = doors
                .send(at, batch, complaints, timeout, previous_attempts)
                .await?;
            for (code, _) in answers.iter().filter_map(|a| a.as_ref().err()) {
                self.sample_error(*code, "(HTTP)");
            }
            return Ok(answers);
        }
        let mut client = self.clients[at].clone();
        // The gRPC deadline covers the server; this covers a call that never
        // got onto a connection (tonic's timer starts later).
        let local = timeout + Duration::from_millis(50);
        let hung = || tonic::Status::deadline_exceeded(format!("no answer within {timeout:?}"));
        if !batch {
            let mut r = tonic::Request::new(pb::SubmitRequest {
                complaint: complaints.pop(),
            });
            r.set_timeout(timeout);
            mark_retry(r.metadata_mut(), previous_attempts);
            let answer = tokio::time::timeout(local, client.submit(r))
                .await
                .unwrap_or_else(|_| Err(hung()));
            return answer.map(|r| vec![Ok(r.into_inner().ticket_id)]);
        }
        let n = complaints.len();
        let mut r = tonic::Request::new(pb::SubmitBatchRequest { complaints });
        r.set_timeout(timeout);
        mark_retry(r.metadata_mut(), previous_attempts);
        let r = match tokio::time::timeout(local, client.submit_batch(r)).await {
            Ok(r) => r?,
            Err(_) => return Err(hung()),
        };
        let mut answers: Answers = r
            .into_inner()
            .results
            .into_iter()
            .map(|res| match item_outcome(res) {
                Ok(ok) => Ok(ok.ticket_id),
                Err(e) => {
                    let code = Code::from_i32(e.code);
                    self.sample_error(code, &e.message);
                    Err((code, item_retry_delay(&e)))
                }
            })
            .collect();
        answers.resize(n, Err((Code::Internal, None)));
        Ok(answers)
    }
}

/// The engine's retries: a pause of 20 ms doubling to 500 ms, no jitter
/// (the figures of earlier runs were made so), each phase bounding the
/// attempts.
const RETRY_POLICY: RetryPolicy = RetryPolicy {
    backoff: Backoff {
        base: Duration::from_millis(20),
        max: Duration::from_millis(500),
        jitter: false,
    },
    max_attempts: u32::MAX,
};

/// Whether a code is worth another attempt. `Unknown` is what a broken
/// connection (a killed node) looks like, and `Cancelled` ("Timeout
/// expired") what this tool's own attempt timer gives when a node says
/// nothing (a paused one); the complaint may have committed, but a retry
/// with the same idempotency key returns that ticket, so it is as safe as
/// the others, and it is what an adapter does (`intake-client` retries
/// both). Without `Cancelled` here, every attempt that hit a paused node
/// was its request's last. `Internal` is what tonic makes of an HTTP/2
/// stream broken under it ("h2 protocol error"), as when a node restarts
/// in a rolling restart; `intake-client` retries it for the same reason
/// (one of 5,500 complaints in a rolling restart failed on it).
fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::ResourceExhausted
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Cancelled
            | Code::Internal
    )
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retries_what_intake_client_retries_and_nothing_definite() {
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Unknown,
            Code::Cancelled,
            Code::Internal,
        ] {
            assert!(retryable(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::AlreadyExists,
            Code::FailedPrecondition,
            Code::NotFound,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(code), "{code:?}");
        }
    }
}
