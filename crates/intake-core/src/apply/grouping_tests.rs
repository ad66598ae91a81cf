//! The incident records apply writes for each created ticket.

use super::*;
use crate::apply::fixtures::{Replica, complaint, id, submit};
use crate::apply::{MemoryShard, Run};

const BURST: &str = "Water main burst on Guangqu Road near the north gate, the street is flooding";
const BURST_AGAIN: &str = "water main burst on Guangqu road near north gate - the street is flooding!";
const OTHER: &str = "Karaoke bar on the third floor plays loud music every night until 3am";

fn incident_writes(writes: &[Write<'static>]) -> Vec<Write<'static>> {
    writes
        .iter()
        .filter(|w| {
            matches!(
                w,
                Write::OpenIncident { .. }
                    | Write::CloseIncident { .. }
                    | Write::Member { .. }
                    | Write::Summary(_)
            )
        })
        .cloned()
        .collect()
}

#[test]
fn a_first_complaint_opens_an_incident_and_the_second_makes_it_listed() {
    let mut r = Replica::new();
    let (_, writes) = r.run(vec![(1, submit(1_000, vec![complaint("a", BURST)]))]);
    let first = id(1, 0);
    assert!(matches!(
        incident_writes(&writes)[..],
        [Write::OpenIncident { entry, .. }] if entry.incident == first && entry.count == 1
    ));
    assert!(r.state.summaries.is_empty() && r.state.members.is_empty());

    let (_, writes) = r.run(vec![(2, submit(2_000, vec![complaint("b", BURST_AGAIN)]))]);
    let summary = IncidentSummary {
        id: first,
        district: "110105".into(),
        category: "noise".into(),
        count: 2,
        first_at: 2_000,
        last_at: 2_000,
    };
    let w = incident_writes(&writes);
    assert!(matches!(&w[0], Write::OpenIncident { entry, .. } if entry.count == 2 && entry.last_at == 2_000));
    assert_eq!(
        w[1..],
        [
            Write::Member {
                ticket: first,
                incident: first
            },
            Write::Summary(Cow::Owned(summary)),
            Write::Member {
                ticket: id(2, 0),
                incident: first
            },
        ]
    );
}

#[test]
fn joins_later_in_the_same_run_count_on_from_the_runs_summary() {
    let mut r = Replica::new();
    r.run(vec![(1, submit(1_000, vec![complaint("a", BURST)]))]);
    r.run(vec![
        (2, submit(2_000, vec![complaint("b", BURST_AGAIN)])),
        (
            3,
            submit(3_000, vec![complaint("c", BURST), complaint("d", OTHER)]),
        ),
    ]);
    let s = &r.state.summaries[&id(1, 0)];
    assert_eq!((s.count, s.last_at), (3, 3_000));
    // The next batch reads the stored summary.
    r.run(vec![(4, submit(4_000, vec![complaint("e", BURST_AGAIN)]))]);
    assert_eq!(r.state.summaries[&id(1, 0)].count, 4);
    assert_eq!(r.state.members.len(), 4);
    assert_eq!(r.state.members.get(&id(3, 1)), None, "unrelated text stays apart");
}

#[test]
fn texts_too_short_to_compare_are_never_grouped() {
    let mut r = Replica::new();
    let (_, writes) = r.run(vec![(
        1,
        submit(1_000, vec![complaint("a", "flood!"), complaint("b", "flood!")]),
    )]);
    assert!(incident_writes(&writes).is_empty());
}

#[test]
fn an_incident_the_full_index_evicts_leaves_the_store() {
    let state = MemoryShard::new(crate::apply::fixtures::SHARD);
    let mut index = IncidentIndex::new(1);
    let mut writes: Vec<Write<'static>> = Vec::new();
    let mut run = Run::default();
    run.submit(
        &state,
        &mut index,
        1,
        1_000,
        vec![complaint("a", BURST), complaint("b", OTHER)],
        &mut writes,
    )
    .unwrap();
    assert!(writes.contains(&Write::CloseIncident { incident: id(1, 0) }));
    let mut after = state.clone();
    after.commit(writes);
    assert_eq!(after.open.keys().copied().collect::<Vec<_>>(), [id(1, 1)]);
}
