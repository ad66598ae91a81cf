//! The cluster map: who the members are, which nodes hold each shard, and
//! which shard each district's complaints go to. The meta Raft group
//! replicates it; every node routes by it.
//!
//! Placement is computed once at bootstrap, deterministically from the
//! initial member list, so every node of a new cluster derives the same map
//! before the meta group has even elected a leader.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::DistrictTable;

/// The Raft group id of the meta group. Shard ids count up from 0; this one
/// can never collide with them.
pub const META_GROUP: u32 = u32::MAX;

/// The meta group has at most this many voters; more buys nothing but
/// slower commits.
pub const MAX_META_VOTERS: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardPlacement {
    pub id: u32,
    /// Distinct nodes; the first is the preferred leader.
    pub voters: Vec<u64>,
}

/// One replica move of a group: `to` joins (as a learner first), `from`
/// (if any) leaves once `to` votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Move {
    pub group: u32,
    pub from: Option<u64>,
    pub to: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ClusterMap {
    /// Grows with every change; a node keeps the highest it has seen.
    pub version: u64,
    pub members: BTreeMap<u64, String>,
    pub meta_voters: Vec<u64>,
    pub shards: Vec<ShardPlacement>,
    /// District code to shard. Every routing slot of a district maps to this
    /// shard for now; spreading a hot district will map slots individually.
    pub districts: BTreeMap<String, u32>,
    /// Replicas being added by a move, per group (a shard id, or
    /// [`META_GROUP`]): learners catching up before they become voters
    /// (`crate::map_change`). Last, and apart from the placements, so that
    /// a map of the first layout ([`ClusterMapV1`]) still decodes.
    #[serde(default)]
    pub learners: BTreeMap<u32, Vec<Move>>,
    /// Members being drained before their removal: replicas move off them
    /// and none move onto them.
    #[serde(default)]
    pub draining: BTreeSet<u64>,
}

/// The map's first layout, before moves: what `Command::SetClusterMap`
/// carries (log entries and stored records written by earlier versions
/// hold it), converted to and from [`ClusterMap`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterMapV1 {
    pub version: u64,
    pub members: BTreeMap<u64, String>,
    pub meta_voters: Vec<u64>,
    pub shards: Vec<ShardPlacement>,
    pub districts: BTreeMap<String, u32>,
}

impl From<ClusterMapV1> for ClusterMap {
    fn from(m: ClusterMapV1) -> Self {
        ClusterMap {
            version: m.version,
            members: m.members,
            meta_voters: m.meta_voters,
            shards: m.shards,
            districts: m.districts,
            learners: BTreeMap::new(),
            draining: BTreeSet::new(),
        }
    }
}

impl ClusterMap {
    /// The first-layout part of this map (for `SetClusterMap`, which only
    /// ever publishes a bootstrap map: no moves, no draining).
    pub fn v1(&self) -> ClusterMapV1 {
        ClusterMapV1 {
            version: self.version,
            members: self.members.clone(),
            meta_voters: self.meta_voters.clone(),
            shards: self.shards.clone(),
            districts: self.districts.clone(),
        }
    }
}

/// Why a node may not join (issue 16 item 1). Ids and addresses name
/// nodes in every replica's placement and every peer's channel, so neither
/// may be taken by a second machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum JoinRefusal {
    #[error(
        "node id {id} is already a member of the cluster, at {addr}: give the new node an unused id \
         (a member that lost its data directory is replaced, not joined again)"
    )]
    IdInUse { id: u64, addr: String },
    #[error("address {addr} is already the address of member {id}: a node joins with an address of its own")]
    AddrInUse { addr: String, id: u64 },
    #[error("the cluster map has not been committed yet (the cluster is still starting): retry")]
    NoMap,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("a cluster needs at least one shard")]
    NoShards,
    #[error("--replicas {replicas} needs at least that many nodes, but the initial cluster has {nodes}")]
    TooFewNodes { replicas: usize, nodes: usize },
    #[error("--replicas must be at least 1")]
    NoReplicas,
}

