//! CompactKeys: expired keys go, oldest first and boundedly; tickets stay.

use super::*;
use crate::Command;
use crate::CommandResponse;
use crate::TicketId;
use crate::apply::fixtures::{Replica, SHARD, complaint, id, submit};

fn compact(r: &mut Replica, index: u64, before: UnixMillis) -> CommandResponse {
    r.one(index, Command::CompactKeys { before }).0
}

/// "old-i" accepted at 100 + i, "new-i" at 10_000 + i.
fn filled() -> Replica {
    let mut r = Replica::new();
    for i in 0..5u64 {
        r.run(vec![(
            1 + i,
            submit(100 + i as i64, vec![complaint(&format!("old-{i}"), "t")]),
        )]);
        r.run(vec![(
            10 + i,
            submit(10_000 + i as i64, vec![complaint(&format!("new-{i}"), "t")]),
        )]);
    }
    r
}

#[test]
fn keys_accepted_before_the_cut_off_are_forgotten_and_tickets_kept() {
    let mut r = filled();
    assert_eq!(
        compact(&mut r, 20, 10_002),
        CommandResponse::Compacted { keys: 7, more: false }
    );
    assert!(!r.state.keys.contains_key("old-4") && !r.state.keys.contains_key("new-1"));
    // Accepted exactly at the cut-off: kept.
    assert_eq!(r.state.keys.get("new-2"), Some(&id(12, 0)));
    assert_eq!(r.state.tickets.len(), 10);
    assert_eq!(r.state.ages.len(), 3);
    // Again: nothing left to do.
    assert_eq!(
        compact(&mut r, 21, 10_002),
        CommandResponse::Compacted { keys: 0, more: false }
    );
}

#[test]
fn a_forgotten_key_used_again_keeps_its_new_ticket() {
    let mut r = filled();
    compact(&mut r, 20, 5_000);
    r.run(vec![(22, submit(20_000, vec![complaint("old-0", "t")]))]);
    assert_eq!(r.state.keys["old-0"], id(22, 0));
    // An old age record left in place (as by a snapshot of an earlier
    // version) names the key, but not its ticket: the key stays.
    r.state.ages.insert((50, id(1, 0)), "old-0".into());
    assert_eq!(
        compact(&mut r, 23, 15_000),
        CommandResponse::Compacted { keys: 5, more: false }
    );
    assert_eq!(r.state.keys["old-0"], id(22, 0));
    assert!(!r.state.ages.contains_key(&(50, id(1, 0))));
}

#[test]
fn one_entry_forgets_at_most_its_limit_oldest_first_and_says_more() {
    let mut r = Replica::new();
    let extra = 3;
    for i in 0..(MAX_COMPACT_PER_ENTRY + extra) as u64 {
        let t = TicketId::new(SHARD, 1 + i / 256, (i % 256) as u8);
        let key = format!("k{i}");
        // Younger records first in log order, to show the age order rules.
        let at = 1_000_000 - i as i64;
        r.state.keys.insert(key.clone(), t);
        r.state.ages.insert((at, t), key);
    }
    assert_eq!(
        compact(&mut r, 500, i64::MAX),
        CommandResponse::Compacted {
            keys: MAX_COMPACT_PER_ENTRY as u64,
            more: true
        }
    );
    // The youngest (the first inserted) are what is left.
    let left: Vec<&String> = r.state.keys.keys().collect();
    assert_eq!(left, ["k0", "k1", "k2"]);
    assert_eq!(
        compact(&mut r, 501, i64::MAX),
        CommandResponse::Compacted {
            keys: extra as u64,
            more: false
        }
    );
    assert!(r.state.keys.is_empty() && r.state.ages.is_empty());
}
