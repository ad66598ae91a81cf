//! `Client::submit` and `submit_batch`: one call, and for each complaint one
//! ticket or one definite error.
//!
//! The idempotency key is fixed before the first attempt and sent unchanged
//! on every retry, so however many attempts reach the cluster, the state
//! machine creates at most one ticket for the complaint.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use intake_core::category::Priority;
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_proto::wire::{item_result, mark_retry, retry_delay};
use prost::Message;
use tokio::time::Instant;
use tonic::Status;

use crate::config::ClientConfig;
use crate::error::{ClientError, Failure, classify, describe, rejected};
use crate::redact::key_tag;
use crate::retry::RetryBudget;
use crate::retry_loop::{Attempts, Backoff, RetryPolicy, RoundEnd, Verdict};
use crate::routing::Routing;
use crate::throttle::{Answer as ThrottleAnswer, Throttle};

/// An accepted complaint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// Short readable id, e.g. `0-8A3Q`.
    pub ticket_id: String,
    pub shard: u32,
    /// True when an earlier submission with the same key made the ticket.
    pub duplicate: bool,
    /// The shard leader's clock at acceptance.
    pub accepted_at: Option<SystemTime>,
    /// The key the complaint was sent with (assigned here if it had none).
    pub idempotency_key: String,
    /// Attempts made for this complaint, the successful one included.
    pub attempts: u32,
}

/// A client of an Intake cluster. Cheap to clone; clones share channels, the
/// shard map and the retry budget.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    routing: Arc<Routing>,
    budget: RetryBudget,
    throttle: Option<Throttle>,
}

/// One call's complaints, and what has become of each so far.
struct Call {
    complaints: Vec<pb::Complaint>,
    results: Vec<Option<Result<Submitted, ClientError>>>,
    trails: Vec<Trail>,
    /// After a failure, avoid the node that failed and the leader guess.
    failed: Option<String>,
}

impl Call {
    /// Each complaint without a key gets a fresh one, before any attempt:
    /// a UUID behind its district, so that the key is at home on the
    /// complaint's own shard and costs no claim elsewhere
    /// (`intake_core::district_key`).
    fn new(mut complaints: Vec<pb::Complaint>) -> Call {
        for c in &mut complaints {
            if c.idempotency_key.is_empty() {
                c.idempotency_key = crate::mint_key(&c.district_code);
            }
        }
        Call {
            results: complaints.iter().map(|_| None).collect(),
            trails: complaints.iter().map(|_| Trail::default()).collect(),
            complaints,
            failed: None,
        }
    }

    /// The answers to the complaints `items` of a round sent to `target`:
    /// tickets and definite refusals are settled, and a node that failed
    /// otherwise is looked past next time.
    fn judge_round(
        &mut self,
        routing: &Arc<Routing>,
        items: &[usize],
        answers: Vec<Result<pb::SubmitResponse, Status>>,
        target: &str,
    ) -> Vec<(usize, Verdict)> {
        let mut verdicts = Vec::with_capacity(items.len());
        for (i, answer) in items.iter().copied().zip(answers) {
            let (c, trail) = (&self.complaints[i], &mut self.trails[i]);
            trail.attempts += 1;
            let verdict = match answer {
                Ok(ok) => {
                    self.results[i] = Some(Ok(submitted(ok, c, trail.attempts)));
                    Verdict::Accepted
                }
                Err(status) => {
                    let key = &c.idempotency_key;
                    let (verdict, shun) = judge(status, trail, &mut self.results[i], key, target);
                    if let Some(shun) = shun {
                        // A node that answered with RetryInfo is up but
                        // found no leader: look again, but do not pass it
                        // over. (One that said nothing is out already.)
                        routing.miss(&c.district_code, target, shun);
                        self.failed = Some(target.to_string());
                    }
                    verdict
                }
            };
            verdicts.push((i, verdict));
        }
        verdicts
    }

    /// One answer per complaint: its ticket or refusal, or the definite end
    /// its failed attempts add up to.
    fn finish(self) -> Vec<Result<Submitted, ClientError>> {
        self.results
            .into_iter()
            .zip(self.trails)
            .zip(&self.complaints)
            .map(|((r, trail), c)| r.unwrap_or_else(|| Err(give_up(&c.idempotency_key, trail))))
            .collect()
    }
}

/// How one complaint's attempts have failed so far.
#[derive(Default)]
struct Trail {
    attempts: u32,
    last: Option<Status>,
    ambiguous: bool,
    overloaded: bool,
    retry_after: Option<Duration>,
}

