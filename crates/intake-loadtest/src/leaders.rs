//! Which endpoint leads each district's shard, so a run sends complaints
//! where they are proposed, as `intake-client` routes an adapter's.
//!
//! Why: any node takes a complaint and forwards it to its shard's leader,
//! but the forward costs a second gRPC call on two nodes. Spread over the
//! districts with endpoints taken in turn, two of three complaints were
//! forwarded, and that was a third of the servers' CPU per complaint
//! (`benches/compare-peers.sh`, rows `spread` and `spread_leaders`,
//! docs/benchmarks.md). Adapters on `intake-client` route to leaders, so a
//! load test of them should too (`intake load --route-to-leaders`). It is
//! not the default: the scenarios' figures were made with the endpoints in
//! turn, and in an overloaded closed loop (the record day on 2 cores)
//! leader routing moved more of the door work onto the nodes leading the
//! biggest districts, which then refused more as out of CPU.
//!
//! The map comes from `AdminService.ClusterStatus`, asked of the endpoints
//! in turn about once a second. Only leaders whose address is one of the
//! run's endpoints are used: behind NAT or published container ports the
//! nodes' own addresses differ, and the run falls back to the rotation. A
//! hint is only a hint: the rotation still passes over an endpoint that
//! failed, and a retry goes elsewhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use parking_lot::RwLock;

use crate::engine::{auth, channel};

/// How often the map is asked for again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// District code to the index (in the run's endpoints) of its shard's leader.
#[derive(Default)]
pub struct Leaders {
    map: RwLock<HashMap<String, usize>>,
    next: AtomicUsize,
}

impl Leaders {
    /// The endpoint index leading `district`'s shard, when known.
    pub fn of(&self, district: &str) -> Option<usize> {
        self.map.read().get(district).copied()
    }

    /// Asks one endpoint (in turn) for the cluster status and replaces the
    /// map; a failed ask keeps the old map, which the rotation corrects for.
    pub async fn refresh(&self, endpoints: &[String]) {
        if endpoints.is_empty() {
            return;
        }
        let at = &endpoints[self.next.fetch_add(1, Ordering::Relaxed) % endpoints.len()];
        let Ok(ch) = channel(at) else { return };
        let mut admin = AdminServiceClient::with_interceptor(ch, auth());
        let mut req = tonic::Request::new(pb::ClusterStatusRequest { local: false });
        req.set_timeout(Duration::from_secs(2));
        let answer = tokio::time::timeout(Duration::from_secs(3), admin.cluster_status(req)).await;
        if let Ok(Ok(status)) = answer {
            *self.map.write() = from_status(&status.into_inner(), endpoints);
        }
    }

    /// Refreshes every [`REFRESH_EVERY`] (the first after one interval:
    /// the caller has just refreshed) until the task is aborted.
    pub async fn follow(self: Arc<Self>, endpoints: Vec<String>) {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            self.refresh(&endpoints).await;
        }
    }
}

/// `host:port` whatever the caller wrote.
fn bare(addr: &str) -> &str {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/')
}

/// The districts of each led shard, to the index of the leader's address
/// among `endpoints`; leaders at addresses not among them are left out.
pub fn from_status(status: &pb::ClusterStatusResponse, endpoints: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for shard in &status.shards {
        let Some(leader) = shard.leader else { continue };
        let Some(node) = status.nodes.iter().find(|n| n.id == leader) else {
            continue;
        };
        let Some(i) = endpoints.iter().position(|e| bare(e) == bare(&node.addr)) else {
            continue;
        };
        for d in &shard.districts {
            out.insert(d.clone(), i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: u32, leader: Option<u64>, districts: &[&str]) -> pb::ShardStatus {
        pb::ShardStatus {
            id,
            leader,
            districts: districts.iter().map(|d| d.to_string()).collect(),
            ..Default::default()
        }
    }

    fn node(id: u64, addr: &str) -> pb::NodeStatus {
        pb::NodeStatus {
            id,
            addr: addr.into(),
            up: true,
            ..Default::default()
        }
    }

    #[test]
    fn maps_each_district_to_its_leaders_endpoint_and_skips_the_unknown() {
        let status = pb::ClusterStatusResponse {
            nodes: vec![
                node(1, "127.0.0.1:7001"),
                node(2, "http://127.0.0.1:7002/"),
                node(3, "node3:7001"),
            ],
            shards: vec![
                shard(0, Some(2), &["110105", "110108"]),
                shard(1, Some(1), &["110101"]),
                // Led by a node whose address is not among the endpoints.
                shard(2, Some(3), &["110102"]),
                // No leader now.
                shard(3, None, &["110106"]),
            ],
            node_id: 1,
            ..Default::default()
        };
        let endpoints = vec!["127.0.0.1:7001".to_string(), "127.0.0.1:7002".to_string()];
        let map = from_status(&status, &endpoints);
        assert_eq!(map.get("110105"), Some(&1));
        assert_eq!(map.get("110108"), Some(&1));
        assert_eq!(map.get("110101"), Some(&0));
        assert_eq!(map.get("110102"), None);
        assert_eq!(map.get("110106"), None);
    }
}
