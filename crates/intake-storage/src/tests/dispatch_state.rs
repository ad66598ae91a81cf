//! Delivery cursor and status history: applied identically everywhere, a
//! stale cursor move is a no-op, and both travel in snapshots.

use intake_core::{
    Command, CommandResponse, DispatchCursor, StatusError, StatusOutcome, StatusUpdate, TicketId,
    TicketStatus,
};
use openraft::alias::StoredMembershipOf;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;

use super::fixtures::{Entry, complaint, new_node, submit};
use crate::TypeConfig;

fn normal(index: u64, cmd: Command) -> Entry {
    Entry::new_normal(log_id::<TypeConfig>(1, 1, index), cmd)
}

fn update(ticket: TicketId, status: TicketStatus, department: Option<&str>) -> StatusUpdate {
    StatusUpdate {
        ticket,
        status,
        department: department.map(str::to_owned),
        note: "n".into(),
        reported_at: 5,
    }
}

#[tokio::test]
async fn cursor_moves_only_from_where_it_is_and_snapshots_carry_it_with_histories() {
    let (_dir, node) = new_node();
    let mut sm = node.state_machine(1).unwrap();
    let mut m = StoredMembershipOf::<TypeConfig>::default();
    sm.apply_entry(
        submit(1, 100, vec![complaint("a", "t"), complaint("b", "t")]),
        &mut m,
    )
    .unwrap();
    sm.apply_entry(submit(2, 101, vec![complaint("c", "t")]), &mut m)
        .unwrap();
    assert_eq!(sm.dispatch_state().unwrap().lag(), 3);
    let a = TicketId::new(1, 1, 0);
    let b = TicketId::new(1, 1, 1);
    let c = TicketId::new(1, 2, 0);

    let start = DispatchCursor::default();
    let r = sm
        .apply_entry(
            normal(
                3,
                Command::AdvanceDispatch {
                    from: start,
                    to: DispatchCursor::after(&b),
                    count: 2,
                },
            ),
            &mut m,
        )
        .unwrap();
    assert!(matches!(r, CommandResponse::DispatchAdvanced { moved: true, .. }));
    // A deposed leader's late proposal from the old position changes nothing.
    let r = sm
        .apply_entry(
            normal(
                4,
                Command::AdvanceDispatch {
                    from: start,
                    to: DispatchCursor::after(&a),
                    count: 1,
                },
            ),
            &mut m,
        )
        .unwrap();
    assert!(matches!(
        r,
        CommandResponse::DispatchAdvanced { moved: false, .. }
    ));
    let state = sm.dispatch_state().unwrap();
    assert_eq!(
        (state.delivered, state.created, state.next),
        (2, 3, DispatchCursor::after(&b))
    );
    let next: Vec<TicketId> = sm
        .tickets_at(state.next, 10)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(next, [c]);

    // Status: forward moves recorded in order, a backward one refused, an
    // unknown ticket reported, all in one entry.
    let r = sm
        .apply_entry(
            normal(
                5,
                Command::UpdateStatus {
                    recorded_at: 9,
                    updates: vec![
                        update(a, TicketStatus::Dispatched, None),
                        update(a, TicketStatus::Assigned, Some("roads")),
                        update(a, TicketStatus::Dispatched, None),
                        update(TicketId::new(1, 77, 0), TicketStatus::Dispatched, None),
                    ],
                },
            ),
            &mut m,
        )
        .unwrap();
    assert_eq!(
        r,
        CommandResponse::StatusUpdated(vec![
            StatusOutcome::Recorded {
                status: TicketStatus::Dispatched,
                events: 1
            },
            StatusOutcome::Recorded {
                status: TicketStatus::Assigned,
                events: 2
            },
            StatusOutcome::Refused(StatusError::Backwards {
                from: TicketStatus::Assigned,
                to: TicketStatus::Dispatched
            }),
            StatusOutcome::NotFound,
        ])
    );
    assert_eq!(sm.get_ticket(&a).unwrap().unwrap().status, TicketStatus::Assigned);

    // A replica installed from a snapshot has the same cursor and history.
    let snap = sm.build_snapshot().await.unwrap();
    let (_b_dir, other) = new_node();
    let mut sm_b = other.state_machine(1).unwrap();
    let mut cur = sm.get_current_snapshot().await.unwrap().unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut cur.snapshot, &mut buf)
        .await
        .unwrap();
    let mut w = other.snapshot_writer(1).unwrap();
    w.write(&buf).await.unwrap();
    let data = w.finish().await.unwrap();
    sm_b.install_snapshot(&snap.meta, data).await.unwrap();
    assert_eq!(sm_b.dispatch_state().unwrap(), sm.dispatch_state().unwrap());
    assert_eq!(sm_b.ticket_history(&a).unwrap(), sm.ticket_history(&a).unwrap());
    assert_eq!(sm_b.ticket_history(&a).unwrap().len(), 2);
    assert_eq!(
        sm_b.get_ticket(&a).unwrap().unwrap().status,
        TicketStatus::Assigned
    );
}
