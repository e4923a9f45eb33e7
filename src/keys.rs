//! Center API keys: generation, hashing and constant-time comparison.
//!
//! Keys are stored only as SHA-256 digests. A slow password hash (argon2,
//! bcrypt) protects low-entropy secrets from guessing. These keys are 256-bit
//! random strings, so one SHA-256 already makes guessing hopeless, and every
//! request's check stays cheap.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A SHA-256 digest of a key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(pub [u8; 32]);

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHash([redacted])")
    }
}

impl KeyHash {
    pub fn of(key: &str) -> Self {
        Self::of_bytes(key.as_bytes())
    }

    pub fn of_bytes(key: &[u8]) -> Self {
        Self(Sha256::digest(key).into())
    }

    /// Lower-case hex, as stored in the database.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }

    /// Compares two digests in constant time. Both are 32 bytes, so neither the
    /// presented key's length nor its content changes the time taken.
    pub fn matches(&self, other: &KeyHash) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

/// Generates a new key: 32 random bytes from the operating system's generator,
/// URL-safe base64 without padding (43 characters).
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_and_distinct() {
        let (a, b) = (generate(), generate());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn hex_round_trips() {
        let hash = KeyHash::of("clinic-key");
        assert_eq!(KeyHash::from_hex(&hash.to_hex()), Some(hash));
        assert!(KeyHash::from_hex("zz").is_none());
    }

    #[test]
    fn matching_compares_digests() {
        let stored = KeyHash::of("clinic-key");
        assert!(stored.matches(&KeyHash::of("clinic-key")));
        assert!(!stored.matches(&KeyHash::of("clinic-key2")));
        assert!(!stored.matches(&KeyHash::of("")));
    }
}
