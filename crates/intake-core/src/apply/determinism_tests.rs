//! Replicas apply the same entries to the same state, whatever batches
//! they were grouped in and wherever a replica restarted (rebuilt its band
//! index from the records) on the way; from one starting state and one
//! grouping, they emit the very same writes.

use super::fixtures::{Replica, SHARD, complaint};
use crate::incident::WINDOW_MS;
use crate::{Command, CommandResponse, DispatchCursor, StatusUpdate, TicketId, TicketStatus};

const TEXTS: [&str; 5] = [
    "Water main burst on Guangqu Road near the north gate, the street is flooding",
    "water main burst on Guangqu road near north gate - the street is flooding!",
    "Karaoke bar on the third floor plays loud music every night until 3am",
    "karaoke bar on 3rd floor plays loud music every night until 3 am!!",
    "flood!",
];

/// A small deterministic generator, so a failure replays exactly.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// `n` entries of every kind: submits reusing keys (retries and
/// conflicts) with near-duplicate texts, status updates, cursor moves
/// (some stale) and compactions. Cursor moves are built from a replica
/// applying as it goes, so that most of them move.
fn workload(seed: u64, n: u64) -> Vec<(u64, Command)> {
    let mut rng = Lcg(seed);
    let mut reference = Replica::new();
    let mut entries = Vec::new();
    let mut now = 1_000_000i64;
    for log_index in 1..=n {
        now += rng.below(20 * 60 * 1000) as i64;
        let cmd = match rng.below(10) {
            0..=5 => {
                let complaints = (0..1 + rng.below(6))
                    .map(|_| {
                        let key = format!("k{}", rng.below(60));
                        let mut c = complaint(&key, TEXTS[rng.below(TEXTS.len() as u64) as usize]);
                        c.district = ["110105", "110108"][rng.below(2) as usize].into();
                        c
                    })
                    .collect();
                Command::Submit {
                    accepted_at: now,
                    complaints,
                }
            }
            6 | 7 => {
                let statuses = [
                    TicketStatus::Dispatched,
                    TicketStatus::Resolved,
                    TicketStatus::Received,
                ];
                let updates = (0..1 + rng.below(3))
                    .map(|_| StatusUpdate {
                        ticket: TicketId::new(SHARD, rng.below(log_index), rng.below(3) as u8),
                        status: statuses[rng.below(3) as usize],
                        department: None,
                        note: String::new(),
                        reported_at: now,
                    })
                    .collect();
                Command::UpdateStatus {
                    recorded_at: now,
                    updates,
                }
            }
            8 => {
                let state = reference.state.dispatch.unwrap_or_default();
                let stale = rng.below(4) == 0;
                let from = if stale {
                    DispatchCursor::default()
                } else {
                    state.next
                };
                let to = DispatchCursor {
                    log_index: log_index - 1,
                    item: 256,
                };
                Command::AdvanceDispatch { from, to, count: 3 }
            }
            _ => Command::CompactKeys {
                before: now - 2 * WINDOW_MS,
            },
        };
        reference.one(log_index, cmd.clone());
        entries.push((log_index, cmd));
    }
    entries
}

#[test]
fn any_grouping_and_any_restart_reach_the_same_state_and_answers() {
    for seed in [1, 7, 42] {
        for capacity in [2, 8192] {
            let entries = workload(seed, 400);
            let mut one_by_one = Replica::with_capacity(capacity);
            let (answers, _) = one_by_one.apply_all(&entries, 1);

            let mut grouped = Replica::with_capacity(capacity);
            assert_eq!(grouped.apply_all(&entries, 64).0, answers, "seed {seed}");
            assert_eq!(grouped.state, one_by_one.state, "seed {seed}");

            for cut in [1, 97, 250] {
                let mut restarted = Replica::with_capacity(capacity);
                let (mut got, _) = restarted.apply_all(&entries[..cut], 5);
                let mut restarted = restarted.rebuilt();
                got.extend(restarted.apply_all(&entries[cut..], 3).0);
                assert_eq!(got, answers, "seed {seed}, restart after {cut}");
                assert_eq!(
                    restarted.state, one_by_one.state,
                    "seed {seed}, restart after {cut}"
                );
            }
            assert_eq!(one_by_one.state.applied, Some(400));
            let created = answers
                .iter()
                .filter_map(|r| match r {
                    CommandResponse::Submitted(o) => Some(o),
                    _ => None,
                })
                .flatten()
                .filter(|o| matches!(o, crate::SubmitOutcome::Created { .. }))
                .count();
            assert_eq!(one_by_one.state.tickets.len(), created);
            assert!(
                !one_by_one.state.summaries.is_empty(),
                "the workload groups incidents"
            );
        }
    }
}

#[test]
fn a_restarted_replica_emits_the_same_writes_as_one_that_never_stopped() {
    let entries = workload(3, 300);
    let mut a = Replica::with_capacity(4);
    a.apply_all(&entries[..150], 8);
    let mut b = a.rebuilt();
    let (answers_a, writes_a) = a.apply_all(&entries[150..], 8);
    let (answers_b, writes_b) = b.apply_all(&entries[150..], 8);
    assert_eq!(answers_a, answers_b);
    assert_eq!(writes_a, writes_b);
    assert!(writes_a.len() > 100, "{} writes", writes_a.len());
}
