//! `intake-powercut`: the power-loss test tool (not part of `intake`).
//!
//! - `mount`: serve a [`PowercutFs`] until unmounted; SIGUSR1 cuts its power,
//!   SIGTERM/SIGINT unmount it.
//! - `verify`: after a cut and a restart, check through the cluster that every
//!   acknowledged complaint is there with its ticket, once, and that every
//!   shard has a leader; prints one `case=...` line.
//! - `adapter`: the adapter side: enqueue into an outbox (on a mount) and
//!   record each acknowledged key, or reopen it, drain it and list the tickets.

mod adapter;
mod mount;
mod verify;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "intake-powercut", about = "Power-loss test tool for Intake")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Mount(mount::MountArgs),
    Verify(verify::VerifyArgs),
    Adapter(adapter::AdapterArgs),
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Mount(a) => mount::run(a),
        Cmd::Verify(a) => tokio_main(verify::run(a)),
        Cmd::Adapter(a) => tokio_main(adapter::run(a)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("intake-powercut: {e}");
            ExitCode::from(2)
        }
    }
}

fn tokio_main<F: std::future::Future<Output = Result<ExitCode, BoxError>>>(
    f: F,
) -> Result<ExitCode, BoxError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}
