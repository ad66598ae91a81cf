//! `intake submit`: one complaint in, its ticket id out (alone on stdout, so
//! scripts can capture it).

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use intake_proto::pb;

use crate::client;

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    #[command(flatten)]
    conn: client::Conn,
    #[arg(long)]
    district: String,
    #[arg(long)]
    category: String,
    #[arg(long)]
    channel: String,
    #[arg(long)]
    text: String,
    /// Reuse a key to retry safely; a new UUID is made when absent.
    #[arg(long)]
    idempotency_key: Option<String>,
    #[arg(long, requires = "lon", allow_hyphen_values = true)]
    lat: Option<f64>,
    #[arg(long, requires = "lat", allow_hyphen_values = true)]
    lon: Option<f64>,
    #[arg(long, requires = "lat")]
    address: Option<String>,
    #[arg(long)]
    contact: Option<String>,
    /// Attachment URL; repeat for several.
    #[arg(long = "attachment")]
    attachments: Vec<String>,
    /// Give up after this many milliseconds.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

pub async fn run(a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let complaint = pb::Complaint {
        idempotency_key: a
            .idempotency_key
            .unwrap_or_else(|| intake_client::mint_key(&a.district)),
        channel: a.channel,
        district_code: a.district,
        category: a.category,
        text: a.text,
        location: a.lat.zip(a.lon).map(|(lat, lon)| pb::Location {
            lat,
            lon,
            address: a.address.unwrap_or_default(),
        }),
        contact: a.contact.unwrap_or_default(),
        reported_at: Some(intake_proto::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        attachment_urls: a.attachments,
    };
    let mut c = client::intake(&a.endpoint, &a.conn.security()?).await?;
    let mut req = tonic::Request::new(pb::SubmitRequest {
        complaint: Some(complaint),
    });
    req.set_timeout(Duration::from_millis(a.timeout_ms));
    match c.submit(req).await {
        Ok(resp) => {
            println!("{}", resp.into_inner().ticket_id);
            Ok(ExitCode::SUCCESS)
        }
        Err(status) => {
            eprintln!("error: submission refused: {}", client::explain(&status));
            Ok(ExitCode::FAILURE)
        }
    }
}
