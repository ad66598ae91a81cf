//! `intake load --scenario` end to end: the smoke scenario against a cluster
//! the tool spawns itself (3 nodes and the reference sink on free loopback
//! ports), with a leader killed and restarted and the sink stopped and
//! started, must end with nothing lost or duplicated and a full report.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_intake");

#[test]
fn smoke_scenario_on_spawned_cluster_loses_nothing_and_writes_a_report() {
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../loadtests/scenarios/smoke.toml");
    let report = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let out = Command::new(BIN)
        .args(["load", "--spawn", "3", "--scenario"])
        .arg(&scenario)
        .arg("--report")
        .arg(report.path())
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
        let p = report.path().join(f);
        assert!(
            p.metadata().is_ok_and(|m| m.len() > 0),
            "{} missing or empty",
            p.display()
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.path().join("report.json")).unwrap()).unwrap();
    let faults = json["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 4, "{faults:?}");
    assert!(
        faults.iter().all(|f| f["ok"] == true),
        "a fault failed: {faults:?}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
}
