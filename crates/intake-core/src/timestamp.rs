//! Which times a client may report (`reported_at` of a complaint or of a
//! status change), checked at the door.
//!
//! Out-of-range values used to be clamped silently (a `seconds` of i64::MAX
//! became i64::MAX milliseconds), so a broken adapter clock went unnoticed
//! and every ticket it made carried nonsense. They are refused instead,
//! with a field violation the adapter can act on.

use crate::{FieldViolation, UnixMillis};

/// 2000-01-01T00:00:00Z: no hotline complaint a cluster takes today was
/// reported earlier; older values are a clock that was never set.
pub const EARLIEST_REPORTED_AT: UnixMillis = 946_684_800_000;

/// How far an adapter's clock may run ahead of this node's: generous for
/// skew and time zones mistaken for UTC, tight enough to catch garbage.
pub const MAX_REPORTED_AHEAD_MS: UnixMillis = 24 * 60 * 60 * 1000;

/// A protobuf `Timestamp` (`seconds`, `nanos`) in Unix milliseconds, if it is
/// a well-formed time between [`EARLIEST_REPORTED_AT`] and one day after
/// `now`; otherwise a violation of `field`.
pub fn reported_at_millis(
    field: &str,
    seconds: i64,
    nanos: i32,
    now: UnixMillis,
) -> Result<UnixMillis, FieldViolation> {
    let violation = |description: String| FieldViolation {
        field: field.to_string(),
        description,
    };
    if !(0..1_000_000_000).contains(&nanos) {
        return Err(violation(format!("nanos {nanos} is not in [0, 999999999]")));
    }
    let latest = now.saturating_add(MAX_REPORTED_AHEAD_MS);
    let ms = seconds
        .checked_mul(1000)
        .and_then(|ms| ms.checked_add(i64::from(nanos / 1_000_000)))
        .filter(|ms| (EARLIEST_REPORTED_AT..=latest).contains(ms));
    ms.ok_or_else(|| {
        violation(format!(
            "{seconds} s since the Unix epoch is outside the accepted window: not before 2000-01-01T00:00:00Z and at most one day after this node's clock"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_764_547_200_000; // 2025-12-01

    #[test]
    fn plausible_times_pass_and_keep_their_milliseconds() {
        assert_eq!(
            reported_at_millis("r", 1_764_547_000, 123_456_789, NOW),
            Ok(1_764_547_000_123)
        );
        assert_eq!(
            reported_at_millis("r", 946_684_800, 0, NOW),
            Ok(EARLIEST_REPORTED_AT)
        );
        let ahead = (NOW + MAX_REPORTED_AHEAD_MS) / 1000;
        assert!(reported_at_millis("r", ahead, 0, NOW).is_ok());
    }

    #[test]
    fn extremes_are_violations_of_the_named_field() {
        for (s, n) in [
            (i64::MAX, 0),
            (i64::MIN, 0),
            (-1, 0),
            (0, 0),
            (946_684_799, 999_999_999),
            (NOW / 1000 + 86_401, 0),
            (1_764_547_000, -1),
            (1_764_547_000, 1_000_000_000),
            (1_764_547_000, i32::MIN),
        ] {
            let v = reported_at_millis("reported_at", s, n, NOW).expect_err(&format!("{s} {n}"));
            assert_eq!(v.field, "reported_at");
        }
    }
}
