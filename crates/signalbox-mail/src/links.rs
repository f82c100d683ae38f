//! Signed links: unsubscribe, preferences, open pixel and click tracking.
//!
//! A token carries what it is for (its [`LinkKind`]), the profile and message it was made
//! for and, for a click, the destination URL, followed by an HMAC-SHA256 tag (truncated to
//! 128 bits) over all of it, under a key derived from the caller's secret. Changing any of
//! these (another profile, another message, another destination, another kind) breaks the
//! tag, so a token cannot be forged or replayed for someone else. Tokens are base64url
//! without padding: safe in a URL path.
//!
//! URLs, relative to the public base URL Signalbox is reached at:
//! `{base}/u/{token}` (unsubscribe page; POST there is the RFC 8058 one-click unsubscribe),
//! `{base}/p/{token}` (preferences), `{base}/t/o/{token}` (open pixel),
//! `{base}/t/c/{token}` (click: redirect to the URL inside), `{base}/c/{token}` (confirm a
//! double opt-in: the token's message id is the list's id).

use std::cell::Cell;
use std::fmt;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use lol_html::html_content::ContentType;
use lol_html::{element, end, rewrite_str, RewriteStrSettings};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::text::decode_entities;

type HmacSha256 = Hmac<Sha256>;

const VERSION: u8 = 1;
const TAG_LEN: usize = 16;
/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// What a signed link does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LinkKind {
    Unsubscribe,
    Preferences,
    Open,
    Click,
    /// Confirms a double opt-in subscription: the claims' `message_id` is the list's id.
    Confirm,
}

impl LinkKind {
    fn code(self) -> u8 {
        match self {
            LinkKind::Unsubscribe => b'u',
            LinkKind::Preferences => b'p',
            LinkKind::Open => b'o',
            LinkKind::Click => b'c',
            LinkKind::Confirm => b'd',
        }
    }

    /// The path prefix of this kind's URLs (`/u/`, `/p/`, `/t/o/`, `/t/c/`, `/c/`).
    pub fn path_prefix(self) -> &'static str {
        match self {
            LinkKind::Unsubscribe => "/u/",
            LinkKind::Preferences => "/p/",
            LinkKind::Open => "/t/o/",
            LinkKind::Click => "/t/c/",
            LinkKind::Confirm => "/c/",
        }
    }
}

/// What a valid token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkClaims {
    pub kind: LinkKind,
    pub profile_id: String,
    pub message_id: String,
    /// The destination, for [`LinkKind::Click`] only.
    pub url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the link secret must be at least {MIN_SECRET_LEN} bytes")]
    WeakSecret,
    #[error("the base url must start with http:// or https://")]
    InvalidBaseUrl,
    /// Not a token: bad encoding, wrong version, truncated.
    #[error("malformed link token")]
    Malformed,
    /// A well-formed token whose tag does not match: forged or altered.
    #[error("link token signature does not match")]
    BadSignature,
    /// A genuine token of another kind (an open token used as a click).
    #[error("link token is for another kind of link")]
    WrongKind,
    /// A genuine token for another profile or message than the one expected.
    #[error("link token is for another recipient or message")]
    WrongRecipient,
    #[error("html could not be rewritten: {0}")]
    Html(String),
}

/// Signs and verifies link tokens. Its `Debug` does not show the key.
#[derive(Clone)]
pub struct LinkSigner {
    key: [u8; 32],
}

impl fmt::Debug for LinkSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LinkSigner { key: [redacted] }")
    }
}