impl Trail {
    fn record(&mut self, failure: Failure, status: Status, server_floor: Option<Duration>) {
        self.ambiguous |= failure == Failure::Ambiguous;
        self.overloaded |= failure == Failure::Overloaded;
        self.retry_after = server_floor.or(self.retry_after);
        self.last = Some(status);
    }
}

impl Client {
    /// Builds the client and starts learning the shard map in the
    /// background. Connections are made on first use, so this succeeds while
    /// the cluster is down.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let routing = Arc::new(Routing::new(
            &config.endpoints,
            config.connect_timeout,
            config.map_refresh_interval,
            config.suspect_for,
            config.security.clone(),
        )?);
        routing.refresh_soon();
        Ok(Client {
            inner: Arc::new(Inner {
                budget: RetryBudget::new(config.retry_budget),
                throttle: config.throttle.map(Throttle::new),
                config,
                routing,
            }),
        })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Tokens left in the retry budget (for metrics and tests).
    pub fn retry_tokens(&self) -> f64 {
        self.inner.budget.tokens()
    }

    /// The address the client would send a complaint of `district` to first:
    /// its shard's leader, if the cached map knows it.
    pub fn leader_for(&self, district: &str) -> Option<String> {
        self.inner.routing.leader_of(district)
    }

    /// Waits (up to `timeout`) until the shard map names the leader of
    /// `district`'s shard; false if it still does not. Submitting never
    /// requires this — it only saves a forward on the first calls.
    pub async fn wait_for_leader(&self, district: &str, timeout: Duration) -> bool {
        self.inner.routing.wait_for_leader(district, timeout).await
    }

    /// Submits one complaint and returns its ticket, retrying what may be
    /// retried within `call_timeout` and the retry budget. An empty
    /// idempotency key is replaced by a fresh UUID before the first attempt.
    pub async fn submit(&self, complaint: pb::Complaint) -> Result<Submitted, ClientError> {
        let mut results = self.run(vec![complaint], Rpc::Unary).await;
        results
            .pop()
            .unwrap_or_else(|| Err(ClientError::Config("no result for the complaint".into())))
    }

    /// Submits many complaints with `SubmitBatch` and returns one answer per
    /// complaint, in order. Each gets its key before the first attempt;
    /// retries resend only the complaints that failed retryably, each with
    /// its own key. Large inputs go in several requests of at most
    /// [`MAX_BATCH_ITEMS`] complaints.
    pub async fn submit_batch(&self, complaints: Vec<pb::Complaint>) -> Vec<Result<Submitted, ClientError>> {
        let mut out = Vec::with_capacity(complaints.len());
        for chunk in batches(complaints) {
            out.extend(self.run(chunk, Rpc::Batch).await);
        }
        out
    }

    /// The attempt loop shared by `submit` and `submit_batch`, on the one
    /// retry loop ([`Attempts`]): each round sends the complaints due,
    /// settles those answered for good, and the rest go again after their
    /// own pause.
    async fn run(&self, complaints: Vec<pb::Complaint>, rpc: Rpc) -> Vec<Result<Submitted, ClientError>> {
        let mut call = Call::new(complaints);
        let cfg = &self.inner.config;
        let routing = &self.inner.routing;
        let now = Instant::now();
        let policy = RetryPolicy {
            backoff: Backoff::full_jitter(cfg.backoff_base, cfg.backoff_max),
            max_attempts: u32::MAX,
        };
        let n = call.complaints.len();
        let mut attempts = Attempts::new(policy, Some(&self.inner.budget), n, now, now + cfg.call_timeout);
        let deadline = attempts.deadline();
        while let Some(round) = attempts.next_round().await {
            // An attempt with no time left is not sent.
            if deadline.saturating_duration_since(Instant::now()).is_zero() {
                break;
            }
            let (items, mut verdicts) = self.throttled(&mut call, round.items);
            let Some(&first) = items.first() else {
                attempts.settle(Instant::now(), verdicts);
                continue;
            };
            let district = call.complaints[first].district_code.clone();
            let target = self.target(&district, call.failed.as_deref());
            let sending: Vec<pb::Complaint> = items.iter().map(|i| call.complaints[*i].clone()).collect();
            let (target, answers) = self
                .send_somewhere(rpc, target, sending, cfg.attempt_timeout, round.number, deadline)
                .await;
            let answered = Instant::now();
            self.count_for_throttle(&call, &items, &answers, answered);
            verdicts.extend(call.judge_round(routing, &items, answers, &target));
            let end = attempts.settle(answered, verdicts);
            if end == RoundEnd::Accepted && routing.leader_of(&district).as_deref() != Some(target.as_str()) {
                // Served, but by forwarding: learn the real leader.
                routing.refresh_soon();
            }
        }
        call.finish()
    }

    /// The round's complaints to send, and the verdicts of the ordinary ones
    /// the client-side throttle holds back: settled at once as
    /// [`ClientError::Overloaded`] with the throttle's retry delay, as the
    /// cluster's own refusal at capacity would be.
    fn throttled(&self, call: &mut Call, round: Vec<usize>) -> (Vec<usize>, Vec<(usize, Verdict)>) {
        let Some(throttle) = &self.inner.throttle else {
            return (round, Vec::new());
        };
        let now = Instant::now();
        let categories = &self.inner.config.categories;
        let (mut sending, mut held) = (Vec::with_capacity(round.len()), Vec::new());
        for i in round {
            let c = &call.complaints[i];
            let ordinary = categories.priority(&c.category) == Priority::Ordinary;
            match ordinary.then(|| throttle.admit(&c.district_code, now)) {
                Some(Err(retry_after)) => {
                    call.results[i] = Some(Err(ClientError::Overloaded { retry_after }));
                    held.push((i, Verdict::Refused));
                }
                _ => sending.push(i),
            }
        }
        (sending, held)
    }

    /// Tells the throttle what the cluster answered the ordinary complaints
    /// `items` of `call`.
    fn count_for_throttle(
        &self,
        call: &Call,
        items: &[usize],
        answers: &[Result<pb::SubmitResponse, Status>],
        now: Instant,
    ) {
        let Some(throttle) = &self.inner.throttle else {
            return;
        };
        let categories = &self.inner.config.categories;
        for (i, answer) in items.iter().zip(answers) {
            let c = &call.complaints[*i];
            if categories.priority(&c.category) == Priority::Emergency {
                continue;
            }
            let counted = ThrottleAnswer::of(answer.as_ref().err().map(Status::code));
            throttle.answered(&c.district_code, counted, now);
        }
    }

    /// Where a round for `district` goes: its shard's leader while it is in
    /// rotation, unless that is the node that just `failed`; else the next
    /// endpoint in turn (see `rotation`).
    fn target(&self, district: &str, failed: Option<&str>) -> String {
        let routing = &self.inner.routing;
        let avoid: Vec<String> = failed.map(str::to_string).into_iter().collect();
        routing
            .rotation
            .pick(routing.leader_of(district).as_deref(), &avoid)
    }

    /// One request, to `target` or, if it never reaches a server there (the
    /// connection is refused or does not open in time), to the other
    /// endpoints in turn, at once: nothing was sent, so resending is no
    /// retry and costs no retry budget (gRPC's transparent retry). Each
    /// endpoint is tried at most once, within `deadline`. What the rotation
    /// learns: an endpoint that refused, broke the connection or let the
    /// attempt run out without a word is out of it until it answers again;
    /// one that answered is in it. Returns where the last request went and
    /// its answers.
    async fn send_somewhere(
        &self,
        rpc: Rpc,
        mut target: String,
        complaints: Vec<pb::Complaint>,
        attempt_timeout: Duration,
        round: u32,
        deadline: Instant,
    ) -> (String, Vec<Result<pb::SubmitResponse, Status>>) {
        let rotation = &self.inner.routing.rotation;
        let mut tried: Vec<String> = Vec::new();
        loop {
            let timeout = attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let (answers, silent) = self
                .attempt(rpc, &target, complaints.clone(), timeout, round)
                .await;
            let all_failed = |f: fn(&Status) -> bool| {
                !answers.is_empty() && answers.iter().all(|a| a.as_ref().err().is_some_and(f))
            };
            if !all_failed(crate::rotation::never_sent) {
                if silent || all_failed(crate::rotation::nothing_heard) {
                    rotation.heard_nothing(&target);
                } else {
                    rotation.answered(&target);
                }
                return (target, answers);
            }
            rotation.heard_nothing(&target);
            tried.push(target.clone());
            if Instant::now() >= deadline {
                return (target, answers);
            }
            let next = rotation.pick(None, &tried);
            if tried.contains(&next) || rotation.is_out(&next) {
                return (target, answers);
            }
            tracing::debug!(from = %target, to = %next, "connection refused: resending elsewhere");
            target = next;
        }
    }

    /// One request to `target`; one answer per complaint (a failure of the
    /// whole request is every complaint's answer), and whether the local
    /// timer ran out on it (nothing heard).
    async fn attempt(
        &self,
        rpc: Rpc,
        target: &str,
        complaints: Vec<pb::Complaint>,
        timeout: Duration,
        previous_attempts: u32,
    ) -> (Vec<Result<pb::SubmitResponse, Status>>, bool) {
        let n = complaints.len();
        let all = |s: Status| vec![Err(s); n];
        let channel = match self.inner.routing.channel(target) {
            Ok(c) => c,
            Err(e) => return (all(Status::unavailable(e.to_string())), false),
        };
        let mut client =
            IntakeServiceClient::with_interceptor(channel, self.inner.routing.security().interceptor());
        // The gRPC deadline covers the server; the local timeout covers a
        // connect that hangs before any request is sent.
        let local = timeout + Duration::from_millis(50);
        let hung = || Status::deadline_exceeded(format!("no answer from {target} within {timeout:?}"));
        match rpc {
            Rpc::Unary => {
                let mut req = tonic::Request::new(pb::SubmitRequest {
                    complaint: complaints.into_iter().next(),
                });
                req.set_timeout(timeout);
                mark_retry(req.metadata_mut(), previous_attempts);
                match tokio::time::timeout(local, client.submit(req)).await {
                    Ok(r) => (vec![r.map(tonic::Response::into_inner)], false),
                    Err(_) => (all(hung()), true),
                }
            }
            Rpc::Batch => {
                let mut req = tonic::Request::new(pb::SubmitBatchRequest { complaints });
                req.set_timeout(timeout);
                mark_retry(req.metadata_mut(), previous_attempts);
                match tokio::time::timeout(local, client.submit_batch(req)).await {
                    Ok(Ok(resp)) => {
                        let results = resp.into_inner().results;
                        if results.len() != n {
                            let odd = Status::internal("the node answered a different number of items");
                            return (all(odd), false);
                        }
                        (results.into_iter().map(item_result).collect(), false)
                    }
                    Ok(Err(status)) => (all(status), false),
                    Err(_) => (all(hung()), true),
                }
            }
        }
    }
}

