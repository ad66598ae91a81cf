//! The FUSE filesystem: a passthrough over a backing directory whose file
//! writes reach the backing files only on fsync, and which loses the rest
//! when its power is cut.
//!
//! Durability model (what survives a cut):
//! - file data and sizes: only what an fsync/fdatasync of that file made
//!   durable; every write or truncate since is held in memory ([`Pending`]),
//!   seen by reads, and dropped by the cut;
//! - directory operations (create, mkdir, rename, unlink, rmdir): durable at
//!   once, as on a journaling filesystem that commits them in order with the
//!   next fsync of anything. This is weaker than POSIX (which wants an fsync
//!   of the directory): a missing directory fsync is not caught. It still
//!   catches the classic rename hazard — a file renamed into place before its
//!   data was fsync'd comes back empty or short — because the data stays with
//!   the inode, not the name. Modelling unsynced names would need a shadow
//!   namespace, and the stores under test (sled, the sink) create their files
//!   once and rename rarely.
//!
//! Unsynced data never reaches the backing file on its own: the worst case
//! (a real kernel writes dirty pages back after ~30 s, and a real cut may
//! keep any subset of them, in any order; that partial persistence is not
//! modelled).
//!
//! After the cut every operation fails with EIO, as a dead disk would, until
//! the filesystem is unmounted; the backing directory then holds exactly what
//! was durable.
//!
//! The kernel must not cache what the process writes, or the process would
//! not see its own writes go through us: files are opened with
//! `FOPEN_DIRECT_IO` and attributes and entries are given a zero TTL.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::{Mutex, MutexGuard};

use fuser::{
    BsdFileFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::pending::Pending;

/// Nothing is cached by the kernel: every lookup and stat comes to us.
const TTL: Duration = Duration::ZERO;

/// The power switch of one mount. Cloned into the signal handler's thread.
#[derive(Clone, Default)]
pub struct Power {
    cut: Arc<AtomicBool>,
    /// Bytes written and not yet fsync'd, over all files: what a cut loses.
    unsynced: Arc<AtomicU64>,
}

impl Power {
    /// Cuts the power: every write not yet fsync'd is lost, and every later
    /// operation fails with EIO. Returns the bytes lost.
    pub fn cut(&self) -> u64 {
        self.cut.store(true, Ordering::SeqCst);
        self.unsynced.load(Ordering::SeqCst)
    }

    pub fn is_cut(&self) -> bool {
        self.cut.load(Ordering::SeqCst)
    }

    /// Bytes written and not yet fsync'd.
    pub fn unsynced_bytes(&self) -> u64 {
        self.unsynced.load(Ordering::SeqCst)
    }
}

/// One file's open backing descriptor and its unsynced writes. Kept after
/// the last close: closing a file does not make its writes durable.
struct Cached {
    file: File,
    pending: Pending,
}

struct State {
    /// FUSE inode → path relative to the backing root ("" is the root).
    paths: HashMap<u64, PathBuf>,
    /// (st_dev, st_ino) of the backing file → FUSE inode, so that a file
    /// keeps its inode (and its unsynced writes) across renames.
    inodes: HashMap<(u64, u64), u64>,
    next_ino: u64,
    files: HashMap<u64, Cached>,
}

pub struct PowercutFs {
    root: PathBuf,
    power: Power,
    /// A disk that acknowledges flushes it never does: nothing is ever
    /// durable. Only for checking that a power-loss test can fail.
    fsync_lies: bool,
    state: Mutex<State>,
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn kind_of(m: &std::fs::Metadata) -> FileType {
    FileType::from_std(m.file_type()).unwrap_or(FileType::RegularFile)
}

fn time(secs: i64, nsecs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsecs.clamp(0, 999_999_999) as u32)
    } else {
        UNIX_EPOCH
    }
}

