//! `intake update-status`: report a ticket's progress as the downstream
//! dispatch system would (`IntakeService.UpdateStatus`); prints the ticket.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use intake_proto::pb;

use crate::client;
use crate::cmd::get::ticket_json;

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Status {
    Received,
    Dispatched,
    Assigned,
    Resolved,
    Rejected,
}

#[derive(Args, Debug)]
pub struct UpdateStatusArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    #[command(flatten)]
    conn: client::Conn,
    /// The ticket id, e.g. 0-8A3Q.
    ticket_id: String,
    #[arg(long, value_enum)]
    status: Status,
    /// Required with `--status assigned`.
    #[arg(long)]
    department: Option<String>,
    #[arg(long, default_value = "")]
    note: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(a: UpdateStatusArgs) -> anyhow::Result<ExitCode> {
    let status = match a.status {
        Status::Received => pb::TicketStatus::Received,
        Status::Dispatched => pb::TicketStatus::Dispatched,
        Status::Assigned => pb::TicketStatus::Assigned,
        Status::Resolved => pb::TicketStatus::Resolved,
        Status::Rejected => pb::TicketStatus::Rejected,
    };
    let mut c = client::intake(&a.endpoint, &a.conn.security()?).await?;
    let mut req = tonic::Request::new(pb::UpdateStatusRequest {
        ticket_id: a.ticket_id,
        status: status as i32,
        department: a.department.unwrap_or_default(),
        note: a.note,
        reported_at: None,
    });
    req.set_timeout(Duration::from_secs(10));
    match c.update_status(req).await {
        Ok(r) => {
            let t = r.into_inner().ticket.unwrap_or_default();
            let j = ticket_json(&t);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&j)?);
            } else {
                println!("{} is {}", t.ticket_id, j["status"].as_str().unwrap_or("unknown"));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(status) => {
            eprintln!("error: status update refused: {}", client::explain(&status));
            Ok(ExitCode::FAILURE)
        }
    }
}
