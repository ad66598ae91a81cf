//! The sink's JSON-lines file: durable appends, and a reload that repairs a
//! line cut short by a crash.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::{SinkError, SinkRecord};

pub(crate) struct AppendFile {
    path: PathBuf,
    file: File,
    len: u64,
}

/// Reads every complete record of a sink file (for checks after a run). A
/// final line without its newline is ignored: it was never acknowledged.
pub fn read_records(path: &Path) -> Result<Vec<SinkRecord>, SinkError> {
    let file = File::open(path).map_err(|source| SinkError::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(scan(path, file)?.0)
}

/// The complete records and the byte length they span.
fn scan(path: &Path, file: File) -> Result<(Vec<SinkRecord>, u64), SinkError> {
    let io_err = |source| SinkError::Io {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut good_len = 0u64;
    let mut line = String::new();
    let mut n = 0usize;
    loop {
        line.clear();
        let read = reader.read_line(&mut line).map_err(io_err)?;
        if read == 0 {
            break;
        }
        n += 1;
        if !line.ends_with('\n') {
            tracing::warn!(path = %path.display(), line = n, "dropping a record cut short by a crash");
            break;
        }
        let record: SinkRecord = serde_json::from_str(line.trim_end()).map_err(|e| SinkError::Corrupt {
            path: path.to_owned(),
            line: n,
            reason: e.to_string(),
        })?;
        records.push(record);
        good_len += read as u64;
    }
    Ok((records, good_len))
}

impl AppendFile {
    pub(crate) fn open(path: &Path) -> Result<(AppendFile, Vec<SinkRecord>), SinkError> {
        let io_err = |source| SinkError::Io {
            path: path.to_owned(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let (records, len) = scan(path, file.try_clone().map_err(io_err)?)?;
        if file.metadata().map_err(io_err)?.len() != len {
            file.set_len(len).map_err(io_err)?;
            file.sync_all().map_err(io_err)?;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The file's directory entry must be durable too.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok((
            AppendFile {
                path: path.to_owned(),
                file,
                len,
            },
            records,
        ))
    }

    /// Appends `records` and syncs. On failure the file is cut back to its
    /// previous length, so an unacknowledged line never stays behind to be
    /// written a second time by the redelivery.
    pub(crate) fn append(&mut self, records: &[SinkRecord]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(records.len() * 256);
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let result = (|| {
            self.file.seek(SeekFrom::Start(self.len))?;
            self.file.write_all(&buf)?;
            self.file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                if let Err(cut) = self.file.set_len(self.len) {
                    tracing::error!(path = %self.path.display(), error = %cut, "could not cut back a failed append");
                }
                Err(e)
            }
        }
    }
}
