//! `intake node …`: the cluster's members, for operators: `list`, and
//! `remove` (decommission: drain, then leave the map). Adding is
//! `intake start --join` on the new machine.
//!
//! JSON contract of `node list --json`: `{"nodes": [{"id", "addr", "up",
//! "state", "replicas", "leads"}], "moves": [{"group", "from", "to"}],
//! "answered_by", "map_version"}`; keys are only ever added.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use std::time::{Duration, Instant};

use intake_proto::pb;

use crate::client;
use crate::cmd::status::{StatusArgs, fetch, move_json, node_json, node_state, print_moves, print_nodes};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Every member: address, state (up, down, joining, draining), replicas
    /// held and shards led, and the replica moves in progress.
    List(StatusArgs),
    /// Decommission node ID: move every replica and leadership off it (each
    /// shard keeps its copies throughout), then remove it from the cluster;
    /// its process exits. Waits until it is gone unless --no-wait.
    Remove(RemoveArgs),
}

#[derive(Args, Debug)]
struct RemoveArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    #[command(flatten)]
    conn: client::Conn,
    /// The node to remove.
    id: u64,
    /// The node is gone for good (it does not answer): rebuild its
    /// replicas on the others from the surviving copies.
    #[arg(long)]
    force: bool,
    /// Return once draining has begun.
    #[arg(long)]
    no_wait: bool,
    /// Longest to wait for the node to be drained and removed, in seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

pub async fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    match a.cmd {
        NodeCmd::List(a) => list(a).await,
        NodeCmd::Remove(a) => remove(a).await,
    }
}

async fn remove(a: RemoveArgs) -> anyhow::Result<ExitCode> {
    let conn = a.conn.clone();
    let mut c = client::admin(&a.endpoint, &conn.security()?).await?;
    let answer = match c
        .remove_node(pb::RemoveNodeRequest {
            id: a.id,
            force: a.force,
        })
        .await
    {
        Ok(r) => r.into_inner(),
        Err(status) => {
            eprintln!("error: {}", client::explain(&status));
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "node {}: draining ({} replicas to move; map version {})",
        a.id, answer.replicas_to_move, answer.map_version
    );
    if a.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let end = Instant::now() + Duration::from_secs(a.timeout);
    let mut last = String::new();
    // Bounded by --timeout.
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Ok(Some(s)) = fetch(&a.endpoint, &conn).await else {
            continue;
        };
        let Some(node) = s.nodes.iter().find(|n| n.id == a.id) else {
            println!("node {}: removed", a.id);
            return Ok(ExitCode::SUCCESS);
        };
        let moves = s.moves.iter().filter(|m| m.from == Some(a.id)).count();
        let line = format!(
            "node {}: {}, {} replicas left, {} moving",
            a.id,
            node_state(node),
            node.replicas,
            moves
        );
        if line != last {
            println!("{line}");
            last = line;
        }
    }
    eprintln!(
        "error: node {} is still a member after {} s; it keeps draining (intake node list shows progress)",
        a.id, a.timeout
    );
    Ok(ExitCode::FAILURE)
}

async fn list(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(s) = fetch(&a.endpoint, &a.conn).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if a.json {
        let out = json!({
            "answered_by": s.node_id,
            "map_version": s.map_version,
            "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>(),
            "moves": s.moves.iter().map(move_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_nodes(&s.nodes);
        print_moves(&s.moves);
        println!("\n(as seen by node {}, map version {})", s.node_id, s.map_version);
    }
    Ok(ExitCode::SUCCESS)
}
