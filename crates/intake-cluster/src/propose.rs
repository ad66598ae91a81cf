//! Proposing a command on another node's replica: the `Propose` call of the
//! Raft transport. Key claims need it (`intake_core::apply::claim_keys`): a
//! complaint's node writes a claim on the key's home shard, whose leader is
//! often elsewhere. Client requests are forwarded as client requests, so
//! that the leader's own admission and batching see them; a claim is not
//! one, and only claims are accepted here, on data shards only. The meta
//! group takes one command this way: `AddMember`, from a node that joins
//! and has no replica of its own to propose on.

use std::time::Duration;

use intake_core::{ClusterMap, Command, CommandResponse, META_GROUP};
use intake_proto::raft::v1::RaftMessage;
use intake_proto::raft::v1::raft_transport_client::RaftTransportClient;
use intake_storage::{NodeId, Raft, ShardId};
use openraft::error::{ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use tonic::transport::Channel;

use crate::PeerPool;
use crate::codec::{CodecError, decode, encode};

/// What the proposing replica answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProposeReply {
    /// Committed and applied: the state machine's answer.
    Applied(CommandResponse),
    /// This replica does not lead; the leader it knows, if any.
    NotLeader { leader: Option<(NodeId, String)> },
    /// It could not be proposed (the group is stopping, storage failed).
    Failed(String),
}

/// Why a command is refused before it reaches a replica.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("undecodable command: {0}")]
    Decode(#[from] CodecError),
    #[error(
        "only key claims on data shards, and AddMember and ChangeMap on the meta group, are proposed through the transport"
    )]
    NotAllowed,
}

/// The command in `payload`, if it may be proposed on `group` for a peer.
pub fn accept(group: ShardId, payload: &[u8]) -> Result<Command, ProposeError> {
    let command: Command = decode(payload)?;
    match command {
        Command::ClaimKeys { .. } if group != META_GROUP => Ok(command),
        Command::AddMember { .. } | Command::ChangeMap(_) if group == META_GROUP => Ok(command),
        _ => Err(ProposeError::NotAllowed),
    }
}

/// Proposes `command` on this node's replica and waits for it to apply.
pub async fn on_replica(raft: &Raft, command: Command) -> ProposeReply {
    match raft.client_write(command).await {
        Ok(r) => ProposeReply::Applied(r.data),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => ProposeReply::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        Err(e) => ProposeReply::Failed(e.to_string()),
    }
}

/// Why a remote proposal got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No channel to the peer could be made (a bad address): nothing sent.
    #[error("{0}")]
    Transport(String),
    /// The peer answered with an error status.
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("{0}")]
    Codec(#[from] CodecError),
}

/// Proposes `command` on `target`'s replica of `group`, over the forward
/// channel, waiting at most `timeout`.
pub async fn remote(
    peers: &PeerPool,
    target: NodeId,
    addr: &str,
    group: ShardId,
    command: &Command,
    timeout: Duration,
) -> Result<ProposeReply, RemoteError> {
    let (mut client, req) = call(peers, target, addr, group, encode(command)?, timeout)?;
    let answer = client.propose(req).await?.into_inner();
    Ok(decode(&answer.payload)?)
}

/// The forward-channel client to `target` and a request for it.
pub(crate) fn call(
    peers: &PeerPool,
    target: NodeId,
    addr: &str,
    group: ShardId,
    payload: Vec<u8>,
    timeout: Duration,
) -> Result<(RaftTransportClient<Channel>, tonic::Request<RaftMessage>), RemoteError> {
    let client = peers
        .forward_client(target, addr)
        .map_err(|e| RemoteError::Transport(e.to_string()))?;
    let mut req = tonic::Request::new(RaftMessage { group, payload });
    req.set_timeout(timeout);
    Ok((client, req))
}

/// The cluster map `target` at `addr` holds now (its `FetchMap`).
pub async fn fetch_map(
    peers: &PeerPool,
    target: NodeId,
    addr: &str,
    timeout: Duration,
) -> Result<ClusterMap, RemoteError> {
    let (mut client, req) = call(peers, target, addr, META_GROUP, Vec::new(), timeout)?;
    let answer = client.fetch_map(req).await?.into_inner();
    Ok(decode(&answer.payload)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use intake_core::KeyClaim;

    #[test]
    fn only_claims_on_data_shards_and_joins_on_the_meta_group_are_accepted() {
        let claims = Command::ClaimKeys {
            accepted_at: 1,
            claims: vec![KeyClaim {
                key: "k".into(),
                digest: 1,
                district: "110101".into(),
                shard: 2,
            }],
        };
        let bytes = encode(&claims).unwrap();
        assert_eq!(accept(3, &bytes).unwrap(), claims);
        assert!(matches!(
            accept(META_GROUP, &bytes),
            Err(ProposeError::NotAllowed)
        ));
        let join = encode(&Command::AddMember {
            id: 4,
            addr: "h:4".into(),
        })
        .unwrap();
        assert!(matches!(
            accept(META_GROUP, &join),
            Ok(Command::AddMember { id: 4, .. })
        ));
        assert!(matches!(accept(3, &join), Err(ProposeError::NotAllowed)));
        let other = encode(&Command::CompactKeys { before: 1 }).unwrap();
        assert!(matches!(accept(3, &other), Err(ProposeError::NotAllowed)));
        assert!(matches!(accept(3, b"\xff\xff"), Err(ProposeError::Decode(_))));
    }
}
