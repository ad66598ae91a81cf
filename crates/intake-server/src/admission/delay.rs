//! The one retry-delay policy: how long a refused client is told to wait.
//!
//! Every refusal starts from an estimate of how long the bottleneck needs
//! (a queue's drain time, a shard's latency, the runtime's lag, a streak of
//! refusals) and ends here, so that every delay a client sees lies between
//! the same two bounds: long enough that a retry does not arrive before
//! anything could have changed, short enough that a client still comes back
//! within a surge's lifetime. Before, seven formulas each had their own
//! bounds, and the 10 s cap was written five times.

use std::time::Duration;

/// The shortest delay handed to a refused client: below this, a retry
/// arrives before a queue could have moved.
pub const MIN_RETRY: Duration = Duration::from_millis(25);
/// The longest delay handed to a refused client.
pub const MAX_RETRY: Duration = Duration::from_secs(10);

/// The delay told to a client, from an estimate of the time needed.
pub fn retry_after(estimate: Duration) -> Duration {
    estimate.clamp(MIN_RETRY, MAX_RETRY)
}

/// An estimate for `backlog` units of work ahead when the drain rate is not
/// known: `base`, plus as much again per `per` units queued.
pub fn backlog_guess(base: Duration, backlog: usize, per: usize) -> Duration {
    base.mul_f64(1.0 + backlog as f64 / per.max(1) as f64)
}

/// How long `backlog` units take to drain at `per_sec`, if that is known.
pub fn drain_time(backlog: usize, per_sec: Option<f64>) -> Option<Duration> {
    let rate = per_sec.filter(|r| *r > 1.0)?;
    Some(Duration::from_secs_f64(backlog as f64 / rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delay_lies_between_the_two_bounds() {
        assert_eq!(retry_after(Duration::ZERO), MIN_RETRY);
        assert_eq!(retry_after(Duration::from_secs(3600)), MAX_RETRY);
        assert_eq!(
            retry_after(Duration::from_millis(300)),
            Duration::from_millis(300)
        );
    }

    #[test]
    fn a_guess_grows_with_the_backlog_and_a_known_rate_gives_the_drain_time() {
        let base = Duration::from_millis(100);
        assert_eq!(backlog_guess(base, 0, 256), base);
        assert_eq!(backlog_guess(base, 256, 256), base * 2);
        assert_eq!(drain_time(10, None), None);
        assert_eq!(drain_time(10, Some(0.5)), None, "a rate this low is no rate");
        assert_eq!(drain_time(500, Some(1000.0)), Some(Duration::from_millis(500)));
    }
}
