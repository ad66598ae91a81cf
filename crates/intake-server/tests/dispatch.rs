//! Delivery to the downstream and status coming back, end to end: real
//! nodes, the reference sink on a loopback port, real Raft.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use common::{TestCluster, complaint, fast_tuning, get_local, submit};
use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use intake_server::config::DispatchConfig;
use intake_sink::{Sink, SinkOptions, read_records};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;
use tonic_types::StatusExt;

/// The reference sink served in-process; `stop` ends it like a crash of the
/// process would (open calls fail, the file stays).
struct RunningSink {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start_sink(addr: &str, file: &Path, options: SinkOptions) -> RunningSink {
    let sink = Sink::open(file, options).unwrap();
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let listener = listener.expect("sink port stays free");
    let (stop, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = sink
            .serve(listener, async {
                let _ = rx.await;
            })
            .await;
    });
    RunningSink { stop, task }
}

impl RunningSink {
    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Per shard, the dispatch lag as `ClusterStatus` reports it.
async fn lags(addr: &str) -> Option<BTreeMap<u32, pb::DispatchLag>> {
    let mut admin = AdminServiceClient::connect(format!("http://{addr}")).await.ok()?;
    let s = admin
        .cluster_status(pb::ClusterStatusRequest { local: false })
        .await
        .ok()?
        .into_inner();
    s.shards
        .into_iter()
        .map(|sh| Some((sh.id, sh.dispatch_lag?)))
        .collect()
}

async fn wait_caught_up(addr: &str, shards: usize, timeout: Duration) -> BTreeMap<u32, pb::DispatchLag> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(l) = lags(addr).await
            && l.len() == shards
            && l.values().all(|d| d.tickets == 0)
        {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dispatch never caught up: {:?}",
            lags(addr).await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Checks the sink's file: every ticket exactly once, and per shard in
/// commit order.
fn check_file(file: &Path, acked: &HashSet<String>) {
    let records = read_records(file).unwrap();
    let mut seen = HashSet::new();
    let mut last: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
    for r in &records {
        assert!(seen.insert(r.ticket_id.clone()), "{} written twice", r.ticket_id);
        let pos = (r.log_index, r.item);
        if let Some(prev) = last.insert(r.shard, pos) {
            assert!(
                prev < pos,
                "shard {} out of order: {prev:?} then {pos:?}",
                r.shard
            );
        }
    }
    let missing: Vec<&String> = acked.iter().filter(|t| !seen.contains(*t)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged tickets never reached the sink: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

const DISTRICTS: [&str; 8] = [
    "110101", "110102", "110105", "110106", "110107", "110108", "110109", "110111",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_ticket_reaches_the_sink_once_through_outages_and_a_leader_change() {
    let sink_addr = free_addr();
    let target = sink_addr.clone();
    let mut cluster = TestCluster::start_configured(3, 8, fast_tuning(), move |cfg| {
        cfg.dispatch = DispatchConfig {
            target: Some(target.clone()),
            batch: 64,
            backoff_max: Duration::from_millis(500),
            ..DispatchConfig::default()
        };
    })
    .await;
    for shard in 0..8 {
        cluster.wait_shard_leader(shard, Duration::from_secs(30)).await;
    }
    let file = cluster.dir.path().join("sink.jsonl");
    // A sink that fails a third of its calls part-way.
    let sink = start_sink(
        &sink_addr,
        &file,
        SinkOptions {
            fail_share: 0.3,
            ..Default::default()
        },
    )
    .await;

    let mut acked = HashSet::new();
    let mut client = cluster.client(1).await;
    for i in 0..300 {
        let c = complaint(&format!("d-{i}"), DISTRICTS[i % 8], "burst pipe");
        acked.insert(submit(&mut client, c).await.unwrap().ticket_id);
    }
    // The sink goes away; tickets keep coming and wait.
    sink.stop().await;
    for i in 300..600 {
        let c = complaint(&format!("d-{i}"), DISTRICTS[i % 8], "burst pipe");
        acked.insert(submit(&mut client, c).await.unwrap().ticket_id);
    }
    let waiting = lags(&cluster.addr(1)).await.unwrap();
    assert!(
        waiting.values().map(|d| d.tickets).sum::<u64>() > 0,
        "{waiting:?}"
    );
    // The leader of shard 3 stops; another takes over from the replicated cursor.
    let leader = cluster.wait_shard_leader(3, Duration::from_secs(10)).await;
    cluster.stop_node(leader).await;
    let up = (1..=3).find(|id| *id != leader).unwrap();
    let mut client = cluster.client(up).await;
    let sink = start_sink(&sink_addr, &file, SinkOptions::default()).await;
    for i in 600..700 {
        let c = complaint(&format!("d-{i}"), DISTRICTS[i % 8], "burst pipe");
        acked.insert(submit(&mut client, c).await.unwrap().ticket_id);
    }
    let done = wait_caught_up(&cluster.addr(up), 8, Duration::from_secs(60)).await;
    assert_eq!(done.values().map(|d| d.delivered).sum::<u64>(), 700, "{done:?}");
    check_file(&file, &acked);

    cluster.start_node(leader).await;
    sink.stop().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_updates_flow_back_and_show_in_get_ticket() {
    let cluster = TestCluster::start_with(3, 1, fast_tuning()).await;
    cluster.wait_leader(Duration::from_secs(20)).await;
    let mut client = cluster.client(1).await;
    let t = submit(&mut client, complaint("s-1", "110105", "street light out"))
        .await
        .unwrap()
        .ticket_id;
    let update = |status: pb::TicketStatus, department: &str, note: &str| pb::UpdateStatusRequest {
        ticket_id: t.clone(),
        status: status as i32,
        department: department.into(),
        note: note.into(),
        reported_at: None,
    };
    // Through every node, so followers forward to the leader.
    let steps = [
        (pb::TicketStatus::Dispatched, "", "sent to district office"),
        (pb::TicketStatus::Assigned, "street lighting", ""),
        (pb::TicketStatus::Resolved, "", "lamp replaced"),
    ];
    for (i, (status, dept, note)) in steps.iter().enumerate() {
        let mut c = cluster.client(i as u64 + 1).await;
        let r = c
            .update_status(update(*status, dept, note))
            .await
            .unwrap()
            .into_inner();
        let ticket = r.ticket.unwrap();
        assert_eq!(ticket.status, *status as i32);
        assert_eq!(ticket.history.len(), i + 1);
    }
    // Final: nothing moves it any more.
    let err = client
        .update_status(update(pb::TicketStatus::Dispatched, "", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    // Malformed: a clear error naming the field, nothing proposed.
    let err = client
        .update_status(update(pb::TicketStatus::Assigned, "", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = err
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .into_iter()
        .map(|v| v.field)
        .collect();
    assert_eq!(fields, ["department"]);
    let mut bad = update(pb::TicketStatus::Dispatched, "", "");
    bad.ticket_id = "0-ZZZZZZ".into();
    let err = client.update_status(bad).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::InvalidArgument | Code::NotFound),
        "{err:?}"
    );

    // Every replica holds the same history.
    for id in 1..=3u64 {
        let mut c = cluster.client(id).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(tk) = get_local(&mut c, &t).await
                && tk.history.len() == 3
            {
                let statuses: Vec<i32> = tk.history.iter().map(|e| e.status).collect();
                assert_eq!(
                    statuses,
                    [
                        pb::TicketStatus::Dispatched as i32,
                        pb::TicketStatus::Assigned as i32,
                        pb::TicketStatus::Resolved as i32
                    ]
                );
                assert_eq!(tk.history[1].department, "street lighting");
                assert_eq!(tk.status, pb::TicketStatus::Resolved as i32);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {id} lacks the history"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    cluster.shutdown().await;
}
