//! What several process tests share: running `intake`, reading its
//! contract lines and acknowledgement files, and checking the sink's file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};

pub const BIN: &str = env!("CARGO_BIN_EXE_intake");

pub fn intake<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// `intake load --acked-out`'s file: (key, ticket) per line.
pub fn read_acked(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, t)| (k.to_string(), t.to_string()))
        .collect()
}

pub fn last_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or("")
        .to_string()
}

/// The number after `name=` on a contract line.
pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
}

/// The sink's file, checked: every ticket once, every key with one ticket,
/// each shard's tickets in commit order, every record complete. Returns
/// ticket -> key, and the shards that delivered.
pub fn sink_tickets(path: &Path) -> (HashMap<String, String>, Vec<u64>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut tickets = HashMap::new();
    let mut keys = HashMap::new();
    let mut last: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for l in text.lines() {
        let r: serde_json::Value = serde_json::from_str(l).unwrap();
        let id = r["ticket_id"].as_str().unwrap().to_string();
        let key = r["idempotency_key"].as_str().unwrap().to_string();
        assert!(
            tickets.insert(id.clone(), key.clone()).is_none(),
            "{id} delivered twice"
        );
        assert!(
            keys.insert(key.clone(), id).is_none(),
            "key {key} has two tickets"
        );
        for k in ["district", "accepted_at", "shard"] {
            assert!(!r[k].is_null(), "{k} missing in {l}");
        }
        let shard = r["shard"].as_u64().unwrap();
        let pos = (r["log_index"].as_u64().unwrap(), r["item"].as_u64().unwrap());
        if let Some(prev) = last.insert(shard, pos) {
            assert!(prev < pos, "shard {shard} out of order: {prev:?} then {pos:?}");
        }
    }
    (tickets, last.into_keys().collect())
}

/// Every acknowledged (key, ticket) is in the sink's `tickets`.
pub fn all_delivered(tickets: &HashMap<String, String>, acked: &[(String, String)]) {
    for (key, ticket) in acked {
        assert_eq!(
            tickets.get(ticket),
            Some(key),
            "ticket {ticket} of {key} not delivered"
        );
    }
}

/// Waits for a background `intake load`, asserts it ended cleanly with
/// nothing lost or duplicated, and returns what it acknowledged.
pub fn finish_load(load: std::process::Child, acked_file: &Path, logs: &Path) -> Vec<(String, String)> {
    let out = load.wait_with_output().unwrap();
    let line = last_line(&out);
    assert!(
        out.status.success(),
        "load failed: {line}; logs in {}",
        logs.display()
    );
    assert_eq!(
        (field(&line, "lost"), field(&line, "duplicates")),
        (0, 0),
        "{line}"
    );
    read_acked(acked_file)
}
