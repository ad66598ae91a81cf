//! Complaints as adapters send them, and tickets as the state machine keeps them.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{TicketId, UnixMillis};

/// A point and an optional street address.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub address: String,
}

/// One citizen complaint. A retry must carry the same content as the first
/// submission under the same idempotency key (see [`Complaint::same_content`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
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

    /// A 64-bit digest of what [`Complaint::same_content`] compares: a key
    /// claimed at its home shard for a complaint that lives on another
    /// shard keeps this instead of the complaint, so a retry is told from
    /// new content there. Stable across releases and platforms (FNV-1a
    /// over length-prefixed fields), since every replica must agree.
    pub fn content_digest(&self) -> u64 {
        use crate::routing::{FNV_OFFSET, fnv1a64};
        fn field(h: u64, bytes: &[u8]) -> u64 {
            fnv1a64(fnv1a64(h, &(bytes.len() as u64).to_le_bytes()), bytes)
        }
        let mut h = FNV_OFFSET;
        for f in [
            &self.idempotency_key,
            &self.channel,
            &self.district,
            &self.category,
            &self.text,
        ] {
            h = field(h, f.as_bytes());
        }
        match &self.location {
            None => h = field(h, b""),
            Some(l) => {
                h = field(h, &l.lat.to_bits().to_le_bytes());
                h = field(h, &l.lon.to_bits().to_le_bytes());
                h = field(h, l.address.as_bytes());
            }
        }
        h = field(h, self.contact.as_bytes());
        h = field(h, &(self.attachments.len() as u64).to_le_bytes());
        for a in &self.attachments {
            h = field(h, a.as_bytes());
        }
        h
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

/// A personal field as `Debug` shows it: its size, never its value.
struct Withheld(usize);

impl fmt::Debug for Withheld {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes withheld>", self.0)
    }
}

/// `Debug` (and so `{:?}` in any log line, error or panic, openraft's
/// included) leaves out what the citizen said and how to reach them: the
/// key, the text, the contact and the street address. Personal data stays
/// out of logs (issue 19); sizes remain, for debugging.
impl fmt::Debug for Complaint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Complaint")
            .field("idempotency_key", &Withheld(self.idempotency_key.len()))
            .field("channel", &self.channel)
            .field("district", &self.district)
            .field("category", &self.category)
            .field("text", &Withheld(self.text.len()))
            .field("location", &self.location)
            .field("contact", &Withheld(self.contact.len()))
            .field("reported_at", &self.reported_at)
            .field("attachments", &self.attachments.len())
            .finish()
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Location")
            .field("lat", &self.lat)
            .field("lon", &self.lon)
            .field("address", &Withheld(self.address.len()))
            .finish()
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

#[cfg(test)]
mod tests {
    use super::{Complaint, Location};

    #[test]
    fn debug_withholds_key_text_contact_and_address() {
        let c = Complaint {
            idempotency_key: "key-MARK".into(),
            channel: "phone".into(),
            district: "110105".into(),
            category: "noise".into(),
            text: "text-MARK".into(),
            location: Some(Location {
                lat: 39.9,
                lon: 116.4,
                address: "addr-MARK".into(),
            }),
            contact: "contact-MARK".into(),
            reported_at: None,
            attachments: vec!["https://x/MARK".into()],
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("MARK"), "{shown}");
        assert!(
            shown.contains("110105") && shown.contains("9 bytes withheld"),
            "{shown}"
        );
    }
}
