//! The engine against a real directory: what is written survives a reopen, a
//! torn tail is cut, damage to acknowledged data stops the open, rotation
//! and clean-up keep exactly the live entries, and concurrent shards share
//! rounds.

use std::io::Write;

use super::*;

fn entry(index: u64, text: &str) -> Op {
    Op::Entry {
        index,
        bytes: text.as_bytes().to_vec(),
    }
}

fn indexes(e: &LogEngine, shard: ShardId) -> Vec<u64> {
    e.entries(shard, 0, None)
        .unwrap()
        .into_iter()
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test]
async fn writes_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open(dir.path()).unwrap();
        e.write(1, (1..=5).map(|i| entry(i, &format!("e{i}"))).collect())
            .await
            .unwrap();
        e.write(
            1,
            vec![Op::Meta {
                kind: MetaKind::Vote,
                value: Some(b"v1".to_vec()),
            }],
        )
        .await
        .unwrap();
        e.write(2, vec![entry(1, "other shard")]).await.unwrap();
        e.shutdown().await;
    }
    let e = LogEngine::open(dir.path()).unwrap();
    assert_eq!(
        e.entries(1, 2, Some(4)).unwrap(),
        vec![(2, b"e2".to_vec()), (3, b"e3".to_vec())]
    );
    assert_eq!(e.meta(1, MetaKind::Vote).unwrap(), Some(b"v1".to_vec()));
    assert_eq!(e.bounds(1).unwrap(), (Some(1), Some(5)));
    assert_eq!(e.entries(2, 0, None).unwrap(), vec![(1, b"other shard".to_vec())]);
    e.shutdown().await;
}

#[tokio::test]
async fn truncate_and_purge_hold_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open(dir.path()).unwrap();
        e.write(0, (1..=10).map(|i| entry(i, "a")).collect())
            .await
            .unwrap();
        e.write(0, vec![Op::TruncateFrom { index: 8 }, entry(8, "b")])
            .await
            .unwrap();
        e.write(0, vec![Op::PurgeTo { index: 3 }]).await.unwrap();
        e.shutdown().await;
    }
    let e = LogEngine::open(dir.path()).unwrap();
    assert_eq!(indexes(&e, 0), vec![4, 5, 6, 7, 8]);
    assert_eq!(e.entries(0, 8, None).unwrap(), vec![(8, b"b".to_vec())]);
    e.shutdown().await;
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open(dir.path()).unwrap();
        e.write(0, (1..=3).map(|i| entry(i, "kept")).collect())
            .await
            .unwrap();
        e.shutdown().await;
    }
    // A crash in the middle of the next round: half a record, then garbage.
    let newest = *segment::list(dir.path()).unwrap().last().unwrap();
    let mut half = Vec::new();
    let start = record::begin_round(&mut half);
    record::encode(0, &entry(4, "never acknowledged"), &mut half);
    record::finish_round(&mut half, start, 1_000);
    half.truncate(half.len() / 2);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(segment::path(dir.path(), newest))
        .unwrap();
    f.write_all(&half).unwrap();
    drop(f);
    let e = LogEngine::open(dir.path()).unwrap();
    assert_eq!(indexes(&e, 0), vec![1, 2, 3]);
    // And the log goes on being written after the cut.
    e.write(0, vec![entry(4, "new")]).await.unwrap();
    e.shutdown().await;
    let e = LogEngine::open(dir.path()).unwrap();
    assert_eq!(e.entries(0, 4, None).unwrap(), vec![(4, b"new".to_vec())]);
    e.shutdown().await;
}

