//! Between the wire (`intake.v1`) and the domain (`intake-core`).

use intake_core::{Complaint, FieldViolation, Location, StatusEvent, Ticket, TicketStatus, UnixMillis};
use intake_proto::Timestamp;
use intake_proto::pb;

pub fn millis_to_timestamp(ms: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn timestamp_to_millis(ts: &Timestamp) -> UnixMillis {
    ts.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(ts.nanos) / 1_000_000)
}

/// A client's `reported_at`, refused (not clamped) outside the window
/// `intake_core::timestamp` sets.
pub fn reported_at_from_pb(field: &str, ts: &Timestamp) -> Result<UnixMillis, FieldViolation> {
    intake_core::reported_at_millis(field, ts.seconds, ts.nanos, now_millis())
}

pub fn now_millis() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as UnixMillis)
        .unwrap_or(0)
}

pub fn complaint_from_pb(c: pb::Complaint) -> Complaint {
    Complaint {
        idempotency_key: c.idempotency_key,
        channel: c.channel,
        district: c.district_code,
        category: c.category,
        text: c.text,
        location: c.location.map(|l| Location {
            lat: l.lat,
            lon: l.lon,
            address: l.address,
        }),
        contact: c.contact,
        reported_at: c.reported_at.as_ref().map(timestamp_to_millis),
        attachments: c.attachment_urls,
    }
}

pub fn complaint_to_pb(c: &Complaint) -> pb::Complaint {
    pb::Complaint {
        idempotency_key: c.idempotency_key.clone(),
        channel: c.channel.clone(),
        district_code: c.district.clone(),
        category: c.category.clone(),
        text: c.text.clone(),
        location: c.location.as_ref().map(|l| pb::Location {
            lat: l.lat,
            lon: l.lon,
            address: l.address.clone(),
        }),
        contact: c.contact.clone(),
        reported_at: c.reported_at.map(millis_to_timestamp),
        attachment_urls: c.attachments.clone(),
    }
}

pub fn status_to_pb(s: TicketStatus) -> pb::TicketStatus {
    match s {
        TicketStatus::Received => pb::TicketStatus::Received,
        TicketStatus::Dispatched => pb::TicketStatus::Dispatched,
        TicketStatus::Assigned => pb::TicketStatus::Assigned,
        TicketStatus::Resolved => pb::TicketStatus::Resolved,
        TicketStatus::Rejected => pb::TicketStatus::Rejected,
    }
}

pub fn status_from_pb(v: i32) -> Option<TicketStatus> {
    match pb::TicketStatus::try_from(v).ok()? {
        pb::TicketStatus::Unspecified => None,
        pb::TicketStatus::Received => Some(TicketStatus::Received),
        pb::TicketStatus::Dispatched => Some(TicketStatus::Dispatched),
        pb::TicketStatus::Assigned => Some(TicketStatus::Assigned),
        pb::TicketStatus::Resolved => Some(TicketStatus::Resolved),
        pb::TicketStatus::Rejected => Some(TicketStatus::Rejected),
    }
}

pub fn event_to_pb(e: &StatusEvent) -> pb::StatusEvent {
    pb::StatusEvent {
        status: status_to_pb(e.status) as i32,
        department: e.department.clone().unwrap_or_default(),
        note: e.note.clone(),
        reported_at: Some(millis_to_timestamp(e.reported_at)),
        recorded_at: Some(millis_to_timestamp(e.recorded_at)),
    }
}

/// A ticket with its status history.
pub fn ticket_with_history_to_pb(t: &Ticket, history: &[StatusEvent]) -> pb::Ticket {
    let mut p = ticket_to_pb(t);
    p.history = history.iter().map(event_to_pb).collect();
    p
}

/// The form the downstream receives.
pub fn ticket_to_dispatch(t: &Ticket) -> intake_proto::dispatch::v1::DispatchedTicket {
    let c = &t.complaint;
    intake_proto::dispatch::v1::DispatchedTicket {
        ticket_id: t.id.to_string(),
        idempotency_key: c.idempotency_key.clone(),
        district: c.district.clone(),
        shard: t.id.shard,
        accepted_at: Some(millis_to_timestamp(t.accepted_at)),
        log_index: t.log_index,
        item: u32::from(t.id.item),
        channel: c.channel.clone(),
        category: c.category.clone(),
        text: c.text.clone(),
        address: c.location.as_ref().map(|l| l.address.clone()).unwrap_or_default(),
        lat: c.location.as_ref().map_or(0.0, |l| l.lat),
        lon: c.location.as_ref().map_or(0.0, |l| l.lon),
        has_location: c.location.is_some(),
        incident_id: String::new(),
    }
}

pub fn ticket_to_pb(t: &Ticket) -> pb::Ticket {
    pb::Ticket {
        ticket_id: t.id.to_string(),
        shard: t.id.shard,
        complaint: Some(complaint_to_pb(&t.complaint)),
        accepted_at: Some(millis_to_timestamp(t.accepted_at)),
        status: status_to_pb(t.status) as i32,
        log_index: t.log_index,
        history: Vec::new(),
        incident_id: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_1970() {
        for ms in [0, 1, 999, 1_700_000_000_123, -1, -1001] {
            assert_eq!(timestamp_to_millis(&millis_to_timestamp(ms)), ms);
        }
    }
}
