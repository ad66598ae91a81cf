//! Property tests (fuzzing on the stable toolchain) of the public door's
//! decoding: arbitrary bytes as each public request message never panic;
//! what fails to decode is INVALID_ARGUMENT (the codec's mapping), and
//! what decodes goes through the door's conversion and validation without
//! panicking. Cases per property: 256 (proptest's default), more with
//! `PROPTEST_CASES=N` (docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use intake_core::{DistrictTable, Limits, TicketId, validate_complaint};
use intake_proto::codec::{WireMessage, decode_failure};
use intake_proto::{Timestamp, pb};
use intake_server::convert::{complaint_from_pb, reported_at_from_pb};
use intake_server::intake_service::status_update_from_pb;
use proptest::prelude::*;
use prost::Message;
use tonic::Code;

/// What the door does with a complaint before routing it.
fn door_checks(c: pb::Complaint) {
    let reported = c
        .reported_at
        .as_ref()
        .map(|ts| reported_at_from_pb("reported_at", ts));
    let c = complaint_from_pb(c);
    let _ = validate_complaint(&c, &DistrictTable::beijing(), &Limits::default());
    drop(reported);
}

/// Decodes `bytes` as `M`; a failure must be the caller's fault.
fn decode<M: Message + Default + WireMessage>(bytes: &[u8]) -> Result<Option<M>, TestCaseError> {
    match M::decode(bytes) {
        Ok(m) => Ok(Some(m)),
        Err(e) => {
            let s = decode_failure::<M>(&e);
            prop_assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
            Ok(None)
        }
    }
}

fn check_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Some(r) = decode::<pb::SubmitRequest>(bytes)? {
        r.complaint.into_iter().for_each(door_checks);
    }
    if let Some(r) = decode::<pb::SubmitBatchRequest>(bytes)? {
        r.complaints.into_iter().for_each(door_checks);
    }
    if let Some(r) = decode::<pb::GetTicketRequest>(bytes)? {
        let _ = r.ticket_id.parse::<TicketId>();
    }
    if let Some(r) = decode::<pb::UpdateStatusRequest>(bytes)? {
        let _ = status_update_from_pb(r);
    }
    decode::<pb::ClusterStatusRequest>(bytes)?;
    Ok(())
}

fn timestamp() -> impl Strategy<Value = Option<Timestamp>> {
    prop::option::of((any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| Timestamp { seconds, nanos }))
}

fn complaint() -> impl Strategy<Value = pb::Complaint> {
    (
        (
            ".{0,40}",
            ".{0,20}",
            prop_oneof!["1101[0-9]{2}", ".{0,8}"],
            ".{0,20}",
            ".{0,200}",
        ),
        prop::option::of((any::<f64>(), any::<f64>(), ".{0,30}")),
        (".{0,30}", timestamp(), prop::collection::vec(".{0,30}", 0..4)),
    )
        .prop_map(
            |((key, channel, district, category, text), loc, (contact, reported_at, urls))| pb::Complaint {
                idempotency_key: key,
                channel,
                district_code: district,
                category,
                text,
                location: loc.map(|(lat, lon, address)| pb::Location { lat, lon, address }),
                contact,
                reported_at,
                attachment_urls: urls,
            },
        )
}

/// A valid encoding of some public request, then damaged: one byte
/// changed and the end cut off somewhere, so decoding goes deep before it
/// meets the damage.
fn damaged_request() -> impl Strategy<Value = Vec<u8>> {
    let requests = prop_oneof![
        complaint().prop_map(|c| pb::SubmitRequest { complaint: Some(c) }.encode_to_vec()),
        prop::collection::vec(complaint(), 0..4)
            .prop_map(|complaints| pb::SubmitBatchRequest { complaints }.encode_to_vec()),
        (".{0,30}", any::<i32>(), ".{0,20}", ".{0,40}", timestamp()).prop_map(|(t, status, d, note, r)| {
            pb::UpdateStatusRequest {
                ticket_id: t,
                status,
                department: d,
                note,
                reported_at: r,
            }
            .encode_to_vec()
        }),
    ];
    (
        requests,
        any::<prop::sample::Index>(),
        any::<u8>(),
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut bytes, at, value, cut)| {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] = value;
                bytes.truncate(cut.index(bytes.len() + 1));
            }
            bytes
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_are_invalid_argument(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_all(&bytes)?;
    }

    #[test]
    fn damaged_requests_decode_or_are_invalid_argument(bytes in damaged_request()) {
        check_all(&bytes)?;
    }

    #[test]
    fn well_formed_requests_with_any_values_pass_the_door_checks(c in complaint()) {
        check_all(&pb::SubmitRequest { complaint: Some(c) }.encode_to_vec())?;
    }
}
