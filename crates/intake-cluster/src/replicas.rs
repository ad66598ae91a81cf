//! Changing a group's replicas on its leader: the `ChangeReplicas` call of
//! the Raft transport, which the meta leader's scheduler uses to move a
//! replica (issue 16): add the new node as a learner, wait until it has
//! caught up, replace the voters (openraft's joint consensus), and move
//! leadership. Each operation is idempotent, so a scheduler that lost an
//! answer asks again.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use intake_storage::{NodeId, Raft, ShardId, TypeConfig};
use openraft::BasicNode;
use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};

use crate::PeerPool;
use crate::codec::{decode, encode};
use crate::propose::RemoteError;

/// A learner this many entries behind the leader's last counts as caught
/// up: close enough that it acknowledges new entries at once when it votes.
const CAUGHT_UP_LAG: u64 = 64;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaOp {
    /// Replicate to `id` at `addr` as a learner (no vote yet).
    AddLearner { id: NodeId, addr: String },
    /// Whether learner `id` holds nearly every entry the leader has.
    CaughtUp { id: NodeId },
    /// Make exactly these the voters (each must be a member already, as a
    /// learner or voter); voters left out leave the group.
    SetVoters { voters: BTreeMap<NodeId, String> },
    /// Hand leadership to voter `to`.
    TransferLeader { to: NodeId },
    /// Stop replicating to learner `id` (a move given up); a voter stays.
    DropLearner { id: NodeId },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaReply {
    Done,
    CaughtUp(bool),
    /// This replica does not lead; the leader it knows, if any.
    NotLeader {
        leader: Option<(NodeId, String)>,
    },
    Failed(String),
}

/// The leader this replica knows, if it is another node.
fn not_leader(raft: &Raft) -> Option<ReplicaReply> {
    let metrics = raft.metrics();
    let m = metrics.borrow_watched();
    if m.current_leader == Some(m.id) {
        return None;
    }
    let leader = m.current_leader.and_then(|id| {
        let node = m.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.clone()))
    });
    Some(ReplicaReply::NotLeader { leader })
}

fn failed(e: RaftError<TypeConfig, ClientWriteError<TypeConfig>>) -> ReplicaReply {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ReplicaReply::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        other => ReplicaReply::Failed(other.to_string()),
    }
}

/// Carries `op` out on this node's replica of a group, if it leads.
pub async fn on_replica(raft: &Raft, op: ReplicaOp) -> ReplicaReply {
    if let Some(reply) = not_leader(raft) {
        return reply;
    }
    let (voters, nodes, matched, last) = {
        let metrics = raft.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let nodes: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let matched: BTreeMap<NodeId, u64> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.as_ref().map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        (voters, nodes, matched, m.last_log_index.unwrap_or(0))
    };
    match op {
        ReplicaOp::AddLearner { id, addr } => {
            if nodes.contains(&id) {
                return ReplicaReply::Done;
            }
            match raft.add_learner(id, BasicNode { addr }, false).await {
                Ok(_) => ReplicaReply::Done,
                Err(e) => failed(e),
            }
        }
        ReplicaOp::CaughtUp { id } => {
            let at = matched.get(&id).copied().unwrap_or(0);
            ReplicaReply::CaughtUp(nodes.contains(&id) && at + CAUGHT_UP_LAG >= last)
        }
        ReplicaOp::SetVoters { voters: wanted } => {
            let ids: BTreeSet<NodeId> = wanted.keys().copied().collect();
            let joint = raft
                .metrics()
                .borrow_watched()
                .membership_config
                .membership()
                .get_joint_config()
                .len()
                > 1;
            if ids == voters && !joint {
                return ReplicaReply::Done;
            }
            match raft.change_membership(ids, false).await {
                Ok(_) => ReplicaReply::Done,
                Err(e) => failed(e),
            }
        }
        ReplicaOp::DropLearner { id } => {
            if voters.contains(&id) {
                return ReplicaReply::Failed(format!("node {id} is a voter, not a learner"));
            }
            if !nodes.contains(&id) {
                return ReplicaReply::Done;
            }
            let gone = openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]));
            match raft.change_membership(gone, false).await {
                Ok(_) => ReplicaReply::Done,
                Err(e) => failed(e),
            }
        }
        ReplicaOp::TransferLeader { to } => match raft.trigger().transfer_leader(to).await {
            Ok(()) => ReplicaReply::Done,
            Err(e) => ReplicaReply::Failed(e.to_string()),
        },
    }
}

/// Asks `target` at `addr` to carry `op` out on its replica of `group`.
pub async fn remote(
    peers: &PeerPool,
    target: NodeId,
    addr: &str,
    group: ShardId,
    op: &ReplicaOp,
    timeout: Duration,
) -> Result<ReplicaReply, RemoteError> {
    let (mut client, req) = crate::propose::call(peers, target, addr, group, encode(op)?, timeout)?;
    let answer = client.change_replicas(req).await?.into_inner();
    Ok(decode(&answer.payload)?)
}