#[tokio::test]
async fn damage_to_an_older_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open(dir.path()).unwrap();
        e.write(0, (1..=3).map(|i| entry(i, "acknowledged")).collect())
            .await
            .unwrap();
        e.shutdown().await;
    }
    {
        // A later start adds a segment, so the first is no longer the newest.
        let e = LogEngine::open(dir.path()).unwrap();
        e.shutdown().await;
    }
    let segments = segment::list(dir.path()).unwrap();
    assert!(segments.len() >= 2, "{segments:?}");
    let first = segment::path(dir.path(), segments[0]);
    let mut bytes = std::fs::read(&first).unwrap();
    let at = bytes.len() - 3;
    bytes[at] ^= 0xff;
    std::fs::write(&first, bytes).unwrap();
    match LogEngine::open(dir.path()) {
        Err(LogEngineError::Corrupt { segment, .. }) => assert_eq!(segment, segments[0]),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn damage_followed_by_an_acknowledged_round_refuses_to_open() {
    // Damage inside the newest segment is not a torn tail when a whole round
    // follows it: that round was written only after the damaged one's fsync.
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open(dir.path()).unwrap();
        e.write(0, vec![entry(1, "first round")]).await.unwrap();
        e.write(0, vec![entry(2, "second round")]).await.unwrap();
        e.shutdown().await;
    }
    let newest = *segment::list(dir.path()).unwrap().last().unwrap();
    let path = segment::path(dir.path(), newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.windows(11).position(|w| w == b"first round").unwrap();
    bytes[at] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    assert!(matches!(
        LogEngine::open(dir.path()),
        Err(LogEngineError::Corrupt { .. })
    ));
}

#[tokio::test]
async fn rotation_and_clean_up_keep_exactly_the_live_entries() {
    let dir = tempfile::tempdir().unwrap();
    let big = "x".repeat(1000);
    {
        // 4 KiB segments: a few entries each.
        let e = LogEngine::open_with(dir.path(), 4096).unwrap();
        for i in 1..=60 {
            e.write(0, vec![entry(i, &big)]).await.unwrap();
            e.write(1, vec![entry(i, "small")]).await.unwrap();
        }
        e.write(
            0,
            vec![Op::Meta {
                kind: MetaKind::Vote,
                value: Some(b"vote-0".to_vec()),
            }],
        )
        .await
        .unwrap();
        let before = e.segment_count();
        assert!(before > 10, "{before} segments");
        // Shard 1 holds old segments too; purge both, the way snapshots do.
        e.write(0, vec![Op::PurgeTo { index: 55 }]).await.unwrap();
        e.write(1, vec![Op::PurgeTo { index: 55 }]).await.unwrap();
        let after = e.segment_count();
        assert!(after < before / 2, "{before} -> {after} segments");
        e.shutdown().await;
    }
    let e = LogEngine::open_with(dir.path(), 4096).unwrap();
    assert_eq!(indexes(&e, 0), (56..=60).collect::<Vec<_>>());
    assert_eq!(indexes(&e, 1), (56..=60).collect::<Vec<_>>());
    // The vote was written in a segment since deleted; the checkpoints kept it.
    assert_eq!(e.meta(0, MetaKind::Vote).unwrap(), Some(b"vote-0".to_vec()));
    e.shutdown().await;
}

#[tokio::test]
async fn a_truncated_suffix_does_not_come_back_when_its_segment_is_reread() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = LogEngine::open_with(dir.path(), 2048).unwrap();
        for i in 1..=20 {
            e.write(0, vec![entry(i, &"y".repeat(300))]).await.unwrap();
        }
        // A new leader cuts the log back to 10 and writes a shorter term.
        e.write(0, vec![Op::TruncateFrom { index: 11 }]).await.unwrap();
        for i in 11..=12 {
            e.write(0, vec![entry(i, "new term")]).await.unwrap();
        }
        e.shutdown().await;
    }
    let e = LogEngine::open_with(dir.path(), 2048).unwrap();
    assert_eq!(indexes(&e, 0), (1..=12).collect::<Vec<_>>());
    assert_eq!(e.entries(0, 12, None).unwrap(), vec![(12, b"new term".to_vec())]);
    e.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_writing_at_once_share_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let e = LogEngine::open(dir.path()).unwrap();
    let start = e.rounds();
    let mut tasks = Vec::new();
    for shard in 0..8u32 {
        let e = e.clone();
        tasks.push(tokio::spawn(async move {
            for i in 1..=50 {
                e.write(shard, vec![entry(i, "c")]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rounds = e.rounds() - start;
    // 400 writes; with 8 writers waiting at once most rounds carry several.
    assert!(rounds < 400, "{rounds} rounds for 400 writes");
    for shard in 0..8 {
        assert_eq!(indexes(&e, shard).len(), 50);
    }
    e.shutdown().await;
    assert!(e.write(0, vec![entry(51, "late")]).await.is_err());
}
