//! Getting a submission to its shard's leader, and a ticket look-up or a
//! status update to a replica that can answer it.
//!
//! Any node accepts any request. The cluster map names the complaint's shard.
//! If a local replica of that shard leads, the complaints are proposed here;
//! if a local replica follows, the request goes to the leader it names; if
//! the shard has no replica here, it goes to one of the shard's voters, which
//! may pass it once more to its leader. A hop count in the request metadata
//! bounds this, so a stale view can never bounce a request around. While a
//! shard has no leader (an election), the router retries with backoff until
//! the request's deadline, so clients never see a leader change while a
//! leader exists. Retries are safe: the state machine deduplicates by key.
//!
//! The router only routes: which shards live here is the [`Registry`]'s,
//! whether to take the work at all is [`Admission`]'s, and its errors are
//! [`RequestError`]s, turned into gRPC statuses at the door.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use intake_cluster::PeerPool;
use intake_core::{
    Command, CommandResponse, Complaint, Priority, StatusError, StatusOutcome, StatusUpdate, SubmitOutcome,
    TicketId,
};
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_proto::wire::set_hops;
use intake_storage::{NodeId, ShardId, StateMachine, TypeConfig};
use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use tokio::time::Instant;

use crate::admission::Admission;
use crate::batcher::{Batcher, ProposeError};
use crate::convert::{
    complaint_to_pb, millis_to_timestamp, now_millis, status_to_pb, ticket_with_history_to_pb,
};
use crate::error::{Expiry, RequestError};
use crate::forwarder::{Forward, Forwarder};
use crate::key_claims;
use crate::limits::MAX_HOPS;
use crate::registry::Registry;

/// The answer for one complaint.
pub type ItemResult = Result<pb::SubmitResponse, RequestError>;
type Answers = Result<Vec<ItemResult>, RequestError>;

/// How long a forwarded look-up may take.
const GET_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct Router {
    registry: Registry,
    peers: PeerPool,
    admission: Arc<Admission>,
    forwarder: Forwarder,
}

/// One try at a submission: when it began, the shard's leader as this node
/// knew it then (none without a replica here), which is what its latency
/// measures, and whether it was forwarded to another node.
#[derive(Debug, Clone, Copy)]
struct Attempt {
    began: Instant,
    leader: Option<NodeId>,
    forwarded: bool,
}

impl Attempt {
    fn new(leader: Option<NodeId>) -> Self {
        Self {
            began: Instant::now(),
            leader,
            forwarded: false,
        }
    }
}

/// How long a leader may go without an acknowledgement from a quorum before
/// its proposals' deadline misses are put down to the network rather than
/// load: five heartbeats at the default 100 ms (followers start an election
/// after 1-2 s of silence). An overloaded leader's followers still answer
/// its heartbeats, and its acknowledgements still measure it.
const QUORUM_SILENCE: Duration = Duration::from_millis(500);

/// Whether an attempt's answer measures how long its shard takes from here.
/// Acknowledgements and deadline misses do; refusals are fast by design and
/// would hide it. A forward that ran out with nothing heard from the peer
/// (the forwarder's own timer) does not: that leader stalled or was cut
/// off, which elections and the clients' rotation deal with, and counted
/// as slowness it refused the shard's ordinary complaints until the new
/// leader was known, with delays the callers' deadlines could not absorb.
/// A leader that is merely overloaded still answers, with
/// acknowledgements that show its latency or refusals of its own.
fn measures_latency(result: &Answers, forwarded: bool) -> bool {
    match result {
        Ok(items) => items.iter().any(|r| r.is_ok()),
        Err(RequestError::Expired(_)) if forwarded => false,
        Err(e) => e.is_expiry(),
    }
}

/// Where a request goes after a local replica refused it.
enum Next {
    Forward(NodeId, String),
    Wait,
}

