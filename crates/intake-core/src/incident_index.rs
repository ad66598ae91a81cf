//! The band index of one shard's open incidents, in memory: which incident
//! a near-duplicate joins, decided without touching the disk.
//!
//! Why in memory: the first version kept every band of every incident as a
//! record in the state machine's tree and, for each complaint, scanned twelve
//! key prefixes and rewrote twelve records of ~130 bytes. That was 16 % of a
//! node's CPU under the spread benchmark and most of the bytes apply wrote
//! (docs/benchmarks.md). Now the store keeps one record per incident (its
//! [`IncidentEntry`]), this index is rebuilt from those records when a
//! replica opens the shard or installs a snapshot, and a complaint costs
//! twelve in-memory look-ups and one record.
//!
//! Replicas must decide alike, so what the index holds is a pure function of
//! the records: the [`IncidentIndex::capacity`] incidents of highest rank
//! (latest complaint, then position), never more. Applying a complaint
//! either adds an incident or raises one's rank (`last_at` only grows), and
//! when the index is over capacity the lowest-ranked incident leaves it *and
//! the store* ([`Assigned::evicted`]). So a replica that rebuilds from the
//! store after any number of applies holds exactly what one that never
//! restarted holds, and groups the next complaint alike. The capacity bounds
//! memory (about 600 bytes an incident); an incident evicted that way had no
//! complaint for longer than every one of `capacity` others in its shard,
//! and a later near-duplicate opens a new one.

use std::collections::{BTreeSet, HashMap};

use crate::incident::{self, IncidentEntry, Signature};
use crate::{TicketId, UnixMillis};

/// Open incidents one shard's index holds at most.
pub const DEFAULT_CAPACITY: usize = 8192;

/// Rank: who is evicted first (lowest first).
type Rank = (UnixMillis, u64, u8);

fn rank(e: &IncidentEntry) -> Rank {
    (e.last_at, e.incident.log_index, e.incident.item)
}

struct Open {
    entry: IncidentEntry,
    /// `district \0 category`: incidents never span either.
    scope: Box<str>,
}

/// What applying one complaint did to the index; the store mirrors it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    /// The incident the complaint is now part of, as it must be stored
    /// (its own, new, when `count == 1`).
    pub entry: IncidentEntry,
    /// An incident that left the index (and must leave the store).
    pub evicted: Option<TicketId>,
}

/// One shard's open incidents by (district, category, band, band value).
pub struct IncidentIndex {
    capacity: usize,
    open: HashMap<TicketId, Open>,
    /// (hash of scope, band and band value, incident): a multimap whose
    /// range scans find a band's incidents. A hash collision only adds a
    /// candidate, which the scope check and `choose` then weigh exactly.
    bands: BTreeSet<(u64, TicketId)>,
    ranks: BTreeSet<(Rank, TicketId)>,
}

impl std::fmt::Debug for IncidentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncidentIndex")
            .field("open", &self.open.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

fn scope_of(district: &str, category: &str) -> String {
    let mut s = String::with_capacity(district.len() + 1 + category.len());
    s.push_str(district);
    s.push('\0');
    s.push_str(category);
    s
}

fn band_key(scope: &str, band: (u8, u32)) -> u64 {
    let mut bytes = Vec::with_capacity(scope.len() + 6);
    bytes.extend_from_slice(scope.as_bytes());
    bytes.push(0);
    bytes.push(band.0);
    bytes.extend_from_slice(&band.1.to_be_bytes());
    incident::fnv1a(&bytes)
}

impl IncidentIndex {
    /// An empty index holding at most `capacity` incidents (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            open: HashMap::new(),
            bands: BTreeSet::new(),
            ranks: BTreeSet::new(),
        }
    }

    /// Rebuilds the index from stored incidents (in any order): the
    /// `capacity` of highest rank are kept. Returns those left out, which
    /// the caller removes from the store.
    pub fn rebuild(
        capacity: usize,
        stored: impl IntoIterator<Item = (String, String, IncidentEntry)>,
    ) -> (Self, Vec<TicketId>) {
        let mut all: Vec<(String, String, IncidentEntry)> = stored.into_iter().collect();
        all.sort_by_key(|(_, _, e)| std::cmp::Reverse(rank(e)));
        let mut index = Self::new(capacity);
        let mut left_out = Vec::new();
        for (district, category, entry) in all {
            if index.open.len() < index.capacity && !index.open.contains_key(&entry.incident) {
                index.insert(scope_of(&district, &category).into_boxed_str(), entry);
            } else {
                left_out.push(entry.incident);
            }
        }
        (index, left_out)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Applies one created ticket with signature `sig`: it joins the most
    /// similar open incident of its district and category within the
    /// window ([`incident::choose`]), or opens its own.
    pub fn assign(
        &mut self,
        district: &str,
        category: &str,
        sig: &Signature,
        ticket: TicketId,
        at: UnixMillis,
    ) -> Assigned {
        let scope = scope_of(district, category);
        let mut found: Vec<IncidentEntry> = Vec::new();
        for b in incident::bands(sig) {
            let key = band_key(&scope, b);
            let lo = (key, TicketId::new(0, 0, 0));
            for (_, id) in self.bands.range(lo..).take_while(|(k, _)| *k == key) {
                if let Some(o) = self.open.get(id)
                    && *o.scope == *scope
                    && !found.iter().any(|f| f.incident == *id)
                {
                    found.push(o.entry);
                }
            }
        }
        let entry = match incident::choose(sig, at, &found) {
            Some(e) => {
                let joined = IncidentEntry {
                    // Only ever up, so a join never lowers a rank (see the
                    // module comment: what rebuild reproduces).
                    last_at: e.last_at.max(at),
                    count: e.count.saturating_add(1),
                    ..e
                };
                self.ranks.remove(&(rank(&e), e.incident));
                self.ranks.insert((rank(&joined), e.incident));
                if let Some(o) = self.open.get_mut(&e.incident) {
                    o.entry = joined;
                }
                joined
            }
            None => {
                let opened = IncidentEntry {
                    incident: ticket,
                    signature: *sig,
                    last_at: at,
                    count: 1,
                };
                self.insert(scope.into_boxed_str(), opened);
                opened
            }
        };
        let evicted = (self.open.len() > self.capacity)
            .then(|| self.ranks.first().map(|(_, id)| *id))
            .flatten();
        if let Some(id) = evicted {
            self.remove(id);
        }
        Assigned { entry, evicted }
    }

    fn insert(&mut self, scope: Box<str>, entry: IncidentEntry) {
        for b in incident::bands(&entry.signature) {
            self.bands.insert((band_key(&scope, b), entry.incident));
        }
        self.ranks.insert((rank(&entry), entry.incident));
        self.open.insert(entry.incident, Open { entry, scope });
    }

    fn remove(&mut self, id: TicketId) {
        if let Some(o) = self.open.remove(&id) {
            for b in incident::bands(&o.entry.signature) {
                self.bands.remove(&(band_key(&o.scope, b), id));
            }
            self.ranks.remove(&(rank(&o.entry), id));
        }
    }
}

#[cfg(test)]
#[path = "incident_index_tests.rs"]
mod tests;
