//! Snapshot files: the state machine's records at one applied log id.
//!
//! Snapshots live in files rather than memory so a large shard neither sits in
//! RAM nor travels in one message. Layout:
//!
//! ```text
//! magic "INTKSNP1"
//! repeated: key_len u32 BE, key, value_len u32 BE, value
//! footer:   0xFFFF_FFFF, record count u64 BE, FNV-1a 64 of all record bytes u64 BE
//! ```
//!
//! The footer makes a truncated or corrupted transfer fail loudly instead of
//! installing half a shard. Only the kinds of record listed in
//! `records.rs`, well formed, are allowed, so a snapshot can never
//! overwrite the state machine's own bookkeeping keys.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::AsyncWriteExt;

use crate::SnapshotData;
use crate::records::RECORD_KINDS;
use crate::store::TreeView;

pub const SNAPSHOT_DIR: &str = "snapshots";
pub const INCOMING_DIR: &str = "snapshots/incoming";

const MAGIC: &[u8; 8] = b"INTKSNP1";
const FOOTER_MARK: u32 = u32::MAX;
/// A sane ceiling for one shard's snapshot; beyond it the input is garbage.
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 30;
const MAX_KEY_BYTES: usize = 4 * 1024;
/// A ticket is smaller than the entry that created it; anything larger is
/// garbage, and would risk sled's unsynced blob files.
const MAX_VALUE_BYTES: usize = crate::MAX_ENTRY_BYTES;

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// FNV-1a 64: no dependency, and enough to catch transfer corruption.
#[derive(Clone, Copy)]
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// Writes records and the footer.
struct RecordWriter<W: Write> {
    out: W,
    hash: Fnv,
    count: u64,
}

impl<W: Write> RecordWriter<W> {
    fn new(mut out: W) -> io::Result<Self> {
        out.write_all(MAGIC)?;
        Ok(Self {
            out,
            hash: Fnv::new(),
            count: 0,
        })
    }

    fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        for part in [key, value] {
            let len = u32::try_from(part.len()).map_err(|_| invalid("snapshot record too large"))?;
            let len = len.to_be_bytes();
            self.hash.update(&len);
            self.hash.update(part);
            self.out.write_all(&len)?;
            self.out.write_all(part)?;
        }
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&FOOTER_MARK.to_be_bytes())?;
        self.out.write_all(&self.count.to_be_bytes())?;
        self.out.write_all(&self.hash.0.to_be_bytes())?;
        Ok(self.out)
    }
}

/// Writes the applied state (`has_state` false: nothing applied yet) from the tree to
/// `<dir>/<id>.snap`, durably. Records become mutable with status updates and
/// the dispatch cursor, so filtering by creating index no longer gives the
/// state at one applied id; the caller holds the apply lock instead.
pub(crate) fn write_file(tree: &TreeView, has_state: bool, dir: &Path, id: &str) -> io::Result<PathBuf> {
    let tmp = dir.join(format!("{id}.tmp"));
    let file = File::create(&tmp)?;
    let mut w = RecordWriter::new(BufWriter::new(file))?;
    // A point-in-time view: applies go on meanwhile, and every record read
    // belongs to the applied state the view holds.
    if has_state {
        for kind in &RECORD_KINDS {
            for kv in tree.scan_prefix([kind.prefix]) {
                let (k, v) = kv.map_err(io::Error::other)?;
                w.record(&k, &v)?;
            }
        }
    }
    let file = w.finish()?.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    let path = snap_path(dir, id);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

pub(crate) fn snap_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.snap"))
}

/// Reads every record, checking shape, limits and footer; `on_record` sees
/// each one. Never panics on garbage: it returns `InvalidData`.
pub(crate) fn read_records<R: Read>(
    input: R,
    mut on_record: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> io::Result<u64> {
    let mut r = BufReader::new(input.take(MAX_SNAPSHOT_BYTES));
    let mut magic = [0u8; 8];
    read_exact(&mut r, &mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not an Intake snapshot (bad magic)"));
    }
    let mut hash = Fnv::new();
    let mut count = 0u64;
    loop {
        let key_len = read_u32(&mut r)?;
        if key_len == FOOTER_MARK {
            break;
        }
        let key = read_part(&mut r, key_len, MAX_KEY_BYTES, &mut hash)?;
        let value_len = read_u32(&mut r)?;
        let value = read_part(&mut r, value_len, MAX_VALUE_BYTES, &mut hash)?;
        crate::records::check(&key, &value).map_err(invalid)?;
        on_record(key, value)?;
        count += 1;
    }
    let want_count = read_u64(&mut r)?;
    let want_hash = read_u64(&mut r)?;
    if want_count != count || want_hash != hash.0 {
        return Err(invalid("snapshot footer does not match its records (corrupted)"));
    }
    let mut extra = [0u8; 1];
    if r.read(&mut extra)? != 0 {
        return Err(invalid("trailing bytes after snapshot footer"));
    }
    Ok(count)
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<()> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => invalid("snapshot is truncated"),
        _ => e,
    })
}

