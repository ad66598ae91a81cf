//! Segment files: naming, listing, creating durably, and reading one back.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// A segment is closed for appends once it passes this size. Small enough
/// that a purged prefix is given back to the disk soon, large enough that a
/// node rotates rarely (each rotation writes a checkpoint and syncs the
/// directory).
pub const SEGMENT_TARGET_BYTES: u64 = 64 << 20;

const SUFFIX: &str = ".seg";

pub fn path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}{SUFFIX}"))
}

/// Segment ids in `dir`, ascending. Other files are ignored.
pub fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(id) = name.strip_suffix(SUFFIX).and_then(|n| n.parse::<u64>().ok()) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates a new, empty segment and makes its directory entry durable.
pub fn create(dir: &Path, id: u64) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path(dir, id))?;
    sync_dir(dir)?;
    Ok(file)
}

pub fn open_read(dir: &Path, id: u64) -> io::Result<File> {
    File::open(path(dir, id))
}

/// Cuts a segment at `len` (a torn tail) and makes the cut durable.
pub fn truncate(dir: &Path, id: u64, len: u64) -> io::Result<()> {
    let f = OpenOptions::new().write(true).open(path(dir, id))?;
    f.set_len(len)?;
    f.sync_all()
}

pub fn remove(dir: &Path, id: u64) -> io::Result<()> {
    std::fs::remove_file(path(dir, id))
}

pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
