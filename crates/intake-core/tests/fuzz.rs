//! Property tests (fuzzing on the stable toolchain) of what a client or an
//! operator can hand the domain layer: ticket ids, complaints, reported
//! times, and the district and category tables. Besides "no panic", each
//! property checks what its parser promises. Cases per property: proptest's
//! default (256), `PROPTEST_CASES=N` for longer runs (docs/fuzzing.md).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use intake_core::timestamp::{EARLIEST_REPORTED_AT, MAX_REPORTED_AHEAD_MS};
use intake_core::{
    CategoryTable, Complaint, DistrictTable, Limits, Location, TicketId, reported_at_millis,
    validate_complaint,
};
use proptest::prelude::*;

/// Strings near a ticket id: its alphabet, dashes, confusable letters,
/// multi-byte and combining characters, spaces.
fn ticket_like() -> impl Strategy<Value = String> {
    "[0-9A-Za-z\\-Ää💥é１\u{301} ]{0,30}"
}

/// Text with plenty of control, multi-byte and odd characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect())
}

fn complaint() -> impl Strategy<Value = Complaint> {
    (
        (
            text(140),
            text(70),
            prop_oneof!["1101[0-9]{2}", text(10)],
            text(70),
            text(9000),
        ),
        prop::option::of((any::<f64>(), any::<f64>(), text(600))),
        (
            text(300),
            prop::option::of(any::<i64>()),
            prop::collection::vec(text(80), 0..12),
        ),
    )
        .prop_map(
            |((key, channel, district, category, body), loc, (contact, reported_at, attachments))| {
                Complaint {
                    idempotency_key: key,
                    channel,
                    district,
                    category,
                    text: body,
                    location: loc.map(|(lat, lon, address)| Location { lat, lon, address }),
                    contact,
                    reported_at,
                    attachments,
                }
            },
        )
}

proptest! {
    #[test]
    fn any_string_is_a_ticket_id_or_an_error(s in any::<String>()) {
        if let Ok(id) = s.parse::<TicketId>() {
            prop_assert_eq!(id.to_string().parse::<TicketId>(), Ok(id));
        }
    }

    #[test]
    fn ticket_like_strings_parse_or_fail_cleanly(s in ticket_like()) {
        if let Ok(id) = s.parse::<TicketId>() {
            prop_assert_eq!(id.to_string().parse::<TicketId>(), Ok(id));
        }
    }

    #[test]
    fn any_bytes_as_text_are_a_ticket_id_or_an_error(b in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = String::from_utf8_lossy(&b).parse::<TicketId>();
    }

    #[test]
    fn every_ticket_id_round_trips(shard in any::<u32>(), index in any::<u64>(), item in any::<u8>()) {
        let id = TicketId::new(shard, index, item);
        prop_assert_eq!(id.to_string().parse::<TicketId>(), Ok(id));
        prop_assert_eq!(id.to_string().to_lowercase().parse::<TicketId>(), Ok(id));
    }

    #[test]
    fn validation_never_panics_and_what_passes_is_within_limits(c in complaint()) {
        let limits = Limits::default();
        if validate_complaint(&c, &DistrictTable::beijing(), &limits).is_ok() {
            prop_assert!(c.text.len() <= limits.max_text_bytes);
            prop_assert!(c.idempotency_key.len() <= limits.max_key_bytes);
            prop_assert!(c.approx_bytes() <= limits.max_complaint_bytes);
            prop_assert!(c.location.iter().all(|l| l.lat.is_finite() && l.lon.is_finite()));
        }
    }

    #[test]
    fn reported_at_is_in_the_window_or_a_violation(
        seconds in any::<i64>(),
        nanos in any::<i32>(),
        now in any::<i64>(),
    ) {
        if let Ok(ms) = reported_at_millis("reported_at", seconds, nanos, now) {
            prop_assert!(ms >= EARLIEST_REPORTED_AT);
            prop_assert!(ms <= now.saturating_add(MAX_REPORTED_AHEAD_MS));
        }
    }

    #[test]
    fn any_district_csv_is_a_table_or_an_error(s in any::<String>()) {
        let _ = DistrictTable::from_csv(&s);
    }

    #[test]
    fn csv_like_district_tables_are_a_table_or_an_error(
        lines in prop::collection::vec("[0-9a-z,\" \\-.]{0,30}", 0..8),
    ) {
        let text = format!("code,name_zh,name_en,population\n{}", lines.join("\n"));
        let _ = DistrictTable::from_csv(&text);
    }

    #[test]
    fn any_category_csv_is_a_table_or_an_error(
        header in prop_oneof![Just("name,emergency\n".to_string()), text(20)],
        lines in prop::collection::vec("[a-z_,\" ]{0,12}(true|false|yes|1|0|)", 0..8),
    ) {
        let _ = CategoryTable::from_csv(&format!("{header}{}", lines.join("\n")));
    }
}
