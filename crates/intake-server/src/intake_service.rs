//! `intake.v1.IntakeService`: the door adapters push complaints through.
//!
//! It validates, asks [`Admission`] whether to take the call, hands each
//! shard's complaints to the [`Router`], and turns [`RequestError`]s into
//! gRPC statuses, here and nowhere else.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use intake_core::{
    CategoryTable, Complaint, DistrictTable, FieldViolation, Limits, Priority, StatusError, StatusUpdate,
    TicketId, validate_complaint, validate_update,
};
use intake_proto::pb;
use intake_proto::pb::intake_service_server::IntakeService;
use intake_proto::wire::{hops_of, is_retry};
use intake_storage::ShardId;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::admission::early::Admitted;
use crate::admission::{Admission, CallPermit};
use crate::convert::{complaint_from_pb, now_millis, reported_at_from_pb, status_from_pb};
use crate::deadline::parse_grpc_timeout;
use crate::error::RequestError;
use crate::limits::{MAX_BATCH_ITEMS, MAX_ENTRY_COMPLAINT_BYTES};
use crate::observe::record_submit;
use crate::router::{ItemResult, Router, Submission};

/// Most time kept back from a caller's deadline for the answer's way back.
const MAX_ANSWER_MARGIN: Duration = Duration::from_millis(500);

pub struct IntakeServiceImpl {
    router: Router,
    admission: Arc<Admission>,
    districts: Arc<DistrictTable>,
    categories: Arc<CategoryTable>,
    limits: Limits,
    submit_timeout: Duration,
}

/// What every submit call carries besides its complaints.
#[derive(Clone, Copy)]
struct Call {
    hops: u32,
    retry: bool,
    deadline: Instant,
}

impl Call {
    fn submission(&self, shard: ShardId, complaints: Vec<Complaint>, class: Priority) -> Submission {
        Submission {
            shard,
            complaints,
            class,
            hops: self.hops,
            retry: self.retry,
            deadline: self.deadline,
        }
    }
}

/// A submit call's slot in the node's call pool, held until it is answered.
#[allow(dead_code)] // held, never read
enum Slot {
    /// Taken by a door in this process before the request was built.
    Early(Admitted),
    /// Taken by this service.
    Here(CallPermit),
}

/// One shard's complaints of one class from a batch, by index in the call.
type Groups = BTreeMap<(ShardId, Priority), Vec<(usize, Complaint)>>;

impl IntakeServiceImpl {
    pub fn new(
        router: Router,
        admission: Arc<Admission>,
        districts: Arc<DistrictTable>,
        categories: Arc<CategoryTable>,
        limits: Limits,
        submit_timeout: Duration,
    ) -> Self {
        Self {
            router,
            admission,
            districts,
            categories,
            limits,
            submit_timeout,
        }
    }

    fn class(&self, c: &Complaint) -> Priority {
        self.categories.priority(&c.category)
    }

