//! Klaviyo (Django-style) template syntax → minijinja syntax.
//!
//! The translation is a rewrite of tags only: text between tags is copied byte for byte and
//! every newline stays where it was, so a line number minijinja reports is a line of the
//! original template. What changes:
//!
//! - filter arguments: `x|default:"there"` → `x|default("there")`, `|join:', '`,
//!   `|floatformat:2`, `|lookup:'Loyalty Points'` …;
//! - `forloop.counter` (`counter0`, `revcounter`, `revcounter0`, `first`, `last`) → `loop.*`;
//!   `True`/`False`/`None` → `true`/`false`/`none`;
//! - `{% for … %}…{% empty %}…{% endfor %}` → `{% for … %}…{% else %}…{% endfor %}`, with
//!   `reversed` and `dict.items` iteration;
//! - `{% with a=b c=d %}` and `{% with b as a %}` → `{% with a=b, c=d %}`;
//! - `{% ifequal %}`/`{% ifnotequal %}`, `{% firstof %}`, `{% now %}`, `{% autoescape on %}`;
//! - `{% comment %}…{% endcomment %}` is dropped, `{% load … %}` ignored;
//! - Klaviyo's `{% unsubscribe %}`, `{% unsubscribe_link %}`, `{% manage_preferences %}` and
//!   `{% manage_preferences_link %}` become links to Signalbox's pages.
//!
//! Anything else (unknown tags and filters, `{% catalog %}`, `forloop.parentloop`) is refused
//! with the line and the construct, so a template never fails later, at send time, on syntax.

use super::{Part, TemplateError};

/// Filters a template may use: minijinja's built-ins that keep Django's meaning, and the
/// Django/Klaviyo filters registered in `filters.rs`.
pub(crate) const KNOWN_FILTERS: &[&str] = &[
    // minijinja built-ins with Django's (or a compatible) meaning.
    "abs",
    "capitalize",
    "dictsort",
    "e",
    "escape",
    "first",
    "float",
    "int",
    "items",
    "join",
    "last",
    "length",
    "list",
    "lower",
    "max",
    "min",
    "replace",
    "reverse",
    "round",
    "safe",
    "sort",
    "split",
    "string",
    "sum",
    "title",
    "trim",
    "unique",
    "upper",
    "urlencode",
    // Registered in filters.rs.
    "add",
    "capfirst",
    "currency_format",
    "cut",
    "date",
    "default",
    "default_if_none",
    "divide",
    "divisibleby",
    "floatformat",
    "format_date_string",
    "linebreaksbr",
    "lookup",
    "multiply",
    "pluralize",
    "slice",
    "striptags",
    "time",
    "truncatechars",
    "truncatewords",
    "wordcount",
    "yesno",
];

/// The result of translating one template part.
#[derive(Debug)]
pub(crate) struct Translated {
    pub(crate) source: String,
}

/// Translates `source` (one part of an email) to minijinja syntax.
pub(crate) fn translate(source: &str, part: Part) -> Result<Translated, TemplateError> {
    Translator {
        source,
        part,
        out: String::with_capacity(source.len() + source.len() / 8),
        blocks: Vec::new(),
    }
    .run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    If,
    For,
    ForEmpty,
    With,
    Autoescape,
    IfEqual,
    IfNotEqual,
}

impl Block {
    fn opening(self) -> &'static str {
        match self {
            Block::If => "if",
            Block::For | Block::ForEmpty => "for",
            Block::With => "with",
            Block::Autoescape => "autoescape",
            Block::IfEqual => "ifequal",
            Block::IfNotEqual => "ifnotequal",
        }
    }
}

struct Translator<'a> {
    source: &'a str,
    part: Part,
    out: String,
    /// Open blocks with the line of their opening tag.
    blocks: Vec<(Block, usize)>,
}