impl PowercutFs {
    pub fn new(backing: impl Into<PathBuf>, power: Power) -> io::Result<PowercutFs> {
        let root: PathBuf = backing.into();
        let meta = std::fs::metadata(&root)?;
        if !meta.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", root.display()),
            ));
        }
        let mut state = State {
            paths: HashMap::new(),
            inodes: HashMap::new(),
            next_ino: INodeNo::ROOT.0 + 1,
            files: HashMap::new(),
        };
        state.paths.insert(INodeNo::ROOT.0, PathBuf::new());
        state.inodes.insert((meta.dev(), meta.ino()), INodeNo::ROOT.0);
        Ok(PowercutFs {
            root,
            power,
            fsync_lies: false,
            state: Mutex::new(state),
        })
    }

    /// See [`PowercutFs::fsync_lies`]: fsync answers success and keeps
    /// nothing.
    pub fn with_lying_fsync(mut self) -> PowercutFs {
        self.fsync_lies = true;
        self
    }

    /// The state, or EIO once the power is cut (nothing after the cut may
    /// reach the backing directory).
    fn live(&self) -> Result<MutexGuard<'_, State>, Errno> {
        if self.power.is_cut() {
            return Err(Errno::EIO);
        }
        let guard = self.state.lock();
        if self.power.is_cut() {
            return Err(Errno::EIO);
        }
        Ok(guard)
    }

    fn backing(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn attr(&self, st: &State, ino: u64, meta: &std::fs::Metadata) -> FileAttr {
        let size = match st.files.get(&ino) {
            Some(c) if !c.pending.is_empty() => c.pending.len(meta.len()),
            _ => meta.len(),
        };
        FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind_of(meta),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        }
    }

    fn path_of(st: &State, ino: INodeNo) -> Result<PathBuf, Errno> {
        st.paths.get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    /// The FUSE inode of the backing file at `rel`, allocated on first sight.
    fn intern(st: &mut State, rel: PathBuf, meta: &std::fs::Metadata) -> u64 {
        let key = (meta.dev(), meta.ino());
        let ino = match st.inodes.get(&key) {
            Some(i) => *i,
            None => {
                let i = st.next_ino;
                st.next_ino += 1;
                st.inodes.insert(key, i);
                i
            }
        };
        st.paths.insert(ino, rel);
        ino
    }

    fn entry(&self, st: &mut State, rel: PathBuf) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.backing(&rel)).map_err(errno)?;
        let ino = Self::intern(st, rel, &meta);
        Ok(self.attr(st, ino, &meta))
    }

    fn cached<'a>(&self, st: &'a mut State, ino: u64) -> Result<&'a mut Cached, Errno> {
        if !st.files.contains_key(&ino) {
            let rel = st.paths.get(&ino).cloned().ok_or(Errno::ENOENT)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.backing(&rel))
                .map_err(errno)?;
            st.files.insert(
                ino,
                Cached {
                    file,
                    pending: Pending::default(),
                },
            );
        }
        st.files.get_mut(&ino).ok_or(Errno::ENOENT)
    }

    /// Forgets the name `rel` (the file behind it was unlinked or replaced).
    fn drop_name(st: &mut State, rel: &Path) {
        st.paths.retain(|_, p| p != rel);
    }

    /// Renames `from` and everything under it to `to` in the inode table.
    fn move_names(st: &mut State, from: &Path, to: &Path) {
        for p in st.paths.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }
}

impl PowercutFs {
    /// Unlink or rmdir: durable at once, like every directory operation.
    fn remove(&self, parent: INodeNo, name: &OsStr, op: fn(PathBuf) -> io::Result<()>, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, parent)?.join(name);
            op(self.backing(&rel)).map_err(errno)?;
            Self::drop_name(&mut st, &rel);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}

