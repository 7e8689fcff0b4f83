//! Hashes whose values must never change: shard assignment and resume depend on them
//! across versions and machines. Known values are pinned in the tests below; a change
//! that moves one of them reshuffles every sharded job and breaks every resume.

use sha2::{Digest, Sha256};

/// 64-bit FNV-1a of `bytes` (shard assignment: `fnv1a64(key) % count`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A 128-bit digest of an object URI (the first 16 bytes of its SHA-256), the form
/// in which a resumed run remembers what it has already written: 16 bytes a key,
/// whatever the URI's length, with a collision chance of about n²/2¹²⁹ (below 10⁻²⁴
/// for ten million keys).
pub fn uri_digest(uri: &str) -> u128 {
    let d = Sha256::digest(uri.as_bytes());
    let mut first = [0u8; 16];
    first.copy_from_slice(&d[..16]);
    u128::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_known_values() {
        // Published FNV-1a test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn shard_assignment_is_pinned() {
        // A change here reshuffles every sharded job: keys would move between workers.
        assert_eq!(fnv1a64(b"photos/cat.jpg"), 0x4664_4eaa_9e47_eeb2);
        let shard = crate::source::Shard::new(2, 8).unwrap();
        assert!(shard.owns("photos/cat.jpg"));
    }

    #[test]
    fn uri_digest_known_value() {
        // sha256("abc") = ba7816bf 8f01cfea 414140de 5dae2223 b00361a3 96177a9c b410ff61 f20015ad
        assert_eq!(uri_digest("abc"), 0xba78_16bf_8f01_cfea_4141_40de_5dae_2223);
        assert_ne!(uri_digest("s3://b/a.jpg"), uri_digest("s3://b/b.jpg"));
    }
}
