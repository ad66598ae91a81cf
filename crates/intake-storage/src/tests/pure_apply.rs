//! The sled state machine applies exactly as the pure rules of
//! `intake_core::apply` say: the same entries, applied through openraft's
//! `apply` (grouped into batches, runs of submits through the node's
//! writer) and by the rules on an in-memory shard, leave the same records,
//! read back from the tree kind by kind.

use intake_core::apply::{self, MemoryShard, Run, Write};
use intake_core::incident::IncidentSummary;
use intake_core::incident_index::{DEFAULT_CAPACITY, IncidentIndex};
use intake_core::{
    Command, CommandResponse, DispatchCursor, DispatchState, StatusEvent, StatusUpdate, Ticket, TicketId,
    TicketStatus,
};
use openraft::alias::{LogIdOf, StoredMembershipOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::testing::log_id;

use super::fixtures::{Entry, complaint, new_node};
use crate::incidents::OpenRecord;
use crate::{StateMachine, TypeConfig, keys};

const SHARD: u32 = 6;
const TEXTS: [&str; 3] = [
    "Water main burst on Guangqu Road near the north gate, the street is flooding",
    "water main burst on Guangqu road near north gate - the street is flooding!",
    "Karaoke bar on the third floor plays loud music every night until 3am",
];

/// Entries of every kind: submits reusing keys and texts, status updates
/// (some refused), cursor moves (one stale), key claims (some on keys the
/// submits use) and a compaction.
fn commands() -> Vec<Command> {
    let mut out = Vec::new();
    for i in 0..60u64 {
        let at = 1_000_000 + i as i64 * 60_000;
        out.push(match i % 10 {
            3 | 8 => Command::UpdateStatus {
                recorded_at: at,
                updates: vec![
                    update(TicketId::new(SHARD, i - 2, 0), TicketStatus::Dispatched),
                    update(TicketId::new(SHARD, i - 2, 0), TicketStatus::Received),
                    update(TicketId::new(SHARD, i - 1, 1), TicketStatus::Resolved),
                ],
            },
            5 => Command::AdvanceDispatch {
                from: DispatchCursor::default(),
                to: DispatchCursor {
                    log_index: i,
                    item: 0,
                },
                count: 4,
            },
            9 => Command::CompactKeys { before: at - 600_000 },
            6 => Command::ClaimKeys {
                accepted_at: at,
                claims: (0..3)
                    .map(|j| intake_core::KeyClaim {
                        key: format!("k{}", (i * 7 + j) % 50),
                        digest: j,
                        district: "110102".into(),
                        shard: SHARD + 1,
                    })
                    .collect(),
            },
            _ => Command::Submit {
                accepted_at: at,
                complaints: (0..3)
                    .map(|j| complaint(&format!("k{}", (i * 3 + j) % 40), TEXTS[((i + j) % 3) as usize]))
                    .collect(),
            },
        });
    }
    out
}

fn update(ticket: TicketId, status: TicketStatus) -> StatusUpdate {
    StatusUpdate {
        ticket,
        status,
        department: None,
        note: "n".into(),
        reported_at: 1,
    }
}

/// The rules alone: each entry its own batch.
fn apply_in_memory(cmds: &[Command]) -> (MemoryShard, Vec<CommandResponse>) {
    let mut m = MemoryShard::new(SHARD);
    let mut index = IncidentIndex::new(DEFAULT_CAPACITY);
    let mut responses = Vec::new();
    for (i, cmd) in cmds.iter().cloned().enumerate() {
        let log_index = i as u64 + 1;
        let mut w: Vec<Write<'static>> = Vec::new();
        let response = match cmd {
            Command::Submit {
                accepted_at,
                complaints,
            } => {
                let mut run = Run::default();
                let o = run.submit(&m, &mut index, log_index, accepted_at, complaints, &mut w);
                run.seal(&m, &mut w).unwrap();
                CommandResponse::Submitted(o.unwrap())
            }
            Command::UpdateStatus { recorded_at, updates } => CommandResponse::StatusUpdated(
                apply::update_status(&m, recorded_at, updates, &mut w).unwrap(),
            ),
            Command::AdvanceDispatch { from, to, count } => {
                let (moved, state) = apply::advance_dispatch(&m, from, to, count, &mut w).unwrap();
                CommandResponse::DispatchAdvanced { moved, state }
            }
            Command::CompactKeys { before } => {
                let (keys, more) = apply::compact_keys(&m, before, &mut w).unwrap();
                CommandResponse::Compacted { keys, more }
            }
            Command::ClaimKeys { accepted_at, claims } => CommandResponse::Claimed(
                apply::claim_keys(&m, log_index, accepted_at, claims, &mut w).unwrap(),
            ),
            Command::SetClusterMap(_) | Command::AddMember { .. } | Command::ChangeMap(_) => {
                unreachable!("not in this workload")
            }
        };
        if !matches!(w.last(), Some(Write::Applied { .. })) {
            apply::applied(log_index, &mut w).unwrap();
        }
        m.commit(w);
        responses.push(response);
    }
    (m, responses)
}

/// A ticket position key (`t`, `h`, `g` and the like) as the ticket's id.
fn position(shard: u32, key: &[u8]) -> TicketId {
    let mut index = [0u8; 8];
    index.copy_from_slice(&key[1..9]);
    TicketId::new(shard, u64::from_be_bytes(index), key[9])
}

/// Every record of the tree, decoded into the in-memory shape.
fn tree_as_memory(sm: &StateMachine) -> MemoryShard {
    let shard = sm.shard();
    let mut m = MemoryShard::new(shard);
    for kv in sm.tree.iter() {
        let (k, v) = kv.unwrap();
        match k[0] {
            keys::TICKET_PREFIX => {
                let t: Ticket = postcard::from_bytes(&v).unwrap();
                m.tickets.insert(t.id, t);
            }
            keys::IDEM_PREFIX => {
                let key = String::from_utf8(k[1..].to_vec()).unwrap();
                m.keys.insert(key, postcard::from_bytes(&v).unwrap());
            }
            keys::CLAIM_PREFIX => {
                let key = String::from_utf8(k[1..].to_vec()).unwrap();
                m.claims.insert(key, postcard::from_bytes(&v).unwrap());
            }
            keys::AGE_PREFIX => {
                let (at, index, item) = keys::age_key_parts(&k).unwrap();
                let key = String::from_utf8(v.to_vec()).unwrap();
                m.ages.insert((at, TicketId::new(shard, index, item)), key);
            }
            keys::HISTORY_PREFIX => {
                let h: Vec<StatusEvent> = postcard::from_bytes(&v).unwrap();
                m.histories.insert(position(shard, &k), h);
            }
            keys::DISPATCH_PREFIX => {
                m.dispatch = Some(postcard::from_bytes::<DispatchState>(&v).unwrap());
            }
            keys::OPEN_PREFIX => {
                let r: OpenRecord = postcard::from_bytes(&v).unwrap();
                m.open.insert(r.entry.incident, (r.district, r.category, r.entry));
            }
            keys::MEMBER_PREFIX => {
                m.members
                    .insert(position(shard, &k), postcard::from_bytes(&v).unwrap());
            }
            keys::SUMMARY_PREFIX => {
                let s: IncidentSummary = postcard::from_bytes(&v).unwrap();
                m.summaries.insert(s.id, s);
            }
            _ if *k == *keys::SM_STATE => {
                let (applied, _): (Option<LogIdOf<TypeConfig>>, StoredMembershipOf<TypeConfig>) =
                    postcard::from_bytes(&v).unwrap();
                m.applied = applied.map(|l| l.index);
            }
            other => panic!("unexpected record kind {other}"),
        }
    }
    m
}

fn entries(
    cmds: &[Command],
    from: usize,
    to: usize,
) -> Vec<Result<EntryResponder<TypeConfig>, std::io::Error>> {
    (from..to)
        .map(|i| {
            let e = Entry::new_normal(log_id::<TypeConfig>(1, 1, i as u64 + 1), cmds[i].clone());
            Ok((e, None))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sled_keeps_exactly_the_records_the_rules_write() {
    let cmds = commands();
    let (expected, responses) = apply_in_memory(&cmds);
    assert!(!expected.summaries.is_empty() && !expected.histories.is_empty());
    // Claims held, and a submit refused for a key claimed elsewhere.
    assert!(!expected.claims.is_empty());
    assert!(responses.iter().any(|r| matches!(r, CommandResponse::Submitted(o)
        if o.iter().any(|o| matches!(o, intake_core::SubmitOutcome::ClaimedElsewhere { .. })))));
    assert!(responses.iter().any(|r| matches!(r, CommandResponse::Claimed(o)
        if o.iter().any(|o| matches!(o, intake_core::ClaimOutcome::Ticket(_))))));
    assert!(expected.dispatch.is_some_and(|d| d.delivered > 0));

    let (_dir, node) = new_node();
    let mut sm = node.state_machine(SHARD).unwrap();
    // A run of submits alone (the writer's path), then everything mixed,
    // in two streams of several entries each.
    sm.apply(futures::stream::iter(entries(&cmds, 0, 3)))
        .await
        .unwrap();
    sm.apply(futures::stream::iter(entries(&cmds, 3, 40)))
        .await
        .unwrap();
    sm.apply(futures::stream::iter(entries(&cmds, 40, 60)))
        .await
        .unwrap();
    assert_eq!(tree_as_memory(&sm), expected);
}

#[tokio::test]
async fn applied_one_by_one_sled_answers_as_the_rules_do() {
    let cmds = commands();
    let (_, expected) = apply_in_memory(&cmds);
    let (_dir, node) = new_node();
    let sm = node.state_machine(SHARD).unwrap();
    let mut membership = StoredMembershipOf::<TypeConfig>::default();
    let got: Vec<CommandResponse> = entries(&cmds, 0, cmds.len())
        .into_iter()
        .map(|e| sm.apply_entry(e.unwrap().0, &mut membership).unwrap())
        .collect();
    assert_eq!(got, expected);
}