impl LinkSigner {
    /// A signer whose key is derived from `secret` (at least [`MIN_SECRET_LEN`] bytes; a
    /// random string kept with the server's configuration).
    pub fn new(secret: &[u8]) -> Result<LinkSigner, LinkError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(LinkError::WeakSecret);
        }
        let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| LinkError::WeakSecret)?;
        mac.update(b"signalbox-mail link tokens v1");
        Ok(LinkSigner {
            key: mac.finalize().into_bytes().into(),
        })
    }

    /// A token for `kind`, `profile_id`, `message_id` and, for clicks, `url`.
    pub fn sign(
        &self,
        kind: LinkKind,
        profile_id: &str,
        message_id: &str,
        url: Option<&str>,
    ) -> String {
        let url = if kind == LinkKind::Click {
            url.unwrap_or("")
        } else {
            ""
        };
        let profile = &profile_id.as_bytes()[..profile_id.len().min(u16::MAX as usize)];
        let message = &message_id.as_bytes()[..message_id.len().min(u16::MAX as usize)];
        let mut payload =
            Vec::with_capacity(6 + profile.len() + message.len() + url.len() + TAG_LEN);
        payload.push(VERSION);
        payload.push(kind.code());
        payload.extend_from_slice(&(profile.len() as u16).to_be_bytes());
        payload.extend_from_slice(profile);
        payload.extend_from_slice(&(message.len() as u16).to_be_bytes());
        payload.extend_from_slice(message);
        payload.extend_from_slice(url.as_bytes());
        let tag = self.tag(&payload);
        payload.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(payload)
    }

    /// The claims of a genuine token of `kind`.
    pub fn verify(&self, kind: LinkKind, token: &str) -> Result<LinkClaims, LinkError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| LinkError::Malformed)?;
        if bytes.len() < 6 + TAG_LEN || bytes[0] != VERSION {
            return Err(LinkError::Malformed);
        }
        let (payload, tag) = bytes.split_at(bytes.len() - TAG_LEN);
        if !bool::from(self.tag(payload).ct_eq(tag)) {
            return Err(LinkError::BadSignature);
        }
        let claimed_kind = match payload[1] {
            b'u' => LinkKind::Unsubscribe,
            b'p' => LinkKind::Preferences,
            b'o' => LinkKind::Open,
            b'c' => LinkKind::Click,
            b'd' => LinkKind::Confirm,
            _ => return Err(LinkError::Malformed),
        };
        if claimed_kind != kind {
            return Err(LinkError::WrongKind);
        }
        let mut rest = &payload[2..];
        let profile_id = take_field(&mut rest)?;
        let message_id = take_field(&mut rest)?;
        let url = String::from_utf8(rest.to_vec()).map_err(|_| LinkError::Malformed)?;
        Ok(LinkClaims {
            kind,
            profile_id,
            message_id,
            url: (kind == LinkKind::Click).then_some(url),
        })
    }

    /// Like [`LinkSigner::verify`], and the token must be for this profile and message.
    pub fn verify_for(
        &self,
        kind: LinkKind,
        token: &str,
        profile_id: &str,
        message_id: &str,
    ) -> Result<LinkClaims, LinkError> {
        let claims = self.verify(kind, token)?;
        if claims.profile_id != profile_id || claims.message_id != message_id {
            return Err(LinkError::WrongRecipient);
        }
        Ok(claims)
    }

    fn tag(&self, payload: &[u8]) -> [u8; TAG_LEN] {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("hmac takes any key length");
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&full[..TAG_LEN]);
        tag
    }
}

fn take_field(rest: &mut &[u8]) -> Result<String, LinkError> {
    if rest.len() < 2 {
        return Err(LinkError::Malformed);
    }
    let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
    if rest.len() < 2 + len {
        return Err(LinkError::Malformed);
    }
    let field = String::from_utf8(rest[2..2 + len].to_vec()).map_err(|_| LinkError::Malformed)?;
    *rest = &rest[2 + len..];
    Ok(field)
}

/// Builds the signed URLs of one Signalbox deployment and rewrites HTML bodies with them.
#[derive(Debug, Clone)]
pub struct TrackingLinks {
    signer: LinkSigner,
    base_url: String,
}

/// The signed URLs of one message to one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageLinks {
    pub unsubscribe_url: String,
    pub manage_preferences_url: String,
    pub open_pixel_url: String,
}

impl TrackingLinks {
    /// `base_url` is where Signalbox is publicly reached (`https://mail.example.com`); a
    /// trailing slash is ignored.
    pub fn new(signer: LinkSigner, base_url: &str) -> Result<TrackingLinks, LinkError> {
        let base_url = base_url.trim().trim_end_matches('/');
        let lower = base_url.to_ascii_lowercase();
        if !(lower.starts_with("http://") || lower.starts_with("https://"))
            || base_url.len() <= "https://".len()
        {
            return Err(LinkError::InvalidBaseUrl);
        }
        Ok(TrackingLinks {
            signer,
            base_url: base_url.to_owned(),
        })
    }

