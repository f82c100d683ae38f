//! The plain-text part derived from an HTML body, and HTML entity decoding.

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::ContentType;
use lol_html::{doc_comments, doctype, element, rewrite_str, text, RewriteStrSettings};

/// Marks a line break we want, distinct from the HTML source's own newlines: `<br>` (each
/// one counts), the edge of a line-level block (`div`, `li`, `tr`), the edge of a paragraph
/// (`p`, headings, lists, tables: a blank line).
const BREAK: char = '\u{1}';
const LINE: char = '\u{2}';
const PARA: char = '\u{3}';

/// Plain text from an HTML email body: block elements on their own lines, list items as
/// `- item`, links as `text (url)`, images as their `alt` text; `<head>`, `<style>` and
/// `<script>` dropped, entities decoded.
pub fn html_to_text(html: &str) -> String {
    let link_text: Rc<RefCell<Option<String>>> = Rc::new(RefCell::new(None));
    let link_text_for_chunks = link_text.clone();
    let rewritten = rewrite_str(
        html,
        RewriteStrSettings {
            element_content_handlers: vec![
                element!("head, style, script, title", |el| {
                    el.remove();
                    Ok(())
                }),
                element!("br", |el| {
                    el.replace(&BREAK.to_string(), ContentType::Text);
                    Ok(())
                }),
                element!("img", |el| {
                    let alt = el.get_attribute("alt").unwrap_or_default();
                    el.replace(alt.trim(), ContentType::Html);
                    Ok(())
                }),
                element!(
                    "p, h1, h2, h3, h4, h5, h6, table, ul, ol, blockquote, hr",
                    |el| {
                        let marker = PARA.to_string();
                        el.before(&marker, ContentType::Text);
                        el.after(&marker, ContentType::Text);
                        el.remove_and_keep_content();
                        Ok(())
                    }
                ),
                element!(
                    "div, tr, section, header, footer, article, center, address",
                    |el| {
                        let marker = LINE.to_string();
                        el.before(&marker, ContentType::Text);
                        el.after(&marker, ContentType::Text);
                        el.remove_and_keep_content();
                        Ok(())
                    }
                ),
                element!("li", |el| {
                    el.before(&format!("{LINE}- "), ContentType::Text);
                    el.after(&LINE.to_string(), ContentType::Text);
                    el.remove_and_keep_content();
                    Ok(())
                }),
                element!("td, th", |el| {
                    el.after(" ", ContentType::Text);
                    el.remove_and_keep_content();
                    Ok(())
                }),
                element!("a", |el| {
                    let href = el.get_attribute("href").map(|href| decode_entities(&href));
                    el.remove_and_keep_content();
                    let Some(href) = href.filter(|href| !href.is_empty() && !href.starts_with('#'))
                    else {
                        return Ok(());
                    };
                    *link_text.borrow_mut() = Some(String::new());
                    let link_text = link_text.clone();
                    if let Some(handlers) = el.end_tag_handlers() {
                        let handler: lol_html::EndTagHandler<'static> = Box::new(move |end| {
                            let seen = link_text.borrow_mut().take().unwrap_or_default();
                            let seen = decode_entities(seen.trim());
                            let shown = href.strip_prefix("mailto:").unwrap_or(&href);
                            if seen != href && seen != shown {
                                end.after(&format!(" ({shown})"), ContentType::Text);
                            }
                            Ok(())
                        });
                        handlers.push(handler);
                    }
                    Ok(())
                }),
                text!("a", move |chunk| {
                    if let Some(buffer) = link_text_for_chunks.borrow_mut().as_mut() {
                        buffer.push_str(chunk.as_str());
                    }
                    Ok(())
                }),
                element!("*", |el| {
                    if !el.removed() {
                        el.remove_and_keep_content();
                    }
                    Ok(())
                }),
            ],
            document_content_handlers: vec![
                doctype!(|doctype| {
                    doctype.remove();
                    Ok(())
                }),
                doc_comments!(|comment| {
                    comment.remove();
                    Ok(())
                }),
            ],
            ..RewriteStrSettings::new()
        },
    )
    .unwrap_or_else(|_| strip_tags(html));
    tidy(&decode_entities(&rewritten))
}

