//! Session, CSRF and setup tokens: 32 random bytes, base64url without padding (43
//! characters). Session and setup tokens are stored only as SHA-256 digests; they are looked
//! up by digest, so the database never compares a token itself.

use base64::Engine;
use sha2::{Digest, Sha256};

const TOKEN_CHARS: usize = 43;

/// The SHA-256 digest a token is stored and looked up under.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenDigest(pub [u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest([redacted])")
    }
}

pub(crate) fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `text` could be a token (saves a lookup for anything else).
pub(crate) fn well_formed(text: &str) -> bool {
    text.len() == TOKEN_CHARS
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_well_formed() {
        let (a, b) = (random_token(), random_token());
        assert_ne!(a, b);
        assert!(well_formed(&a), "{a}");
        assert!(!well_formed("short"));
        assert!(!well_formed(&format!("{}=", &a[..42])));
        assert_ne!(TokenDigest::of(&a), TokenDigest::of(&b));
    }
}
