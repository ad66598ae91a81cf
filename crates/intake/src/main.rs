//! `intake`: one binary for operators, adapters' developers and load testers,
//! in the manner of `cockroach` and `etcdctl`. Each subcommand lives in
//! `cmd/`; the logic lives in the library crates.

mod alloc;
mod client;
mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "intake",
    version,
    about = "Intake: a replicated intake gateway for public-service hotlines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a local 3-node cluster, the reference sink and a live status, in
    /// one process: the quickest first look.
    Demo(cmd::demo::DemoArgs),
    /// Start a node.
    // Boxed: its many flags make it by far the largest variant.
    Start(Box<cmd::start::StartArgs>),
    /// Submit one complaint; prints the ticket id.
    Submit(cmd::submit::SubmitArgs),
    /// Look a ticket up by id, with its status history.
    Get(cmd::get::GetArgs),
    /// Report a ticket's progress, as the downstream dispatch system does.
    UpdateStatus(cmd::update_status::UpdateStatusArgs),
    /// Show the cluster at a glance.
    Status(cmd::status::StatusArgs),
    /// The cluster's members (`node list`).
    Node(cmd::node::NodeArgs),
    /// Surges of complaints per district and category (--follow to watch).
    Alerts(cmd::alerts::AlertsArgs),
    /// Drive load against a cluster and verify nothing was lost.
    Load(cmd::load::LoadArgs),
    /// Run the reference downstream dispatch sink.
    Sink(cmd::sink::SinkArgs),
    /// Exit 0 only if a node serves (the container healthcheck).
    Health(cmd::health::HealthArgs),
    /// Tokens for `intake start --auth`.
    Auth(cmd::auth::AuthArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => cmd::demo::run(a).await,
            Command::Start(a) => cmd::start::run(*a).await,
            Command::Submit(a) => cmd::submit::run(a).await,
            Command::Get(a) => cmd::get::run(a).await,
            Command::UpdateStatus(a) => cmd::update_status::run(a).await,
            Command::Status(a) => cmd::status::run(a).await,
            Command::Node(a) => cmd::node::run(a).await,
            Command::Alerts(a) => cmd::alerts::run(a).await,
            Command::Load(a) => cmd::load::run(a).await,
            Command::Sink(a) => cmd::sink::run(a).await,
            Command::Health(a) => cmd::health::run(a).await,
            Command::Auth(a) => cmd::auth::run(a).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