impl ClusterMap {
    /// The initial map of a new cluster.
    ///
    /// Replicas are spread evenly and each shard's preferred leader (its
    /// first voter) is chosen so that every node leads about `shards / n`
    /// shards. Districts are assigned
    /// largest population first to the least loaded shard, so the biggest
    /// districts never share a shard while an emptier one exists.
    pub fn bootstrap(
        members: &BTreeMap<u64, String>,
        shards: u32,
        replicas: usize,
        districts: &DistrictTable,
    ) -> Result<ClusterMap, PlacementError> {
        if shards == 0 {
            return Err(PlacementError::NoShards);
        }
        if replicas == 0 {
            return Err(PlacementError::NoReplicas);
        }
        let nodes: Vec<u64> = members.keys().copied().collect();
        if replicas > nodes.len() {
            return Err(PlacementError::TooFewNodes {
                replicas,
                nodes: nodes.len(),
            });
        }
        // Replica j of the whole cluster goes to node j mod n: replicas of
        // one shard are consecutive, hence distinct, and every node holds
        // shards * replicas / n of them, give or take one.
        let n = nodes.len();
        let mut leads = vec![0usize; n];
        let placements = (0..shards)
            .map(|s| {
                let mut idx: Vec<usize> = (0..replicas).map(|k| (s as usize * replicas + k) % n).collect();
                // The preferred leader is the replica that leads least so far.
                if let Some(pos) = (0..idx.len()).min_by_key(|&p| (leads[idx[p]], idx[p])) {
                    idx.swap(0, pos);
                    leads[idx[0]] += 1;
                }
                ShardPlacement {
                    id: s,
                    voters: idx.into_iter().map(|i| nodes[i]).collect(),
                }
            })
            .collect();

        let mut load: Vec<(u64, u32)> = (0..shards).map(|s| (0u64, s)).collect();
        let mut by_size: Vec<_> = districts.iter().collect();
        by_size.sort_by(|a, b| b.population.cmp(&a.population).then(a.code.cmp(&b.code)));
        let mut map = BTreeMap::new();
        for d in by_size {
            // Least loaded shard; ties go to the lowest id, for determinism.
            let slot = load.iter_mut().min().map(|l| {
                l.0 += d.population.max(1);
                l.1
            });
            map.insert(d.code.clone(), slot.unwrap_or(0));
        }

        Ok(ClusterMap {
            version: 1,
            members: members.clone(),
            meta_voters: nodes.iter().copied().take(MAX_META_VOTERS).collect(),
            shards: placements,
            districts: map,
            learners: BTreeMap::new(),
            draining: BTreeSet::new(),
        })
    }

    /// The shard for a complaint of `district` whose key falls in `slot`.
    pub fn shard_for(&self, district: &str, _slot: u16) -> Option<u32> {
        self.districts.get(district).copied()
    }

    /// The home shard of an idempotency key: the one shard whose log decides
    /// which complaint holds the key, so that a key is unique in the whole
    /// cluster (issue 16 item 6). A key minted as `{district}:…`
    /// ([`crate::routing::district_key`]) of a district on this map lives
    /// where that district's complaints do, so its complaint needs no claim
    /// elsewhere; any other key goes to a shard chosen by its hash. `None`
    /// only for a map without shards.
    pub fn home_of_key(&self, key: &str) -> Option<u32> {
        if let Some(shard) =
            crate::routing::key_district(key).and_then(|d| self.shard_for(d, crate::routing::slot_of(key)))
        {
            return Some(shard);
        }
        let n = u64::try_from(self.shards.len()).ok().filter(|n| *n > 0)?;
        let i = usize::try_from(crate::routing::key_hash(key) % n).ok()?;
        self.shards.get(i).map(|p| p.id)
    }