fn read_u32<R: Read>(r: &mut R) -> io::Result<u32> {
    let mut b = [0u8; 4];
    read_exact(r, &mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn read_u64<R: Read>(r: &mut R) -> io::Result<u64> {
    let mut b = [0u8; 8];
    read_exact(r, &mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn read_part<R: Read>(r: &mut R, len: u32, max: usize, hash: &mut Fnv) -> io::Result<Vec<u8>> {
    let len = len as usize;
    if len > max {
        return Err(invalid(format!(
            "snapshot record part of {len} bytes exceeds {max}"
        )));
    }
    let mut buf = vec![0u8; len];
    read_exact(r, &mut buf)?;
    hash.update(&(len as u32).to_be_bytes());
    hash.update(&buf);
    Ok(buf)
}

/// Copies `src` (from its start) to `<dir>/<id>.snap` durably, validating it
/// on the way so garbage is rejected before anything is recorded.
pub(crate) fn copy_validated(mut src: File, dir: &Path, id: &str) -> io::Result<PathBuf> {
    src.seek(SeekFrom::Start(0))?;
    let tmp = dir.join(format!("{id}.tmp"));
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        let tee = Tee {
            src: &mut src,
            out: &mut out,
        };
        read_records(tee, |_, _| Ok(()))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    let path = snap_path(dir, id);
    fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Copies what it reads into `out`.
struct Tee<'a, R: Read, W: Write> {
    src: &'a mut R,
    out: &'a mut W,
}

impl<R: Read, W: Write> Read for Tee<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.src.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Deletes snapshot files and leftovers in `dir` other than `keep`'s.
pub(crate) fn remove_others(dir: &Path, keep: Option<&str>) -> io::Result<()> {
    let keep = keep.map(|id| format!("{id}.snap"));
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = name.ends_with(".snap") || name.ends_with(".tmp");
        if ours
            && Some(name.as_ref()) != keep.as_deref()
            && let Err(e) = fs::remove_file(entry.path())
        {
            tracing::warn!(error = %e, file = %name, "cannot remove old snapshot file");
        }
    }
    Ok(())
}

pub(crate) use intake_disk::sync_dir;

/// Creates `dir` if missing, making its entry durable in the parent.
pub(crate) fn create_dir_synced(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Partial transfers from before a restart are useless: start empty.
pub(crate) fn reset_incoming(root: &Path) -> io::Result<()> {
    let dir = root.join(INCOMING_DIR);
    if dir.is_dir() {
        fs::remove_dir_all(&dir)?;
    }
    create_dir_synced(&dir)
}

/// Receives a snapshot in chunks from the network into an anonymous-on-finish
/// temp file. Dropping it unfinished deletes the file.
#[derive(Debug)]
pub struct SnapshotWriter {
    file: Option<tokio::fs::File>,
    path: PathBuf,
    written: u64,
}

impl SnapshotWriter {
    pub(crate) fn create(path: PathBuf) -> io::Result<SnapshotWriter> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(SnapshotWriter {
            file: Some(tokio::fs::File::from_std(file)),
            path,
            written: 0,
        })
    }

    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.written = self.written.saturating_add(chunk.len() as u64);
        if self.written > MAX_SNAPSHOT_BYTES {
            return Err(invalid(format!(
                "snapshot larger than {MAX_SNAPSHOT_BYTES} bytes"
            )));
        }
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        file.write_all(chunk).await
    }

    /// Syncs the data and returns a handle positioned at the start. The path
    /// is unlinked, so the data lives exactly as long as the handle.
    pub async fn finish(mut self) -> io::Result<SnapshotData> {
        let mut file = self
            .file
            .take()
            .ok_or_else(|| io::Error::other("snapshot writer already finished"))?;
        file.flush().await?;
        file.sync_all().await?;
        tokio::io::AsyncSeekExt::seek(&mut file, SeekFrom::Start(0)).await?;
        tokio::fs::remove_file(&self.path).await?;
        Ok(file)
    }
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What a shard's state machine needs of the node: for snapshots, its
/// snapshot directory, unique file names and the store to make durable; for
/// apply, the node's observer of created tickets. Handed over by the node's
/// storage, so the state machine need not know it.
#[derive(Clone)]
pub struct ShardHome {
    pub dir: PathBuf,
    /// Makes snapshot file names unique across the node's shards.
    pub seq: Arc<AtomicU64>,
    /// The node's state-machine store, persisted where a snapshot needs it.
    pub store: crate::store::SmStore,
    pub apply_hook: Arc<std::sync::OnceLock<Arc<dyn crate::apply_hook::ApplyHook>>>,
}

impl ShardHome {
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Makes every state-machine write so far durable, off the runtime's
    /// workers (an fsync).
    pub async fn persist(&self) -> io::Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.persist())
            .await
            .map_err(|e| io::Error::other(format!("state-machine persist task failed: {e}")))?
            .map_err(io::Error::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;
    use intake_core::TicketId;

    #[test]
    fn garbage_is_invalid_data_not_panic() {
        let mut good = Vec::new();
        let mut w = RecordWriter::new(&mut good).unwrap();
        w.record(
            &keys::idem_key("a"),
            &postcard::to_stdvec(&TicketId::new(1, 2, 3)).unwrap(),
        )
        .unwrap();
        w.finish().unwrap();
        assert_eq!(read_records(&good[..], |_, _| Ok(())).unwrap(), 1);

        let mut inputs: Vec<Vec<u8>> = vec![vec![], b"INTKSNP1".to_vec(), b"nonsense at all".to_vec()];
        for cut in 0..good.len() {
            inputs.push(good[..cut].to_vec());
        }
        let mut flipped = good.clone();
        flipped[12] ^= 0x40;
        inputs.push(flipped);
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
        inputs.push(huge);
        let mut trailing = good.clone();
        trailing.push(0);
        inputs.push(trailing);
        for bad in inputs {
            let err = read_records(&bad[..], |_, _| Ok(())).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}: {err}");
        }
    }
}
