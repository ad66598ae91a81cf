//! Idempotency keys: a retry returns the original ticket, a different
//! complaint under a known key is a conflict, also within one entry.

use intake_core::{SubmitOutcome, TicketId};
use openraft::alias::StoredMembershipOf;
use openraft::entry::RaftEntry;

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

/// Entries applied together (one sled batch) give exactly what applying
/// them one by one gives: outcomes, tickets and the delivery count.
#[tokio::test]
async fn a_group_of_entries_applies_as_one_by_one_would() {
    let entries = || {
        vec![
            submit(1, 100, vec![complaint("a", "x"), complaint("b", "y")]),
            submit(2, 110, vec![complaint("a", "x")]),
            submit(3, 120, vec![complaint("b", "changed"), complaint("c", "z")]),
            crate::tests::fixtures::Entry::new_blank(openraft::testing::log_id::<TypeConfig>(1, 1, 4)),
            submit(5, 130, vec![complaint("c", "z"), complaint("d", "w")]),
        ]
    };
    let (_d1, one_by_one) = new_node();
    let sm1 = one_by_one.state_machine(2).unwrap();
    let mut m1 = StoredMembershipOf::<TypeConfig>::default();
    let mut expected = Vec::new();
    for e in entries() {
        expected.push(sm1.apply_entry(e, &mut m1).unwrap());
    }
    let (_d2, grouped) = new_node();
    let sm2 = grouped.state_machine(2).unwrap();
    let mut m2 = StoredMembershipOf::<TypeConfig>::default();
    let got = sm2.apply_group(entries(), &mut m2).unwrap();
    assert_eq!(format!("{got:?}"), format!("{expected:?}"));
    assert_eq!(sm2.applied().unwrap(), Some(5));
    assert_eq!(sm2.ticket_count().unwrap(), sm1.ticket_count().unwrap());
    assert_eq!(
        format!("{:?}", sm2.dispatch_state().unwrap()),
        format!("{:?}", sm1.dispatch_state().unwrap())
    );
}