    pub fn signer(&self) -> &LinkSigner {
        &self.signer
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of a signed link of `kind`.
    pub fn url(
        &self,
        kind: LinkKind,
        profile_id: &str,
        message_id: &str,
        url: Option<&str>,
    ) -> String {
        let token = self.signer.sign(kind, profile_id, message_id, url);
        format!("{}{}{token}", self.base_url, kind.path_prefix())
    }

    /// The unsubscribe, preferences and open-pixel URLs for one message to one profile.
    pub fn for_message(&self, profile_id: &str, message_id: &str) -> MessageLinks {
        MessageLinks {
            unsubscribe_url: self.url(LinkKind::Unsubscribe, profile_id, message_id, None),
            manage_preferences_url: self.url(LinkKind::Preferences, profile_id, message_id, None),
            open_pixel_url: self.url(LinkKind::Open, profile_id, message_id, None),
        }
    }

    /// Rewrites every `http(s)` link of `html` to a signed click link, leaving alone
    /// `mailto:`/`tel:`/anchor links and links already under the base URL (unsubscribe,
    /// preferences), and adds a 1×1 open pixel before `</body>` (at the end without a body).
    pub fn rewrite_html(
        &self,
        html: &str,
        profile_id: &str,
        message_id: &str,
    ) -> Result<String, LinkError> {
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" \
             style=\"display:block;border:0;width:1px;height:1px\">",
            self.url(LinkKind::Open, profile_id, message_id, None)
        );
        let own_prefix = format!("{}/", self.base_url.to_ascii_lowercase());
        let pixel_placed = Rc::new(Cell::new(false));
        let pixel_for_body = pixel.clone();
        let placed_in_body = pixel_placed.clone();
        let placed_at_end = pixel_placed.clone();
        rewrite_str(
            html,
            RewriteStrSettings {
                element_content_handlers: vec![
                    element!("a[href]", |el| {
                        let Some(raw) = el.get_attribute("href") else {
                            return Ok(());
                        };
                        let href = decode_entities(raw.trim());
                        let lower = href.to_ascii_lowercase();
                        let trackable = (lower.starts_with("http://")
                            || lower.starts_with("https://"))
                            && !lower.starts_with(&own_prefix);
                        if trackable {
                            let click =
                                self.url(LinkKind::Click, profile_id, message_id, Some(&href));
                            el.set_attribute("href", &click)?;
                        }
                        Ok(())
                    }),
                    element!("body", |el| {
                        let pixel = pixel_for_body.clone();
                        let placed = placed_in_body.clone();
                        if let Some(handlers) = el.end_tag_handlers() {
                            let handler: lol_html::EndTagHandler<'static> = Box::new(move |end| {
                                if !placed.get() {
                                    end.before(&pixel, ContentType::Html);
                                    placed.set(true);
                                }
                                Ok(())
                            });
                            handlers.push(handler);
                        }
                        Ok(())
                    }),
                ],
                document_content_handlers: vec![end!(|end| {
                    if !placed_at_end.get() {
                        end.append(&pixel, ContentType::Html);
                        placed_at_end.set(true);
                    }
                    Ok(())
                })],
                ..RewriteStrSettings::new()
            },
        )
        .map_err(|error| LinkError::Html(error.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> LinkSigner {
        LinkSigner::new(b"0123456789abcdef-test-secret").expect("long enough")
    }

    #[test]
    fn round_trip_every_kind() {
        let signer = signer();
        for kind in [
            LinkKind::Unsubscribe,
            LinkKind::Preferences,
            LinkKind::Open,
            LinkKind::Confirm,
        ] {
            let token = signer.sign(kind, "p1", "m1", None);
            let claims = signer.verify(kind, &token).expect("valid");
            assert_eq!(
                (claims.profile_id.as_str(), claims.message_id.as_str()),
                ("p1", "m1")
            );
            assert_eq!(claims.url, None);
        }
        let token = signer.sign(
            LinkKind::Click,
            "p1",
            "m1",
            Some("https://x.test/a?b=c&d=é"),
        );
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let claims = signer.verify(LinkKind::Click, &token).expect("valid");
        assert_eq!(claims.url.as_deref(), Some("https://x.test/a?b=c&d=é"));
    }

    #[test]
    fn confirm_tokens_are_bound_to_profile_and_list() {
        let signer = signer();
        let token = signer.sign(LinkKind::Confirm, "p1", "L1", None);
        assert!(signer
            .verify_for(LinkKind::Confirm, &token, "p1", "L1")
            .is_ok());
        assert_eq!(
            signer.verify_for(LinkKind::Confirm, &token, "p2", "L1"),
            Err(LinkError::WrongRecipient)
        );
        assert_eq!(
            signer.verify(LinkKind::Unsubscribe, &token),
            Err(LinkError::WrongKind)
        );
        // The same tag over another list: refused.
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        let at = bytes[..bytes.len() - TAG_LEN]
            .iter()
            .rposition(|b| *b == b'1')
            .unwrap();
        bytes[at] = b'2';
        let forged = URL_SAFE_NO_PAD.encode(&bytes);
        assert_eq!(
            signer.verify(LinkKind::Confirm, &forged),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(
            LinkSigner::new(b"short").unwrap_err(),
            LinkError::WeakSecret
        );
    }
}