impl Router {
    pub fn new(registry: Registry, peers: PeerPool, admission: Arc<Admission>) -> Self {
        Self {
            registry,
            forwarder: Forwarder::new(peers.clone()),
            peers,
            admission,
        }
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The node's admission state, shared with its door.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// The node's connections to its peers.
    pub fn peers(&self) -> &PeerPool {
        &self.peers
    }

    fn node_id(&self) -> NodeId {
        self.registry.node_id()
    }

    /// After a local replica refused: its leader, unless that is us or the
    /// hop budget is spent.
    fn next_step(&self, f: &ForwardToLeader<TypeConfig>, hops: u32) -> Next {
        match (&f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if *id != self.node_id() && hops < MAX_HOPS => {
                Next::Forward(*id, node.addr.clone())
            }
            _ => Next::Wait,
        }
    }

    /// The shard's leader, when this node's replica knows it is another node
    /// and a hop is left. Asking the replica instead would cost a trip
    /// through its batcher and Raft core only to learn the same, and would
    /// fill a follower's queue and proposal slots with doomed proposals.
    fn leader_elsewhere(&self, shard: ShardId, hops: u32) -> Option<(NodeId, String)> {
        (hops < MAX_HOPS)
            .then(|| self.registry.leader_elsewhere(shard))
            .flatten()
    }

    fn client(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Result<IntakeServiceClient<tonic::transport::Channel>, RequestError> {
        let channel = self
            .peers
            .forward_channel(node, addr)
            .map_err(|e| RequestError::Unreachable(e.to_string()))?;
        Ok(IntakeServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
    }

    /// Proposes `complaints` (all of `shard`) and waits until they are
    /// committed on a quorum and applied. The outer error fails the whole
    /// group; inner results are per complaint. `hops` is how many nodes the
    /// request has already passed through. On a `retry`, complaints whose
    /// keys a local replica has already applied are answered from its state
    /// instead.
    pub async fn submit(&self, sent: Submission) -> Answers {
        let Submission {
            shard,
            complaints,
            class,
            hops,
            retry,
            ..
        } = sent;
        // Refusing is the common case in a surge and must stay the cheapest
        // path, so it comes before looking up any key.
        if class == Priority::Ordinary {
            let leader = || self.registry.known_leader(shard);
            self.admission.admit_shard(shard, hops, leader, Instant::now())?;
        }
        // Only a retry can find its key applied; a first attempt would pay
        // the look-up for nothing.
        let (known, complaints) = if retry {
            self.already_submitted(shard, complaints)
        } else {
            (Vec::new(), complaints)
        };
        // Keys whose home is another shard are claimed there first, where
        // the request entered the cluster (`key_claims.rs`).
        let (claimed, complaints) = if hops == 0 && !complaints.is_empty() {
            key_claims::claim_keys(self, shard, complaints, sent.deadline).await
        } else {
            (Vec::new(), complaints)
        };
        if complaints.is_empty() {
            return combine(known, combine(claimed, Ok(Vec::new())));
        }
        let mut attempt = Attempt::new(None);
        let sent = Submission { complaints, ..sent };
        let result = match self.registry.batcher(shard) {
            Some(batcher) => self.submit_local(&batcher, &sent, &mut attempt).await,
            None => self.submit_remote(&sent, &mut attempt).await,
        };
        self.note_latency(shard, &result, attempt);
        let result = result.map(|items| self.name_key_holders(&sent.complaints, items));
        combine(known, combine(claimed, result))
    }

    /// Names, where a replica here knows it, the ticket of the complaint
    /// whose claim made the home shard refuse a complaint.
    fn name_key_holders(&self, complaints: &[Complaint], items: Vec<ItemResult>) -> Vec<ItemResult> {
        items
            .into_iter()
            .zip(complaints)
            .map(|(item, c)| match item {
                Err(RequestError::KeyTaken { district, shard }) => {
                    Err(key_claims::taken(self, &c.idempotency_key, district, shard))
                }
                other => other,
            })
            .collect()
    }

    /// Splits off the complaints whose keys a local replica of `shard` has
    /// already applied, answered from its state: `(answers by position,
    /// the rest)`. A retry after "it may still commit" is the usual case.
    fn already_submitted(
        &self,
        shard: ShardId,
        complaints: Vec<Complaint>,
    ) -> (Vec<Option<ItemResult>>, Vec<Complaint>) {
        let Some(sm) = self.registry.state_machine(shard) else {
            return (Vec::new(), complaints);
        };
        let mut known = Vec::with_capacity(complaints.len());
        let mut rest = Vec::with_capacity(complaints.len());
        for c in complaints {
            // A failed read only means the complaint is proposed, where the
            // state machine decides for good.
            match sm.already_submitted(&c) {
                Ok(Some(outcome)) => known.push(Some(item_result(shard, outcome))),
                Ok(None) | Err(_) => {
                    known.push(None);
                    rest.push(c);
                }
            }
        }
        (known, rest)
    }

    /// Notes how long `shard` took from here, when the answer measures it
    /// ([`measures_latency`]; answers found in local state do not reach
    /// here). Measured from the start of the attempt that got the answer:
    /// time spent waiting out an election before it says nothing about the
    /// shard once it has a leader, nor does an attempt made under a leader
    /// since replaced (see [`crate::admission::slowness`]).
    fn note_latency(&self, shard: ShardId, result: &Answers, attempt: Attempt) {
        if !measures_latency(result, attempt.forwarded) {
            return;
        }
        // A local proposal that ran out at a leader cut off from its quorum
        // waited on the network: counted, it refused the shard's ordinary
        // complaints at this door for seconds into a partition, and the
        // clients' throttles took those refusals for overload.
        if result.is_err() && self.registry.leads_without_quorum(shard, QUORUM_SILENCE) {
            return;
        }
        let now = Instant::now();
        let took = now.saturating_duration_since(attempt.began);
        let leader = self.registry.known_leader(shard);
        self.admission.took(shard, attempt.leader, leader, took, now);
    }

    /// After a forward: if the leader's node shed ordinary complaints (the
    /// whole call, or single items), admission sheds them here too for a
    /// while, so the refusal costs this node alone.
    fn note_peer_shedding(&self, shard: ShardId, results: &Answers) {
        let item_errors = results.iter().flatten().filter_map(|r| r.as_ref().err());
        let delay = item_errors
            .chain(results.as_ref().err())
            .filter_map(RequestError::refusal)
            .map(|r| r.retry_after)
            .max();
        if let Some(d) = delay {
            self.admission.peer_shed(shard, d, Instant::now());
        }
    }

    /// A shard with a replica here: forward to the leader it knows, or
    /// propose through the local batcher and follow its answer. `attempt`
    /// is set to when the attempt that produced the answer began.
    async fn submit_local(&self, batcher: &Batcher, sent: &Submission, attempt: &mut Attempt) -> Answers {
        let shard = sent.shard;
        let mut backoff = Duration::from_millis(20);
        // An election takes a second or two; a node cut off from its peers
        // (its replicas campaign in vain, or its leader's quorum lease has
        // lapsed) would wait for one until the deadline, and its client would
        // have no time left to try a live node. So waiting for a leader stops
        // at half the time left, with UNAVAILABLE and RetryInfo.
        let leader_wait = {
            let now = Instant::now();
            now + sent.deadline.saturating_duration_since(now) / 2
        };
        // A node that just proved unreachable is not asked again in the
        // same round, when the replica names the same stale leader.
        let mut unreachable = None;
        loop {
            *attempt = Attempt::new(self.registry.known_leader(shard));
            if let Some((id, addr)) = self.leader_elsewhere(shard, sent.hops) {
                attempt.forwarded = true;
                match self.forward_submit(id, &addr, sent).await {
                    Err(RequestError::Unreachable(_)) => unreachable = Some(id),
                    results => return results,
                }
            }
            attempt.forwarded = false;
            let refusal = match propose(batcher, sent).await {
                Ok(results) => return Ok(results),
                // The replica here moved away while the request waited (a
                // replica move): the shard lives on its voters by the map,
                // which the node had before it stopped the replica.
                Err(Proposal::Failed(RequestError::Stopped { .. }))
                    if self.registry.raft(shard).is_none() =>
                {
                    return self.submit_remote(sent, attempt).await;
                }
                Err(Proposal::Failed(e)) => return Err(e),
                Err(Proposal::NotLeader(f)) => f,
            };
            match self.next_step(&refusal, sent.hops) {
                Next::Forward(id, addr) if unreachable != Some(id) => {
                    attempt.forwarded = true;
                    match self.forward_submit(id, &addr, sent).await {
                        // The leader moved or is unreachable: learn again.
                        Err(RequestError::Unreachable(_)) => {}
                        results => return results,
                    }
                }
                // A forwarded request gives up at once; its origin retries.
                _ if sent.hops > 0 => {
                    return Err(RequestError::NotLeader {
                        node: self.node_id(),
                        shard,
                    });
                }
                _ => {}
            }
            unreachable = None;
            pause_for_leader(shard, leader_wait, &mut backoff).await?;
        }
    }

    /// A shard with no replica here: ask its voters in turn, until the
    /// deadline, so a dead voter or an election is absorbed.
    async fn submit_remote(&self, sent: &Submission, attempt: &mut Attempt) -> Answers {
        self.ask_voters(sent.shard, sent.hops, Some(sent.deadline), |node, addr| {
            *attempt = Attempt {
                forwarded: true,
                ..Attempt::new(None)
            };
            async move { self.forward_submit(node, &addr, sent).await }
        })
        .await
    }

    /// Asks the voters of `shard` (hosted elsewhere) in turn, until one can
    /// serve: once round, or until `deadline` with growing pauses between
    /// rounds.
    async fn ask_voters<T, F, Fut>(
        &self,
        shard: ShardId,
        hops: u32,
        deadline: Option<Instant>,
        mut ask: F,
    ) -> Result<T, RequestError>
    where
        F: FnMut(NodeId, String) -> Fut,
        Fut: Future<Output = Result<T, RequestError>>,
    {
        if hops >= MAX_HOPS {
            return Err(RequestError::NoReplica {
                node: self.node_id(),
                shard,
            });
        }
        let voters = self
            .registry
            .remote_voters(shard)
            .ok_or_else(|| RequestError::NotFound(format!("no shard {shard} in this cluster")))?;
        let mut backoff = Duration::from_millis(20);
        let mut last = RequestError::Unreachable(format!("shard {shard} has no reachable replica"));
        loop {
            for (id, addr) in &voters {
                match ask(*id, addr.clone()).await {
                    Err(e @ RequestError::Unreachable(_)) => last = e,
                    answer => return answer,
                }
            }
            match deadline {
                Some(d) if Instant::now() + backoff < d => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_millis(500));
                }
                _ => return Err(last),
            }
        }
    }

    /// Forwards to `node`, in one call with whatever else waits for it
    /// ([`Forwarder`]).
    async fn forward_submit(&self, node: NodeId, addr: &str, sent: &Submission) -> Answers {
        let started = Instant::now();
        let forward = Forward {
            complaints: sent.complaints.iter().map(complaint_to_pb).collect(),
            class: sent.class,
            hops: sent.hops + 1,
            retry: sent.retry,
            deadline: sent.deadline,
            token: crate::auth::caller_token(),
        };
        let result = self.forwarder.send(node, addr, forward).await;
        metrics::histogram!("intake_forward_seconds").record(started.elapsed().as_secs_f64());
        if sent.class == Priority::Ordinary {
            self.note_peer_shedding(sent.shard, &result);
        }
        result
    }

    /// Finds a ticket. A replica that has applied it answers at once; one that
    /// has not asks the leader (which first makes sure it has applied all it
    /// committed), unless `local` asks for this replica's view only. A shard
    /// with no replica here is asked of its voters.
    pub async fn get_ticket(
        &self,
        id: TicketId,
        local: bool,
        hops: u32,
    ) -> Result<Option<pb::Ticket>, RequestError> {
        let Some(sm) = self.registry.state_machine(id.shard) else {
            if local {
                return Err(RequestError::FailedPrecondition(format!(
                    "node {} has no replica of shard {}",
                    self.node_id(),
                    id.shard
                )));
            }
            return self
                .ask_voters(id.shard, hops, None, |node, addr| async move {
                    self.forward_get(node, &addr, id, hops).await
                })
                .await;
        };
        if let Some(t) = read_ticket(&sm, &id)? {
            return Ok(Some(t));
        }
        if local {
            return Ok(None);
        }
        let raft = self
            .registry
            .raft(id.shard)
            .ok_or_else(|| RequestError::Unreachable(format!("shard {} is stopping here", id.shard)))?;
        match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => read_ticket(&sm, &id),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                match self.next_step(&f, hops) {
                    Next::Forward(leader, addr) => self.forward_get(leader, &addr, id, hops).await,
                    Next::Wait => Err(RequestError::NoLeader { shard: id.shard }),
                }
            }
            Err(e) => Err(RequestError::Unreachable(e.to_string())),
        }
    }

    async fn forward_get(
        &self,
        node: NodeId,
        addr: &str,
        id: TicketId,
        hops: u32,
    ) -> Result<Option<pb::Ticket>, RequestError> {
        let mut client = self.client(node, addr)?;
        let mut req = tonic::Request::new(pb::GetTicketRequest {
            ticket_id: id.to_string(),
            local: false,
        });
        forwarded(&mut req, hops + 1);
        req.set_timeout(GET_TIMEOUT);
        match client.get_ticket(req).await {
            Ok(resp) => Ok(resp.into_inner().ticket),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(RequestError::from_peer(
                &s,
                Instant::now() + GET_TIMEOUT,
                Expiry::Read,
            )),
        }
    }

    /// Records a status change on the ticket's shard leader (here, or one
    /// forward away) and returns the ticket as committed.
    pub async fn update_status(
        &self,
        update: StatusUpdate,
        hops: u32,
        deadline: Instant,
    ) -> Result<pb::Ticket, RequestError> {
        let shard = update.ticket.shard;
        let Some(raft) = self.registry.raft(shard) else {
            return self
                .ask_voters(shard, hops, None, |node, addr| {
                    let update = &update;
                    async move { self.forward_status(node, &addr, update, hops, deadline).await }
                })
                .await;
        };
        let mut backoff = Duration::from_millis(20);
        loop {
            let cmd = Command::UpdateStatus {
                recorded_at: now_millis(),
                updates: vec![update.clone()],
            };
            let written = tokio::time::timeout_at(deadline, raft.client_write(cmd))
                .await
                .map_err(|_| RequestError::Expired(Expiry::UpdateMayHaveCommitted))?;
            let refusal = match written {
                Ok(r) => return self.status_outcome(update.ticket, r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                | Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => f,
                Err(e) => return Err(RequestError::Unreachable(format!("shard {shard}: {e}"))),
            };
            match self.next_step(&refusal, hops) {
                Next::Forward(node, addr) => {
                    match self.forward_status(node, &addr, &update, hops, deadline).await {
                        Err(RequestError::Unreachable(_)) => {}
                        other => return other,
                    }
                }
                // A forwarded request gives up at once; its origin retries.
                Next::Wait if hops > 0 => {
                    return Err(RequestError::NotLeader {
                        node: self.node_id(),
                        shard,
                    });
                }
                Next::Wait => {}
            }
            pause_for_leader(shard, deadline, &mut backoff).await?;
        }
    }

    fn status_outcome(&self, id: TicketId, response: CommandResponse) -> Result<pb::Ticket, RequestError> {
        let outcome = match response {
            CommandResponse::StatusUpdated(mut v) if v.len() == 1 => v.remove(0),
            other => {
                return Err(RequestError::Internal(format!(
                    "unexpected reply to a status update: {other:?}"
                )));
            }
        };
        match outcome {
            StatusOutcome::Recorded { .. } => {
                let sm = self.registry.state_machine(id.shard).ok_or_else(|| {
                    RequestError::Unreachable(format!("shard {} is stopping here", id.shard))
                })?;
                read_ticket(&sm, &id)?.ok_or_else(|| RequestError::Internal(format!("ticket {id} vanished")))
            }
            StatusOutcome::NotFound => Err(RequestError::NotFound(format!("no ticket {id}"))),
            StatusOutcome::Refused(e) => Err(refused_update(id, e)),
        }
    }

    async fn forward_status(
        &self,
        node: NodeId,
        addr: &str,
        u: &StatusUpdate,
        hops: u32,
        deadline: Instant,
    ) -> Result<pb::Ticket, RequestError> {
        let mut client = self.client(node, addr)?;
        let mut req = tonic::Request::new(pb::UpdateStatusRequest {
            ticket_id: u.ticket.to_string(),
            status: status_to_pb(u.status) as i32,
            department: u.department.clone().unwrap_or_default(),
            note: u.note.clone(),
            reported_at: Some(millis_to_timestamp(u.reported_at)),
        });
        forwarded(&mut req, hops + 1);
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let expired = RequestError::Expired(Expiry::UpdateMayHaveCommitted);
        let answer = tokio::time::timeout_at(deadline, client.update_status(req))
            .await
            .map_err(|_| expired.clone())?
            .map_err(|s| RequestError::from_peer(&s, deadline, Expiry::UpdateMayHaveCommitted))?;
        answer
            .into_inner()
            .ticket
            .ok_or_else(|| RequestError::Internal("leader answered without the ticket".into()))
    }
}

