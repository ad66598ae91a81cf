//! openraft's log storage for one shard: entries, vote, committed and purged
//! log ids, in two sled trees of the node's shared database.
//!
//! Every write that Raft relies on for safety (append, vote, truncate, purge)
//! returns only after a group-commit flush that includes it. `append` reports
//! completion to openraft *before* it returns (openraft issue #2118: a store
//! that completes after returning can have unflushed entries counted as
//! flushed when the node becomes leader).

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::OptionalSend;
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};

use crate::flusher::Flusher;
use crate::keys;
use crate::node_storage::StorageError;
use crate::{ShardId, TypeConfig};

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Largest encoded Raft entry `append` accepts. It keeps a full sled leaf of
/// entries below the blob threshold (see `SEGMENT_SIZE_BYTES`): larger pages
/// would go to `blobs/` files that sled never fsyncs.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The Raft log of one shard. Cheap to clone; clones share the trees.
#[derive(Clone)]
pub struct LogStore {
    shard: ShardId,
    log: sled::Tree,
    raft: sled::Tree,
    flusher: Flusher,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("shard", &self.shard).finish()
    }
}

impl LogStore {
    pub(crate) fn new(shard: ShardId, log: sled::Tree, raft: sled::Tree, flusher: Flusher) -> Self {
        Self {
            shard,
            log,
            raft,
            flusher,
        }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    fn get_raft<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.raft.get(key)? {
            Some(bytes) => Ok(Some(keys::decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Encodes every entry first so an oversize one rejects the whole append
    /// before anything is written.
    fn encode_batch(
        entries: impl IntoIterator<Item = Entry>,
    ) -> io::Result<(sled::Batch, usize, Option<u64>)> {
        let mut batch = sled::Batch::default();
        let mut n = 0;
        let mut last = None;
        for entry in entries {
            let bytes = keys::encode(&entry)?;
            if bytes.len() > MAX_ENTRY_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "raft entry {} is {} bytes, above the limit of {MAX_ENTRY_BYTES}",
                        entry.log_id(),
                        bytes.len()
                    ),
                ));
            }
            batch.insert(&keys::log_key(entry.index()), bytes);
            last = last.max(Some(entry.index()));
            n += 1;
        }
        Ok((batch, n, last))
    }

    async fn append_durably(&self, entries: impl IntoIterator<Item = Entry>) -> io::Result<()> {
        let (batch, n, last) = Self::encode_batch(entries)?;
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        if let Some(last) = last {
            // In sled now, so the round that serves this flush covers it.
            self.flusher.marks().raise(self.shard, last);
        }
        self.flusher.flush(n).await
    }

    /// The vote in sled, read at start-up for the side-file check.
    pub(crate) fn stored_vote(&self) -> Result<Option<Vote>, StorageError> {
        self.get_raft(keys::VOTE, "vote")
    }

    /// The index of the last entry in sled (or the purged id when the log is
    /// empty), read at start-up for the side-file check.
    pub(crate) fn stored_last_index(&self) -> Result<Option<u64>, StorageError> {
        match self.log.last()? {
            Some((_, v)) => Ok(Some(keys::decode::<Entry>("log entry", &v)?.index())),
            None => Ok(self
                .get_raft::<LogId>(keys::PURGED, "purged log id")?
                .map(|l| l.index())),
        }
    }
}

/// Turns a range of indexes into a start key and an exclusive end index
/// (`None` = unbounded).
fn index_range<RB: RangeBounds<u64>>(range: &RB) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    Some((start, end))
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let Some((start, end)) = index_range(&range) else {
            return Ok(Vec::new());
        };
        if end.is_some_and(|e| e <= start) {
            return Ok(Vec::new());
        }
        let iter = match end {
            Some(end) => self.log.range(keys::log_key(start)..keys::log_key(end)),
            None => self.log.range(keys::log_key(start)..),
        };
        let mut out = Vec::new();
        for kv in iter {
            let (_, v) = kv.map_err(io::Error::other)?;
            out.push(keys::decode::<Entry>("log entry", &v)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.get_raft(keys::VOTE, "vote")?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = self.get_raft(keys::PURGED, "purged log id")?;
        let last = match self.log.last().map_err(io::Error::other)? {
            Some((_, v)) => Some(keys::decode::<Entry>("log entry", &v)?.log_id()),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.raft
            .insert(keys::VOTE, keys::encode(vote)?)
            .map_err(io::Error::other)?;
        self.flusher.flush(0).await?;
        // Only once sled has it durably, so the file never runs ahead of a
        // sled that kept everything.
        let (marks, shard, v) = (self.flusher.marks().clone(), self.shard, *vote);
        let written = tokio::task::spawn_blocking(move || marks.save_vote(shard, &v))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("vote file task failed: {e}"))));
        if let Err(e) = &written {
            self.flusher.poison(e);
        }
        written
    }

    /// Not flushed: the committed id is a hint that lets a restart re-apply
    /// sooner; losing the latest one only costs waiting for the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        match committed {
            Some(c) => self.raft.insert(keys::COMMITTED, keys::encode(&c)?).map(|_| ()),
            None => self.raft.remove(keys::COMMITTED).map(|_| ()),
        }
        .map_err(io::Error::other)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_raft(keys::COMMITTED, "committed log id")?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        match self.append_durably(entries).await {
            Ok(()) => {
                callback.io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(e)
            }
        }
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = last_log_id.map_or(0, |l| l.index() + 1);
        // The durable mark goes down first: a mark above sled's log after a
        // crash here would refuse the next start.
        let (marks, shard) = (self.flusher.marks().clone(), self.shard);
        let lowered = tokio::task::spawn_blocking(move || marks.lower_now(shard, start.saturating_sub(1)))
            .await
            .unwrap_or_else(|e| Err(io::Error::other(format!("high-water task failed: {e}"))));
        if let Err(e) = &lowered {
            self.flusher.poison(e);
            return lowered;
        }
        let mut batch = sled::Batch::default();
        for k in self.log.range(keys::log_key(start)..).keys() {
            batch.remove(k.map_err(io::Error::other)?);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        self.flusher.flush(0).await
    }

    /// Records the purged id before deleting, and flushes both, so a restart
    /// never sees a gap without knowing where the log now begins.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.raft
            .insert(keys::PURGED, keys::encode(&log_id)?)
            .map_err(io::Error::other)?;
        self.flusher.flush(0).await?;
        let mut batch = sled::Batch::default();
        for k in self.log.range(..=keys::log_key(log_id.index())).keys() {
            batch.remove(k.map_err(io::Error::other)?);
        }
        self.log.apply_batch(batch).map_err(io::Error::other)?;
        self.flusher.flush(0).await
    }
}
