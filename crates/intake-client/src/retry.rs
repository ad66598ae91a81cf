//! How long to wait before the next attempt, and whether to retry at all.
//!
//! During a surge every client retrying at once is what keeps a cluster
//! down. Full jitter spreads retries over the whole backoff window instead of
//! synchronising them, a server's `RetryInfo` is a floor because the server
//! knows its own queue, and the retry budget (gRFC A6 retry throttling) stops
//! a client from retrying at all once most of its recent attempts failed, so
//! load offered to a sick cluster stays close to the first-attempt load.

use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

/// The sleep before retry number `attempt` (0 for the first retry):
/// uniformly random in `[0, min(max, base * 2^attempt)]`, and never less than
/// what the server asked for in `RetryInfo`.
pub fn backoff(base: Duration, max: Duration, attempt: u32, server_floor: Option<Duration>) -> Duration {
    let ceiling = backoff_ceiling(base, max, attempt);
    let jittered = if ceiling.is_zero() {
        Duration::ZERO
    } else {
        Duration::from_nanos(rand::rng().random_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64))
    };
    jittered.max(server_floor.unwrap_or(Duration::ZERO))
}

/// `min(max, base * 2^attempt)`: the top of retry `attempt`'s window.
pub fn backoff_ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.checked_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(max)
        .min(max)
}

/// Settings of the retry budget, as in gRPC's `retryThrottling`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    /// Tokens the bucket starts with and never exceeds.
    pub max_tokens: f64,
    /// Tokens a successful attempt gives back.
    pub token_ratio: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            max_tokens: 10.0,
            token_ratio: 0.1,
        }
    }
}

/// A token bucket shared by all calls of one client: each failed attempt
/// takes a token, each success gives back `token_ratio`, and retries are
/// allowed only while more than half the bucket is left. First attempts are
/// never throttled, so a healthy cluster refills it.
#[derive(Debug)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    tokens: Mutex<f64>,
}

impl RetryBudget {
    pub fn new(config: RetryBudgetConfig) -> Self {
        Self {
            config,
            tokens: Mutex::new(config.max_tokens),
        }
    }

    fn with_tokens<R>(&self, f: impl FnOnce(&mut f64) -> R) -> R {
        f(&mut self.tokens.lock())
    }

    pub fn on_success(&self) {
        let (ratio, max) = (self.config.token_ratio, self.config.max_tokens);
        self.with_tokens(|t| *t = (*t + ratio).min(max));
    }

    pub fn on_failure(&self) {
        self.with_tokens(|t| *t = (*t - 1.0).max(0.0));
    }

    /// Whether a retry may be sent now.
    pub fn allows_retry(&self) -> bool {
        let threshold = self.config.max_tokens / 2.0;
        self.with_tokens(|t| *t > threshold)
    }

    pub fn tokens(&self) -> f64 {
        self.with_tokens(|t| *t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_the_full_jitter_window() {
        let base = Duration::from_millis(10);
        let max = Duration::from_millis(300);
        for attempt in 0..40 {
            let ceiling = (base * 2u32.saturating_pow(attempt.min(20))).min(max);
            for _ in 0..200 {
                let d = backoff(base, max, attempt, None);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn backoff_is_spread_not_fixed() {
        let samples: Vec<Duration> = (0..100)
            .map(|_| backoff(Duration::from_millis(100), Duration::from_secs(1), 3, None))
            .collect();
        let min = samples.iter().min().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        assert!(max - min > Duration::from_millis(200), "{min:?}..{max:?}");
    }

    #[test]
    fn backoff_never_undercuts_the_server() {
        let floor = Duration::from_millis(250);
        for attempt in 0..10 {
            let d = backoff(
                Duration::from_millis(1),
                Duration::from_millis(5),
                attempt,
                Some(floor),
            );
            assert!(d >= floor);
        }
    }

    #[test]
    fn budget_allows_retries_only_above_half() {
        let b = RetryBudget::new(RetryBudgetConfig::default());
        let mut retries = 0;
        loop {
            b.on_failure();
            if !b.allows_retry() {
                break;
            }
            retries += 1;
        }
        // 10 → 9, 8, 7, 6 allow a retry; 5 does not.
        assert_eq!(retries, 4);
        assert!((b.tokens() - 5.0).abs() < 1e-9);
        // Ten successes give one token back: retries resume.
        for _ in 0..10 {
            b.on_success();
        }
        assert!(b.allows_retry());
    }

    #[test]
    fn budget_is_capped_and_floored() {
        let b = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..100 {
            b.on_success();
        }
        assert!((b.tokens() - 10.0).abs() < 1e-9);
        for _ in 0..100 {
            b.on_failure();
        }
        assert_eq!(b.tokens(), 0.0);
    }
}