/// Complaints of one shard and one class, on their way to its leader.
pub struct Submission {
    pub shard: ShardId,
    pub complaints: Vec<Complaint>,
    pub class: Priority,
    /// How many nodes the request has already passed through.
    pub hops: u32,
    /// Whether the caller retries an earlier attempt (gRFC A6's mark).
    pub retry: bool,
    pub deadline: Instant,
}

/// Why the local batcher gave no outcomes.
enum Proposal {
    NotLeader(ForwardToLeader<TypeConfig>),
    Failed(RequestError),
}

/// Marks a request this node forwards: one hop more, and (without mutual
/// TLS) the caller's token, so that the next node checks it again.
fn forwarded<T>(req: &mut tonic::Request<T>, hops: u32) {
    set_hops(req.metadata_mut(), hops);
    crate::auth::attach_caller_token(req);
}

/// Proposes through the local batcher, until the deadline.
async fn propose(batcher: &Batcher, sent: &Submission) -> Result<Vec<ItemResult>, Proposal> {
    let shard = sent.shard;
    let proposed = batcher.propose(sent.complaints.clone(), sent.class, sent.deadline);
    let outcomes = tokio::time::timeout_at(sent.deadline, proposed)
        .await
        .map_err(|_| Proposal::Failed(RequestError::Expired(Expiry::MayHaveCommitted)))?;
    match outcomes {
        Ok(v) => Ok(v.into_iter().map(|o| item_result(shard, o)).collect()),
        Err(ProposeError::NotLeader(f)) => Err(Proposal::NotLeader(f)),
        Err(ProposeError::Overloaded(refusal)) => Err(Proposal::Failed(refusal.into())),
        Err(ProposeError::Expired) => Err(Proposal::Failed(RequestError::Expired(Expiry::NotStored))),
        Err(ProposeError::Stopped(why)) => Err(Proposal::Failed(RequestError::Stopped { shard, why })),
        Err(ProposeError::Other(e)) => Err(Proposal::Failed(RequestError::Internal(e))),
    }
}

