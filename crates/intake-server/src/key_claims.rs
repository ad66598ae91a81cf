//! One idempotency key, one ticket, in the whole cluster (issue 16 item 6).
//!
//! Complaints shard by district, so the same key sent with two districts
//! would reach two shards, and each would happily mint a ticket. Every key
//! therefore has a home shard (`ClusterMap::home_of_key`) whose Raft log
//! orders all uses of it. A complaint whose shard is its key's home needs
//! nothing here: its `Submit` checks the key and any claim on it. Any other
//! complaint first claims its key at home (`Command::ClaimKeys`), and only
//! a complaint that holds its claim is proposed on its own shard.
//!
//! That is a second Raft write, so keys minted by our clients name their
//! district (`intake_core::district_key`) and are at home where their
//! complaint goes; only keys chosen by others (a call centre's call id)
//! pay for it.
//!
//! Only the node where a complaint enters claims (hops 0); a forwarded
//! request was claimed by its origin. A claim that runs out or finds no
//! leader fails the complaint with the same retryable error a proposal
//! would, and a retry claims again: the same content still holds the key.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;
use intake_cluster::propose::{self, ProposeReply, RemoteError};
use intake_core::{ClaimOutcome, Command, CommandResponse, Complaint, KeyClaim};
use intake_storage::{NodeId, ShardId};
use openraft::error::{ClientWriteError, RaftError};
use tokio::time::Instant;

use crate::convert::now_millis;
use crate::error::{Expiry, RequestError};
use crate::router::{ItemResult, Router, pause_for_leader};

/// Claims per `ClaimKeys` entry at most (an entry's positions are 8 bits).
const MAX_CLAIMS_PER_ENTRY: usize = 256;

/// Complaints of `shard` after their claims: answers, by position, for the
/// complaints that may not go on (empty when all may), and those that may.
pub(crate) type Claimed = (Vec<Option<ItemResult>>, Vec<Complaint>);

/// Claims, at their home shards, the keys of `complaints` (all of `shard`)
/// whose home is another shard.
pub(crate) async fn claim_keys(
    router: &Router,
    shard: ShardId,
    complaints: Vec<Complaint>,
    deadline: Instant,
) -> Claimed {
    let map = router.registry().map();
    let mut by_home: BTreeMap<ShardId, Vec<usize>> = BTreeMap::new();
    for (i, c) in complaints.iter().enumerate() {
        match map.home_of_key(&c.idempotency_key) {
            Some(home) if home != shard => by_home.entry(home).or_default().push(i),
            _ => {}
        }
    }
    if by_home.is_empty() {
        return (Vec::new(), complaints);
    }
    metrics::counter!("intake_key_claims_total").increment(by_home.values().map(|v| v.len() as u64).sum());
    let mut answers: Vec<Option<ItemResult>> = vec![None; complaints.len()];
    let groups: Vec<(ShardId, Vec<usize>)> = by_home
        .iter()
        .flat_map(|(home, idx)| idx.chunks(MAX_CLAIMS_PER_ENTRY).map(|c| (*home, c.to_vec())))
        .collect();
    let calls = groups.into_iter().map(|(home, idx)| {
        let claims = idx
            .iter()
            .map(|&i| {
                let c = &complaints[i];
                KeyClaim {
                    key: c.idempotency_key.clone(),
                    digest: c.content_digest(),
                    district: c.district.clone(),
                    shard,
                }
            })
            .collect();
        async move { (idx, claim_at_home(router, home, claims, deadline).await) }
    });
    for (idx, result) in join_all(calls).await {
        match result {
            Ok(outcomes) => {
                for (k, &i) in idx.iter().enumerate() {
                    answers[i] = match outcomes.get(k) {
                        Some(ClaimOutcome::Held) => None,
                        Some(ClaimOutcome::Ticket(id)) => Some(Err(RequestError::Conflict {
                            ticket: id.to_string(),
                        })),
                        Some(ClaimOutcome::Elsewhere { district, shard }) => Some(Err(taken(
                            router,
                            &complaints[i].idempotency_key,
                            Some(district.clone()),
                            *shard,
                        ))),
                        None => Some(Err(RequestError::Internal(
                            "the key's claim was not answered".into(),
                        ))),
                    };
                }
            }
            Err(e) => {
                for i in idx {
                    answers[i] = Some(Err(e.clone()));
                }
            }
        }
    }
    for refusal in answers.iter().flatten().filter_map(|a| a.as_ref().err()) {
        // As the state machine logs a conflict: by ticket (or shard), never
        // the key or the content (personal data, issue 19).
        match refusal {
            RequestError::Conflict { ticket } => {
                tracing::warn!(shard, ticket = %ticket, "idempotency key reused with different content");
            }
            RequestError::KeyTaken { shard: holder, .. } => {
                tracing::warn!(shard, holder, "idempotency key reused with different content");
            }
            _ => {}
        }
    }
    let rest = complaints
        .into_iter()
        .zip(&answers)
        .filter(|(_, a)| a.is_none())
        .map(|(c, _)| c)
        .collect();
    (answers, rest)
}

