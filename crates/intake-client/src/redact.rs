//! What the client may log about a complaint. Its text, contact and
//! idempotency key never go into logs or error messages: adapters often
//! build keys from what the citizen gave (a phone number and a time), so a
//! key is personal data too. Where a line must say which complaint it is
//! about and no ticket id exists yet (a failed attempt, an outbox record
//! before its answer), it carries the key's *tag* instead.

use sha2::{Digest, Sha256};

/// A short, stable tag of an idempotency key for logs: the first 8 hex
/// digits of its SHA-256. An adapter's developer computes the same tag from
/// a key to find its lines. A one-way hash cut to 32 bits cannot be turned
/// back into the key and matches many keys, so it identifies nobody on its
/// own; SHA-256 rather than a quicker hash so that the tag stays the same
/// across versions and platforms.
pub fn key_tag(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .take(4)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::key_tag;

    #[test]
    fn tag_is_eight_hex_digits_of_sha256_and_leaves_the_key_out() {
        // sha256("my-key") begins with these four bytes (checked with sha256sum).
        assert_eq!(key_tag("my-key"), "5e78863e");
        let tag = key_tag("+86 138 0013 8000");
        assert_eq!(tag.len(), 8);
        assert!(tag.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(key_tag("a"), key_tag("b"));
    }
}
