//! A replica in memory for the apply tests: a [`MemoryShard`] and its band
//! index, applying entries batch by batch as storage does (runs of
//! `Submit` entries in one batch, anything else alone).

use super::*;
use crate::incident_index::{DEFAULT_CAPACITY, IncidentIndex};
use crate::{Command, CommandResponse};

pub const SHARD: u32 = 3;

pub fn complaint(key: &str, text: &str) -> Complaint {
    Complaint {
        idempotency_key: key.to_string(),
        channel: "hotline".to_string(),
        district: "110105".to_string(),
        category: "noise".to_string(),
        text: text.to_string(),
        location: None,
        contact: String::new(),
        reported_at: Some(1_700_000_000_000),
        attachments: vec![],
    }
}

pub fn id(log_index: u64, item: u8) -> TicketId {
    TicketId::new(SHARD, log_index, item)
}

pub fn submit(accepted_at: UnixMillis, complaints: Vec<Complaint>) -> Command {
    Command::Submit {
        accepted_at,
        complaints,
    }
}

pub struct Replica {
    pub state: MemoryShard,
    pub index: IncidentIndex,
}

impl Replica {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// A replica whose band index holds at most `capacity` incidents.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            state: MemoryShard::new(SHARD),
            index: IncidentIndex::new(capacity),
        }
    }

    /// A replica holding the same records, with its index rebuilt from
    /// them: what a restart or a snapshot install leaves.
    pub fn rebuilt(&self) -> Self {
        let (index, left_out) = self.state.incident_index(self.index.capacity());
        assert!(left_out.is_empty(), "the index never holds more than it may");
        Self {
            state: self.state.clone(),
            index,
        }
    }

    /// Applies a run of `Submit` entries as one batch; their outcomes and
    /// the batch's writes.
    pub fn run(&mut self, entries: Vec<(u64, Command)>) -> (Vec<Vec<SubmitOutcome>>, Vec<Write<'static>>) {
        let mut run = Run::default();
        let mut writes = Vec::new();
        let mut outcomes = Vec::new();
        for (log_index, cmd) in entries {
            let Command::Submit {
                accepted_at,
                complaints,
            } = cmd
            else {
                panic!("a run holds Submit entries only")
            };
            let o = run
                .submit(
                    &self.state,
                    &mut self.index,
                    log_index,
                    accepted_at,
                    complaints,
                    &mut writes,
                )
                .unwrap();
            outcomes.push(o);
        }
        run.seal(&self.state, &mut writes).unwrap();
        self.state.commit(writes.clone());
        (outcomes, writes)
    }

    /// Applies one entry alone (a `Submit` as a run of one).
    pub fn one(&mut self, log_index: u64, cmd: Command) -> (CommandResponse, Vec<Write<'static>>) {
        if matches!(cmd, Command::Submit { .. }) {
            let (mut o, writes) = self.run(vec![(log_index, cmd)]);
            return (CommandResponse::Submitted(o.remove(0)), writes);
        }
        let mut writes = Vec::new();
        let view = &self.state;
        let response = match cmd {
            Command::Submit { .. } => unreachable!("handled above"),
            Command::UpdateStatus { recorded_at, updates } => CommandResponse::StatusUpdated(
                update_status(view, recorded_at, updates, &mut writes).unwrap(),
            ),
            Command::AdvanceDispatch { from, to, count } => {
                let (moved, state) = advance_dispatch(view, from, to, count, &mut writes).unwrap();
                CommandResponse::DispatchAdvanced { moved, state }
            }
            Command::SetClusterMap(map) => {
                set_cluster_map(view, log_index, &map.into(), &mut writes).unwrap();
                CommandResponse::Empty
            }
            Command::ChangeMap(change) => {
                CommandResponse::MapChanged(change_map(view, log_index, &change, &mut writes).unwrap())
            }
            Command::AddMember { id, addr } => {
                CommandResponse::Joined(add_member(view, log_index, id, &addr, &mut writes).unwrap())
            }
            Command::CompactKeys { before } => {
                let (keys, more) = compact_keys(view, before, &mut writes).unwrap();
                CommandResponse::Compacted { keys, more }
            }
            Command::ClaimKeys { accepted_at, claims } => CommandResponse::Claimed(
                claim_keys(view, log_index, accepted_at, claims, &mut writes).unwrap(),
            ),
        };
        applied(log_index, &mut writes).unwrap();
        self.state.commit(writes.clone());
        (response, writes)
    }

    /// Applies entries in batches as storage groups them: consecutive
    /// `Submit` entries together, at most `group` per batch. Their
    /// responses and every write, in order.
    pub fn apply_all(
        &mut self,
        entries: &[(u64, Command)],
        group: usize,
    ) -> (Vec<CommandResponse>, Vec<Write<'static>>) {
        let mut responses = Vec::new();
        let mut writes = Vec::new();
        let mut pending: Vec<(u64, Command)> = Vec::new();
        for (log_index, cmd) in entries.iter().cloned() {
            let submit = matches!(cmd, Command::Submit { .. });
            if submit {
                pending.push((log_index, cmd.clone()));
            }
            if !pending.is_empty() && (!submit || pending.len() >= group) {
                let (o, w) = self.run(std::mem::take(&mut pending));
                responses.extend(o.into_iter().map(CommandResponse::Submitted));
                writes.extend(w);
            }
            if !submit {
                let (r, w) = self.one(log_index, cmd);
                responses.push(r);
                writes.extend(w);
            }
        }
        if !pending.is_empty() {
            let (o, w) = self.run(pending);
            responses.extend(o.into_iter().map(CommandResponse::Submitted));
            writes.extend(w);
        }
        (responses, writes)
    }
}
