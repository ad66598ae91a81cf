//! `intake node …`: the cluster's members, for operators. `list` today;
//! adding is `intake start --join` on the new machine.
//!
//! JSON contract of `node list --json`: `{"nodes": [{"id", "addr", "up",
//! "state", "replicas", "leads"}], "answered_by"}`; keys are only ever added.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::cmd::status::{StatusArgs, fetch, node_json, print_nodes};

#[derive(Args, Debug)]
pub struct NodeArgs {
    #[command(subcommand)]
    cmd: NodeCmd,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// Every member: address, state (up, down), replicas held and shards led.
    List(StatusArgs),
}

pub async fn run(a: NodeArgs) -> anyhow::Result<ExitCode> {
    match a.cmd {
        NodeCmd::List(a) => list(a).await,
    }
}

async fn list(a: StatusArgs) -> anyhow::Result<ExitCode> {
    let Some(s) = fetch(&a.endpoint, &a.conn).await? else {
        return Ok(ExitCode::FAILURE);
    };
    if a.json {
        let out = json!({
            "answered_by": s.node_id,
            "nodes": s.nodes.iter().map(node_json).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_nodes(&s.nodes);
        println!("\n(as seen by node {})", s.node_id);
    }
    Ok(ExitCode::SUCCESS)
}
