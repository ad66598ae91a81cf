//! `intake.v1.IntakeService`: the door adapters push complaints through.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::join_all;
use intake_core::{
    CategoryTable, Complaint, DistrictTable, FieldViolation, Limits, Priority, StatusError, StatusUpdate,
    TicketId, validate_complaint, validate_update,
};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use intake_storage::ShardId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};

use crate::config::AdmissionConfig;
use crate::convert::{complaint_from_pb, now_millis, reported_at_from_pb, status_from_pb};
use crate::deadline::parse_grpc_timeout;
use crate::errors::{invalid_argument, invalid_fields, item_error, retry_no_sooner, with_retry};
use crate::lag::RuntimeLag;
use crate::observe::record_submit;
use crate::router::{ItemResult, Router, hops_of, is_retry};
use crate::streak::ShedStreak;

/// Most complaints in one `SubmitBatch` call.
pub const MAX_BATCH_ITEMS: usize = 1000;
/// Bytes of complaints per Raft entry; with the entry's framing this stays
/// below `intake_storage::MAX_ENTRY_BYTES`, itself far below sled's blob size.
pub const MAX_ENTRY_COMPLAINT_BYTES: usize = 48 * 1024;
/// Most time kept back from a caller's deadline for the answer's way back.
const MAX_ANSWER_MARGIN: Duration = Duration::from_millis(500);
/// How long after the last emergency the stricter CPU limit for ordinary
/// complaints holds.
const EMERGENCY_MEMORY: Duration = Duration::from_secs(5);

pub struct IntakeServiceImpl {
    router: Router,
    districts: Arc<DistrictTable>,
    categories: Arc<CategoryTable>,
    limits: Limits,
    submit_timeout: Duration,
    /// Submit calls in progress here from clients, and forwarded from other
    /// nodes: the node-wide bound on memory held by requests, whichever shard
    /// they are for. Two pools, because a client's batch holds its slot
    /// while its groups are forwarded: with one pool, the batches arriving
    /// here could take every slot and starve the forwarded groups they (and
    /// other nodes' batches) wait for.
    calls: Arc<Semaphore>,
    forwarded: Arc<Semaphore>,
    max_calls: usize,
    ordinary_share: f64,
    lag: RuntimeLag,
    max_lag: Duration,
    emergency_lag: Duration,
    emergencies: RecentEmergency,
    /// Stretches ordinary refusals' retry delays while shedding lasts.
    streak: ShedStreak,
}

impl IntakeServiceImpl {
    pub fn new(
        router: Router,
        districts: Arc<DistrictTable>,
        categories: Arc<CategoryTable>,
        limits: Limits,
        submit_timeout: Duration,
        admission: &AdmissionConfig,
        lag: RuntimeLag,
    ) -> Self {
        let max_calls = admission.node_requests.max(1);
        Self {
            router,
            districts,
            categories,
            limits,
            submit_timeout,
            calls: Arc::new(Semaphore::new(max_calls)),
            forwarded: Arc::new(Semaphore::new(max_calls)),
            max_calls,
            ordinary_share: admission.ordinary_share,
            lag,
            max_lag: admission.max_runtime_lag,
            emergency_lag: admission.emergency_runtime_lag,
            emergencies: RecentEmergency::new(Instant::now()),
            streak: ShedStreak::default(),
        }
    }

    /// A slot for one submit call, or RESOURCE_EXHAUSTED at once. Ordinary
    /// calls may take only a share of the slots, so emergencies still find
    /// one when ordinary ones are being shed.
    fn admit(&self, class: Priority, hops: u32) -> Result<OwnedSemaphorePermit, Status> {
        if class == Priority::Ordinary {
            self.ordinary_cpu_check()?;
        }
        let reserved = match class {
            Priority::Emergency => 0,
            Priority::Ordinary => (self.max_calls as f64 * (1.0 - self.ordinary_share)) as usize,
        };
        let pool = if hops == 0 { &self.calls } else { &self.forwarded };
        let permit = (pool.available_permits() > reserved)
            .then(|| pool.clone().try_acquire_owned().ok())
            .flatten();
        permit.ok_or_else(|| {
            let backlog = self.router.backlog();
            with_retry(
                Code::ResourceExhausted,
                "this node has too many submissions in progress; retry with the same idempotency key",
                Duration::from_millis(100)
                    .mul_f64(1.0 + backlog as f64 / 1024.0)
                    .min(Duration::from_secs(10)),
            )
        })
    }

    /// Notes that an emergency arrived, for `ordinary_cpu_check`.
    fn saw_emergency(&self) {
        self.emergencies.note(Instant::now());
    }

