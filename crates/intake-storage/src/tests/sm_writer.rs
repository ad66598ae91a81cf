//! Applies of many shards at once go through the node's one writer, several
//! shards' batches in a transaction: each shard ends with exactly its own
//! tickets, its applied id and its delivery count, as if written alone.

use openraft::storage::RaftStateMachine;

use super::fixtures::{complaint, new_node, outcomes, submit};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_shards_applying_at_once_each_keep_exactly_their_own() {
    let (_dir, node) = new_node();
    let mut tasks = Vec::new();
    for shard in 1..=8u32 {
        let mut sm = node.state_machine(shard).unwrap();
        tasks.push(tokio::spawn(async move {
            for index in 1..=40u64 {
                let complaints = (0..3)
                    .map(|i| complaint(&format!("s{shard}-{index}-{i}"), "a pothole on the road"))
                    .collect();
                let e = submit(index, 1_000 + index as i64, complaints);
                sm.apply(futures::stream::iter([Ok((e, None))])).await.unwrap();
            }
            sm
        }));
    }
    for t in tasks {
        let sm = t.await.unwrap();
        assert_eq!(sm.ticket_count().unwrap(), 120, "shard {}", sm.shard());
        assert_eq!(sm.applied().unwrap(), Some(40));
        assert_eq!(sm.dispatch_state().unwrap().created, 120);
        // A retry of an old key finds its ticket.
        let again = sm
            .apply_entry(
                submit(
                    41,
                    9_000,
                    vec![complaint(
                        &format!("s{}-7-1", sm.shard()),
                        "a pothole on the road",
                    )],
                ),
                &mut sm_membership(),
            )
            .unwrap();
        assert!(matches!(
            outcomes(again)[0],
            intake_core::SubmitOutcome::Existing { .. }
        ));
    }
}

fn sm_membership() -> openraft::alias::StoredMembershipOf<crate::TypeConfig> {
    Default::default()
}
