//! `intake auth hash-token`: the line an `--auth` file holds for a token.
//! The token is read from standard input, not the command line, so it does
//! not land in shell history or the process list.

use std::io::BufRead;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AuthArgs {
    #[command(subcommand)]
    command: AuthCommand,
}

#[derive(Subcommand, Debug)]
enum AuthCommand {
    /// Read a token from standard input (one line) and print its SHA-256,
    /// the `sha256` value of an `--auth` file entry.
    HashToken,
}

pub async fn run(args: AuthArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuthCommand::HashToken => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the token from standard input")?;
            let token = line.trim_end_matches(['\r', '\n']).trim();
            if token.is_empty() {
                bail!("no token on standard input (e.g. `printf %s \"$TOKEN\" | intake auth hash-token`)");
            }
            println!("{}", intake_server::auth::hash_token(token));
            Ok(ExitCode::SUCCESS)
        }
    }
}
