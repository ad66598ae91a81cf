//! `intake status`: nodes and shards at a glance; `--json` for tools.
//!
//! JSON contract: `{"nodes": [{"id", "addr", "up", "state", "replicas",
//! "leads"}], "moves", "map_version", "district_shards": {"110105": [0]},
//! "shards": [{"id",
//! "leader", "voters", "committed", ..., "dispatch_lag": {"tickets",
//! "seconds", "delivered", "failures", "state"}}]}`; keys are only ever added.

use std::process::ExitCode;

use clap::Args;
use intake_proto::pb;
use serde_json::json;

use crate::client;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    pub endpoint: String,
    #[command(flatten)]
    pub conn: client::Conn,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Per district, the shards its routing slots map to (one today: a
/// district is spread over several only once hot districts can be).
fn district_shards(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    let mut map: std::collections::BTreeMap<&str, Vec<u32>> = std::collections::BTreeMap::new();
    for sh in &s.shards {
        for d in &sh.districts {
            map.entry(d.as_str()).or_default().push(sh.id);
        }
    }
    json!(map)
}

/// One node as `status --json` and `node list --json` print it.
pub fn node_json(n: &pb::NodeStatus) -> serde_json::Value {
    json!({
        "id": n.id,
        "addr": n.addr,
        "up": n.up,
        "state": node_state(n),
        "replicas": n.replicas,
        "leads": n.leads,
    })
}

/// The node's state; an older node that sends none is known only as up or
/// down.
pub fn node_state(n: &pb::NodeStatus) -> &str {
    match n.state.as_str() {
        "" if n.up => "up",
        "" => "down",
        s => s,
    }
}

/// A replica move as JSON; `group` is a shard id or `"meta"`.
pub fn move_json(m: &pb::ReplicaMove) -> serde_json::Value {
    let group = if m.group == u32::MAX {
        json!("meta")
    } else {
        json!(m.group)
    };
    json!({"group": group, "from": m.from, "to": m.to})
}

/// The moves in progress, if any, under the node table.
pub fn print_moves(moves: &[pb::ReplicaMove]) {
    if moves.is_empty() {
        return;
    }
    println!("\nReplica moves in progress:");
    for m in moves {
        let group = if m.group == u32::MAX {
            "meta group".to_string()
        } else {
            format!("shard {}", m.group)
        };
        match m.from {
            Some(from) => println!("  {group}: node {from} -> node {}", m.to),
            None => println!("  {group}: new replica on node {}", m.to),
        }
    }
}

/// The node table of `status` and `node list`.
pub fn print_nodes(nodes: &[pb::NodeStatus]) {
    println!("NODE   ADDRESS                  UP   STATE      REPLICAS  LEADS");
    for n in nodes {
        println!(
            "{:<6} {:<24} {:<4} {:<10} {:<9} {}",
            n.id,
            n.addr,
            if n.up { "yes" } else { "NO" },
            node_state(n),
            n.replicas,
            n.leads
        );
    }
}

pub fn status_json(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    json!({
        "answered_by": s.node_id,
        "map_version": s.map_version,
        "moves": s.moves.iter().map(move_json).collect::<Vec<_>>(),
        "district_shards": district_shards(s),
        "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>(),
        "shards": s.shards.iter().map(|sh| json!({
            "id": sh.id,
            "leader": sh.leader,
            "voters": sh.voters,
            "committed": sh.committed,
            "applied": sh.applied,
            "term": sh.term,
            "districts": sh.districts,
            "incidents": sh.incidents.iter().map(|i| json!({
                "id": i.id,
                "district": i.district,
                "category": i.category,
                "complaints": i.complaints,
                "first_at": i.first_at.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
                "last_at": i.last_at.as_ref().map_or(0, |t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000),
            })).collect::<Vec<_>>(),
            "dispatch_lag": sh.dispatch_lag.as_ref().map(|d| json!({
                "tickets": d.tickets,
                "seconds": d.seconds,
                "delivered": d.delivered,
                "failures": d.failures,
                "state": d.state,
            })),
        })).collect::<Vec<_>>(),
    })
}

/// The cluster-wide status through `endpoint`; `None` once the refusal is
/// printed.
pub async fn fetch(endpoint: &str, conn: &client::Conn) -> anyhow::Result<Option<pb::ClusterStatusResponse>> {
    let mut c = client::admin(endpoint, &conn.security()?).await?;
    match c.cluster_status(pb::ClusterStatusRequest { local: false }).await {
        Ok(r) => Ok(Some(r.into_inner())),
        Err(status) => {
            eprintln!("error: {}", client::explain(&status));
            Ok(None)
        }
    }
}

pub async fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(s) = fetch(&a.endpoint, &a.conn).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
        return Ok(ExitCode::SUCCESS);
    }
    print_nodes(&s.nodes);
    print_moves(&s.moves);
    println!();
    println!("SHARD  LEADER   VOTERS       TERM   COMMITTED  APPLIED    LAG      LAG_S    DISTRICTS");
    for sh in &s.shards {
        let voters = sh.voters.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let leader = sh.leader.map_or("none".to_string(), |l| l.to_string());
        let lag = sh.dispatch_lag.clone().unwrap_or_default();
        println!(
            "{:<6} {:<8} {:<12} {:<6} {:<10} {:<10} {:<8} {:<8.1} {}",
            sh.id,
            leader,
            voters,
            sh.term,
            sh.committed,
            sh.applied,
            lag.tickets,
            lag.seconds,
            sh.districts.join(",")
        );
    }
    let waiting: Vec<String> = s
        .shards
        .iter()
        .filter_map(|sh| {
            let d = sh.dispatch_lag.as_ref()?;
            (d.state.starts_with("no downstream") || d.state.starts_with("backing off"))
                .then(|| format!("shard {}: {} ({} tickets waiting)", sh.id, d.state, d.tickets))
        })
        .collect();
    if !waiting.is_empty() {
        println!("\nDispatch:");
        for w in waiting {
            println!("  {w}");
        }
    }
    let mut incidents: Vec<&pb::Incident> = s.shards.iter().flat_map(|sh| &sh.incidents).collect();
    incidents.sort_by(|a, b| b.complaints.cmp(&a.complaints).then(a.id.cmp(&b.id)));
    if !incidents.is_empty() {
        println!("\nLargest open incidents (near-duplicate complaints):");
        println!("  INCIDENT   DISTRICT  CATEGORY             COMPLAINTS");
        for i in incidents.iter().take(5) {
            println!(
                "  {:<10} {:<9} {:<20} {}",
                i.id, i.district, i.category, i.complaints
            );
        }
    }
    println!("\n(as seen by node {})", s.node_id);
    Ok(ExitCode::SUCCESS)
}
