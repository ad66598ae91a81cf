//! `intake load --scenario` end to end against a cluster the tool spawns
//! itself (3 nodes and the reference sink on free loopback ports): with
//! faults injected, nothing acknowledged may be lost or duplicated, in the
//! cluster or at the sink, and the report must be written.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_intake");

/// Runs `intake load --spawn 3 --scenario FILE --report DIR`, asserts a
/// clean exit, a clean contract line, a clean sink line and the report
/// files, and returns the report's JSON.
fn run_clean(scenario: &Path, report: &Path) -> serde_json::Value {
    run_clean_with(scenario, report, &[])
}

/// As [`run_clean`], with more `intake load` flags.
fn run_clean_with(scenario: &Path, report: &Path, flags: &[&str]) -> serde_json::Value {
    run_clean_within(scenario, report, flags, Duration::from_secs(60))
}

/// As [`run_clean_with`], for a scenario that may take up to `max`.
fn run_clean_within(scenario: &Path, report: &Path, flags: &[&str], max: Duration) -> serde_json::Value {
    let began = Instant::now();
    let out = Command::new(BIN)
        .args(["load", "--spawn", "3", "--scenario"])
        .arg(scenario)
        .arg("--report")
        .arg(report)
        .args(flags)
        .output()
        .unwrap();
    let took = began.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    let last = stdout.lines().last().unwrap_or_default();
    let field = |name: &str| -> u64 {
        last.split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in the last line {last:?}"))
    };
    assert!(last.starts_with("acked="), "contract line last: {last:?}");
    assert!(field("acked") > 0, "{last}");
    assert_eq!(field("lost"), 0, "{stdout}");
    assert_eq!(field("duplicates"), 0, "{stdout}");
    assert!(
        stdout.lines().any(|l| l == "sink_missing=0 sink_duplicates=0"),
        "sink line missing or not clean:\n{stdout}"
    );
    for f in ["report.json", "report.md", "chart.svg"] {
        let p = report.join(f);
        assert!(
            p.metadata().is_ok_and(|m| m.len() > 0),
            "{} missing or empty",
            p.display()
        );
    }
    assert!(took < max, "took {took:?}");
    serde_json::from_slice(&std::fs::read(report.join("report.json")).unwrap()).unwrap()
}

fn faults_all_ok(json: &serde_json::Value, n: usize) {
    let faults = json["faults"].as_array().unwrap();
    assert_eq!(faults.len(), n, "{faults:?}");
    assert!(
        faults.iter().all(|f| f["ok"] == true),
        "a fault failed: {faults:?}"
    );
}

/// Nodes 4 and 5 join and the replicas rebalance while a shard leader is
/// killed with -9; then nodes 1 and 2 are removed (drained, off the map,
/// exited): nothing lost or duplicated, every fault done.
#[test]
fn scale_out_scenario_grows_and_shrinks_the_cluster_under_load() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/scenarios/scale-out.toml");
    let report = tempfile::tempdir().unwrap();
    let json = run_clean_within(&scenario, report.path(), &[], Duration::from_secs(180));
    faults_all_ok(&json, 6);
}

/// Leader killed and restarted, sink stopped and started.
#[test]
fn smoke_scenario_on_spawned_cluster_loses_nothing_and_writes_a_report() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/scenarios/smoke.toml");
    let report = tempfile::tempdir().unwrap();
    let json = run_clean(&scenario, report.path());
    faults_all_ok(&json, 4);
}

/// The same with complaints sent to their shard leaders first
/// (`--route-to-leaders`): the leader it kills is the one the map names
/// until the next refresh, and the rotation must carry the retries past it.
#[test]
fn smoke_scenario_routed_to_leaders_loses_nothing() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/scenarios/smoke.toml");
    let report = tempfile::tempdir().unwrap();
    let json = run_clean_with(&scenario, report.path(), &["--route-to-leaders"]);
    faults_all_ok(&json, 4);
}

/// The faults smoke.toml does not use: a node frozen and resumed (to its
/// peers, cut off and back), and the sink frozen for a while.
#[test]
fn scenario_cut_heal_and_stall_sink_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let scenario = dir.path().join("cut.toml");
    std::fs::write(
        &scenario,
        r#"
name = "cut"
description = "freeze node 2 for 3 s, then the sink for 2 s"
[defaults]
max_attempts = 4
[[phase]]
name = "p"
duration_s = 10
rate = 50
[[fault]]
at_s = 2
action = "cut_node"
node = 2
[[fault]]
at_s = 5
action = "heal_node"
node = 2
[[fault]]
at_s = 6
action = "stall_sink"
for_s = 2
"#,
    )
    .unwrap();
    let json = run_clean(&scenario, &dir.path().join("report"));
    faults_all_ok(&json, 3);
}
