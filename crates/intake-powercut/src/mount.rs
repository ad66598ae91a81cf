//! Mounting a [`PowercutFs`]: the options both the binary and the tests use.

use std::path::Path;

use fuser::{Config, MountOption, SessionACL};

use crate::fs::{Power, PowercutFs};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("backing directory {0}: {1}")]
    Backing(String, std::io::Error),
    #[error("mounting on {0} (needs /dev/fuse and fusermount3, Debian package fuse3): {1}")]
    Mount(String, std::io::Error),
}

/// FUSE options: no kernel writeback cache is ever negotiated (fuser does
/// not ask for it) and files are opened direct-io, so every write of the
/// process under test reaches the filesystem; root and the owner may use it
/// (the nodes run as the user who mounts).
pub fn mount_config() -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName("intake-powercut".into()),
        MountOption::Subtype("intake-powercut".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
    ];
    c.acl = SessionACL::Owner;
    c
}

/// Mounts `backing` on `mountpoint`; the session serves it once run.
pub fn session(
    backing: &Path,
    mountpoint: &Path,
    power: Power,
    fsync_lies: bool,
) -> Result<fuser::Session<PowercutFs>, MountError> {
    let mut fs =
        PowercutFs::new(backing, power).map_err(|e| MountError::Backing(backing.display().to_string(), e))?;
    if fsync_lies {
        fs = fs.with_lying_fsync();
    }
    fuser::Session::new(fs, mountpoint, &mount_config())
        .map_err(|e| MountError::Mount(mountpoint.display().to_string(), e))
}

/// Mounts and serves on a background thread until the returned session is
/// dropped (which unmounts).
pub fn spawn(
    backing: &Path,
    mountpoint: &Path,
    power: Power,
) -> Result<fuser::BackgroundSession, MountError> {
    session(backing, mountpoint, power, false)?
        .spawn()
        .map_err(|e| MountError::Mount(mountpoint.display().to_string(), e))
}
