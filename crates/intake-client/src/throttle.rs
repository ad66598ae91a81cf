//! Client-side adaptive throttling of ordinary complaints (the Google SRE
//! book's "Handling Overload", ch. 21): when the cluster has lately turned
//! away most of a district's ordinary complaints at capacity, this client
//! turns some away itself, before they cost a connection, a frame and a
//! refusal on a node.
//!
//! Why: a refusal is cheap, but not free. At five times a cluster's
//! capacity on small machines, receiving and refusing the surplus takes
//! most of the nodes' CPU, the cluster's goodput falls well below its
//! capacity, and the emergencies that admission puts first wait behind the
//! surplus in the transport until their deadline. The retry budget (gRFC A6)
//! only limits retries; first attempts are the surge itself.
//!
//! The rule, per district (the client's view of a shard, which it cannot
//! see), over counts that decay with time constant `window`:
//!
//! ```text
//! refuse with probability max(0, (requests - k * accepts) / (requests + 1))
//! ```
//!
//! `requests` counts the ordinary complaints the cluster answered with a
//! ticket or at capacity, and those this client refused itself; `accepts`
//! those the cluster gave a ticket. While the cluster takes what it is sent, `requests ≈ accepts` and
//! nothing is refused; under overload the cluster still receives about `k`
//! times what it accepts, enough to see at once when capacity comes back.
//!
//! - **Emergencies are never throttled** and not counted: admission puts them
//!   first, and they are what the throttle makes room for.
//! - Only overload counts as a refusal (`RESOURCE_EXHAUSTED`): a dead node or
//!   an election is not overload, and routing around it is another module's
//!   job (the endpoint health), so faults do not make the client shed.
//! - A complaint refused here is answered like the cluster's own refusal,
//!   `RESOURCE_EXHAUSTED` with a retry delay: explicit, never silent, and an
//!   outbox keeps it and sends it later.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;
use tokio::time::Instant;

/// Settings of the throttle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    /// The multiplier `k`: under overload the cluster still receives about
    /// `k` times what it accepts. The SRE book's default is 2; lower sheds
    /// more on the client and probes recovery less.
    pub k: f64,
    /// Time constant of the decaying counts: how long the throttle
    /// remembers. Shorter reacts faster to a surge and to its end.
    pub window: Duration,
    /// The retry delay given with a refusal made here.
    pub retry_after: Duration,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            k: 2.0,
            window: Duration::from_secs(3),
            retry_after: Duration::from_millis(500),
        }
    }
}

/// Districts tracked at most; past it, a district not yet seen is not
/// throttled (its complaints are still refused by the cluster if need be).
/// The district table has a few hundred entries; this bounds memory
/// against a caller that sends made-up codes.
const MAX_SCOPES: usize = 4096;

/// Decaying counts of one district's ordinary complaints.
#[derive(Debug, Clone, Copy)]
struct Counts {
    requests: f64,
    accepts: f64,
    at: Instant,
}

impl Counts {
    fn new(now: Instant) -> Self {
        Self {
            requests: 0.0,
            accepts: 0.0,
            at: now,
        }
    }

    /// Decays both counts to `now`.
    fn age(&mut self, now: Instant, window: Duration) {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        if dt > 0.0 {
            let keep = (-dt / window.as_secs_f64().max(1e-3)).exp();
            self.requests *= keep;
            self.accepts *= keep;
            self.at = now;
        }
    }

    fn refuse_probability(&self, k: f64) -> f64 {
        ((self.requests - k * self.accepts) / (self.requests + 1.0)).clamp(0.0, 1.0)
    }
}

/// What the cluster said to an ordinary complaint, as the throttle counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// It got its ticket.
    Accepted,
    /// Turned away at capacity (`RESOURCE_EXHAUSTED`).
    Overloaded,
    /// Anything else (invalid, unavailable, timed out): not about capacity,
    /// so not counted.
    Other,
}

impl Answer {
    /// How an answer counts: `None` for a ticket, else the code the
    /// complaint was answered with.
    pub fn of(code: Option<tonic::Code>) -> Self {
        match code {
            None => Answer::Accepted,
            Some(tonic::Code::ResourceExhausted) => Answer::Overloaded,
            Some(_) => Answer::Other,
        }
    }
}

