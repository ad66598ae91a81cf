//! The index groups as `choose` says, stays within its capacity, and a
//! replica that rebuilds it from the stored records at any point decides
//! every later complaint exactly as one that never restarted.

use std::collections::HashMap;

use super::*;
use crate::incident::fingerprint;

const BURST: &str = "Water main burst on Guangqu Road near the north gate, the street is flooding";
const BURST_AGAIN: &str = "water main burst on Guangqu road near north gate - the street is flooding!";
const OTHER: &str = "Karaoke bar on the third floor plays loud music every night until 3am";

fn sig(text: &str) -> Signature {
    fingerprint(text).unwrap()
}

#[test]
fn near_duplicates_join_the_first_and_other_scopes_stay_apart() {
    let mut ix = IncidentIndex::new(16);
    let a = TicketId::new(1, 1, 0);
    let first = ix.assign("110105", "noise", &sig(BURST), a, 1_000);
    assert_eq!(
        (first.entry.incident, first.entry.count, first.evicted),
        (a, 1, None)
    );
    let again = ix.assign(
        "110105",
        "noise",
        &sig(BURST_AGAIN),
        TicketId::new(1, 2, 0),
        2_000,
    );
    assert_eq!(
        (again.entry.incident, again.entry.count, again.entry.last_at),
        (a, 2, 2_000)
    );
    // Same text, another district or category: a new incident each.
    let elsewhere = ix.assign("110108", "noise", &sig(BURST), TicketId::new(1, 3, 0), 3_000);
    assert_eq!(elsewhere.entry.incident, TicketId::new(1, 3, 0));
    let other_cat = ix.assign(
        "110105",
        "water_outage",
        &sig(BURST),
        TicketId::new(1, 3, 1),
        3_000,
    );
    assert_eq!(other_cat.entry.incident, TicketId::new(1, 3, 1));
    let unrelated = ix.assign("110105", "noise", &sig(OTHER), TicketId::new(1, 4, 0), 4_000);
    assert_eq!(unrelated.entry.count, 1);
    // Past the window the incident is closed: a new one opens.
    let late = 2_000 + incident::WINDOW_MS + 1;
    let reopened = ix.assign("110105", "noise", &sig(BURST), TicketId::new(1, 5, 0), late);
    assert_eq!(reopened.entry.incident, TicketId::new(1, 5, 0));
    assert_eq!(ix.len(), 5);
}

#[test]
fn a_join_never_moves_last_at_back() {
    let mut ix = IncidentIndex::new(4);
    let a = TicketId::new(1, 1, 0);
    ix.assign("110105", "noise", &sig(BURST), a, 5_000);
    // A leader with a slower clock stamps an earlier time.
    let j = ix.assign(
        "110105",
        "noise",
        &sig(BURST_AGAIN),
        TicketId::new(1, 2, 0),
        4_000,
    );
    assert_eq!((j.entry.incident, j.entry.last_at, j.entry.count), (a, 5_000, 2));
}

#[test]
fn over_capacity_the_incident_quiet_longest_leaves() {
    let mut ix = IncidentIndex::new(2);
    let texts = [
        BURST,
        OTHER,
        "Street light out on Jianguo road for a week now, very dark at night",
    ];
    let ids: Vec<TicketId> = (0..3).map(|i| TicketId::new(1, i + 1, 0)).collect();
    assert_eq!(
        ix.assign("110105", "noise", &sig(texts[0]), ids[0], 1_000)
            .evicted,
        None
    );
    assert_eq!(
        ix.assign("110105", "noise", &sig(texts[1]), ids[1], 2_000)
            .evicted,
        None
    );
    // The first is joined: now the second is the quietest.
    ix.assign(
        "110105",
        "noise",
        &sig(BURST_AGAIN),
        TicketId::new(1, 9, 0),
        3_000,
    );
    let third = ix.assign("110105", "noise", &sig(texts[2]), ids[2], 4_000);
    assert_eq!(third.evicted, Some(ids[1]));
    assert_eq!(ix.len(), 2);
    // The evicted one is forgotten: its near-duplicate opens anew.
    let again = ix.assign("110105", "noise", &sig(texts[1]), TicketId::new(1, 10, 0), 5_000);
    assert_eq!(again.entry.incident, TicketId::new(1, 10, 0));
    assert_eq!(again.evicted, Some(ids[0]));
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const BASES: &[&str] = &[
    BURST,
    OTHER,
    "Gas smell in the basement of building 4, residents are worried about a leak",
    "Fallen tree blocks the road outside the primary school since this morning",
    "Power out for the whole block on Dongzhimen street, lifts stuck",
    "路面塌陷，广渠路北门附近出现大坑，车辆无法通行",
];

/// A near-duplicate of one of a few texts (a character or two changed), or
/// one made of random letters.
fn text(rng: &mut Rng) -> String {
    if rng.below(5) == 0 {
        return (0..40).map(|_| char::from(b'a' + rng.below(26) as u8)).collect();
    }
    let mut chars: Vec<char> = BASES[rng.below(BASES.len())].chars().collect();
    for _ in 0..rng.below(3) {
        let at = rng.below(chars.len());
        chars[at] = char::from(b'a' + rng.below(26) as u8);
    }
    chars.into_iter().collect()
}

#[test]
fn a_replica_rebuilt_from_the_store_at_any_point_decides_alike() {
    let mut rng = Rng(7);
    let capacity = 5;
    let mut live = IncidentIndex::new(capacity);
    let mut restarted = IncidentIndex::new(capacity);
    // What the state machine stores: one record per incident in the index.
    let mut store: HashMap<TicketId, (String, String, IncidentEntry)> = HashMap::new();
    let mut joined = 0;
    for n in 0..3_000u64 {
        let district = ["110105", "110108"][rng.below(2)];
        let category = ["noise", "water_outage"][rng.below(2)];
        let Some(s) = fingerprint(&text(&mut rng)) else {
            continue;
        };
        let id = TicketId::new(3, n + 1, 0);
        // Clocks of successive leaders disagree by up to a few seconds.
        let at = 1_000_000 + (n as i64) * 100 - rng.below(5_000) as i64;
        let a = live.assign(district, category, &s, id, at);
        let b = restarted.assign(district, category, &s, id, at);
        assert_eq!(a, b, "complaint {n}");
        joined += usize::from(a.entry.count > 1);
        store.insert(a.entry.incident, (district.into(), category.into(), a.entry));
        if let Some(gone) = a.evicted {
            store.remove(&gone);
        }
        assert!(live.len() <= capacity);
        assert_eq!(store.len(), live.len());
        if rng.below(50) == 0 {
            let (rebuilt, left_out) = IncidentIndex::rebuild(capacity, store.values().cloned());
            assert!(left_out.is_empty());
            restarted = rebuilt;
        }
    }
    assert!(joined > 300, "the set has near-duplicates: {joined} joined");
}

#[test]
fn a_rebuild_from_more_records_than_fit_keeps_the_highest_ranked() {
    let rec = |i: u64, at| {
        (
            "110105".to_string(),
            "noise".to_string(),
            IncidentEntry {
                incident: TicketId::new(1, i, 0),
                signature: sig(BASES[i as usize % BASES.len()]),
                last_at: at,
                count: 1,
            },
        )
    };
    let (ix, left_out) = IncidentIndex::rebuild(2, [rec(1, 30), rec(2, 10), rec(3, 20)]);
    assert_eq!(ix.len(), 2);
    assert_eq!(left_out, vec![TicketId::new(1, 2, 0)]);
}
