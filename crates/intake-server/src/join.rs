//! Joining a running cluster (`intake start --join`, issue 16 item 1).
//!
//! A new node has no replica of anything, so it cannot propose on the meta
//! group itself. It asks one of the members it was given for the cluster
//! map (`FetchMap`), then proposes `AddMember` on the meta voters that map
//! names, following a "not the leader" answer to the leader, through the
//! Raft transport's `Propose`. Apply decides against the committed map
//! (`intake_core::apply::add_member`), so the answer is final: the map that
//! holds the node, or a refusal (its id or address belongs to another
//! member) that retrying cannot change. Anything else — a member down, no
//! meta leader yet, a map not committed yet — is retried until `patience`
//! runs out.

use std::time::{Duration, Instant};

use intake_cluster::PeerPool;
use intake_cluster::propose;
use intake_core::{ClusterMap, Command, CommandResponse, JoinRefusal};
use intake_storage::NodeId;

/// Why a node could not join.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The cluster said no; retrying will not change it.
    #[error("the cluster refused to add node {id}: {refusal}")]
    Refused { id: NodeId, refusal: JoinRefusal },
    /// No member given answered in time, or none could add the node.
    #[error("could not join through {endpoints} within {secs} s; last problem: {last}")]
    NoAnswer {
        endpoints: String,
        secs: u64,
        last: String,
    },
}

/// How long one call to a member may take.
const CALL: Duration = Duration::from_secs(3);
/// The pause between rounds over the members given.
const PAUSE: Duration = Duration::from_millis(500);

/// Adds node `id`, reachable at `addr`, to the cluster one of `endpoints`
/// belongs to, and returns the map that holds it.
pub async fn join(
    peers: &PeerPool,
    id: NodeId,
    addr: &str,
    endpoints: &[String],
    patience: Duration,
) -> Result<ClusterMap, JoinError> {
    let deadline = Instant::now() + patience;
    let command = Command::AddMember {
        id,
        addr: addr.to_string(),
    };
    let mut last = String::from("no member was asked");
    loop {
        for (i, endpoint) in endpoints.iter().enumerate() {
            // The endpoint's node id is not known yet: a channel key no
            // real node has (ids count up from 1).
            let pseudo = NodeId::MAX - i as NodeId;
            let map = match propose::fetch_map(peers, pseudo, endpoint, CALL).await {
                Ok(map) => map,
                Err(e) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
            };
            match crate::meta::write(peers, &map, None, &command).await {
                Ok(CommandResponse::Joined(Ok(map))) => return Ok(map),
                Ok(CommandResponse::Joined(Err(JoinRefusal::NoMap))) => last = JoinRefusal::NoMap.to_string(),
                Ok(CommandResponse::Joined(Err(refusal))) => return Err(JoinError::Refused { id, refusal }),
                Ok(other) => last = format!("unexpected answer {other:?}"),
                Err(problem) => last = problem,
            }
        }
        if Instant::now() + PAUSE >= deadline {
            return Err(JoinError::NoAnswer {
                endpoints: endpoints.join(","),
                secs: patience.as_secs(),
                last,
            });
        }
        tracing::info!(problem = %last, "not joined yet; retrying");
        tokio::time::sleep(PAUSE).await;
    }
}
