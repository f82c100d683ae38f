//! Email addresses, normalised once.
//!
//! One email names one profile (and one console account), so two spellings of one address
//! must be one key: an email is trimmed, lowercased and put in Unicode normalisation form C
//! (NFC), so that `é` typed as one code point or as `e` and a combining accent is the same
//! address. Control characters (C0, DEL, C1) are refused: no address has them, and they would
//! hide in listings.
//!
//! Every edge that takes an email (the Klaviyo-compatible API, the console's forms, the CLI)
//! makes an [`Email`] with [`Email::parse`], so a bad address is refused there with its
//! reason; the domain functions behind them take `Email`. Engage also normalises when the
//! log is applied, not only when a write is taken in, so a rebuild from the log gives the same
//! keys.

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

/// The longest email address (RFC 5321's path limit less its angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// An email address, normalised (trimmed, lowercased, NFC) and checked. It serialises as its
/// text, and deserialising checks it again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// Why a text is not an email address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("contains a control character")]
    ControlCharacter,
    #[error("is longer than {MAX_EMAIL_LEN} bytes")]
    TooLong,
    #[error("is not an email address")]
    NotAnEmail,
}

impl Email {
    /// Normalises and checks an address.
    pub fn parse(text: &str) -> Result<Email, EmailError> {
        if text.chars().any(char::is_control) {
            return Err(EmailError::ControlCharacter);
        }
        let email = normal_form(text);
        if email.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let (local, domain) = email.split_once('@').ok_or(EmailError::NotAnEmail)?;
        if local.is_empty()
            || domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains('@')
            || email.chars().any(|c| c.is_whitespace() || c == ',')
        {
            return Err(EmailError::NotAnEmail);
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl TryFrom<String> for Email {
    type Error = EmailError;

    fn try_from(text: String) -> Result<Email, EmailError> {
        Email::parse(&text)
    }
}

impl From<Email> for String {
    fn from(email: Email) -> String {
        email.0
    }
}

impl std::str::FromStr for Email {
    type Err = EmailError;

    fn from_str(text: &str) -> Result<Email, EmailError> {
        Email::parse(text)
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The form an email is keyed by, unchecked: for looking addresses up (filters), where a
/// text that is no address simply matches nothing.
pub fn normal_form(text: &str) -> String {
    text.trim().to_lowercase().nfc().collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_address_is_trimmed_and_lowercased() {
        let email = Email::parse(" Ann@Example.COM ").unwrap();
        assert_eq!(email.as_str(), "ann@example.com");
        assert_eq!(email, Email::parse("ann@example.com").unwrap());
    }

    #[test]
    fn it_serialises_as_its_text_and_is_checked_when_read() {
        let email = Email::parse("Ann@Example.com").unwrap();
        assert_eq!(
            serde_json::to_string(&email).unwrap(),
            "\"ann@example.com\""
        );
        let read: Email = serde_json::from_str("\" ANN@example.com\"").unwrap();
        assert_eq!(read, email);
        let err = serde_json::from_str::<Email>("\"not an address\"").unwrap_err();
        assert!(err.to_string().contains("is not an email address"), "{err}");
    }

    proptest! {
        /// Normalising a normalised address changes nothing.
        #[test]
        fn parsing_is_idempotent(text in "\\PC{0,40}") {
            if let Ok(email) = Email::parse(&text) {
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
                prop_assert_eq!(normal_form(email.as_str()), email.as_str());
            }
        }

        /// Spaces around an address and its case do not make another address.
        #[test]
        fn case_and_surrounding_space_do_not_matter(
            local in "[a-zA-Z0-9._+-]{1,20}",
            domain in "[a-zA-Z0-9-]{1,20}\\.[a-zA-Z]{2,6}",
            before in " {0,3}",
            after in " {0,3}",
        ) {
            let plain = Email::parse(&format!("{local}@{domain}")).unwrap();
            let spaced = Email::parse(&format!("{before}{}@{}{after}", local.to_uppercase(), domain))
                .unwrap();
            prop_assert_eq!(plain, spaced);
        }

        /// Whatever it is given, `parse` answers (never panics), and an address it accepts
        /// has one `@`, no space and no control character.
        #[test]
        fn what_is_accepted_looks_like_an_address(text in "\\PC{0,60}|[ -~]{0,60}") {
            if let Ok(email) = Email::parse(&text) {
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert!(!email.as_str().chars().any(|c| c.is_whitespace() || c.is_control()));
            }
        }
    }

    #[test]
    fn nfc_and_nfd_spellings_are_one_email() {
        let nfc = Email::parse("Jos\u{e9}@Example.com").unwrap();
        let nfd = Email::parse(" jose\u{301}@example.com ").unwrap();
        assert_eq!(nfc, nfd);
        assert_eq!(nfc.as_str(), "jos\u{e9}@example.com");
        assert_eq!(normal_form("JOSE\u{301}@example.com"), nfc.as_str());
    }

    #[test]
    fn control_characters_are_refused() {
        for text in [
            "a\0b@example.com",
            "a@exa\u{7f}mple.com",
            "a\u{85}@example.com",
            "a\u{1b}@x.io",
        ] {
            assert_eq!(
                Email::parse(text),
                Err(EmailError::ControlCharacter),
                "{text:?}"
            );
        }
    }

    #[test]
    fn shapes_that_are_no_address_are_refused() {
        for text in [
            "", "a", "@x.io", "a@b", "a@.io", "a@io.", "a b@x.io", "a@b@x.io",
        ] {
            assert_eq!(Email::parse(text), Err(EmailError::NotAnEmail), "{text:?}");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
    }
}
