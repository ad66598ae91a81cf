//! Incident grouping: complaints of one district and category whose texts
//! are near-duplicates, close in time, are one incident (fifty calls about
//! one burst main are one job for the water company, not fifty).
//!
//! A text's fingerprint is a MinHash signature of its character 3-shingles
//! (characters, not words or bytes, so Chinese, which has no spaces, works
//! as well as English; letters and digits only, lowercased, so punctuation
//! and spacing do not matter). Two texts are near-duplicates when the
//! signatures agree in at least [`MIN_AGREE`] of [`HASHES`] places, an
//! estimate of their shingles' Jaccard similarity ≥ 0.62 (at 12 of 24,
//! unrelated texts made of the same common complaint words grouped:
//! precision 0.957 in the tests). SimHash was tried
//! first: on texts of 30-600 characters one changed character in a hundred
//! already flipped more bits than a usable threshold allows (recall 0.47 at
//! 1 % of characters edited, in this module's tests), so MinHash it is.
//! To find a match without comparing against every open incident, the
//! signature is cut into [`BANDS`] bands of two: a near-duplicate almost
//! surely agrees on a whole band (J = 0.7: 1 - (1 - 0.49)^12 > 0.999), so
//! the state machine indexes incidents by (district, category, band, band
//! value) and compares only the few it finds.
//!
//! Everything here is pure and uses its own hash (FNV-1a), never a seeded
//! or platform hasher: every replica must group exactly alike.

/// Places of a signature.
pub const HASHES: usize = 24;
/// Places two near-duplicates' signatures agree in at least.
pub const MIN_AGREE: usize = 15;
/// Bands of two places each.
pub const BANDS: usize = HASHES / 2;
/// Complaints join an incident whose last complaint came at most this long
/// before (ms).
pub const WINDOW_MS: i64 = 2 * 60 * 60 * 1000;
/// Texts with fewer shingles than this are too short to tell apart (a
/// one-word "flood!"): they are never grouped.
pub const MIN_SHINGLES: usize = 8;

const SHINGLE: usize = 3;

/// A MinHash signature.
pub type Signature = [u32; HASHES];

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_from(FNV_OFFSET, bytes)
}

/// FNV-1a continued from `h` over `bytes`.
fn fnv1a_from(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A finalizer that spreads FNV's weak low bits over all 64 (SplitMix64's).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The shingle hashes met so far in one text: open addressing over a table
/// at least twice the text's length, so it never fills.
struct SeenHashes {
    slots: Vec<u64>,
    shift: u32,
    zero: bool,
}

impl SeenHashes {
    fn for_items(n: usize) -> Self {
        let size = (2 * n).max(16).next_power_of_two();
        Self {
            slots: vec![0; size],
            shift: 64 - size.trailing_zeros(),
            zero: false,
        }
    }

    /// Whether `h` is new (and now seen).
    fn insert(&mut self, h: u64) -> bool {
        if h == 0 {
            // 0 marks an empty slot.
            return !std::mem::replace(&mut self.zero, true);
        }
        let mask = self.slots.len() - 1;
        let mut i = (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            match self.slots[i] {
                0 => {
                    self.slots[i] = h;
                    return true;
                }
                x if x == h => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }
}

/// The signature of `text`, or `None` when it is too short to group.
pub fn fingerprint(text: &str) -> Option<Signature> {
    let mut chars: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars().filter(|c| c.is_alphanumeric()) {
        // ASCII first: `to_lowercase`'s iterator costs more than the rest.
        if c.is_ascii() {
            chars.push(c.to_ascii_lowercase());
        } else {
            chars.extend(c.to_lowercase());
        }
    }
    if chars.len() < SHINGLE + MIN_SHINGLES - 1 {
        return None;
    }
    let mut sig = [u32::MAX; HASHES];
    let mut seen = SeenHashes::for_items(chars.len());
    for w in chars.windows(SHINGLE) {
        // FNV-1a of the shingle's UTF-8 bytes, folded char by char.
        let base = w.iter().fold(FNV_OFFSET, |h, c| {
            let mut buf = [0u8; 4];
            fnv1a_from(h, c.encode_utf8(&mut buf).as_bytes())
        });
        // A shingle seen before cannot lower any place: MinHash is over the
        // set of shingles, and the 24 mixes are most of the cost.
        if !seen.insert(base) {
            continue;
        }
        for (i, slot) in sig.iter_mut().enumerate() {
            let h = (mix(base ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 32) as u32;
            *slot = (*slot).min(h);
        }
    }
    Some(sig)
}

/// Places in which two signatures agree.
pub fn agreement(a: &Signature, b: &Signature) -> usize {
    a.iter().zip(b).filter(|(x, y)| x == y).count()
}

/// The signature's bands: (band number, a hash of its two places).
pub fn bands(sig: &Signature) -> [(u8, u32); BANDS] {
    let mut out = [(0u8, 0u32); BANDS];
    for (i, slot) in out.iter_mut().enumerate() {
        let v = (u64::from(sig[2 * i]) << 32) | u64::from(sig[2 * i + 1]);
        *slot = (i as u8, (mix(v) >> 32) as u32);
    }
    out
}

/// An open incident as the index stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IncidentEntry {
    /// The ticket id's position of the incident's first complaint (its id).
    pub incident: crate::TicketId,
    /// The signature of its first complaint.
    pub signature: Signature,
    /// accepted_at of its latest complaint.
    pub last_at: crate::UnixMillis,
    /// Complaints in it so far.
    pub count: u32,
}

/// What `intake status` and the dashboard list about an incident, once it
/// has two complaints; kept in the shard's state, written by apply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IncidentSummary {
    pub id: crate::TicketId,
    pub district: String,
    pub category: String,
    pub count: u32,
    pub first_at: crate::UnixMillis,
    pub last_at: crate::UnixMillis,
}

/// Of the candidates the band index found, the incident a complaint with
/// signature `sig` accepted at `at` joins: the most similar within the
/// window, the oldest incident on a tie. Deterministic.
pub fn choose(sig: &Signature, at: crate::UnixMillis, candidates: &[IncidentEntry]) -> Option<IncidentEntry> {
    candidates
        .iter()
        .filter(|c| at - c.last_at <= WINDOW_MS && agreement(sig, &c.signature) >= MIN_AGREE)
        .min_by_key(|c| {
            (
                HASHES - agreement(sig, &c.signature),
                c.incident.log_index,
                c.incident.item,
            )
        })
        .copied()
}

#[cfg(test)]
#[path = "incident_tests.rs"]
mod tests;
