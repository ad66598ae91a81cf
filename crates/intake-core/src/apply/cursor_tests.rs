//! AdvanceDispatch moves only from where the cursor is; SetClusterMap only
//! replaces an older map; AddMember adds to the committed map once.

use super::*;
use crate::apply::fixtures::{Replica, complaint, id, submit};
use crate::{Command, CommandResponse};

fn advance(
    r: &mut Replica,
    index: u64,
    from: DispatchCursor,
    to: DispatchCursor,
    count: u64,
) -> CommandResponse {
    r.one(index, Command::AdvanceDispatch { from, to, count }).0
}

#[test]
fn the_cursor_moves_only_from_where_it_is_and_only_forward() {
    let mut r = Replica::new();
    r.run(vec![(
        1,
        submit(100, vec![complaint("a", "t"), complaint("b", "t")]),
    )]);
    let start = DispatchCursor::default();
    let after_a = DispatchCursor::after(&id(1, 0));
    let after_b = DispatchCursor::after(&id(1, 1));
    let moved = advance(&mut r, 2, start, after_b, 2);
    let state = DispatchState {
        next: after_b,
        delivered: 2,
        created: 2,
    };
    assert_eq!(moved, CommandResponse::DispatchAdvanced { moved: true, state });
    // A deposed leader's late proposal from the old position: a no-op that
    // writes nothing but the applied index.
    let (stale, writes) = r.one(
        3,
        Command::AdvanceDispatch {
            from: start,
            to: after_a,
            count: 1,
        },
    );
    assert_eq!(stale, CommandResponse::DispatchAdvanced { moved: false, state });
    assert_eq!(writes, vec![Write::Applied { log_index: 3 }]);
    // Not forward: refused too.
    let back = advance(&mut r, 4, after_b, after_a, 1);
    assert_eq!(back, CommandResponse::DispatchAdvanced { moved: false, state });
    assert_eq!(r.state.dispatch, Some(state));
}

#[test]
fn delivered_never_passes_created() {
    let mut r = Replica::new();
    r.run(vec![(1, submit(100, vec![complaint("a", "t")]))]);
    let to = DispatchCursor::after(&id(1, 0));
    advance(&mut r, 2, DispatchCursor::default(), to, 5);
    assert_eq!(r.state.dispatch.map(|d| (d.delivered, d.lag())), Some((1, 0)));
}

fn map(version: u64) -> ClusterMap {
    ClusterMap {
        version,
        ..Default::default()
    }
}

#[test]
fn only_a_newer_cluster_map_replaces_the_stored_one() {
    let mut r = Replica::new();
    r.one(1, Command::SetClusterMap(map(2).v1()));
    assert_eq!(r.state.cluster_map, Some((1, map(2))));
    let (_, writes) = r.one(2, Command::SetClusterMap(map(2).v1()));
    assert_eq!(writes, vec![Write::Applied { log_index: 2 }]);
    r.one(3, Command::SetClusterMap(map(1).v1()));
    r.one(4, Command::SetClusterMap(map(3).v1()));
    assert_eq!(r.state.cluster_map, Some((4, map(3))));
}

#[test]
fn a_member_is_added_to_the_committed_map_once() {
    let mut r = Replica::new();
    let (resp, writes) = r.one(
        1,
        Command::AddMember {
            id: 4,
            addr: "h:4".into(),
        },
    );
    assert_eq!(resp, CommandResponse::Joined(Err(crate::JoinRefusal::NoMap)));
    assert_eq!(writes, vec![Write::Applied { log_index: 1 }]);

    let mut base = map(2);
    base.members.insert(1, "h:1".into());
    r.one(2, Command::SetClusterMap(base.v1()));
    let (resp, _) = r.one(
        3,
        Command::AddMember {
            id: 4,
            addr: "h:4".into(),
        },
    );
    let CommandResponse::Joined(Ok(joined)) = resp else {
        panic!("{resp:?}")
    };
    assert_eq!((joined.version, joined.members.len()), (3, 2));
    assert_eq!(r.state.cluster_map, Some((3, joined.clone())));
    // A retry answers the same map and writes nothing but the index.
    let (resp, writes) = r.one(
        4,
        Command::AddMember {
            id: 4,
            addr: "h:4".into(),
        },
    );
    assert_eq!(resp, CommandResponse::Joined(Ok(joined.clone())));
    assert_eq!(writes, vec![Write::Applied { log_index: 4 }]);
    // Racing for the address, the later one loses.
    let (resp, _) = r.one(
        5,
        Command::AddMember {
            id: 5,
            addr: "h:4".into(),
        },
    );
    assert_eq!(
        resp,
        CommandResponse::Joined(Err(crate::JoinRefusal::AddrInUse {
            addr: "h:4".into(),
            id: 4
        }))
    );
    assert_eq!(r.state.cluster_map, Some((3, joined)));
}
