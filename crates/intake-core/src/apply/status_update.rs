//! `UpdateStatus`: status changes reported by the downstream, judged at
//! apply because only the log orders concurrent reports.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::{ShardView, Write, WriteSink};
use crate::{StatusEvent, StatusOutcome, StatusUpdate, Ticket, TicketId, UnixMillis, check_transition};

/// Applies the updates in order. Each is judged ([`check_transition`])
/// against the status committed before it, including earlier updates of
/// the same command, so every replica reaches the same result. Every ticket
/// an update found gets its ticket and history records rewritten, in ticket
/// order, even if all its updates were refused (as stored since status
/// updates exist). A ticket of another shard is not found.
pub fn update_status<V, S>(
    view: &V,
    recorded_at: UnixMillis,
    updates: Vec<StatusUpdate>,
    sink: &mut S,
) -> Result<Vec<StatusOutcome>, V::Error>
where
    V: ShardView,
    S: WriteSink,
    V::Error: From<S::Error>,
{
    let mut touched: BTreeMap<TicketId, (Ticket, Vec<StatusEvent>)> = BTreeMap::new();
    let mut outcomes = Vec::with_capacity(updates.len());
    for u in updates {
        let (ticket, history) = match touched.entry(u.ticket) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let found = if u.ticket.shard == view.shard() {
                    view.ticket(&u.ticket)?
                } else {
                    None
                };
                let Some(t) = found else {
                    outcomes.push(StatusOutcome::NotFound);
                    continue;
                };
                let h = view.history(&u.ticket)?;
                e.insert((t, h))
            }
        };
        match check_transition(ticket.status, history.len(), &u) {
            Ok(()) => {
                ticket.status = u.status;
                history.push(StatusEvent {
                    status: u.status,
                    department: u.department,
                    note: u.note,
                    reported_at: u.reported_at,
                    recorded_at,
                });
                outcomes.push(StatusOutcome::Recorded {
                    status: u.status,
                    events: history.len(),
                });
            }
            Err(e) => outcomes.push(StatusOutcome::Refused(e)),
        }
    }
    for (id, (ticket, history)) in &touched {
        sink.write(Write::Ticket {
            ticket: Cow::Borrowed(ticket),
            created: false,
        })?;
        sink.write(Write::History {
            ticket: *id,
            events: Cow::Borrowed(history),
        })?;
    }
    Ok(outcomes)
}

#[cfg(test)]
#[path = "status_update_tests.rs"]
mod tests;
