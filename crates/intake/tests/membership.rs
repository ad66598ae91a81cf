//! Real `intake` processes on loopback: nodes join a running cluster
//! (`intake start --join`) and are listed at once (`intake node list`);
//! an id or address already in use is refused; a restarted member ignores
//! `--join`; a node joins through a member that holds no meta replica.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use intake_loadtest::cluster::{ClusterOptions, LocalCluster};

const BIN: &str = env!("CARGO_BIN_EXE_intake");

fn intake(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn free_addr() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

/// `intake node list --json` through `endpoint`, if it answers.
fn node_list(endpoint: &str) -> Option<serde_json::Value> {
    let out = intake(&["node", "list", "--endpoint", endpoint, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

/// The ids `endpoint` lists as members, once it answers; waits at most
/// `timeout` for `want` to be among them.
fn wait_listed(endpoint: &str, want: u64, timeout: Duration) -> serde_json::Value {
    let end = Instant::now() + timeout;
    loop {
        if let Some(list) = node_list(endpoint)
            && list["nodes"]
                .as_array()
                .is_some_and(|n| n.iter().any(|n| n["id"].as_u64() == Some(want)))
        {
            return list;
        }
        assert!(Instant::now() < end, "{endpoint} does not list node {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `intake submit` through `endpoint`, retried while leaders are elected.
fn submit(endpoint: &str, key: &str) -> String {
    let mut last = String::new();
    for _ in 0..80 {
        let out = intake(&[
            "submit",
            "--endpoint",
            endpoint,
            "--district",
            "110105",
            "--category",
            "flood",
            "--channel",
            "phone",
            "--text",
            "water in the underpass",
            "--idempotency-key",
            key,
        ]);
        if out.status.success() {
            return String::from_utf8(out.stdout).unwrap().trim().to_string();
        }
        last = String::from_utf8_lossy(&out.stderr).to_string();
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("submit {key} through {endpoint} kept failing: {last}");
}

fn get_key(endpoint: &str, ticket: &str) -> Option<String> {
    let out = intake(&["get", "--endpoint", endpoint, ticket, "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    t["idempotency_key"].as_str().map(String::from)
}

/// Starts a node that must be refused; returns what it printed.
fn refused_join(id: &str, listen: &str, advertise: &str, through: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = intake(&[
        "start",
        "--node-id",
        id,
        "--listen",
        listen,
        "--advertise",
        advertise,
        "--data-dir",
        data.to_str().unwrap(),
        "--join",
        through,
    ]);
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "node {id} was not refused: {text}");
    text
}

#[test]
fn nodes_join_a_running_cluster_and_are_listed_at_once() {
    let options = ClusterOptions {
        nodes: 3,
        ..ClusterOptions::default()
    };
    let mut c = LocalCluster::new(Path::new(BIN), options).unwrap();
    for id in 1..=3 {
        c.start(id).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.wait_leaders(Duration::from_secs(60))).unwrap();
    let before = submit(&c.addrs()[&1], "join-before");

    // Node 4 joins through node 2; the node that answers its join has the
    // new map, and every member lists it once it answers.
    c.join(4, &[2]).unwrap();
    rt.block_on(c.wait_answering(4, Duration::from_secs(60))).unwrap();
    let list = wait_listed(&c.addrs()[&1], 4, Duration::from_secs(5));
    let four = list["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == 4)
        .unwrap()
        .clone();
    assert_eq!(four["addr"].as_str(), Some(c.addrs()[&4].as_str()));
    assert_eq!(
        (four["state"].as_str(), four["replicas"].as_u64()),
        (Some("up"), Some(0))
    );
    for via in [2, 3, 4] {
        wait_listed(&c.addrs()[&via], 4, Duration::from_secs(5));
    }
    let status = intake(&["status", "--endpoint", &c.addrs()[&1], "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(
        status["nodes"].as_array().unwrap().iter().any(|n| n["id"] == 4),
        "{status}"
    );

    // It serves: a complaint through it gets a ticket every member finds,
    // and it finds the tickets made before it came.
    let after = submit(&c.addrs()[&4], "join-after");
    assert_eq!(get_key(&c.addrs()[&1], &after).as_deref(), Some("join-after"));
    assert_eq!(get_key(&c.addrs()[&4], &before).as_deref(), Some("join-before"));
    // A retry through the new node is the same ticket.
    assert_eq!(submit(&c.addrs()[&4], "join-before"), before);

    // Ids and addresses of members are refused, with the reason.
    let id_taken = refused_join("2", &free_addr(), &free_addr(), &c.addrs()[&1]);
    assert!(id_taken.contains("node id 2 is already a member"), "{id_taken}");
    let addr3 = c.addrs()[&3].clone();
    let addr_taken = refused_join("9", &free_addr(), &addr3, &c.addrs()[&4]);
    assert!(
        addr_taken.contains(&format!("address {addr3} is already the address of member 3")),
        "{addr_taken}"
    );
    let both = intake(&[
        "start",
        "--node-id",
        "9",
        "--join",
        &c.addrs()[&1],
        "--initial-cluster",
        "9=127.0.0.1:1",
    ]);
    assert!(!both.status.success());
    assert!(String::from_utf8_lossy(&both.stderr).contains("not both"));

    // Restarted with its data directory, node 4 ignores --join and is
    // listed once.
    c.kill(4).unwrap();
    c.start(4).unwrap();
    rt.block_on(c.wait_answering(4, Duration::from_secs(60))).unwrap();
    assert!(c.node_log(4).contains("--join ignored"), "{}", c.node_log(4));
    let list = wait_listed(&c.addrs()[&4], 4, Duration::from_secs(5));
    assert_eq!(
        list["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["id"] == 4)
            .count(),
        1
    );

    // Node 5 joins through node 4, which holds no meta replica: it finds the
    // meta voters from 4's map; node 4 follows the map and lists it.
    c.join(5, &[4]).unwrap();
    rt.block_on(c.wait_answering(5, Duration::from_secs(60))).unwrap();
    let list = wait_listed(&c.addrs()[&4], 5, Duration::from_secs(10));
    assert_eq!(list["nodes"].as_array().unwrap().len(), 5, "{list}");
    assert_eq!(get_key(&c.addrs()[&5], &after).as_deref(), Some("join-after"));
}
