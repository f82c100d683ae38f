//! The abandoned-checkout email: a cart of three products rendered with images, names,
//! prices and descriptions, links tracked, the text part derived.

use serde_json::json;
use signalbox_mail::{
    Composer, EmailTemplate, EmailTemplateSource, LinkKind, LinkSigner, OutgoingEmail, Recipient,
    RenderContext, TrackingLinks,
};

pub const SECRET: &[u8] = b"test secret, at least sixteen bytes";
pub const BASE: &str = "https://sb.example.test";

pub fn checkout_template() -> EmailTemplate {
    EmailTemplate::compile(&EmailTemplateSource {
        subject: "{{ first_name|default:'Hey' }}, your {{ event.ItemNames|first }} is waiting"
            .into(),
        html: include_str!("../fixtures/abandoned_checkout.html").into(),
        text: None,
    })
    .expect("the checkout template compiles")
}

pub fn checkout_context() -> RenderContext {
    let items = json!([
        {"ProductID": "1001", "SKU": "TP-1", "ProductName": "Cast Iron Teapot", "Quantity": 1,
         "ItemPrice": 49.0, "RowTotal": 49.0,
         "ProductURL": "https://tea.test/products/teapot?utm_source=email&ref=cart",
         "ImageURL": "https://cdn.tea.test/img/teapot.jpg",
         "Description": "A heavy teapot that keeps tea hot for an hour & looks <great> on any table."},
        {"ProductID": "1002", "SKU": "CU-4", "ProductName": "Porcelain Cups", "Quantity": 4,
         "ItemPrice": 8.5, "RowTotal": 34.0,
         "ProductURL": "https://tea.test/products/cups",
         "ImageURL": "https://cdn.tea.test/img/cups.jpg",
         "Description": "Set-of-one cups, white."},
        {"ProductID": "1003", "SKU": "SE-1", "ProductName": "Sencha \"First Flush\"", "Quantity": 2,
         "ItemPrice": 12.25, "RowTotal": 24.5,
         "ProductURL": "https://tea.test/products/sencha",
         "ImageURL": "https://cdn.tea.test/img/sencha.jpg",
         "Description": "Spring-picked green tea from Shizuoka."}
    ]);
    let mut context = RenderContext::default();
    context.person.insert("first_name".into(), json!("Ada"));
    context
        .person
        .insert("email".into(), json!("ada@example.com"));
    context.person.insert("Loyalty Points".into(), json!(320));
    context.event = Some(json!({
        "$value": 107.5,
        "Currency": "EUR",
        "CheckoutURL": "https://tea.test/checkout/abc123",
        "ItemNames": ["Cast Iron Teapot", "Porcelain Cups", "Sencha \"First Flush\""],
        "Items": items,
    }));
    context
        .organization
        .insert("name".into(), json!("Tea & Co"));
    context
}

pub fn composer() -> Composer {
    let links = TrackingLinks::new(LinkSigner::new(SECRET).expect("secret"), BASE).expect("base");
    Composer::new(links, Some("unsubscribe@tea.test".into()))
}

pub fn recipient() -> Recipient {
    Recipient {
        profile_id: "prof_ada".into(),
        email: "ada@example.com".into(),
        name: Some("Ada Lovelace".into()),
    }
}

pub fn checkout_email(message_id: &str) -> OutgoingEmail {
    composer()
        .compose(
            &checkout_template(),
            &recipient(),
            message_id,
            checkout_context(),
            None,
        )
        .expect("composes")
}

