//! Refuses to start a node whose data directory is empty while its peers
//! show it held state before (a wiped or lost disk).
//!
//! Such a node has forgotten its votes and the entries it acknowledged. If it
//! started as a voter it could vote twice in one term, or help elect a leader
//! that lacks a committed entry. The evidence asked for is positive: a peer
//! leading a shard reports that it has already replicated entries to this
//! node (`ShardStatus.replicated_to`). A node started for the first time
//! after the others never acknowledged anything, so it is not refused.
//! Peers that are down, or leaders elected since the node went away, give no
//! evidence: the check can miss a wiped node, never refuse a new one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use intake_proto::pb;

use crate::client;

/// True when `dir` holds no sled database, i.e. no state of any cluster.
pub fn is_empty(dir: &Path) -> bool {
    !dir.join("db").exists()
}

/// Asks every other initial member whether it has replicated to `me`.
/// Fails with the operator's message if one has.
/// `peer` is how this node reaches its peers (their CA and its own peer
/// certificate when mutual TLS is on): as a peer, it needs no token.
pub async fn refuse_if_known(
    me: u64,
    dir: &Path,
    peers: &BTreeMap<u64, String>,
    peer: &intake_client::Security,
) -> anyhow::Result<()> {
    for (id, addr) in peers.iter().filter(|(id, _)| **id != me) {
        let Some(view) = local_view(addr, peer).await else {
            continue;
        };
        if let Some(shard) = view
            .shards
            .iter()
            .find(|s| s.voters.contains(&me) && s.replicated_to.contains(&me))
        {
            bail!(
                "node {me}: data directory {} is empty, but node {id} (leading shard {}) has already \
                 replicated entries to node {me}: this node's state was lost (wiped or failed disk). \
                 Starting it as a voter could vote twice in a term or lose acknowledged complaints, so \
                 it will not start. Restore the data directory, or replace the node (README, Durability).",
                dir.display(),
                shard.id
            );
        }
    }
    Ok(())
}

/// The peer's own view of its shards, or `None` if it does not answer soon.
async fn local_view(addr: &str, peer: &intake_client::Security) -> Option<pb::ClusterStatusResponse> {
    let ask = async {
        let mut admin = client::admin(addr, peer).await.ok()?;
        let reply = admin
            .cluster_status(pb::ClusterStatusRequest { local: true })
            .await
            .ok()?;
        Some(reply.into_inner())
    };
    tokio::time::timeout(Duration::from_secs(3), ask)
        .await
        .ok()
        .flatten()
}