impl Translator<'_> {
    fn run(mut self) -> Result<Translated, TemplateError> {
        let source = self.source;
        let mut rest = 0;
        while let Some(found) = find_tag_start(&source[rest..]) {
            let start = rest + found;
            self.out.push_str(&source[rest..start]);
            let line = line_of(source, start);
            let opener = &source[start..start + 2];
            match opener {
                "{#" => {
                    let end = source[start + 2..]
                        .find("#}")
                        .ok_or_else(|| self.error(line, "{#", "comment is not closed with `#}`"))?;
                    let end = start + 2 + end + 2;
                    self.out.push_str(&source[start..end]);
                    rest = end;
                }
                _ => {
                    let closer = if opener == "{{" { "}}" } else { "%}" };
                    let inner_end = find_closer(&source[start + 2..], closer).ok_or_else(|| {
                        let construct = if opener == "{{" { "{{" } else { "{%" };
                        self.error(
                            line,
                            construct,
                            &format!("tag is not closed with `{closer}`"),
                        )
                    })?;
                    let inner = &source[start + 2..start + 2 + inner_end];
                    let end = start + 2 + inner_end + 2;
                    let written = self.out.len();
                    rest = if opener == "{{" {
                        self.variable(inner, line)?;
                        end
                    } else {
                        self.tag(inner, line, end)?
                    };
                    self.keep_line_count(&source[start..rest], written);
                }
            }
        }
        self.out.push_str(&source[rest..]);
        if let Some(&(block, line)) = self.blocks.last() {
            let opening = block.opening();
            return Err(self.error(
                line,
                &format!("{{% {opening} %}}"),
                &format!("`{{% {opening} %}}` is never closed"),
            ));
        }
        Ok(Translated { source: self.out })
    }

    /// A tag that spanned lines is written on one: the lines it dropped come back as an
    /// empty comment, so every later line keeps its number (errors at render name it).
    fn keep_line_count(&mut self, read: &str, written: usize) {
        let count = |text: &str| text.bytes().filter(|&b| b == b'\n').count();
        let missing = count(read).saturating_sub(count(&self.out[written..]));
        if missing > 0 {
            self.out.push_str("{#");
            self.out.extend(std::iter::repeat_n('\n', missing));
            self.out.push_str("#}");
        }
    }

    fn error(&self, line: usize, construct: &str, message: &str) -> TemplateError {
        TemplateError::Syntax {
            part: self.part,
            line,
            construct: construct.to_owned(),
            message: message.to_owned(),
        }
    }

    /// `{{ expression }}`.
    fn variable(&mut self, inner: &str, line: usize) -> Result<(), TemplateError> {
        let (lead, body, trail) = whitespace_control(inner);
        let expression = self.expression(body, line)?;
        self.out.push_str("{{");
        self.out.push_str(lead);
        self.out.push_str(&expression);
        self.out.push_str(trail);
        self.out.push_str("}}");
        Ok(())
    }

    /// `{% tag … %}`; returns where scanning resumes (after the tag, or after a whole
    /// `{% comment %}` block).
    fn tag(&mut self, inner: &str, line: usize, end: usize) -> Result<usize, TemplateError> {
        let (lead, body, trail) = whitespace_control(inner);
        let body = body.trim();
        let (name, args) = match body.find(char::is_whitespace) {
            Some(at) => (&body[..at], body[at..].trim()),
            None => (body, ""),
        };
        let construct = format!("{{% {name} %}}");
        let emit_tag = |this: &mut Self, text: &str| {
            this.out.push_str("{%");
            this.out.push_str(lead);
            this.out.push(' ');
            this.out.push_str(text);
            this.out.push(' ');
            this.out.push_str(trail);
            this.out.push_str("%}");
        };
        match name {
            "if" | "elif" => {
                if args.is_empty() {
                    return Err(self.error(line, &construct, "a condition is required"));
                }
                if name == "elif" {
                    self.expect_top(&[Block::If], line, &construct)?;
                } else {
                    self.blocks.push((Block::If, line));
                }
                let condition = self.expression(args, line)?;
                emit_tag(self, &format!("{name} {condition}"));
            }
            "else" => {
                self.expect_top(
                    &[Block::If, Block::IfEqual, Block::IfNotEqual],
                    line,
                    &construct,
                )?;
                emit_tag(self, "else");
            }
            "endif" | "endifequal" | "endifnotequal" => {
                let expected = match name {
                    "endif" => Block::If,
                    "endifequal" => Block::IfEqual,
                    _ => Block::IfNotEqual,
                };
                self.close(&[expected], line, &construct)?;
                emit_tag(self, "endif");
            }
            "ifequal" | "ifnotequal" => {
                let operands = split_top_level(args);
                if operands.len() != 2 {
                    return Err(self.error(line, &construct, "exactly two values are compared"));
                }
                let left = self.expression(operands[0], line)?;
                let right = self.expression(operands[1], line)?;
                let (block, operator) = if name == "ifequal" {
                    (Block::IfEqual, "==")
                } else {
                    (Block::IfNotEqual, "!=")
                };
                self.blocks.push((block, line));
                emit_tag(self, &format!("if ({left}) {operator} ({right})"));
            }
            "for" => {
                let translated = self.for_loop(args, line, &construct)?;
                self.blocks.push((Block::For, line));
                emit_tag(self, &translated);
            }
            "empty" => {
                self.expect_top(&[Block::For], line, &construct)?;
                if let Some(top) = self.blocks.last_mut() {
                    top.0 = Block::ForEmpty;
                }
                emit_tag(self, "else");
            }
            "endfor" => {
                self.close(&[Block::For, Block::ForEmpty], line, &construct)?;
                emit_tag(self, "endfor");
            }
            "with" => {
                let assignments = self.with_assignments(args, line, &construct)?;
                self.blocks.push((Block::With, line));
                emit_tag(self, &format!("with {assignments}"));
            }
            "endwith" => {
                self.close(&[Block::With], line, &construct)?;
                emit_tag(self, "endwith");
            }
            "autoescape" => {
                let flag = match args {
                    "on" => "true",
                    "off" => "false",
                    _ => return Err(self.error(line, &construct, "expected `on` or `off`")),
                };
                self.blocks.push((Block::Autoescape, line));
                emit_tag(self, &format!("autoescape {flag}"));
            }
            "endautoescape" => {
                self.close(&[Block::Autoescape], line, &construct)?;
                emit_tag(self, "endautoescape");
            }
            "comment" => {
                let source = self.source;
                let close = find_endcomment(&source[end..]).ok_or_else(|| {
                    self.error(line, &construct, "`{% comment %}` is never closed")
                })?;
                // The lines it covered come back through `keep_line_count`.
                return Ok(end + close.1);
            }
            "endcomment" => {
                return Err(self.error(line, &construct, "no `{% comment %}` is open"));
            }
            "load" => {}
            "firstof" => {
                let candidates = split_top_level(args);
                if candidates.is_empty() {
                    return Err(self.error(line, &construct, "at least one value is required"));
                }
                let mut alternatives = Vec::with_capacity(candidates.len());
                for candidate in candidates {
                    alternatives.push(format!("({})", self.expression(candidate, line)?));
                }
                self.out.push_str("{{ ");
                self.out.push_str(&alternatives.join(" or "));
                self.out.push_str(" }}");
            }
            "now" => {
                let format = if args.is_empty() {
                    "\"N j, Y\"".to_owned()
                } else {
                    self.expression(args, line)?
                };
                self.out.push_str(&format!("{{{{ now|date({format}) }}}}"));
            }
            "unsubscribe" | "manage_preferences" => {
                let (variable, default_text) = if name == "unsubscribe" {
                    ("unsubscribe_url", "Unsubscribe")
                } else {
                    ("manage_preferences_url", "Manage preferences")
                };
                let text = if args.is_empty() {
                    format!("{default_text:?}")
                } else {
                    self.expression(args, line)?
                };
                match self.part {
                    Part::Html => self.out.push_str(&format!(
                        "<a href=\"{{{{ {variable} }}}}\">{{{{ {text} }}}}</a>"
                    )),
                    Part::Subject | Part::Text => self
                        .out
                        .push_str(&format!("{{{{ {text} }}}}: {{{{ {variable} }}}}")),
                }
            }
            "unsubscribe_link" | "unsubscribe_url" => self.out.push_str("{{ unsubscribe_url }}"),
            "manage_preferences_link" | "manage_preferences_url" => {
                self.out.push_str("{{ manage_preferences_url }}")
            }
            "catalog" | "endcatalog" => {
                return Err(self.error(
                    line,
                    &construct,
                    "catalog lookups are not supported: put the item's fields in the event",
                ));
            }
            "" => return Err(self.error(line, "{% %}", "empty tag")),
            _ => {
                return Err(self.error(line, &construct, &format!("unknown tag `{name}`")));
            }
        }
        Ok(end)
    }

    fn expect_top(
        &self,
        allowed: &[Block],
        line: usize,
        construct: &str,
    ) -> Result<(), TemplateError> {
        match self.blocks.last() {
            Some((block, _)) if allowed.contains(block) => Ok(()),
            _ => Err(self.error(
                line,
                construct,
                &format!(
                    "`{construct}` outside of `{{% {} %}}`",
                    allowed[0].opening()
                ),
            )),
        }
    }

    fn close(
        &mut self,
        allowed: &[Block],
        line: usize,
        construct: &str,
    ) -> Result<(), TemplateError> {
        match self.blocks.last() {
            Some((block, _)) if allowed.contains(block) => {
                self.blocks.pop();
                Ok(())
            }
            Some(&(block, opened)) => Err(self.error(
                line,
                construct,
                &format!(
                    "`{construct}` closes nothing: `{{% {} %}}` from line {opened} is still open",
                    block.opening()
                ),
            )),
            None => Err(self.error(
                line,
                construct,
                &format!("`{construct}` without `{{% {} %}}`", allowed[0].opening()),
            )),
        }
    }

    /// `for TARGETS in ITERABLE [reversed]`.
    fn for_loop(&self, args: &str, line: usize, construct: &str) -> Result<String, TemplateError> {
        let words = split_top_level(args);
        let Some(in_at) = words.iter().position(|word| *word == "in") else {
            return Err(self.error(line, construct, "expected `for ITEM in LIST`"));
        };
        let targets = words[..in_at].join(" ");
        let mut iterable_words = &words[in_at + 1..];
        let reversed = iterable_words.last() == Some(&"reversed");
        if reversed {
            iterable_words = &iterable_words[..iterable_words.len() - 1];
        }
        if targets.is_empty() || iterable_words.is_empty() {
            return Err(self.error(line, construct, "expected `for ITEM in LIST`"));
        }
        for target in targets.split(',') {
            let target = target.trim();
            if !is_identifier(target) {
                return Err(self.error(
                    line,
                    construct,
                    &format!("`{target}` is not a variable name"),
                ));
            }
        }
        let mut iterable = self.expression(&iterable_words.join(" "), line)?;
        // Django iterates a dictionary's pairs with `dict.items` (no call).
        if targets.contains(',') {
            if let Some(base) = iterable.strip_suffix(".items") {
                iterable = format!("{base}|items");
            }
        }
        if reversed {
            iterable = format!("({iterable})|reverse");
        }
        Ok(format!("for {targets} in {iterable}"))
    }

    /// `a=b c=d` or `b as a` → `a=b, c=d`.
    fn with_assignments(
        &self,
        args: &str,
        line: usize,
        construct: &str,
    ) -> Result<String, TemplateError> {
        let words = split_top_level(args);
        if words.len() == 3 && words[1] == "as" && is_identifier(words[2]) {
            let value = self.expression(words[0], line)?;
            return Ok(format!("{}={value}", words[2]));
        }
        if words.is_empty() {
            return Err(self.error(line, construct, "expected `name=value`"));
        }
        let mut assignments = Vec::with_capacity(words.len());
        for word in words {
            let Some((name, value)) = word.split_once('=') else {
                return Err(self.error(
                    line,
                    construct,
                    &format!("expected `name=value`, found `{word}`"),
                ));
            };
            if !is_identifier(name) || value.is_empty() {
                return Err(self.error(
                    line,
                    construct,
                    &format!("expected `name=value`, found `{word}`"),
                ));
            }
            assignments.push(format!("{name}={}", self.expression(value, line)?));
        }
        Ok(assignments.join(", "))
    }

    /// Rewrites an expression: filter arguments, `forloop`, Python-style constants.
    fn expression(&self, expression: &str, line: usize) -> Result<String, TemplateError> {
        let tokens = tokenize(expression).map_err(|message| {
            self.error(line, &format!("{{{{ {} }}}}", expression.trim()), &message)
        })?;
        let mut out = String::with_capacity(expression.len() + 8);
        let mut index = 0;
        while index < tokens.len() {
            let token = &tokens[index];
            match token.kind {
                TokenKind::Pipe => {
                    out.push('|');
                    index += 1;
                    index = skip_space(&tokens, index, &mut out);
                    let Some(name) = tokens.get(index).filter(|t| t.kind == TokenKind::Name) else {
                        return Err(self.error(line, "|", "a filter name must follow `|`"));
                    };
                    if !KNOWN_FILTERS.contains(&name.text) {
                        return Err(self.error(
                            line,
                            &format!("|{}", name.text),
                            &format!("unknown filter `{}`", name.text),
                        ));
                    }
                    out.push_str(name.text);
                    index += 1;
                    // Django's argument: `|name:ARG`, ARG one literal or variable.
                    let mut lookahead = index;
                    while tokens.get(lookahead).map(|t| t.kind) == Some(TokenKind::Space) {
                        lookahead += 1;
                    }
                    if tokens.get(lookahead).map(|t| t.kind) == Some(TokenKind::Colon) {
                        lookahead += 1;
                        while tokens.get(lookahead).map(|t| t.kind) == Some(TokenKind::Space) {
                            lookahead += 1;
                        }
                        let (argument, next) =
                            filter_argument(&tokens, lookahead).ok_or_else(|| {
                                self.error(
                                    line,
                                    &format!("|{}:", name.text),
                                    &format!("filter `{}` needs an argument after `:`", name.text),
                                )
                            })?;
                        out.push('(');
                        out.push_str(&argument);
                        out.push(')');
                        index = next;
                    }
                }
                TokenKind::Name if token.text == "forloop" => {
                    let (replacement, next) = forloop(&tokens, index)
                        .map_err(|message| self.error(line, "forloop", &message))?;
                    out.push_str(replacement);
                    index = next;
                }
                TokenKind::Str => {
                    out.push_str(&django_string(token.text));
                    index += 1;
                }
                TokenKind::Name if !follows_dot(&tokens, index) => {
                    out.push_str(match token.text {
                        "True" => "true",
                        "False" => "false",
                        "None" => "none",
                        other => other,
                    });
                    index += 1;
                }
                _ => {
                    out.push_str(token.text);
                    index += 1;
                }
            }
        }
        Ok(out)
    }
}