/// The refusal of a complaint whose key another complaint, of `district`
/// on `shard`, holds: naming that complaint's ticket when a replica here
/// knows it (with the default placement every node has every shard), else
/// its district and shard.
pub(crate) fn taken(router: &Router, key: &str, district: Option<String>, shard: ShardId) -> RequestError {
    let ticket = router
        .registry()
        .state_machine(shard)
        .and_then(|sm| sm.ticket_id_of_key(key).ok().flatten());
    match ticket {
        Some(id) => RequestError::Conflict {
            ticket: id.to_string(),
        },
        None => RequestError::KeyTaken { district, shard },
    }
}

/// Proposes `claims` on the leader of `home`, wherever it is, until the
/// deadline.
async fn claim_at_home(
    router: &Router,
    home: ShardId,
    claims: Vec<KeyClaim>,
    deadline: Instant,
) -> Result<Vec<ClaimOutcome>, RequestError> {
    let command = Command::ClaimKeys {
        accepted_at: now_millis(),
        claims,
    };
    match on_leader(router, home, &command, deadline).await? {
        CommandResponse::Claimed(outcomes) => Ok(outcomes),
        other => Err(RequestError::Internal(format!(
            "unexpected reply to a key claim: {other:?}"
        ))),
    }
}

/// Where a proposal goes next.
enum Step {
    Done(CommandResponse),
    Ask(NodeId, String),
    Wait,
}

/// Proposes `command` on `shard`'s leader: the local replica if it leads,
/// else the leader it names or, with no replica here, the shard's voters
/// in turn; with no leader known, waits with backoff until the deadline.
async fn on_leader(
    router: &Router,
    shard: ShardId,
    command: &Command,
    deadline: Instant,
) -> Result<CommandResponse, RequestError> {
    let mut backoff = Duration::from_millis(20);
    let mut voters = router
        .registry()
        .remote_voters(shard)
        .unwrap_or_default()
        .into_iter()
        .cycle();
    loop {
        let mut step = match router.registry().raft(shard) {
            Some(raft) => match router.registry().leader_elsewhere(shard) {
                Some((id, addr)) => Step::Ask(id, addr),
                None => {
                    let written = tokio::time::timeout_at(deadline, raft.client_write(command.clone()))
                        .await
                        .map_err(|_| RequestError::Expired(Expiry::MayHaveCommitted))?;
                    match written {
                        Ok(r) => Step::Done(r.data),
                        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                            match f.leader_id.zip(f.leader_node) {
                                Some((id, node)) if id != router.registry().node_id() => {
                                    Step::Ask(id, node.addr)
                                }
                                _ => Step::Wait,
                            }
                        }
                        Err(e) => return Err(RequestError::Unreachable(format!("shard {shard}: {e}"))),
                    }
                }
            },
            None => match voters.next() {
                Some((id, addr)) => Step::Ask(id, addr),
                None => {
                    return Err(RequestError::NotFound(format!(
                        "no shard {shard} in this cluster"
                    )));
                }
            },
        };
        // A peer that does not lead names the leader: one more ask.
        for _ in 0..2 {
            let Step::Ask(id, addr) = step else { break };
            step = ask(router, id, &addr, shard, command, deadline).await?;
        }
        match step {
            Step::Done(r) => return Ok(r),
            Step::Ask(..) | Step::Wait => pause_for_leader(shard, deadline, &mut backoff).await?,
        }
    }
}

/// Proposes on `node`'s replica of `shard`.
async fn ask(
    router: &Router,
    node: NodeId,
    addr: &str,
    shard: ShardId,
    command: &Command,
    deadline: Instant,
) -> Result<Step, RequestError> {
    let left = deadline.saturating_duration_since(Instant::now());
    let called = propose::remote(router.peers(), node, addr, shard, command, left);
    let reply = tokio::time::timeout_at(deadline, called)
        .await
        .map_err(|_| RequestError::Expired(Expiry::MayHaveCommitted))?;
    match reply {
        Ok(ProposeReply::Applied(r)) => Ok(Step::Done(r)),
        Ok(ProposeReply::NotLeader {
            leader: Some((id, addr)),
        }) if id != node => Ok(Step::Ask(id, addr)),
        Ok(ProposeReply::NotLeader { .. }) => Ok(Step::Wait),
        Ok(ProposeReply::Failed(why)) => Err(RequestError::Unreachable(format!("shard {shard}: {why}"))),
        // Unreachable, or gone while asked: another node or a later try may do.
        Err(RemoteError::Status(s)) if s.code() == tonic::Code::DeadlineExceeded => {
            Err(RequestError::Expired(Expiry::MayHaveCommitted))
        }
        Err(RemoteError::Status(s)) if s.code() == tonic::Code::NotFound => Ok(Step::Wait),
        Err(e) => {
            tracing::debug!(node, shard, error = %e, "key claim not proposed on a peer");
            Ok(Step::Wait)
        }
    }
}