    /// The map with node `id` at `addr` added as a member holding nothing
    /// yet, one version on; `Ok(None)` when it is a member already at that
    /// address and holds no replica and no meta vote: a retry of its own
    /// join (it cannot have lost state it never had). An id or address of
    /// another member is refused.
    pub fn add_member(&self, id: u64, addr: &str) -> Result<Option<ClusterMap>, JoinRefusal> {
        if let Some(current) = self.members.get(&id) {
            let holds = !self.groups_on(id).is_empty();
            if current == addr && !holds {
                return Ok(None);
            }
            return Err(JoinRefusal::IdInUse {
                id,
                addr: current.clone(),
            });
        }
        if let Some((&other, _)) = self.members.iter().find(|(_, a)| a.as_str() == addr) {
            return Err(JoinRefusal::AddrInUse {
                addr: addr.to_string(),
                id: other,
            });
        }
        let mut next = self.clone();
        next.members.insert(id, addr.to_string());
        next.version = self.version.saturating_add(1);
        Ok(Some(next))
    }

    pub fn placement(&self, shard: u32) -> Option<&ShardPlacement> {
        self.shards.get(shard as usize).filter(|p| p.id == shard)
    }

    /// Shards with a replica on `node`, in id order.
    pub fn shards_on(&self, node: u64) -> Vec<u32> {
        self.shards
            .iter()
            .filter(|p| p.voters.contains(&node))
            .map(|p| p.id)
            .collect()
    }

    /// The voters of `group` (a shard, or the meta group).
    pub fn voters_of(&self, group: u32) -> Vec<u64> {
        if group == META_GROUP {
            return self.meta_voters.clone();
        }
        self.placement(group)
            .map(|p| p.voters.clone())
            .unwrap_or_default()
    }

    /// The learners of `group`: replicas being added by a move.
    pub fn learners_of(&self, group: u32) -> Vec<u64> {
        self.learners
            .get(&group)
            .map(|m| m.iter().map(|m| m.to).collect())
            .unwrap_or_default()
    }

    /// Every move in progress, by group.
    pub fn moves(&self) -> Vec<Move> {
        self.learners.values().flatten().copied().collect()
    }

    /// Every group (shards, then the meta group) with a replica on `node`,
    /// voter or learner: what the node must host.
    pub fn groups_on(&self, node: u64) -> Vec<u32> {
        self.shards
            .iter()
            .map(|p| p.id)
            .chain(std::iter::once(META_GROUP))
            .filter(|g| self.voters_of(*g).contains(&node) || self.learners_of(*g).contains(&node))
            .collect()
    }