/// A status change the state machine refused: a malformed report (the door
/// checks the same, so this is rare) or a transition the ticket's history
/// does not allow.
fn refused_update(id: TicketId, e: StatusError) -> RequestError {
    let field = match &e {
        StatusError::MissingDepartment | StatusError::UnexpectedDepartment => "department".to_string(),
        StatusError::TooLong { field, .. } => field.clone(),
        _ => return RequestError::FailedPrecondition(format!("ticket {id}: {e}")),
    };
    RequestError::Invalid {
        what: "status update",
        violations: vec![intake_core::FieldViolation {
            field,
            description: e.to_string(),
        }],
    }
}

/// A ticket and its status history from one replica.
fn read_ticket(sm: &StateMachine, id: &TicketId) -> Result<Option<pb::Ticket>, RequestError> {
    let internal = |e: intake_storage::StorageError| RequestError::Internal(e.to_string());
    let Some(t) = sm.get_ticket(id).map_err(internal)? else {
        return Ok(None);
    };
    let history = sm.ticket_history(id).map_err(internal)?;
    let mut ticket = ticket_with_history_to_pb(&t, &history);
    ticket.incident_id = sm
        .incident_of(id)
        .map_err(internal)?
        .map(|i| i.to_string())
        .unwrap_or_default();
    Ok(Some(ticket))
}

