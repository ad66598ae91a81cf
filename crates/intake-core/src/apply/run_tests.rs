//! Submit: new keys make tickets, known keys are answered from their
//! ticket, and a run of entries sees its own earlier writes.

use super::*;
use crate::apply::fixtures::{Replica, SHARD, complaint, id, submit};
use crate::apply::{MemoryError, MemoryShard};
use crate::incident_index::IncidentIndex;

fn created(id: TicketId, accepted_at: UnixMillis) -> SubmitOutcome {
    SubmitOutcome::Created { id, accepted_at }
}

#[test]
fn a_new_key_makes_a_ticket_with_its_key_and_age_and_counts_it_for_delivery() {
    let mut r = Replica::new();
    let (outcomes, writes) = r.run(vec![(
        7,
        submit(100, vec![complaint("a", "t"), complaint("b", "t")]),
    )]);
    assert_eq!(
        outcomes,
        vec![vec![created(id(7, 0), 100), created(id(7, 1), 100)]]
    );
    let ticket = r.state.tickets[&id(7, 0)].clone();
    assert_eq!(
        (ticket.status, ticket.accepted_at, ticket.log_index),
        (TicketStatus::Received, 100, 7)
    );
    assert_eq!(
        writes[..3],
        [
            Write::Ticket {
                ticket: Cow::Owned(ticket),
                created: true
            },
            Write::Key {
                key: "a".into(),
                ticket: id(7, 0)
            },
            Write::Age {
                accepted_at: 100,
                ticket: id(7, 0),
                key: "a".into()
            },
        ]
    );
    // The batch ends with the delivery state, then the applied index.
    let n = writes.len();
    assert_eq!(
        writes[n - 2..],
        [
            Write::Dispatch(crate::DispatchState {
                created: 2,
                ..Default::default()
            }),
            Write::Applied { log_index: 7 }
        ]
    );
    assert_eq!(r.state.keys["b"], id(7, 1));
    assert_eq!(r.state.ages[&(100, id(7, 1))], "b");
}

#[test]
fn a_known_key_with_the_same_content_gets_the_original_ticket_and_writes_nothing_but_applied() {
    let mut r = Replica::new();
    r.run(vec![(1, submit(100, vec![complaint("a", "t")]))]);
    let mut retry = complaint("a", "t");
    retry.reported_at = Some(5); // stamped anew by whatever re-sent it
    let (outcomes, writes) = r.run(vec![(2, submit(200, vec![retry]))]);
    assert_eq!(
        outcomes,
        vec![vec![SubmitOutcome::Existing {
            id: id(1, 0),
            accepted_at: 100
        }]]
    );
    assert_eq!(writes, vec![Write::Applied { log_index: 2 }]);
    assert_eq!(r.state.dispatch.map(|d| d.created), Some(1));
}

#[test]
fn a_known_key_with_other_content_is_a_conflict() {
    let mut r = Replica::new();
    r.run(vec![(1, submit(100, vec![complaint("a", "t")]))]);
    let (outcomes, _) = r.run(vec![(2, submit(200, vec![complaint("a", "other text")]))]);
    assert_eq!(outcomes, vec![vec![SubmitOutcome::Conflict { id: id(1, 0) }]]);
    assert_eq!(r.state.tickets.len(), 1);
}

#[test]
fn a_key_twice_in_one_entry_or_one_run_sees_the_earlier_write() {
    let mut r = Replica::new();
    let (outcomes, _) = r.run(vec![
        (
            1,
            submit(
                100,
                vec![complaint("a", "t"), complaint("a", "t"), complaint("a", "x")],
            ),
        ),
        (2, submit(200, vec![complaint("a", "t"), complaint("b", "t")])),
        (3, submit(300, vec![complaint("b", "y")])),
    ]);
    let existing = SubmitOutcome::Existing {
        id: id(1, 0),
        accepted_at: 100,
    };
    assert_eq!(
        outcomes,
        vec![
            vec![
                created(id(1, 0), 100),
                existing,
                SubmitOutcome::Conflict { id: id(1, 0) }
            ],
            vec![existing, created(id(2, 1), 200)],
            vec![SubmitOutcome::Conflict { id: id(2, 1) }],
        ]
    );
    assert_eq!(r.state.keys.len(), 2);
    assert_eq!(r.state.dispatch.map(|d| d.created), Some(2));
}

#[test]
fn a_run_writes_the_delivery_state_once_and_the_last_applied_index() {
    let mut r = Replica::new();
    r.run(vec![(1, submit(100, vec![complaint("a", "t")]))]);
    let (_, writes) = r.run(vec![
        (2, submit(200, vec![complaint("b", "t")])),
        (3, submit(300, vec![complaint("b", "t")])),
        (4, submit(400, vec![complaint("c", "t"), complaint("d", "t")])),
    ]);
    let dispatch: Vec<_> = writes
        .iter()
        .filter(|w| matches!(w, Write::Dispatch(_)))
        .collect();
    let applied: Vec<_> = writes
        .iter()
        .filter(|w| matches!(w, Write::Applied { .. }))
        .collect();
    assert_eq!(dispatch.len(), 1);
    assert_eq!(applied, [&Write::Applied { log_index: 4 }]);
    assert_eq!(writes.last(), Some(&Write::Applied { log_index: 4 }));
    assert_eq!(r.state.dispatch.map(|d| d.created), Some(4));
    assert_eq!(r.state.applied, Some(4));
}

#[test]
fn an_empty_run_writes_nothing() {
    let state = MemoryShard::new(SHARD);
    let mut writes: Vec<Write<'static>> = Vec::new();
    let run = Run::default();
    assert!(run.is_empty());
    assert!(!run.seal(&state, &mut writes).unwrap());
    assert!(writes.is_empty());
}

#[test]
fn complaints_past_the_256th_are_ignored() {
    let mut r = Replica::new();
    let many: Vec<Complaint> = (0..300).map(|i| complaint(&format!("k{i}"), "t")).collect();
    let (outcomes, _) = r.run(vec![(9, submit(100, many))]);
    assert_eq!(outcomes[0].len(), 256);
    assert_eq!(outcomes[0][255], created(id(9, 255), 100));
    assert_eq!(r.state.tickets.len(), 256);
}

#[test]
fn a_key_naming_a_missing_ticket_is_an_error() {
    let mut state = MemoryShard::new(SHARD);
    state.keys.insert("a".into(), id(1, 0));
    let mut index = IncidentIndex::new(4);
    let mut writes: Vec<Write<'static>> = Vec::new();
    let err = Run::default()
        .submit(&state, &mut index, 2, 100, vec![complaint("a", "t")], &mut writes)
        .unwrap_err();
    assert_eq!(err, MemoryError::KeyWithoutTicket(id(1, 0)));
}
