//! The meta leader's scheduler (issue 16 items 2 and 3), in the manner of
//! TiKV's placement driver: once a second, on the node that leads the meta
//! group only, it carries on the replica moves in progress, starts new ones
//! by `intake_core::placement` (replace drained replicas, then even out
//! replicas per node) up to `--max-moves` at once, removes drained nodes
//! that hold nothing, and evens out leaderships, one transfer at a time.
//!
//! A move is a fixed sequence of idempotent steps, each re-checked every
//! second, so a new meta leader resumes a move where the old one left it:
//! `BeginMove` committed (the target hosts a learner), then on the group's
//! leader `AddLearner`, `CaughtUp`, `SetVoters` (joint consensus), then
//! `FinishMove` committed. Every step keeps the group's copies.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use intake_cluster::PeerPool;
use intake_cluster::replicas::{self, ReplicaOp, ReplicaReply};
use intake_core::placement::{meta_voter_to_drop, next_moves, next_transfer};
use intake_core::{ClusterMap, Command, CommandResponse, META_GROUP, MapChange, Move};
use intake_storage::{NodeId, Raft, ShardId};
use openraft::async_runtime::WatchReceiver;
use tokio::sync::watch;

use crate::admin_service::AdminServiceImpl;
use crate::registry::Registry;

/// How often the scheduler looks.
const TICK: Duration = Duration::from_secs(1);
/// How often the scheduler looks while nothing moves and the map stays.
const IDLE_LOOK: Duration = Duration::from_secs(5);
/// How long one step on a group's leader may take.
const STEP: Duration = Duration::from_secs(10);

pub async fn run(
    registry: Registry,
    peers: PeerPool,
    admin: Arc<AdminServiceImpl>,
    max_moves: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_look: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let Some(meta) = registry.raft(META_GROUP).filter(|r| r.is_leader()) else {
            last_look = None;
            continue;
        };
        let Some(Ok(Some(map))) = registry.state_machine(META_GROUP).map(|sm| sm.cluster_map()) else {
            continue;
        };
        // Asking every member for its view costs them all a little: every
        // second while the map is changing, else every few seconds.
        let busy = !map.moves().is_empty() || !map.draining.is_empty();
        if !busy && last_look.is_some_and(|(v, at)| v == map.version && at.elapsed() < IDLE_LOOK) {
            continue;
        }
        last_look = Some((map.version, tokio::time::Instant::now()));
        let view = admin.cluster_view().await;
        let down: BTreeSet<NodeId> = view.nodes.iter().filter(|n| !n.up).map(|n| n.id).collect();
        let leaders: BTreeMap<ShardId, NodeId> = view
            .shards
            .iter()
            .filter_map(|s| Some((s.id, s.leader?)))
            .collect();
        // Each group's voters as its replicas report them (the meta group's
        // from this node's own replica, which leads it).
        let mut voters: BTreeMap<ShardId, BTreeSet<NodeId>> = view
            .shards
            .iter()
            .map(|s| (s.id, s.voters.iter().copied().collect()))
            .collect();
        voters.insert(META_GROUP, {
            let m = meta.metrics();
            let m = m.borrow_watched();
            m.membership_config.membership().voter_ids().collect()
        });
        let scheduler = Scheduler {
            peers: &peers,
            meta: &meta,
            map: &map,
            leaders: &leaders,
            voters: &voters,
        };
        scheduler.step(&down, max_moves).await;
    }
}

struct Scheduler<'a> {
    peers: &'a PeerPool,
    meta: &'a Raft,
    map: &'a ClusterMap,
    leaders: &'a BTreeMap<ShardId, NodeId>,
    /// Each group's voters as its Raft membership has them.
    voters: &'a BTreeMap<ShardId, BTreeSet<NodeId>>,
}

