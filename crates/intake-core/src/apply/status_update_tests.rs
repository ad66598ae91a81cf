//! UpdateStatus: each update judged against the status before it, in the
//! same command too; both records rewritten for every ticket found.

use super::*;
use crate::apply::fixtures::{Replica, SHARD, complaint, id, submit};
use crate::{Command, CommandResponse, MAX_STATUS_HISTORY, StatusError, TicketStatus};

fn update(ticket: TicketId, status: TicketStatus, department: Option<&str>) -> StatusUpdate {
    StatusUpdate {
        ticket,
        status,
        department: department.map(str::to_owned),
        note: "n".into(),
        reported_at: 5,
    }
}

fn replica_with_two_tickets() -> Replica {
    let mut r = Replica::new();
    r.run(vec![(
        1,
        submit(100, vec![complaint("a", "t"), complaint("b", "t")]),
    )]);
    r
}

fn apply(
    r: &mut Replica,
    index: u64,
    updates: Vec<StatusUpdate>,
) -> (Vec<StatusOutcome>, Vec<Write<'static>>) {
    let (resp, writes) = r.one(
        index,
        Command::UpdateStatus {
            recorded_at: 9,
            updates,
        },
    );
    let CommandResponse::StatusUpdated(o) = resp else {
        panic!("{resp:?}")
    };
    (o, writes)
}

#[test]
fn forward_moves_are_recorded_in_order_and_a_backward_one_refused_within_one_command() {
    use TicketStatus::*;
    let mut r = replica_with_two_tickets();
    let a = id(1, 0);
    let (outcomes, _) = apply(
        &mut r,
        2,
        vec![
            update(a, Dispatched, None),
            update(a, Assigned, Some("roads")),
            update(a, Dispatched, None),
            update(a, Assigned, Some("water")),
        ],
    );
    assert_eq!(
        outcomes,
        vec![
            StatusOutcome::Recorded {
                status: Dispatched,
                events: 1
            },
            StatusOutcome::Recorded {
                status: Assigned,
                events: 2
            },
            StatusOutcome::Refused(StatusError::Backwards {
                from: Assigned,
                to: Dispatched
            }),
            StatusOutcome::Recorded {
                status: Assigned,
                events: 3
            },
        ]
    );
    assert_eq!(r.state.tickets[&a].status, Assigned);
    let h = &r.state.histories[&a];
    assert_eq!(h.len(), 3);
    assert_eq!((h[1].department.as_deref(), h[1].recorded_at), (Some("roads"), 9));
}

#[test]
fn a_final_status_is_final_across_commands() {
    use TicketStatus::*;
    let mut r = replica_with_two_tickets();
    let a = id(1, 0);
    apply(&mut r, 2, vec![update(a, Resolved, None)]);
    let (outcomes, _) = apply(&mut r, 3, vec![update(a, Rejected, None)]);
    assert_eq!(
        outcomes,
        vec![StatusOutcome::Refused(StatusError::Final {
            from: Resolved,
            to: Rejected
        })]
    );
    assert_eq!(r.state.histories[&a].len(), 1);
}

#[test]
fn history_is_capped_at_32_events() {
    let mut r = replica_with_two_tickets();
    let a = id(1, 0);
    let updates = (0..MAX_STATUS_HISTORY + 1)
        .map(|_| update(a, TicketStatus::Dispatched, None))
        .collect();
    let (outcomes, _) = apply(&mut r, 2, updates);
    assert_eq!(
        outcomes[MAX_STATUS_HISTORY - 1],
        StatusOutcome::Recorded {
            status: TicketStatus::Dispatched,
            events: MAX_STATUS_HISTORY
        }
    );
    assert_eq!(
        outcomes[MAX_STATUS_HISTORY],
        StatusOutcome::Refused(StatusError::HistoryFull)
    );
    assert_eq!(r.state.histories[&a].len(), MAX_STATUS_HISTORY);
}

#[test]
fn unknown_tickets_and_tickets_of_other_shards_are_not_found_and_write_nothing() {
    let mut r = replica_with_two_tickets();
    let (outcomes, writes) = apply(
        &mut r,
        2,
        vec![
            update(id(77, 0), TicketStatus::Dispatched, None),
            update(TicketId::new(SHARD + 1, 1, 0), TicketStatus::Dispatched, None),
        ],
    );
    assert_eq!(outcomes, vec![StatusOutcome::NotFound, StatusOutcome::NotFound]);
    assert_eq!(writes, vec![Write::Applied { log_index: 2 }]);
}

#[test]
fn every_ticket_found_is_rewritten_in_ticket_order_even_if_refused() {
    let mut r = replica_with_two_tickets();
    let (a, b) = (id(1, 0), id(1, 1));
    let (outcomes, writes) = apply(
        &mut r,
        2,
        vec![
            update(b, TicketStatus::Dispatched, None),
            update(a, TicketStatus::Assigned, None), // no department
        ],
    );
    assert_eq!(
        outcomes[1],
        StatusOutcome::Refused(StatusError::MissingDepartment)
    );
    let written: Vec<(TicketId, &str)> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Ticket { ticket, created } => {
                assert!(!created);
                Some((ticket.id, "ticket"))
            }
            Write::History { ticket, .. } => Some((*ticket, "history")),
            _ => None,
        })
        .collect();
    assert_eq!(
        written,
        [(a, "ticket"), (a, "history"), (b, "ticket"), (b, "history")]
    );
    assert_eq!(r.state.histories[&a], vec![]);
    assert_eq!(r.state.tickets[&a].status, TicketStatus::Received);
}
