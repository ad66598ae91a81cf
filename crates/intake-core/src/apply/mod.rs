//! The deterministic apply of committed commands, as pure code: each handler
//! reads one shard's state through a [`ShardView`] and emits its effects as
//! typed [`Write`]s into a [`WriteSink`]; the storage crate implements the
//! view over its sled tree and maps the writes onto one sled batch.
//!
//! Why here and not in storage: every replica must reach the same state
//! from the same entries, and that is easiest to check where no disk is
//! involved. openraft's engine is the model: pure logic emitting commands,
//! with the tests beside each handler, run on [`MemoryShard`], an in-memory
//! view that applies the writes as storage does.
//!
//! A handler reads only the view (what earlier batches wrote) and, within a
//! batch of several entries, the [`Run`] it carries (what earlier entries
//! of the same batch wrote and the view does not show yet). Only runs of
//! `Submit` entries share a batch; any other entry is applied in a batch of
//! its own, after the batch before it was written, so it needs no overlay.
//! Every batch ends with [`Write::Applied`]: the applied index travels with
//! the effects, so after a crash the state is exactly "everything up to the
//! applied index" and the rest is applied again from the log.
//!
//! Nothing here allocates per complaint beyond the ticket it creates: writes
//! borrow what they name ([`Cow::Borrowed`]), and storage encodes them
//! straight into its batch.

mod claim;
mod compact;
mod cursor;
mod grouping;
mod memory;
mod run;
mod status_update;

use std::borrow::Cow;

pub use claim::{StoredClaim, claim_keys};
pub use compact::{MAX_COMPACT_PER_ENTRY, compact_keys};
pub use cursor::{add_member, advance_dispatch, change_map, set_cluster_map};
pub use memory::{MemoryError, MemoryShard};
pub use run::Run;
pub use status_update::update_status;

use crate::incident::{IncidentEntry, IncidentSummary};
use crate::{ClusterMap, Complaint, DispatchState, StatusEvent, SubmitOutcome, Ticket, TicketId, UnixMillis};

/// What apply reads of one shard's state, as of the last written batch.
pub trait ShardView {
    type Error;

    /// The shard this state belongs to: the first number of its ticket ids.
    fn shard(&self) -> u32;
    /// The ticket an idempotency key names, if the key is known. A key
    /// naming a missing ticket is corrupt state, the view's error.
    fn ticket_of_key(&self, key: &str) -> Result<Option<Ticket>, Self::Error>;
    /// The id an idempotency key names, if the key is known.
    fn key(&self, key: &str) -> Result<Option<TicketId>, Self::Error>;
    /// The claim on a key for a complaint of another shard, if this shard
    /// is the key's home and it was claimed ([`claim_keys`]).
    fn claim(&self, key: &str) -> Result<Option<StoredClaim>, Self::Error>;
    /// A ticket of this shard by id.
    fn ticket(&self, id: &TicketId) -> Result<Option<Ticket>, Self::Error>;
    /// A ticket's status events, oldest first (empty without a record).
    fn history(&self, id: &TicketId) -> Result<Vec<StatusEvent>, Self::Error>;
    /// Where delivery stands (the default before the first record).
    fn dispatch(&self) -> Result<DispatchState, Self::Error>;
    /// The stored cluster map (meta group), if there is one.
    fn cluster_map(&self) -> Result<Option<ClusterMap>, Self::Error>;
    /// An incident's summary, once it has two complaints.
    fn incident_summary(&self, incident: &TicketId) -> Result<Option<IncidentSummary>, Self::Error>;
    /// Age records of tickets accepted before `before`, oldest first (by
    /// accepted_at, then ticket position).
    fn ages_before(&self, before: UnixMillis) -> impl Iterator<Item = Result<AgeRecord, Self::Error>> + '_;
}

/// One record of the idempotency window: the key a ticket was created with,
/// by acceptance time, so compaction finds the oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgeRecord {
    pub accepted_at: UnixMillis,
    pub ticket: TicketId,
    pub key: String,
}

