//! Incident grouping in apply: near-duplicates of one district and
//! category join the first one's incident, within one entry, across
//! entries, across a group of entries applied as one batch, and on a
//! replica that got the shard by snapshot.

use intake_core::TicketId;
use openraft::alias::StoredMembershipOf;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use super::fixtures::{complaint, new_node, submit};
use crate::TypeConfig;

const BURST: &str = "Water main burst on Guangqu Road near the north gate, the street is flooding";
const BURST_AGAIN: &str = "water main burst on Guangqu road near north gate - the street is flooding!";
const OTHER: &str = "Karaoke bar on the third floor plays loud music every night until 3am";

#[tokio::test]
async fn near_duplicates_share_the_first_tickets_incident_on_every_replica() {
    let (_dir, node) = new_node();
    let mut sm = node.state_machine(4).unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    sm.apply_entry(
        submit(1, 1_000, vec![complaint("a", BURST), complaint("b", OTHER)]),
        &mut membership,
    )
    .unwrap();
    let first = TicketId::new(4, 1, 0);
    // Alone so far: no incident.
    assert_eq!(sm.incident_of(&first).unwrap(), None);
    // A group of two entries applied as one batch, the second matching the first.
    sm.apply_group(
        vec![
            submit(2, 2_000, vec![complaint("c", BURST_AGAIN)]),
            submit(3, 3_000, vec![complaint("d", BURST), complaint("e", OTHER)]),
        ],
        &mut membership,
    )
    .unwrap();
    for id in [first, TicketId::new(4, 2, 0), TicketId::new(4, 3, 0)] {
        assert_eq!(sm.incident_of(&id).unwrap(), Some(first), "{id}");
    }
    let other = TicketId::new(4, 1, 1);
    assert_eq!(sm.incident_of(&TicketId::new(4, 3, 1)).unwrap(), Some(other));
    let largest = sm.largest_incidents(0, 5).unwrap();
    assert_eq!(largest.len(), 2);
    assert_eq!((largest[0].id, largest[0].count), (first, 3));
    assert_eq!((largest[1].id, largest[1].count), (other, 2));
    // Out of the window: closed, not listed, and a new match starts anew.
    assert!(sm.largest_incidents(3_001, 5).unwrap().is_empty());

    // A replica that receives the shard by snapshot groups the next one alike.
    let snap = sm.build_snapshot().await.unwrap();
    let (_dir_b, b) = new_node();
    let mut sm_b = b.state_machine(4).unwrap();
    let file = std::fs::read_dir(node.snapshot_dir(4))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = tokio::fs::read(file).await.unwrap();
    let mut w = b.snapshot_writer(4).unwrap();
    w.write(&bytes).await.unwrap();
    sm_b.install_snapshot(&snap.meta, w.finish().await.unwrap())
        .await
        .unwrap();
    for s in [&sm, &sm_b] {
        s.apply_entry(
            submit(4, 4_000, vec![complaint("f", BURST_AGAIN)]),
            &mut membership.clone(),
        )
        .unwrap();
        assert_eq!(s.incident_of(&TicketId::new(4, 4, 0)).unwrap(), Some(first));
    }
}

#[tokio::test]
async fn other_districts_categories_and_short_texts_stay_apart() {
    let (_dir, node) = new_node();
    let sm = node.state_machine(1).unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    let mut elsewhere = complaint("b", BURST);
    elsewhere.district = "110108".into();
    let mut other_category = complaint("c", BURST);
    other_category.category = "water_outage".into();
    sm.apply_entry(
        submit(
            1,
            1_000,
            vec![
                complaint("a", BURST),
                elsewhere,
                other_category,
                complaint("d", "flood!"),
                complaint("e", "flood!"),
            ],
        ),
        &mut membership,
    )
    .unwrap();
    for item in 0..5 {
        assert_eq!(
            sm.incident_of(&TicketId::new(1, 1, item)).unwrap(),
            None,
            "item {item}"
        );
    }
}

#[tokio::test]
async fn a_reopened_shard_rebuilds_its_index_and_groups_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    {
        let node = super::fixtures::open_at(dir.path());
        let sm = node.state_machine(2).unwrap();
        sm.apply_entry(submit(1, 1_000, vec![complaint("a", BURST)]), &mut membership)
            .unwrap();
        // One record per incident now, no band records.
        assert_eq!(sm.tree.scan_prefix([crate::keys::OPEN_PREFIX]).count(), 1);
        assert_eq!(sm.tree.scan_prefix([crate::keys::BAND_PREFIX]).count(), 0);
        node.shutdown().await;
    }
    let node = super::fixtures::open_at(dir.path());
    let sm = node.state_machine(2).unwrap();
    sm.apply_entry(
        submit(2, 2_000, vec![complaint("b", BURST_AGAIN)]),
        &mut membership,
    )
    .unwrap();
    let first = TicketId::new(2, 1, 0);
    assert_eq!(sm.incident_of(&TicketId::new(2, 2, 0)).unwrap(), Some(first));
    assert_eq!(sm.largest_incidents(0, 1).unwrap()[0].count, 2);
    node.shutdown().await;
}

/// A tree written by the previous version (twelve `i` band records per
/// incident) is converted on first use: the old incident is still joined.
#[tokio::test]
async fn band_records_of_the_earlier_layout_are_converted_and_still_joined() {
    use intake_core::incident::{self, IncidentEntry};
    let (_dir, node) = new_node();
    let sm = node.state_machine(5).unwrap();
    let old = TicketId::new(5, 1, 0);
    let entry = IncidentEntry {
        incident: old,
        signature: incident::fingerprint(BURST).unwrap(),
        last_at: 1_000,
        count: 1,
    };
    let mut position = crate::keys::ticket_key(&old).to_vec();
    position.remove(0);
    for b in incident::bands(&entry.signature) {
        let mut key = vec![crate::keys::BAND_PREFIX];
        key.extend_from_slice(b"110105\0noise\0");
        key.push(b.0);
        key.extend_from_slice(&b.1.to_be_bytes());
        key.extend_from_slice(&position);
        sm.tree.insert(key, postcard::to_stdvec(&entry).unwrap()).unwrap();
    }
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    sm.apply_entry(
        submit(2, 2_000, vec![complaint("b", BURST_AGAIN)]),
        &mut membership,
    )
    .unwrap();
    assert_eq!(sm.incident_of(&TicketId::new(5, 2, 0)).unwrap(), Some(old));
    assert_eq!(sm.tree.scan_prefix([crate::keys::BAND_PREFIX]).count(), 0);
    assert_eq!(sm.tree.scan_prefix([crate::keys::OPEN_PREFIX]).count(), 1);
}
