//! Ticket ids: short, unique across the cluster, stable across retries and easy
//! to read aloud over the phone.
//!
//! A ticket id is `SHARD-NUMBER` followed by one check symbol, all in Crockford
//! base32 (no I, L, O or U; reading is case-insensitive and forgives I/L for 1
//! and O for 0). NUMBER packs the Raft log index of the entry that created the
//! ticket with the complaint's position inside that entry, so the id alone
//! locates the shard and the entry, and a committed index can never be reused.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Complaints per Raft entry are numbered in 8 bits.
pub const MAX_ITEMS_PER_ENTRY: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TicketId {
    pub shard: u32,
    pub log_index: u64,
    pub item: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketIdError {
    #[error("ticket id must look like 3-1ZK4QW (shard, dash, number and check symbol)")]
    Shape,
    #[error("ticket id has a character that is not Crockford base32: {0:?}")]
    Symbol(char),
    #[error("ticket id's check symbol does not match: a symbol was misread or mistyped")]
    Check,
    #[error("ticket id is out of range")]
    Range,
}

impl TicketId {
    pub fn new(shard: u32, log_index: u64, item: u8) -> Self {
        Self {
            shard,
            log_index,
            item,
        }
    }

    fn number(&self) -> u128 {
        (u128::from(self.log_index) << 8) | u128::from(self.item)
    }
}

fn encode(mut n: u128, out: &mut Vec<u8>) {
    let start = out.len();
    loop {
        out.push(ALPHABET[(n % 32) as usize]);
        n /= 32;
        if n == 0 {
            break;
        }
    }
    out[start..].reverse();
}

fn decode_symbol(c: char) -> Result<u128, TicketIdError> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        other => other,
    };
    ALPHABET
        .iter()
        .position(|&a| a as char == c)
        .map(|p| p as u128)
        .ok_or(TicketIdError::Symbol(c))
}

/// Sum mod 32 with odd weights: an odd weight is invertible mod 32, so any
/// single misread symbol changes the check; swaps of neighbours are caught
/// unless the two symbols differ by exactly 16.
fn check_symbol(symbols: &[u8]) -> u8 {
    let mut sum: u64 = 0;
    for (i, s) in symbols.iter().filter(|s| **s != b'-').enumerate() {
        let v = ALPHABET.iter().position(|a| a == s).unwrap_or(0) as u64;
        sum += v * (2 * i as u64 + 1);
    }
    ALPHABET[(sum % 32) as usize]
}

impl fmt::Display for TicketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = Vec::with_capacity(16);
        encode(u128::from(self.shard), &mut s);
        s.push(b'-');
        encode(self.number(), &mut s);
        let check = check_symbol(&s);
        s.push(check);
        // Only ASCII from ALPHABET and '-' was pushed.
        f.write_str(std::str::from_utf8(&s).map_err(|_| fmt::Error)?)
    }
}

impl FromStr for TicketId {
    type Err = TicketIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (shard_part, rest) = s.split_once('-').ok_or(TicketIdError::Shape)?;
        if shard_part.is_empty() || rest.len() < 2 || shard_part.len() > 7 || rest.len() > 24 {
            return Err(TicketIdError::Shape);
        }
        let mut canonical = Vec::with_capacity(s.len());
        let mut shard: u128 = 0;
        for c in shard_part.chars() {
            let v = decode_symbol(c)?;
            shard = shard * 32 + v;
            canonical.push(ALPHABET[v as usize]);
        }
        canonical.push(b'-');
        // Split at the last *character*, not the last byte: an id typed with
        // a multi-byte character at its end must be an error, not a slice
        // inside that character (which panics).
        let (check_at, check) = rest.char_indices().next_back().ok_or(TicketIdError::Shape)?;
        let number_part = &rest[..check_at];
        if number_part.is_empty() {
            return Err(TicketIdError::Shape);
        }
        let mut number: u128 = 0;
        for c in number_part.chars() {
            let v = decode_symbol(c)?;
            number = number.checked_mul(32).ok_or(TicketIdError::Range)? + v;
            canonical.push(ALPHABET[v as usize]);
        }
        let check = ALPHABET[decode_symbol(check)? as usize];
        if check != check_symbol(&canonical) {
            return Err(TicketIdError::Check);
        }
        let shard = u32::try_from(shard).map_err(|_| TicketIdError::Range)?;
        let log_index = u64::try_from(number >> 8).map_err(|_| TicketIdError::Range)?;
        Ok(TicketId {
            shard,
            log_index,
            item: (number & 0xff) as u8,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for (shard, idx, item) in [
            (0, 0, 0),
            (0, 1, 0),
            (3, 12345, 7),
            (7, u64::MAX >> 1, 255),
            (1000, 1, 1),
        ] {
            let id = TicketId::new(shard, idx, item);
            let text = id.to_string();
            assert_eq!(text.parse::<TicketId>(), Ok(id), "{text}");
            assert_eq!(text.to_lowercase().parse::<TicketId>(), Ok(id), "{text}");
        }
    }

    #[test]
    fn is_short() {
        // A shard after a busy year: about 24 M tickets a year in one city.
        let id = TicketId::new(5, 24_000_000, 3);
        assert!(id.to_string().len() <= 10, "{id}");
    }

    #[test]
    fn forgives_confusable_letters() {
        let id = TicketId::new(1, 1, 0);
        let text = id.to_string().replace('1', "l").replace('0', "o");
        assert_eq!(text.parse::<TicketId>(), Ok(id));
    }

    #[test]
    fn catches_a_misread_symbol() {
        let id = TicketId::new(2, 98_765, 4).to_string();
        let bytes = id.as_bytes();
        for pos in 0..bytes.len() {
            if bytes[pos] == b'-' {
                continue;
            }
            for &sub in ALPHABET.iter() {
                if sub == bytes[pos] {
                    continue;
                }
                let mut wrong = bytes.to_vec();
                wrong[pos] = sub;
                let wrong = String::from_utf8(wrong).unwrap();
                assert!(wrong.parse::<TicketId>().is_err(), "{id} -> {wrong} accepted");
            }
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-",
            "3",
            "3-",
            "3-A",
            "x-12",
            "3-12!4",
            "99999999-12",
            "3-ZZZZZZZZZZZZZZZZZZZZZZZZZZZZ",
        ] {
            assert!(bad.parse::<TicketId>().is_err(), "{bad:?}");
        }
    }

    /// Multi-byte characters anywhere, above all at the end where the check
    /// symbol is cut off, are errors and never a panic.
    #[test]
    fn rejects_multi_byte_characters_without_panicking() {
        for bad in [
            "0-💥",
            "0-1Ä",
            "0-Ä",
            "Ä-12",
            "0-1\u{10FFFF}",
            "💥-💥💥",
            "0-12é4",
            "0-\u{301}1",
            "１-12",
            "0-1２",
        ] {
            assert!(bad.parse::<TicketId>().is_err(), "{bad:?}");
        }
    }
}
