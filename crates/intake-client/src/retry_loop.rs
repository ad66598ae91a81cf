//! The one retry loop, shared by [`crate::Client`] and `intake load`'s
//! engine: when each complaint of a request may go again, and when the
//! request stops trying.
//!
//! Both used to write this loop themselves, and a fix to one (a budget rule,
//! a deadline check, a per-item delay) had to be found and made again in the
//! other, or the load engine stopped measuring what adapters do. The caller
//! still owns what differs: where a round is sent, how an answer is judged,
//! and what it counts. The loop owns the rules:
//!
//! - each complaint has its own time to go again: a server's `RetryInfo`
//!   binds only the complaint it was given for, so in a mixed batch an
//!   emergency that timed out is resent after the round's pause while the
//!   ordinary complaints beside it wait as long as they were told;
//! - that time is the round's pause ([`Backoff`]), floored by the server's
//!   delay;
//! - a round costs the shared [`RetryBudget`] a token when anything in it may
//!   be retried, and gives some back when it had acceptances and nothing to
//!   retry (gRFC A6); a definite refusal does neither;
//! - the loop stops when nothing is left to send, when the next send would
//!   fall at or after the deadline, after `max_attempts` rounds, or when the
//!   budget refuses a retry (first attempts are never throttled).

use std::time::Duration;

use tokio::time::Instant;

use crate::retry::{RetryBudget, backoff, backoff_ceiling};

/// The pause after a round before its retryable complaints go again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The pause after the first round; it doubles each round.
    pub base: Duration,
    /// The doubling stops here.
    pub max: Duration,
    /// Full jitter: uniformly random up to the doubled value, so clients
    /// that failed together do not retry together. Without it, the pause is
    /// the doubled value itself.
    pub jitter: bool,
}

impl Backoff {
    /// `intake-client`'s: full jitter under `base * 2^round`, capped.
    pub fn full_jitter(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: true,
        }
    }

    /// `intake load`'s: `base * 2^round`, capped, with no randomness.
    pub fn doubling(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            jitter: false,
        }
    }

    /// The pause after round `round` (0 for the first).
    pub fn pause(&self, round: u32) -> Duration {
        if self.jitter {
            backoff(self.base, self.max, round, None)
        } else {
            backoff_ceiling(self.base, self.max, round)
        }
    }
}

/// How a request retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Rounds at most, the first included; `u32::MAX` for no bound but the
    /// deadline and the budget.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The same policy, with at most `max_attempts` rounds.
    pub const fn with_max_attempts(self, max_attempts: u32) -> Self {
        Self { max_attempts, ..self }
    }
}

/// What one complaint's answer in a round means for the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It has its ticket.
    Accepted,
    /// Refused for good (invalid, a conflict, ...): no retry.
    Refused,
    /// May go again, no sooner than the server's delay if it gave one.
    Retry(Option<Duration>),
}

/// How a round ended, as the budget saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundEnd {
    /// Something may be retried: the round cost a token.
    Retrying,
    /// Nothing to retry and something accepted: a token's share came back.
    Accepted,
    /// Only definite refusals (or nothing): the budget did not move.
    Refused,
}

/// Why the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every complaint is accepted or refused for good.
    Settled,
    /// The next send would be at or after the deadline.
    Deadline,
    /// `max_attempts` rounds were sent.
    Attempts,
    /// The retry budget refused a retry.
    Throttled,
}

/// One round to send: which complaints (indices into the request, in
/// order), and how many rounds came before (the retry mark of gRFC A6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    pub number: u32,
    pub items: Vec<usize>,
}

impl Round {
    /// Whether this round retries (it is not the first).
    pub fn is_retry(&self) -> bool {
        self.number > 0
    }
}

/// The loop's state for one request. Drive it with
/// `while let Some(round) = attempts.next_round().await { …send…; attempts.settle(…) }`.
#[derive(Debug)]
pub struct Attempts<'a> {
    policy: RetryPolicy,
    budget: Option<&'a RetryBudget>,
    deadline: Instant,
    /// When each complaint may go (next); `None` once it is settled.
    due: Vec<Option<Instant>>,
    /// Rounds sent so far.
    rounds: u32,
    stop: Option<Stop>,
}

