//! A token bucket per token: `rate_per_second` calls a second, with a burst
//! of one second's worth, so a steady adapter never notices it and a
//! runaway one is refused with the time until its next call would fit.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    pub(crate) fn new(rate: f64) -> Bucket {
        let burst = rate.max(1.0);
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes one call's worth, or says how long until one is there.
    pub(crate) fn take(&self, now: Instant) -> Result<(), Duration> {
        let mut state = self.state.lock();
        let (tokens, last) = *state;
        let tokens = (tokens + now.saturating_duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            return Ok(());
        }
        *state = (tokens, now);
        Err(Duration::from_secs_f64(((1.0 - tokens) / self.rate).min(3600.0)).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let b = Bucket::new(2.0);
        let t = Instant::now();
        assert!(b.take(t).is_ok());
        assert!(b.take(t).is_ok());
        let wait = b.take(t).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(b.take(t + Duration::from_millis(500)).is_ok());
    }
}
