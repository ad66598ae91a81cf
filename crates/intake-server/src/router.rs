//! Getting a submission to its shard's leader, and a ticket look-up to a
//! replica that has it.
//!
//! Any node accepts any request. If the local replica of the shard leads, the
//! complaints are proposed here; otherwise they are forwarded once to the
//! leader's node (marked, so they are never forwarded again). While a shard
//! has no leader (an election), the router retries with backoff until the
//! request's deadline, so clients never see a leader change while a leader
//! exists. Retries are safe because the state machine deduplicates by
//! idempotency key.

use std::time::Duration;

use intake_cluster::{Groups, PeerPool};
use intake_core::{Command, CommandResponse, Complaint, SubmitOutcome, TicketId};
use intake_proto::pb;
use intake_proto::pb::intake_service_client::IntakeServiceClient;
use intake_storage::{NodeId, Raft, ShardId, StateMachine};
use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, ForwardToLeader, LinearizableReadError, RaftError};
use tokio::time::Instant;
use tonic::{Code, Status};

use crate::FORWARDED_HEADER;
use crate::convert::{millis_to_timestamp, now_millis, ticket_to_pb};
use crate::errors::{key_conflict, with_retry};

/// The answer for one complaint.
pub type ItemResult = Result<pb::SubmitResponse, Status>;

#[derive(Clone)]
pub struct Router {
    node_id: NodeId,
    groups: Groups,
    state_machines: std::sync::Arc<dashmap::DashMap<ShardId, StateMachine>>,
    peers: PeerPool,
}

/// What to do after a write was refused by a non-leader.
enum Next {
    Forward(NodeId, String),
    Wait,
}

impl Router {
    pub fn new(node_id: NodeId, groups: Groups, peers: PeerPool) -> Self {
        Self {
            node_id,
            groups,
            state_machines: Default::default(),
            peers,
        }
    }

    pub fn add_shard(&self, shard: ShardId, sm: StateMachine) {
        self.state_machines.insert(shard, sm);
    }

    pub fn state_machine(&self, shard: ShardId) -> Option<StateMachine> {
        self.state_machines.get(&shard).map(|s| s.value().clone())
    }

    /// The shard of a complaint. One shard for now; the slot of the
    /// idempotency key is already part of the route (see `intake_core::routing`).
    pub fn shard_for(&self, _complaint: &Complaint) -> ShardId {
        0
    }

    fn raft(&self, shard: ShardId) -> Result<Raft, Status> {
        self.groups
            .get(shard)
            .ok_or_else(|| Status::unavailable(format!("shard {shard} is not hosted on this node")))
    }

    fn next_step(&self, f: &ForwardToLeader<intake_storage::TypeConfig>, forwarded: bool) -> Next {
        match (&f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if *id != self.node_id && !forwarded => {
                Next::Forward(*id, node.addr.clone())
            }
            _ => Next::Wait,
        }
    }

