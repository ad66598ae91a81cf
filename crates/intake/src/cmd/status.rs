//! `intake status`: nodes and shards at a glance; `--json` for tools.
//!
//! JSON contract: `{"nodes": [{"id", "addr", "up"}], "shards": [{"id",
//! "leader", "voters", "committed", ...}]}`; keys are only ever added.

use std::process::ExitCode;

use clap::Args;
use intake_proto::pb;
use serde_json::json;

use crate::client;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn status_json(s: &pb::ClusterStatusResponse) -> serde_json::Value {
    json!({
        "answered_by": s.node_id,
        "nodes": s.nodes.iter().map(|n| json!({"id": n.id, "addr": n.addr, "up": n.up})).collect::<Vec<_>>(),
        "shards": s.shards.iter().map(|sh| json!({
            "id": sh.id,
            "leader": sh.leader,
            "voters": sh.voters,
            "committed": sh.committed,
            "applied": sh.applied,
            "term": sh.term,
            "districts": sh.districts,
        })).collect::<Vec<_>>(),
    })
}

pub async fn run(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let mut c = client::admin(&a.endpoint).await?;
    let s = match c.cluster_status(pb::ClusterStatusRequest { local: false }).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!("error: {}", client::explain(&status));
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&status_json(&s))?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("NODE   ADDRESS                  UP");
    for n in &s.nodes {
        println!("{:<6} {:<24} {}", n.id, n.addr, if n.up { "yes" } else { "NO" });
    }
    println!();
    println!("SHARD  LEADER   VOTERS       TERM   COMMITTED  APPLIED    DISTRICTS");
    for sh in &s.shards {
        let voters = sh.voters.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        let leader = sh.leader.map_or("none".to_string(), |l| l.to_string());
        println!(
            "{:<6} {:<8} {:<12} {:<6} {:<10} {:<10} {}",
            sh.id,
            leader,
            voters,
            sh.term,
            sh.committed,
            sh.applied,
            sh.districts.join(",")
        );
    }
    println!("\n(as seen by node {})", s.node_id);
    Ok(ExitCode::SUCCESS)
}
