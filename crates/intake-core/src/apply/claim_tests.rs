//! Claims: the first content to claim a key holds it, a retry still does,
//! the home shard's own tickets and claims exclude each other, and the
//! idempotency window forgets claims like keys.

use super::*;
use crate::apply::fixtures::{Replica, SHARD, complaint, id, submit};
use crate::{ClaimOutcome, Command, CommandResponse, Complaint, SubmitOutcome};

/// A claim for `c`, which lives on `shard`.
fn claim_of(c: &Complaint, shard: u32) -> KeyClaim {
    KeyClaim {
        key: c.idempotency_key.clone(),
        digest: c.content_digest(),
        district: c.district.clone(),
        shard,
    }
}

fn claims(accepted_at: UnixMillis, claims: Vec<KeyClaim>) -> Command {
    Command::ClaimKeys { accepted_at, claims }
}

fn outcomes(r: CommandResponse) -> Vec<ClaimOutcome> {
    match r {
        CommandResponse::Claimed(o) => o,
        other => panic!("not a claim answer: {other:?}"),
    }
}

fn elsewhere(district: &str, shard: u32) -> ClaimOutcome {
    ClaimOutcome::Elsewhere {
        district: district.into(),
        shard,
    }
}

fn in_district(key: &str, district: &str) -> Complaint {
    Complaint {
        district: district.into(),
        ..complaint(key, "t")
    }
}

#[test]
fn the_first_claim_holds_a_key_a_retry_still_does_and_other_content_is_told_who() {
    let mut r = Replica::new();
    let a = in_district("k", "110101");
    let (resp, writes) = r.one(5, claims(100, vec![claim_of(&a, 0)]));
    assert_eq!(outcomes(resp), vec![ClaimOutcome::Held]);
    let stored = r.state.claims["k"].clone();
    assert_eq!(
        stored,
        StoredClaim {
            digest: a.content_digest(),
            district: "110101".into(),
            shard: 0,
            id: id(5, 0),
            accepted_at: 100,
        }
    );
    assert!(writes.contains(&Write::Age {
        accepted_at: 100,
        ticket: id(5, 0),
        key: "k".into()
    }));
    // The same content again (a retry after a timeout): still held, nothing written.
    let (resp, writes) = r.one(6, claims(200, vec![claim_of(&a, 0)]));
    assert_eq!(outcomes(resp), vec![ClaimOutcome::Held]);
    assert_eq!(writes, vec![Write::Applied { log_index: 6 }]);
    // Another district, or other text in the same one: the first holds it.
    let b = in_district("k", "110102");
    let c = Complaint {
        text: "other".into(),
        ..a.clone()
    };
    let (resp, _) = r.one(7, claims(300, vec![claim_of(&b, 1), claim_of(&c, 0)]));
    assert_eq!(
        outcomes(resp),
        vec![elsewhere("110101", 0), elsewhere("110101", 0)]
    );
    assert_eq!(r.state.claims["k"], stored);
}

#[test]
fn two_claims_of_one_key_in_one_entry_are_ordered_by_position() {
    let mut r = Replica::new();
    let a = in_district("k", "110101");
    let b = in_district("k", "110102");
    let (resp, _) = r.one(
        5,
        claims(100, vec![claim_of(&a, 0), claim_of(&b, 1), claim_of(&a, 0)]),
    );
    assert_eq!(
        outcomes(resp),
        vec![ClaimOutcome::Held, elsewhere("110101", 0), ClaimOutcome::Held]
    );
}

#[test]
fn a_ticket_of_the_home_shard_and_a_claim_exclude_each_other() {
    let mut r = Replica::new();
    // The home shard's own complaint came first: a claim names its ticket.
    let (resp, _) = r.one(4, submit(100, vec![complaint("mine", "t")]));
    assert!(
        matches!(resp, CommandResponse::Submitted(ref o) if matches!(o[0], SubmitOutcome::Created { .. }))
    );
    let other = in_district("mine", "110101");
    let (resp, _) = r.one(5, claims(100, vec![claim_of(&other, 0)]));
    assert_eq!(outcomes(resp), vec![ClaimOutcome::Ticket(id(4, 0))]);
    // A claim came first: the home shard's complaint with that key is refused.
    let (resp, _) = r.one(
        6,
        claims(100, vec![claim_of(&in_district("theirs", "110101"), 0)]),
    );
    assert_eq!(outcomes(resp), vec![ClaimOutcome::Held]);
    let (resp, _) = r.one(7, submit(100, vec![complaint("theirs", "t")]));
    assert_eq!(
        resp,
        CommandResponse::Submitted(vec![SubmitOutcome::ClaimedElsewhere { shard: 0 }])
    );
    assert!(!r.state.keys.contains_key("theirs"));
}

#[test]
fn the_window_forgets_claims_like_keys_and_the_key_is_free_again() {
    let mut r = Replica::new();
    let a = in_district("k", "110101");
    r.one(5, claims(100, vec![claim_of(&a, 0)]));
    r.one(6, submit(150, vec![complaint("own", "t")]));
    let (resp, _) = r.one(7, Command::CompactKeys { before: 200 });
    assert_eq!(resp, CommandResponse::Compacted { keys: 2, more: false });
    assert!(r.state.claims.is_empty() && r.state.keys.is_empty() && r.state.ages.is_empty());
    let b = in_district("k", "110102");
    let (resp, _) = r.one(8, claims(300, vec![claim_of(&b, 1)]));
    assert_eq!(outcomes(resp), vec![ClaimOutcome::Held]);
    assert_eq!(r.state.claims["k"].shard, 1);
    assert_eq!(SHARD, r.state.claims["k"].id.shard);
}

#[test]
fn the_digest_follows_same_content() {
    let a = complaint("k", "t");
    let retry = Complaint {
        reported_at: Some(1),
        ..a.clone()
    };
    assert!(a.same_content(&retry));
    assert_eq!(a.content_digest(), retry.content_digest());
    type Change = Box<dyn Fn(&mut Complaint)>;
    let changes: Vec<Change> = vec![
        Box::new(|c| c.text.push('!')),
        Box::new(|c| c.district = "110102".into()),
        Box::new(|c| c.channel = "app".into()),
        Box::new(|c| c.category = "water".into()),
        Box::new(|c| c.contact = "x".into()),
        Box::new(|c| c.attachments.push("a".into())),
        Box::new(|c| {
            c.location = Some(crate::Location {
                lat: 1.0,
                lon: 2.0,
                address: String::new(),
            })
        }),
        // Field boundaries count: "ab"+"c" is not "a"+"bc".
        Box::new(|c| {
            c.channel = "hotlin".into();
            c.district = "e110105".into();
        }),
    ];
    for change in changes {
        let mut b = a.clone();
        change(&mut b);
        assert!(!a.same_content(&b));
        assert_ne!(a.content_digest(), b.content_digest());
    }
}
