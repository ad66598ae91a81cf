//! The ticket state machine of one shard: applies committed `Submit` commands,
//! enforcing idempotency keys, and builds and installs file snapshots.
//!
//! Each entry's effects and the applied log id go into one store batch, so
//! after a crash the tree is exactly "everything up to the applied id" and
//! openraft re-applies the rest from the durable log. `apply` therefore does
//! not flush; snapshots do, before openraft may purge the log they replace.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use intake_core::{
    Command, CommandResponse, Complaint, DispatchCursor, DispatchState, StatusEvent, StatusOutcome,
    StatusUpdate, SubmitOutcome, Ticket, TicketId, TicketStatus, UnixMillis, check_transition,
};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use crate::error::StorageError;
use crate::incidents::{self, IncidentSummary};
use crate::keys::{self, SM_SNAPSHOT, SM_STATE};
use crate::snapshot::ShardHome;
use crate::store::{Batch, Tree};
use crate::{ShardId, SnapshotData, TypeConfig, snapshot};
use intake_core::incident_index::IncidentIndex;

type LogId = LogIdOf<TypeConfig>;
type Entry = EntryOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;
type AppliedState = (Option<LogId>, Membership);

/// Records loaded per store batch when installing a snapshot.
const LOAD_BATCH: usize = 1024;
/// Keys one `CompactKeys` entry forgets at most, so applying it stays short;
/// the leader proposes again while `more` comes back true.
pub const MAX_COMPACT_PER_ENTRY: usize = 20_000;

/// What `m/snapshot` holds: the current snapshot file and its meta.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotRecord {
    id: String,
    meta: SnapshotMeta,
}

/// One shard's tickets and idempotency index. Cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    shard: ShardId,
    pub(crate) tree: Tree,
    home: ShardHome,
    /// Serialises snapshot builds and installs of this shard, so an older
    /// build can never overwrite the record of a newer install.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// Held by `apply` per call and by a snapshot build for its scan: records
    /// are mutable once status updates exist, so the scan must see the tree
    /// at exactly the applied id it records, not filter by creating index.
    pub(crate) apply_lock: Arc<tokio::sync::Mutex<()>>,
    /// The incident band index (`intake_core::incident_index`), loaded from
    /// the tree's records at the first apply and dropped whenever the tree
    /// is replaced from a snapshot, so it always mirrors the records.
    incidents: Arc<parking_lot::Mutex<Option<IncidentIndex>>>,
    /// The last applied membership as `apply` left it, so that each call
    /// need not read and decode the applied state from the tree; dropped,
    /// like the index, whenever a snapshot replaces the tree.
    membership: Arc<parking_lot::Mutex<Option<Membership>>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("shard", &self.shard)
            .finish()
    }
}

