//! Getting a submission to its shard's leader, and a ticket look-up to a
//! replica that has it.
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

use std::sync::{Arc, RwLock};
use std::time::Duration;

use dashmap::DashMap;
use intake_cluster::{Groups, PeerPool};
use intake_core::{
    ClusterMap, Command, CommandResponse, Complaint, Priority, StatusError, StatusOutcome, StatusUpdate,
    SubmitOutcome, TicketId, slot_of,
};
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_storage::{NodeId, Raft, ShardId, StateMachine, TypeConfig};
use openraft::ReadPolicy;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use tokio::time::Instant;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::HOPS_HEADER;
use crate::batcher::{Batcher, NodeBacklog, ProposeError};
use crate::config::AdmissionConfig;
use crate::convert::{
    complaint_to_pb, millis_to_timestamp, now_millis, status_to_pb, ticket_with_history_to_pb,
};
use crate::deadline::{forward_expired, status_expired, submit_expired};
use crate::dispatcher::DispatchBoard;
use crate::errors::{key_conflict, with_retry};
use crate::slowness::ShardSlowness;

/// Most node-to-node hops a request may take: origin → a replica of the
/// shard → that replica's leader.
pub const MAX_HOPS: u32 = 2;

/// The answer for one complaint.
pub type ItemResult = Result<pb::SubmitResponse, Status>;

#[derive(Clone)]
pub struct Router {
    node_id: NodeId,
    groups: Groups,
    state_machines: Arc<DashMap<ShardId, StateMachine>>,
    batchers: Arc<DashMap<ShardId, Batcher>>,
    peers: PeerPool,
    map: Arc<RwLock<Arc<ClusterMap>>>,
    admission: AdmissionConfig,
    backlog: Arc<NodeBacklog>,
    /// Shards whose leader recently shed ordinary complaints forwarded from
    /// here, and until when: ordinary ones are refused here meanwhile, so an
    /// overloaded leader is not also flooded with forwards it will refuse.
    shedding: Arc<DashMap<ShardId, Instant>>,
    /// How long each shard's submissions take end to end from this node.
    /// While it stays above twice the target, ordinary complaints for that
    /// shard are refused at the door: whatever the bottleneck (the leader's
    /// queue, forwarding, or CPU), admitting more only makes all of them late.
    slowness: Arc<ShardSlowness>,
    /// What this node's delivery tasks report, for `ClusterStatus`.
    dispatch: DispatchBoard,
}

/// Where a request goes next.
enum Next {
    Forward(NodeId, String),
    Wait,
}

impl Router {
    pub fn new(
        node_id: NodeId,
        groups: Groups,
        peers: PeerPool,
        map: ClusterMap,
        admission: AdmissionConfig,
    ) -> Self {
        Self {
            node_id,
            groups,
            state_machines: Default::default(),
            batchers: Default::default(),
            peers,
            map: Arc::new(RwLock::new(Arc::new(map))),
            admission,
            backlog: Default::default(),
            shedding: Default::default(),
            slowness: Default::default(),
            dispatch: Default::default(),
        }
    }

    pub fn dispatch_board(&self) -> &DispatchBoard {
        &self.dispatch
    }

    /// Complaints queued on this node's leaders, all shards.
    pub fn backlog(&self) -> usize {
        self.backlog.queued()
    }

    /// Complaints queued per shard led here: (shard, emergency, ordinary).
    pub fn queues(&self) -> Vec<(ShardId, usize, usize)> {
        let mut v: Vec<_> = self
            .batchers
            .iter()
            .map(|b| {
                let (e, o) = b.value().queued();
                (*b.key(), e, o)
            })
            .collect();
        v.sort();
        v
    }

    /// Registers a group hosted here; data shards get a batcher.
    pub fn add_shard(&self, shard: ShardId, sm: StateMachine, raft: Raft) {
        self.state_machines.insert(shard, sm);
        if shard != intake_core::META_GROUP {
            self.batchers.insert(
                shard,
                Batcher::start(shard, raft, self.admission.clone(), self.backlog.clone()),
            );
        }
    }

