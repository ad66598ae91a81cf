//! Opening the log: replay every segment in order into the index.
//!
//! A bad record in the newest segment is a torn tail: the last round was cut
//! by a crash before its fsync finished, so nobody was told it was durable.
//! It is cut off (as etcd's WAL repairs its last file). A bad record in any
//! older segment is damage to data that was acknowledged: the node refuses to
//! start rather than come back with an older log and, perhaps, an older vote.

use std::path::Path;

use super::LogEngineError;
use super::record::{self, Op};
use super::segment;
use super::state::{IndexState, Loc};

pub struct Recovered {
    pub index: IndexState,
    pub segments: Vec<u64>,
}

pub fn replay(dir: &Path) -> Result<Recovered, LogEngineError> {
    let segments = segment::list(dir)?;
    let mut index = IndexState::default();
    for (n, id) in segments.iter().enumerate() {
        let newest = n + 1 == segments.len();
        let bytes = std::fs::read(segment::path(dir, *id))?;
        let mut pos = 0usize;
        while pos < bytes.len() {
            match record::decode(&bytes[pos..]) {
                Ok(d) => {
                    let loc = d.entry_span.map(|(off, len)| Loc {
                        segment: *id,
                        offset: (pos + off) as u64,
                        len: len as u32,
                    });
                    let op = match d.op {
                        // The index keeps locations, not copies.
                        Op::Entry { index, .. } => Op::Entry {
                            index,
                            bytes: Vec::new(),
                        },
                        other => other,
                    };
                    index.apply(d.shard, &op, loc);
                    pos += d.framed_len;
                }
                Err(bad) if newest => {
                    tracing::warn!(
                        segment = id,
                        offset = pos,
                        cut_bytes = bytes.len() - pos,
                        reason = %bad,
                        "raft log: cutting a torn tail left by a crash before its fsync"
                    );
                    segment::truncate(dir, *id, pos as u64)?;
                    break;
                }
                Err(bad) => {
                    return Err(LogEngineError::Corrupt {
                        segment: *id,
                        offset: pos as u64,
                        reason: bad.to_string(),
                    });
                }
            }
        }
    }
    Ok(Recovered { index, segments })
}
