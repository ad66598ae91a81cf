//! The meta group's one job so far: make the bootstrap cluster map the
//! replicated one, and keep every meta voter's router on the newest map.
//!
//! Every initial node computes the same map, so routing works before the
//! meta group has a leader; once it has one, the leader commits the map,
//! and from then on the replicated map is the authority that later
//! membership changes will update.

use std::time::Duration;

use intake_core::{Command, META_GROUP};
use tokio::sync::watch;

use crate::registry::Registry;

pub async fn publish_and_follow(registry: Registry, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (Some(raft), Some(sm)) = (registry.raft(META_GROUP), registry.state_machine(META_GROUP)) else {
            return;
        };
        match sm.cluster_map() {
            Ok(Some(map)) => {
                if registry.update_map(map) {
                    tracing::info!(version = registry.map().version, "cluster map updated");
                }
            }
            Ok(None) if raft.is_leader() => {
                let map = (*registry.map()).clone();
                match raft.client_write(Command::SetClusterMap(map)).await {
                    Ok(_) => tracing::info!("cluster map committed to the meta group"),
                    Err(e) => tracing::debug!(error = %e, "committing the cluster map failed; will retry"),
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "cannot read the cluster map"),
        }
    }
}
