//! `intake.v1.AdminService`: the cluster at a glance, for `intake status`.

use openraft::async_runtime::WatchReceiver;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use intake_cluster::{Groups, PeerPool};
use intake_core::DistrictTable;
use intake_proto::pb;
use intake_proto::pb::admin_service_server::AdminService;
use intake_storage::NodeId;
use tonic::{Request, Response, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

pub struct AdminServiceImpl {
    node_id: NodeId,
    groups: Groups,
    peers: PeerPool,
    districts: Arc<DistrictTable>,
}

impl AdminServiceImpl {
    pub fn new(node_id: NodeId, groups: Groups, peers: PeerPool, districts: Arc<DistrictTable>) -> Self {
        Self {
            node_id,
            groups,
            peers,
            districts,
        }
    }

    /// Whether `addr` answers a gRPC health check within half a second.
    async fn is_up(&self, id: NodeId, addr: &str) -> bool {
        let Ok(channel) = self.peers.channel(id, addr) else {
            return false;
        };
        let mut client = HealthClient::new(channel);
        let mut req = Request::new(HealthCheckRequest {
            service: String::new(),
        });
        req.set_timeout(Duration::from_millis(500));
        matches!(
            tokio::time::timeout(Duration::from_millis(600), client.check(req)).await,
            Ok(Ok(r)) if r.get_ref().status == tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        )
    }
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    async fn cluster_status(
        &self,
        _request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let mut members: BTreeMap<NodeId, String> = BTreeMap::new();
        let mut shards = Vec::new();
        for (shard, raft) in self.groups.all() {
            let m = raft.metrics().borrow_watched().clone();
            let membership = m.membership_config.membership();
            for (id, node) in membership.nodes() {
                members.insert(*id, node.addr.clone());
            }
            let mut voters: Vec<u64> = membership.voter_ids().collect();
            voters.sort_unstable();
            shards.push(pb::ShardStatus {
                id: shard,
                leader: m.current_leader,
                voters,
                committed: m.local_committed.map_or(0, |l| l.index),
                applied: m.last_applied.map_or(0, |l| l.index),
                term: m.current_term,
                // One shard holds every district until sharding lands.
                districts: self.districts.iter().map(|d| d.code.clone()).collect(),
            });
        }
        let checks = members.iter().map(|(id, addr)| async move {
            let up = *id == self.node_id || self.is_up(*id, addr).await;
            pb::NodeStatus {
                id: *id,
                addr: addr.clone(),
                up,
            }
        });
        let nodes = join_all(checks).await;
        Ok(Response::new(pb::ClusterStatusResponse {
            nodes,
            shards,
            node_id: self.node_id,
        }))
    }
}
