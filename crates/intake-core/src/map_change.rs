//! The steps that change where replicas live, each one entry of the meta
//! group's log, decided against the committed map (issue 16).
//!
//! A replica move is: `BeginMove` (the target becomes a learner in the map,
//! so its node starts the group), the group's own Raft adds it as a learner
//! and catches it up, changes its voters (joint consensus), then
//! `FinishMove` (the map's voters follow the group's). The map never names
//! fewer voters than the group has, so a shard keeps its copies at every
//! step. `Drain` marks a member whose replicas must move away; `Remove`
//! takes a drained member that holds nothing out of the map.
//!
//! Every change is idempotent: applying one already applied answers the map
//! unchanged (`Ok(None)`), so a scheduler that lost its answer (a meta
//! leader change) repeats the step safely.

use serde::{Deserialize, Serialize};

use crate::{ClusterMap, META_GROUP, Move};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MapChange {
    /// Start moving `group`'s replica from `from` (`None`: add one) to `to`.
    BeginMove { group: u32, from: Option<u64>, to: u64 },
    /// The group now has `to` as a voter and not `from`.
    FinishMove { group: u32, from: Option<u64>, to: u64 },
    /// Give up a move that has not changed the group's voters (its target
    /// went away): the learner leaves the map.
    CancelMove { group: u32, to: u64 },
    /// The meta group no longer has drained `id` as a voter (no other node
    /// could take its place; the meta group shrinks instead).
    DropMetaVoter { id: u64 },
    /// Move every replica off `id` before it is removed.
    Drain { id: u64 },
    /// Take drained `id`, which holds nothing any more, out of the map.
    Remove { id: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MapRefusal {
    #[error("node {0} is not a member of the cluster")]
    UnknownNode(u64),
    #[error("group {0} is not on the cluster map")]
    UnknownGroup(u32),
    #[error("node {node} cannot take a replica of group {group}: {why}")]
    BadTarget { group: u32, node: u64, why: String },
    #[error(
        "removing node {id} would leave {left} nodes for {replicas} replicas per shard: add a node first \
         (intake start --join), or remove it with --force if it is gone for good"
    )]
    TooFewNodes { id: u64, left: usize, replicas: usize },
    #[error("node {id} still holds {groups} replicas: it is removed once drained")]
    NotDrained { id: u64, groups: usize },
    #[error("the cluster map has not been committed yet (the cluster is still starting): retry")]
    NoMap,
}

impl ClusterMap {
    /// The most voters any shard has: how many copies a shard keeps.
    pub fn replicas(&self) -> usize {
        self.shards.iter().map(|p| p.voters.len()).max().unwrap_or(0)
    }

    /// Members that may take replicas: not drained away.
    pub fn placeable(&self) -> Vec<u64> {
        self.members
            .keys()
            .copied()
            .filter(|id| !self.draining.contains(id))
            .collect()
    }

    /// The map after `change`, one version on; `Ok(None)` when it is
    /// applied already.
    pub fn change(&self, change: &MapChange) -> Result<Option<ClusterMap>, MapRefusal> {
        let mut next = self.clone();
        let changed = match change {
            MapChange::BeginMove { group, from, to } => next.begin_move(*group, *from, *to)?,
            MapChange::FinishMove { group, from, to } => next.finish_move(*group, *from, *to)?,
            MapChange::CancelMove { group, to } => next.drop_learner(*group, *to),
            MapChange::DropMetaVoter { id } => {
                let before = next.meta_voters.len();
                next.meta_voters.retain(|v| v != id);
                next.meta_voters.len() != before
            }
            MapChange::Drain { id } => next.drain(*id)?,
            MapChange::Remove { id } => next.remove(*id)?,
        };
        if !changed {
            return Ok(None);
        }
        next.version = self.version.saturating_add(1);
        Ok(Some(next))
    }

    fn known_group(&self, group: u32) -> Result<(), MapRefusal> {
        if group == META_GROUP || self.placement(group).is_some() {
            Ok(())
        } else {
            Err(MapRefusal::UnknownGroup(group))
        }
    }

    fn begin_move(&mut self, group: u32, from: Option<u64>, to: u64) -> Result<bool, MapRefusal> {
        self.known_group(group)?;
        if self.learners_of(group).contains(&to) {
            return Ok(false);
        }
        let bad = |why: &str| MapRefusal::BadTarget {
            group,
            node: to,
            why: why.to_string(),
        };
        if !self.members.contains_key(&to) {
            return Err(MapRefusal::UnknownNode(to));
        }
        if self.draining.contains(&to) {
            return Err(bad("it is being drained"));
        }
        let voters = self.voters_of(group);
        if voters.contains(&to) {
            // Finished already, or never needed.
            return Ok(false);
        }
        if from.is_some_and(|f| !voters.contains(&f)) {
            return Err(bad("the replica to move is not a voter of the group"));
        }
        self.learners
            .entry(group)
            .or_default()
            .push(Move { group, from, to });
        Ok(true)
    }

    fn finish_move(&mut self, group: u32, from: Option<u64>, to: u64) -> Result<bool, MapRefusal> {
        self.known_group(group)?;
        let mut voters = self.voters_of(group);
        let done = voters.contains(&to) && from.is_none_or(|f| !voters.contains(&f));
        let had_learner = self.drop_learner(group, to);
        if done {
            return Ok(had_learner);
        }
        match from.and_then(|f| voters.iter().position(|v| *v == f)) {
            // The new replica takes the old one's place, so a preferred
            // leader's place (the first) passes on too.
            Some(i) => voters[i] = to,
            None if !voters.contains(&to) => voters.push(to),
            None => {}
        }
        if group == META_GROUP {
            self.meta_voters = voters;
        } else if let Some(p) = self.shards.iter_mut().find(|p| p.id == group) {
            p.voters = voters;
        }
        Ok(true)
    }

    fn drop_learner(&mut self, group: u32, to: u64) -> bool {
        let Some(l) = self.learners.get_mut(&group) else {
            return false;
        };
        let before = l.len();
        l.retain(|m| m.to != to);
        let changed = l.len() != before;
        if l.is_empty() {
            self.learners.remove(&group);
        }
        changed
    }

    fn drain(&mut self, id: u64) -> Result<bool, MapRefusal> {
        if !self.members.contains_key(&id) {
            return Err(MapRefusal::UnknownNode(id));
        }
        if self.draining.contains(&id) {
            return Ok(false);
        }
        let left = self.placeable().iter().filter(|n| **n != id).count();
        let replicas = self.replicas();
        if left < replicas {
            return Err(MapRefusal::TooFewNodes { id, left, replicas });
        }
        self.draining.insert(id);
        Ok(true)
    }

    fn remove(&mut self, id: u64) -> Result<bool, MapRefusal> {
        if !self.members.contains_key(&id) {
            return Ok(false);
        }
        let groups = self.groups_on(id).len();
        if !self.draining.contains(&id) || groups > 0 {
            return Err(MapRefusal::NotDrained { id, groups });
        }
        self.members.remove(&id);
        self.draining.remove(&id);
        Ok(true)
    }
}

#[cfg(test)]
#[path = "map_change_tests.rs"]
mod tests;
