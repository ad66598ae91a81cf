//! Incident grouping's records in one shard's tree: their keys, the band
//! index rebuilt from them, and the reads of `intake status`. Which
//! incident a ticket joins is decided in `intake_core::incident_index` and
//! what apply writes of it in `intake_core::apply` (`grouping.rs`); the
//! writes land in the same batch as the tickets, so every replica, and
//! every snapshot, groups alike.
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

use intake_core::incident::IncidentEntry;
use intake_core::incident_index::{self, IncidentIndex};
use intake_core::{TicketId, UnixMillis};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::keys;
use crate::store::{Batch, Tree};

pub use keys::BAND_PREFIX;
pub use keys::MEMBER_PREFIX;
pub use keys::OPEN_PREFIX;
pub use keys::SUMMARY_PREFIX;

pub use intake_core::incident::IncidentSummary;

/// An incident the band index holds (`j` record); written from borrowed
/// names (`OpenRecord<&str>`, the same bytes), read as owned ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpenRecord<S = String> {
    pub district: S,
    pub category: S,
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
