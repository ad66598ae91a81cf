//! Opening the log: replay every round of every segment, in order, into the
//! index.
//!
//! A bad round in the newest segment with no valid round after it is a torn
//! tail: the last round was cut by a crash before its fsync finished, so
//! nobody was told it was durable, and it is cut off. A bad round followed
//! by a valid one, or a bad round in an older segment, or a valid round whose
//! records do not decode, is damage to data that was acknowledged (see
//! `record.rs`): the node refuses to start rather than come back with an
//! older log and, perhaps, an older vote.

use std::path::Path;

use super::LogEngineError;
use super::record::{self, Op};
use super::segment;
use super::state::{IndexState, Loc};

pub struct Recovered {
    pub index: IndexState,
    pub segments: Vec<u64>,
    /// The sequence number the next round gets.
    pub next_seq: u64,
}

pub fn replay(dir: &Path) -> Result<Recovered, LogEngineError> {
    let segments = segment::list(dir)?;
    let mut index = IndexState::default();
    let mut last_seq: Option<u64> = None;
    for (n, id) in segments.iter().enumerate() {
        let newest = n + 1 == segments.len();
        let bytes = std::fs::read(segment::path(dir, *id))?;
        let corrupt = |offset: usize, reason: String| LogEngineError::Corrupt {
            segment: *id,
            offset: offset as u64,
            reason,
        };
        let mut pos = 0usize;
        let mut prev_in_segment: Option<u64> = None;
        while pos < bytes.len() {
            let round = match record::decode_round(&bytes[pos..]) {
                Ok(r) => r,
                Err(bad) => {
                    if let Some(valid) = record::find_round_after(&bytes, pos) {
                        return Err(corrupt(
                            pos,
                            format!("{bad}, and a whole round follows at byte {valid}"),
                        ));
                    }
                    if !newest {
                        return Err(corrupt(pos, format!("{bad} in a segment that was complete")));
                    }
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
            };
            if prev_in_segment.is_some_and(|p| round.seq != p + 1) || last_seq.is_some_and(|l| round.seq <= l)
            {
                return Err(corrupt(pos, format!("round {} is out of sequence", round.seq)));
            }
            let body_start = pos + round.body_offset;
            let body = &bytes[body_start..body_start + round.body_len];
            let mut at = 0usize;
            while at < body.len() {
                let d = record::decode(&body[at..])
                    .map_err(|bad| corrupt(body_start + at, format!("record in a valid round: {bad}")))?;
                let loc = d.entry_span.map(|(off, len)| Loc {
                    segment: *id,
                    offset: (body_start + at + off) as u64,
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
                at += d.framed_len;
            }
            prev_in_segment = Some(round.seq);
            last_seq = Some(round.seq);
            pos += round.framed_len();
        }
    }
    Ok(Recovered {
        index,
        segments,
        next_seq: last_seq.map_or(1, |s| s + 1),
    })
}
