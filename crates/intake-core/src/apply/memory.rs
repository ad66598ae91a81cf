//! One shard's state in memory, one map per kind of record: the view the
//! apply rules are tested on, and the reference for what a write means.
//! Storage keeps the same records in sled (`intake-storage`'s `keys.rs`).

use std::collections::BTreeMap;
use std::convert::Infallible;

use super::{AgeRecord, ShardView, StoredClaim, Write};
use crate::incident::{IncidentEntry, IncidentSummary};
use crate::incident_index::IncidentIndex;
use crate::{ClusterMap, DispatchState, StatusEvent, Ticket, TicketId, UnixMillis};

/// Corrupt state found while applying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error("idempotency key points to missing ticket {0}")]
    KeyWithoutTicket(TicketId),
}

impl From<Infallible> for MemoryError {
    fn from(never: Infallible) -> Self {
        match never {}
    }
}

/// A shard's records, as [`Write`]s leave them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MemoryShard {
    pub shard: u32,
    pub tickets: BTreeMap<TicketId, Ticket>,
    pub keys: BTreeMap<String, TicketId>,
    pub claims: BTreeMap<String, StoredClaim>,
    /// By (accepted_at, ticket): compaction's order.
    pub ages: BTreeMap<(UnixMillis, TicketId), String>,
    pub histories: BTreeMap<TicketId, Vec<StatusEvent>>,
    pub dispatch: Option<DispatchState>,
    pub cluster_map: Option<(u64, ClusterMap)>,
    /// Open incidents: (district, category, entry).
    pub open: BTreeMap<TicketId, (String, String, IncidentEntry)>,
    pub members: BTreeMap<TicketId, TicketId>,
    pub summaries: BTreeMap<TicketId, IncidentSummary>,
    pub applied: Option<u64>,
}

impl MemoryShard {
    pub fn new(shard: u32) -> Self {
        Self {
            shard,
            ..Self::default()
        }
    }

    /// Applies the writes of one batch, in order.
    pub fn commit<'a>(&mut self, writes: impl IntoIterator<Item = Write<'a>>) {
        for w in writes {
            self.write(w);
        }
    }

    fn write(&mut self, w: Write<'_>) {
        match w {
            Write::Ticket { ticket, .. } => {
                self.tickets.insert(ticket.id, ticket.into_owned());
            }
            Write::Key { key, ticket } => {
                self.keys.insert(key.into_owned(), ticket);
            }
            Write::ForgetKey { key } => {
                self.keys.remove(key.as_ref());
            }
            Write::Claim { key, claim } => {
                self.claims.insert(key.into_owned(), claim.into_owned());
            }
            Write::ForgetClaim { key } => {
                self.claims.remove(key.as_ref());
            }
            Write::Age {
                accepted_at,
                ticket,
                key,
            } => {
                self.ages.insert((accepted_at, ticket), key.into_owned());
            }
            Write::ForgetAge { accepted_at, ticket } => {
                self.ages.remove(&(accepted_at, ticket));
            }
            Write::History { ticket, events } => {
                self.histories.insert(ticket, events.into_owned());
            }
            Write::Dispatch(state) => self.dispatch = Some(state),
            Write::ClusterMap { log_index, map } => self.cluster_map = Some((log_index, map.into_owned())),
            Write::OpenIncident {
                district,
                category,
                entry,
            } => {
                let record = (district.into_owned(), category.into_owned(), entry);
                self.open.insert(entry.incident, record);
            }
            Write::CloseIncident { incident } => {
                self.open.remove(&incident);
            }
            Write::Member { ticket, incident } => {
                self.members.insert(ticket, incident);
            }
            Write::Summary(s) => {
                self.summaries.insert(s.id, s.into_owned());
            }
            Write::Applied { log_index } => self.applied = Some(log_index),
        }
    }

    /// The band index as the open-incident records say (what a replica
    /// rebuilds on opening the shard), and the incidents it leaves out.
    pub fn incident_index(&self, capacity: usize) -> (IncidentIndex, Vec<TicketId>) {
        IncidentIndex::rebuild(capacity, self.open.values().cloned())
    }
}

impl ShardView for MemoryShard {
    type Error = MemoryError;

    fn shard(&self) -> u32 {
        self.shard
    }

    fn ticket_of_key(&self, key: &str) -> Result<Option<Ticket>, MemoryError> {
        let Some(id) = self.keys.get(key) else {
            return Ok(None);
        };
        match self.tickets.get(id) {
            Some(t) => Ok(Some(t.clone())),
            None => Err(MemoryError::KeyWithoutTicket(*id)),
        }
    }

    fn key(&self, key: &str) -> Result<Option<TicketId>, MemoryError> {
        Ok(self.keys.get(key).copied())
    }

    fn claim(&self, key: &str) -> Result<Option<StoredClaim>, MemoryError> {
        Ok(self.claims.get(key).cloned())
    }

    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, MemoryError> {
        Ok(self.tickets.get(id).cloned())
    }

    fn history(&self, id: &TicketId) -> Result<Vec<StatusEvent>, MemoryError> {
        Ok(self.histories.get(id).cloned().unwrap_or_default())
    }

    fn dispatch(&self) -> Result<DispatchState, MemoryError> {
        Ok(self.dispatch.unwrap_or_default())
    }

    fn cluster_map(&self) -> Result<Option<ClusterMap>, MemoryError> {
        Ok(self.cluster_map.as_ref().map(|(_, m)| m.clone()))
    }

    fn incident_summary(&self, incident: &TicketId) -> Result<Option<IncidentSummary>, MemoryError> {
        Ok(self.summaries.get(incident).cloned())
    }

    fn ages_before(&self, before: UnixMillis) -> impl Iterator<Item = Result<AgeRecord, MemoryError>> + '_ {
        self.ages
            .range(..(before, TicketId::new(0, 0, 0)))
            .map(|((accepted_at, ticket), key)| {
                Ok(AgeRecord {
                    accepted_at: *accepted_at,
                    ticket: *ticket,
                    key: key.clone(),
                })
            })
    }
}
