//! The ticket state machine of one shard: openraft's `RaftStateMachine`
//! over the shard's keyspace of the node's state-machine store (`store.rs`).
//! The apply rules are pure code in `intake_core::apply`; here entries are
//! grouped into batches, the rules read the tree through `TreeView` and
//! their writes become one store batch (`BatchSink`), written in place.
//! Snapshots are built and installed here too.
//!
//! Each batch holds its entries' effects and the applied log id, so after a
//! crash the tree is exactly "everything up to the applied id" and
//! openraft re-applies the rest from the durable log. `apply` therefore does
//! not flush; snapshots do, before openraft may purge the log they replace.

use std::fs::File;
use std::io;
use std::sync::Arc;

use futures::{FutureExt, Stream, StreamExt};
use intake_core::apply::{self, ShardView};
use intake_core::ticket_id::MAX_ITEMS_PER_ENTRY;
use intake_core::{
    Command, CommandResponse, Complaint, DispatchCursor, DispatchState, StatusEvent, SubmitOutcome, Ticket,
    TicketId, UnixMillis,
};
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{EntryResponder, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use crate::batch_sink::BatchSink;
use crate::error::StorageError;
use crate::incidents::{self, IncidentSummary};
use crate::keys::{self, SM_SNAPSHOT, SM_STATE};
use crate::snapshot::ShardHome;
use crate::store::{Batch, Tree};
use crate::tree_view::TreeView;
use crate::{ShardId, SnapshotData, TypeConfig, snapshot};
use intake_core::incident_index::IncidentIndex;

type LogId = LogIdOf<TypeConfig>;
type Entry = EntryOf<TypeConfig>;
type Membership = StoredMembershipOf<TypeConfig>;
type SnapshotMeta = SnapshotMetaOf<TypeConfig>;
type Snapshot = SnapshotOf<TypeConfig, SnapshotData>;
pub(crate) type AppliedState = (Option<LogId>, Membership);

/// Records loaded per store batch when installing a snapshot.
const LOAD_BATCH: usize = 1024;

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

    /// The tree as the apply rules read it.
    fn view(&self) -> TreeView<'_> {
        TreeView {
            tree: &self.tree,
            shard: self.shard,
        }
    }

    pub fn get_ticket(&self, id: &TicketId) -> Result<Option<Ticket>, StorageError> {
        if id.shard != self.shard {
            return Ok(None);
        }
        self.view().ticket(id)
    }

    pub fn lookup_key(&self, idempotency_key: &str) -> Result<Option<TicketId>, StorageError> {
        self.view().key(idempotency_key)
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
        self.view().dispatch()
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
        self.view().history(id)
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

    /// What a complaint whose key this replica has applied gets: its ticket,
    /// or a conflict if the key came with other content. A replica applies
    /// only what is committed, so any replica may answer this without a
    /// Raft round; a retry of a complaint that committed after its first
    /// attempt gave up then costs a read, not another proposal.
    pub fn already_submitted(&self, complaint: &Complaint) -> Result<Option<SubmitOutcome>, StorageError> {
        let Some(known) = self.view().ticket_of_key(&complaint.idempotency_key)? else {
            return Ok(None);
        };
        let outcome = apply::repeat_outcome(&known, complaint);
        self.warn_conflicts(std::slice::from_ref(&outcome));
        Ok(Some(outcome))
    }

    /// The ticket an idempotency key names on this replica, if it has
    /// applied one with that key.
    pub fn ticket_id_of_key(&self, key: &str) -> Result<Option<TicketId>, StorageError> {
        self.view().key(key)
    }

    /// Logs each conflict of `outcomes` by ticket id: neither complaint's
    /// content goes into the log (personal data, issue 19).
    fn warn_conflicts(&self, outcomes: &[SubmitOutcome]) {
        for o in outcomes {
            if let SubmitOutcome::Conflict { id } = o {
                tracing::warn!(
                    shard = self.shard,
                    ticket = %id,
                    "idempotency key reused with different content"
                );
            }
        }
    }

    /// Applies consecutive entries. Runs of `Submit` entries share one store
    /// batch (with the applied state written once, after the last); any other
    /// entry is applied on its own, as [`apply_entry`](Self::apply_entry).
    /// The result is the same as applying each entry alone: keys created by
    /// earlier entries of the run are seen by later ones through the run's
    /// overlay (`intake_core::apply::Run`).
    pub(crate) fn apply_group(
        &self,
        entries: Vec<Entry>,
        membership: &mut Membership,
    ) -> io::Result<Vec<CommandResponse>> {
        let mut responses = Vec::with_capacity(entries.len());
        let mut run = self.new_run();
        for entry in entries {
            match entry.payload {
                EntryPayload::Normal(Command::Submit {
                    accepted_at,
                    complaints,
                }) => {
                    responses.push(self.add_submit(&mut run, entry.log_id, accepted_at, complaints)?);
                }
                payload => {
                    self.finish_run(std::mem::replace(&mut run, self.new_run()), membership)?;
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

    /// An empty run, its batch to be filled.
    fn new_run(&self) -> SubmitRun {
        SubmitRun {
            run: apply::Run::default(),
            sink: BatchSink::new(self.home.apply_hook.get().cloned()),
            last: None,
        }
    }

    /// Adds one `Submit` entry's effects to `run`; its response.
    fn add_submit(
        &self,
        run: &mut SubmitRun,
        log_id: LogId,
        accepted_at: i64,
        complaints: Vec<Complaint>,
    ) -> io::Result<CommandResponse> {
        if complaints.len() > MAX_ITEMS_PER_ENTRY {
            tracing::error!(
                shard = self.shard,
                log_index = log_id.index,
                "entry holds more than 256 complaints; rest ignored"
            );
        }
        let mut guard = self.incidents.lock();
        let index = match guard.take() {
            Some(ix) => guard.insert(ix),
            None => guard.insert(incidents::load_index(&self.tree, &mut run.sink.batch)?),
        };
        let outcomes = run.run.submit(
            &self.view(),
            index,
            log_id.index,
            accepted_at,
            complaints,
            &mut run.sink,
        )?;
        drop(guard);
        self.warn_conflicts(&outcomes);
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
    fn seal_run(&self, run: SubmitRun, membership: &Membership) -> io::Result<Option<Batch>> {
        let SubmitRun { run, mut sink, last } = run;
        run.seal(&self.view(), &mut sink)?;
        Ok(sink.finish(last.as_ref(), membership)?)
    }

    /// Applies one entry atomically with the applied state; `membership` is
    /// the last applied membership, updated by membership entries.
    pub(crate) fn apply_entry(
        &self,
        entry: Entry,
        membership: &mut Membership,
    ) -> io::Result<CommandResponse> {
        let log_id = entry.log_id;
        let view = self.view();
        let mut sink = BatchSink::new(None);
        let response = match entry.payload {
            EntryPayload::Blank => CommandResponse::Empty,
            EntryPayload::Membership(m) => {
                *membership = Membership::new(Some(log_id), m);
                CommandResponse::Empty
            }
            EntryPayload::Normal(Command::Submit {
                accepted_at,
                complaints,
            }) => {
                // A run of one: the same code as a group's, applied state included.
                let mut run = self.new_run();
                let response = self.add_submit(&mut run, log_id, accepted_at, complaints)?;
                self.finish_run(run, membership)?;
                return Ok(response);
            }
            EntryPayload::Normal(Command::UpdateStatus { recorded_at, updates }) => {
                CommandResponse::StatusUpdated(apply::update_status(&view, recorded_at, updates, &mut sink)?)
            }
            EntryPayload::Normal(Command::ClaimKeys { accepted_at, claims }) => CommandResponse::Claimed(
                apply::claim_keys(&view, log_id.index, accepted_at, claims, &mut sink)?,
            ),
            EntryPayload::Normal(Command::AdvanceDispatch { from, to, count }) => {
                let (moved, state) = apply::advance_dispatch(&view, from, to, count, &mut sink)?;
                CommandResponse::DispatchAdvanced { moved, state }
            }
            EntryPayload::Normal(Command::SetClusterMap(map)) => {
                apply::set_cluster_map(&view, log_id.index, &map.into(), &mut sink)?;
                CommandResponse::Empty
            }
            EntryPayload::Normal(Command::ChangeMap(change)) => {
                let changed = apply::change_map(&view, log_id.index, &change, &mut sink)?;
                match &changed {
                    Ok(map) => tracing::info!(?change, version = map.version, "cluster map changed"),
                    Err(refusal) => tracing::info!(?change, %refusal, "cluster map change refused"),
                }
                CommandResponse::MapChanged(changed)
            }
            EntryPayload::Normal(Command::AddMember { id, addr }) => {
                let joined = apply::add_member(&view, log_id.index, id, &addr, &mut sink)?;
                match &joined {
                    Ok(map) => {
                        tracing::info!(node = id, %addr, version = map.version, "member in the cluster map")
                    }
                    Err(refusal) => tracing::warn!(node = id, %addr, %refusal, "join refused"),
                }
                CommandResponse::Joined(joined)
            }
            EntryPayload::Normal(Command::CompactKeys { before }) => {
                let (keys, more) = apply::compact_keys(&view, before, &mut sink)?;
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
        apply::applied(log_id.index, &mut sink)?;
        if let Some(batch) = sink.finish(Some(&log_id), membership)? {
            self.tree.apply_batch(batch)?;
        }
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
    for kind in &crate::records::RECORD_KINDS {
        let mut batch = Batch::default();
        let mut n = 0usize;
        for kv in tree.scan_prefix([kind.prefix]) {
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
                .map_err(io::Error::from)?;
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
            .map_err(io::Error::from)?;
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
        // The file is written from a point-in-time view, so applies go on
        // while a large shard is scanned (holding them for the scan stalled
        // every commit of the shard for seconds while a replica moved,
        // docs/benchmarks.md). The applied id is read from the same view, so
        // it names exactly the state the file holds; the apply lock is held
        // only while the view opens, between two applies.
        let view = {
            let _applying = self.apply_lock.lock().await;
            self.tree.view()
        };
        let (applied, membership): AppliedState = match view.get(SM_STATE)? {
            Some(v) => keys::decode("applied state", &v)?,
            None => (None, Membership::default()),
        };
        let id = self.snapshot_id(applied.as_ref());
        let dir = self.home.dir.clone();
        let (has_state, dir2, id2) = (applied.is_some(), dir.clone(), id.clone());
        tokio::task::spawn_blocking(move || snapshot::write_file(&view, has_state, &dir2, &id2))
            .await
            .map_err(join_error)??;

        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
        };
        let rec = SnapshotRecord { id: id.clone(), meta };
        self.tree
            .insert(SM_SNAPSHOT, keys::encode(&rec)?)
            .map_err(io::Error::from)?;
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

/// Complaints an entry carries (for the decision above).
fn entry_complaints(entry: &Entry) -> usize {
    match &entry.payload {
        EntryPayload::Normal(Command::Submit { complaints, .. }) => complaints.len(),
        EntryPayload::Normal(Command::UpdateStatus { updates, .. }) => updates.len(),
        EntryPayload::Normal(Command::ClaimKeys { claims, .. }) => claims.len(),
        _ => 1,
    }
}

/// A run of consecutive `Submit` entries being applied as one store batch:
/// the rules' run (`intake_core::apply::Run`), the batch, and the last
/// entry's log id for the applied state.
struct SubmitRun {
    run: apply::Run,
    sink: BatchSink,
    last: Option<LogId>,
}

/// Runs store work that can take milliseconds (an entry of a few hundred
/// complaints) off the async scheduler's queue where the runtime allows it:
/// otherwise the tasks queued behind it on that worker (Raft heartbeats,
/// replication, request handlers) wait for the whole apply.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    let multi_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}
