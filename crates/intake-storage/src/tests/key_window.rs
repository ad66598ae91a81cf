//! The idempotency window: `CompactKeys` forgets keys of tickets accepted
//! before its cut-off, identically on every replica, keeps the tickets, and
//! snapshots carry the age index so a follower installed from one compacts
//! the same keys later.

use intake_core::{Command, CommandResponse, SubmitOutcome, TicketId};
use openraft::alias::StoredMembershipOf;
use openraft::entry::RaftEntry;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::log_id;

use super::fixtures::{Entry, complaint, new_node, outcomes, submit};
use crate::{StateMachine, TypeConfig};

fn compact(index: u64, before: i64) -> Entry {
    Entry::new_normal(log_id::<TypeConfig>(1, 1, index), Command::CompactKeys { before })
}

/// Tickets "old-i" accepted at 100+i and "new-i" at 10_000+i.
fn fill(sm: &StateMachine) {
    let mut m = StoredMembershipOf::<TypeConfig>::default();
    for i in 0..5u64 {
        sm.apply_entry(
            submit(1 + i, 100 + i as i64, vec![complaint(&format!("old-{i}"), "t")]),
            &mut m,
        )
        .unwrap();
        sm.apply_entry(
            submit(
                10 + i,
                10_000 + i as i64,
                vec![complaint(&format!("new-{i}"), "t")],
            ),
            &mut m,
        )
        .unwrap();
    }
}

#[tokio::test]
async fn expired_keys_are_forgotten_and_tickets_kept() {
    let (_dir, node) = new_node();
    let sm = node.state_machine(1).unwrap();
    fill(&sm);
    let mut m = StoredMembershipOf::<TypeConfig>::default();
    let resp = sm.apply_entry(compact(20, 5_000), &mut m).unwrap();
    assert_eq!(resp, CommandResponse::Compacted { keys: 5, more: false });
    for i in 0..5u64 {
        assert_eq!(sm.lookup_key(&format!("old-{i}")).unwrap(), None);
        assert!(
            sm.get_ticket(&TicketId::new(1, 1 + i, 0)).unwrap().is_some(),
            "tickets stay"
        );
        assert_eq!(
            sm.lookup_key(&format!("new-{i}")).unwrap(),
            Some(TicketId::new(1, 10 + i, 0))
        );
    }
    // Compacting again is a no-op, and a forgotten key makes a new ticket.
    let resp = sm.apply_entry(compact(21, 5_000), &mut m).unwrap();
    assert_eq!(resp, CommandResponse::Compacted { keys: 0, more: false });
    let again = outcomes(
        sm.apply_entry(submit(22, 20_000, vec![complaint("old-0", "t")]), &mut m)
            .unwrap(),
    );
    assert_eq!(
        again,
        vec![SubmitOutcome::Created {
            id: TicketId::new(1, 22, 0),
            accepted_at: 20_000
        }]
    );
    // Compacting the new generation does not touch the re-used key's new ticket.
    let resp = sm.apply_entry(compact(23, 15_000), &mut m).unwrap();
    assert_eq!(resp, CommandResponse::Compacted { keys: 5, more: false });
    assert_eq!(sm.lookup_key("old-0").unwrap(), Some(TicketId::new(1, 22, 0)));
}

#[tokio::test]
async fn replicas_forget_the_same_keys_and_snapshots_carry_the_index() {
    let (_a_dir, a) = new_node();
    let mut sm_a = a.state_machine(1).unwrap();
    fill(&sm_a);
    let snap = sm_a.build_snapshot().await.unwrap();

    // Replica b starts from a's snapshot, then both apply the same compaction.
    let (_b_dir, b) = new_node();
    let mut sm_b = b.state_machine(1).unwrap();
    let mut cur = sm_a.get_current_snapshot().await.unwrap().unwrap();
    let mut buf = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut cur.snapshot, &mut buf)
        .await
        .unwrap();
    let mut w = b.snapshot_writer(1).unwrap();
    w.write(&buf).await.unwrap();
    let data = w.finish().await.unwrap();
    sm_b.install_snapshot(&snap.meta, data).await.unwrap();

    let mut m = StoredMembershipOf::<TypeConfig>::default();
    let ra = sm_a.apply_entry(compact(20, 10_003), &mut m).unwrap();
    let rb = sm_b.apply_entry(compact(20, 10_003), &mut m).unwrap();
    assert_eq!(ra, CommandResponse::Compacted { keys: 8, more: false });
    assert_eq!(ra, rb);
    for key in ["old-0", "old-4", "new-0", "new-2", "new-3", "new-4"] {
        assert_eq!(
            sm_a.lookup_key(key).unwrap(),
            sm_b.lookup_key(key).unwrap(),
            "{key}"
        );
    }
    assert_eq!(sm_b.lookup_key("new-3").unwrap(), Some(TicketId::new(1, 13, 0)));
}
