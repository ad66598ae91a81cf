//! A smoothed latency that fades while nothing is measured.
//!
//! Admission refuses ordinary complaints while this is above a target. A
//! plain moving average would then freeze at its last, high value, because
//! refused work completes nothing that could bring it down, and ordinary
//! complaints would be shed forever after a burst. Fading it (halving every
//! second without news) lets traffic back in to be measured again.

use parking_lot::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const HALF_LIFE: Duration = Duration::from_secs(1);
/// Weight of a new sample in the moving average.
const ALPHA: f64 = 0.3;

#[derive(Debug, Default)]
pub struct FadingLatency {
    state: Mutex<Option<(Duration, Instant)>>,
}

impl FadingLatency {
    pub fn record(&self, sample: Duration) {
        self.record_at(sample, Instant::now());
    }

    /// `record` with the clock given, for callers that already read it and
    /// for tests.
    pub fn record_at(&self, sample: Duration, now: Instant) {
        let mut s = self.state.lock();
        let current = s.map(|(v, at)| fade(v, now.duration_since(at)));
        let next = match current {
            Some(old) => old.mul_f64(1.0 - ALPHA) + sample.mul_f64(ALPHA),
            None => sample,
        };
        *s = Some((next, now));
    }

    /// The current estimate, faded by the time since the last sample.
    pub fn get(&self) -> Option<Duration> {
        self.get_at(Instant::now())
    }

    /// The estimate as of `now`.
    pub fn get_at(&self, now: Instant) -> Option<Duration> {
        let s = self.state.lock();
        s.map(|(v, at)| fade(v, now.saturating_duration_since(at)))
    }

    /// Whether the estimate is above `target`.
    pub fn above(&self, target: Duration) -> Option<Duration> {
        self.above_at(target, Instant::now())
    }

    /// Whether the estimate is above `target` as of `now`.
    pub fn above_at(&self, target: Duration, now: Instant) -> Option<Duration> {
        self.get_at(now).filter(|v| *v > target)
    }

    /// Forgets every sample: what they measured no longer holds.
    pub fn reset(&self) {
        *self.state.lock() = None;
    }
}

fn fade(v: Duration, since: Duration) -> Duration {
    v.mul_f64(0.5f64.powf(since.as_secs_f64() / HALF_LIFE.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_samples() {
        let l = FadingLatency::default();
        assert_eq!(l.get(), None);
        l.record(Duration::from_millis(1000));
        l.record(Duration::from_millis(0));
        let v = l.get().unwrap();
        assert!(
            v <= Duration::from_millis(700) && v >= Duration::from_millis(690),
            "{v:?}"
        );
        assert!(l.above(Duration::from_millis(500)).is_some());
    }

    #[test]
    fn fades_by_half_each_second_without_news() {
        let v = fade(Duration::from_millis(1000), Duration::from_secs(2));
        assert!(
            v <= Duration::from_millis(251) && v >= Duration::from_millis(249),
            "{v:?}"
        );
        assert_eq!(
            fade(Duration::from_millis(800), Duration::ZERO),
            Duration::from_millis(800)
        );
    }
}
