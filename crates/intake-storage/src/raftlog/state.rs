//! The engine's in-memory index: for each shard, where each live entry sits
//! and the metadata values; for each segment, how many live entries it holds.
//! Pure bookkeeping, shared by recovery (replaying records) and the writer
//! (applying a round), so both follow exactly the same rules.

use std::collections::{BTreeMap, HashMap};

use super::record::{MetaKind, Op};
use crate::ShardId;

/// Where an entry's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug, Default, Clone)]
pub struct ShardLog {
    pub entries: BTreeMap<u64, Loc>,
    pub meta: BTreeMap<MetaKind, Vec<u8>>,
}

impl ShardLog {
    pub fn first(&self) -> Option<u64> {
        self.entries.keys().next().copied()
    }
    pub fn last(&self) -> Option<u64> {
        self.entries.keys().next_back().copied()
    }
}

#[derive(Debug, Default)]
pub struct IndexState {
    pub shards: BTreeMap<ShardId, ShardLog>,
    /// Live entries per segment; a segment at zero (and not the newest) can go.
    pub live: HashMap<u64, u64>,
}

impl IndexState {
    /// Applies one record. `loc` is given for entries.
    pub fn apply(&mut self, shard: ShardId, op: &Op, loc: Option<Loc>) {
        let log = self.shards.entry(shard).or_default();
        match op {
            Op::Entry { index, .. } => {
                if let Some(loc) = loc {
                    *self.live.entry(loc.segment).or_default() += 1;
                    if let Some(old) = log.entries.insert(*index, loc) {
                        dec(&mut self.live, old.segment);
                    }
                }
            }
            Op::Meta { kind, value } => match value {
                Some(v) => {
                    log.meta.insert(*kind, v.clone());
                }
                None => {
                    log.meta.remove(kind);
                }
            },
            Op::TruncateFrom { index } => {
                for (_, old) in log.entries.split_off(index) {
                    dec(&mut self.live, old.segment);
                }
            }
            Op::PurgeTo { index } => {
                let keep = match index.checked_add(1) {
                    Some(next) => log.entries.split_off(&next),
                    None => BTreeMap::new(),
                };
                for (_, old) in std::mem::replace(&mut log.entries, keep) {
                    dec(&mut self.live, old.segment);
                }
            }
            Op::Bounds { first, last } => match (first, last) {
                (Some(first), Some(last)) => {
                    let mut mid = log.entries.split_off(first);
                    let above = match last.checked_add(1) {
                        Some(next) => mid.split_off(&next),
                        None => BTreeMap::new(),
                    };
                    let below = std::mem::replace(&mut log.entries, mid);
                    for (_, old) in below.into_iter().chain(above) {
                        dec(&mut self.live, old.segment);
                    }
                }
                _ => {
                    for (_, old) in std::mem::take(&mut log.entries) {
                        dec(&mut self.live, old.segment);
                    }
                }
            },
        }
    }

    /// The records that restate every shard's state at the start of a new
    /// segment: its bounds and its metadata.
    pub fn checkpoint(&self) -> Vec<(ShardId, Op)> {
        let mut out = Vec::new();
        for (shard, log) in &self.shards {
            out.push((
                *shard,
                Op::Bounds {
                    first: log.first(),
                    last: log.last(),
                },
            ));
            for (kind, value) in &log.meta {
                out.push((
                    *shard,
                    Op::Meta {
                        kind: *kind,
                        value: Some(value.clone()),
                    },
                ));
            }
        }
        out
    }
}

fn dec(live: &mut HashMap<u64, u64>, segment: u64) {
    if let Some(n) = live.get_mut(&segment) {
        *n = n.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64) -> Op {
        Op::Entry {
            index,
            bytes: Vec::new(),
        }
    }

    fn at(segment: u64, offset: u64) -> Option<Loc> {
        Some(Loc {
            segment,
            offset,
            len: 1,
        })
    }

    #[test]
    fn overwrite_truncate_and_purge_keep_live_counts_exact() {
        let mut s = IndexState::default();
        for i in 1..=10 {
            s.apply(0, &entry(i), at(1, i));
        }
        assert_eq!(s.live[&1], 10);
        // A new leader overwrites 8..=10 in segment 2.
        s.apply(0, &Op::TruncateFrom { index: 8 }, None);
        for i in 8..=10 {
            s.apply(0, &entry(i), at(2, i));
        }
        assert_eq!((s.live[&1], s.live[&2]), (7, 3));
        s.apply(0, &Op::PurgeTo { index: 7 }, None);
        assert_eq!((s.live[&1], s.live[&2]), (0, 3));
        assert_eq!((s.shards[&0].first(), s.shards[&0].last()), (Some(8), Some(10)));
    }

    #[test]
    fn bounds_drop_what_a_deleted_segment_had_superseded() {
        // Segment 1 holds 1..=5; later (in a segment since deleted) the log
        // was truncated to 3 and purged to 2. Replaying segment 1 and then the
        // checkpoint of the next must leave exactly 3.
        let mut s = IndexState::default();
        for i in 1..=5 {
            s.apply(0, &entry(i), at(1, i));
        }
        s.apply(
            0,
            &Op::Bounds {
                first: Some(3),
                last: Some(3),
            },
            None,
        );
        assert_eq!(s.shards[&0].entries.keys().copied().collect::<Vec<_>>(), vec![3]);
        assert_eq!(s.live[&1], 1);
        s.apply(
            0,
            &Op::Bounds {
                first: None,
                last: None,
            },
            None,
        );
        assert!(s.shards[&0].entries.is_empty());
        assert_eq!(s.live[&1], 0);
    }

    #[test]
    fn a_checkpoint_replayed_alone_restores_bounds_and_meta() {
        let mut s = IndexState::default();
        s.apply(
            4,
            &Op::Meta {
                kind: MetaKind::Vote,
                value: Some(vec![9]),
            },
            None,
        );
        s.apply(4, &entry(12), at(1, 0));
        let cp = s.checkpoint();
        let mut t = IndexState::default();
        for (shard, op) in &cp {
            t.apply(*shard, op, None);
        }
        assert_eq!(t.shards[&4].meta[&MetaKind::Vote], vec![9]);
        // Bounds alone restore no entries: they only limit what earlier
        // segments replayed.
        assert!(t.shards[&4].entries.is_empty());
    }
}
