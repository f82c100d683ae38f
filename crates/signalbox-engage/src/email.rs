//! Email addresses as engage keys them.
//!
//! One email names one profile, so two spellings of one address must be one key: an email
//! is trimmed, lowercased and put in Unicode normalisation form C (NFC), so that `é` typed
//! as one code point or as `e` and a combining accent is the same address. Control characters
//! (C0, DEL, C1) are refused: no address has them, and they would hide in listings.
//!
//! Emails are normalised when the log is applied, not only when a write is taken in, so a
//! rebuild from the log gives the same keys.

use unicode_normalization::UnicodeNormalization;

/// The longest email address (RFC 5321's path limit less its angle brackets).
pub const MAX_EMAIL_LEN: usize = 254;

/// An email address, normalised (trimmed, lowercased, NFC) and checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
    use super::*;

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