/// Which RPC carries the complaints.
#[derive(Debug, Clone, Copy)]
enum Rpc {
    Unary,
    Batch,
}

/// Most complaints in one `SubmitBatch` request; the server takes 1000 and
/// 8 MiB, and smaller requests lose less to one slow shard.
pub const MAX_BATCH_ITEMS: usize = 256;
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

fn batches(complaints: Vec<pb::Complaint>) -> Vec<Vec<pb::Complaint>> {
    let mut out: Vec<Vec<pb::Complaint>> = Vec::new();
    let mut bytes = 0;
    for c in complaints {
        let size = c.encoded_len();
        match out.last_mut() {
            Some(last) if last.len() < MAX_BATCH_ITEMS && bytes + size <= MAX_BATCH_BYTES => {
                bytes += size;
                last.push(c);
            }
            _ => {
                bytes = size;
                out.push(vec![c]);
            }
        }
    }
    out
}

/// A failed attempt's meaning for its complaint: a definite refusal settles
/// it in `result`; otherwise it may be retried, no sooner than the server
/// asked. The second value is `Some(shun)` when the node that answered
/// should be looked past (`shun`: tried last for a while) — not for
/// overload, which is the cluster's, not the node's.
fn judge(
    status: Status,
    trail: &mut Trail,
    result: &mut Option<Result<Submitted, ClientError>>,
    key: &str,
    target: &str,
) -> (Verdict, Option<bool>) {
    let failure = classify(&status);
    if failure == Failure::Definite {
        *result = Some(Err(rejected(&status)));
        return (Verdict::Refused, None);
    }
    tracing::debug!(key_tag = %key_tag(key), %target, %status, "attempt failed");
    let server_floor = retry_delay(&status);
    let shun = (failure != Failure::Overloaded).then_some(server_floor.is_none());
    trail.record(failure, status, server_floor);
    (Verdict::Retry(server_floor), shun)
}

fn submitted(ok: pb::SubmitResponse, c: &pb::Complaint, attempts: u32) -> Submitted {
    Submitted {
        ticket_id: ok.ticket_id,
        shard: ok.shard,
        duplicate: ok.duplicate,
        accepted_at: ok.accepted_at.and_then(|t| SystemTime::try_from(t).ok()),
        idempotency_key: c.idempotency_key.clone(),
        attempts,
    }
}

/// The definite end of a call that got no ticket.
fn give_up(key: &str, trail: Trail) -> ClientError {
    let last_error = trail
        .last
        .as_ref()
        .map(describe)
        .unwrap_or_else(|| "no attempt made".into());
    if trail.ambiguous || trail.last.is_none() {
        ClientError::Unknown {
            idempotency_key: key.to_string(),
            last_error,
        }
    } else if trail.overloaded {
        ClientError::Overloaded {
            retry_after: trail.retry_after.unwrap_or(Duration::from_millis(100)),
        }
    } else {
        ClientError::Unreachable { last_error }
    }
}
