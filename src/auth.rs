//! Client keys: only their SHA-256 digests are kept (in configs, in memory), and a presented key
//! is found by comparing digests in constant time.

use sha2::{Digest, Sha256};

/// The SHA-256 digest of a key.
pub fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A digest as 64 lowercase hex digits, as `auth.keys[].key_sha256` takes it.
pub fn to_hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads 64 hex digits (either case) as a digest.
pub fn from_hex(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Compares two digests without an early exit, so the time taken says nothing about how much
/// of a guess was right.
pub fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keeps the compiler from turning the loop back into an early-exit comparison.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_round_trip_through_hex_and_compare() {
        let d = digest("sk-team-a");
        let hex = to_hex(&d);
        assert_eq!(hex.len(), 64);
        assert_eq!(from_hex(&hex), Some(d));
        assert_eq!(from_hex(&hex.to_uppercase()), Some(d));
        assert_eq!(
            to_hex(&digest("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(digests_equal(&d, &digest("sk-team-a")));
        assert!(!digests_equal(&d, &digest("sk-team-b")));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex(&"zz".repeat(32)), None);
    }
}