    /// Proposes `complaints` (all of `shard`) and waits until they are
    /// committed on a quorum and applied. The outer error fails the whole
    /// group; inner results are per complaint.
    pub async fn submit(
        &self,
        shard: ShardId,
        complaints: Vec<Complaint>,
        forwarded: bool,
        deadline: Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        let raft = self.raft(shard)?;
        let mut backoff = Duration::from_millis(20);
        loop {
            let cmd = Command::Submit {
                accepted_at: now_millis(),
                complaints: complaints.clone(),
            };
            let written = tokio::time::timeout_at(deadline, raft.client_write(cmd)).await.map_err(|_| {
                Status::deadline_exceeded(
                    "not acknowledged before the deadline; it may still commit: retry with the same idempotency key",
                )
            })?;
            let refusal = match written {
                Ok(resp) => return Ok(outcomes(shard, resp.data, &complaints)),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                | Err(RaftError::APIError(ClientWriteError::LogEntryDiscarded(f))) => f,
                Err(RaftError::APIError(other)) => return Err(Status::internal(other.to_string())),
                Err(RaftError::Fatal(fatal)) => {
                    return Err(with_retry(
                        Code::Unavailable,
                        format!("shard {shard} replica stopped: {fatal}"),
                        Duration::from_secs(1),
                    ));
                }
            };
            match self.next_step(&refusal, forwarded) {
                Next::Forward(id, addr) => {
                    match self.forward_submit(id, &addr, &complaints, deadline).await {
                        Ok(results) => return Ok(results),
                        // The leader moved or is unreachable: learn again and retry.
                        Err(s) if s.code() == Code::Unavailable => {}
                        Err(s) => return Err(s),
                    }
                }
                Next::Wait if forwarded => {
                    return Err(with_retry(
                        Code::Unavailable,
                        format!("node {} does not lead shard {shard}", self.node_id),
                        Duration::from_millis(50),
                    ));
                }
                Next::Wait => {}
            }
            if Instant::now() + backoff >= deadline {
                return Err(with_retry(
                    Code::Unavailable,
                    format!("shard {shard} has no reachable leader right now"),
                    Duration::from_millis(500),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    async fn forward_submit(
        &self,
        leader: NodeId,
        addr: &str,
        complaints: &[Complaint],
        deadline: Instant,
    ) -> Result<Vec<ItemResult>, Status> {
        let channel = self
            .peers
            .channel(leader, addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = IntakeServiceClient::new(channel);
        let mut req = tonic::Request::new(pb::SubmitBatchRequest {
            complaints: complaints.iter().map(crate::convert::complaint_to_pb).collect(),
        });
        req.metadata_mut()
            .insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        req.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let resp = client.submit_batch(req).await?.into_inner();
        if resp.results.len() != complaints.len() {
            return Err(Status::internal("leader answered a different number of items"));
        }
        Ok(resp.results.into_iter().map(item_from_pb).collect())
    }

    /// Finds a ticket. A replica that has applied it answers at once; one that
    /// has not asks the leader (which first makes sure it has applied all it
    /// committed), unless `local` asks for this replica's view only.
    pub async fn get_ticket(
        &self,
        id: TicketId,
        local: bool,
        forwarded: bool,
    ) -> Result<Option<pb::Ticket>, Status> {
        let sm = self
            .state_machine(id.shard)
            .ok_or_else(|| Status::not_found(format!("no shard {} in this cluster", id.shard)))?;
        let read = |sm: &StateMachine| -> Result<Option<pb::Ticket>, Status> {
            Ok(sm
                .get_ticket(&id)
                .map_err(|e| Status::internal(e.to_string()))?
                .as_ref()
                .map(ticket_to_pb))
        };
        if let Some(t) = read(&sm)? {
            return Ok(Some(t));
        }
        if local {
            return Ok(None);
        }
        let raft = self.raft(id.shard)?;
        match raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => read(&sm),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                match self.next_step(&f, forwarded) {
                    Next::Forward(leader, addr) => self.forward_get(leader, &addr, id).await,
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

    async fn forward_get(
        &self,
        leader: NodeId,
        addr: &str,
        id: TicketId,
    ) -> Result<Option<pb::Ticket>, Status> {
        let channel = self
            .peers
            .channel(leader, addr)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut client = IntakeServiceClient::new(channel);
        let mut req = tonic::Request::new(pb::GetTicketRequest {
            ticket_id: id.to_string(),
            local: false,
        });
        req.metadata_mut()
            .insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        req.set_timeout(Duration::from_secs(5));
        match client.get_ticket(req).await {
            Ok(resp) => Ok(resp.into_inner().ticket),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(s),
        }
    }
}

fn outcomes(shard: ShardId, data: CommandResponse, complaints: &[Complaint]) -> Vec<ItemResult> {
    match data {
        CommandResponse::Submitted(v) if v.len() == complaints.len() => {
            v.into_iter().map(|o| item_result(shard, o)).collect()
        }
        _ => complaints
            .iter()
            .map(|_| Err(Status::internal("state machine gave an unexpected reply")))
            .collect(),
    }
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
            let status = if e.retry_after_ms > 0 {
                with_retry(
                    Code::from_i32(e.code),
                    e.message,
                    Duration::from_millis(e.retry_after_ms),
                )
            } else {
                Status::new(Code::from_i32(e.code), e.message)
            };
            Err(status)
        }
        None => Err(Status::internal("leader answered an empty item")),
    }
}
