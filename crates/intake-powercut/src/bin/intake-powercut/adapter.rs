//! `intake-powercut adapter`: the adapter's host in the power-loss test.
//!
//! `--enqueue N` stores N complaints in the outbox and appends each key to
//! `--acked-out` once `enqueue` has returned (what the adapter told the
//! citizen), then holds until killed; the script cuts the outbox's mount
//! while it does. `--check FILE` reopens the outbox, lets it drain and
//! writes `<key> <ticket>` for every key in FILE to `--tickets-out`
//! (`<key> none` for a key it lost, which `verify` then counts as lost).

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use intake_client::{Client, ClientConfig, Outbox, OutboxConfig, pb};

use crate::BoxError;

#[derive(Args)]
pub struct AdapterArgs {
    /// The outbox directory (on a powercut mount).
    #[arg(long)]
    outbox: PathBuf,
    /// The cluster, HOST:PORT,... (an address nobody listens on keeps every
    /// complaint pending in the outbox).
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Complaints to enqueue.
    #[arg(long, conflicts_with = "check")]
    enqueue: Option<u64>,
    /// Where each acknowledged key is appended (off the powercut mount).
    #[arg(long, requires = "enqueue")]
    acked_out: Option<PathBuf>,
    /// Seconds to hold after enqueueing, waiting to be killed.
    #[arg(long, default_value_t = 120)]
    hold_s: u64,
    /// Keys acknowledged before the cut, one per line.
    #[arg(long, requires = "tickets_out")]
    check: Option<PathBuf>,
    /// `<key> <ticket>` per checked key that got a ticket.
    #[arg(long)]
    tickets_out: Option<PathBuf>,
    /// Bytes of each complaint's text (the cluster takes up to 8 KiB):
    /// large records make sled write whole pages to its blob files.
    #[arg(long, default_value_t = 80)]
    text_bytes: usize,
    /// Seconds to wait for the outbox to drain.
    #[arg(long, default_value_t = 90)]
    drain_timeout_s: u64,
}

/// The ticket written for an acknowledged key the outbox no longer knows.
const NO_TICKET: &str = "none";

fn complaint(i: u64, text_bytes: usize) -> pb::Complaint {
    let mut text = format!("power-loss test complaint {i}: loud music next door after midnight.");
    // Bounded by text_bytes.
    while text.len() < text_bytes {
        text.push_str(" Still loud.");
    }
    text.truncate(text_bytes.max(1));
    pb::Complaint {
        channel: "phone".into(),
        district_code: "110105".into(),
        category: "noise".into(),
        text,
        ..Default::default()
    }
}

pub async fn run(a: AdapterArgs) -> Result<ExitCode, BoxError> {
    let client = Client::connect(ClientConfig::new(a.endpoints.clone())).await?;
    let outbox = Outbox::open(&a.outbox, client, OutboxConfig::default()).await?;
    if let (Some(n), Some(path)) = (a.enqueue, &a.acked_out) {
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        for i in 0..n {
            let key = outbox.enqueue(complaint(i, a.text_bytes)).await?;
            // Written only after enqueue returned: each line is a promise
            // the outbox made. The file is off the powercut mount, and only
            // this process dies, so the page cache keeps it.
            writeln!(out, "{key}")?;
            out.flush()?;
        }
        eprintln!(
            "adapter: {n} enqueued, {} pending; holding",
            outbox.pending_count()
        );
        tokio::time::sleep(Duration::from_secs(a.hold_s)).await;
        return Ok(ExitCode::SUCCESS);
    }
    let (Some(check), Some(tickets_out)) = (&a.check, &a.tickets_out) else {
        return Err("give --enqueue N --acked-out FILE, or --check FILE --tickets-out FILE".into());
    };
    let drained = outbox.wait_drained(Duration::from_secs(a.drain_timeout_s)).await;
    let mut out = std::io::BufWriter::new(std::fs::File::create(tickets_out)?);
    let (mut acked, mut ticketed, mut missing, mut dead) = (0u64, 0u64, 0u64, 0u64);
    for line in std::io::BufReader::new(std::fs::File::open(check)?).lines() {
        let line = line?;
        let key = line.trim();
        if key.is_empty() {
            continue;
        }
        acked += 1;
        if let Some(t) = outbox.ticket_for(key)? {
            ticketed += 1;
            writeln!(out, "{key} {t}")?;
        } else if let Some(reason) = outbox.dead_reason(key)? {
            dead += 1;
            eprintln!("adapter: {key} refused by the cluster: {reason}");
        } else {
            missing += 1;
            eprintln!("adapter: {key} was acknowledged and is neither ticketed nor refused");
            // Listed with no ticket, so that `verify` counts it as lost.
            writeln!(out, "{key} {NO_TICKET}")?;
        }
    }
    out.flush()?;
    let pending = outbox.pending_count();
    println!(
        "outbox acked={acked} ticketed={ticketed} missing={missing} dead={dead} pending={pending} drained={drained}"
    );
    outbox.shutdown().await?;
    Ok(if missing == 0 && dead == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