    /// The runtime lag above which ordinary complaints are refused: lower
    /// while emergencies are arriving, which need the headroom.
    fn lag_limit(&self) -> Duration {
        if self.emergencies.within(EMERGENCY_MEMORY, Instant::now()) {
            self.emergency_lag.min(self.max_lag)
        } else {
            self.max_lag
        }
    }

    /// Ordinary complaints are refused while this node's runtime runs late:
    /// it is out of CPU, and emergencies need what is left.
    fn ordinary_cpu_check(&self) -> Result<(), Status> {
        match self.lag.above(self.lag_limit()) {
            Some(lag) => Err(with_retry(
                Code::ResourceExhausted,
                "this node is out of CPU; retry with the same idempotency key",
                (lag * 4).clamp(Duration::from_millis(100), Duration::from_secs(10)),
            )),
            None => Ok(()),
        }
    }

    fn class(&self, c: &Complaint) -> Priority {
        self.categories.priority(&c.category)
    }

    /// The client's deadline (grpc-timeout), capped by our own.
    fn deadline<T>(&self, req: &Request<T>) -> Instant {
        let ours = self.submit_timeout;
        let theirs = req
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .unwrap_or(ours);
        let timeout = theirs.min(ours);
        // Answer well before the caller's own timer fires, so a late
        // submission gets an explicit DEADLINE_EXCEEDED instead of silence.
        // The margin covers what this clock does not see: the time the
        // request spent before this handler ran and the answer's way back,
        // both long on a node short of CPU. With 100 ms, batches answered
        // "in time" here still timed out at the client in a surge.
        let margin = (timeout / 4).min(MAX_ANSWER_MARGIN);
        // Counted from the call's arrival, not from now: the wait for the
        // body and for a worker is already part of the caller's time.
        let arrived = crate::arrival::arrived(req);
        metrics::histogram!("intake_handler_delay_seconds").record(arrived.elapsed().as_secs_f64());
        arrived + timeout - margin
    }

    /// An ordinary complaint refused at the door is told to wait at least
    /// as long as this node's shedding has lasted (see `streak`); anything
    /// else passes unchanged.
    fn sent_away(&self, s: Status, ordinary: bool, hops: u32) -> Status {
        if ordinary && hops == 0 && s.code() == Code::ResourceExhausted {
            retry_no_sooner(s, self.streak.refused(Instant::now()))
        } else {
            s
        }
    }

    /// A well-formed id can still name a group that holds no tickets: the
    /// meta group (`u32::MAX`) or a shard this cluster does not have. Such a
    /// request must not be routed: an update would be proposed to that
    /// group's log (the meta group's, on every meta voter).
    fn data_shard(&self, id: TicketId) -> Result<(), Status> {
        if self.router.is_data_shard(id.shard) {
            Ok(())
        } else {
            Err(Status::not_found(format!(
                "no ticket {id}: this cluster has no shard {}",
                id.shard
            )))
        }
    }

    /// Validates a complaint and finds its shard.
    fn check(&self, c: Option<pb::Complaint>) -> Result<(Complaint, ShardId), Status> {
        let c = c.ok_or_else(|| {
            invalid_argument(&[FieldViolation {
                field: "complaint".into(),
                description: "is required".into(),
            }])
        })?;
        let reported = c
            .reported_at
            .as_ref()
            .map(|ts| reported_at_from_pb("reported_at", ts));
        let c = complaint_from_pb(c);
        let mut violations = validate_complaint(&c, &self.districts, &self.limits)
            .err()
            .unwrap_or_default();
        violations.extend(reported.and_then(Result::err));
        if !violations.is_empty() {
            return Err(invalid_argument(&violations));
        }
        // The table can name a district the cluster map (fixed at bootstrap)
        // does not: the district table was changed after the cluster began.
        let shard = self.router.shard_for(&c).ok_or_else(|| {
            invalid_argument(&[FieldViolation {
                field: "district_code".into(),
                description: format!(
                    "district {:?} is not mapped to any shard of this cluster",
                    c.district
                ),
            }])
        })?;
        Ok((c, shard))
    }
}

/// When an emergency last arrived, lock-free: every submission asks.
struct RecentEmergency {
    /// Milliseconds since `born`; `u64::MAX` while none has come.
    last: AtomicU64,
    born: Instant,
}

impl RecentEmergency {
    fn new(born: Instant) -> Self {
        Self {
            last: AtomicU64::new(u64::MAX),
            born,
        }
    }

