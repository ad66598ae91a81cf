//! Complaints as adapters send them, and tickets as the state machine keeps them.

use serde::{Deserialize, Serialize};

use crate::{TicketId, UnixMillis};

/// A point and an optional street address.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub address: String,
}

/// One citizen complaint. A retry must carry the same content as the first
/// submission under the same idempotency key (see [`Complaint::same_content`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Complaint {
    pub idempotency_key: String,
    pub channel: String,
    pub district: String,
    pub category: String,
    pub text: String,
    pub location: Option<Location>,
    pub contact: String,
    pub reported_at: Option<UnixMillis>,
    pub attachments: Vec<String>,
}

impl Complaint {
    /// Whether `other` is a retry of this complaint. Everything the citizen
    /// said must match; `reported_at` may differ, because a retry is often
    /// stamped anew by whatever re-sent it (a restarted adapter, the CLI).
    pub fn same_content(&self, other: &Complaint) -> bool {
        self.idempotency_key == other.idempotency_key
            && self.channel == other.channel
            && self.district == other.district
            && self.category == other.category
            && self.text == other.text
            && self.location == other.location
            && self.contact == other.contact
            && self.attachments == other.attachments
    }

    /// An upper bound on the complaint's encoded size, used to keep Raft
    /// entries small (sled writes large pages to unsynced blob files).
    pub fn approx_bytes(&self) -> usize {
        let loc = self.location.as_ref().map_or(0, |l| 16 + l.address.len());
        64 + self.idempotency_key.len()
            + self.channel.len()
            + self.district.len()
            + self.category.len()
            + self.text.len()
            + loc
            + self.contact.len()
            + self.attachments.iter().map(|a| a.len() + 4).sum::<usize>()
    }
}

/// Where a ticket stands downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketStatus {
    Received,
    Dispatched,
    Assigned,
    Resolved,
    Rejected,
}

/// A complaint once committed: everything it had plus its id, shard,
/// acceptance time (the leader's clock) and status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ticket {
    pub id: TicketId,
    pub complaint: Complaint,
    pub accepted_at: UnixMillis,
    pub status: TicketStatus,
    pub log_index: u64,
}