impl Scheduler<'_> {
    async fn step(&self, down: &BTreeSet<NodeId>, max_moves: usize) {
        let moving = self.map.moves();
        for mv in &moving {
            let votes = self.voters.get(&mv.group).is_some_and(|v| v.contains(&mv.to));
            if !votes && (down.contains(&mv.to) || self.map.draining.contains(&mv.to)) {
                // Its target went away before it could vote: give the move
                // up (the planner finds another target).
                self.give_up(mv).await;
                continue;
            }
            if let Err(why) = self.drive(mv, votes).await {
                tracing::debug!(?mv, %why, "replica move waits");
            }
        }
        if let Some(id) = meta_voter_to_drop(self.map, down) {
            self.shrink_meta(id).await;
            return;
        }
        for mv in next_moves(self.map, down, max_moves) {
            tracing::info!(group = mv.group, from = ?mv.from, to = mv.to, "replica move starts");
            self.commit(MapChange::BeginMove {
                group: mv.group,
                from: mv.from,
                to: mv.to,
            })
            .await;
        }
        for id in self
            .map
            .draining
            .iter()
            .filter(|id| self.map.groups_on(**id).is_empty())
        {
            tracing::info!(node = id, "node drained: removing it from the map");
            self.commit(MapChange::Remove { id: *id }).await;
        }
        if moving.is_empty()
            && let Some((shard, from, to)) = next_transfer(self.map, self.leaders, down)
        {
            tracing::info!(shard, from, to, "moving leadership to even out leaders");
            if let Err(why) = self.on_leader(shard, ReplicaOp::TransferLeader { to }).await {
                tracing::debug!(shard, %why, "leadership transfer not made");
            }
        }
    }

    /// Drops a move whose target does not vote and is down or drained: the
    /// group stops replicating to it, and the map forgets the learner.
    async fn give_up(&self, mv: &Move) {
        tracing::info!(
            group = mv.group,
            to = mv.to,
            "replica move given up: its target is down or drained"
        );
        match self
            .on_leader(mv.group, ReplicaOp::DropLearner { id: mv.to })
            .await
        {
            Ok(ReplicaReply::Done) => {
                self.commit(MapChange::CancelMove {
                    group: mv.group,
                    to: mv.to,
                })
                .await
            }
            other => tracing::debug!(?mv, ?other, "learner not dropped yet"),
        }
    }

    /// Takes `mv` one step further, as far as it can go now; `Err` says
    /// what it waits for. `votes`: the target is a voter of the group
    /// already (only the map is behind).
    async fn drive(&self, mv: &Move, votes: bool) -> Result<(), String> {
        let addr = |id: NodeId| {
            self.map
                .members
                .get(&id)
                .cloned()
                .ok_or_else(|| format!("node {id} is not on the map"))
        };
        let group = mv.group;
        if !votes {
            self.expect_done(
                group,
                ReplicaOp::AddLearner {
                    id: mv.to,
                    addr: addr(mv.to)?,
                },
            )
            .await?;
            match self.on_leader(group, ReplicaOp::CaughtUp { id: mv.to }).await? {
                ReplicaReply::CaughtUp(true) => {}
                other => return Err(format!("learner {} catching up ({other:?})", mv.to)),
            }
        }
        let mut voters = BTreeMap::new();
        for v in self
            .map
            .voters_of(group)
            .into_iter()
            .filter(|v| Some(*v) != mv.from)
        {
            voters.insert(v, addr(v)?);
        }
        voters.insert(mv.to, addr(mv.to)?);
        self.expect_done(group, ReplicaOp::SetVoters { voters }).await?;
        tracing::info!(group, from = ?mv.from, to = mv.to, "replica move done");
        self.commit(MapChange::FinishMove {
            group,
            from: mv.from,
            to: mv.to,
        })
        .await;
        Ok(())
    }

    /// Takes drained `id` out of the meta group, where no node is left to
    /// take its seat.
    async fn shrink_meta(&self, id: NodeId) {
        let voters: BTreeMap<NodeId, String> = self
            .map
            .meta_voters
            .iter()
            .filter(|v| **v != id)
            .filter_map(|v| self.map.members.get(v).map(|a| (*v, a.clone())))
            .collect();
        match replicas::on_replica(self.meta, ReplicaOp::SetVoters { voters }).await {
            ReplicaReply::Done => self.commit(MapChange::DropMetaVoter { id }).await,
            other => tracing::debug!(node = id, ?other, "meta group not shrunk yet"),
        }
    }

    async fn expect_done(&self, group: ShardId, op: ReplicaOp) -> Result<(), String> {
        match self.on_leader(group, op).await? {
            ReplicaReply::Done => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }

    /// Carries `op` out on `group`'s leader: this node's meta replica for
    /// the meta group, else the leader the cluster reports (or the one a
    /// "not the leader" answer names).
    async fn on_leader(&self, group: ShardId, op: ReplicaOp) -> Result<ReplicaReply, String> {
        if group == META_GROUP {
            return Ok(replicas::on_replica(self.meta, op).await);
        }
        let leader = *self
            .leaders
            .get(&group)
            .ok_or_else(|| format!("shard {group} has no leader now"))?;
        let mut target = (
            leader,
            self.map
                .members
                .get(&leader)
                .cloned()
                .ok_or_else(|| format!("leader {leader} is not on the map"))?,
        );
        for _ in 0..2 {
            let reply = replicas::remote(self.peers, target.0, &target.1, group, &op, STEP)
                .await
                .map_err(|e| format!("node {}: {e}", target.0))?;
            match reply {
                ReplicaReply::NotLeader { leader: Some(l) } if l.0 != target.0 => target = l,
                other => return Ok(other),
            }
        }
        Err(format!("shard {group}: no leader answered"))
    }

    /// Commits one map change on this node's meta replica (it leads).
    async fn commit(&self, change: MapChange) {
        match self.meta.client_write(Command::ChangeMap(change.clone())).await {
            Ok(r) => match r.data {
                CommandResponse::MapChanged(Ok(_)) => {}
                other => tracing::info!(?change, answer = ?other, "map change not made"),
            },
            Err(e) => tracing::debug!(?change, error = %e, "map change not committed; retried next round"),
        }
    }
}
