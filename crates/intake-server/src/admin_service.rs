//! `intake.v1.AdminService`: the cluster at a glance, for `intake status`.
//!
//! The answering node asks every member for its own view of the shards it
//! hosts (`local = true`), concurrently and briefly, and keeps for each shard
//! the view of its leader (or the most advanced one, while there is none).
//! A member that does not answer is reported down.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::future::join_all;
use intake_cluster::PeerPool;
use intake_core::{ClusterMap, Command, CommandResponse, META_GROUP, MapChange, MapRefusal};
use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_proto::pb::admin_service_server::AdminService;
use intake_storage::NodeId;
use openraft::async_runtime::WatchReceiver;
use tonic::{Request, Response, Status};

use crate::alert_stream::AlertStream;
use crate::registry::Registry;
use crate::surge_watch::SurgeWatch;

pub struct AdminServiceImpl {
    node_id: NodeId,
    registry: Registry,
    peers: PeerPool,
    surges: SurgeWatch,
}

impl AdminServiceImpl {
    pub fn new(node_id: NodeId, registry: Registry, peers: PeerPool, surges: SurgeWatch) -> Self {
        Self {
            node_id,
            registry,
            peers,
            surges,
        }
    }

    /// This node's view of the shards it hosts.
    fn local_view(&self) -> Vec<pb::ShardStatus> {
        let map = self.registry.map();
        let mut out = Vec::new();
        for shard in map.shards_on(self.node_id) {
            let Some(raft) = self.registry.raft(shard) else {
                continue;
            };
            let m = raft.metrics().borrow_watched().clone();
            let mut voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            voters.sort_unstable();
            let replicated_to = m
                .replication
                .as_ref()
                .map(|r| {
                    r.iter()
                        .filter(|(_, matched)| matched.is_some())
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default();
            out.push(pb::ShardStatus {
                incidents: self.incidents(shard),
                replicated_to,
                id: shard,
                leader: m.current_leader,
                voters,
                committed: m.local_committed.map_or(0, |l| l.index),
                applied: m.last_applied.map_or(0, |l| l.index),
                term: m.current_term,
                districts: map.districts_of(shard),
                reported_by: self.node_id,
                dispatch_lag: self.registry.state_machine(shard).map(|sm| {
                    let (state, seconds) = crate::dispatcher::lag(&sm);
                    let report = self.registry.dispatch_board().report(shard);
                    pb::DispatchLag {
                        tickets: state.lag(),
                        seconds,
                        delivered: state.delivered,
                        failures: report.failures,
                        state: report.state,
                    }
                }),
            });
        }
        out
    }

    /// The shard's largest open incidents, from this replica.
    fn incidents(&self, shard: u32) -> Vec<pb::Incident> {
        let Some(sm) = self.registry.state_machine(shard) else {
            return Vec::new();
        };
        let since = crate::convert::now_millis() - intake_core::incident::WINDOW_MS;
        match sm.largest_incidents(since, 5) {
            Ok(list) => list
                .into_iter()
                .map(|i| pb::Incident {
                    id: i.id.to_string(),
                    district: i.district,
                    category: i.category,
                    complaints: i.count,
                    first_at: Some(crate::convert::millis_to_timestamp(i.first_at)),
                    last_at: Some(crate::convert::millis_to_timestamp(i.last_at)),
                })
                .collect(),
            Err(e) => {
                tracing::warn!(shard, error = %e, "cannot read the shard's incidents");
                Vec::new()
            }
        }
    }

    async fn peer_view(&self, id: NodeId, addr: &str) -> Option<Vec<pb::ShardStatus>> {
        let channel = self.peers.forward_channel(id, addr).ok()?;
        let mut client = AdminServiceClient::new(channel);
        let mut req = Request::new(pb::ClusterStatusRequest { local: true });
        req.set_timeout(Duration::from_millis(800));
        crate::auth::attach_caller_token(&mut req);
        let call = tokio::time::timeout(Duration::from_millis(1000), client.cluster_status(req));
        match call.await {
            Ok(Ok(r)) => Some(r.into_inner().shards),
            _ => None,
        }
    }
}

/// A member's state for `intake node list`: being removed, receiving its
/// first replicas, else whether it answered.
fn node_state(map: &ClusterMap, id: NodeId, answered: bool) -> &'static str {
    if map.draining.contains(&id) {
        "draining"
    } else if map.shards_on(id).is_empty()
        && !map.meta_voters.contains(&id)
        && map.moves().iter().any(|m| m.to == id)
    {
        "joining"
    } else if answered {
        "up"
    } else {
        "down"
    }
}

/// The leader's own report wins; otherwise the most advanced.
fn better(a: &pb::ShardStatus, b: &pb::ShardStatus) -> bool {
    let authoritative = |s: &pb::ShardStatus| s.leader == Some(s.reported_by);
    (authoritative(a), a.term, a.committed) > (authoritative(b), b.term, b.committed)
}

#[tonic::async_trait]
impl AdminService for AdminServiceImpl {
    type WatchAlertsStream = AlertStream;

    async fn watch_alerts(
        &self,
        request: Request<pb::WatchAlertsRequest>,
    ) -> Result<Response<AlertStream>, Status> {
        let follow = request.get_ref().follow;
        Ok(Response::new(crate::alert_stream::watch(
            &self.surges,
            self.node_id,
            follow,
        )))
    }

