//! The planner, run to a fixed point the way the scheduler runs it: start
//! what it plans, finish what is in progress, ask again.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::{DistrictTable, MapChange};

fn map(n: u64) -> ClusterMap {
    let members: BTreeMap<u64, String> = (1..=n).map(|i| (i, format!("h:{i}"))).collect();
    ClusterMap::bootstrap(&members, 8, 3, &DistrictTable::beijing()).unwrap()
}

/// Plans and carries out moves (`limit` at once) until there are none;
/// returns the map and how many rounds it took.
fn settle(mut m: ClusterMap, down: &BTreeSet<u64>, limit: usize) -> (ClusterMap, usize) {
    for round in 0..200 {
        let plan = next_moves(&m, down, limit);
        assert!(m.moves().len() + plan.len() <= limit.max(m.moves().len()));
        let groups: BTreeSet<u32> = plan.iter().map(|p| p.group).collect();
        assert_eq!(groups.len(), plan.len(), "one move per group: {plan:?}");
        if let Some(id) = meta_voter_to_drop(&m, down) {
            m = m.change(&MapChange::DropMetaVoter { id }).unwrap().unwrap();
            continue;
        }
        if plan.is_empty() && m.moves().is_empty() {
            return (m, round);
        }
        for mv in plan {
            m = step(
                &m,
                MapChange::BeginMove {
                    group: mv.group,
                    from: mv.from,
                    to: mv.to,
                },
            );
        }
        for mv in m.moves() {
            m = step(
                &m,
                MapChange::FinishMove {
                    group: mv.group,
                    from: mv.from,
                    to: mv.to,
                },
            );
        }
        check_copies(&m);
    }
    panic!("no fixed point: {m:?}");
}

/// `m` after `change`, which must change it.
fn step(m: &ClusterMap, change: MapChange) -> ClusterMap {
    m.change(&change).unwrap().unwrap()
}

fn check_copies(m: &ClusterMap) {
    for p in &m.shards {
        let distinct: BTreeSet<u64> = p.voters.iter().copied().collect();
        assert_eq!((p.voters.len(), distinct.len()), (3, 3), "{p:?}");
        assert!(p.voters.iter().all(|v| m.members.contains_key(v)));
    }
}

fn held(m: &ClusterMap) -> BTreeMap<u64, usize> {
    m.members.keys().map(|n| (*n, m.shards_on(*n).len())).collect()
}

fn joined(mut m: ClusterMap, ids: &[u64]) -> ClusterMap {
    for id in ids {
        m = m.add_member(*id, &format!("h:{id}")).unwrap().unwrap();
    }
    m
}

#[test]
fn a_balanced_cluster_needs_no_moves() {
    let m = map(3);
    assert!(next_moves(&m, &BTreeSet::new(), 4).is_empty());
}

#[test]
fn growing_three_to_five_spreads_replicas_and_the_meta_group() {
    let m = joined(map(3), &[4, 5]);
    let (m, _) = settle(m, &BTreeSet::new(), 2);
    let h = held(&m);
    assert!(h.values().all(|k| (4..=5).contains(k)), "{h:?}");
    assert_eq!(h.values().sum::<usize>(), 24);
    assert_eq!(m.meta_voters.len(), 5);
}

#[test]
fn at_most_limit_moves_run_at_once() {
    let m = joined(map(3), &[4, 5]);
    for limit in [1, 2, 3] {
        let plan = next_moves(&m, &BTreeSet::new(), limit);
        assert_eq!(plan.len(), limit, "{plan:?}");
    }
    // With one in progress, a limit of one starts nothing more.
    let mv = next_moves(&m, &BTreeSet::new(), 1)[0];
    let busy = m
        .change(&MapChange::BeginMove {
            group: mv.group,
            from: mv.from,
            to: mv.to,
        })
        .unwrap()
        .unwrap();
    assert!(next_moves(&busy, &BTreeSet::new(), 1).is_empty());
    assert_eq!(next_moves(&busy, &BTreeSet::new(), 2).len(), 1);
}

#[test]
fn draining_two_of_five_moves_everything_off_them() {
    let (m, _) = settle(joined(map(3), &[4, 5]), &BTreeSet::new(), 2);
    let mut m = m.change(&MapChange::Drain { id: 1 }).unwrap().unwrap();
    m = m.change(&MapChange::Drain { id: 2 }).unwrap().unwrap();
    let (m, _) = settle(m, &BTreeSet::new(), 2);
    assert!(m.groups_on(1).is_empty() && m.groups_on(2).is_empty(), "{m:?}");
    assert_eq!(held(&m).into_iter().filter(|(_, k)| *k == 8).count(), 3);
    assert!(!m.meta_voters.contains(&1) && !m.meta_voters.contains(&2));
    assert_eq!(m.meta_voters.len(), 3);
}

#[test]
fn nothing_moves_onto_a_down_node() {
    let m = joined(map(3), &[4]);
    let down = BTreeSet::from([4]);
    assert!(next_moves(&m, &down, 4).is_empty());
}

#[test]
fn leadership_leaves_a_drained_node_and_evens_out() {
    let m = joined(map(3), &[4]);
    let leaders: BTreeMap<u32, u64> = m.shards.iter().map(|p| (p.id, 1)).collect();
    let (shard, from, to) = next_transfer(&m, &leaders, &BTreeSet::new()).unwrap();
    assert_eq!(from, 1);
    assert!(m.voters_of(shard).contains(&to) && to != 1);

    // Simulate transfers to a fixed point: leads differ by at most one.
    let mut leaders = leaders;
    for _ in 0..50 {
        let Some((shard, _, to)) = next_transfer(&m, &leaders, &BTreeSet::new()) else {
            break;
        };
        leaders.insert(shard, to);
    }
    let mut leads: BTreeMap<u64, usize> = BTreeMap::new();
    for l in leaders.values() {
        *leads.entry(*l).or_default() += 1;
    }
    let (lo, hi) = (leads.values().min().unwrap(), leads.values().max().unwrap());
    assert!(hi - lo <= 1 || leads.len() < 3, "{leads:?}");

    let drained = m.change(&MapChange::Drain { id: 2 }).unwrap().unwrap();
    let on2: BTreeMap<u32, u64> = drained
        .shards
        .iter()
        .filter(|p| p.voters.contains(&2))
        .map(|p| (p.id, 2))
        .collect();
    let (_, from, to) = next_transfer(&drained, &on2, &BTreeSet::new()).unwrap();
    assert_eq!(from, 2);
    assert_ne!(to, 2);
}