    /// Districts routed to `shard`, in code order.
    pub fn districts_of(&self, shard: u32) -> Vec<String> {
        self.districts
            .iter()
            .filter(|(_, s)| **s == shard)
            .map(|(d, _)| d.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> BTreeMap<u64, String> {
        (1..=n).map(|i| (i, format!("127.0.0.1:{}", 7000 + i))).collect()
    }

    #[test]
    fn a_key_naming_its_district_is_at_home_there_and_others_spread() {
        let m = ClusterMap::bootstrap(&members(3), 8, 3, &DistrictTable::beijing()).unwrap();
        for (district, shard) in &m.districts {
            let key = crate::routing::district_key(district, "a1b2");
            assert_eq!(m.home_of_key(&key), Some(*shard), "{key}");
        }
        // Unknown districts and plain keys spread over every shard.
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..400 {
            for key in [format!("call-{i}"), format!("999999:{i}")] {
                let home = m.home_of_key(&key).unwrap();
                assert!(m.placement(home).is_some());
                seen.insert(home);
            }
        }
        assert_eq!(seen.len(), 8);
        assert_eq!(m.home_of_key("x"), m.home_of_key("x"));
    }

    #[test]
    fn a_member_joins_once_with_an_id_and_address_of_its_own() {
        let m = ClusterMap::bootstrap(&members(3), 8, 3, &DistrictTable::beijing()).unwrap();
        let joined = m.add_member(4, "127.0.0.1:7004").unwrap().unwrap();
        assert_eq!(joined.version, m.version + 1);
        assert_eq!(joined.members.get(&4).map(String::as_str), Some("127.0.0.1:7004"));
        assert!(joined.shards_on(4).is_empty());
        assert_eq!(
            (joined.shards.clone(), joined.districts.clone()),
            (m.shards.clone(), m.districts.clone())
        );
        // Its own retry changes nothing; anyone else's use of the id or the
        // address is refused, and so is a member holding replicas.
        assert_eq!(joined.add_member(4, "127.0.0.1:7004"), Ok(None));
        assert_eq!(
            joined.add_member(4, "127.0.0.1:7005"),
            Err(JoinRefusal::IdInUse {
                id: 4,
                addr: "127.0.0.1:7004".into()
            })
        );
        assert_eq!(
            joined.add_member(5, "127.0.0.1:7002"),
            Err(JoinRefusal::AddrInUse {
                addr: "127.0.0.1:7002".into(),
                id: 2
            })
        );
        assert!(matches!(
            joined.add_member(2, "127.0.0.1:7002"),
            Err(JoinRefusal::IdInUse { id: 2, .. })
        ));
    }

    #[test]
    fn replicas_are_distinct_and_leaders_spread() {
        let m = ClusterMap::bootstrap(&members(5), 8, 3, &DistrictTable::beijing()).unwrap();
        assert_eq!(m.shards.len(), 8);
        for p in &m.shards {
            let mut v = p.voters.clone();
            v.sort_unstable();
            v.dedup();
            assert_eq!(v.len(), 3, "{p:?}");
        }
        let preferred: std::collections::BTreeSet<u64> = m.shards.iter().map(|p| p.voters[0]).collect();
        assert_eq!(preferred.len(), 5);
        // With as many replicas as nodes, leadership still rotates.
        let m3 = ClusterMap::bootstrap(&members(3), 8, 3, &DistrictTable::beijing()).unwrap();
        for n in 1..=3 {
            let k = m3.shards.iter().filter(|p| p.voters[0] == n).count();
            assert!((2..=3).contains(&k), "node {n} leads {k}");
        }
        assert_eq!(m.meta_voters, vec![1, 2, 3, 4, 5]);
        // Every node holds a fair share: 8 shards x 3 replicas over 5 nodes.
        for n in 1..=5 {
            let k = m.shards_on(n).len();
            assert!((4..=5).contains(&k), "node {n} holds {k}");
        }
    }

    #[test]
    fn biggest_districts_get_shards_of_their_own() {
        let t = DistrictTable::beijing();
        let m = ClusterMap::bootstrap(&members(3), 8, 3, &t).unwrap();
        assert_eq!(m.districts.len(), 16);
        let mut biggest: Vec<_> = t.iter().collect();
        biggest.sort_by_key(|d| std::cmp::Reverse(d.population));
        let top: Vec<u32> = biggest.iter().take(8).map(|d| m.districts[&d.code]).collect();
        let mut distinct = top.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "the 8 largest districts share shards: {top:?}");
        // Every shard gets districts, and the load is within 2x.
        let loads: Vec<u64> = (0..8)
            .map(|s| {
                m.districts_of(s)
                    .iter()
                    .map(|d| t.get(d).unwrap().population)
                    .sum()
            })
            .collect();
        let (lo, hi) = (loads.iter().min().unwrap(), loads.iter().max().unwrap());
        assert!(*hi <= lo * 2, "{loads:?}");
    }

    #[test]
    fn is_deterministic_and_checks_sizes() {
        let t = DistrictTable::beijing();
        assert_eq!(
            ClusterMap::bootstrap(&members(3), 8, 3, &t),
            ClusterMap::bootstrap(&members(3), 8, 3, &t)
        );
        assert_eq!(
            ClusterMap::bootstrap(&members(2), 8, 3, &t),
            Err(PlacementError::TooFewNodes {
                replicas: 3,
                nodes: 2
            })
        );
        assert_eq!(
            ClusterMap::bootstrap(&members(2), 0, 1, &t),
            Err(PlacementError::NoShards)
        );
        let one = ClusterMap::bootstrap(&members(1), 1, 1, &t).unwrap();
        assert_eq!(one.shard_for("110105", 7), Some(0));
        assert_eq!(one.shard_for("nowhere", 7), None);
    }
}
