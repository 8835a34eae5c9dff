//! Random secrets and their stored form. A secret (join token, edge
//! credential, API token) is shown once and stored only as its SHA-256;
//! comparisons of digests are constant-time.

use sha2::{Digest, Sha256};

/// A fresh random secret: a readable prefix (what kind of secret it is,
/// for whoever finds one in a log) and 32 random bytes in hex.
pub fn generate(prefix: &str) -> Result<String, crate::ManagerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| crate::ManagerError::Internal(format!("no randomness: {e}")))?;
    Ok(format!("{prefix}_{}", hex(&bytes)))
}

/// The stored form of a random secret: SHA-256, lower-case hex. Random
/// secrets of 256 bits need no salt or slow hash.
pub fn digest(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `a == b` in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_and_prefixed() {
        let a = generate("ojt").unwrap();
        let b = generate("ojt").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("ojt_") && a.len() == 4 + 64, "{a}");
    }

    #[test]
    fn digest_is_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