impl<'a> Attempts<'a> {
    /// `items` complaints, all due at `start`, to settle before `deadline`.
    /// Without a budget, retries go whenever the deadline allows.
    pub fn new(
        policy: RetryPolicy,
        budget: Option<&'a RetryBudget>,
        items: usize,
        start: Instant,
        deadline: Instant,
    ) -> Self {
        Self {
            policy,
            budget,
            deadline,
            due: vec![Some(start); items],
            rounds: 0,
            stop: None,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Why the loop ended; `None` while it runs.
    pub fn stopped(&self) -> Option<Stop> {
        self.stop
    }

    /// When the next round may go, or why there is none, at `now`.
    fn next_wake(&self, now: Instant) -> Result<Instant, Stop> {
        let wake = self.due.iter().flatten().min().copied().ok_or(Stop::Settled)?;
        if wake >= self.deadline || now >= self.deadline {
            return Err(Stop::Deadline);
        }
        if self.rounds >= self.policy.max_attempts {
            return Err(Stop::Attempts);
        }
        if self.rounds > 0 && self.budget.is_some_and(|b| !b.allows_retry()) {
            return Err(Stop::Throttled);
        }
        Ok(wake)
    }

    /// Waits until the next round is due and returns it: the complaints
    /// due by then. `None` when the loop is over ([`Self::stopped`] says
    /// why).
    pub async fn next_round(&mut self) -> Option<Round> {
        loop {
            let wake = match self.next_wake(Instant::now()) {
                Ok(wake) => wake,
                Err(stop) => {
                    self.stop = Some(stop);
                    return None;
                }
            };
            tokio::time::sleep_until(wake).await;
            let now = Instant::now();
            let items: Vec<usize> = (0..self.due.len())
                .filter(|i| self.due[*i].is_some_and(|d| d <= now))
                .collect();
            if !items.is_empty() {
                return Some(Round {
                    number: self.rounds,
                    items,
                });
            }
        }
    }

    /// The answers of the round just sent, judged, as answered at
    /// `answered`: retryable complaints are due again after the round's
    /// pause (at least the server's delay), and the budget pays or is paid.
    pub fn settle(
        &mut self,
        answered: Instant,
        verdicts: impl IntoIterator<Item = (usize, Verdict)>,
    ) -> RoundEnd {
        let pause = self.policy.backoff.pause(self.rounds);
        self.rounds += 1;
        let (mut retrying, mut accepted) = (false, false);
        for (i, verdict) in verdicts {
            let Some(due) = self.due.get_mut(i) else { continue };
            *due = match verdict {
                Verdict::Accepted => {
                    accepted = true;
                    None
                }
                Verdict::Refused => None,
                Verdict::Retry(floor) => {
                    retrying = true;
                    Some(answered + pause.max(floor.unwrap_or_default()))
                }
            };
        }
        let end = if retrying {
            RoundEnd::Retrying
        } else if accepted {
            RoundEnd::Accepted
        } else {
            RoundEnd::Refused
        };
        if let Some(b) = self.budget {
            match end {
                RoundEnd::Retrying => b.on_failure(),
                RoundEnd::Accepted => b.on_success(),
                RoundEnd::Refused => {}
            }
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::RetryBudgetConfig;

    const MS: Duration = Duration::from_millis(1);

    fn doubling(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::doubling(20 * MS, 500 * MS),
            max_attempts,
        }
    }

    /// Runs the loop with answers from `judge(round, item)`, with no time
    /// spent sending; each round's (start since t0, items).
    async fn drive(
        attempts: &mut Attempts<'_>,
        mut judge: impl FnMut(u32, usize) -> Verdict,
    ) -> Vec<(Duration, Vec<usize>)> {
        let t0 = Instant::now();
        let mut seen = Vec::new();
        while let Some(round) = attempts.next_round().await {
            seen.push((Instant::now() - t0, round.items.clone()));
            let verdicts: Vec<(usize, Verdict)> = round
                .items
                .iter()
                .map(|i| (*i, judge(round.number, *i)))
                .collect();
            attempts.settle(Instant::now(), verdicts);
        }
        seen
    }

    #[tokio::test(start_paused = true)]
    async fn the_pause_doubles_to_its_cap_and_the_deadline_ends_the_loop() {
        let now = Instant::now();
        let mut a = Attempts::new(doubling(u32::MAX), None, 1, now, now + 2000 * MS);
        let seen = drive(&mut a, |_, _| Verdict::Retry(None)).await;
        let starts: Vec<u64> = seen.iter().map(|(t, _)| t.as_millis() as u64).collect();
        // 20, 40, 80, 160, 320, then 500 each: 20+40+80+160+320 = 620.
        assert_eq!(starts, vec![0, 20, 60, 140, 300, 620, 1120, 1620]);
        assert_eq!(
            a.stopped(),
            Some(Stop::Deadline),
            "2120 ms would be past the deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn each_complaint_waits_its_own_server_delay_and_no_less_than_the_pause() {
        let now = Instant::now();
        let mut a = Attempts::new(doubling(u32::MAX), None, 3, now, now + 10_000 * MS);
        // Item 0 (an emergency that timed out) may go after the pause; item
        // 1 was told 300 ms; item 2 was told 5 ms, less than the pause.
        let seen = drive(&mut a, |round, i| match (round, i) {
            (0, 0) => Verdict::Retry(None),
            (0, 1) => Verdict::Retry(Some(300 * MS)),
            (0, 2) => Verdict::Retry(Some(5 * MS)),
            _ => Verdict::Accepted,
        })
        .await;
        assert_eq!(
            seen,
            vec![
                (Duration::ZERO, vec![0, 1, 2]),
                (20 * MS, vec![0, 2]),
                (300 * MS, vec![1])
            ]
        );
        assert_eq!(a.stopped(), Some(Stop::Settled));
    }

    #[tokio::test(start_paused = true)]
    async fn definite_refusals_end_at_once_and_max_attempts_bounds_the_rounds() {
        let now = Instant::now();
        let mut a = Attempts::new(doubling(u32::MAX), None, 2, now, now + 10_000 * MS);
        let seen = drive(&mut a, |_, _| Verdict::Refused).await;
        assert_eq!(seen.len(), 1);
        assert_eq!(a.stopped(), Some(Stop::Settled));

        let mut a = Attempts::new(doubling(3), None, 1, now, now + 10_000 * MS);
        let seen = drive(&mut a, |_, _| Verdict::Retry(None)).await;
        assert_eq!(seen.len(), 3);
        assert_eq!(a.stopped(), Some(Stop::Attempts));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_throttles_retries_but_never_a_first_attempt() {
        let budget = RetryBudget::new(RetryBudgetConfig::default());
        let now = Instant::now();
        let mut a = Attempts::new(doubling(u32::MAX), Some(&budget), 1, now, now + 60_000 * MS);
        let seen = drive(&mut a, |_, _| Verdict::Retry(None)).await;
        // 10 tokens: failures leave 9, 8, 7, 6 (a retry each), then 5 (none).
        assert_eq!(seen.len(), 5);
        assert_eq!(a.stopped(), Some(Stop::Throttled));
        // A new request still gets its first attempt, and its success pays.
        let mut a = Attempts::new(doubling(u32::MAX), Some(&budget), 1, now, now + 60_000 * MS);
        let before = budget.tokens();
        let seen = drive(&mut a, |_, _| Verdict::Accepted).await;
        assert_eq!(seen.len(), 1);
        assert!(budget.tokens() > before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_round_pays_for_retries_is_paid_for_acceptances_and_ignores_refusals() {
        let budget = RetryBudget::new(RetryBudgetConfig::default());
        let now = Instant::now();
        let mut a = Attempts::new(doubling(u32::MAX), Some(&budget), 3, now, now + 60_000 * MS);
        let Some(round) = a.next_round().await else {
            panic!("a first round");
        };
        let end = a.settle(
            Instant::now(),
            [
                (0, Verdict::Accepted),
                (1, Verdict::Refused),
                (2, Verdict::Retry(None)),
            ],
        );
        assert_eq!((round.number, end), (0, RoundEnd::Retrying));
        assert_eq!(budget.tokens(), 9.0);
        let Some(round) = a.next_round().await else {
            panic!("a retry");
        };
        assert!(round.is_retry());
        assert_eq!(round.items, vec![2]);
        assert_eq!(
            a.settle(Instant::now(), [(2, Verdict::Refused)]),
            RoundEnd::Refused
        );
        assert_eq!(budget.tokens(), 9.0);
        assert!(a.next_round().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_starts_after_its_deadline_sends_nothing() {
        let now = Instant::now();
        tokio::time::advance(100 * MS).await;
        let mut a = Attempts::new(doubling(u32::MAX), None, 1, now, now + 50 * MS);
        assert!(a.next_round().await.is_none());
        assert_eq!(a.stopped(), Some(Stop::Deadline));
    }

    #[test]
    fn full_jitter_stays_under_the_doubled_pause() {
        let b = Backoff::full_jitter(50 * MS, 2000 * MS);
        for round in 0..10 {
            let ceiling = Backoff::doubling(50 * MS, 2000 * MS).pause(round);
            assert!(b.pause(round) <= ceiling);
        }
        assert_eq!(Backoff::doubling(50 * MS, 2000 * MS).pause(40), 2000 * MS);
    }
}
