//! Idempotency keys: a retry returns the original ticket, a different
//! complaint under a known key is a conflict, also within one entry.

use intake_core::{SubmitOutcome, TicketId};
use openraft::alias::StoredMembershipOf;

use super::fixtures::{complaint, new_node, outcomes, submit};
use crate::TypeConfig;

#[tokio::test]
async fn retries_and_conflicts() {
    let (_dir, node) = new_node();
    let sm = node.state_machine(3).unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();

    let first = outcomes(
        sm.apply_entry(submit(1, 100, vec![complaint("a", "x")]), &mut membership)
            .unwrap(),
    );
    let id_a = TicketId::new(3, 1, 0);
    assert_eq!(
        first,
        vec![SubmitOutcome::Created {
            id: id_a,
            accepted_at: 100
        }]
    );

    let again = outcomes(
        sm.apply_entry(
            submit(2, 200, vec![complaint("a", "x"), complaint("a", "changed")]),
            &mut membership,
        )
        .unwrap(),
    );
    assert_eq!(
        again,
        vec![
            SubmitOutcome::Existing {
                id: id_a,
                accepted_at: 100
            },
            SubmitOutcome::Conflict { id: id_a }
        ]
    );

    // The same key twice in one entry: the second sees the first.
    let within = outcomes(
        sm.apply_entry(
            submit(
                3,
                300,
                vec![
                    complaint("b", "1"),
                    complaint("b", "1"),
                    complaint("b", "2"),
                    complaint("c", "1"),
                ],
            ),
            &mut membership,
        )
        .unwrap(),
    );
    let id_b = TicketId::new(3, 3, 0);
    assert_eq!(
        within,
        vec![
            SubmitOutcome::Created {
                id: id_b,
                accepted_at: 300
            },
            SubmitOutcome::Existing {
                id: id_b,
                accepted_at: 300
            },
            SubmitOutcome::Conflict { id: id_b },
            SubmitOutcome::Created {
                id: TicketId::new(3, 3, 3),
                accepted_at: 300
            },
        ]
    );

    assert_eq!(sm.ticket_count().unwrap(), 3);
    assert_eq!(sm.applied().unwrap(), Some(3));
    assert_eq!(sm.lookup_key("b").unwrap(), Some(id_b));
    assert_eq!(sm.lookup_key("zzz").unwrap(), None);
    let ticket = sm.get_ticket(&id_a).unwrap().unwrap();
    assert_eq!(
        (
            ticket.complaint.text.as_str(),
            ticket.accepted_at,
            ticket.log_index
        ),
        ("x", 100, 1)
    );
    // A ticket id of another shard is never found here.
    assert_eq!(sm.get_ticket(&TicketId::new(4, 1, 0)).unwrap(), None);
    let order: Vec<_> = sm
        .tickets_from(0, 10)
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(order, vec![id_a, id_b, TicketId::new(3, 3, 3)]);
}