fn skip_space(tokens: &[Token<'_>], mut index: usize, out: &mut String) -> usize {
    while let Some(token) = tokens.get(index).filter(|t| t.kind == TokenKind::Space) {
        out.push_str(token.text);
        index += 1;
    }
    index
}

fn follows_dot(tokens: &[Token<'_>], index: usize) -> bool {
    index > 0 && tokens[index - 1].kind == TokenKind::Dot
}

/// A Django filter argument starting at `index`: a string, a number (optionally negative)
/// or a dotted variable path. Returns the translated argument and the next token index.
fn filter_argument(tokens: &[Token<'_>], index: usize) -> Option<(String, usize)> {
    let first = tokens.get(index)?;
    match first.kind {
        TokenKind::Str => Some((django_string(first.text), index + 1)),
        TokenKind::Number => Some((first.text.to_owned(), index + 1)),
        TokenKind::Other if first.text == "-" => {
            let number = tokens
                .get(index + 1)
                .filter(|t| t.kind == TokenKind::Number)?;
            Some((format!("-{}", number.text), index + 2))
        }
        TokenKind::Name => {
            let mut text = String::new();
            let mut at = index;
            if first.text == "forloop" {
                let (replacement, next) = forloop(tokens, index).ok()?;
                return Some((replacement.to_owned(), next));
            }
            loop {
                let token = tokens.get(at)?;
                match token.text {
                    "True" => text.push_str("true"),
                    "False" => text.push_str("false"),
                    "None" => text.push_str("none"),
                    other => text.push_str(other),
                }
                at += 1;
                let dot = tokens.get(at).filter(|t| t.kind == TokenKind::Dot);
                let after = tokens
                    .get(at + 1)
                    .filter(|t| matches!(t.kind, TokenKind::Name | TokenKind::Number));
                match (dot, after) {
                    (Some(_), Some(_)) => {
                        text.push('.');
                        at += 1;
                    }
                    _ => break,
                }
            }
            Some((text, at))
        }
        _ => None,
    }
}

/// A Django string literal as a minijinja one. Django unescapes only `\\` and the quote
/// (`"F j, Y \a\t g"` keeps its backslashes for the date filter); minijinja would turn `\t`
/// into a tab, so other backslashes are doubled.
fn django_string(literal: &str) -> String {
    let quote = literal.chars().next().unwrap_or('"');
    let mut out = String::with_capacity(literal.len() + 4);
    let mut chars = literal.chars().peekable();
    while let Some(ch) = chars.next() {
        if ch != '\\' {
            out.push(ch);
            continue;
        }
        match chars.peek() {
            Some(&next) if next == '\\' || next == quote => {
                out.push('\\');
                out.push(next);
                chars.next();
            }
            _ => out.push_str("\\\\"),
        }
    }
    out
}

/// `forloop.counter` and friends at `index` (which holds `forloop`).
fn forloop(tokens: &[Token<'_>], index: usize) -> Result<(&'static str, usize), String> {
    let attribute = match (tokens.get(index + 1), tokens.get(index + 2)) {
        (Some(dot), Some(name)) if dot.kind == TokenKind::Dot && name.kind == TokenKind::Name => {
            name.text
        }
        _ => return Err("use `forloop.counter`, `forloop.first` …".to_owned()),
    };
    let replacement = match attribute {
        "counter" => "loop.index",
        "counter0" => "loop.index0",
        "revcounter" => "loop.revindex",
        "revcounter0" => "loop.revindex0",
        "first" => "loop.first",
        "last" => "loop.last",
        other => return Err(format!("`forloop.{other}` is not supported")),
    };
    Ok((replacement, index + 3))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TokenKind {
    Space,
    Name,
    Number,
    Str,
    Pipe,
    Colon,
    Dot,
    Other,
}

#[derive(Debug)]
struct Token<'a> {
    kind: TokenKind,
    text: &'a str,
}

fn tokenize(expression: &str) -> Result<Vec<Token<'_>>, String> {
    let bytes = expression.as_bytes();
    let mut tokens = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let start = at;
        let byte = bytes[at];
        let kind = match byte {
            b' ' | b'\t' | b'\n' | b'\r' => {
                while at < bytes.len() && bytes[at].is_ascii_whitespace() {
                    at += 1;
                }
                TokenKind::Space
            }
            b'"' | b'\'' => {
                at += 1;
                loop {
                    match bytes.get(at) {
                        None => return Err("string literal is not closed".to_owned()),
                        Some(b'\\') => at += 2,
                        Some(&quote) if quote == byte => {
                            at += 1;
                            break;
                        }
                        Some(_) => at += 1,
                    }
                }
                TokenKind::Str
            }
            b'0'..=b'9' => {
                while at < bytes.len() && (bytes[at].is_ascii_digit() || bytes[at] == b'.') {
                    // A dot ends the number unless a digit follows (`items.0.name`).
                    if bytes[at] == b'.' && !bytes.get(at + 1).is_some_and(u8::is_ascii_digit) {
                        break;
                    }
                    // `items.0.name`: after a path dot, only the integer belongs to it.
                    if bytes[at] == b'.' && start > 0 && bytes[start - 1] == b'.' {
                        break;
                    }
                    at += 1;
                }
                TokenKind::Number
            }
            b'|' => {
                at += 1;
                TokenKind::Pipe
            }
            b':' => {
                at += 1;
                TokenKind::Colon
            }
            b'.' => {
                at += 1;
                TokenKind::Dot
            }
            _ if byte == b'_' || byte.is_ascii_alphabetic() || byte >= 0x80 => {
                while at < bytes.len()
                    && (bytes[at] == b'_' || bytes[at].is_ascii_alphanumeric() || bytes[at] >= 0x80)
                {
                    at += 1;
                }
                TokenKind::Name
            }
            _ => {
                at += 1;
                TokenKind::Other
            }
        };
        let at_clamped = at.min(bytes.len());
        tokens.push(Token {
            kind,
            text: &expression[start..at_clamped],
        });
        at = at_clamped;
    }
    Ok(tokens)
}

/// Splits tag arguments at top-level whitespace (not inside quotes or brackets).
fn split_top_level(args: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut quote: Option<char> = None;
    let mut start: Option<usize> = None;
    for (at, ch) in args.char_indices() {
        match quote {
            Some(q) if ch == q => quote = None,
            Some(_) => {}
            None => match ch {
                '"' | '\'' => quote = Some(ch),
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => depth -= 1,
                _ => {}
            },
        }
        if ch.is_whitespace() && quote.is_none() && depth == 0 {
            if let Some(begin) = start.take() {
                parts.push(&args[begin..at]);
            }
        } else if start.is_none() {
            start = Some(at);
        }
    }
    if let Some(begin) = start {
        parts.push(&args[begin..]);
    }
    parts
}

fn is_identifier(text: &str) -> bool {
    let mut chars = text.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// Splits off Jinja whitespace-control markers (`{%-`, `-%}`, `+`), which pass through.
fn whitespace_control(inner: &str) -> (&str, &str, &str) {
    let lead = if inner.starts_with(['-', '+']) {
        &inner[..1]
    } else {
        ""
    };
    let body = &inner[lead.len()..];
    let trail = if body.ends_with(['-', '+']) {
        &body[body.len() - 1..]
    } else {
        ""
    };
    (lead, &body[..body.len() - trail.len()], trail)
}

fn find_tag_start(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = text[from..].find('{') {
        let at = from + offset;
        if matches!(bytes.get(at + 1), Some(b'{' | b'%' | b'#')) {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// The offset of `closer` in `text`, skipping string literals.
fn find_closer(text: &str, closer: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut quote: Option<u8> = None;
    let mut at = 0;
    while at < bytes.len() {
        let byte = bytes[at];
        match quote {
            Some(_) if byte == b'\\' => at += 1,
            Some(q) if byte == q => quote = None,
            Some(_) => {}
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            // Bytes, not `text[at..]`: `at` may be inside a multi-byte character.
            None if bytes[at..].starts_with(closer.as_bytes()) => return Some(at),
            None => {}
        }
        at += 1;
    }
    None
}

/// Finds `{% endcomment %}`; returns (offset of the tag, offset just after it).
fn find_endcomment(text: &str) -> Option<(usize, usize)> {
    let mut from = 0;
    while let Some(offset) = text[from..].find("{%") {
        let at = from + offset;
        let close = text[at + 2..].find("%}")?;
        let inner = text[at + 2..at + 2 + close].trim_matches(['-', '+']).trim();
        if inner == "endcomment" {
            return Some((at, at + 2 + close + 2));
        }
        from = at + 2;
    }
    None
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        let translated = translate(input, Part::Html).expect("translates");
        assert_eq!(translated.source, expected, "input: {input}");
    }

    fn check_error(input: &str, line: usize, construct: &str) {
        match translate(input, Part::Html) {
            Err(TemplateError::Syntax {
                line: got_line,
                construct: got,
                ..
            }) => {
                assert_eq!(
                    (got_line, got.as_str()),
                    (line, construct),
                    "input: {input}"
                );
            }
            other => panic!("expected a syntax error for {input}, got {other:?}"),
        }
    }

    #[test]
    fn filter_arguments() {
        check(
            r#"{{ first_name|default:"there" }}"#,
            r#"{{ first_name|default("there") }}"#,
        );
        check(
            "{{ person|lookup:'Loyalty Points' }}",
            "{{ person|lookup('Loyalty Points') }}",
        );
        check(
            "{{ event.ItemNames|join:', ' }}",
            "{{ event.ItemNames|join(', ') }}",
        );
        check(
            "{{ x|floatformat:-2|upper }}",
            "{{ x|floatformat(-2)|upper }}",
        );
        check(
            "{{ x|default:fallback.name }}",
            "{{ x|default(fallback.name) }}",
        );
        check("{{ x|truncatechars:10 }}", "{{ x|truncatechars(10) }}");
        check("{{ x|date:\"F j, Y\" }}", "{{ x|date(\"F j, Y\") }}");
        check("{{ x|default:'a|b:c' }}", "{{ x|default('a|b:c') }}");
    }

    #[test]
    fn constants_and_forloop() {
        check(
            "{% if x == None %}{% endif %}",
            "{% if x == none %}{% endif %}",
        );
        check(
            "{% for i in l %}{{ forloop.counter }}{% endfor %}",
            "{% for i in l %}{{ loop.index }}{% endfor %}",
        );
        check("{{ event.True }}", "{{ event.True }}");
    }

    #[test]
    fn blocks() {
        check(
            "{% for i in l %}a{% empty %}b{% endfor %}",
            "{% for i in l %}a{% else %}b{% endfor %}",
        );
        check(
            "{% for k, v in d.items %}{% endfor %}",
            "{% for k, v in d|items %}{% endfor %}",
        );
        check(
            "{% for i in l reversed %}{% endfor %}",
            "{% for i in (l)|reverse %}{% endfor %}",
        );
        check(
            "{% with a=b c='d' %}{% endwith %}",
            "{% with a=b, c='d' %}{% endwith %}",
        );
        check(
            "{% with b as a %}{% endwith %}",
            "{% with a=b %}{% endwith %}",
        );
        check("a{% comment %}x\ny{% endcomment %}b", "a{#\n#}b");
        check("{% load static %}x", "x");
        // A tag spanning lines keeps the lines after it where they were.
        check("{%load on\n%}x", "{#\n#}x");
        check("{% if a\n %}x{% endif %}", "{% if a %}{#\n#}x{% endif %}");
        check("{% firstof a b 'c' %}", "{{ (a) or (b) or ('c') }}");
    }

    #[test]
    fn non_ascii_inside_a_tag_is_not_a_panic() {
        // Found by fuzzing: the closing `}}` was searched with `text[at..]` at every byte,
        // which panics inside a multi-byte character.
        check("{{ prénom }}", "{{ prénom }}");
        check(
            "{% if x == 'é' and ü %}é{% endif %}",
            "{% if x == 'é' and ü %}é{% endif %}",
        );
        check_error("{{é", 1, "{{");
    }

    #[test]
    fn errors_name_line_and_construct() {
        check_error("a\n{% if x %}\nb", 2, "{% if %}");
        check_error("{% endfor %}", 1, "{% endfor %}");
        check_error("{% for x in l %}{% endif %}", 1, "{% endif %}");
        check_error("x\n\n{{ y|nosuch }}", 3, "|nosuch");
        check_error("{% catalog x %}", 1, "{% catalog %}");
        check_error("{% spaceless %}", 1, "{% spaceless %}");
        check_error("{{ x", 1, "{{");
        check_error("{% if x %}{% empty %}{% endif %}", 1, "{% empty %}");
        check_error("{{ forloop.parentloop.counter }}", 1, "forloop");
    }

    /// Fuzz target of the translation alone: any text either translates, keeping its text
    /// between tags and every line where it was, or is refused at a line of its own.
    /// `PROPTEST_CASES` runs more than the default few hundred cases.
    mod fuzz {
        use proptest::prelude::*;
        use proptest::sample::select;

        use super::*;

        const PIECES: &[&str] = &[
            "{{",
            "}}",
            "{%",
            "%}",
            "{#",
            "#}",
            "{",
            "}",
            "%",
            "#",
            "-",
            "+",
            " ",
            "\n",
            "\t",
            "if",
            "elif",
            "else",
            "endif",
            "for",
            " in ",
            "reversed",
            "empty",
            "endfor",
            "with",
            " as ",
            "endwith",
            "ifequal",
            "endifequal",
            "firstof",
            "now",
            "comment",
            "endcomment",
            "autoescape",
            " on",
            "load",
            "unsubscribe",
            "x",
            "a.b",
            "a.0.c",
            "forloop.counter",
            "forloop.",
            "|",
            ":",
            "|default:",
            "|join:', '",
            "'",
            "\"",
            "\\",
            "=",
            "1.5",
            "-2",
            "True",
            "é",
            "😀",
            "\u{0}",
        ];

        fn config() -> proptest::test_runner::Config {
            let mut config = proptest::test_runner::Config {
                failure_persistence: None,
                ..proptest::test_runner::Config::default()
            };
            if std::env::var_os("PROPTEST_CASES").is_none() {
                config.cases = 4096;
            }
            config
        }

        proptest! {
            #![proptest_config(config())]

            #[test]
            fn fuzz_translate(source in prop_oneof![
                prop::collection::vec(select(PIECES), 0..60).prop_map(|p| p.concat()),
                any::<String>(),
            ]) {
                let lines = source.split('\n').count();
                match translate(&source, Part::Html) {
                    Ok(translated) => {
                        prop_assert_eq!(translated.source.split('\n').count(), lines, "{:?} became {:?}", source, translated.source);
                        // Text outside tags is copied: a source without tags is unchanged.
                        if !source.contains("{{") && !source.contains("{%") && !source.contains("{#") {
                            prop_assert_eq!(&translated.source, &source);
                        }
                    }
                    Err(TemplateError::Syntax { line, .. }) => {
                        prop_assert!((1..=lines).contains(&line), "line {} of {:?}", line, source);
                    }
                    Err(other) => prop_assert!(false, "{:?}", other),
                }
            }
        }
    }
}