    async fn cluster_status(
        &self,
        request: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        if request.get_ref().local {
            return Ok(Response::new(pb::ClusterStatusResponse {
                shards: self.local_view(),
                node_id: self.node_id,
                map_version: self.registry.map().version,
                ..Default::default()
            }));
        }
        Ok(Response::new(self.cluster_view().await))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::RemoveNodeResponse>, Status> {
        let req = request.into_inner();
        let view = self.cluster_view().await;
        let map = self.registry.map();
        if !map.members.contains_key(&req.id) {
            return Err(Status::not_found(format!(
                "node {} is not a member of the cluster",
                req.id
            )));
        }
        // Replicas of a node that is down can only be rebuilt on the live
        // nodes left: there must be enough of them for every shard's copies.
        let up: BTreeSet<NodeId> = view.nodes.iter().filter(|n| n.up).map(|n| n.id).collect();
        // Without --force a node that does not answer is refused: it may be
        // a brief outage, and a removal is for good. With it, the node is
        // gone: its replicas are rebuilt from the surviving copies, which
        // needs each of its shards to have a live majority.
        if !req.force && !up.contains(&req.id) {
            return Err(Status::failed_precondition(format!(
                "node {} does not answer: if it is gone for good, remove it with --force \
                 (its replicas are rebuilt from the surviving copies); otherwise bring it back first",
                req.id
            )));
        }
        if req.force {
            for p in map.shards.iter().filter(|p| p.voters.contains(&req.id)) {
                let live = p.voters.iter().filter(|v| up.contains(v)).count();
                if live * 2 <= p.voters.len() {
                    return Err(Status::failed_precondition(format!(
                        "shard {} has {live} live replicas of {}: without a majority its committed \
                         complaints cannot be copied elsewhere; bring its nodes back first",
                        p.id,
                        p.voters.len()
                    )));
                }
            }
        }
        let live_left = map
            .placeable()
            .into_iter()
            .filter(|n| *n != req.id && up.contains(n))
            .count();
        if live_left < map.replicas() {
            return Err(Status::failed_precondition(format!(
                "removing node {} would leave {live_left} live nodes to hold {} replicas of each shard: \
                 add a node first (intake start --join), or bring the down nodes back",
                req.id,
                map.replicas()
            )));
        }
        let command = Command::ChangeMap(MapChange::Drain { id: req.id });
        let meta = self.registry.raft(META_GROUP);
        match crate::meta::write(&self.peers, &map, meta.as_ref(), &command).await {
            Ok(CommandResponse::MapChanged(Ok(m))) => {
                tracing::info!(node = req.id, version = m.version, "node draining, to be removed");
                Ok(Response::new(pb::RemoveNodeResponse {
                    map_version: m.version,
                    replicas_to_move: u32::try_from(m.groups_on(req.id).len()).unwrap_or(u32::MAX),
                }))
            }
            Ok(CommandResponse::MapChanged(Err(MapRefusal::UnknownNode(id)))) => Err(Status::not_found(
                format!("node {id} is not a member of the cluster"),
            )),
            Ok(CommandResponse::MapChanged(Err(refusal))) => {
                Err(Status::failed_precondition(refusal.to_string()))
            }
            Ok(other) => Err(Status::unavailable(format!(
                "the meta group answered {other:?}; retry"
            ))),
            Err(problem) => Err(Status::unavailable(format!(
                "cannot reach the meta group's leader ({problem}); retry"
            ))),
        }
    }
}

impl AdminServiceImpl {
    /// The whole cluster as this node sees it: every member asked for its
    /// own view, the best view of each shard kept.
    pub async fn cluster_view(&self) -> pb::ClusterStatusResponse {
        // A member added a moment ago is listed at once: a meta voter reads
        // the committed map itself rather than wait for its next look.
        if let Some(Ok(Some(newer))) = self.registry.state_machine(META_GROUP).map(|sm| sm.cluster_map()) {
            self.registry.update_map(newer);
        }
        let map = self.registry.map();
        let views = join_all(map.members.iter().map(|(id, addr)| async move {
            let view = if *id == self.node_id {
                Some(self.local_view())
            } else {
                self.peer_view(*id, addr).await
            };
            (*id, addr.clone(), view)
        }))
        .await;

        let mut nodes: Vec<pb::NodeStatus> = views
            .iter()
            .map(|(id, addr, view)| pb::NodeStatus {
                id: *id,
                addr: addr.clone(),
                up: view.is_some(),
                state: node_state(&map, *id, view.is_some()).to_string(),
                replicas: u32::try_from(map.shards_on(*id).len()).unwrap_or(u32::MAX),
                leads: 0,
            })
            .collect();
        let mut shards = Vec::new();
        for p in map.shards.iter().filter(|p| p.id != META_GROUP) {
            let best = views
                .iter()
                .filter_map(|(_, _, v)| v.as_ref())
                .flatten()
                .filter(|s| s.id == p.id)
                .fold(None::<&pb::ShardStatus>, |acc, s| match acc {
                    Some(a) if !better(s, a) => Some(a),
                    _ => Some(s),
                });
            shards.push(match best {
                Some(s) => pb::ShardStatus {
                    districts: map.districts_of(p.id),
                    ..s.clone()
                },
                // No replica answered: what the map says, and no leader.
                None => pb::ShardStatus {
                    id: p.id,
                    leader: None,
                    voters: p.voters.clone(),
                    districts: map.districts_of(p.id),
                    ..Default::default()
                },
            });
        }
        for n in &mut nodes {
            let leads = shards
                .iter()
                .filter(|s: &&pb::ShardStatus| s.leader == Some(n.id))
                .count();
            n.leads = u32::try_from(leads).unwrap_or(u32::MAX);
        }
        pb::ClusterStatusResponse {
            nodes,
            shards,
            node_id: self.node_id,
            moves: map
                .moves()
                .into_iter()
                .map(|m| pb::ReplicaMove {
                    group: m.group,
                    from: m.from,
                    to: m.to,
                })
                .collect(),
            map_version: map.version,
        }
    }
}