impl StateMachine {
    pub(crate) fn new(shard: ShardId, tree: Tree, home: ShardHome) -> Self {
        Self {
            shard,
            tree,
            home,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            apply_lock: Arc::new(tokio::sync::Mutex::new(())),
            incidents: Arc::new(parking_lot::Mutex::new(None)),
            membership: Arc::new(parking_lot::Mutex::new(None)),
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    pub fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StorageError> {
        if id.shard != self.shard {
            return Ok(None);
        }
        match self.tree.get(keys::ticket_key(id))? {
            Some(v) => Ok(Some(keys::decode("ticket", &v)?)),
            None => Ok(None),
        }
    }

    pub fn lookup_key(&self, idempotency_key: &str) -> Result<Option<TicketId>, StorageError> {
        match self.tree.get(keys::idem_key(idempotency_key))? {
            Some(v) => Ok(Some(keys::decode("ticket id", &v)?)),
            None => Ok(None),
        }
    }

    /// Counts tickets by scanning: O(tickets), for tests and admin use.
    pub fn ticket_count(&self) -> Result<u64, StorageError> {
        let mut n = 0;
        for kv in self.tree.scan_prefix([keys::TICKET_PREFIX]) {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    /// Up to `limit` tickets created at or after `from_log_index`, in commit
    /// order (for the dispatcher).
    pub fn tickets_from(&self, from_log_index: u64, limit: usize) -> Result<Vec<Ticket>, StorageError> {
        let start = keys::ticket_key(&TicketId::new(self.shard, from_log_index, 0));
        let mut out = Vec::new();
        for kv in self.tree.range(start..).take(limit) {
            let (k, v) = kv?;
            if keys::ticket_key_index(&k).is_none() {
                break;
            }
            out.push(keys::decode("ticket", &v)?);
        }
        Ok(out)
    }

    /// Up to `limit` tickets at or after `cursor`, in commit order: what the
    /// dispatcher delivers next.
    pub fn tickets_at(&self, cursor: DispatchCursor, limit: usize) -> Result<Vec<Ticket>, StorageError> {
        let mut out = Vec::new();
        for kv in self.tree.range(keys::cursor_key(cursor)..).take(limit) {
            let (k, v) = kv?;
            if keys::ticket_key_index(&k).is_none() {
                break;
            }
            out.push(keys::decode("ticket", &v)?);
        }
        Ok(out)
    }

    /// Where delivery to the downstream stands (replicated; any replica).
    pub fn dispatch_state(&self) -> Result<DispatchState, StorageError> {
        match self.tree.get(keys::DISPATCH_KEY)? {
            Some(v) => keys::decode("dispatch state", &v),
            None => Ok(DispatchState::default()),
        }
    }

    /// The incident a ticket was grouped into (its first ticket's id), once
    /// the incident has two complaints.
    pub fn incident_of(&self, id: &TicketId) -> Result<Option<TicketId>, StorageError> {
        if id.shard != self.shard {
            return Ok(None);
        }
        incidents::incident_of(&self.tree, id)
    }

    /// The `limit` largest incidents with a complaint since `since` (Unix ms).
    pub fn largest_incidents(
        &self,
        since: UnixMillis,
        limit: usize,
    ) -> Result<Vec<IncidentSummary>, StorageError> {
        incidents::largest_open(&self.tree, since, limit)
    }

    /// A ticket's status changes, oldest first.
    pub fn ticket_history(&self, id: &TicketId) -> Result<Vec<StatusEvent>, StorageError> {
        if id.shard != self.shard {
            return Ok(Vec::new());
        }
        match self.tree.get(keys::history_key(id))? {
            Some(v) => keys::decode("status history", &v),
            None => Ok(Vec::new()),
        }
    }

    /// The cluster map, in the meta group's state machine; `None` elsewhere
    /// and before the first map is committed.
    pub fn cluster_map(&self) -> Result<Option<intake_core::ClusterMap>, StorageError> {
        match self.tree.get(keys::CLUSTER_KEY)? {
            Some(v) => Ok(Some(keys::decode_cluster(&v)?.1)),
            None => Ok(None),
        }
    }

    /// The index of the last applied entry.
    pub fn applied(&self) -> Result<Option<u64>, StorageError> {
        Ok(self.read_state()?.0.map(|l| l.index))
    }

    fn read_state(&self) -> Result<AppliedState, StorageError> {
        match self.tree.get(SM_STATE)? {
            Some(v) => keys::decode("applied state", &v),
            None => Ok((None, Membership::default())),
        }
    }

    fn read_snapshot_record(&self) -> Result<Option<SnapshotRecord>, StorageError> {
        match self.tree.get(SM_SNAPSHOT)? {
            Some(v) => Ok(Some(keys::decode("snapshot record", &v)?)),
            None => Ok(None),
        }
    }

    /// The ticket an idempotency key points to, from this entry or the tree.
    fn existing(
        &self,
        key: &str,
        this_entry: &HashMap<String, Ticket>,
    ) -> Result<Option<Ticket>, StorageError> {
        if let Some(t) = this_entry.get(key) {
            return Ok(Some(t.clone()));
        }
        let Some(id) = self.lookup_key(key)? else {
            return Ok(None);
        };
        match self.get_ticket(&id)? {
            Some(t) => Ok(Some(t)),
            None => Err(StorageError::Io(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("idempotency key points to missing ticket {id}"),
            ))),
        }
    }

    /// What a complaint whose key this replica has applied gets: its ticket,
    /// or a conflict if the key came with other content. A replica applies
    /// only what is committed, so any replica may answer this without a
    /// Raft round; a retry of a complaint that committed after its first
    /// attempt gave up then costs a read, not another proposal.
    pub fn already_submitted(&self, complaint: &Complaint) -> Result<Option<SubmitOutcome>, StorageError> {
        match self.existing(&complaint.idempotency_key, &HashMap::new())? {
            Some(t) => Ok(Some(self.repeat_outcome(&t, complaint))),
            None => Ok(None),
        }
    }

    fn repeat_outcome(&self, t: &Ticket, complaint: &Complaint) -> SubmitOutcome {
        if t.complaint.same_content(complaint) {
            SubmitOutcome::Existing {
                id: t.id,
                accepted_at: t.accepted_at,
            }
        } else {
            // The ticket id says which complaint; neither complaint's
            // content goes into the log (personal data, issue 19).
            tracing::warn!(
                shard = self.shard,
                ticket = %t.id,
                "idempotency key reused with different content"
            );
            SubmitOutcome::Conflict { id: t.id }
        }
    }

    /// Adds the effects of one `Submit` to `batch` and returns the outcomes.
    /// Deterministic: every replica computes the same result.
    fn apply_submit(
        &self,
        log_index: u64,
        accepted_at: i64,
        complaints: Vec<Complaint>,
        created: &mut HashMap<String, Ticket>,
        incidents: &mut incidents::Overlay,
        batch: &mut Batch,
    ) -> Result<Vec<SubmitOutcome>, StorageError> {
        let mut outcomes = Vec::with_capacity(complaints.len());
        let mut guard = self.incidents.lock();
        let index = match guard.take() {
            Some(ix) => guard.insert(ix),
            None => guard.insert(incidents::load_index(&self.tree, batch)?),
        };
        for (i, complaint) in complaints.into_iter().enumerate() {
            // Ids number items in 8 bits; the proposer never packs more.
            let Ok(item) = u8::try_from(i) else {
                tracing::error!(
                    shard = self.shard,
                    log_index,
                    "entry holds more than 256 complaints; rest ignored"
                );
                break;
            };
            if let Some(t) = self.existing(&complaint.idempotency_key, created)? {
                outcomes.push(self.repeat_outcome(&t, &complaint));
                continue;
            }
            let id = TicketId::new(self.shard, log_index, item);
            let key = complaint.idempotency_key.clone();
            let ticket = Ticket {
                id,
                complaint,
                accepted_at,
                status: TicketStatus::Received,
                log_index,
            };
            batch.insert(keys::ticket_key(&id), keys::encode(&ticket)?);
            batch.insert(keys::idem_key(&key), keys::encode(&id)?);
            batch.insert(keys::age_key(accepted_at, &id), key.as_bytes());
            incidents::assign(&self.tree, index, incidents, &ticket, batch)?;
            if let Some(hook) = self.home.apply_hook.get() {
                hook.created(&ticket);
            }
            created.insert(key, ticket);
            outcomes.push(SubmitOutcome::Created { id, accepted_at });
        }
        Ok(outcomes)
    }

    /// Adds to `batch` the removal of up to `MAX_COMPACT_PER_ENTRY` keys of
    /// tickets accepted before `before`, oldest first. Deterministic: it
    /// reads only replicated state.
    fn compact_keys(&self, before: i64, batch: &mut Batch) -> Result<(u64, bool), StorageError> {
        let start = [keys::AGE_PREFIX];
        let end = keys::age_bound(before);
        let mut forgotten = 0u64;
        for (n, kv) in self.tree.range(start.as_slice()..end.as_slice()).enumerate() {
            if n >= MAX_COMPACT_PER_ENTRY {
                return Ok((forgotten, true));
            }
            let (age, key) = kv?;
            batch.remove(age.clone());
            if keys::age_key_index(&age).is_none() {
                continue;
            }
            let idem = keys::idem_key(&String::from_utf8_lossy(&key));
            // Remove the key only if it still names this ticket: the age
            // key ends with the ticket's position, as the ticket key does.
            if let Some(v) = self.tree.get(&idem)? {
                let id: TicketId = keys::decode("ticket id", &v)?;
                if age[9..] == keys::ticket_key(&id)[1..] {
                    batch.remove(idem);
                    forgotten += 1;
                }
            }
        }
        Ok((forgotten, false))
    }

    /// Adds the effects of one `UpdateStatus` to `batch`. Each update is
    /// judged against the status committed before it, including earlier
    /// updates of the same command, so every replica reaches the same result.
    fn apply_status(
        &self,
        recorded_at: UnixMillis,
        updates: Vec<StatusUpdate>,
        batch: &mut Batch,
    ) -> Result<Vec<StatusOutcome>, StorageError> {
        let mut touched: HashMap<TicketId, (Ticket, Vec<StatusEvent>)> = HashMap::new();
        let mut outcomes = Vec::with_capacity(updates.len());
        for u in updates {
            let (ticket, history) = match touched.entry(u.ticket) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let Some(t) = self.get_ticket(&u.ticket)? else {
                        outcomes.push(StatusOutcome::NotFound);
                        continue;
                    };
                    let h = self.ticket_history(&u.ticket)?;
                    e.insert((t, h))
                }
            };
            match check_transition(ticket.status, history.len(), &u) {
                Ok(()) => {
                    ticket.status = u.status;
                    history.push(StatusEvent {
                        status: u.status,
                        department: u.department,
                        note: u.note,
                        reported_at: u.reported_at,
                        recorded_at,
                    });
                    outcomes.push(StatusOutcome::Recorded {
                        status: u.status,
                        events: history.len(),
                    });
                }
                Err(e) => outcomes.push(StatusOutcome::Refused(e)),
            }
        }
        for (id, (ticket, history)) in touched {
            batch.insert(keys::ticket_key(&id), keys::encode(&ticket)?);
            batch.insert(keys::history_key(&id), keys::encode(&history)?);
        }
        Ok(outcomes)
    }

    /// Applies consecutive entries. Runs of `Submit` entries share one store
    /// batch (with the applied state written once, after the last); any other
    /// entry is applied on its own, as [`apply_entry`](Self::apply_entry).
    /// The result is the same as applying each entry alone: keys created by
    /// earlier entries of the run are seen by later ones through `created`.
    pub(crate) fn apply_group(
        &self,
        entries: Vec<Entry>,
        membership: &mut Membership,
    ) -> io::Result<Vec<CommandResponse>> {
        let mut responses = Vec::with_capacity(entries.len());
        let mut run = SubmitRun::default();
        for entry in entries {
            match entry.payload {
                EntryPayload::Normal(Command::Submit {
                    accepted_at,
                    complaints,
                }) => {
                    responses.push(self.add_submit(&mut run, entry.log_id, accepted_at, complaints)?);
                }
                payload => {
                    self.finish_run(std::mem::take(&mut run), membership)?;
                    responses.push(self.apply_entry(
                        Entry {
                            log_id: entry.log_id,
                            payload,
                        },
                        membership,
                    )?);
                }
            }
        }
        self.finish_run(run, membership)?;
        Ok(responses)
    }

    /// Adds one `Submit` entry's effects to `run`; its response.
    fn add_submit(
        &self,
        run: &mut SubmitRun,
        log_id: LogId,
        accepted_at: i64,
        complaints: Vec<Complaint>,
    ) -> io::Result<CommandResponse> {
        let outcomes = self.apply_submit(
            log_id.index,
            accepted_at,
            complaints,
            &mut run.created,
            &mut run.incidents,
            &mut run.batch,
        )?;
        run.new_tickets += created_count(&outcomes);
        run.last = Some(log_id);
        Ok(CommandResponse::Submitted(outcomes))
    }

    /// Writes a run of `Submit` effects with the delivery state and the
    /// applied state, in one atomic batch.
    fn finish_run(&self, run: SubmitRun, membership: &Membership) -> io::Result<()> {
        match self.seal_run(run, membership)? {
            Some(batch) => Ok(self.tree.apply_batch(batch)?),
            None => Ok(()),
        }
    }

    /// A run's batch, completed with the delivery state and the applied
    /// state; `None` for an empty run.
    fn seal_run(&self, mut run: SubmitRun, membership: &Membership) -> io::Result<Option<Batch>> {
        let Some(last) = run.last else { return Ok(None) };
        if run.new_tickets > 0 {
            let mut state = self.dispatch_state()?;
            state.created += run.new_tickets;
            run.batch.insert(keys::DISPATCH_KEY, keys::encode(&state)?);
        }
        let state: AppliedState = (Some(last), membership.clone());
        run.batch.insert(SM_STATE, keys::encode(&state)?);
        Ok(Some(run.batch))
    }

    /// Applies one entry atomically with the applied state; `membership` is
    /// the last applied membership, updated by membership entries.
    pub(crate) fn apply_entry(
        &self,
        entry: Entry,
        membership: &mut Membership,
    ) -> io::Result<CommandResponse> {
        let mut batch = Batch::default();
        let response = match entry.payload {
            EntryPayload::Blank => CommandResponse::Empty,
            EntryPayload::Membership(m) => {
                *membership = Membership::new(Some(entry.log_id), m);
                CommandResponse::Empty
            }
            EntryPayload::Normal(Command::Submit {
                accepted_at,
                complaints,
            }) => {
                // A run of one: the same code as a group's, applied state included.
                let mut run = SubmitRun::default();
                let response = self.add_submit(&mut run, entry.log_id, accepted_at, complaints)?;
                self.finish_run(run, membership)?;
                return Ok(response);
            }
            EntryPayload::Normal(Command::UpdateStatus { recorded_at, updates }) => {
                CommandResponse::StatusUpdated(self.apply_status(recorded_at, updates, &mut batch)?)
            }
            EntryPayload::Normal(Command::AdvanceDispatch { from, to, count }) => {
                let mut state = self.dispatch_state()?;
                let moved = state.next == from && to > from;
                if moved {
                    state.next = to;
                    state.delivered = state.delivered.saturating_add(count).min(state.created);
                    batch.insert(keys::DISPATCH_KEY, keys::encode(&state)?);
                }
                CommandResponse::DispatchAdvanced { moved, state }
            }
            EntryPayload::Normal(Command::SetClusterMap(map)) => {
                // Only a newer map replaces the current one, so a stale
                // proposal (e.g. a re-sent bootstrap) is harmless.
                let newer = self
                    .cluster_map()
                    .map_err(io::Error::from)?
                    .is_none_or(|m| m.version < map.version);
                if newer {
                    batch.insert(keys::CLUSTER_KEY, keys::encode_cluster(entry.log_id.index, &map)?);
                }
                CommandResponse::Empty
            }
            EntryPayload::Normal(Command::CompactKeys { before }) => {
                let (keys, more) = self.compact_keys(before, &mut batch)?;
                if keys > 0 {
                    tracing::info!(
                        shard = self.shard,
                        keys,
                        before,
                        "forgot expired idempotency keys"
                    );
                }
                CommandResponse::Compacted { keys, more }
            }
        };
        let state: AppliedState = (Some(entry.log_id), membership.clone());
        batch.insert(SM_STATE, keys::encode(&state)?);
        self.tree.apply_batch(batch)?;
        Ok(response)
    }

    /// After a crash between recording a snapshot and loading it, the tree is
    /// partial or stale: reload it from the recorded file.
    pub(crate) fn recover(&self) -> Result<(), StorageError> {
        let record = self.read_snapshot_record()?;
        let dir = self.home.dir.clone();
        if let Some(rec) = &record {
            let has_state = self.tree.contains_key(SM_STATE)?;
            let (applied, _) = self.read_state()?;
            if !has_state || rec.meta.last_log_id > applied {
                tracing::warn!(shard = self.shard, snapshot = %rec.id, "reloading state machine from snapshot after crash");
                load_tree(
                    &self.tree,
                    File::open(snapshot::snap_path(&dir, &rec.id))?,
                    &rec.meta,
                )?;
                self.forget_cached();
            }
        }
        snapshot::remove_others(&dir, record.as_ref().map(|r| r.id.as_str()))?;
        Ok(())
    }

    /// Drops what is kept in memory of the tree's contents, after the tree
    /// was replaced from a snapshot.
    fn forget_cached(&self) {
        *self.incidents.lock() = None;
        *self.membership.lock() = None;
    }

    fn open_snapshot(&self, rec: SnapshotRecord) -> io::Result<Snapshot> {
        let path = snapshot::snap_path(&self.home.dir.clone(), &rec.id);
        let file = File::open(path)?;
        Ok(Snapshot {
            meta: rec.meta,
            snapshot: tokio::fs::File::from_std(file),
        })
    }

    fn snapshot_id(&self, last: Option<&LogId>) -> String {
        let seq = self.home.next_seq();
        match last {
            Some(l) => format!("{}-{}-{seq}", l.leader_id.term, l.index),
            None => format!("0-0-{seq}"),
        }
    }
}

/// Replaces the tree's data with the snapshot's records, then records the
/// snapshot's applied state last, so an interruption is detected by
/// `recover` and redone.
fn load_tree(tree: &Tree, file: File, meta: &SnapshotMeta) -> Result<(), StorageError> {
    tree.remove(SM_STATE)?;
    for prefix in keys::SNAPSHOT_PREFIXES {
        let mut batch = Batch::default();
        let mut n = 0usize;
        for kv in tree.scan_prefix([prefix]) {
            batch.remove(kv?.0);
            n += 1;
            if n.is_multiple_of(LOAD_BATCH) {
                tree.apply_batch(std::mem::take(&mut batch))?;
            }
        }
        tree.apply_batch(batch)?;
    }
    let mut batch = Batch::default();
    let mut n = 0usize;
    snapshot::read_records(file, |k, v| {
        batch.insert(k, v);
        n += 1;
        if n.is_multiple_of(LOAD_BATCH) {
            tree.apply_batch(std::mem::take(&mut batch))
                .map_err(io::Error::other)?;
        }
        Ok(())
    })?;
    tree.apply_batch(batch)?;
    let state: AppliedState = (meta.last_log_id, meta.last_membership.clone());
    tree.insert(SM_STATE, keys::encode(&state)?)?;
    Ok(())
}

fn join_error(e: tokio::task::JoinError) -> io::Error {
    io::Error::other(format!("blocking snapshot task failed: {e}"))
}

impl StateMachine {
    /// Install, phase one: keeps a validated copy of the incoming file and
    /// records it durably, so that from here a crash is repaired by `recover`.
    pub(crate) async fn stage_snapshot(
        &self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> io::Result<SnapshotRecord> {
        let id = self.snapshot_id(meta.last_log_id.as_ref());
        let dir = self.home.dir.clone();
        let src = snapshot.into_std().await;
        let id2 = id.clone();
        tokio::task::spawn_blocking(move || snapshot::copy_validated(src, &dir, &id2))
            .await
            .map_err(join_error)??;
        let rec = SnapshotRecord {
            id,
            meta: meta.clone(),
        };
        self.tree
            .insert(SM_SNAPSHOT, keys::encode(&rec)?)
            .map_err(io::Error::other)?;
        self.home.persist().await?;
        Ok(rec)
    }

    /// Install, phase two: replaces the tree's data with the recorded file.
    async fn load_snapshot(&self, rec: SnapshotRecord) -> io::Result<()> {
        let dir = self.home.dir.clone();
        let path = snapshot::snap_path(&dir, &rec.id);
        let (tree, meta) = (self.tree.clone(), rec.meta.clone());
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            Ok(load_tree(&tree, File::open(path)?, &meta)?)
        })
        .await
        .map_err(join_error)??;
        // The tree now holds the snapshot's incidents and membership.
        self.forget_cached();
        self.home.persist().await?;
        snapshot::remove_others(&dir, Some(&rec.id))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        // No apply runs until the scan ends, so the applied id read here is
        // exactly the state the file holds.
        let applying = Arc::clone(&self.apply_lock).lock_owned().await;
        let (applied, membership) = self.read_state()?;
        let id = self.snapshot_id(applied.as_ref());
        let dir = self.home.dir.clone();
        let (tree, has_state, dir2, id2) = (self.tree.clone(), applied.is_some(), dir.clone(), id.clone());
        tokio::task::spawn_blocking(move || {
            let written = snapshot::write_file(&tree, has_state, &dir2, &id2);
            drop(applying);
            written
        })
        .await
        .map_err(join_error)??;

        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        let rec = SnapshotRecord { id: id.clone(), meta };
        self.tree
            .insert(SM_SNAPSHOT, keys::encode(&rec)?)
            .map_err(io::Error::other)?;
        // Durable before openraft purges the log this snapshot replaces; also
        // makes the tree durable up to the snapshot's applied id.
        self.home.persist().await?;
        // Old files go only after the new record is durable, so the record
        // on disk always names an existing file.
        let snapshot = self.open_snapshot(rec)?;
        snapshot::remove_others(&dir, Some(&id))?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<AppliedState, io::Error> {
        Ok(self.read_state()?)
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let _applying = self.apply_lock.lock().await;
        let cached = self.membership.lock().take();
        let mut membership = match cached {
            Some(m) => m,
            None => self.read_state()?.1,
        };
        while let Some(first) = entries.next().await {
            // Whatever else is ready joins this group: one store batch and at
            // most one hand-off of the worker for all of it.
            let mut group = vec![first?];
            while group.len() < MAX_APPLY_GROUP {
                match entries.next().now_or_never() {
                    Some(Some(item)) => group.push(item?),
                    _ => break,
                }
            }
            let complaints: usize = group.iter().map(|(e, _)| entry_complaints(e)).sum();
            let (entries_only, responders): (Vec<Entry>, Vec<_>) = group.into_iter().unzip();
            let responses = if complaints > BLOCKING_APPLY_COMPLAINTS {
                blocking(|| self.apply_group(entries_only, &mut membership))?
            } else {
                self.apply_group(entries_only, &mut membership)?
            };
            for (responder, response) in responders.into_iter().zip(responses) {
                if let Some(r) = responder {
                    r.send(response);
                }
            }
        }
        *self.membership.lock() = Some(membership);
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        let _guard = self.snapshot_lock.lock().await;
        let rec = self.stage_snapshot(meta, snapshot).await?;
        self.load_snapshot(rec).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        // A build in progress deletes the previous file once its own record
        // is durable; the lock keeps us from opening a file being removed.
        let _guard = self.snapshot_lock.lock().await;
        match self.read_snapshot_record()? {
            Some(rec) => Ok(Some(self.open_snapshot(rec)?)),
            None => Ok(None),
        }
    }
}

/// Entries applied together at most: bounds the time one group holds the
/// apply lock and the memory of one store batch.
const MAX_APPLY_GROUP: usize = 64;

/// Above this many complaints a group's apply (about 30 µs each) is worth a
/// hand-off of the runtime worker (`block_in_place`); below it the hand-off,
/// which wakes another thread to take over the worker's queue, costs more
/// than the work.
const BLOCKING_APPLY_COMPLAINTS: usize = 32;

/// Tickets a `Submit` created (not retries, not conflicts).
fn created_count(outcomes: &[SubmitOutcome]) -> u64 {
    outcomes
        .iter()
        .filter(|o| matches!(o, SubmitOutcome::Created { .. }))
        .count() as u64
}

/// Complaints an entry carries (for the decision above).
fn entry_complaints(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Command::Submit { complaints, .. }) => complaints.len(),
        EntryPayload::Normal(Command::UpdateStatus { updates, .. }) => updates.len(),
        _ => 1,
    }
}

/// A run of consecutive `Submit` entries being applied as one store batch.
#[derive(Default)]
struct SubmitRun {
    batch: Batch,
    created: HashMap<String, Ticket>,
    incidents: incidents::Overlay,
    new_tickets: u64,
    last: Option<LogId>,
}

/// Runs store work that can take milliseconds (an entry of a few hundred
/// complaints) off the async scheduler's queue where the runtime allows it:
/// otherwise the tasks queued behind it on that worker (Raft heartbeats,
/// replication, request handlers) wait for the whole apply.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
