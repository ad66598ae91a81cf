//! A move's steps, drains and removals, each idempotent; the map's first
//! layout still decodes apart.

use std::collections::BTreeMap;

use super::*;
use crate::DistrictTable;

fn map(n: u64) -> ClusterMap {
    let members: BTreeMap<u64, String> = (1..=n).map(|i| (i, format!("h:{i}"))).collect();
    ClusterMap::bootstrap(&members, 8, 3, &DistrictTable::beijing()).unwrap()
}

fn joined(mut m: ClusterMap, ids: &[u64]) -> ClusterMap {
    for id in ids {
        m = m.add_member(*id, &format!("h:{id}")).unwrap().unwrap();
    }
    m
}

#[test]
fn a_move_adds_a_learner_then_swaps_the_voter_in_place() {
    let m = joined(map(3), &[4]);
    let from = m.shards[0].voters[0];
    let begin = MapChange::BeginMove {
        group: 0,
        from: Some(from),
        to: 4,
    };
    let m1 = m.change(&begin).unwrap().unwrap();
    assert_eq!(m1.version, m.version + 1);
    assert_eq!(m1.learners_of(0), vec![4]);
    assert_eq!(m1.groups_on(4), vec![0], "the target hosts the group from now on");
    assert_eq!(m1.change(&begin), Ok(None), "repeated");

    let finish = MapChange::FinishMove {
        group: 0,
        from: Some(from),
        to: 4,
    };
    let m2 = m1.change(&finish).unwrap().unwrap();
    assert_eq!(
        m2.shards[0].voters[0], 4,
        "the preferred leader's place passes on"
    );
    assert!(!m2.shards[0].voters.contains(&from));
    assert!(m2.learners.is_empty());
    assert_eq!(m2.change(&finish), Ok(None), "repeated");
    // Beginning it again once done is nothing to do.
    assert_eq!(m2.change(&begin), Ok(None));
}

#[test]
fn bad_moves_are_refused_and_a_cancel_drops_the_learner() {
    let m = joined(map(3), &[4]);
    assert_eq!(
        m.change(&MapChange::BeginMove {
            group: 99,
            from: None,
            to: 4
        }),
        Err(MapRefusal::UnknownGroup(99))
    );
    assert_eq!(
        m.change(&MapChange::BeginMove {
            group: 0,
            from: None,
            to: 7
        }),
        Err(MapRefusal::UnknownNode(7))
    );
    let not_voter = m.change(&MapChange::BeginMove {
        group: 0,
        from: Some(4),
        to: 4,
    });
    assert!(matches!(not_voter, Ok(None)) || not_voter.is_err());
    let m1 = m
        .change(&MapChange::BeginMove {
            group: META_GROUP,
            from: None,
            to: 4,
        })
        .unwrap()
        .unwrap();
    let m2 = m1
        .change(&MapChange::CancelMove {
            group: META_GROUP,
            to: 4,
        })
        .unwrap()
        .unwrap();
    assert!(m2.learners.is_empty());
    assert_eq!(m2.meta_voters, m.meta_voters);
    assert_eq!(
        m2.change(&MapChange::CancelMove {
            group: META_GROUP,
            to: 4
        }),
        Ok(None)
    );
}

#[test]
fn a_node_is_removed_only_drained_and_never_below_the_replica_count() {
    let m = map(3);
    assert_eq!(
        m.change(&MapChange::Drain { id: 3 }),
        Err(MapRefusal::TooFewNodes {
            id: 3,
            left: 2,
            replicas: 3
        })
    );
    let m = joined(m, &[4]);
    let m1 = m.change(&MapChange::Drain { id: 3 }).unwrap().unwrap();
    assert!(m1.draining.contains(&3));
    assert_eq!(m1.change(&MapChange::Drain { id: 3 }), Ok(None));
    // A second drain would leave two placeable nodes for three replicas.
    assert!(matches!(
        m1.change(&MapChange::Drain { id: 4 }),
        Err(MapRefusal::TooFewNodes { .. })
    ));
    // Node 3 still holds its replicas.
    assert!(matches!(
        m1.change(&MapChange::Remove { id: 3 }),
        Err(MapRefusal::NotDrained { id: 3, .. })
    ));
    // Not drained at all: refused as well.
    assert!(matches!(
        m1.change(&MapChange::Remove { id: 4 }),
        Err(MapRefusal::NotDrained { .. })
    ));
    // Move everything off node 3, then it goes.
    let mut m2 = m1.clone();
    for g in m1.groups_on(3) {
        for step in [
            MapChange::BeginMove {
                group: g,
                from: Some(3),
                to: 4,
            },
            MapChange::FinishMove {
                group: g,
                from: Some(3),
                to: 4,
            },
        ] {
            m2 = m2.change(&step).unwrap().unwrap();
        }
    }
    assert!(m2.groups_on(3).is_empty());
    let m3 = m2.change(&MapChange::Remove { id: 3 }).unwrap().unwrap();
    assert!(!m3.members.contains_key(&3) && m3.draining.is_empty());
    assert_eq!(m3.change(&MapChange::Remove { id: 3 }), Ok(None));
    // No moves onto a drained node.
    assert!(matches!(
        m1.change(&MapChange::BeginMove {
            group: 0,
            from: None,
            to: 3
        }),
        Err(MapRefusal::BadTarget { .. }) | Ok(None)
    ));
}

#[test]
fn the_first_layout_decodes_only_as_itself() {
    let m = map(3);
    let v1 = postcard::to_stdvec(&m.v1()).unwrap();
    assert!(
        postcard::from_bytes::<ClusterMap>(&v1).is_err(),
        "a V1 record must not pass for the new layout"
    );
    let back: ClusterMap = postcard::from_bytes::<crate::ClusterMapV1>(&v1).unwrap().into();
    assert_eq!(back, m);
    // The JSON copy a node keeps reads either way.
    let json = serde_json::to_string(&m.v1()).unwrap();
    assert_eq!(serde_json::from_str::<ClusterMap>(&json).unwrap(), m);
}
