//! The layer itself, mounted for real through /dev/fuse: what survives a
//! power cut is exactly what was fsync'd. Needs /dev/fuse and fusermount3
//! (Debian package fuse3); `.ci/run` installs it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure is the answer

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use intake_powercut::Power;

struct Mounted {
    _dirs: tempfile::TempDir,
    backing: PathBuf,
    mnt: PathBuf,
    power: Power,
    session: Option<fuser::BackgroundSession>,
}

fn mounted() -> Mounted {
    let dirs = tempfile::tempdir().unwrap();
    let backing = dirs.path().join("backing");
    let mnt = dirs.path().join("mnt");
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let power = Power::default();
    let session =
        intake_powercut::mount::spawn(&backing, &mnt, power.clone()).unwrap_or_else(|e| panic!("{e}"));
    Mounted {
        _dirs: dirs,
        backing,
        mnt,
        power,
        session: Some(session),
    }
}

impl Mounted {
    /// Cuts the power and unmounts; the backing directory is then the disk
    /// after the reboot.
    fn cut_and_unmount(&mut self) {
        self.power.cut();
        drop(self.session.take());
    }
}

fn open_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap()
}

#[test]
fn unsynced_writes_are_seen_before_the_cut_and_gone_after() {
    let mut m = mounted();
    let mut f = open_rw(&m.mnt.join("log"));
    f.write_all(b"not yet durable").unwrap();
    assert_eq!(std::fs::read(m.mnt.join("log")).unwrap(), b"not yet durable");
    assert_eq!(std::fs::metadata(m.mnt.join("log")).unwrap().len(), 15);
    assert_eq!(m.power.unsynced_bytes(), 15);
    // Nothing reached the disk yet, and closing does not change that.
    drop(f);
    assert_eq!(std::fs::read(m.backing.join("log")).unwrap(), b"");
    m.cut_and_unmount();
    assert_eq!(std::fs::read(m.backing.join("log")).unwrap(), b"");
}

#[test]
fn fsynced_writes_survive_the_cut() {
    let mut m = mounted();
    let mut f = open_rw(&m.mnt.join("log"));
    f.write_all(b"durable").unwrap();
    f.sync_data().unwrap();
    assert_eq!(m.power.unsynced_bytes(), 0);
    drop(f);
    m.cut_and_unmount();
    assert_eq!(std::fs::read(m.backing.join("log")).unwrap(), b"durable");
}

#[test]
fn a_torn_tail_keeps_the_synced_prefix_only() {
    let mut m = mounted();
    let mut f = open_rw(&m.mnt.join("log"));
    f.write_all(b"first record|").unwrap();
    f.sync_all().unwrap();
    // Overwrites part of the synced bytes and appends: both are lost.
    f.write_all(b"second record|").unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"F", 0).unwrap();
    f.set_len(40).unwrap();
    let mut seen = Vec::new();
    File::open(m.mnt.join("log"))
        .unwrap()
        .read_to_end(&mut seen)
        .unwrap();
    assert_eq!(&seen[..27], b"First record|second record|");
    assert_eq!(seen.len(), 40);
    drop(f);
    m.cut_and_unmount();
    assert_eq!(std::fs::read(m.backing.join("log")).unwrap(), b"first record|");
}

#[test]
fn every_operation_fails_after_the_cut() {
    let mut m = mounted();
    let mut f = open_rw(&m.mnt.join("log"));
    f.write_all(b"x").unwrap();
    m.power.cut();
    let err = f.sync_all().unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let err = std::fs::read_dir(&m.mnt).map(|_| ()).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    m.cut_and_unmount();
    assert_eq!(std::fs::read(m.backing.join("log")).unwrap(), b"");
}

#[test]
fn renaming_a_file_whose_data_was_not_fsynced_leaves_it_empty() {
    // The rename is durable at once (see the durability model in fs.rs),
    // the data only with an fsync: the classic replace-by-rename hazard.
    let mut m = mounted();
    std::fs::write(m.mnt.join("state.tmp"), b"synced").unwrap();
    File::open(m.mnt.join("state.tmp")).unwrap().sync_all().unwrap();
    std::fs::rename(m.mnt.join("state.tmp"), m.mnt.join("state")).unwrap();
    std::fs::write(m.mnt.join("next.tmp"), b"never synced").unwrap();
    std::fs::rename(m.mnt.join("next.tmp"), m.mnt.join("other")).unwrap();
    assert_eq!(std::fs::read(m.mnt.join("other")).unwrap(), b"never synced");
    std::fs::create_dir(m.mnt.join("dir")).unwrap();
    m.cut_and_unmount();
    assert_eq!(std::fs::read(m.backing.join("state")).unwrap(), b"synced");
    assert_eq!(std::fs::read(m.backing.join("other")).unwrap(), b"");
    assert!(m.backing.join("dir").is_dir());
    let gone = std::fs::metadata(m.backing.join("next.tmp")).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}