/// One effect of apply on the shard's state. Storage maps each onto its
/// records (see `intake-storage`'s `keys.rs` for their layout); the order
/// of writes matters only for writes to the same record.
#[derive(Debug, Clone, PartialEq)]
pub enum Write<'a> {
    /// A ticket record: new (`created`, once per ticket, on every replica)
    /// or with a new status.
    Ticket { ticket: Cow<'a, Ticket>, created: bool },
    /// An idempotency key names this ticket.
    Key { key: Cow<'a, str>, ticket: TicketId },
    /// An idempotency key is forgotten.
    ForgetKey { key: Cow<'a, str> },
    /// A key is claimed here for a complaint of another shard.
    Claim {
        key: Cow<'a, str>,
        claim: Cow<'a, StoredClaim>,
    },
    /// A claim is forgotten.
    ForgetClaim { key: Cow<'a, str> },
    /// The age record of a ticket created with `key`.
    Age {
        accepted_at: UnixMillis,
        ticket: TicketId,
        key: Cow<'a, str>,
    },
    /// An age record is removed.
    ForgetAge {
        accepted_at: UnixMillis,
        ticket: TicketId,
    },
    /// A ticket's whole status history.
    History {
        ticket: TicketId,
        events: Cow<'a, [StatusEvent]>,
    },
    /// The shard's delivery state.
    Dispatch(DispatchState),
    /// The cluster map (meta group), committed at `log_index`.
    ClusterMap {
        log_index: u64,
        map: Cow<'a, ClusterMap>,
    },
    /// An incident the band index holds, as it must be stored.
    OpenIncident {
        district: Cow<'a, str>,
        category: Cow<'a, str>,
        entry: IncidentEntry,
    },
    /// An incident left the band index (and so the store).
    CloseIncident { incident: TicketId },
    /// A ticket is part of an incident.
    Member { ticket: TicketId, incident: TicketId },
    /// An incident's summary.
    Summary(Cow<'a, IncidentSummary>),
    /// The batch holds every effect up to this log index: the last write of
    /// every batch.
    Applied { log_index: u64 },
}

impl Write<'_> {
    /// The same write owning what it names, to keep beyond the borrow.
    pub fn into_owned(self) -> Write<'static> {
        fn own<T: ToOwned + ?Sized + 'static>(c: Cow<'_, T>) -> Cow<'static, T> {
            Cow::Owned(c.into_owned())
        }
        match self {
            Write::Ticket { ticket, created } => Write::Ticket {
                ticket: own(ticket),
                created,
            },
            Write::Key { key, ticket } => Write::Key {
                key: own(key),
                ticket,
            },
            Write::ForgetKey { key } => Write::ForgetKey { key: own(key) },
            Write::Claim { key, claim } => Write::Claim {
                key: own(key),
                claim: own(claim),
            },
            Write::ForgetClaim { key } => Write::ForgetClaim { key: own(key) },
            Write::Age {
                accepted_at,
                ticket,
                key,
            } => Write::Age {
                accepted_at,
                ticket,
                key: own(key),
            },
            Write::ForgetAge { accepted_at, ticket } => Write::ForgetAge { accepted_at, ticket },
            Write::History { ticket, events } => Write::History {
                ticket,
                events: own(events),
            },
            Write::Dispatch(state) => Write::Dispatch(state),
            Write::ClusterMap { log_index, map } => Write::ClusterMap {
                log_index,
                map: own(map),
            },
            Write::OpenIncident {
                district,
                category,
                entry,
            } => Write::OpenIncident {
                district: own(district),
                category: own(category),
                entry,
            },
            Write::CloseIncident { incident } => Write::CloseIncident { incident },
            Write::Member { ticket, incident } => Write::Member { ticket, incident },
            Write::Summary(s) => Write::Summary(own(s)),
            Write::Applied { log_index } => Write::Applied { log_index },
        }
    }
}

/// Where apply's writes go: storage's batch, or a list in tests.
pub trait WriteSink {
    type Error;
    fn write(&mut self, write: Write<'_>) -> Result<(), Self::Error>;
}

/// Keeps every write, owned, in order.
impl WriteSink for Vec<Write<'static>> {
    type Error = std::convert::Infallible;
    fn write(&mut self, write: Write<'_>) -> Result<(), Self::Error> {
        self.push(write.into_owned());
        Ok(())
    }
}

/// Ends the batch of an entry applied alone (any but a `Submit`, whose
/// batch a [`Run`] ends), effects or none (blank and membership entries).
pub fn applied<S: WriteSink>(log_index: u64, sink: &mut S) -> Result<(), S::Error> {
    sink.write(Write::Applied { log_index })
}

/// What a complaint whose key is already known gets: the key's ticket if
/// the content is the same (a retry), a conflict if not. The caller may
/// log a conflict, by ticket id only: neither complaint's content goes into
/// a log (personal data, issue 19).
pub fn repeat_outcome(known: &Ticket, complaint: &Complaint) -> SubmitOutcome {
    if known.complaint.same_content(complaint) {
        SubmitOutcome::Existing {
            id: known.id,
            accepted_at: known.accepted_at,
        }
    } else {
        SubmitOutcome::Conflict { id: known.id }
    }
}

#[cfg(test)]
mod determinism_tests;
#[cfg(test)]
mod fixtures;