    pub fn state_machine(&self, shard: ShardId) -> Option<StateMachine> {
        self.state_machines.get(&shard).map(|s| s.value().clone())
    }

    /// The current cluster map.
    pub fn map(&self) -> Arc<ClusterMap> {
        match self.map.read() {
            Ok(m) => m.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Installs `map` if it is newer than the current one.
    pub fn update_map(&self, map: ClusterMap) -> bool {
        let mut guard = match self.map.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if map.version > guard.version {
            *guard = Arc::new(map);
            true
        } else {
            false
        }
    }

    /// Whether `shard` is one of the cluster's data shards (not the meta
    /// group, not a number the map does not know): the only groups public
    /// requests may reach.
    pub fn is_data_shard(&self, shard: ShardId) -> bool {
        shard != intake_core::META_GROUP && self.map().placement(shard).is_some()
    }

    /// The shard of a complaint, by (district, slot of its key).
    pub fn shard_for(&self, complaint: &Complaint) -> Option<ShardId> {
        self.map()
            .shard_for(&complaint.district, slot_of(&complaint.idempotency_key))
    }

    /// After a local replica refused: its leader, unless that is us or the
    /// hop budget is spent.
    fn next_step(&self, f: &ForwardToLeader<TypeConfig>, hops: u32) -> Next {
        match (&f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if *id != self.node_id && hops < MAX_HOPS => {
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
        if hops >= MAX_HOPS {
            return None;
        }
        let raft = self.raft(shard)?;
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let id = m.current_leader.filter(|id| *id != self.node_id)?;
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    }

    /// Voters of a shard hosted elsewhere, preferred leader first.
    fn remote_voters(&self, shard: ShardId) -> Result<Vec<(NodeId, String)>, Status> {
        let map = self.map();
        let p = map
            .placement(shard)
            .ok_or_else(|| Status::not_found(format!("no shard {shard} in this cluster")))?;
        Ok(p.voters
            .iter()
            .filter(|v| **v != self.node_id)
            .filter_map(|v| map.members.get(v).map(|a| (*v, a.clone())))
            .collect())
    }

    fn client(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Result<IntakeServiceClient<tonic::transport::Channel>, Status> {
        let channel = self
            .peers
            .forward_channel(node, addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(IntakeServiceClient::new(channel).max_decoding_message_size(16 * 1024 * 1024))
    }

    /// Proposes `complaints` (all of `shard`) and waits until they are
    /// committed on a quorum and applied. The outer error fails the whole
    /// group; inner results are per complaint. `hops` is how many nodes the
    /// request has already passed through. On a `retry`, complaints whose
    /// keys a local replica has already applied are answered from its state
    /// instead.
    pub async fn submit(
        &self,
        shard: ShardId,
        complaints: Vec<Complaint>,
        class: Priority,
        hops: u32,
        retry: bool,
        deadline: Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        // Refusing is the common case in a surge and must stay the cheapest
        // path, so it comes before looking up any key.
        if class == Priority::Ordinary
            && let Some(refused) = self.shed_ordinary(shard, hops)
        {
            return Err(refused);
        }
        // Only a retry can find its key applied; a first attempt would pay
        // the look-up for nothing.
        let (known, complaints) = if retry {
            self.already_submitted(shard, complaints)
        } else {
            (Vec::new(), complaints)
        };
        if complaints.is_empty() {
            return Ok(known.into_iter().flatten().collect());
        }
        let n = complaints.len();
        let mut attempt = Instant::now();
        let result = self
            .submit_inner(shard, complaints, class, hops, retry, deadline, &mut attempt)
            .await;
        self.note_slowness(shard, &result, attempt);
        match result {
            Ok(results) => Ok(merge(known, results)),
            // The answers already known stand; the failure is the others'.
            Err(s) if known.iter().any(Option::is_some) => Ok(merge(known, vec![Err(s); n])),
            Err(s) => Err(s),
        }
    }

    /// Why ordinary complaints for `shard` are refused here right now, if
    /// they are: the shard answers too slowly from this door, or its leader
    /// recently shed the ordinary complaints this node forwarded.
    fn shed_ordinary(&self, shard: ShardId, hops: u32) -> Option<Status> {
        // Only at the door (hops == 0): a forwarded call was admitted there.
        if hops == 0
            && let Some(slow) = self.slowness.above(
                shard,
                || self.known_leader(shard),
                self.admission.target_latency * 2,
                Instant::now(),
            )
        {
            return Some(with_retry(
                Code::ResourceExhausted,
                format!(
                    "shard {shard} answers too slowly to take ordinary complaints now; retry with the same idempotency key"
                ),
                slow.min(Duration::from_secs(10)),
            ));
        }
        let until = self.shedding.get(&shard).map(|u| *u.value())?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then(|| {
            with_retry(
                Code::ResourceExhausted,
                format!("shard {shard} is at capacity; retry with the same idempotency key"),
                left.max(Duration::from_millis(25)),
            )
        })
    }

    /// Splits off the complaints whose keys a local replica of `shard` has
    /// already applied, answered from its state: `(answers by position,
    /// the rest)`. A retry after "it may still commit" is the usual case.
    fn already_submitted(
        &self,
        shard: ShardId,
        complaints: Vec<Complaint>,
    ) -> (Vec<Option<ItemResult>>, Vec<Complaint>) {
        let Some(sm) = self.state_machine(shard) else {
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

    /// Acknowledgements and deadline misses measure how long `shard` takes
    /// from here; refusals are fast by design and would hide that, and so
    /// would answers found in local state. Measured from the start of the
    /// attempt that got the answer: time spent waiting out an election
    /// before it says nothing about the shard once it has a leader.
    fn note_slowness(&self, shard: ShardId, result: &Result<Vec<ItemResult>, Status>, attempt: Instant) {
        let measured = match result {
            Ok(items) => items.iter().any(|r| r.is_ok()),
            Err(s) => s.code() == Code::DeadlineExceeded,
        };
        if measured {
            let now = Instant::now();
            self.slowness.record(
                shard,
                self.known_leader(shard),
                now.saturating_duration_since(attempt),
                now,
            );
        }
    }

    /// The leader of `shard` as this node's replica knows it, if it has one.
    fn known_leader(&self, shard: ShardId) -> Option<NodeId> {
        let raft = self.raft(shard)?;
        let metrics = raft.metrics();
        metrics.borrow_watched().current_leader
    }

    /// `attempt` is set to when the attempt that produced the answer began.
    #[allow(clippy::too_many_arguments)]
    async fn submit_inner(
        &self,
        shard: ShardId,
        complaints: Vec<Complaint>,
        class: Priority,
        hops: u32,
        retry: bool,
        deadline: Instant,
        attempt: &mut Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        let Some(batcher) = self.batchers.get(&shard).map(|b| b.value().clone()) else {
            let results = self
                .submit_remote(shard, &complaints, hops, retry, deadline, attempt)
                .await;
            self.note_shedding(shard, class, &results);
            return results;
        };
        let mut backoff = Duration::from_millis(20);
        // A node that just answered UNAVAILABLE is not asked again in the
        // same round, when the replica names the same stale leader.
        let mut unreachable = None;
        loop {
            *attempt = Instant::now();
            if let Some((id, addr)) = self.leader_elsewhere(shard, hops) {
                match self
                    .forward_submit(id, &addr, &complaints, hops, retry, deadline)
                    .await
                {
                    // The leader moved or is unreachable: ask the replica.
                    Err(s) if s.code() == Code::Unavailable => unreachable = Some(id),
                    results => {
                        self.note_shedding(shard, class, &results);
                        return results;
                    }
                }
            }
            let proposed =
                tokio::time::timeout_at(deadline, batcher.propose(complaints.clone(), class, deadline))
                    .await
                    .map_err(|_| submit_expired())?;
            let refusal = match proposed {
                Ok(v) => return Ok(v.into_iter().map(|o| item_result(shard, o)).collect()),
                Err(ProposeError::NotLeader(f)) => f,
                Err(ProposeError::Overloaded(after)) => {
                    return Err(with_retry(
                        Code::ResourceExhausted,
                        format!("shard {shard} is at capacity; retry with the same idempotency key"),
                        after,
                    ));
                }
                Err(ProposeError::Expired) => {
                    return Err(Status::deadline_exceeded(
                        "the deadline passed while queued; it was not stored: retry with the same idempotency key",
                    ));
                }
                Err(ProposeError::Stopped(e)) => {
                    return Err(with_retry(
                        Code::Unavailable,
                        format!("shard {shard} replica stopped: {e}"),
                        Duration::from_secs(1),
                    ));
                }
                Err(ProposeError::Other(e)) => return Err(Status::internal(e)),
            };
            match self.next_step(&refusal, hops) {
                Next::Forward(id, addr) if unreachable != Some(id) => {
                    let results = self
                        .forward_submit(id, &addr, &complaints, hops, retry, deadline)
                        .await;
                    match results {
                        // The leader moved or is unreachable: learn again and retry.
                        Err(s) if s.code() == Code::Unavailable => {}
                        results => {
                            self.note_shedding(shard, class, &results);
                            return results;
                        }
                    }
                }
                // A forwarded request gives up at once; its origin retries.
                Next::Forward(..) | Next::Wait if hops > 0 => return Err(self.not_leader(shard)),
                Next::Forward(..) | Next::Wait => {}
            }
            unreachable = None;
            pause_for_leader(shard, deadline, &mut backoff).await?;
        }
    }

    fn not_leader(&self, shard: ShardId) -> Status {
        with_retry(
            Code::Unavailable,
            format!("node {} does not lead shard {shard}", self.node_id),
            Duration::from_millis(50),
        )
    }

    /// After a forward: if the leader shed ordinary complaints, shed them
    /// here too for half its retry delay (at most 1 s), so the refusal costs
    /// this node alone. The leader's node may have refused the whole call
    /// (no call slot left) or single items.
    fn note_shedding(&self, shard: ShardId, class: Priority, results: &Result<Vec<ItemResult>, Status>) {
        if class != Priority::Ordinary {
            return;
        }
        let item_refusals = results.iter().flatten().filter_map(|r| r.as_ref().err());
        let delay = item_refusals
            .chain(results.as_ref().err())
            .filter(|s| s.code() == Code::ResourceExhausted)
            .filter_map(|s| s.get_details_retry_info().and_then(|r| r.retry_delay))
            .max();
        if let Some(d) = delay {
            let until = Instant::now() + (d / 2).min(Duration::from_secs(1));
            self.shedding.insert(shard, until);
        }
    }

    /// A shard with no replica here: ask its voters in turn, until the
    /// deadline, so a dead voter or an election is absorbed.
    async fn submit_remote(
        &self,
        shard: ShardId,
        complaints: &[Complaint],
        hops: u32,
        retry: bool,
        deadline: Instant,
        attempt: &mut Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        if hops >= MAX_HOPS {
            return Err(with_retry(
                Code::Unavailable,
                format!("node {} has no replica of shard {shard}", self.node_id),
                Duration::from_millis(50),
            ));
        }
        let voters = self.remote_voters(shard)?;
        let mut backoff = Duration::from_millis(20);
        let mut last = Status::unavailable(format!("shard {shard} has no reachable replica"));
        loop {
            for (id, addr) in &voters {
                *attempt = Instant::now();
                match self
                    .forward_submit(*id, addr, complaints, hops, retry, deadline)
                    .await
                {
                    Ok(r) => return Ok(r),
                    Err(s) if s.code() == Code::Unavailable => last = s,
                    Err(s) => return Err(s),
                }
            }
            if Instant::now() + backoff >= deadline {
                return Err(with_retry(
                    Code::Unavailable,
                    last.message().to_string(),
                    Duration::from_millis(500),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn forward_submit(
        &self,
        node: NodeId,
        addr: &str,
        complaints: &[Complaint],
        hops: u32,
        retry: bool,
        deadline: Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        let started = Instant::now();
        let result = async {
            let mut client = self.client(node, addr)?;
            let mut req = tonic::Request::new(pb::SubmitBatchRequest {
                complaints: complaints.iter().map(complaint_to_pb).collect(),
            });
            set_hops(&mut req, hops + 1);
            if retry {
                req.metadata_mut().insert(
                    PREVIOUS_ATTEMPTS_HEADER,
                    tonic::metadata::MetadataValue::from(1u32),
                );
            }
            req.set_timeout(deadline.saturating_duration_since(Instant::now()));
            let resp = client.submit_batch(req).await?.into_inner();
            if resp.results.len() != complaints.len() {
                return Err(Status::internal("leader answered a different number of items"));
            }
            Ok(resp.results.into_iter().map(item_from_pb).collect())
        };
        // The local timer also covers the wait for the channel to take the
        // call, which tonic's grpc-timeout timer does not.
        let result = match tokio::time::timeout_at(deadline, result).await {
            Ok(r) => r.map_err(|s| forward_expired(s, deadline, submit_expired)),
            Err(_) => Err(submit_expired()),
        };
        metrics::histogram!("intake_forward_seconds").record(started.elapsed().as_secs_f64());
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
    ) -> Result<Option<pb::Ticket>, Status> {
        let Some(sm) = self.state_machine(id.shard) else {
            if local {
                return Err(Status::failed_precondition(format!(
                    "node {} has no replica of shard {}",
                    self.node_id, id.shard
                )));
            }
            return self.get_remote(id, hops).await;
        };
        let read = |sm: &StateMachine| read_ticket(sm, &id);
        if let Some(t) = read(&sm)? {
            return Ok(Some(t));
        }
        if local {
            return Ok(None);
        }
        let raft = self
            .groups
            .get(id.shard)
            .ok_or_else(|| Status::unavailable(format!("shard {} is stopping here", id.shard)))?;
        match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => read(&sm),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                match self.next_step(&f, hops) {
                    Next::Forward(leader, addr) => self.forward_get(leader, &addr, id, hops).await,
                    Next::Wait => Err(with_retry(
                        Code::Unavailable,
                        format!("shard {} has no leader right now", id.shard),
                        Duration::from_millis(500),
                    )),
                }
            }
            Err(e) => Err(with_retry(
                Code::Unavailable,
                e.to_string(),
                Duration::from_millis(500),
            )),
        }
    }

    async fn get_remote(&self, id: TicketId, hops: u32) -> Result<Option<pb::Ticket>, Status> {
        if hops >= MAX_HOPS {
            return Err(Status::unavailable(format!(
                "node {} has no replica of shard {}",
                self.node_id, id.shard
            )));
        }
        let mut last = Status::unavailable(format!("shard {} has no reachable replica", id.shard));
        for (node, addr) in self.remote_voters(id.shard)? {
            match self.forward_get(node, &addr, id, hops).await {
                Ok(t) => return Ok(t),
                Err(s) if s.code() == Code::Unavailable => last = s,
                Err(s) => return Err(s),
            }
        }
        Err(last)
    }

    async fn forward_get(
        &self,
        node: NodeId,
        addr: &str,
        id: TicketId,
        hops: u32,
    ) -> Result<Option<pb::Ticket>, Status> {
        let mut client = self.client(node, addr)?;
        let mut req = tonic::Request::new(pb::GetTicketRequest {
            ticket_id: id.to_string(),
            local: false,
        });
        set_hops(&mut req, hops + 1);
        req.set_timeout(Duration::from_secs(5));
        match client.get_ticket(req).await {
            Ok(resp) => Ok(resp.into_inner().ticket),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }

    /// Records a status change on the ticket's shard leader (here, or one
    /// forward away) and returns the ticket as committed.
    pub async fn update_status(
        &self,
        update: StatusUpdate,
        hops: u32,
        deadline: Instant,
    ) -> Result<pb::Ticket, Status> {
        let shard = update.ticket.shard;
        let Some(raft) = self.groups.get(shard) else {
            if hops >= MAX_HOPS {
                return Err(Status::unavailable(format!(
                    "node {} has no replica of shard {shard}",
                    self.node_id
                )));
            }
            let mut last = Status::unavailable(format!("shard {shard} has no reachable replica"));
            for (node, addr) in self.remote_voters(shard)? {
                match self.forward_status(node, &addr, &update, hops, deadline).await {
                    Err(s) if s.code() == Code::Unavailable => last = s,
                    other => return other,
                }
            }
            return Err(last);
        };
        let mut backoff = Duration::from_millis(20);
        loop {
            let cmd = Command::UpdateStatus {
                recorded_at: now_millis(),
                updates: vec![update.clone()],
            };
            let written = tokio::time::timeout_at(deadline, raft.client_write(cmd))
                .await
                .map_err(|_| status_expired())?;
            let refusal = match written {
                Ok(r) => return self.status_outcome(update.ticket, r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                | Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => f,
                Err(e) => {
                    return Err(with_retry(
                        Code::Unavailable,
                        format!("shard {shard}: {e}"),
                        Duration::from_millis(500),
                    ));
                }
            };
            match self.next_step(&refusal, hops) {
                Next::Forward(node, addr) => {
                    match self.forward_status(node, &addr, &update, hops, deadline).await {
                        Err(s) if s.code() == Code::Unavailable => {}
                        other => return other,
                    }
                }
                // A forwarded request gives up at once; its origin retries.
                Next::Wait if hops > 0 => return Err(self.not_leader(shard)),
                Next::Wait => {}
            }
            pause_for_leader(shard, deadline, &mut backoff).await?;
        }
    }

    fn status_outcome(&self, id: TicketId, response: CommandResponse) -> Result<pb::Ticket, Status> {
        let outcome = match response {
            CommandResponse::StatusUpdated(mut v) if v.len() == 1 => v.remove(0),
            other => {
                return Err(Status::internal(format!(
                    "unexpected reply to a status update: {other:?}"
                )));
            }
        };
        match outcome {
            StatusOutcome::Recorded { .. } => {
                let sm = self
                    .state_machine(id.shard)
                    .ok_or_else(|| Status::unavailable(format!("shard {} is stopping here", id.shard)))?;
                read_ticket(&sm, &id)?.ok_or_else(|| Status::internal(format!("ticket {id} vanished")))
            }
            StatusOutcome::NotFound => Err(Status::not_found(format!("no ticket {id}"))),
            StatusOutcome::Refused(
                e @ (StatusError::MissingDepartment
                | StatusError::UnexpectedDepartment
                | StatusError::TooLong { .. }),
            ) => Err(Status::invalid_argument(e.to_string())),
            StatusOutcome::Refused(e) => Err(Status::failed_precondition(format!("ticket {id}: {e}"))),
        }
    }

    async fn forward_status(
        &self,
        node: NodeId,
        addr: &str,
        u: &StatusUpdate,
        hops: u32,
        deadline: Instant,
    ) -> Result<pb::Ticket, Status> {
        let mut client = self.client(node, addr)?;
        let mut req = tonic::Request::new(pb::UpdateStatusRequest {
            ticket_id: u.ticket.to_string(),
            status: status_to_pb(u.status) as i32,
            department: u.department.clone().unwrap_or_default(),
            note: u.note.clone(),
            reported_at: Some(millis_to_timestamp(u.reported_at)),
        });
        set_hops(&mut req, hops + 1);
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let answer = tokio::time::timeout_at(deadline, client.update_status(req))
            .await
            .unwrap_or_else(|_| Err(status_expired()))
            .map_err(|s| forward_expired(s, deadline, status_expired))?;
        answer
            .into_inner()
            .ticket
            .ok_or_else(|| Status::internal("leader answered without the ticket"))
    }

    /// This node's Raft handle for `shard`, if it hosts one.
    pub fn groups(&self) -> &Groups {
        &self.groups
    }

    pub fn raft(&self, shard: ShardId) -> Option<Raft> {
        self.groups.get(shard)
    }
}

/// A ticket and its status history from one replica.
fn read_ticket(sm: &StateMachine, id: &TicketId) -> Result<Option<pb::Ticket>, Status> {
    let internal = |e: intake_storage::StorageError| Status::internal(e.to_string());
    let Some(t) = sm.get_ticket(id).map_err(internal)? else {
        return Ok(None);
    };
    let history = sm.ticket_history(id).map_err(internal)?;
    Ok(Some(ticket_with_history_to_pb(&t, &history)))
}

/// No usable leader for `shard` right now: wait with growing backoff, or
/// give up if the next wait would pass the deadline.
async fn pause_for_leader(shard: ShardId, deadline: Instant, backoff: &mut Duration) -> Result<(), Status> {
    if Instant::now() + *backoff >= deadline {
        return Err(with_retry(
            Code::Unavailable,
            format!("shard {shard} has no reachable leader right now"),
            Duration::from_millis(500),
        ));
    }
    tokio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(Duration::from_millis(500));
    Ok(())
}

fn set_hops<T>(req: &mut tonic::Request<T>, hops: u32) {
    if let Ok(v) = tonic::metadata::MetadataValue::try_from(hops.to_string()) {
        req.metadata_mut().insert(HOPS_HEADER, v);
    }
    // Without mutual TLS the next node checks the caller's token again.
    crate::auth::attach_caller_token(req);
}

/// gRPC's header for a retried call (gRFC A6): how many attempts came
/// before this one. Clients that send it let a node answer complaints that
/// already committed without another proposal.
pub const PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";

/// Whether the caller says this call retries an earlier attempt.
pub fn is_retry<T>(req: &tonic::Request<T>) -> bool {
    req.metadata()
        .get(PREVIOUS_ATTEMPTS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok())
        .is_some_and(|n| n > 0)
}

/// How many nodes a request has passed through before this one.
pub fn hops_of<T>(req: &tonic::Request<T>) -> u32 {
    req.metadata()
        .get(HOPS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
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
                .unwrap_or_else(|| Err(Status::internal("no result for the complaint")))
        })
        .collect()
}

fn item_result(shard: ShardId, o: SubmitOutcome) -> ItemResult {
    match o {
        SubmitOutcome::Created { id, accepted_at } => Ok(pb::SubmitResponse {
            ticket_id: id.to_string(),
            duplicate: false,
            accepted_at: Some(millis_to_timestamp(accepted_at)),
            shard,
        }),
        SubmitOutcome::Existing { id, accepted_at } => Ok(pb::SubmitResponse {
            ticket_id: id.to_string(),
            duplicate: true,
            accepted_at: Some(millis_to_timestamp(accepted_at)),
            shard,
        }),
        SubmitOutcome::Conflict { id } => Err(key_conflict(&id.to_string())),
    }
}

fn item_from_pb(r: pb::SubmitResult) -> ItemResult {
    match r.outcome {
        Some(pb::submit_result::Outcome::Accepted(ok)) => Ok(ok),
        Some(pb::submit_result::Outcome::Error(e)) => {
            let code = Code::from_i32(e.code);
            Err(if e.retry_after_ms > 0 {
                with_retry(code, e.message, Duration::from_millis(e.retry_after_ms))
            } else {
                Status::new(code, e.message)
            })
        }
        None => Err(Status::internal("leader answered an empty item")),
    }
}
