//! The JSON shapes of the API and their translation to and from the gRPC
//! messages. Field names are the proto's (snake_case), so an adapter moving
//! between the two doors renames nothing.

use intake_proto::pb;
use prost_types::Timestamp;
use serde::{Deserialize, Serialize};

use crate::problem::{Problem, Violation};

/// A complaint as the JSON API takes it (`intake.v1.Complaint`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ComplaintIn {
    #[serde(default)]
    pub idempotency_key: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub district_code: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub location: Option<LocationIn>,
    #[serde(default)]
    pub contact: String,
    /// RFC 3339, e.g. `2026-11-30T08:00:00Z`.
    #[serde(default)]
    pub reported_at: Option<String>,
    #[serde(default)]
    pub attachment_urls: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LocationIn {
    pub lat: f64,
    pub lon: f64,
    #[serde(default)]
    pub address: String,
}

/// `POST /v1/complaints:batch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    pub complaints: Vec<ComplaintIn>,
}

/// Channel recorded when the client names none.
pub const DEFAULT_CHANNEL: &str = "web";

impl ComplaintIn {
    /// The gRPC message; `prefix` names this complaint in violations
    /// (`complaints[3].`). Only the timestamp's syntax is checked here; every
    /// other rule is the node's.
    pub fn into_pb(self, prefix: &str) -> Result<pb::Complaint, Violation> {
        let reported_at = match self.reported_at.as_deref() {
            None | Some("") => None,
            Some(s) => Some(s.parse::<Timestamp>().map_err(|_| Violation {
                field: format!("{prefix}reported_at"),
                description: format!("{s:?} is not an RFC 3339 timestamp such as 2026-11-30T08:00:00Z"),
            })?),
        };
        Ok(pb::Complaint {
            idempotency_key: self.idempotency_key,
            channel: self.channel.unwrap_or_else(|| DEFAULT_CHANNEL.to_string()),
            district_code: self.district_code,
            category: self.category,
            text: self.text,
            location: self.location.map(|l| pb::Location {
                lat: l.lat,
                lon: l.lon,
                address: l.address,
            }),
            contact: self.contact,
            reported_at,
            attachment_urls: self.attachment_urls,
        })
    }
}

/// `201` of `POST /v1/complaints`, and an accepted batch item.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub ticket_id: String,
    pub accepted_at: String,
    pub duplicate: bool,
    pub shard: u32,
}

impl From<pb::SubmitResponse> for Accepted {
    fn from(r: pb::SubmitResponse) -> Self {
        Self {
            ticket_id: r.ticket_id,
            accepted_at: rfc3339(r.accepted_at.as_ref()),
            duplicate: r.duplicate,
            shard: r.shard,
        }
    }
}

/// One item of a batch's answer: `accepted` or `error`.
#[derive(Debug, Serialize)]
pub struct BatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accepted: Option<Accepted>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

#[derive(Debug, Serialize)]
pub struct BatchOut {
    pub results: Vec<BatchItem>,
}

/// A ticket with its status history (`GET /v1/tickets/{id}`).
#[derive(Debug, Clone, Serialize)]
pub struct TicketOut {
    pub ticket_id: String,
    pub shard: u32,
    pub status: &'static str,
    pub accepted_at: String,
    pub log_index: u64,
    pub complaint: ComplaintIn,
    pub history: Vec<EventOut>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EventOut {
    pub status: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub department: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub note: String,
    pub reported_at: String,
    pub recorded_at: String,
}

impl From<pb::Ticket> for TicketOut {
    fn from(t: pb::Ticket) -> Self {
        let c = t.complaint.unwrap_or_default();
        Self {
            status: status_name(t.status),
            ticket_id: t.ticket_id,
            shard: t.shard,
            accepted_at: rfc3339(t.accepted_at.as_ref()),
            log_index: t.log_index,
            complaint: ComplaintIn {
                idempotency_key: c.idempotency_key,
                channel: Some(c.channel),
                district_code: c.district_code,
                category: c.category,
                text: c.text,
                location: c.location.map(|l| LocationIn {
                    lat: l.lat,
                    lon: l.lon,
                    address: l.address,
                }),
                contact: c.contact,
                reported_at: c.reported_at.as_ref().map(|ts| rfc3339(Some(ts))),
                attachment_urls: c.attachment_urls,
            },
            history: t
                .history
                .into_iter()
                .map(|e| EventOut {
                    status: status_name(e.status),
                    department: e.department,
                    note: e.note,
                    reported_at: rfc3339(e.reported_at.as_ref()),
                    recorded_at: rfc3339(e.recorded_at.as_ref()),
                })
                .collect(),
        }
    }
}

/// `received`, `dispatched`, ... for a `TicketStatus` value.
pub fn status_name(v: i32) -> &'static str {
    match pb::TicketStatus::try_from(v) {
        Ok(pb::TicketStatus::Received) => "received",
        Ok(pb::TicketStatus::Dispatched) => "dispatched",
        Ok(pb::TicketStatus::Assigned) => "assigned",
        Ok(pb::TicketStatus::Resolved) => "resolved",
        Ok(pb::TicketStatus::Rejected) => "rejected",
        _ => "unspecified",
    }
}

/// RFC 3339 in UTC (`2026-11-30T08:00:00.123Z`); empty when absent.
pub fn rfc3339(ts: Option<&Timestamp>) -> String {
    ts.map(ToString::to_string).unwrap_or_default()
}
