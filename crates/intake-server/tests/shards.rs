//! Five nodes, eight shards, in one process: placement, leader spread,
//! routing from any node, status, and a node lost and restarted.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use intake_core::{DistrictTable, TicketId};
use intake_proto::pb;
use intake_proto::pb::admin_service_client::AdminServiceClient;
use openraft::async_runtime::WatchReceiver;

async fn status(c: &TestCluster, via: u64) -> pb::ClusterStatusResponse {
    let ch = tonic::transport::Channel::from_shared(format!("http://{}", c.addr(via)))
        .unwrap()
        .connect_lazy();
    AdminServiceClient::new(ch)
        .cluster_status(pb::ClusterStatusRequest { local: false })
        .await
        .unwrap()
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_nodes_eight_shards() {
    let mut c = TestCluster::start_with(5, 8, fast_tuning()).await;
    let mut leaders = BTreeSet::new();
    for shard in 0..8 {
        leaders.insert(c.wait_shard_leader(shard, Duration::from_secs(30)).await);
        let hosts: Vec<u64> = c
            .nodes
            .iter()
            .filter(|(_, n)| n.raft(shard).is_some())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(hosts.len(), 3, "shard {shard} is hosted on {hosts:?}");
        let raft = c.nodes[&hosts[0]].raft(shard).unwrap();
        let voters: BTreeSet<u64> = raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        assert_eq!(voters, hosts.iter().copied().collect(), "shard {shard}");
    }
    assert!(leaders.len() >= 3, "shard leaders sit on {leaders:?}");

    // Every district, through every node; each lands on its district's shard.
    let map = c.nodes[&1].registry().map();
    let districts: Vec<String> = DistrictTable::beijing().iter().map(|d| d.code.clone()).collect();
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..2u64 {
        for (i, d) in districts.iter().enumerate() {
            let via = 1 + (i as u64 + round) % 5;
            let key = format!("s-{round}-{d}");
            let r = submit(&mut c.client(via).await, complaint(&key, d, "street light out"))
                .await
                .unwrap();
            let id: TicketId = r.ticket_id.parse().unwrap();
            assert_eq!(Some(id.shard), map.shard_for(d, 0), "district {d}");
            acked.insert(key, r.ticket_id);
        }
    }

    let s = status(&c, 3).await;
    assert_eq!(s.nodes.len(), 5);
    assert!(s.nodes.iter().all(|n| n.up));
    assert_eq!(s.shards.len(), 8);
    let mut all_districts = BTreeSet::new();
    for sh in &s.shards {
        assert!(sh.leader.is_some(), "{sh:?}");
        assert_eq!(sh.voters.len(), 3);
        assert!(!sh.districts.is_empty(), "shard {} has no district", sh.id);
        all_districts.extend(sh.districts.iter().cloned());
    }
    assert_eq!(all_districts.len(), 16);

    // Lose a node: every district stays writable, every ticket readable.
    c.stop_node(2).await;
    for (i, d) in districts.iter().enumerate() {
        let via = [1, 3, 4, 5][i % 4];
        let key = format!("after-{d}");
        let r = submit(
            &mut c.client(via).await,
            complaint(&key, d, "tree fell on the road"),
        )
        .await
        .unwrap();
        acked.insert(key, r.ticket_id);
    }
    for via in [1, 3, 4, 5] {
        let mut client = c.client(via).await;
        for (key, ticket) in &acked {
            let t = client
                .get_ticket(pb::GetTicketRequest {
                    ticket_id: ticket.clone(),
                    local: false,
                })
                .await
                .unwrap_or_else(|e| panic!("node {via}: {ticket}: {e}"))
                .into_inner()
                .ticket
                .unwrap();
            assert_eq!(&t.complaint.unwrap().idempotency_key, key);
        }
    }
    let s = status(&c, 4).await;
    assert_eq!(
        s.nodes.iter().filter(|n| !n.up).map(|n| n.id).collect::<Vec<_>>(),
        vec![2]
    );

    // It comes back and catches up on every shard it holds.
    c.start_node(2).await;
    let mine = c.nodes[&2].registry().map().shards_on(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut client = c.client(2).await;
    for (key, ticket) in &acked {
        let id: TicketId = ticket.parse().unwrap();
        if !mine.contains(&id.shard) {
            continue;
        }
        loop {
            if let Some(t) = get_local(&mut client, ticket).await {
                assert_eq!(&t.complaint.unwrap().idempotency_key, key);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node 2 never caught up on {ticket}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leaders_start_spread_over_all_nodes() {
    // Three nodes hold every shard; leadership must still be spread, so one
    // node does not carry every shard's writes.
    let c = TestCluster::start_with(3, 8, fast_tuning()).await;
    let mut per_node: BTreeMap<u64, usize> = BTreeMap::new();
    for shard in 0..8 {
        *per_node
            .entry(c.wait_shard_leader(shard, Duration::from_secs(30)).await)
            .or_default() += 1;
    }
    assert_eq!(per_node.len(), 3, "leaders per node: {per_node:?}");
    assert!(
        per_node.values().all(|n| (2..=3).contains(n)),
        "leaders per node: {per_node:?}"
    );
    c.shutdown().await;
}
