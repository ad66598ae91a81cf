//! When an emergency last arrived at this node, lock-free: every submission
//! asks, to pick the runtime-lag limit for ordinary complaints.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub struct RecentEmergency {
    /// Milliseconds since `born`; `u64::MAX` while none has come.
    last: AtomicU64,
    born: Instant,
}

impl RecentEmergency {
    pub fn new(born: Instant) -> Self {
        Self {
            last: AtomicU64::new(u64::MAX),
            born,
        }
    }

    pub fn note(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.born).as_millis() as u64;
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Whether one came within `window` before `now`.
    pub fn within(&self, window: Duration, now: Instant) -> bool {
        let last = self.last.load(Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.born).as_millis() as u64;
        last != u64::MAX && ms.saturating_sub(last) < window.as_millis() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_cpu_limit_holds_only_for_a_while_after_an_emergency() {
        let born = Instant::now();
        let seen = RecentEmergency::new(born);
        let window = Duration::from_secs(5);
        assert!(
            !seen.within(window, born + Duration::from_secs(1)),
            "none has come yet"
        );
        seen.note(born + Duration::from_secs(10));
        assert!(seen.within(window, born + Duration::from_secs(10)));
        assert!(seen.within(window, born + Duration::from_millis(14_900)));
        assert!(!seen.within(window, born + Duration::from_secs(15)));
        seen.note(born + Duration::from_secs(20));
        assert!(seen.within(window, born + Duration::from_secs(21)));
    }
}
