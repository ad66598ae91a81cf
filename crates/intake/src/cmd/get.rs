//! `intake get`: a ticket, readable or as JSON.

use std::process::ExitCode;

use clap::Args;
use intake_proto::pb;
use serde_json::json;

use crate::client;

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Any node of the cluster, HOST:PORT.
    #[arg(long, env = "INTAKE_ENDPOINT", default_value = "127.0.0.1:7001")]
    endpoint: String,
    #[command(flatten)]
    conn: client::Conn,
    /// The ticket id, e.g. 0-8A3.
    ticket_id: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Answer from that node's own replica only (may lag).
    #[arg(long)]
    local: bool,
}

fn rfc3339(ts: &Option<intake_proto::Timestamp>) -> serde_json::Value {
    match ts {
        Some(t) => json!(t.to_string()),
        None => serde_json::Value::Null,
    }
}

fn status_name(v: i32) -> String {
    pb::TicketStatus::try_from(v)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("TICKET_STATUS_")
                .to_ascii_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

pub fn ticket_json(t: &pb::Ticket) -> serde_json::Value {
    let c = t.complaint.clone().unwrap_or_default();
    let status = status_name(t.status);
    let history: Vec<serde_json::Value> = t
        .history
        .iter()
        .map(|e| {
            json!({
                "status": status_name(e.status),
                "department": e.department,
                "note": e.note,
                "reported_at": rfc3339(&e.reported_at),
                "recorded_at": rfc3339(&e.recorded_at),
            })
        })
        .collect();
    json!({
        "ticket_id": t.ticket_id,
        "incident_id": (!t.incident_id.is_empty()).then_some(&t.incident_id),
        "shard": t.shard,
        "log_index": t.log_index,
        "status": status,
        "accepted_at": rfc3339(&t.accepted_at),
        "idempotency_key": c.idempotency_key,
        "channel": c.channel,
        "district": c.district_code,
        "category": c.category,
        "text": c.text,
        "location": c.location.map(|l| json!({"lat": l.lat, "lon": l.lon, "address": l.address})),
        "contact": c.contact,
        "reported_at": rfc3339(&c.reported_at),
        "attachment_urls": c.attachment_urls,
        "history": history,
    })
}

pub async fn run(a: GetArgs) -> anyhow::Result<ExitCode> {
    let mut c = client::intake(&a.endpoint, &a.conn.security()?).await?;
    let req = pb::GetTicketRequest {
        ticket_id: a.ticket_id.clone(),
        local: a.local,
    };
    let ticket = match c.get_ticket(req).await {
        Ok(resp) => resp.into_inner().ticket.unwrap_or_default(),
        Err(status) => {
            eprintln!("error: {}", client::explain(&status));
            return Ok(ExitCode::FAILURE);
        }
    };
    let j = ticket_json(&ticket);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&j)?);
    } else {
        let fields = [
            "ticket_id",
            "status",
            "district",
            "category",
            "channel",
            "text",
            "accepted_at",
            "reported_at",
            "shard",
            "log_index",
            "idempotency_key",
        ];
        for f in fields {
            let v = &j[f];
            let shown = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
            println!("{f:<16} {shown}");
        }
        if let Some(i) = j["incident_id"].as_str() {
            println!("{:<16} {i}", "incident_id");
        }
        if let Some(l) = j["location"].as_object() {
            println!(
                "{:<16} {}, {} {}",
                "location",
                l["lat"],
                l["lon"],
                l["address"].as_str().unwrap_or("")
            );
        }
        for e in j["history"].as_array().into_iter().flatten() {
            let text = |k: &str| e[k].as_str().unwrap_or("").to_string();
            let dept = text("department");
            let note = text("note");
            println!(
                "{:<16} {} {}{}{}",
                "history",
                text("reported_at"),
                text("status"),
                if dept.is_empty() {
                    String::new()
                } else {
                    format!(" to {dept}")
                },
                if note.is_empty() {
                    String::new()
                } else {
                    format!(": {note}")
                },
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