    fn call<T>(&self, req: &Request<T>) -> Call {
        Call {
            hops: hops_of(req.metadata()),
            retry: is_retry(req.metadata()),
            deadline: self.deadline(req),
        }
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

    /// A call slot for a submit call of `class`, noting an emergency's
    /// arrival first (it tightens the limits for ordinary work).
    fn admit(&self, class: Priority, hops: u32) -> Result<CallPermit, RequestError> {
        self.note_arrival(class);
        self.slot_only(class, hops)
    }

    /// An emergency arrived: ordinary work gets less CPU for a while.
    fn note_arrival(&self, class: Priority) {
        if class == Priority::Emergency {
            self.admission.saw_emergency(Instant::now());
        }
    }

    fn slot_only(&self, class: Priority, hops: u32) -> Result<CallPermit, RequestError> {
        let backlog = self.router.registry().backlog();
        Ok(self.admission.admit_call(class, hops, backlog, Instant::now())?)
    }

    /// Rule 1 for a door in this process that knows a call's class before
    /// its request exists (the HTTP door, from the body's categories): the
    /// slot to attach to the request ([`Admitted::attach`]), or the refusal
    /// as the status the call would have been answered, at once. The
    /// emergency is noted only once the call is let in by the gate ([`Self::slot`]):
    /// a caller without a token must not tighten the limits for the rest.
    pub fn admit_early(&self, class: Priority) -> Result<Admitted, Status> {
        let started = std::time::Instant::now();
        self.slot_only(class, 0)
            .map(|slot| Admitted::new(class, slot))
            .map_err(|e| {
                let e = self.turned_away(e, class, 0);
                record_submit(Some(e.code()), started);
                Status::from(e)
            })
    }

    /// The call's slot: the one its door took (`early`), or one taken here.
    fn slot(&self, early: Option<Admitted>, class: Priority, hops: u32) -> Result<Slot, RequestError> {
        match early {
            Some(early) => {
                self.note_arrival(class);
                Ok(Slot::Early(early))
            }
            None => self.admit(class, hops).map(Slot::Here),
        }
    }

    /// A refusal on its way out to a client, stretched while shedding lasts.
    fn turned_away(&self, e: RequestError, class: Priority, hops: u32) -> RequestError {
        match e {
            RequestError::Refused(r) => {
                crate::observe::record_refusal(&r.reason, class, hops);
                RequestError::Refused(self.admission.turned_away(r, class, hops, Instant::now()))
            }
            other => other,
        }
    }

    /// A well-formed id can still name a group that holds no tickets: the
    /// meta group (`u32::MAX`) or a shard this cluster does not have. Such a
    /// request must not be routed: an update would be proposed to that
    /// group's log (the meta group's, on every meta voter).
    fn data_shard(&self, id: TicketId) -> Result<(), RequestError> {
        if self.router.registry().is_data_shard(id.shard) {
            Ok(())
        } else {
            Err(RequestError::NotFound(format!(
                "no ticket {id}: this cluster has no shard {}",
                id.shard
            )))
        }
    }

    /// Validates a complaint and finds its shard.
    fn check(&self, c: Option<pb::Complaint>) -> Result<(Complaint, ShardId), RequestError> {
        let c = c.ok_or_else(|| RequestError::invalid_field("complaint", "complaint", "is required"))?;
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
            return Err(RequestError::invalid_complaint(violations));
        }
        // The table can name a district the cluster map (fixed at bootstrap)
        // does not: the district table was changed after the cluster began.
        let shard = self.router.registry().shard_for(&c).ok_or_else(|| {
            RequestError::invalid_field(
                "complaint",
                "district_code",
                format!(
                    "district {:?} is not mapped to any shard of this cluster",
                    c.district
                ),
            )
        })?;
        Ok((c, shard))
    }

    /// One complaint, from validation to its ticket.
    async fn submit_one(&self, request: Request<pb::SubmitRequest>, call: Call) -> (Priority, ItemResult) {
        // The slot its door took, if a door in this process admitted the
        // call before building it; a gRPC call is validated, then admitted.
        let early = (request.get_ref().complaint.as_ref())
            .and_then(|c| Admitted::of(&request, self.categories.priority(&c.category)));
        let (c, shard) = match self.check(request.into_inner().complaint) {
            Ok(checked) => checked,
            Err(e) => return (Priority::Ordinary, Err(e)),
        };
        let class = self.class(&c);
        let result = async {
            let _slot = self.slot(early, class, call.hops)?;
            let mut results = self.router.submit(call.submission(shard, vec![c], class)).await?;
            results
                .pop()
                .unwrap_or_else(|| Err(RequestError::Internal("no result for the complaint".into())))
        }
        .await;
        (class, result)
    }

