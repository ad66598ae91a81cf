//! A minimal channel adapter: complaints in as JSON lines on stdin, into a
//! durable outbox, out to the cluster; prints `key ticket_id` as each lands.
//!
//! ```sh
//! echo '{"district_code":"110105","category":"noise","channel":"web","text":"Loud music at 2am"}' |
//!   cargo run --example adapter -- --endpoints 127.0.0.1:7001,127.0.0.1:7002 --outbox /tmp/adapter-outbox
//! cargo run --example adapter -- --endpoints 127.0.0.1:7001 --demo 5   # five made-up complaints
//! ```
//!
//! Kill it at any point and start it again with the same `--outbox`: what
//! was enqueued and not yet ticketed drains then, with the same keys, so no
//! complaint is lost or ticketed twice.

use std::io::BufRead;
use std::time::Duration;

use intake_client::{Client, ClientConfig, Outbox, OutboxConfig, OutboxEvent, pb};
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc};

/// One input line. Only `text` is required by this example; the cluster
/// validates the rest and a refused complaint is reported, not retried.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    idempotency_key: String,
    #[serde(default = "default_district")]
    district_code: String,
    #[serde(default = "default_category")]
    category: String,
    #[serde(default = "default_channel")]
    channel: String,
    text: String,
}

fn default_district() -> String {
    "110105".into()
}
fn default_category() -> String {
    "noise".into()
}
fn default_channel() -> String {
    "web".into()
}

struct Args {
    endpoints: Vec<String>,
    outbox: String,
    demo: Option<usize>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        endpoints: vec!["127.0.0.1:7001".into()],
        outbox: "adapter-outbox".into(),
        demo: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoints" => args.endpoints = value()?.split(',').map(str::to_string).collect(),
            "--outbox" => args.outbox = value()?,
            "--demo" => args.demo = Some(value()?.parse().map_err(|e| format!("--demo: {e}"))?),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// Stdin lines, read on a blocking thread into a bounded channel.
fn stdin_lines() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(64);
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn to_complaint(l: Line) -> pb::Complaint {
    pb::Complaint {
        idempotency_key: l.idempotency_key,
        channel: l.channel,
        district_code: l.district_code,
        category: l.category,
        text: l.text,
        ..Default::default()
    }
}

/// Prints results as they land, until the outbox is gone.
async fn print_results(mut events: broadcast::Receiver<OutboxEvent>) {
    loop {
        match events.recv().await {
            Ok(OutboxEvent::Ticketed { key, ticket_id, .. }) => println!("{key} {ticket_id}"),
            Ok(OutboxEvent::Dead { key, reason }) => eprintln!("{key} refused: {reason}"),
            Err(broadcast::error::RecvError::Lagged(n)) => eprintln!("({n} results not shown)"),
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = parse_args()?;
    let client = Client::connect(ClientConfig::new(args.endpoints)).await?;
    let outbox = Outbox::open(&args.outbox, client, OutboxConfig::default()).await?;
    let printer = tokio::spawn(print_results(outbox.subscribe()));
    if outbox.pending_count() > 0 {
        eprintln!(
            "{} complaints left from a previous run are draining",
            outbox.pending_count()
        );
    }

    match args.demo {
        Some(n) => {
            for i in 0..n {
                let key = outbox
                    .enqueue(to_complaint(Line {
                        idempotency_key: String::new(),
                        district_code: default_district(),
                        category: default_category(),
                        channel: default_channel(),
                        text: format!("demo complaint {i}"),
                    }))
                    .await?;
                eprintln!("stored {key}");
            }
        }
        None => {
            let mut lines = stdin_lines();
            while let Some(line) = lines.recv().await {
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Line>(&line) {
                    Ok(l) => {
                        let key = outbox.enqueue(to_complaint(l)).await?;
                        eprintln!("stored {key}");
                    }
                    Err(e) => eprintln!("skipped a line that is not a complaint: {e}"),
                }
            }
        }
    }

    // Input is done: wait for the outbox to drain (a restart would finish
    // the job anyway), then stop cleanly.
    while !outbox.wait_drained(Duration::from_secs(10)).await {
        eprintln!("{} complaints still pending", outbox.pending_count());
    }
    outbox.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(1), printer).await;
    Ok(())
}