impl Filesystem for PowercutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, parent)?.join(name);
            self.entry(&mut st, rel)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let r = self.live().and_then(|st| {
            let rel = Self::path_of(&st, ino)?;
            let meta = std::fs::symlink_metadata(self.backing(&rel)).map_err(errno)?;
            Ok(self.attr(&st, ino.0, &meta))
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, ino)?;
            if let Some(m) = mode {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(self.backing(&rel), std::fs::Permissions::from_mode(m))
                    .map_err(errno)?;
            }
            // A truncate is a data change: durable only with the next fsync.
            if let Some(len) = size {
                self.cached(&mut st, ino.0)?.pending.set_len(len);
            }
            let meta = std::fs::symlink_metadata(self.backing(&rel)).map_err(errno)?;
            Ok(self.attr(&st, ino.0, &meta))
        });
        match r {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, parent)?.join(name);
            std::fs::DirBuilder::new()
                .mode(mode & !umask)
                .create(self.backing(&rel))
                .map_err(errno)?;
            self.entry(&mut st, rel)
        });
        match r {
            Ok(a) => reply.entry(&TTL, &a, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, std::fs::remove_file, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, std::fs::remove_dir, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = self.live().and_then(|mut st| {
            // RENAME_NOREPLACE / RENAME_EXCHANGE are not needed by the
            // stores under test; refusing them beats doing them wrong.
            if flags != RenameFlags::empty() {
                return Err(Errno::EINVAL);
            }
            let from = Self::path_of(&st, parent)?.join(name);
            let to = Self::path_of(&st, newparent)?.join(newname);
            std::fs::rename(self.backing(&from), self.backing(&to)).map_err(errno)?;
            Self::drop_name(&mut st, &to);
            Self::move_names(&mut st, &from, &to);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = self
            .live()
            .and_then(|mut st| self.cached(&mut st, ino.0).map(|_| ()));
        match r {
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, parent)?.join(name);
            let mut opts = OpenOptions::new();
            opts.read(true).write(true).mode(mode & !umask);
            if flags & libc::O_EXCL != 0 {
                opts.create_new(true);
            } else {
                opts.create(true);
            }
            let file = opts.open(self.backing(&rel)).map_err(errno)?;
            let meta = file.metadata().map_err(errno)?;
            let ino = Self::intern(&mut st, rel, &meta);
            // An existing file keeps its unsynced writes; O_TRUNC is one more.
            let cached = st.files.entry(ino).or_insert(Cached {
                file,
                pending: Pending::default(),
            });
            if flags & libc::O_TRUNC != 0 {
                cached.pending.set_len(0);
            }
            Ok(self.attr(&st, ino, &meta))
        });
        match r {
            Ok(a) => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(0),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let r = self.live().and_then(|mut st| {
            let c = self.cached(&mut st, ino.0)?;
            c.pending.read(&c.file, offset, size as usize).map_err(errno)
        });
        match r {
            Ok(d) => reply.data(&d),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = self.live().and_then(|mut st| {
            self.cached(&mut st, ino.0)?.pending.write(offset, data);
            self.power.unsynced.fetch_add(data.len() as u64, Ordering::SeqCst);
            Ok(())
        });
        match r {
            // FUSE writes are at most max_write (128 KiB by default) long.
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() makes nothing durable.
        match self.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let r = self.live().and_then(|mut st| {
            if self.fsync_lies {
                return Ok(());
            }
            let c = self.cached(&mut st, ino.0)?;
            let bytes = c.pending.bytes() as u64;
            c.pending.apply(&c.file).map_err(errno)?;
            self.power.unsynced.fetch_sub(bytes, Ordering::SeqCst);
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.live() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let r = self.live().and_then(|mut st| {
            let rel = Self::path_of(&st, ino)?;
            let mut names: Vec<(u64, FileType, std::ffi::OsString)> = vec![
                (ino.0, FileType::Directory, ".".into()),
                (ino.0, FileType::Directory, "..".into()),
            ];
            for e in std::fs::read_dir(self.backing(&rel)).map_err(errno)? {
                let e = e.map_err(errno)?;
                let meta = e.metadata().map_err(errno)?;
                let child = Self::intern(&mut st, rel.join(e.file_name()), &meta);
                names.push((child, kind_of(&meta), e.file_name()));
            }
            Ok(names)
        });
        match r {
            Ok(names) => {
                for (i, (child, kind, name)) in names.into_iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        // Directory operations are durable at once (see the module doc).
        match self.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        if self.power.is_cut() {
            return reply.error(Errno::EIO);
        }
        // Room is whatever the backing filesystem has.
        reply.statfs(1 << 30, 1 << 29, 1 << 29, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        match self.live() {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
