//! The Raft vote and each shard's durable log high-water mark, kept again
//! outside sled in small fsync'd files, so a sled that comes back older than
//! it was is caught at start-up instead of voting twice.
//!
//! sled treats any unreadable message in its log (a torn tail, a read EIO, a
//! corrupt blob) as the end of the log and starts from an older,
//! self-consistent prefix. A node whose vote went back could vote for a second
//! candidate in a term; one whose log went back has forgotten entries it
//! acknowledged. Both files are written only *after* the sled data they
//! describe is fsync'd, so after any crash they never run ahead of a sled that
//! kept everything; sled behind them means sled lost synced data.
//!
//! Files, in `<data dir>/raft-marks/`:
//! * `vote.<shard>`: the last vote saved (postcard), replaced atomically on
//!   every vote save (tmp, fsync, rename, fsync of the directory); votes are
//!   rare.
//! * `log-high-water`: shard → last log index known fsync'd in sled
//!   (postcard map) in an `intake_disk::SlotFile`, rewritten in place with
//!   one write and one `fdatasync` at most once per group-commit round, only
//!   when some append raised a mark.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openraft::alias::VoteOf;

use crate::ShardId;
use crate::TypeConfig;
use crate::node_storage::StorageError;

type Vote = VoteOf<TypeConfig>;

pub(crate) const MARKS_DIR: &str = "raft-marks";
const HIGH_WATER_FILE: &str = "log-high-water";

#[derive(Default)]
struct Marks {
    /// What the next write records.
    current: BTreeMap<ShardId, u64>,
    /// What the file held when opened: the values start-up checks against.
    at_open: BTreeMap<ShardId, u64>,
    /// Raised since the last write.
    dirty: bool,
}

/// The node's side files. One per node, shared through the flusher.
pub(crate) struct SideMarks {
    dir: PathBuf,
    marks: Mutex<Marks>,
    /// Serializes file writes, so a mark lowered by a truncation is never
    /// overwritten by a round that read the old, higher value.
    write: Mutex<intake_disk::SlotFile>,
}

fn lock_err() -> io::Error {
    io::Error::other("side marks lock poisoned")
}

impl SideMarks {
    /// Loads the high-water marks (creating the directory on first use).
    pub(crate) fn open(data_dir: &Path) -> Result<SideMarks, StorageError> {
        let dir = data_dir.join(MARKS_DIR);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            intake_disk::sync_dir(data_dir)?;
        }
        let (file, record) = intake_disk::SlotFile::open(&dir.join(HIGH_WATER_FILE))?;
        let at_open: BTreeMap<ShardId, u64> = match record {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|source| StorageError::Decode {
                what: "log high-water marks",
                source,
            })?,
            None => BTreeMap::new(),
        };
        Ok(SideMarks {
            dir,
            marks: Mutex::new(Marks {
                current: at_open.clone(),
                at_open,
                dirty: false,
            }),
            write: Mutex::new(file),
        })
    }

    /// Records that `shard`'s log reaches `index` once the next flush is done.
    /// Call after the entries are in sled and before asking for the flush.
    pub(crate) fn raise(&self, shard: ShardId, index: u64) {
        if let Ok(mut m) = self.marks.lock() {
            let e = m.current.entry(shard).or_insert(0);
            if index > *e {
                *e = index;
                m.dirty = true;
            }
        }
    }

    /// One group-commit round: `sync_sled` makes sled durable, then the marks
    /// read *before* it started are written, so they never claim more than
    /// sled holds. Blocks on disk IO.
    pub(crate) fn round(&self, sync_sled: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut file = self.write.lock().map_err(|_| lock_err())?;
        let snapshot = {
            let mut m = self.marks.lock().map_err(|_| lock_err())?;
            let dirty = std::mem::take(&mut m.dirty);
            dirty.then(|| m.current.clone())
        };
        sync_sled()?;
        if let Some(marks) = snapshot {
            write_marks(&mut file, &marks)?;
        }
        Ok(())
    }

    /// Lowers `shard`'s mark to `index` and writes it at once, before the
    /// caller truncates sled: a mark above sled's log would refuse the next
    /// start. Truncation is rare (a follower dropping a deposed leader's
    /// entries). Blocks on disk IO.
    pub(crate) fn lower_now(&self, shard: ShardId, index: u64) -> io::Result<()> {
        let mut file = self.write.lock().map_err(|_| lock_err())?;
        let marks = {
            let mut m = self.marks.lock().map_err(|_| lock_err())?;
            match m.current.get_mut(&shard) {
                Some(e) if *e > index => *e = index,
                _ => return Ok(()),
            }
            m.current.clone()
        };
        write_marks(&mut file, &marks)
    }

    /// Writes the vote of `shard`; call after sled has it durably. Blocks.
    pub(crate) fn save_vote(&self, shard: ShardId, vote: &Vote) -> io::Result<()> {
        let bytes = postcard::to_stdvec(vote).map_err(io::Error::other)?;
        intake_disk::replace_file(&self.vote_path(shard), &bytes)
    }

    fn vote_path(&self, shard: ShardId) -> PathBuf {
        self.dir.join(format!("vote.{shard}"))
    }

    /// Refuses a sled store that is behind the side files: an older vote, or
    /// a log that ends below the durable high-water mark.
    pub(crate) fn check(
        &self,
        shard: ShardId,
        sled_vote: Option<&Vote>,
        sled_last_index: Option<u64>,
    ) -> Result<(), StorageError> {
        if let Some(bytes) = intake_disk::read_small_file(&self.vote_path(shard))? {
            let file_vote: Vote = postcard::from_bytes(&bytes).map_err(|source| StorageError::Decode {
                what: "side-file vote",
                source,
            })?;
            let ok = sled_vote.is_some_and(|v| {
                matches!(
                    v.partial_cmp(&file_vote),
                    Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                )
            });
            if !ok {
                return Err(StorageError::RolledBack {
                    shard,
                    what: "Raft vote",
                    sled: sled_vote.map_or_else(|| "none".to_string(), |v| v.to_string()),
                    file: file_vote.to_string(),
                });
            }
        }
        let mark = self
            .marks
            .lock()
            .map_err(|_| lock_err())?
            .at_open
            .get(&shard)
            .copied();
        if let Some(mark) = mark
            && sled_last_index.unwrap_or(0) < mark
        {
            return Err(StorageError::RolledBack {
                shard,
                what: "last log index",
                sled: sled_last_index.map_or_else(|| "none".to_string(), |i| i.to_string()),
                file: mark.to_string(),
            });
        }
        Ok(())
    }
}

fn write_marks(file: &mut intake_disk::SlotFile, marks: &BTreeMap<ShardId, u64>) -> io::Result<()> {
    let bytes = postcard::to_stdvec(marks).map_err(io::Error::other)?;
    file.write(&bytes)
}
