//! Opening sled the one way that keeps every acknowledged write on synced
//! files.

use std::io;
use std::path::{Path, PathBuf};

use crate::DataFile;
use crate::atomic_file::sync_dir;

/// sled's log segment size. Any page larger than a quarter of it goes to its
/// own file under `blobs/` that sled never fsyncs. A page is a whole leaf
/// node (up to ~17 key/value pairs before sled splits it), not one value, so
/// the default 512 KiB puts a leaf of a few 32–64 KiB values over the limit.
/// 8 MiB segments give a 2 MiB threshold, which covers a full leaf of 64 KiB
/// values. sled refuses to reopen a database with a different segment size,
/// so this is part of the on-disk format.
pub const SEGMENT_SIZE_BYTES: usize = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SledOpenError {
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> SledOpenError + '_ {
    move |source| SledOpenError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Opens (or creates) the sled database in `dir` and our handle on its data
/// file. Blocks on disk IO.
pub fn open_sled(dir: &Path, cache_capacity_bytes: u64) -> Result<(sled::Db, DataFile), SledOpenError> {
    std::fs::create_dir_all(dir).map_err(at(dir))?;
    remove_torn_snapshots(dir).map_err(at(dir))?;
    let db = sled::Config::new()
        .path(dir)
        .cache_capacity(cache_capacity_bytes)
        .segment_size(SEGMENT_SIZE_BYTES)
        .open()?;
    // sled keeps its log in `<dir>/db` (sled 0.34.7 config.rs `db_path`).
    let db_path = dir.join("db");
    let data_file = DataFile::open(&db_path).map_err(at(&db_path))?;
    // The directory entries of sled's new files are only durable once the
    // directory itself is synced.
    sync_dir(dir).map_err(at(dir))?;
    Ok((db, data_file))
}

/// Removes `snap.*.generating` files. sled writes a snapshot there and renames
/// it when complete; a crash in between leaves a torn file that sled 0.34
/// still picks as the newest snapshot, and every later open fails on it. The
/// file is only ever a not-yet-valid copy of state the log still holds, so
/// deleting it loses nothing. Call it only while sled is not open on `dir`.
pub fn remove_torn_snapshots(dir: &Path) -> io::Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("snap.") && name.ends_with(".generating") {
            tracing::warn!(file = %entry.path().display(), "removing a torn sled snapshot left by a crash");
            std::fs::remove_file(entry.path())?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash while sled generates a snapshot leaves this file; before the
    /// fix every later open failed on it.
    #[test]
    fn a_torn_generating_snapshot_does_not_block_the_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (db, data_file) = open_sled(dir.path(), 1 << 20).unwrap();
            db.insert(b"kept", b"value").unwrap();
            db.flush().unwrap();
            data_file.sync_data().unwrap();
        }
        // Random-looking bytes (no crate needed: an LCG is enough to be
        // anything but a valid snapshot).
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let junk: Vec<u8> = (0..4096)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (x >> 56) as u8
            })
            .collect();
        assert!(dir.path().join("conf").exists(), "placed beside sled's conf");
        std::fs::write(dir.path().join("snap.00000000DEADBEEF.generating"), junk).unwrap();
        let (db, _) = open_sled(dir.path(), 1 << 20).unwrap();
        assert_eq!(db.get(b"kept").unwrap().as_deref(), Some(&b"value"[..]));
        assert!(!dir.path().join("snap.00000000DEADBEEF.generating").exists());
    }
}
