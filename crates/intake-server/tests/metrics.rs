//! `/metrics` follows Prometheus conventions: a real 3-node cluster (one
//! metrics recorder per process, so node 1's `/metrics` shows what all three
//! recorded), complaints submitted so that every family the node exports
//! appears, then the page fetched over HTTP: every family has HELP and TYPE,
//! and `promtool check metrics` (when installed) finds nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning, submit};
use intake_proto::pb;
use intake_server::config::DispatchConfig;
use intake_server::observe::{FAMILIES, Kind};
use intake_sink::{Sink, SinkOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A few of Beijing's districts, spread over the cluster's shards.
const DISTRICTS: [&str; 4] = ["110101", "110102", "110105", "110106"];

/// `GET /metrics` over HTTP/1.0; the body, or `None` while not served.
async fn scrape(addr: &str) -> Option<String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        let (head, body) = out.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.0 200").then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// What the text format says of each family: its HELP, its TYPE, and
/// whether it has samples.
#[derive(Default, Debug)]
struct Seen {
    help: bool,
    kind: Option<String>,
    samples: usize,
}

fn parse(page: &str) -> BTreeMap<String, Seen> {
    let mut families: BTreeMap<String, Seen> = BTreeMap::new();
    for line in page.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap_or_default();
            families.entry(name.to_string()).or_default().help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().unwrap_or_default();
            families.entry(name.to_string()).or_default().kind = parts.next().map(str::to_string);
        } else if !line.trim().is_empty() && !line.starts_with('#') {
            let sample = line.split(['{', ' ']).next().unwrap_or_default();
            // Histogram and summary samples carry a suffix; the family is
            // the name without it when that family is declared.
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| sample.strip_suffix(s))
                .filter(|base| families.contains_key(*base))
                .unwrap_or(sample);
            families.entry(family.to_string()).or_default().samples += 1;
        }
    }
    families
}

fn missing_families(page: &str) -> Vec<&'static str> {
    let seen = parse(page);
    FAMILIES
        .iter()
        .map(|f| f.name)
        .filter(|n| seen.get(*n).is_none_or(|s| s.samples == 0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_family_on_metrics_has_help_and_type_and_promtool_finds_nothing() {
    // The reference sink, so that tickets are delivered and counted.
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::open(&dir.path().join("sink.jsonl"), SinkOptions::default()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap().to_string();
    let sink_task = tokio::spawn(sink.serve(listener, std::future::pending()));

    let http = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let cluster = TestCluster::start_configured(3, 2, fast_tuning(), move |cfg| {
        if cfg.node_id == 1 {
            cfg.http = Some(http);
        }
        cfg.dispatch = DispatchConfig {
            target: Some(target.clone()),
            ..DispatchConfig::default()
        };
    })
    .await;
    for shard in 0..2 {
        cluster.wait_shard_leader(shard, Duration::from_secs(30)).await;
    }

    // Through every node, so that followers forward; one invalid complaint,
    // one SubmitBatch.
    for id in 1..=3u64 {
        let mut client = cluster.client(id).await;
        for (i, d) in DISTRICTS.iter().enumerate() {
            let c = complaint(&format!("m-{id}-{i}"), d, "street light out");
            submit(&mut client, c).await.unwrap();
        }
    }
    let mut client = cluster.client(2).await;
    let bad = client
        .submit(pb::SubmitRequest {
            complaint: Some(complaint("m-bad", "000000", "")),
        })
        .await;
    assert_eq!(bad.map(|_| ()).unwrap_err().code(), tonic::Code::InvalidArgument);
    let batch = pb::SubmitBatchRequest {
        complaints: DISTRICTS
            .iter()
            .enumerate()
            .map(|(i, d)| complaint(&format!("m-batch-{i}"), d, "no water"))
            .collect(),
    };
    client.submit_batch(batch.clone()).await.unwrap();
    // The hops count comes from a header anyone can send; as a label it
    // must stay within the router's values, whatever the header says.
    let mut forged = tonic::Request::new(batch);
    forged.metadata_mut().insert(
        intake_server::HOPS_HEADER,
        tonic::metadata::MetadataValue::from_static("4096"),
    );
    let _ = client.submit_batch(forged).await;

    // The reporter runs once a second and delivery follows commits: wait,
    // bounded, until every described family has samples.
    let addr = http.to_string();
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = scrape(&addr).await.unwrap_or_default();
        let missing = missing_families(&page);
        if missing.is_empty() {
            break page;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "families never appeared on /metrics: {missing:?}\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };

    let seen = parse(&page);
    let described: BTreeMap<&str, Kind> = FAMILIES.iter().map(|f| (f.name, f.kind)).collect();
    let mut problems = Vec::new();
    for (name, s) in &seen {
        if !s.help {
            problems.push(format!("{name}: no HELP"));
        }
        match (s.kind.as_deref(), described.get(name.as_str())) {
            (None, _) => problems.push(format!("{name}: no TYPE")),
            (_, None) => problems.push(format!("{name}: not in observe::FAMILIES")),
            (Some(t), Some(k)) => {
                let want: &[&str] = match k {
                    Kind::Counter => &["counter"],
                    Kind::Gauge => &["gauge"],
                    Kind::Histogram => &["histogram", "summary"],
                };
                if !want.contains(&t) {
                    problems.push(format!("{name}: TYPE {t}, described as {k:?}"));
                }
            }
        }
        if matches!(s.kind.as_deref(), Some("counter")) && !name.ends_with("_total") {
            problems.push(format!("{name}: a counter without _total"));
        }
    }
    let hops: BTreeMap<&str, usize> = page
        .lines()
        .filter(|l| l.starts_with("intake_submit_batch_seconds"))
        .filter_map(|l| l.split("hops=\"").nth(1)?.split('"').next())
        .fold(BTreeMap::new(), |mut m, h| {
            *m.entry(h).or_default() += 1;
            m
        });
    if hops.keys().any(|h| !["0", "1", "2"].contains(h)) {
        problems.push(format!("intake_submit_batch_seconds: hops label values {hops:?}"));
    }
    assert!(problems.is_empty(), "{problems:#?}\n{page}");

    promtool_check(&page);

    sink_task.abort();
    cluster.shutdown().await;
}

/// `promtool check metrics` reads the page on stdin and prints each lint
/// problem; clean is exit 0 and no output.
fn promtool_check(page: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            println!(
                "SKIPPED promtool check: promtool is not on PATH ({e}); apt-get install prometheus provides it"
            );
            return;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(page.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}\n{said}",
        out.status
    );
}
