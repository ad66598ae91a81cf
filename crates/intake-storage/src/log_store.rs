//! openraft's log storage for one shard: entries, vote, committed and purged
//! log ids, in the node's [`LogEngine`] (shared by every shard).
//!
//! Every write that Raft relies on for safety (append, vote, truncate, purge)
//! returns only after the engine's round that includes it is fsync'd. `append` reports
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

use crate::error::StorageError;
use crate::keys;
use crate::raftlog::{LogEngine, MetaKind, Op};
use crate::{ShardId, TypeConfig};

type Entry = EntryOf<TypeConfig>;
type LogId = LogIdOf<TypeConfig>;
type Vote = VoteOf<TypeConfig>;

/// Largest encoded Raft entry `append` accepts. Entries live in the log
/// engine, but applying one writes its complaints to sled, whose pages must
/// stay below the blob threshold (see `SEGMENT_SIZE_BYTES`): larger pages
/// would go to `blobs/` files that sled never fsyncs.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The Raft log of one shard, in the node's [`LogEngine`]. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    shard: ShardId,
    engine: LogEngine,
}

impl Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("shard", &self.shard).finish()
    }
}

impl LogStore {
    pub(crate) fn new(shard: ShardId, engine: LogEngine) -> Self {
        Self { shard, engine }
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    fn get_meta<T: serde::de::DeserializeOwned>(
        &self,
        kind: MetaKind,
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        match self.engine.meta(self.shard, kind)? {
            Some(bytes) => Ok(Some(keys::decode(what, &bytes)?)),
            None => Ok(None),
        }
    }

    /// Encodes every entry first so an oversize one rejects the whole append
    /// before anything is written.
    fn encode_entries(entries: impl IntoIterator<Item = Entry>) -> io::Result<Vec<Op>> {
        let mut ops = Vec::new();
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
            ops.push(Op::Entry {
                index: entry.index(),
                bytes,
            });
        }
        Ok(ops)
    }

    /// Writes `ops` and waits until they are durable.
    async fn write(&self, ops: Vec<Op>) -> io::Result<()> {
        self.engine.write(self.shard, ops).await
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
        let mut out = Vec::new();
        for (_, bytes) in self.engine.entries(self.shard, start, end)? {
            out.push(keys::decode::<Entry>("log entry", &bytes)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.get_meta(MetaKind::Vote, "vote")?)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = self.get_meta(MetaKind::Purged, "purged log id")?;
        let last_stored = match self.engine.bounds(self.shard)?.1 {
            Some(i) => self.engine.entries(self.shard, i, i.checked_add(1))?.pop(),
            None => None,
        };
        let last = match last_stored {
            Some((_, bytes)) => Some(keys::decode::<Entry>("log entry", &bytes)?.log_id()),
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
        let value = Some(keys::encode(vote)?);
        self.write(vec![Op::Meta {
            kind: MetaKind::Vote,
            value,
        }])
        .await
    }

    /// Not written at once: the committed id is a hint that lets a restart
    /// re-apply sooner, so it rides along with the next round; losing the
    /// latest one only costs waiting for the leader.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let value = committed.map(|c| keys::encode(&c)).transpose()?;
        self.engine
            .set_meta_lazily(self.shard, MetaKind::Committed, value)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.get_meta(MetaKind::Committed, "committed log id")?)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = match Self::encode_entries(entries) {
            Ok(ops) => self.write(ops).await,
            Err(e) => Err(e),
        };
        match written {
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
        let index = last_log_id.map_or(0, |l| l.index() + 1);
        self.write(vec![Op::TruncateFrom { index }]).await
    }

    /// Records the purged id before the deletion, in the same round, so a
    /// restart never sees a gap without knowing where the log now begins.
    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let value = Some(keys::encode(&log_id)?);
        self.write(vec![
            Op::Meta {
                kind: MetaKind::Purged,
                value,
            },
            Op::PurgeTo {
                index: log_id.index(),
            },
        ])
        .await
    }
}
