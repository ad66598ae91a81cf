//! Keeping every node on the newest cluster map.
//!
//! Every initial node computes the same map, so routing works before the
//! meta group has a leader; once it has one, the leader commits the map,
//! and from then on the replicated map is the authority that membership
//! changes (`AddMember`, `ChangeMap`) update. A meta voter reads it from
//! its replica; every node but the meta leader also asks a meta voter for
//! it through the transport's `FetchMap` (a node that joined has no meta
//! replica; one moved out of the meta group hears nothing more from it).
//! Each node stores the newest map it has seen, so that a restart starts
//! from it, and hosts the groups it gives the node (`crate::hosting`). A
//! node the map no longer lists has been removed, and says so.

use std::time::Duration;

use intake_cluster::PeerPool;
use intake_cluster::propose::{self, ProposeReply};
use intake_core::{ClusterMap, Command, CommandResponse, META_GROUP};
use intake_storage::{NodeId, NodeStorage, Raft};
use tokio::sync::watch;

use crate::hosting::GroupHost;
use crate::registry::Registry;

/// How often a node looks for a newer map.
const TICK: Duration = Duration::from_millis(500);

pub async fn publish_and_follow(
    registry: Registry,
    peers: PeerPool,
    storage: NodeStorage,
    host: GroupHost,
    removed: watch::Sender<bool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    // Which member a node that does not lead the meta group asks next.
    let mut turn = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let meta = registry.raft(META_GROUP);
        let local = match (meta.clone(), registry.state_machine(META_GROUP)) {
            (Some(raft), Some(sm)) => match sm.cluster_map() {
                Ok(Some(map)) => Some(map),
                Ok(None) if raft.is_leader() => {
                    let map = registry.map().v1();
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
            _ => None,
        };
        if let Some(map) = local {
            adopt(&registry, &storage, map).await;
        }
        // A follower also asks a peer: a replica removed from the meta group
        // hears no more of its log, and would never learn the rest (its own
        // removal among it).
        if !meta.is_some_and(|r| r.is_leader()) {
            turn = turn.wrapping_add(1);
            if let Some(map) = from_a_meta_voter(&registry, &peers, turn).await {
                adopt(&registry, &storage, map).await;
            }
        }
        let map = registry.map();
        host.reconcile(&map).await;
        if !map.members.contains_key(&registry.node_id()) && !*removed.borrow() {
            tracing::info!(
                node = registry.node_id(),
                version = map.version,
                "this node was removed from the cluster"
            );
            let _ = removed.send(true);
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

/// The map as the `turn`-th other member (meta voters first, in turn)
/// holds it, if it answers: a meta voter reads the committed map, and any
/// other member follows it too, so a map that names meta voters since gone
/// still leads somewhere.
async fn from_a_meta_voter(registry: &Registry, peers: &PeerPool, turn: usize) -> Option<ClusterMap> {
    let map = registry.map();
    let me = registry.node_id();
    let voters = map.meta_voters.iter().copied().filter(|v| *v != me);
    let others = map
        .members
        .keys()
        .copied()
        .filter(|m| *m != me && !map.meta_voters.contains(m));
    // Meta voters twice as often as other members.
    let pool: Vec<NodeId> = voters.clone().chain(voters).chain(others).collect();
    let id = pool.get(turn % pool.len().max(1))?;
    let addr = map.members.get(id)?;
    match propose::fetch_map(peers, *id, addr, Duration::from_secs(2)).await {
        Ok(map) => Some(map),
        Err(e) => {
            tracing::debug!(node = id, error = %e, "cannot fetch the cluster map");
            None
        }
    }
}

/// Commits `command` in the meta group and answers what apply returned:
/// on `local` (this node's meta replica) if it leads, else on the meta
/// voters of `map` through the transport's `Propose`, the leader first once
/// one names it. Errors are the last problem met, for a log line or a
/// retry.
pub async fn write(
    peers: &PeerPool,
    map: &ClusterMap,
    local: Option<&Raft>,
    command: &Command,
) -> Result<CommandResponse, String> {
    if let Some(raft) = local.filter(|r| r.is_leader()) {
        return match propose::on_replica(raft, command.clone()).await {
            ProposeReply::Applied(answer) => Ok(answer),
            ProposeReply::NotLeader { .. } => Err("this node stopped leading the meta group".into()),
            ProposeReply::Failed(e) => Err(e),
        };
    }
    let mut targets: Vec<(NodeId, String)> = map
        .meta_voters
        .iter()
        .filter_map(|v| map.members.get(v).map(|a| (*v, a.clone())))
        .collect();
    let mut last = String::from("the map names no meta voter");
    // Each voter at most once, plus a leader one names.
    let mut budget = targets.len() + 1;
    while let Some((target, addr)) = (budget > 0).then(|| targets.pop()).flatten() {
        budget -= 1;
        match propose::remote(peers, target, &addr, META_GROUP, command, WRITE_CALL).await {
            Ok(ProposeReply::Applied(answer)) => return Ok(answer),
            Ok(ProposeReply::NotLeader { leader: Some(leader) }) => {
                last = format!("node {target} is not the meta leader");
                targets.push(leader);
            }
            Ok(ProposeReply::NotLeader { leader: None }) => {
                last = format!("node {target}: the meta group has no leader yet");
            }
            Ok(ProposeReply::Failed(e)) => last = format!("node {target}: {e}"),
            Err(e) => last = format!("node {target} at {addr}: {e}"),
        }
    }
    Err(last)
}

/// How long one meta write through a peer may take.
const WRITE_CALL: Duration = Duration::from_secs(3);
