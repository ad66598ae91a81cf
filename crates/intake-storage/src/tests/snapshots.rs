//! Snapshots: build, transfer, install, crash during install, bad input.

use std::io;

use intake_core::TicketId;
use openraft::alias::StoredMembershipOf;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};

use super::fixtures::{complaint, new_node, open_at, submit};
use crate::{NodeStorage, StateMachine, TypeConfig, keys, snapshot};

fn fill(sm: &StateMachine, from: u64, to: u64) {
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    for i in from..=to {
        let cs = vec![
            complaint(&format!("k{i}"), "text"),
            complaint(&format!("j{i}"), "more"),
        ];
        sm.apply_entry(submit(i, i as i64, cs), &mut membership).unwrap();
    }
}

fn assert_has(sm: &StateMachine, upto: u64) {
    assert_eq!(sm.applied().unwrap(), Some(upto));
    assert_eq!(sm.ticket_count().unwrap(), 2 * upto);
    for i in 1..=upto {
        let id = TicketId::new(sm.shard(), i, 1);
        assert_eq!(sm.lookup_key(&format!("j{i}")).unwrap(), Some(id));
        assert_eq!(sm.get_ticket(&id).unwrap().unwrap().complaint.text, "more");
    }
}

#[tokio::test]
async fn build_then_install_elsewhere() {
    let (_a_dir, a) = new_node();
    let mut sm_a = a.state_machine(2).unwrap();
    fill(&sm_a, 1, 20);
    let snap = sm_a.build_snapshot().await.unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(20));

    // The receiving side gets the bytes in chunks, as the network delivers them.
    let (b_dir, b) = new_node();
    let mut sm_b = b.state_machine(2).unwrap();
    fill(&sm_b, 1, 3); // stale state that the snapshot replaces
    let bytes = tokio::fs::read(snapshot_path(&a, &sm_a).await).await.unwrap();
    let mut w = b.snapshot_writer(2).unwrap();
    for chunk in bytes.chunks(1000) {
        w.write(chunk).await.unwrap();
    }
    let data = w.finish().await.unwrap();
    sm_b.install_snapshot(&snap.meta, data).await.unwrap();

    assert_has(&sm_b, 20);
    assert_eq!(
        sm_b.get_current_snapshot().await.unwrap().unwrap().meta,
        snap.meta
    );
    let incoming = std::fs::read_dir(b_dir.path().join(snapshot::INCOMING_DIR))
        .unwrap()
        .count();
    assert_eq!(incoming, 0, "finished writers leave no files behind");
}

async fn snapshot_path(node: &NodeStorage, sm: &StateMachine) -> std::path::PathBuf {
    let dir = node.snapshot_dir(sm.shard());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "only the current snapshot is kept: {files:?}");
    files.remove(0)
}

/// The file is written from a point-in-time view: entries applied after the
/// view opened (while a large shard is still being scanned) are not in it,
/// and the applied state it holds names exactly what it holds.
#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_holds_the_state_of_its_view_while_applies_go_on() {
    let (_dir, node) = new_node();
    let sm = node.state_machine(1).unwrap();
    fill(&sm, 1, 6);
    let view = sm.tree.view();
    fill(&sm, 7, 9);
    assert_eq!(sm.applied().unwrap(), Some(9));
    let dir = tempfile::tempdir().unwrap();
    let path = snapshot::write_file(&view, true, dir.path(), "t").unwrap();
    let mut seen = std::collections::BTreeMap::new();
    snapshot::read_records(std::fs::File::open(path).unwrap(), |k, v| {
        seen.insert(k, v);
        Ok(())
    })
    .unwrap();
    assert!(seen.contains_key(keys::idem_key("k6").as_slice()));
    assert!(
        !seen.contains_key(keys::idem_key("k7").as_slice()),
        "an entry applied after the view"
    );
    let state = view.get(keys::SM_STATE).unwrap().unwrap();
    let (applied, _): crate::state_machine::AppliedState = keys::decode("applied state", &state).unwrap();
    assert_eq!(applied.map(|l| l.index), Some(6));
}

#[tokio::test]
async fn snapshot_build_waits_for_apply_and_holds_everything_applied() {
    let (_dir, node) = new_node();
    let sm = node.state_machine(1).unwrap();
    fill(&sm, 1, 6);
    // While an apply call holds the lock, a build must not scan the tree.
    let applying = sm.apply_lock.clone().lock_owned().await;
    let mut builder = sm.clone();
    let build = tokio::spawn(async move { builder.build_snapshot().await });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(!build.is_finished(), "build scanned while apply held the lock");
    drop(applying);
    let snap = build.await.unwrap().unwrap();
    assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(6));
    let mut keys_seen = Vec::new();
    snapshot::read_records(
        std::fs::File::open(snapshot_path(&node, &sm).await).unwrap(),
        |k, _| {
            keys_seen.push(k);
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(
        keys_seen.len(),
        6 * 2 * 3 + 1,
        "a ticket, a key and an age record per complaint, and the dispatch state"
    );
    assert!(keys_seen.contains(&keys::idem_key("k6").to_vec()));
}

#[tokio::test]
async fn crash_between_recording_and_loading_is_repaired_on_open() {
    let (_a_dir, a) = new_node();
    let mut sm_a = a.state_machine(5).unwrap();
    fill(&sm_a, 1, 10);
    let snap = sm_a.build_snapshot().await.unwrap();

    let b_dir = tempfile::tempdir().unwrap();
    {
        let b = open_at(b_dir.path());
        let sm_b = b.state_machine(5).unwrap();
        fill(&sm_b, 1, 2);
        // Install stops after phase one, as if the process died there.
        sm_b.stage_snapshot(&snap.meta, snap.snapshot).await.unwrap();
        assert_eq!(sm_b.applied().unwrap(), Some(2));
        b.shutdown().await;
    }
    let b = open_at(b_dir.path());
    let sm_b = b.state_machine(5).unwrap();
    assert_has(&sm_b, 10);
    b.shutdown().await;
}

#[tokio::test]
async fn garbage_snapshot_is_rejected_and_changes_nothing() {
    let (_dir, node) = new_node();
    let mut sm = node.state_machine(0).unwrap();
    fill(&sm, 1, 2);
    let mut w = node.snapshot_writer(0).unwrap();
    w.write(b"INTKSNP1 but then nonsense follows").await.unwrap();
    let data = w.finish().await.unwrap();
    let meta = sm.build_snapshot().await.unwrap().meta;
    let before = sm.get_current_snapshot().await.unwrap().unwrap().meta;
    let err = sm.install_snapshot(&meta, data).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert_has(&sm, 2);
    assert_eq!(sm.get_current_snapshot().await.unwrap().unwrap().meta, before);
    // Only the current snapshot file remains: the rejected copy was removed.
    snapshot_path(&node, &sm).await;
}
