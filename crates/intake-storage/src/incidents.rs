//! Incident grouping in apply (the logic is `intake_core::incident`, the
//! band index `intake_core::incident_index`): the incident records of one
//! shard's tree, written in the same batch as the tickets, so every
//! replica, and every snapshot, groups alike.
//!
//! Records (all in `sm.{shard}`, all in snapshots):
//! - `j` incident position(9): an incident the band index holds,
//!   postcard(OpenRecord); the index is rebuilt from these when the shard
//!   is opened or a snapshot installed, and one leaves with its incident
//!   when the index evicts it (so the records stay bounded too);
//! - `g` ticket position(9): the incident a ticket belongs to, value
//!   postcard(TicketId); written for every member once an incident has two;
//! - `I` incident position(9): postcard(IncidentSummary), once it has two.
//!
//! Earlier versions kept each band of each incident as an `i` record
//! (twelve per incident, rewritten on every join: most of the bytes apply
//! wrote); a tree or snapshot that still has them is converted to `j`
//! records the first time the index is loaded, in the batch being applied.

use std::collections::HashMap;

use intake_core::incident::{self, IncidentEntry};
use intake_core::incident_index::{self, IncidentIndex};
use intake_core::{Ticket, TicketId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::keys;
use crate::store::{Batch, Tree};

pub use keys::BAND_PREFIX;
pub use keys::MEMBER_PREFIX;
pub use keys::OPEN_PREFIX;
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

/// An incident the band index holds (`j` record).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRecord {
    pub district: String,
    pub category: String,
    pub entry: IncidentEntry,
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

pub fn open_key(id: &TicketId) -> [u8; 10] {
    let mut k = keys::ticket_key(id);
    k[0] = OPEN_PREFIX;
    k
}

/// Summaries written earlier in the same store batch (a run of entries is
/// one batch, so the tree does not show them yet).
#[derive(Default)]
pub struct Overlay {
    summaries: HashMap<TicketId, IncidentSummary>,
}

/// The band index as the tree's records say, rebuilt. Records of the
/// earlier layout (`i`) are converted and records the index leaves out
/// removed, both in `batch`, the batch being applied.
pub fn load_index(tree: &Tree, batch: &mut Batch) -> Result<IncidentIndex, StorageError> {
    let mut stored: HashMap<TicketId, OpenRecord> = HashMap::new();
    for kv in tree.scan_prefix([OPEN_PREFIX]) {
        let (_, v) = kv?;
        let r: OpenRecord = keys::decode("open incident", &v)?;
        stored.insert(r.entry.incident, r);
    }
    let mut converted = false;
    for kv in tree.scan_prefix([BAND_PREFIX]) {
        let (k, v) = kv?;
        let entry: IncidentEntry = keys::decode("incident band", &v)?;
        batch.remove(k.as_ref());
        converted = true;
        // `i` district 0 category 0 band(1) value(4) incident(9)
        let mut parts = k.get(1..).unwrap_or_default().splitn(3, |b| *b == 0);
        let (Some(d), Some(c)) = (parts.next(), parts.next()) else {
            continue;
        };
        let record = OpenRecord {
            district: String::from_utf8_lossy(d).into_owned(),
            category: String::from_utf8_lossy(c).into_owned(),
            entry,
        };
        // Every band of an incident was rewritten together; keep the newest.
        let newer = stored
            .get(&entry.incident)
            .is_none_or(|old| (old.entry.count, old.entry.last_at) < (entry.count, entry.last_at));
        if newer {
            stored.insert(entry.incident, record);
        }
    }
    let records: Vec<OpenRecord> = stored.values().cloned().collect();
    let (index, left_out) = IncidentIndex::rebuild(
        incident_index::DEFAULT_CAPACITY,
        records
            .iter()
            .map(|r| (r.district.clone(), r.category.clone(), r.entry)),
    );
    if converted {
        for r in &records {
            batch.insert(open_key(&r.entry.incident), keys::encode(r)?);
        }
    }
    for id in left_out {
        batch.remove(open_key(&id));
    }
    Ok(index)
}

/// Links `ticket` to an open incident of its district and category, or
/// opens one, adding the records to `batch`. Returns the incident once it
/// has two complaints or more.
pub fn assign(
    tree: &Tree,
    index: &mut IncidentIndex,
    overlay: &mut Overlay,
    ticket: &Ticket,
    batch: &mut Batch,
) -> Result<Option<TicketId>, StorageError> {
    let c = &ticket.complaint;
    let Some(sig) = incident::fingerprint(&c.text) else {
        return Ok(None);
    };
    let assigned = index.assign(&c.district, &c.category, &sig, ticket.id, ticket.accepted_at);
    let entry = assigned.entry;
    let record = OpenRecord {
        district: c.district.clone(),
        category: c.category.clone(),
        entry,
    };
    batch.insert(open_key(&entry.incident), keys::encode(&record)?);
    if let Some(gone) = assigned.evicted {
        batch.remove(open_key(&gone));
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
                batch.insert(member_key(&entry.incident), keys::encode(&entry.incident)?);
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
        last_at: entry.last_at,
        ..summary
    };
    batch.insert(summary_key(&entry.incident), keys::encode(&summary)?);
    batch.insert(member_key(&ticket.id), keys::encode(&entry.incident)?);
    overlay.summaries.insert(entry.incident, summary);
    Ok(Some(entry.incident))
}

/// The incident of a ticket, if it has one.
pub fn incident_of(tree: &Tree, id: &TicketId) -> Result<Option<TicketId>, StorageError> {
    match tree.get(member_key(id))? {
        Some(v) => Ok(Some(keys::decode("incident member", &v)?)),
        None => Ok(None),
    }
}

/// The `limit` largest incidents whose last complaint came after `since`.
pub fn largest_open(
    tree: &Tree,
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
        Some(&OPEN_PREFIX) if key.len() == 10 => postcard::from_bytes::<OpenRecord>(value)
            .map(|_| true)
            .map_err(|e| format!("open incident record: {e}")),
        Some(&MEMBER_PREFIX) if key.len() == 10 => postcard::from_bytes::<TicketId>(value)
            .map(|_| true)
            .map_err(|e| format!("incident member record: {e}")),
        Some(&SUMMARY_PREFIX) if key.len() == 10 => postcard::from_bytes::<IncidentSummary>(value)
            .map(|_| true)
            .map_err(|e| format!("incident summary record: {e}")),
        _ => Ok(false),
    }
}
