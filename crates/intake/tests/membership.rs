//! Real `intake` processes on loopback: nodes join a running cluster
//! (`intake start --join`) and are listed at once (`intake node list`);
//! an id or address already in use is refused; a restarted member ignores
//! `--join`; a node joins through a member that holds no meta replica. Then
//! the elastic cluster under load: 3 -> 5 nodes with the replicas
//! rebalanced, kill -9 of a joining node and of a moving shard's leader,
//! two of the first three removed (`intake node remove`), and nothing
//! acknowledged lost, duplicated or left undelivered.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use intake_loadtest::cluster::{ClusterOptions, LocalCluster};

mod common;

use common::{BIN, all_delivered, finish_load, intake, sink_tickets};

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

/// A three-node cluster of `options`, every shard led, and a runtime for
/// the harness's waits.
fn three_nodes(options: ClusterOptions) -> (LocalCluster, tokio::runtime::Runtime) {
    let options = ClusterOptions { nodes: 3, ..options };
    let mut c = LocalCluster::new(Path::new(BIN), options).unwrap();
    for id in 1..=3 {
        c.start(id).unwrap();
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(c.wait_leaders(Duration::from_secs(60))).unwrap();
    (c, rt)
}

#[test]
fn nodes_join_a_running_cluster_and_are_listed_at_once() {
    let (mut c, rt) = three_nodes(ClusterOptions::default());
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
    // Up, or already receiving replicas as the cluster rebalances.
    assert!(matches!(four["state"].as_str(), Some("up" | "joining")), "{four}");
    for via in [2, 3, 4] {
        wait_listed(&c.addrs()[&via], 4, Duration::from_secs(5));
    }
    let listed = status(&c.addrs()[&1]).unwrap();
    // Every district on one shard (hot districts are not spread yet).
    let spread = listed["district_shards"].as_object().unwrap();
    assert_eq!(spread.len(), 16, "{listed}");
    assert!(
        spread
            .values()
            .all(|v| v.as_array().is_some_and(|a| a.len() == 1))
    );
    assert!(
        listed["nodes"].as_array().unwrap().iter().any(|n| n["id"] == 4),
        "{listed}"
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
    // Node 5 dies for good: without --force it is refused (it may come
    // back); with it, its replicas are rebuilt from the survivors.
    c.kill(5).unwrap();
    let endpoint = c.addrs()[&1].clone();
    let refused = intake(&["node", "remove", "--endpoint", &endpoint, "5"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("does not answer"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let forced = intake(&[
        "node",
        "remove",
        "--endpoint",
        &endpoint,
        "5",
        "--force",
        "--timeout",
        "120",
    ]);
    assert!(
        forced.status.success(),
        "{}{}",
        String::from_utf8_lossy(&forced.stdout),
        String::from_utf8_lossy(&forced.stderr)
    );
    let s = status(&endpoint).unwrap();
    for sh in s["shards"].as_array().unwrap() {
        let voters: Vec<u64> = sh["voters"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_u64())
            .collect();
        assert_eq!(voters.len(), 3, "{sh}");
        assert!(!voters.contains(&5), "{sh}");
    }
    assert_eq!(get_key(&c.addrs()[&4], &before).as_deref(), Some("join-before"));
}

/// Waits until `check` holds for `node list --json` through one of
/// `endpoints` (bounded by `timeout`); returns that list.
fn wait_list(
    endpoints: &[String],
    timeout: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + timeout;
    let mut last = serde_json::Value::Null;
    loop {
        for ep in endpoints {
            if let Some(list) = node_list(ep) {
                if check(&list) {
                    return list;
                }
                last = list;
            }
        }
        assert!(Instant::now() < end, "{what} not within {timeout:?}: {last}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Status through `endpoint`, as JSON.
fn status(endpoint: &str) -> Option<serde_json::Value> {
    let out = intake(&["status", "--endpoint", endpoint, "--json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}

#[test]
fn grow_three_to_five_then_remove_two_of_the_first_under_load_loses_nothing() {
    let (mut c, _rt) = three_nodes(ClusterOptions {
        sink: true,
        sink_report_every: 1,
        ..ClusterOptions::default()
    });
    c.start_sink().unwrap();
    let first: Vec<String> = (1..=3).map(|i| c.addrs()[&i].clone()).collect();

    // Open-loop load through the three first nodes for the whole run.
    let acked_file = c.dir().join("acked.txt");
    let load = Command::new(BIN)
        .args([
            "load",
            "--endpoints",
            &first.join(","),
            "--rate",
            "150",
            "--duration",
            "45",
        ])
        .args([
            "--deadline-ms",
            "10000",
            "--max-attempts",
            "30",
            "--concurrency",
            "512",
        ])
        .arg("--acked-out")
        .arg(&acked_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Node 4 joins; kill -9 it while replicas are moving onto it, then
    // bring it back with its data.
    c.join(4, &[1]).unwrap();
    wait_list(&first, Duration::from_secs(60), "a move onto node 4", |l| {
        l["moves"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["to"] == 4))
    });
    c.kill(4).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.start(4).unwrap();
    c.join(5, &[2]).unwrap();

    // While a shard's replica moves, kill -9 that shard's leader.
    let list = wait_list(&first, Duration::from_secs(60), "a shard move", |l| {
        l["moves"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["group"].is_u64()))
    });
    let shard = list["moves"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|m| m["group"].as_u64())
        .unwrap();
    let victim = first
        .iter()
        .find_map(|ep| status(ep)?["shards"][shard as usize]["leader"].as_u64())
        .unwrap();
    c.kill(victim).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    c.start(victim).unwrap();

    // The five balance out: 24 replicas, 4 or 5 each, nothing moving.
    let all: Vec<String> = (1..=5).map(|i| c.addrs()[&i].clone()).collect();
    wait_list(
        &all,
        Duration::from_secs(120),
        "a balanced five-node cluster",
        |l| {
            let nodes = l["nodes"].as_array().cloned().unwrap_or_default();
            nodes.len() == 5
                && l["moves"].as_array().is_some_and(Vec::is_empty)
                && nodes
                    .iter()
                    .all(|n| n["up"] == true && (4..=5).contains(&n["replicas"].as_u64().unwrap_or(0)))
        },
    );

    // Remove two of the first three; each exits 0 once removed.
    for id in [1u64, 2] {
        let out = intake(&[
            "node",
            "remove",
            "--endpoint",
            &c.addrs()[&3],
            &id.to_string(),
            "--timeout",
            "180",
        ]);
        assert!(
            out.status.success(),
            "node remove {id}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("node {id}: removed")));
        let exit = c.wait_exit(id, Duration::from_secs(30)).unwrap();
        assert!(exit.success(), "node {id} exited with {exit}");
        assert!(c.node_log(id).contains("removed from the cluster"));
    }
    // A third would leave two nodes for three replicas.
    let refused = intake(&["node", "remove", "--endpoint", &c.addrs()[&3], "3"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("would leave"));

    let acked = finish_load(load, &acked_file, c.dir());
    assert!(acked.len() > 1000, "only {} acknowledged", acked.len());

    // Every shard: three voters, all live (3, 4, 5), and its lag drained.
    let live: Vec<String> = (3..=5).map(|i| c.addrs()[&i].clone()).collect();
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let s = live.iter().find_map(|ep| status(ep)).unwrap();
        let shards = s["shards"].as_array().unwrap();
        let placed = shards.iter().all(|sh| {
            let mut v: Vec<u64> = sh["voters"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_u64())
                .collect();
            v.sort_unstable();
            v == vec![3, 4, 5]
        });
        let drained = shards.iter().all(|sh| sh["dispatch_lag"]["tickets"] == 0);
        if placed && drained && shards.len() == 8 {
            break;
        }
        assert!(
            Instant::now() < end,
            "not settled: {s}; logs in {}",
            c.dir().display()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The sink: every acknowledged ticket exactly once, no key with two.
    let (tickets, _) = sink_tickets(c.sink_file());
    all_delivered(&tickets, &acked);
    // And the cluster still finds them, through a node that joined.
    for (key, ticket) in acked.iter().step_by(97) {
        assert_eq!(get_key(&c.addrs()[&5], ticket).as_deref(), Some(key.as_str()));
    }
}
