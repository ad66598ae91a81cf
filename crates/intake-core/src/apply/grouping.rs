//! A created ticket's incident, as apply records it: the band index
//! (`incident_index`) decides which incident it joins; this writes what
//! the store keeps of that decision, so every replica and every snapshot
//! groups alike: one open-incident record per incident the index holds,
//! and, once an incident has two complaints, its summary and a member
//! record per ticket.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;

use super::{ShardView, Write, WriteSink};
use crate::incident::{self, IncidentSummary};
use crate::incident_index::IncidentIndex;
use crate::{Ticket, TicketId};

/// Links `ticket` to an open incident of its district and category, or
/// opens one. `summaries` holds those written earlier in the same batch.
/// Returns the incident once it has two complaints or more.
pub(super) fn assign<V, S>(
    view: &V,
    index: &mut IncidentIndex,
    summaries: &mut HashMap<TicketId, IncidentSummary>,
    ticket: &Ticket,
    sink: &mut S,
) -> Result<Option<TicketId>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let c = &ticket.complaint;
    let Some(sig) = incident::fingerprint(&c.text) else {
        return Ok(None);
    };
    let assigned = index.assign(&c.district, &c.category, &sig, ticket.id, ticket.accepted_at);
    let entry = assigned.entry;
    sink.write(Write::OpenIncident {
        district: Cow::Borrowed(&c.district),
        category: Cow::Borrowed(&c.category),
        entry,
    })?;
    if let Some(gone) = assigned.evicted {
        sink.write(Write::CloseIncident { incident: gone })?;
    }
    if entry.count < 2 {
        return Ok(None);
    }
    let summary = match summaries.entry(entry.incident) {
        Entry::Occupied(o) => o.into_mut(),
        Entry::Vacant(v) => {
            let stored = match view.incident_summary(&entry.incident)? {
                Some(s) => s,
                None => {
                    // The second complaint: the first joins its own incident.
                    sink.write(Write::Member {
                        ticket: entry.incident,
                        incident: entry.incident,
                    })?;
                    IncidentSummary {
                        id: entry.incident,
                        district: c.district.clone(),
                        category: c.category.clone(),
                        count: 1,
                        first_at: ticket.accepted_at,
                        last_at: ticket.accepted_at,
                    }
                }
            };
            v.insert(stored)
        }
    };
    summary.count = summary.count.saturating_add(1);
    summary.last_at = entry.last_at;
    sink.write(Write::Summary(Cow::Borrowed(&*summary)))?;
    sink.write(Write::Member {
        ticket: ticket.id,
        incident: entry.incident,
    })?;
    Ok(Some(entry.incident))
}

#[cfg(test)]
#[path = "grouping_tests.rs"]
mod tests;
