use super::*;

fn ticket(id: &str) -> dpb::DispatchedTicket {
    dpb::DispatchedTicket {
        ticket_id: id.into(),
        idempotency_key: format!("key-{id}"),
        district: "110105".into(),
        shard: 1,
        ..Default::default()
    }
}

#[test]
fn redeliveries_are_counted_not_written_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.jsonl");
    let sink = Sink::open(&path, SinkOptions::default()).unwrap();
    let r = sink.take(&[ticket("a"), ticket("b")], 2);
    assert!(r.iter().all(|r| r.accepted));
    let r = sink.take(&[ticket("b"), ticket("c"), ticket("c")], 3);
    assert!(r.iter().all(|r| r.accepted));
    assert_eq!(sink.stats().written, 3);
    assert_eq!(sink.stats().redelivered, 2);
    drop(sink);

    let ids: Vec<String> = read_records(&path)
        .unwrap()
        .into_iter()
        .map(|r| r.ticket_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let again = Sink::open(&path, SinkOptions::default()).unwrap();
    assert_eq!(again.stats().loaded, 3);
    again.take(&[ticket("a"), ticket("d")], 2);
    let ids: Vec<String> = read_records(&path)
        .unwrap()
        .into_iter()
        .map(|r| r.ticket_id)
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
}

#[test]
fn a_line_cut_short_is_dropped_and_garbage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.jsonl");
    let sink = Sink::open(&path, SinkOptions::default()).unwrap();
    sink.take(&[ticket("a")], 1);
    drop(sink);
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"ticket_id":"b","idem"#).unwrap();
    drop(f);
    let sink = Sink::open(&path, SinkOptions::default()).unwrap();
    assert_eq!(sink.held(), 1);
    sink.take(&[ticket("b")], 1);
    let ids: Vec<String> = read_records(&path)
        .unwrap()
        .into_iter()
        .map(|r| r.ticket_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    drop(sink);

    std::fs::write(&path, "{\"ticket_id\":\"a\"}\nnot json\n").unwrap();
    let err = Sink::open(&path, SinkOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn refused_suffix_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sink.jsonl");
    let sink = Sink::open(&path, SinkOptions::default()).unwrap();
    let r = sink.take(&[ticket("a"), ticket("b"), ticket("c")], 1);
    assert_eq!(
        r.iter().map(|r| r.accepted).collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(sink.held(), 1);
    assert_eq!(sink.stats().refused, 2);
    assert!(
        Sink::open(
            &path,
            SinkOptions {
                fail_share: 1.5,
                ..Default::default()
            }
        )
        .is_err()
    );
}

use std::fs::OpenOptions;
use std::io::Write;
