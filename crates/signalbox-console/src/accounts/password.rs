//! Passwords: Argon2id with the crate's default parameters (19 MiB, 2 passes, 1 lane; the
//! OWASP minimum), stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so
//! stronger parameters later still verify what was stored before. Hashing takes tens of
//! milliseconds on purpose: it runs on a blocking thread.

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use super::{AccountError, AccountResult};

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password accepted (bounds the work of hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Refuses a new password that is too short or too long, naming the limit.
pub(crate) fn check_new(password: &str) -> AccountResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AccountError::Invalid {
            field: "password",
            message: format!("must be at least {MIN_PASSWORD_CHARS} characters"),
        });
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AccountError::Invalid {
            field: "password",
            message: format!("must be at most {MAX_PASSWORD_BYTES} bytes"),
        });
    }
    Ok(())
}

/// The PHC string of a new password, with a random 16-byte salt.
pub(crate) async fn hash(password: String) -> AccountResult<String> {
    tokio::task::spawn_blocking(move || hash_now(&password))
        .await
        .map_err(|err| AccountError::Store(format!("hashing task failed: {err}")))?
}

fn hash_now(password: &str) -> AccountResult<String> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|err| AccountError::Store(format!("cannot encode a salt: {err}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| AccountError::Store(format!("cannot hash the password: {err}")))
}

/// Whether `password` matches the stored hash. Without an account (`None`) a fixed hash is
/// checked instead, so that an unknown email takes as long as a wrong password.
pub(crate) async fn verify(password: String, stored: Option<String>) -> AccountResult<bool> {
    tokio::task::spawn_blocking(move || {
        let known = stored.is_some();
        let stored = match stored {
            Some(stored) => stored,
            None => stand_in()?.to_owned(),
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let parsed = PasswordHash::new(&stored).map_err(|err| {
            AccountError::Store(format!("a stored password hash is invalid: {err}"))
        })?;
        // The crate compares the computed hash with the stored one in constant time.
        let matches = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(known && matches)
    })
    .await
    .map_err(|err| AccountError::Store(format!("hashing task failed: {err}")))?
}

/// The hash checked for emails without an account, made once per process.
fn stand_in() -> AccountResult<&'static str> {
    static STAND_IN: OnceLock<String> = OnceLock::new();
    if let Some(hash) = STAND_IN.get() {
        return Ok(hash);
    }
    let random: [u8; 16] = rand::random();
    let hash = hash_now(&format!("{random:?}"))?;
    Ok(STAND_IN.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn argon2id_phc_strings_that_verify() {
        let hash = hash("correct horse battery".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
        assert!(verify("correct horse battery".into(), Some(hash.clone()))
            .await
            .unwrap());
        assert!(!verify("wrong horse battery".into(), Some(hash))
            .await
            .unwrap());
        assert!(!verify("anything at all".into(), None).await.unwrap());
    }

    #[test]
    fn length_limits_are_named() {
        let err = check_new("short").unwrap_err().to_string();
        assert_eq!(err, "password: must be at least 12 characters");
        assert!(check_new("twelve chars").is_ok());
        assert!(check_new(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
