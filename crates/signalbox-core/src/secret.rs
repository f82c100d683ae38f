//! Secrets: write keys and private API keys.
//!
//! Both print as a redacted prefix only, so a `Debug` or `Display` in a log line never leaks
//! them, and both compare in constant time.

use std::fmt;

use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Number of random characters in a freshly generated key.
const KEY_RANDOM_LEN: usize = 32;

/// A source's write key. Write keys are embedded in browsers, so they are stored as they are
/// (the console shows them); they are still never logged.
#[derive(Clone)]
pub struct WriteKey(String);

impl WriteKey {
    /// A new random write key.
    pub fn generate() -> WriteKey {
        WriteKey(Alphanumeric.sample_string(&mut rand::rng(), KEY_RANDOM_LEN))
    }

    /// Wraps a key as given by a client or read from the store.
    pub fn new(key: impl Into<String>) -> WriteKey {
        WriteKey(key.into())
    }

    /// The key itself, for storing it or printing it to the person who asked for it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// SHA-256 of the key: the lookup handle, so that finding a key never compares the key
    /// itself byte by byte.
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }

    /// Constant-time equality.
    pub fn ct_eq(&self, other: &WriteKey) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }

    /// A form that is safe to show: the first four characters and a mask.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WriteKey({})", self.redacted())
    }
}

impl fmt::Display for WriteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// A private API key (`pk_…`). Only its SHA-256 digest is stored.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// The prefix every private key carries.
    pub const PREFIX: &'static str = "pk_";

    /// A new random private key.
    pub fn generate() -> ApiKey {
        ApiKey(format!(
            "{}{}",
            Self::PREFIX,
            Alphanumeric.sample_string(&mut rand::rng(), KEY_RANDOM_LEN + 8)
        ))
    }

    /// Wraps a key as presented by a client.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(key.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Hex SHA-256: what the store keeps.
    pub fn digest_hex(&self) -> String {
        hex(&Sha256::digest(self.0.as_bytes()))
    }

    /// Constant-time comparison of this key's digest against a stored digest.
    pub fn matches_digest(&self, stored_hex: &str) -> bool {
        self.digest_hex()
            .as_bytes()
            .ct_eq(stored_hex.as_bytes())
            .into()
    }

    /// The first characters, safe to show in a listing.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({})", self.redacted())
    }
}

fn redact(key: &str) -> String {
    let shown: String = key
        .chars()
        .take(if key.starts_with(ApiKey::PREFIX) {
            7
        } else {
            4
        })
        .collect();
    format!("{shown}…")
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_print_in_full() {
        let key = WriteKey::new("abcdefghijklmnop");
        assert_eq!(format!("{key:?}"), "WriteKey(abcd…)");
        assert_eq!(format!("{key}"), "abcd…");
        let api = ApiKey::generate();
        assert!(api.expose().starts_with("pk_"));
        assert!(!format!("{api:?}").contains(&api.expose()[8..]));
    }

    #[test]
    fn api_key_digest_round_trip() {
        let api = ApiKey::generate();
        let stored = api.digest_hex();
        assert!(api.matches_digest(&stored));
        assert!(!ApiKey::generate().matches_digest(&stored));
    }

    #[test]
    fn write_key_compare() {
        assert!(WriteKey::new("a").ct_eq(&WriteKey::new("a")));
        assert!(!WriteKey::new("a").ct_eq(&WriteKey::new("ab")));
    }
}