    /// Validates a batch's complaints and groups them by shard and class,
    /// so that an ordinary complaint never rides in on an emergency's
    /// priority; invalid ones get their answer at once.
    fn group(
        &self,
        complaints: Vec<pb::Complaint>,
        results: &mut [Option<ItemResult>],
        classes: &mut [Priority],
    ) -> Groups {
        let mut groups = Groups::new();
        for (i, c) in complaints.into_iter().enumerate() {
            match self.check(Some(c)) {
                Ok((c, shard)) => {
                    classes[i] = self.class(&c);
                    groups.entry((shard, classes[i])).or_default().push((i, c));
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        groups
    }

    /// Submits each group of a batch admitted as `call_class`, in parallel,
    /// filling `results` by index.
    async fn run_groups(
        &self,
        groups: Groups,
        call_class: Priority,
        call: Call,
        results: &mut [Option<ItemResult>],
    ) {
        let mut calls = Vec::new();
        let now = Instant::now();
        for ((shard, class), items) in groups {
            let mut deadline = call.deadline;
            if class == Priority::Ordinary && call_class == Priority::Emergency {
                // The call was admitted for its emergencies; its ordinary
                // complaints still pass the ordinary bound on CPU here.
                if let Err(refused) = self.admission.ordinary_cpu(now) {
                    for (i, _) in items {
                        results[i] = Some(Err(refused.clone().into()));
                    }
                    continue;
                }
                // The answer waits for every item, so ordinary ones that
                // queue must not hold the batch's emergencies past the
                // caller's deadline: they get half the time left.
                if call.hops == 0 {
                    deadline = now + deadline.saturating_duration_since(now) / 2;
                }
            }
            for group in entry_groups(items) {
                let (idx, cs): (Vec<usize>, Vec<Complaint>) = group.into_iter().unzip();
                let sent = Submission {
                    deadline,
                    ..call.submission(shard, cs, class)
                };
                let router = &self.router;
                calls.push(async move { (idx, router.submit(sent).await) });
            }
        }
        for (idx, outcome) in join_all(calls).await {
            match outcome {
                Ok(items) => idx.into_iter().zip(items).for_each(|(i, r)| results[i] = Some(r)),
                Err(e) => idx.into_iter().for_each(|i| results[i] = Some(Err(e.clone()))),
            }
        }
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
        let call = self.call(&request);
        let (class, result) = self.submit_one(request, call).await;
        let result = result.map_err(|e| self.turned_away(e, class, call.hops));
        record_submit(result.as_ref().err().map(RequestError::code), started);
        result.map(Response::new).map_err(Status::from)
    }

    async fn submit_batch(
        &self,
        request: Request<pb::SubmitBatchRequest>,
    ) -> Result<Response<pb::SubmitBatchResponse>, Status> {
        let started = std::time::Instant::now();
        let call = self.call(&request);
        let any_emergency = request
            .get_ref()
            .complaints
            .iter()
            .any(|c| self.categories.priority(&c.category) == Priority::Emergency);
        let call_class = if any_emergency {
            Priority::Emergency
        } else {
            Priority::Ordinary
        };
        let early = Admitted::of(&request, call_class);
        let _slot = self.slot(early, call_class, call.hops).map_err(|e| {
            let e = self.turned_away(e, call_class, call.hops);
            record_submit(Some(e.code()), started);
            Status::from(e)
        })?;
        let complaints = request.into_inner().complaints;
        if complaints.len() > MAX_BATCH_ITEMS {
            let many = format!(
                "has {} items, more than the limit of {MAX_BATCH_ITEMS}",
                complaints.len()
            );
            return Err(RequestError::invalid_field("complaint", "complaints", many).into());
        }
        let n = complaints.len();
        let mut results: Vec<Option<ItemResult>> = (0..n).map(|_| None).collect();
        let mut classes = vec![Priority::Ordinary; n];
        let groups = self.group(complaints, &mut results, &mut classes);
        self.run_groups(groups, call_class, call, &mut results).await;
        metrics::histogram!("intake_submit_batch_seconds", "hops" => crate::observe::hops_label(call.hops))
            .record(started.elapsed().as_secs_f64());
        let results = results
            .into_iter()
            .zip(classes)
            .map(|(r, class)| {
                let r = r
                    .unwrap_or_else(|| Err(RequestError::Internal("item was not processed".into())))
                    .map_err(|e| self.turned_away(e, class, call.hops));
                record_submit(r.as_ref().err().map(RequestError::code), started);
                let outcome = match r {
                    Ok(ok) => pb::submit_result::Outcome::Accepted(ok),
                    Err(e) => pb::submit_result::Outcome::Error(e.to_item()),
                };
                pb::SubmitResult {
                    outcome: Some(outcome),
                }
            })
            .collect();
        Ok(Response::new(pb::SubmitBatchResponse { results }))
    }

    async fn get_ticket(
        &self,
        request: Request<pb::GetTicketRequest>,
    ) -> Result<Response<pb::GetTicketResponse>, Status> {
        let hops = hops_of(request.metadata());
        let req = request.into_inner();
        let id: TicketId = req.ticket_id.parse().map_err(|e: intake_core::TicketIdError| {
            RequestError::invalid_field("ticket id", "ticket_id", e.to_string())
        })?;
        self.data_shard(id)?;
        match self.router.get_ticket(id, req.local, hops).await? {
            Some(ticket) => Ok(Response::new(pb::GetTicketResponse { ticket: Some(ticket) })),
            None => Err(RequestError::NotFound(format!("no ticket {id}")).into()),
        }
    }

    async fn update_status(
        &self,
        request: Request<pb::UpdateStatusRequest>,
    ) -> Result<Response<pb::UpdateStatusResponse>, Status> {
        let call = self.call(&request);
        let update = status_update_from_pb(request.into_inner())?;
        self.data_shard(update.ticket)?;
        let ticket = self
            .router
            .update_status(update, call.hops, call.deadline)
            .await?;
        Ok(Response::new(pb::UpdateStatusResponse { ticket: Some(ticket) }))
    }
}

/// Checks every field of a status report at the door, so a malformed one
/// never reaches the log; the transition itself is judged at apply time.
pub fn status_update_from_pb(req: pb::UpdateStatusRequest) -> Result<StatusUpdate, RequestError> {
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
            return Err(RequestError::Invalid {
                what: "status update",
                violations,
            });
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
        RequestError::Invalid {
            what: "status update",
            violations: vec![FieldViolation {
                field,
                description: e.to_string(),
            }],
        }
    })?;
    Ok(update)
}
