//! A run of consecutive `Submit` entries applied as one batch: the usual
//! case, so that a burst of entries costs one storage write. Its overlay is
//! what the run wrote and the view does not show yet, so a key created by
//! an earlier entry (or item) of the run is known to later ones, and the
//! result is the same as applying each entry alone.

use std::borrow::Cow;
use std::collections::HashMap;

use super::{ShardView, Write, WriteSink, grouping, repeat_outcome};
use crate::incident::IncidentSummary;
use crate::incident_index::IncidentIndex;
use crate::{Complaint, SubmitOutcome, Ticket, TicketId, TicketStatus, UnixMillis};

/// One batch of `Submit` entries being applied.
#[derive(Debug, Default)]
pub struct Run {
    /// Tickets created in this run, by idempotency key.
    created: HashMap<String, Ticket>,
    /// Incident summaries written in this run.
    pub(super) summaries: HashMap<TicketId, IncidentSummary>,
    new_tickets: u64,
    last: Option<u64>,
}

impl Run {
    /// Whether no entry was added yet.
    pub fn is_empty(&self) -> bool {
        self.last.is_none()
    }

    /// The ticket `key` names, from this run or the view.
    pub fn existing<'r, V: ShardView>(
        &'r self,
        view: &V,
        key: &str,
    ) -> Result<Option<Cow<'r, Ticket>>, V::Error> {
        if let Some(t) = self.created.get(key) {
            return Ok(Some(Cow::Borrowed(t)));
        }
        Ok(view.ticket_of_key(key)?.map(Cow::Owned))
    }

    /// Applies one `Submit` entry at `log_index`: each complaint whose key is
    /// known gets its [`repeat_outcome`]; any other becomes ticket (shard,
    /// log index, position) with its key, its age record and its incident
    /// (`index`, the shard's band index, mirrors the incident records).
    /// Positions are 8 bits: complaints past the 256th are ignored (the
    /// proposer never packs more).
    pub fn submit<V, S>(
        &mut self,
        view: &V,
        index: &mut IncidentIndex,
        log_index: u64,
        accepted_at: UnixMillis,
        complaints: Vec<Complaint>,
        sink: &mut S,
    ) -> Result<Vec<SubmitOutcome>, V::Error>
    where
        V: ShardView,
        S: WriteSink,
        V::Error: From<S::Error>,
    {
        let mut outcomes = Vec::with_capacity(complaints.len());
        for (i, complaint) in complaints.into_iter().enumerate() {
            let Ok(item) = u8::try_from(i) else { break };
            if let Some(known) = self.existing(view, &complaint.idempotency_key)? {
                outcomes.push(repeat_outcome(&known, &complaint));
                continue;
            }
            // This shard is the key's home and a complaint of another
            // shard claimed it first (claims are never made inside a run).
            if let Some(claim) = view.claim(&complaint.idempotency_key)? {
                outcomes.push(SubmitOutcome::ClaimedElsewhere { shard: claim.shard });
                continue;
            }
            let id = TicketId::new(view.shard(), log_index, item);
            let ticket = Ticket {
                id,
                complaint,
                accepted_at,
                status: TicketStatus::Received,
                log_index,
            };
            let key = ticket.complaint.idempotency_key.as_str();
            sink.write(Write::Ticket {
                ticket: Cow::Borrowed(&ticket),
                created: true,
            })?;
            sink.write(Write::Key {
                key: Cow::Borrowed(key),
                ticket: id,
            })?;
            sink.write(Write::Age {
                accepted_at,
                ticket: id,
                key: Cow::Borrowed(key),
            })?;
            grouping::assign(view, index, &mut self.summaries, &ticket, sink)?;
            self.created
                .insert(ticket.complaint.idempotency_key.clone(), ticket);
            self.new_tickets += 1;
            outcomes.push(SubmitOutcome::Created { id, accepted_at });
        }
        self.last = Some(log_index);
        Ok(outcomes)
    }

    /// Ends the run's batch: the delivery state counts the tickets created,
    /// and the applied index is the last entry's. Writes nothing for an
    /// empty run; returns whether it wrote.
    pub fn seal<V, S>(self, view: &V, sink: &mut S) -> Result<bool, V::Error>
    where
        V: ShardView,
        S: WriteSink,
        V::Error: From<S::Error>,
    {
        let Some(last) = self.last else { return Ok(false) };
        if self.new_tickets > 0 {
            let mut state = view.dispatch()?;
            state.created += self.new_tickets;
            sink.write(Write::Dispatch(state))?;
        }
        sink.write(Write::Applied { log_index: last })?;
        Ok(true)
    }
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