/// One client's throttle, shared by all its calls.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    scopes: Mutex<HashMap<String, Counts>>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig) -> Self {
        Self {
            config,
            scopes: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &ThrottleConfig {
        &self.config
    }

    /// Whether an ordinary complaint for `district` may be sent now; `Err`
    /// carries the retry delay to answer it with, and counts it as a
    /// request. One that is sent counts when its answer comes
    /// ([`Self::answered`]), so that answers which are not about capacity
    /// count as nothing at all.
    pub fn admit(&self, district: &str, now: Instant) -> Result<(), Duration> {
        self.admit_with(district, now, rand::rng().random::<f64>())
    }

    /// [`Self::admit`] with the uniform draw in `[0, 1)` given, for tests.
    fn admit_with(&self, district: &str, now: Instant, draw: f64) -> Result<(), Duration> {
        let mut scopes = self.scopes.lock();
        let Some(counts) = scopes.get_mut(district) else {
            return Ok(());
        };
        counts.age(now, self.config.window);
        if draw < counts.refuse_probability(self.config.k) {
            counts.requests += 1.0;
            Err(self.config.retry_after)
        } else {
            Ok(())
        }
    }

    /// Counts the cluster's answer to an ordinary complaint that was sent.
    pub fn answered(&self, district: &str, answer: Answer, now: Instant) {
        let accepted = match answer {
            Answer::Accepted => 1.0,
            Answer::Overloaded => 0.0,
            Answer::Other => return,
        };
        let mut scopes = self.scopes.lock();
        if !scopes.contains_key(district) {
            if scopes.len() >= MAX_SCOPES {
                return;
            }
            scopes.insert(district.to_owned(), Counts::new(now));
        }
        let Some(counts) = scopes.get_mut(district) else {
            return;
        };
        counts.age(now, self.config.window);
        counts.requests += 1.0;
        counts.accepts += accepted;
    }

    /// The refusal probability for `district` now (for tests and reports).
    pub fn refuse_probability(&self, district: &str, now: Instant) -> f64 {
        let mut scopes = self.scopes.lock();
        scopes.get_mut(district).map_or(0.0, |c| {
            c.age(now, self.config.window);
            c.refuse_probability(self.config.k)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig::default())
    }

    #[test]
    fn a_cluster_that_takes_everything_is_never_throttled() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..10_000 {
            // The smallest draw is refused by any positive probability.
            assert!(t.admit_with("110105", now, 0.0).is_ok(), "refused at {i}");
            t.answered("110105", Answer::Accepted, now);
        }
        assert_eq!(t.refuse_probability("110105", now), 0.0);
    }

    #[test]
    fn under_overload_the_cluster_still_sees_about_k_times_what_it_accepts() {
        // A cluster that takes 100 complaints per 100 ms tick and refuses
        // the rest, offered 500 per tick: after the first seconds the client
        // sends about k * 100 per tick, and the cluster still gets its 100.
        let t = throttle();
        let start = Instant::now();
        let mut draws = rand::rng();
        let (mut sent_late, mut accepted_late) = (0u32, 0u32);
        for tick in 0..100u32 {
            let now = start + Duration::from_millis(100) * tick;
            let mut taken = 0;
            for _ in 0..500 {
                if t.admit_with("110105", now, draws.random::<f64>()).is_err() {
                    continue;
                }
                let answer = if taken < 100 {
                    taken += 1;
                    Answer::Accepted
                } else {
                    Answer::Overloaded
                };
                t.answered("110105", answer, now);
                if tick >= 50 {
                    sent_late += 1;
                    accepted_late += u32::from(answer == Answer::Accepted);
                }
            }
        }
        let per_tick = f64::from(sent_late) / 50.0;
        assert_eq!(accepted_late, 50 * 100, "the cluster kept taking all it can");
        assert!((150.0..=260.0).contains(&per_tick), "sent {per_tick} per tick");
    }

    #[test]
    fn faults_that_are_not_overload_do_not_throttle() {
        // A cluster that is down answers UNAVAILABLE or not at all: routing
        // around it is the endpoint health's job, and the client must not
        // start shedding because of it.
        let t = throttle();
        let now = Instant::now();
        for _ in 0..100 {
            t.answered("110105", Answer::Overloaded, now);
        }
        let hot = t.refuse_probability("110105", now);
        assert!(hot > 0.9, "{hot}");
        let t = throttle();
        for _ in 0..1_000 {
            assert!(t.admit_with("110105", now, 0.0).is_ok());
            t.answered("110105", Answer::Other, now);
        }
        assert_eq!(t.refuse_probability("110105", now), 0.0);
    }

    #[test]
    fn the_memory_of_a_surge_fades_within_a_few_windows() {
        let t = throttle();
        let start = Instant::now();
        for _ in 0..1_000 {
            t.answered("110105", Answer::Overloaded, start);
        }
        assert!(t.refuse_probability("110105", start) > 0.99);
        let later = start + t.config().window * 6;
        // e^-6 of 1,000 requests is 2.5: (2.5 - 0) / 3.5 ≈ 0.7, and one
        // accepted probe brings it down; after 10 windows it is gone.
        assert!(t.refuse_probability("110105", later) < 0.75);
        let much_later = start + t.config().window * 12;
        assert!(t.refuse_probability("110105", much_later) < 0.01);
        assert!(t.admit_with("110105", much_later, 0.01).is_ok());
    }

    #[test]
    fn only_a_ticket_and_a_refusal_at_capacity_count() {
        assert_eq!(Answer::of(None), Answer::Accepted);
        assert_eq!(
            Answer::of(Some(tonic::Code::ResourceExhausted)),
            Answer::Overloaded
        );
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::InvalidArgument,
        ] {
            assert_eq!(Answer::of(Some(code)), Answer::Other);
        }
    }

    #[test]
    fn districts_are_throttled_apart() {
        let t = throttle();
        let now = Instant::now();
        for _ in 0..1_000 {
            t.answered("hot", Answer::Overloaded, now);
            t.answered("calm", Answer::Accepted, now);
        }
        assert!(t.admit_with("hot", now, 0.5).is_err());
        assert!(t.admit_with("calm", now, 0.0).is_ok());
    }

    #[test]
    fn made_up_districts_cannot_grow_it_without_bound() {
        let t = throttle();
        let now = Instant::now();
        for i in 0..(MAX_SCOPES + 100) {
            t.answered(&format!("d{i}"), Answer::Overloaded, now);
        }
        assert_eq!(t.scopes.lock().len(), MAX_SCOPES);
    }
}