/// No usable leader for `shard` right now: wait with growing backoff, or
/// give up if the next wait would pass the deadline.
pub(crate) async fn pause_for_leader(
    shard: ShardId,
    deadline: Instant,
    backoff: &mut Duration,
) -> Result<(), RequestError> {
    if Instant::now() + *backoff >= deadline {
        return Err(RequestError::NoLeader { shard });
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_millis(500));
    Ok(())
}

/// The answer for complaints some of which were answered before they were
/// proposed (`known`, by position; empty if none were) and the rest's
/// `result`. The answers already known stand; a failure is the others'.
fn combine(known: Vec<Option<ItemResult>>, result: Answers) -> Answers {
    if known.is_empty() {
        return result;
    }
    match result {
        Ok(fresh) => Ok(merge(known, fresh)),
        Err(e) if known.iter().any(Option::is_some) => {
            let n = known.iter().filter(|k| k.is_none()).count();
            Ok(merge(known, vec![Err(e); n]))
        }
        Err(e) => Err(e),
    }
}

/// Fills the gaps of `known` (complaints answered from local state, by
/// position) with `fresh` (the others' answers, in order). With no local
/// answers, `known` is empty and `fresh` is the whole answer.
fn merge(known: Vec<Option<ItemResult>>, fresh: Vec<ItemResult>) -> Vec<ItemResult> {
    if known.is_empty() {
        return fresh;
    }
    let mut fresh = fresh.into_iter();
    known
        .into_iter()
        .map(|k| {
            k.or_else(|| fresh.next())
                .unwrap_or_else(|| Err(RequestError::Internal("no result for the complaint".into())))
        })
        .collect()
}