#[test]
fn cart_renders_products_with_images_names_prices_and_descriptions() {
    let email = checkout_email("msg-1");
    assert_eq!(email.subject, "Ada, your Cast Iron Teapot is waiting");
    assert_eq!(email.to, "Ada Lovelace <ada@example.com>");
    let html = &email.html;
    assert_eq!(html.matches("<tr class=\"item\">").count(), 3, "{html}");
    for (image, alt) in [
        ("https://cdn.tea.test/img/teapot.jpg", "Cast Iron Teapot"),
        ("https://cdn.tea.test/img/cups.jpg", "Porcelain Cups"),
        (
            "https://cdn.tea.test/img/sencha.jpg",
            "Sencha &quot;First Flush&quot;",
        ),
    ] {
        assert!(
            html.contains(&format!(
                "<img src=\"{image}\" alt=\"{alt}\" width=\"120\">"
            )),
            "{image} in {html}"
        );
    }
    assert!(html.contains("<h3>1. Cast Iron Teapot</h3>"));
    assert!(html.contains("<h3>3. Sencha &quot;First Flush&quot;</h3>"));
    assert!(html.contains("1 × €49.00\n          = €49.00"));
    assert!(html.contains("4 × €8.50\n          = €34.00"));
    assert!(html.contains("2 × €12.25\n          = €24.50"));
    assert!(html.contains("<strong>€107.50</strong>"));
    assert!(html.contains("(you have 320 points)"));
    // Escaped and truncated to 60 characters.
    assert!(html.contains("A heavy teapot that keeps tea hot for an hour &amp; looks &lt;grea…"));
    assert!(html.contains("Set-of-one cups, white."));
    assert!(html.contains("Your cart at Tea &amp; Co holds 3 items:"));
    assert!(!html.contains("Your cart is empty"));
    assert!(
        !html.contains("Klaviyo's abandoned checkout"),
        "comments are dropped"
    );

    let text = &email.text;
    for expected in [
        "Hi Ada, you left something behind",
        "Cast Iron Teapot, Porcelain Cups, Sencha \"First Flush\"",
        "3. Sencha \"First Flush\"",
        "Spring-picked green tea from Shizuoka.",
        "4 × €8.50 = €34.00",
        "Total: €107.50",
        "help@tea.test",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} in text part:\n{text}"
        );
    }
    assert!(
        !text.contains("<td") && !text.contains("<img"),
        "no tags in:\n{text}"
    );
    assert!(!text.contains(".price"), "styles dropped:\n{text}");
    assert!(
        text.starts_with("Hi Ada, you left something behind\n\n"),
        "{text}"
    );
}

#[test]
fn checkout_links_are_tracked_and_signed() {
    let email = checkout_email("msg-2");
    let links = TrackingLinks::new(LinkSigner::new(SECRET).expect("secret"), BASE).expect("base");
    let hrefs = hrefs(&email.html);
    let clicks: Vec<String> = hrefs
        .iter()
        .filter_map(|href| href.strip_prefix(&format!("{BASE}/t/c/")))
        .map(|token| {
            links
                .signer()
                .verify_for(LinkKind::Click, token, "prof_ada", "msg-2")
                .expect("a genuine click token")
                .url
                .expect("a destination")
        })
        .collect();
    assert_eq!(
        clicks,
        vec![
            "https://tea.test/products/teapot?utm_source=email&ref=cart",
            "https://tea.test/products/cups",
            "https://tea.test/products/sencha",
            "https://tea.test/checkout/abc123",
        ]
    );
    assert!(hrefs.contains(&"mailto:help@tea.test".to_owned()));
    let unsubscribe = email
        .list_unsubscribe
        .as_ref()
        .expect("list-unsubscribe")
        .url
        .clone();
    assert!(
        hrefs.contains(&unsubscribe),
        "the unsubscribe link is not rewritten"
    );
    assert!(hrefs
        .iter()
        .any(|href| href.starts_with(&format!("{BASE}/p/"))));
    let token = unsubscribe
        .strip_prefix(&format!("{BASE}/u/"))
        .expect("an unsubscribe url");
    links
        .signer()
        .verify_for(LinkKind::Unsubscribe, token, "prof_ada", "msg-2")
        .expect("a genuine unsubscribe token");
    // One open pixel, just before </body>.
    let pixel_at = email
        .html
        .find(&format!("<img src=\"{BASE}/t/o/"))
        .expect("a pixel");
    let body_end = email.html.find("</body>").expect("a body");
    assert!(pixel_at < body_end && email.html[pixel_at..body_end].trim_end().ends_with('>'));
    assert_eq!(email.html.matches("/t/o/").count(), 1);
    assert_eq!(email.idempotency_key, "msg-2");
}

/// The `href` values of an HTML document, entities decoded.
pub fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(signalbox_mail::text::decode_entities)
        .collect()
}
