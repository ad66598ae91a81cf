//! Incident grouping in apply (the logic is `intake_core::incident`): the
//! band index and the incident records of one shard's tree, read and
//! written in the same batch as the tickets, so every replica, and every
//! snapshot, groups alike.
//!
//! Records (all in `sm.{shard}`, all in snapshots):
//! - `i` district 0 category 0 band(1) value(4 BE) incident(9): the open
//!   incident with that band value, value postcard(IncidentEntry);
//! - `g` ticket position(9): the incident a ticket belongs to, value
//!   postcard(TicketId); written for every member once an incident has two;
//! - `I` incident position(9): postcard(IncidentSummary), once it has two.
//!
//! Band records of closed incidents are skipped when read (older than the
//! window); `CompactKeys` is where they would be removed (not done yet: ~12
//! small records per grouped-or-not ticket, beside a ticket of ~500 bytes).

use std::collections::HashMap;

use intake_core::incident::{self, IncidentEntry};
use intake_core::{Ticket, TicketId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::keys;

pub use keys::BAND_PREFIX;
pub use keys::MEMBER_PREFIX;
pub use keys::SUMMARY_PREFIX;

/// What `intake status` and the dashboard list about an incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncidentSummary {
    pub id: TicketId,
    pub district: String,
    pub category: String,
    pub count: u32,
    pub first_at: UnixMillis,
    pub last_at: UnixMillis,
}

fn band_prefix(district: &str, category: &str, band: (u8, u32)) -> Vec<u8> {
    let mut k = Vec::with_capacity(district.len() + category.len() + 8 + 9);
    k.push(BAND_PREFIX);
    k.extend_from_slice(district.as_bytes());
    k.push(0);
    k.extend_from_slice(category.as_bytes());
    k.push(0);
    k.push(band.0);
    k.extend_from_slice(&band.1.to_be_bytes());
    k
}

fn position(id: &TicketId) -> [u8; 9] {
    let mut p = [0u8; 9];
    p.copy_from_slice(&keys::ticket_key(id)[1..]);
    p
}

pub fn member_key(id: &TicketId) -> [u8; 10] {
    let mut k = keys::ticket_key(id);
    k[0] = MEMBER_PREFIX;
    k
}

pub fn summary_key(id: &TicketId) -> [u8; 10] {
    let mut k = keys::ticket_key(id);
    k[0] = SUMMARY_PREFIX;
    k
}

/// Band records written earlier in the same sled batch (a run of entries
/// is one batch, so the tree does not show them yet), and summaries.
#[derive(Default)]
pub struct Overlay {
    bands: HashMap<Vec<u8>, HashMap<[u8; 9], IncidentEntry>>,
    summaries: HashMap<TicketId, IncidentSummary>,
}

/// Links `ticket` to an open incident of its district and category, or
/// opens one, adding the records to `batch`. Returns the incident once it
/// has two complaints or more.
pub fn assign(
    tree: &sled::Tree,
    overlay: &mut Overlay,
    ticket: &Ticket,
    batch: &mut sled::Batch,
) -> Result<Option<TicketId>, StorageError> {
    let c = &ticket.complaint;
    let Some(sig) = incident::fingerprint(&c.text) else {
        return Ok(None);
    };
    let bands = incident::bands(&sig);
    let mut candidates: HashMap<[u8; 9], IncidentEntry> = HashMap::new();
    for b in bands {
        let prefix = band_prefix(&c.district, &c.category, b);
        for kv in tree.scan_prefix(&prefix) {
            let (_, v) = kv?;
            let e: IncidentEntry = keys::decode("incident band", &v)?;
            candidates.insert(position(&e.incident), e);
        }
        if let Some(m) = overlay.bands.get(&prefix) {
            candidates.extend(m.iter().map(|(k, v)| (*k, *v)));
        }
    }
    let mut list: Vec<IncidentEntry> = candidates.into_values().collect();
    // Deterministic order for `choose`'s ties, whatever the maps did.
    list.sort_by_key(|e| (e.incident.log_index, e.incident.item));
    let entry = match incident::choose(&sig, ticket.accepted_at, &list) {
        Some(mut e) => {
            e.last_at = ticket.accepted_at;
            e.count = e.count.saturating_add(1);
            e
        }
        None => IncidentEntry {
            incident: ticket.id,
            signature: sig,
            last_at: ticket.accepted_at,
            count: 1,
        },
    };
    let value = keys::encode(&entry)?;
    for b in incident::bands(&entry.signature) {
        let prefix = band_prefix(&c.district, &c.category, b);
        let mut key = prefix.clone();
        key.extend_from_slice(&position(&entry.incident));
        batch.insert(key, value.clone());
        overlay
            .bands
            .entry(prefix)
            .or_default()
            .insert(position(&entry.incident), entry);
    }
    if entry.count < 2 {
        return Ok(None);
    }
    let summary = match overlay.summaries.get(&entry.incident) {
        Some(s) => s.clone(),
        None => match tree.get(summary_key(&entry.incident))? {
            Some(v) => keys::decode("incident summary", &v)?,
            None => {
                // The second complaint: the first joins its own incident.
                batch.insert(&member_key(&entry.incident), keys::encode(&entry.incident)?);
                IncidentSummary {
                    id: entry.incident,
                    district: c.district.clone(),
                    category: c.category.clone(),
                    count: 1,
                    first_at: ticket.accepted_at,
                    last_at: ticket.accepted_at,
                }
            }
        },
    };
    let summary = IncidentSummary {
        count: summary.count.saturating_add(1),
        last_at: ticket.accepted_at,
        ..summary
    };
    batch.insert(&summary_key(&entry.incident), keys::encode(&summary)?);
    batch.insert(&member_key(&ticket.id), keys::encode(&entry.incident)?);
    overlay.summaries.insert(entry.incident, summary);
    Ok(Some(entry.incident))
}

/// The incident of a ticket, if it has one.
pub fn incident_of(tree: &sled::Tree, id: &TicketId) -> Result<Option<TicketId>, StorageError> {
    match tree.get(member_key(id))? {
        Some(v) => Ok(Some(keys::decode("incident member", &v)?)),
        None => Ok(None),
    }
}

/// The `limit` largest incidents whose last complaint came after `since`.
pub fn largest_open(
    tree: &sled::Tree,
    since: UnixMillis,
    limit: usize,
) -> Result<Vec<IncidentSummary>, StorageError> {
    let mut out = Vec::new();
    for kv in tree.scan_prefix([SUMMARY_PREFIX]) {
        let (_, v) = kv?;
        let s: IncidentSummary = keys::decode("incident summary", &v)?;
        if s.last_at >= since {
            out.push(s);
        }
    }
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.first_at.cmp(&b.first_at)));
    out.truncate(limit);
    Ok(out)
}

/// Whether a snapshot record of these prefixes decodes.
pub fn check_record(key: &[u8], value: &[u8]) -> Result<bool, String> {
    match key.first() {
        Some(&BAND_PREFIX) => postcard::from_bytes::<IncidentEntry>(value)
            .map(|_| true)
            .map_err(|e| format!("incident band record: {e}")),
        Some(&MEMBER_PREFIX) if key.len() == 10 => postcard::from_bytes::<TicketId>(value)
            .map(|_| true)
            .map_err(|e| format!("incident member record: {e}")),
        Some(&SUMMARY_PREFIX) if key.len() == 10 => postcard::from_bytes::<IncidentSummary>(value)
            .map(|_| true)
            .map_err(|e| format!("incident summary record: {e}")),
        _ => Ok(false),
    }
}
