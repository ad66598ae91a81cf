//! How long this node has been refusing ordinary complaints without a break,
//! and the retry delay that follows from it.
//!
//! Each refusal's own delay (a queue's backlog, a shard's latency, the
//! runtime's lag) says how long *that* queue needs, typically a fraction of
//! a second. In a surge that lasts, clients that honour those delays but have
//! no retry budget come back two or three times within one deadline, and
//! their retries (each a full request to decode and refuse) took the CPU the
//! emergencies needed: in the 5x batched surge such clients kept 86-91 % of
//! emergencies against 99.5 % and more for clients that retried little. So
//! the longer the refusals go on, the later ordinary callers are told to come
//! back, up to [`MAX_DELAY`]; one quiet second ends the streak.

use parking_lot::Mutex;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

/// A gap this long without a refusal ends a streak.
const QUIET: Duration = Duration::from_secs(1);
/// The longest delay a streak asks for (as the other refusals' caps).
pub use super::delay::MAX_RETRY as MAX_DELAY;

#[derive(Debug, Default)]
pub struct ShedStreak {
    /// (first, latest) refusal of the current streak.
    span: Mutex<Option<(Instant, Instant)>>,
}

impl ShedStreak {
    /// Notes refusals at `now` and returns the delay ordinary callers are
    /// asked to wait at least: the streak's length so far, with up to half
    /// again of jitter so that callers sent away together do not return
    /// together.
    pub fn refused(&self, now: Instant) -> Duration {
        let length = {
            let mut span = self.span.lock();
            let first = match *span {
                Some((first, latest)) if now.saturating_duration_since(latest) < QUIET => first,
                _ => now,
            };
            *span = Some((first, now));
            now.saturating_duration_since(first)
        };
        if length.is_zero() {
            return Duration::ZERO;
        }
        let jitter = rand::rng().random_range(0.0..0.5);
        length.mul_f64(1.0 + jitter).min(MAX_DELAY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_with_the_streak_and_a_quiet_second_resets_it() {
        let s = ShedStreak::default();
        let t0 = Instant::now();
        assert_eq!(s.refused(t0), Duration::ZERO);
        let d = s.refused(t0 + Duration::from_millis(800));
        assert!(
            (Duration::from_millis(800)..=Duration::from_millis(1200)).contains(&d),
            "{d:?}"
        );
        let d = s.refused(t0 + Duration::from_millis(1600));
        assert!(
            (Duration::from_millis(1600)..=Duration::from_millis(2400)).contains(&d),
            "{d:?}"
        );
        // Refusals every 0.9 s for a minute: one streak, capped.
        let mut t = t0 + Duration::from_millis(1600);
        for _ in 0..70 {
            t += Duration::from_millis(900);
            assert!(s.refused(t) <= MAX_DELAY);
        }
        assert_eq!(s.refused(t), MAX_DELAY);
        // A quiet second starts a new streak.
        assert_eq!(s.refused(t + QUIET), Duration::ZERO);
    }
}
