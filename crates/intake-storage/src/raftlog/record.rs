//! The on-disk record of the Raft log engine: framing, checksum and the
//! operations a record carries. Pure code, no I/O, so every rule of the
//! format is unit-tested here.
//!
//! The writer writes *rounds*: a round header (`magic: u64 | seq: u64 |
//! len: u32 | crc32 of the records: u32 | crc32 of the header so far: u32`)
//! and then `len` bytes of records, all with one write and one `fdatasync`.
//! A record is `len: u32 LE | crc32 of body: u32 LE | body`, and the body is
//! `kind: u8 | shard: u32 LE | payload`.
//!
//! Rounds are what tell a torn tail from damage. Round `n + 1` is written
//! only after round `n`'s `fdatasync` returned, so a whole, valid round
//! after a bad one proves the bad one had been acknowledged: that is damage,
//! and the log must not quietly restart from before it. A bad round with
//! nothing valid after it is the round a crash cut short.

use crate::ShardId;

/// Bytes before the body: length and checksum.
pub const HEADER_BYTES: usize = 8;

/// No record is larger than this. Entries are bounded far below it
/// (`MAX_ENTRY_BYTES`); a larger length in a header can only be garbage.
pub const MAX_BODY_BYTES: usize = 16 << 20;

/// Marks the start of a round ("INTKRND1").
pub const ROUND_MAGIC: [u8; 8] = *b"INTKRND1";

/// Bytes of a round header.
pub const ROUND_HEADER_BYTES: usize = 28;

/// Reserves a round header at the end of `buf`; returns where it starts.
/// Records for the round follow; [`finish_round`] fills the header in.
pub fn begin_round(buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; ROUND_HEADER_BYTES]);
    start
}

/// Writes the header of the round that starts at `start` and runs to the
/// end of `buf`.
pub fn finish_round(buf: &mut [u8], start: usize, seq: u64) {
    let body = start + ROUND_HEADER_BYTES;
    let len = (buf.len() - body) as u32;
    let crc = crc32fast::hash(&buf[body..]);
    let h = &mut buf[start..body];
    h[0..8].copy_from_slice(&ROUND_MAGIC);
    h[8..16].copy_from_slice(&seq.to_le_bytes());
    h[16..20].copy_from_slice(&len.to_le_bytes());
    h[20..24].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&hcrc.to_le_bytes());
}

/// A whole, valid round: its sequence number and where its records are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub seq: u64,
    /// Offset of the first record, from the round's start.
    pub body_offset: usize,
    pub body_len: usize,
}

impl Round {
    pub fn framed_len(&self) -> usize {
        self.body_offset + self.body_len
    }
}

/// Decodes the round at the start of `buf`, checking both checksums.
pub fn decode_round(buf: &[u8]) -> Result<Round, BadRecord> {
    let h = buf.get(..ROUND_HEADER_BYTES).ok_or(BadRecord::Short)?;
    if h[0..8] != ROUND_MAGIC {
        return Err(BadRecord::Body("no round header"));
    }
    let stored_h = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    let computed_h = crc32fast::hash(&h[0..24]);
    if stored_h != computed_h {
        return Err(BadRecord::Checksum {
            stored: stored_h,
            computed: computed_h,
        });
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[8..16]);
    let len = u32::from_le_bytes([h[16], h[17], h[18], h[19]]) as usize;
    let stored = u32::from_le_bytes([h[20], h[21], h[22], h[23]]);
    let body = buf
        .get(ROUND_HEADER_BYTES..ROUND_HEADER_BYTES + len)
        .ok_or(BadRecord::Short)?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(BadRecord::Checksum { stored, computed });
    }
    Ok(Round {
        seq: u64::from_le_bytes(seq),
        body_offset: ROUND_HEADER_BYTES,
        body_len: len,
    })
}

