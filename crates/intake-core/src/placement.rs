//! What the scheduler should do next, from the map alone (issue 16 item 2):
//! which replicas to move and which leaderships to transfer. Pure, so the
//! rules are tested without a cluster; the meta leader's scheduler
//! (`intake-server`'s `scheduler.rs`) carries the moves out.
//!
//! Order of need: the meta group first (a drained meta voter is replaced,
//! and the meta group grows to [`MAX_META_VOTERS`] as nodes join), then
//! replicas on drained nodes, then balance — every placeable node holding
//! the same number of replicas, give or take one. A group is in at most one
//! move at a time, and at most `limit` moves run at once, so rebalancing
//! never takes more than a bounded share of the cluster's work.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster_map::MAX_META_VOTERS;
use crate::{ClusterMap, META_GROUP, Move};

/// Up to `limit` moves (counting those in progress) to start now. `down`
/// nodes receive nothing, and balance does not move their replicas either:
/// a node that is briefly down should not cost a round of moves.
pub fn next_moves(map: &ClusterMap, down: &BTreeSet<u64>, limit: usize) -> Vec<Move> {
    let in_progress = map.moves();
    let mut slots = limit.saturating_sub(in_progress.len());
    let mut busy: BTreeSet<u32> = in_progress.iter().map(|m| m.group).collect();
    let targets: Vec<u64> = map
        .placeable()
        .into_iter()
        .filter(|n| !down.contains(n))
        .collect();
    let mut load: BTreeMap<u64, usize> = targets.iter().map(|n| (*n, 0)).collect();
    for p in &map.shards {
        for n in p.voters.iter().chain(&map.learners_of(p.id)) {
            if let Some(l) = load.get_mut(n) {
                *l += 1;
            }
        }
    }
    let mut out = Vec::new();
    let least_loaded = |load: &BTreeMap<u64, usize>, exclude: &[u64]| {
        load.iter()
            .filter(|(n, _)| !exclude.contains(n))
            .min_by_key(|(n, l)| (**l, **n))
            .map(|(n, _)| *n)
    };

    // The meta group: replace a drained voter, or grow towards five.
    if slots > 0 && !busy.contains(&META_GROUP) {
        let voters = map.meta_voters.clone();
        let spare: Vec<u64> = targets.iter().copied().filter(|n| !voters.contains(n)).collect();
        let drained = voters.iter().copied().find(|v| map.draining.contains(v));
        let wanted = MAX_META_VOTERS.min(targets.len());
        let m = match (drained, spare.first()) {
            (Some(from), Some(to)) => Some(Move {
                group: META_GROUP,
                from: Some(from),
                to: *to,
            }),
            (None, Some(to)) if voters.len() < wanted => Some(Move {
                group: META_GROUP,
                from: None,
                to: *to,
            }),
            _ => None,
        };
        if let Some(m) = m {
            busy.insert(META_GROUP);
            out.push(m);
            slots -= 1;
        }
    }

    // Replicas on drained nodes.
    for p in &map.shards {
        if slots == 0 {
            break;
        }
        if busy.contains(&p.id) {
            continue;
        }
        let Some(from) = p.voters.iter().copied().find(|v| map.draining.contains(v)) else {
            continue;
        };
        if let Some(to) = least_loaded(&load, &p.voters) {
            out.push(Move {
                group: p.id,
                from: Some(from),
                to,
            });
            busy.insert(p.id);
            *load.entry(to).or_default() += 1;
            slots -= 1;
        }
    }

    // Balance: from the most loaded node to the least, while they differ by
    // more than one.
    while slots > 0 {
        let Some((&most, &high)) = load.iter().max_by_key(|(n, l)| (**l, std::cmp::Reverse(**n))) else {
            break;
        };
        let Some(least) = least_loaded(&load, &[]) else {
            break;
        };
        if high <= load[&least] + 1 {
            break;
        }
        let Some(p) = map
            .shards
            .iter()
            .find(|p| !busy.contains(&p.id) && p.voters.contains(&most) && !p.voters.contains(&least))
        else {
            break;
        };
        out.push(Move {
            group: p.id,
            from: Some(most),
            to: least,
        });
        busy.insert(p.id);
        *load.entry(most).or_default() -= 1;
        *load.entry(least).or_default() += 1;
        slots -= 1;
    }
    out
}

/// A drained meta voter to take out of the meta group without a
/// replacement: when no placeable node outside the meta group is left to
/// take its place (and it is not the last voter).
pub fn meta_voter_to_drop(map: &ClusterMap, down: &BTreeSet<u64>) -> Option<u64> {
    if map.learners.contains_key(&META_GROUP) || map.meta_voters.len() <= 1 {
        return None;
    }
    let spare = map
        .placeable()
        .into_iter()
        .any(|n| !down.contains(&n) && !map.meta_voters.contains(&n));
    if spare {
        return None;
    }
    map.meta_voters.iter().copied().find(|v| map.draining.contains(v))
}

/// One leadership transfer to make now, as (shard, from, to), given each
/// shard's current leader: off a drained node first, else from a node that
/// leads at least two more shards than a voter of one of them.
pub fn next_transfer(
    map: &ClusterMap,
    leaders: &BTreeMap<u32, u64>,
    down: &BTreeSet<u64>,
) -> Option<(u32, u64, u64)> {
    let busy: BTreeSet<u32> = map.moves().iter().map(|m| m.group).collect();
    let mut leads: BTreeMap<u64, usize> = map
        .placeable()
        .into_iter()
        .filter(|n| !down.contains(n))
        .map(|n| (n, 0))
        .collect();
    for l in leaders.values() {
        if let Some(c) = leads.get_mut(l) {
            *c += 1;
        }
    }
    let candidates = |shard: u32, from: u64| -> Option<u64> {
        map.voters_of(shard)
            .into_iter()
            .filter(|v| *v != from)
            .filter_map(|v| leads.get(&v).map(|c| (*c, v)))
            .min()
            .map(|(_, v)| v)
    };
    for (&shard, &leader) in leaders {
        if map.draining.contains(&leader)
            && !busy.contains(&shard)
            && let Some(to) = candidates(shard, leader)
        {
            return Some((shard, leader, to));
        }
    }
    for (&shard, &leader) in leaders {
        if busy.contains(&shard) {
            continue;
        }
        let Some(&mine) = leads.get(&leader) else { continue };
        if let Some(to) = candidates(shard, leader)
            && leads.get(&to).is_some_and(|c| c + 2 <= mine)
        {
            return Some((shard, leader, to));
        }
    }
    None
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