/// Removes HTML tags and comments from text (not entities).
pub(crate) fn strip_tags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('<') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let is_tag = after
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || matches!(c, '/' | '!' | '?'));
        if !is_tag {
            out.push('<');
            rest = after;
            continue;
        }
        let end = if after.starts_with("!--") {
            after.find("-->").map(|end| end + 3)
        } else {
            after.find('>').map(|end| end + 1)
        };
        match end {
            Some(end) => rest = &after[end..],
            None => {
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Collapses the HTML source's whitespace, places the wanted breaks, trims lines.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Newlines owed before the next visible character, and a space owed.
    let mut pending_breaks = 0usize;
    let mut pending_space = false;
    for ch in text.chars() {
        match ch {
            BREAK => pending_breaks = (pending_breaks + 1).min(2),
            LINE => pending_breaks = pending_breaks.max(1),
            PARA => pending_breaks = 2,
            _ if ch.is_whitespace() && ch != '\u{a0}' => pending_space = true,
            _ => {
                if pending_breaks > 0 {
                    if !out.is_empty() {
                        while out.ends_with(' ') {
                            out.pop();
                        }
                        out.extend(std::iter::repeat_n('\n', pending_breaks));
                    }
                } else if pending_space && !out.is_empty() && !out.ends_with('\n') {
                    out.push(' ');
                }
                pending_breaks = 0;
                pending_space = false;
                out.push(if ch == '\u{a0}' { ' ' } else { ch });
            }
        }
    }
    while out.ends_with(' ') {
        out.pop();
    }
    out.push('\n');
    out
}

/// Decodes character references: numeric ones and the named ones emails use.
pub fn decode_entities(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let end = after
            .char_indices()
            .take(12)
            .find(|&(_, c)| c == ';')
            .map(|(index, _)| index);
        let decoded = end.and_then(|end| decode_reference(&after[..end]).map(|c| (c, end)));
        match decoded {
            Some((ch, end)) => {
                out.push(ch);
                rest = &after[end + 1..];
            }
            None => {
                out.push('&');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn decode_reference(name: &str) -> Option<char> {
    if let Some(number) = name.strip_prefix('#') {
        let code = match number.strip_prefix(['x', 'X']) {
            Some(hex) => u32::from_str_radix(hex, 16).ok()?,
            None => number.parse().ok()?,
        };
        return char::from_u32(code);
    }
    Some(match name {
        "amp" => '&',
        "lt" => '<',
        "gt" => '>',
        "quot" => '"',
        "apos" => '\'',
        "nbsp" => '\u{a0}',
        "copy" => '©',
        "reg" => '®',
        "trade" => '™',
        "hellip" => '…',
        "mdash" => '—',
        "ndash" => '–',
        "lsquo" => '‘',
        "rsquo" => '’',
        "ldquo" => '“',
        "rdquo" => '”',
        "bull" => '•',
        "middot" => '·',
        "euro" => '€',
        "pound" => '£',
        "yen" => '¥',
        "cent" => '¢',
        "times" => '×',
        "laquo" => '«',
        "raquo" => '»',
        "deg" => '°',
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_lists_links_and_images() {
        let html = r#"<!DOCTYPE html><html><head><title>T</title><style>p{color:red}</style></head>
            <body><h1>Hello   Ada</h1>
            <p>Your cart:<!-- hidden --></p><ul><li>Tea &amp; cups</li><li>Pot</li></ul>
            <p><a href="https://shop.test/cart?a=1&amp;b=2">Back to cart</a>
            <a href="https://shop.test">https://shop.test</a></p>
            <img src="x.png" alt="Logo"><br>Bye&nbsp;now</body></html>"#;
        assert_eq!(
            html_to_text(html),
            "Hello Ada\n\nYour cart:\n\n- Tea & cups\n- Pot\n\nBack to cart (https://shop.test/cart?a=1&b=2) https://shop.test\n\nLogo\nBye now\n"
        );
    }

    #[test]
    fn tags_are_stripped() {
        assert_eq!(strip_tags("<p>a <b>b</b><!-- c --> 1 < 2</p>"), "a b 1 < 2");
    }

    #[test]
    fn entities() {
        assert_eq!(
            decode_entities("a &amp; b &#39;c&#x27; &unknown; &"),
            "a & b 'c' &unknown; &"
        );
    }
}
