//! Signed tokens: valid, tampered, replayed for another profile or message; HTML rewriting.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use signalbox_mail::{LinkError, LinkKind, LinkSigner, TrackingLinks};

fn signer() -> LinkSigner {
    LinkSigner::new(b"0123456789abcdef0123456789abcdef").expect("a long secret")
}

fn links() -> TrackingLinks {
    TrackingLinks::new(signer(), "https://sb.test/").expect("a base url")
}

#[test]
fn a_valid_token_verifies_with_its_claims() {
    let token = signer().sign(LinkKind::Unsubscribe, "prof_1", "msg_1", None);
    let claims = signer()
        .verify_for(LinkKind::Unsubscribe, &token, "prof_1", "msg_1")
        .expect("valid");
    assert_eq!(
        (claims.profile_id.as_str(), claims.message_id.as_str()),
        ("prof_1", "msg_1")
    );
    assert!(token.len() < 80, "{token}");
}

#[test]
fn tampered_tokens_are_refused() {
    let signer = signer();
    let token = signer.sign(
        LinkKind::Click,
        "prof_1",
        "msg_1",
        Some("https://shop.test/a"),
    );
    let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
    // Point the click elsewhere, keeping the tag: the tag no longer matches.
    let at = bytes.len() - 17;
    bytes[at] ^= 0x01;
    let altered = URL_SAFE_NO_PAD.encode(&bytes);
    assert_eq!(
        signer.verify(LinkKind::Click, &altered),
        Err(LinkError::BadSignature)
    );
    // A flipped tag bit.
    let mut bytes = URL_SAFE_NO_PAD.decode(&token).expect("base64url");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    assert_eq!(
        signer.verify(LinkKind::Click, &URL_SAFE_NO_PAD.encode(&bytes)),
        Err(LinkError::BadSignature)
    );
    // Truncated, garbage, empty.
    assert_eq!(
        signer.verify(LinkKind::Click, &token[..10]),
        Err(LinkError::Malformed)
    );
    assert_eq!(
        signer.verify(LinkKind::Click, "not a token!"),
        Err(LinkError::Malformed)
    );
    assert_eq!(
        signer.verify(LinkKind::Click, ""),
        Err(LinkError::Malformed)
    );
    // Signed under another secret.
    let other = LinkSigner::new(b"another secret of sixteen+ bytes").expect("secret");
    assert_eq!(
        other.verify(LinkKind::Click, &token),
        Err(LinkError::BadSignature)
    );
}

#[test]
fn a_token_for_one_profile_or_message_does_not_serve_another() {
    let signer = signer();
    let token = signer.sign(LinkKind::Unsubscribe, "prof_1", "msg_1", None);
    assert_eq!(
        signer.verify_for(LinkKind::Unsubscribe, &token, "prof_2", "msg_1"),
        Err(LinkError::WrongRecipient)
    );
    assert_eq!(
        signer.verify_for(LinkKind::Unsubscribe, &token, "prof_1", "msg_2"),
        Err(LinkError::WrongRecipient)
    );
    // Nor for another kind of link: an open token does not unsubscribe.
    let open = signer.sign(LinkKind::Open, "prof_1", "msg_1", None);
    assert_eq!(
        signer.verify(LinkKind::Unsubscribe, &open),
        Err(LinkError::WrongKind)
    );
    // Swapping profile and message ids changes the token.
    assert_ne!(
        signer.sign(LinkKind::Open, "a", "b", None),
        signer.sign(LinkKind::Open, "b", "a", None)
    );
    // Field boundaries are bound: ("ab", "c") and ("a", "bc") differ.
    assert_ne!(
        signer.sign(LinkKind::Open, "ab", "c", None),
        signer.sign(LinkKind::Open, "a", "bc", None)
    );
}

#[test]
fn debug_hides_the_key() {
    assert_eq!(format!("{:?}", signer()), "LinkSigner { key: [redacted] }");
}

#[test]
fn rewriting_tracks_links_and_adds_a_pixel() {
    let links = links();
    let unsubscribe = links.for_message("p", "m").unsubscribe_url;
    let html = format!(
        r##"<html><body><a href="https://shop.test/a?x=1&amp;y=2">A</a>
<a href='HTTP://Shop.test/B'>B</a> <a href="mailto:help@shop.test">mail</a>
<a href="tel:+441234">call</a> <a href="#top">top</a> <a href="/relative">rel</a>
<a href="{unsubscribe}">unsubscribe</a> <a name="anchor">no href</a>
<area href="https://shop.test/map"></body></html>"##
    );
    let rewritten = links.rewrite_html(&html, "p", "m").expect("rewrites");
    let hrefs = super::checkout::hrefs(&rewritten);
    let clicks: Vec<String> = hrefs
        .iter()
        .filter_map(|href| href.strip_prefix("https://sb.test/t/c/"))
        .map(|token| {
            links
                .signer()
                .verify_for(LinkKind::Click, token, "p", "m")
                .expect("genuine")
                .url
                .expect("url")
        })
        .collect();
    assert_eq!(
        clicks,
        vec!["https://shop.test/a?x=1&y=2", "HTTP://Shop.test/B"]
    );
    for kept in [
        "mailto:help@shop.test",
        "tel:+441234",
        "#top",
        "/relative",
        unsubscribe.as_str(),
    ] {
        assert!(
            hrefs.iter().any(|href| href == kept),
            "{kept} kept in {rewritten}"
        );
    }
    assert!(rewritten.contains("<a name=\"anchor\">no href</a>"));
    let pixel = format!("<img src=\"{}", "https://sb.test/t/o/");
    let at = rewritten.find(&pixel).expect("a pixel");
    assert!(rewritten[at..].contains("width=\"1\" height=\"1\""));
    assert!(rewritten[at..].trim_start().contains("></body></html>"));
    let token = rewritten[at + pixel.len()..]
        .split('"')
        .next()
        .expect("token");
    links
        .signer()
        .verify_for(LinkKind::Open, token, "p", "m")
        .expect("genuine open token");
}

#[test]
fn a_fragment_without_body_gets_the_pixel_at_the_end() {
    let rewritten = links()
        .rewrite_html("<p>Hi</p>", "p", "m")
        .expect("rewrites");
    assert!(
        rewritten.starts_with("<p>Hi</p><img src=\"https://sb.test/t/o/"),
        "{rewritten}"
    );
    assert_eq!(rewritten.matches("<img").count(), 1);
}

#[test]
fn base_urls_and_secrets_are_checked() {
    assert_eq!(
        TrackingLinks::new(signer(), "sb.test").unwrap_err(),
        LinkError::InvalidBaseUrl
    );
    assert_eq!(
        LinkSigner::new(b"too short").unwrap_err(),
        LinkError::WeakSecret
    );
    let links = TrackingLinks::new(signer(), "https://sb.test/base/").expect("base");
    let urls = links.for_message("p", "m");
    assert!(urls.unsubscribe_url.starts_with("https://sb.test/base/u/"));
    assert!(urls
        .manage_preferences_url
        .starts_with("https://sb.test/base/p/"));
    assert!(urls.open_pixel_url.starts_with("https://sb.test/base/t/o/"));
}
