//! Keeping every node on the newest cluster map.
//!
//! Every initial node computes the same map, so routing works before the
//! meta group has a leader; once it has one, the leader commits the map,
//! and from then on the replicated map is the authority that membership
//! changes (`AddMember`, `crate::join`) update. A meta voter reads it from
//! its replica; a node without one (a node that joined) asks a meta voter
//! for it through the transport's `FetchMap`. Each node stores the newest
//! map it has seen, so that a restart starts from it.

use std::time::Duration;

use intake_cluster::PeerPool;
use intake_cluster::propose;
use intake_core::{ClusterMap, Command, META_GROUP};
use intake_storage::NodeStorage;
use tokio::sync::watch;

use crate::registry::Registry;

/// How often a node looks for a newer map.
const TICK: Duration = Duration::from_millis(500);

pub async fn publish_and_follow(
    registry: Registry,
    peers: PeerPool,
    storage: NodeStorage,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    // Which meta voter a node without a replica asks next.
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let found = match (registry.raft(META_GROUP), registry.state_machine(META_GROUP)) {
            (Some(raft), Some(sm)) => match sm.cluster_map() {
                Ok(Some(map)) => Some(map),
                Ok(None) if raft.is_leader() => {
                    let map = (*registry.map()).clone();
                    match raft.client_write(Command::SetClusterMap(map)).await {
                        Ok(_) => tracing::info!("cluster map committed to the meta group"),
                        Err(e) => {
                            tracing::debug!(error = %e, "committing the cluster map failed; will retry")
                        }
                    }
                    None
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the cluster map");
                    None
                }
            },
            _ => {
                turn = turn.wrapping_add(1);
                from_a_meta_voter(&registry, &peers, turn).await
            }
        };
        if let Some(map) = found {
            adopt(&registry, &storage, map).await;
        }
    }
}

/// Installs `map` if it is newer, and stores it.
pub(crate) async fn adopt(registry: &Registry, storage: &NodeStorage, map: ClusterMap) {
    if !registry.update_map(map) {
        return;
    }
    let map = registry.map();
    tracing::info!(
        version = map.version,
        members = map.members.len(),
        "cluster map updated"
    );
    if let Err(e) = crate::node::store_map(storage, &map).await {
        tracing::warn!(error = %e, "cannot store the new cluster map; a restart starts from the older one");
    }
}

/// The map as the `turn`-th meta voter (in turn) holds it, if it answers.
async fn from_a_meta_voter(registry: &Registry, peers: &PeerPool, turn: usize) -> Option<ClusterMap> {
    let map = registry.map();
    let voters: Vec<_> = map
        .meta_voters
        .iter()
        .filter(|v| **v != registry.node_id())
        .filter_map(|v| map.members.get(v).map(|a| (*v, a.clone())))
        .collect();
    let (id, addr) = voters.get(turn % voters.len().max(1))?;
    match propose::fetch_map(peers, *id, addr, Duration::from_secs(2)).await {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::debug!(node = id, error = %e, "cannot fetch the cluster map");
            None
        }
    }
}