    fn note(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.born).as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Whether one came within `window` before `now`.
    fn within(&self, window: Duration, now: Instant) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.born).as_millis() as u64;
        last != u64::MAX && ms.saturating_sub(last) < window.as_millis() as u64
    }
}

/// Splits one shard's complaints into Raft-entry-sized groups, keeping each
/// complaint's index in the request.
fn entry_groups(items: Vec<(usize, Complaint)>) -> Vec<Vec<(usize, Complaint)>> {
    let mut groups = Vec::new();
    let mut current: Vec<(usize, Complaint)> = Vec::new();
    let mut bytes = 0;
    for (i, c) in items {
        let size = c.approx_bytes();
        if !current.is_empty()
            && (current.len() >= intake_core::ticket_id::MAX_ITEMS_PER_ENTRY
                || bytes + size > MAX_ENTRY_COMPLAINT_BYTES)
        {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((i, c));
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[tonic::async_trait]
impl IntakeService for IntakeServiceImpl {
    async fn submit(
        &self,
        request: Request<pb::SubmitRequest>,
    ) -> Result<Response<pb::SubmitResponse>, Status> {
        let started = std::time::Instant::now();
        let deadline = self.deadline(&request);
        let fwd = hops_of(&request);
        let retry = is_retry(&request);
        let mut ordinary = false;
        let result = async {
            let (c, shard) = self.check(request.into_inner().complaint)?;
            let class = self.class(&c);
            ordinary = class == Priority::Ordinary;
            if !ordinary {
                self.saw_emergency();
            }
            let _slot = self.admit(class, fwd)?;
            let mut results = self
                .router
                .submit(shard, vec![c], class, fwd, retry, deadline)
                .await?;
            results
                .pop()
                .unwrap_or_else(|| Err(Status::internal("no result for the complaint")))
        }
        .await;
        let result = result.map_err(|s| self.sent_away(s, ordinary, fwd));
        record_submit(&result, started);
        result.map(Response::new)
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let started = std::time::Instant::now();
        let deadline = self.deadline(&request);
        let fwd = hops_of(&request);
        let retry = is_retry(&request);
        let complaints = request.into_inner().complaints;
        let any_emergency = complaints
            .iter()
            .any(|c| self.categories.priority(&c.category) == Priority::Emergency);
        let class = if any_emergency {
            self.saw_emergency();
            Priority::Emergency
        } else {
            Priority::Ordinary
        };
        let _slot = match self.admit(class, fwd) {
            Ok(slot) => slot,
            Err(s) => {
                let s = self.sent_away(s, class == Priority::Ordinary, fwd);
                record_submit::<()>(&Err(s.clone()), started);
                return Err(s);
            }
        };
        if complaints.len() > MAX_BATCH_ITEMS {
            return Err(invalid_argument(&[FieldViolation {
                field: "complaints".into(),
                description: format!(
                    "has {} items, more than the limit of {MAX_BATCH_ITEMS}",
                    complaints.len()
                ),
            }]));
        }
        let n = complaints.len();
        let mut results: Vec<Option<ItemResult>> = (0..n).map(|_| None).collect();
        let mut ordinary = vec![false; n];
        // Grouped by shard and class, so an ordinary complaint never rides
        // in on an emergency's priority.
        let mut groups: std::collections::BTreeMap<(ShardId, Priority), Vec<(usize, Complaint)>> =
            Default::default();
        for (i, c) in complaints.into_iter().enumerate() {
            match self.check(Some(c)) {
                Ok((c, shard)) => {
                    let class = self.class(&c);
                    ordinary[i] = class == Priority::Ordinary;
                    groups.entry((shard, class)).or_default().push((i, c));
                }
                Err(s) => results[i] = Some(Err(s)),
            }
        }
        let mut calls = Vec::new();
        let now = Instant::now();
        for ((shard, class), items) in groups {
            let mut deadline = deadline;
            if class == Priority::Ordinary && any_emergency {
                // The call was admitted for its emergencies; its ordinary
                // complaints still pass the ordinary bound on CPU here.
                if let Err(refused) = self.ordinary_cpu_check() {
                    for (i, _) in items {
                        results[i] = Some(Err(refused.clone()));
                    }
                    continue;
                }
                // The answer waits for every item, so ordinary ones that
                // queue must not hold the batch's emergencies past the
                // caller's deadline: they get half the time left.
                if fwd == 0 {
                    deadline = now + deadline.saturating_duration_since(now) / 2;
                }
            }
            for group in entry_groups(items) {
                let (idx, cs): (Vec<usize>, Vec<Complaint>) = group.into_iter().unzip();
                let router = self.router.clone();
                calls.push(async move { (idx, router.submit(shard, cs, class, fwd, retry, deadline).await) });
            }
        }
        for (idx, outcome) in join_all(calls).await {
            match outcome {
                Ok(items) => {
                    for (i, r) in idx.into_iter().zip(items) {
                        results[i] = Some(r);
                    }
                }
                Err(s) => {
                    for i in idx {
                        results[i] = Some(Err(s.clone()));
                    }
                }
            }
        }
        metrics::histogram!("intake_submit_batch_seconds", "hops" => crate::observe::hops_label(fwd))
            .record(started.elapsed().as_secs_f64());
        let results: Vec<pb::SubmitResult> = results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                let r = r
                    .unwrap_or_else(|| Err(Status::internal("item was not processed")))
                    .map_err(|s| self.sent_away(s, ordinary[i], fwd));
                record_submit(&r, started);
                pb::SubmitResult {
                    outcome: Some(match r {
                        Ok(ok) => pb::submit_result::Outcome::Accepted(ok),
                        Err(s) => pb::submit_result::Outcome::Error(item_error(&s)),
                    }),
                }
            })
            .collect();
        Ok(Response::new(pb::SubmitBatchResponse { results }))
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let fwd = hops_of(&request);
        let req = request.into_inner();
        let id: TicketId = req.ticket_id.parse().map_err(|e: intake_core::TicketIdError| {
            invalid_argument(&[FieldViolation {
                field: "ticket_id".into(),
                description: e.to_string(),
            }])
        })?;
        self.data_shard(id)?;
        match self.router.get_ticket(id, req.local, fwd).await? {
            Some(ticket) => Ok(Response::new(pb::GetTicketResponse { ticket: Some(ticket) })),
            None => Err(Status::not_found(format!("no ticket {id}"))),
        }
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let fwd = hops_of(&request);
        let deadline = self.deadline(&request);
        let update = status_update_from_pb(request.into_inner())?;
        self.data_shard(update.ticket)?;
        let ticket = self.router.update_status(update, fwd, deadline).await?;
        Ok(Response::new(pb::UpdateStatusResponse { ticket: Some(ticket) }))
    }
}

/// Checks every field of a status report at the door, so a malformed one
/// never reaches the log; the transition itself is judged at apply time.
pub fn status_update_from_pb(req: pb::UpdateStatusRequest) -> Result<StatusUpdate, Status> {
    let mut violations = Vec::new();
    let ticket = req.ticket_id.parse::<TicketId>().map_err(|e| FieldViolation {
        field: "ticket_id".into(),
        description: e.to_string(),
    });
    let status = status_from_pb(req.status).ok_or_else(|| FieldViolation {
        field: "status".into(),
        description: "must be one of RECEIVED, DISPATCHED, ASSIGNED, RESOLVED, REJECTED".into(),
    });
    let reported_at = req
        .reported_at
        .as_ref()
        .map_or_else(|| Ok(now_millis()), |ts| reported_at_from_pb("reported_at", ts));
    let (ticket, status, reported_at) = match (ticket, status, reported_at) {
        (Ok(t), Ok(s), Ok(r)) => (t, s, r),
        (t, s, r) => {
            violations.extend(t.err());
            violations.extend(s.err());
            violations.extend(r.err());
            return Err(invalid_fields("status update", &violations));
        }
    };
    let update = StatusUpdate {
        ticket,
        status,
        department: Some(req.department).filter(|d| !d.is_empty()),
        note: req.note,
        reported_at,
    };
    validate_update(&update).map_err(|e| {
        let field = match &e {
            StatusError::MissingDepartment | StatusError::UnexpectedDepartment => "department".to_string(),
            StatusError::TooLong { field, .. } => field.clone(),
            _ => "status".to_string(),
        };
        invalid_fields(
            "status update",
            &[FieldViolation {
                field,
                description: e.to_string(),
            }],
        )
    })?;
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_cpu_limit_holds_only_for_a_while_after_an_emergency() {
        let born = Instant::now();
        let seen = RecentEmergency::new(born);
        let window = Duration::from_secs(5);
        assert!(
            !seen.within(window, born + Duration::from_secs(1)),
            "none has come yet"
        );
        seen.note(born + Duration::from_secs(10));
        assert!(seen.within(window, born + Duration::from_secs(10)));
        assert!(seen.within(window, born + Duration::from_millis(14_900)));
        assert!(!seen.within(window, born + Duration::from_secs(15)));
        seen.note(born + Duration::from_secs(20));
        assert!(seen.within(window, born + Duration::from_secs(21)));
    }
}