/// The offset of the first whole, valid round that starts after `from`, if
/// any. Used only when a round is bad, to tell damage from a torn tail.
pub fn find_round_after(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from + 1;
    while at + ROUND_HEADER_BYTES <= buf.len() {
        let next = buf[at..]
            .windows(ROUND_MAGIC.len())
            .position(|w| w == ROUND_MAGIC)?;
        at += next;
        if decode_round(&buf[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Which value a [`Op::Meta`] record sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaKind {
    Vote,
    Committed,
    Purged,
}

impl MetaKind {
    pub const ALL: [MetaKind; 3] = [MetaKind::Vote, MetaKind::Committed, MetaKind::Purged];

    fn code(self) -> u8 {
        match self {
            MetaKind::Vote => 1,
            MetaKind::Committed => 2,
            MetaKind::Purged => 3,
        }
    }

    fn from_code(c: u8) -> Option<MetaKind> {
        match c {
            1 => Some(MetaKind::Vote),
            2 => Some(MetaKind::Committed),
            3 => Some(MetaKind::Purged),
            _ => None,
        }
    }
}

/// One change to one shard's log. Values are opaque bytes: the engine knows
/// indexes, not openraft's types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The entry at `index`; replaces any older entry at that index.
    Entry { index: u64, bytes: Vec<u8> },
    /// Sets (`Some`) or clears (`None`) a metadata value.
    Meta { kind: MetaKind, value: Option<Vec<u8>> },
    /// Removes every entry at `index` and above (a conflicting suffix).
    TruncateFrom { index: u64 },
    /// Removes every entry at `index` and below (behind a snapshot).
    PurgeTo { index: u64 },
    /// Written at the start of each segment for every shard: only entries in
    /// `first..=last` are live (`None`: no entries). Older segments may then
    /// lose their dead parts without a later scan reviving them.
    Bounds { first: Option<u64>, last: Option<u64> },
}

const KIND_ENTRY: u8 = 1;
const KIND_META: u8 = 2;
const KIND_TRUNCATE: u8 = 3;
const KIND_PURGE: u8 = 4;
const KIND_BOUNDS: u8 = 5;

/// Appends the framed record of `(shard, op)` to `out`.
pub fn encode(shard: ShardId, op: &Op, out: &mut Vec<u8>) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    let body = out.len();
    match op {
        Op::Entry { index, bytes } => {
            out.push(KIND_ENTRY);
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(bytes);
        }
        Op::Meta { kind, value } => {
            out.push(KIND_META);
            out.extend_from_slice(&shard.to_le_bytes());
            out.push(kind.code());
            match value {
                Some(v) => {
                    out.push(1);
                    out.extend_from_slice(v);
                }
                None => out.push(0),
            }
        }
        Op::TruncateFrom { index } => {
            out.push(KIND_TRUNCATE);
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
        }
        Op::PurgeTo { index } => {
            out.push(KIND_PURGE);
            out.extend_from_slice(&shard.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
        }
        Op::Bounds { first, last } => {
            out.push(KIND_BOUNDS);
            out.extend_from_slice(&shard.to_le_bytes());
            put_opt(out, *first);
            put_opt(out, *last);
        }
    }
    let len = (out.len() - body) as u32;
    let crc = crc32fast::hash(&out[body..]);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_opt(out: &mut Vec<u8>, v: Option<u64>) {
    match v {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(&v.to_le_bytes());
        }
        None => out.push(0),
    }
}

/// Why bytes are not a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadRecord {
    #[error("the segment ends inside a record header or body")]
    Short,
    #[error("record length {0} is zero or above the limit")]
    Length(u32),
    #[error("record checksum does not match (stored {stored:#010x}, computed {computed:#010x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("record body is malformed: {0}")]
    Body(&'static str),
}

/// A decoded record and where its entry bytes sit (for entries, so that the
/// engine can index them without keeping a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub shard: ShardId,
    pub op: Op,
    /// Total framed length, to find the next record.
    pub framed_len: usize,
    /// For an entry: offset of its bytes from the record's start, and their length.
    pub entry_span: Option<(usize, usize)>,
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<Decoded, BadRecord> {
    let header = buf.get(..HEADER_BYTES).ok_or(BadRecord::Short)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let stored = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len == 0 || len as usize > MAX_BODY_BYTES {
        return Err(BadRecord::Length(len));
    }
    let body = buf
        .get(HEADER_BYTES..HEADER_BYTES + len as usize)
        .ok_or(BadRecord::Short)?;
    let computed = crc32fast::hash(body);
    if computed != stored {
        return Err(BadRecord::Checksum { stored, computed });
    }
    let mut r = Reader { buf: body, pos: 0 };
    let kind = r.u8()?;
    let shard = r.u32()?;
    let mut entry_span = None;
    let op = match kind {
        KIND_ENTRY => {
            let index = r.u64()?;
            let bytes = r.rest().to_vec();
            entry_span = Some((HEADER_BYTES + r.pos - bytes.len(), bytes.len()));
            Op::Entry { index, bytes }
        }
        KIND_META => {
            let kind = MetaKind::from_code(r.u8()?).ok_or(BadRecord::Body("unknown meta kind"))?;
            let value = match r.u8()? {
                0 => None,
                1 => Some(r.rest().to_vec()),
                _ => return Err(BadRecord::Body("bad meta presence flag")),
            };
            Op::Meta { kind, value }
        }
        KIND_TRUNCATE => Op::TruncateFrom { index: r.u64()? },
        KIND_PURGE => Op::PurgeTo { index: r.u64()? },
        KIND_BOUNDS => Op::Bounds {
            first: r.opt()?,
            last: r.opt()?,
        },
        _ => return Err(BadRecord::Body("unknown record kind")),
    };
    if !r.done() {
        return Err(BadRecord::Body("trailing bytes"));
    }
    Ok(Decoded {
        shard,
        op,
        framed_len: HEADER_BYTES + len as usize,
        entry_span,
    })
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], BadRecord> {
        let s = self
            .buf
            .get(self.pos..self.pos + n)
            .ok_or(BadRecord::Body("body too short"))?;
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, BadRecord> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, BadRecord> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, BadRecord> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn opt(&mut self) -> Result<Option<u64>, BadRecord> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.u64()?)),
            _ => Err(BadRecord::Body("bad option flag")),
        }
    }
    fn rest(&mut self) -> &[u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }
    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_ops() -> Vec<Op> {
        vec![
            Op::Entry {
                index: 7,
                bytes: b"hello".to_vec(),
            },
            Op::Entry {
                index: u64::MAX,
                bytes: Vec::new(),
            },
            Op::Meta {
                kind: MetaKind::Vote,
                value: Some(vec![1, 2, 3]),
            },
            Op::Meta {
                kind: MetaKind::Committed,
                value: None,
            },
            Op::TruncateFrom { index: 3 },
            Op::PurgeTo { index: 9 },
            Op::Bounds {
                first: Some(1),
                last: None,
            },
        ]
    }

    #[test]
    fn every_op_round_trips_back_to_back() {
        let mut buf = Vec::new();
        for (i, op) in all_ops().iter().enumerate() {
            encode(i as u32, op, &mut buf);
        }
        let mut pos = 0;
        for (i, op) in all_ops().iter().enumerate() {
            let d = decode(&buf[pos..]).unwrap();
            assert_eq!(d.shard, i as u32);
            assert_eq!(&d.op, op);
            if let (Some((off, len)), Op::Entry { bytes, .. }) = (d.entry_span, op) {
                assert_eq!(&buf[pos + off..pos + off + len], &bytes[..]);
            }
            pos += d.framed_len;
        }
        assert_eq!(pos, buf.len());
    }

    #[test]
    fn a_cut_record_is_short_at_every_length() {
        let mut buf = Vec::new();
        encode(1, &all_ops()[0], &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Err(BadRecord::Short), "cut at {cut}");
        }
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        let mut buf = Vec::new();
        encode(1, &all_ops()[2], &mut buf);
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip at byte {byte} bit {bit}");
            }
        }
    }

    fn round_of(seq: u64, ops: &[Op]) -> Vec<u8> {
        let mut buf = Vec::new();
        let start = begin_round(&mut buf);
        for op in ops {
            encode(0, op, &mut buf);
        }
        finish_round(&mut buf, start, seq);
        buf
    }

    #[test]
    fn rounds_round_trip_and_any_flipped_bit_is_caught() {
        let buf = round_of(41, &all_ops());
        let r = decode_round(&buf).unwrap();
        assert_eq!((r.seq, r.framed_len()), (41, buf.len()));
        for byte in 0..buf.len() {
            let mut b = buf.clone();
            b[byte] ^= 0x10;
            assert!(decode_round(&b).is_err(), "flip at byte {byte}");
        }
    }

    #[test]
    fn a_valid_round_after_a_bad_one_is_found() {
        let mut buf = round_of(1, &all_ops());
        let second = buf.len();
        buf.extend(round_of(2, &all_ops()[..2]));
        buf[10] ^= 1; // damage the first round's header
        assert!(decode_round(&buf).is_err());
        assert_eq!(find_round_after(&buf, 0), Some(second));
        // A torn last round: nothing valid after it.
        let mut torn = round_of(3, &all_ops());
        torn.truncate(torn.len() - 5);
        assert_eq!(find_round_after(&torn, 0), None);
    }

    #[test]
    fn zeros_are_not_a_record() {
        assert_eq!(decode(&[0u8; 64]), Err(BadRecord::Length(0)));
    }
}