fn item_result(shard: ShardId, o: SubmitOutcome) -> ItemResult {
    let accepted = |id: TicketId, accepted_at, duplicate| pb::SubmitResponse {
        ticket_id: id.to_string(),
        duplicate,
        accepted_at: Some(millis_to_timestamp(accepted_at)),
        shard,
    };
    match o {
        SubmitOutcome::Created { id, accepted_at } => Ok(accepted(id, accepted_at, false)),
        SubmitOutcome::Existing { id, accepted_at } => Ok(accepted(id, accepted_at, true)),
        SubmitOutcome::Conflict { id } => Err(RequestError::Conflict {
            ticket: id.to_string(),
        }),
        SubmitOutcome::ClaimedElsewhere { shard } => Err(RequestError::KeyTaken {
            district: None,
            shard,
        }),
    }
}

/// One item of a peer's batch answer, read by the shared wire helper.
pub(crate) fn item_from_peer(r: pb::SubmitResult, deadline: Instant) -> ItemResult {
    intake_proto::wire::item_outcome(r).map_err(|e| RequestError::from_peer_item(e, deadline))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked() -> ItemResult {
        item_result(
            0,
            SubmitOutcome::Created {
                id: TicketId {
                    shard: 0,
                    log_index: 1,
                    item: 0,
                },
                accepted_at: 0,
            },
        )
    }

    #[test]
    fn silence_from_a_forwarded_leader_is_not_its_latency() {
        let ran_out = || Err(RequestError::Expired(Expiry::MayHaveCommitted));
        assert!(!measures_latency(&ran_out(), true), "nothing heard from the peer");
        assert!(measures_latency(&ran_out(), false), "the local leader ran late");
        let peer_late = Err(RequestError::Peer {
            code: tonic::Code::DeadlineExceeded,
            message: "late".into(),
            retry_after: None,
        });
        assert!(measures_latency(&peer_late, true), "the leader said it ran late");
        assert!(measures_latency(&Ok(vec![acked()]), true));
        let refused = Err(RequestError::Refused(crate::admission::refusal::Refusal::new(
            crate::admission::refusal::Reason::NodeBusy,
            Duration::from_millis(100),
        )));
        assert!(!measures_latency(&refused, false), "refusals are fast by design");
    }
}
