//! The writes of one file that were not yet made durable: what a disk's
//! volatile cache (or the page cache) holds between two fsyncs.
//!
//! Reads see them on top of the backing file; `apply` writes them to the
//! backing file in order and fsyncs it; dropping them is the power cut. Sizes
//! change through the same list (a truncate is not durable until the next
//! fsync either), so the logical size is a fold over the operations.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

/// Unsynced operations of one file, in the order they were made.
#[derive(Debug, Default)]
pub struct Pending {
    ops: Vec<Op>,
    bytes: usize,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of written data held in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.bytes += data.len();
        // sled appends to its log: merging a write that continues the last
        // one keeps the list (and every later read's fold) short.
        if let Some(Op::Write { offset: o, data: d }) = self.ops.last_mut()
            && *o + d.len() as u64 == offset
        {
            d.extend_from_slice(data);
            return;
        }
        self.ops.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
    }

    pub fn set_len(&mut self, len: u64) {
        self.ops.push(Op::SetLen(len));
    }

    /// The size the file has for its readers, given the backing file's size.
    pub fn len(&self, backing_len: u64) -> u64 {
        self.ops.iter().fold(backing_len, |size, op| match op {
            Op::Write { offset, data } => size.max(offset + data.len() as u64),
            Op::SetLen(l) => *l,
        })
    }

    /// Up to `size` bytes at `offset` as readers see them: the backing file
    /// with the unsynced operations replayed over it.
    pub fn read(&self, backing: &File, offset: u64, size: usize) -> io::Result<Vec<u8>> {
        let backing_len = backing.metadata()?.len();
        let len = self.len(backing_len);
        if offset >= len {
            return Ok(Vec::new());
        }
        let end = len.min(offset.saturating_add(size as u64));
        let mut buf = vec![0u8; (end - offset) as usize];
        if offset < backing_len {
            let n = (end.min(backing_len) - offset) as usize;
            read_at_most(backing, &mut buf[..n], offset)?;
        }
        for op in &self.ops {
            match op {
                // Bytes past a shrink read back as zeros if a later write
                // extends the file again.
                Op::SetLen(l) if *l < end => {
                    let from = (*l).max(offset) - offset;
                    buf[from as usize..].fill(0);
                }
                Op::SetLen(_) => {}
                Op::Write { offset: o, data } => {
                    let w_end = o + data.len() as u64;
                    let from = (*o).max(offset);
                    let to = w_end.min(end);
                    if from < to {
                        let src = &data[(from - o) as usize..(to - o) as usize];
                        buf[(from - offset) as usize..(to - offset) as usize].copy_from_slice(src);
                    }
                }
            }
        }
        Ok(buf)
    }

    /// Makes the operations durable: replays them on the backing file, then
    /// fsyncs it. On error they stay pending (a later fsync retries them),
    /// and the caller reports the error as the disk would.
    pub fn apply(&mut self, backing: &File) -> io::Result<()> {
        for op in &self.ops {
            match op {
                Op::Write { offset, data } => backing.write_all_at(data, *offset)?,
                Op::SetLen(l) => backing.set_len(*l)?,
            }
        }
        backing.sync_all()?;
        self.ops.clear();
        self.bytes = 0;
        Ok(())
    }
}

/// Fills `buf` from `offset`, leaving zeros past the end of the file.
fn read_at_most(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut done = 0;
    // Bounded: each pass reads at least one byte or stops.
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backing(content: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, content).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        (dir, f)
    }

    #[test]
    fn reads_see_unsynced_writes_over_the_backing_file() {
        let (_d, f) = backing(b"0123456789");
        let mut p = Pending::default();
        p.write(2, b"ab");
        p.write(8, b"XYZW");
        assert_eq!(p.len(10), 12);
        assert_eq!(p.read(&f, 0, 100).unwrap(), b"01ab4567XYZW");
        assert_eq!(p.read(&f, 3, 2).unwrap(), b"b4");
        // Nothing reached the backing file.
        assert_eq!(std::fs::read(_d.path().join("f")).unwrap(), b"0123456789");
    }

    #[test]
    fn a_shrink_then_a_write_past_it_reads_zeros_between() {
        let (_d, f) = backing(b"0123456789");
        let mut p = Pending::default();
        p.set_len(3);
        p.write(6, b"z");
        assert_eq!(p.read(&f, 0, 100).unwrap(), b"012\0\0\0z");
    }

    #[test]
    fn apply_makes_the_same_bytes_durable() {
        let (d, f) = backing(b"0123456789");
        let mut p = Pending::default();
        p.write(8, b"XYZW");
        p.set_len(11);
        p.write(0, b"a");
        let seen = p.read(&f, 0, 100).unwrap();
        p.apply(&f).unwrap();
        assert!(p.is_empty());
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), seen);
        assert_eq!(seen, b"a1234567XYZ");
    }

    #[test]
    fn contiguous_writes_are_merged() {
        let mut p = Pending::default();
        p.write(0, b"ab");
        p.write(2, b"cd");
        p.write(10, b"e");
        assert_eq!(p.ops.len(), 2);
        assert_eq!(p.bytes(), 5);
    }
}
