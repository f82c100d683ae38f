//! Klaviyo's `filter` syntax, parsed into a list of conditions that are ANDed.
//!
//! ```text
//! filter    := condition ("," condition)*
//! condition := operator "(" field ["," value] ")"
//! value     := string | number | true | false | null | datetime | "[" value ("," value)* "]"
//! ```
//!
//! Strings are double-quoted with JSON escapes (what the SDK's `FilterBuilder` emits for one
//! value) or single-quoted as Python writes them (what it emits inside lists); datetimes
//! are *unquoted* ISO 8601 (`2023-04-19T00:00:00Z`, `2023-04-19T00:00:00+00:00`, a bare date, or
//! a local time without an offset that the caller resolves in a timezone). This module is pure:
//! which fields and operators an endpoint accepts is checked by [`check`] against a table the
//! endpoint owns. Nothing here panics on any input.

use std::fmt;

use jiff::civil;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_LEN: usize = 8 * 1024;
/// Most conditions in one filter.
pub const MAX_CONDITIONS: usize = 50;
/// Most values in one list.
pub const MAX_LIST_LEN: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Equals,
    Any,
    GreaterThan,
    GreaterOrEqual,
    LessThan,
    LessOrEqual,
    Contains,
    ContainsAny,
    ContainsAll,
    StartsWith,
    EndsWith,
    Has,
}

impl Op {
    pub const ALL: [Op; 12] = [
        Op::Equals,
        Op::Any,
        Op::GreaterThan,
        Op::GreaterOrEqual,
        Op::LessThan,
        Op::LessOrEqual,
        Op::Contains,
        Op::ContainsAny,
        Op::ContainsAll,
        Op::StartsWith,
        Op::EndsWith,
        Op::Has,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::Any => "any",
            Op::GreaterThan => "greater-than",
            Op::GreaterOrEqual => "greater-or-equal",
            Op::LessThan => "less-than",
            Op::LessOrEqual => "less-or-equal",
            Op::Contains => "contains",
            Op::ContainsAny => "contains-any",
            Op::ContainsAll => "contains-all",
            Op::StartsWith => "starts-with",
            Op::EndsWith => "ends-with",
            Op::Has => "has",
        }
    }

    fn from_name(name: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|op| op.as_str() == name)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A datetime as written: with an offset it is an instant; without one it is a wall-clock
/// time the endpoint resolves in its timezone (UTC unless the request names another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateTimeLit {
    Instant(Timestamp),
    Local(civil::DateTime),
}

impl DateTimeLit {
    pub fn resolve(&self, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            DateTimeLit::Instant(ts) => Some(*ts),
            DateTimeLit::Local(dt) => tz.to_ambiguous_timestamp(*dt).compatible().ok(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Number(f64),
    Bool(bool),
    Null,
    DateTime(DateTimeLit),
    List(Vec<Value>),
}

impl Value {
    /// What kind of value this is, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Null => "null",
            Value::DateTime(_) => "a datetime",
            Value::List(_) => "a list",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub op: Op,
    pub field: String,
    /// `None` only for `has(field)`.
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FilterError {
    pub message: String,
}

impl FilterError {
    fn at(position: usize, message: impl fmt::Display) -> FilterError {
        FilterError {
            message: format!("invalid filter at character {}: {message}", position + 1),
        }
    }

    pub fn new(message: impl Into<String>) -> FilterError {
        FilterError {
            message: message.into(),
        }
    }
}

/// Parses a whole `filter` parameter.
pub fn parse(input: &str) -> Result<Vec<Condition>, FilterError> {
    if input.len() > MAX_FILTER_LEN {
        return Err(FilterError::new(format!(
            "filter is longer than {MAX_FILTER_LEN} characters"
        )));
    }
    let mut parser = Parser { input, pos: 0 };
    let mut conditions = Vec::new();
    loop {
        parser.skip_ws();
        conditions.push(parser.condition()?);
        if conditions.len() > MAX_CONDITIONS {
            return Err(FilterError::new(format!(
                "a filter may combine at most {MAX_CONDITIONS} conditions"
            )));
        }
        parser.skip_ws();
        match parser.peek() {
            None => return Ok(conditions),
            Some(',') => parser.bump(),
            Some(c) => {
                return Err(FilterError::at(
                    parser.pos,
                    format_args!("expected ',' between conditions, found '{c}'"),
                ))
            }
        }
    }
}

/// Which operators an endpoint accepts on a field.
#[derive(Debug, Clone, Copy)]
pub struct FieldRule {
    pub field: &'static str,
    pub ops: &'static [Op],
}

/// Checks every condition against an endpoint's table of fields and operators.
pub fn check(conditions: &[Condition], rules: &[FieldRule]) -> Result<(), FilterError> {
    for condition in conditions {
        let Some(rule) = rules.iter().find(|r| r.field == condition.field) else {
            let fields: Vec<&str> = rules.iter().map(|r| r.field).collect();
            return Err(FilterError::new(format!(
                "'{}' is not a valid field for this endpoint; filterable fields: {}",
                condition.field,
                fields.join(", ")
            )));
        };
        if !rule.ops.contains(&condition.op) {
            let ops: Vec<&str> = rule.ops.iter().map(|op| op.as_str()).collect();
            return Err(FilterError::new(format!(
                "'{}' is not a valid operator for '{}'; allowed: {}",
                condition.op,
                condition.field,
                ops.join(", ")
            )));
        }
    }
    Ok(())
}

impl Condition {
    /// The values an `equals` or `any` condition names, as strings.
    pub fn strings(&self) -> Result<Vec<String>, FilterError> {
        let wrong = |v: &Value| {
            FilterError::new(format!(
                "'{}({},…)' needs a quoted string, found {}",
                self.op,
                self.field,
                v.kind()
            ))
        };
        match (&self.op, &self.value) {
            (Op::Any, Some(Value::List(items))) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong(other)),
                })
                .collect(),
            (Op::Any, Some(other)) => Err(FilterError::new(format!(
                "'any({},…)' needs a list such as [\"a\",\"b\"], found {}",
                self.field,
                other.kind()
            ))),
            (_, Some(Value::String(s))) => Ok(vec![s.clone()]),
            (_, Some(other)) => Err(wrong(other)),
            (_, None) => Err(FilterError::new(format!(
                "'{}({})' needs a value",
                self.op, self.field
            ))),
        }
    }

    /// The single string a condition names.
    pub fn string(&self) -> Result<String, FilterError> {
        let mut values = self.strings()?;
        match values.len() {
            1 => Ok(values.remove(0)),
            _ => Err(FilterError::new(format!(
                "'{}({},…)' needs one value",
                self.op, self.field
            ))),
        }
    }

    /// The instant a comparison names: an unquoted datetime (resolved in `tz` when it has no
    /// offset) or, when `seconds` is set, an integer of Unix seconds.
    pub fn instant(&self, tz: &TimeZone, seconds: bool) -> Result<Timestamp, FilterError> {
        match &self.value {
            Some(Value::DateTime(dt)) => dt.resolve(tz).ok_or_else(|| {
                FilterError::new(format!("'{}' datetime is out of range", self.field))
            }),
            Some(Value::Number(n)) if seconds => {
                if n.fract() != 0.0 {
                    return Err(FilterError::new(format!(
                        "'{}' needs whole seconds, found {n}",
                        self.field
                    )));
                }
                Timestamp::from_second(*n as i64).map_err(|_| {
                    FilterError::new(format!("'{}' timestamp {n} is out of range", self.field))
                })
            }
            Some(Value::String(s)) => Err(FilterError::new(format!(
                "'{}' needs an unquoted datetime such as 2023-04-19T00:00:00Z, found the string \"{s}\"",
                self.field
            ))),
            Some(other) => Err(FilterError::new(format!(
                "'{}' needs a datetime{}, found {}",
                self.field,
                if seconds { " or Unix seconds" } else { "" },
                other.kind()
            ))),
            None => Err(FilterError::new(format!(
                "'{}({})' needs a value",
                self.op, self.field
            ))),
        }
    }
}

struct Parser<'a> {
    input: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.input[self.pos..].chars().next()
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
        }
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.bump();
        }
    }

    fn expect(&mut self, wanted: char) -> Result<(), FilterError> {
        self.skip_ws();
        match self.peek() {
            Some(c) if c == wanted => {
                self.bump();
                Ok(())
            }
            Some(c) => Err(FilterError::at(
                self.pos,
                format_args!("expected '{wanted}', found '{c}'"),
            )),
            None => Err(FilterError::at(
                self.pos,
                format_args!("expected '{wanted}', found the end"),
            )),
        }
    }

    fn condition(&mut self) -> Result<Condition, FilterError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            self.bump();
        }
        let name = &self.input[start..self.pos];
        if name.is_empty() {
            return Err(match self.peek() {
                Some(c) => {
                    FilterError::at(start, format_args!("expected an operator, found '{c}'"))
                }
                None => FilterError::at(start, "expected an operator, found the end"),
            });
        }
        let op = Op::from_name(name).ok_or_else(|| {
            let known: Vec<&str> = Op::ALL.iter().map(|op| op.as_str()).collect();
            FilterError::at(
                start,
                format_args!("unknown operator '{name}'; operators: {}", known.join(", ")),
            )
        })?;
        self.expect('(')?;
        let field = self.field()?;
        let value = if op == Op::Has {
            None
        } else {
            self.expect(',')?;
            self.skip_ws();
            Some(self.value(true)?)
        };
        self.expect(')')?;
        Ok(Condition { op, field, value })
    }

    /// A field name: anything up to `,` or `)` that is not a quote or bracket, trimmed.
    fn field(&mut self) -> Result<String, FilterError> {
        self.skip_ws();
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                ',' | ')' => break,
                '(' | '[' | ']' | '"' | '\'' => {
                    return Err(FilterError::at(
                        self.pos,
                        format_args!("unexpected '{c}' in a field name"),
                    ))
                }
                _ => self.bump(),
            }
        }
        let field = self.input[start..self.pos].trim();
        if field.is_empty() {
            return Err(FilterError::at(start, "expected a field name"));
        }
        Ok(field.to_owned())
    }

    fn value(&mut self, list_allowed: bool) -> Result<Value, FilterError> {
        match self.peek() {
            Some(quote @ ('"' | '\'')) => self.string(quote).map(Value::String),
            Some('[') if list_allowed => self.list(),
            Some('[') => Err(FilterError::at(self.pos, "lists cannot be nested")),
            Some(_) => self.bare(),
            None => Err(FilterError::at(self.pos, "expected a value, found the end")),
        }
    }

    fn list(&mut self) -> Result<Value, FilterError> {
        self.bump(); // '['
        let mut items = Vec::new();
        self.skip_ws();
        if self.peek() == Some(']') {
            return Err(FilterError::at(self.pos, "a list needs at least one value"));
        }
        loop {
            self.skip_ws();
            items.push(self.value(false)?);
            if items.len() > MAX_LIST_LEN {
                return Err(FilterError::at(
                    self.pos,
                    format_args!("a list may hold at most {MAX_LIST_LEN} values"),
                ));
            }
            self.skip_ws();
            match self.peek() {
                Some(',') => self.bump(),
                Some(']') => {
                    self.bump();
                    return Ok(Value::List(items));
                }
                Some(c) => {
                    return Err(FilterError::at(
                        self.pos,
                        format_args!("expected ',' or ']' in a list, found '{c}'"),
                    ))
                }
                None => return Err(FilterError::at(self.pos, "unterminated list")),
            }
        }
    }

    /// A quoted string: double quotes with JSON escapes, or single quotes as Python writes
    /// them (the SDK's `FilterBuilder` renders a list of strings with Python's `repr`).
    fn string(&mut self, quote: char) -> Result<String, FilterError> {
        let start = self.pos;
        self.bump(); // the opening quote
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(FilterError::at(start, "unterminated string"));
            };
            self.bump();
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let at = self.pos;
                    let Some(escaped) = self.peek() else {
                        return Err(FilterError::at(start, "unterminated string"));
                    };
                    self.bump();
                    match escaped {
                        '"' => out.push('"'),
                        '\'' => out.push('\''),
                        '\\' => out.push('\\'),
                        '/' => out.push('/'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        'u' => out.push(self.unicode_escape(at)?),
                        'x' => {
                            let code = self.hex(at, 2)?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        other => {
                            return Err(FilterError::at(
                                at,
                                format_args!("unknown escape '\\{other}'"),
                            ))
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex(&mut self, at: usize, len: usize) -> Result<u32, FilterError> {
        let digits = self.input.get(self.pos..self.pos + len);
        let code = digits
            .filter(|d| d.chars().all(|c| c.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| FilterError::at(at, format_args!("escape needs {len} hex digits")))?;
        self.pos += len;
        Ok(code)
    }

    fn unicode_escape(&mut self, at: usize) -> Result<char, FilterError> {
        let high = self.hex(at, 4)?;
        if (0xD800..0xDC00).contains(&high) {
            if self.input[self.pos..].starts_with("\\u") {
                self.pos += 2;
                let low = self.hex(at, 4)?;
                if (0xDC00..0xE000).contains(&low) {
                    let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                    return char::from_u32(code)
                        .ok_or_else(|| FilterError::at(at, "invalid \\u escape"));
                }
            }
            return Err(FilterError::at(at, "unpaired surrogate in \\u escape"));
        }
        char::from_u32(high).ok_or_else(|| FilterError::at(at, "invalid \\u escape"))
    }

    /// An unquoted token: a keyword, a number or a datetime.
    fn bare(&mut self) -> Result<Value, FilterError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|c| !matches!(c, ',' | ')' | ']' | '(' | '[' | '"'))
        {
            self.bump();
        }
        let token = self.input[start..self.pos].trim();
        match token {
            "" => Err(FilterError::at(start, "expected a value")),
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            "null" => Ok(Value::Null),
            _ if looks_like_date(token) => parse_datetime(token)
                .map(Value::DateTime)
                .ok_or_else(|| FilterError::at(start, format_args!("invalid datetime '{token}'"))),
            _ if looks_like_number(token) => token
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite())
                .map(Value::Number)
                .ok_or_else(|| FilterError::at(start, format_args!("invalid number '{token}'"))),
            _ => Err(FilterError::at(
                start,
                format_args!("'{token}' is not a value; strings must be quoted"),
            )),
        }
    }
}

fn looks_like_date(token: &str) -> bool {
    let bytes = token.as_bytes();
    bytes.len() >= 10 && bytes[..4].iter().all(u8::is_ascii_digit) && bytes[4] == b'-'
}

fn looks_like_number(token: &str) -> bool {
    let digits = token.strip_prefix('-').unwrap_or(token);
    digits.starts_with(|c: char| c.is_ascii_digit())
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'))
}

/// An ISO 8601 datetime or date. A space where the offset's `+` should be is read as `+`,
/// since an unescaped `+` in a query string arrives as a space.
fn parse_datetime(token: &str) -> Option<DateTimeLit> {
    let repaired;
    let token = match token.get(10..).and_then(|rest| rest.rfind(' ')) {
        Some(i) if token.len() > 10 + i + 1 => {
            let (head, tail) = token.split_at(10 + i);
            repaired = format!("{head}+{}", &tail[1..]);
            repaired.as_str()
        }
        _ => token,
    };
    if let Ok(ts) = token.parse::<Timestamp>() {
        return Some(DateTimeLit::Instant(ts));
    }
    if token.contains('[') {
        return None;
    }
    token
        .parse::<civil::DateTime>()
        .ok()
        .map(DateTimeLit::Local)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn one(input: &str) -> Condition {
        let mut all = parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(all.len(), 1);
        all.remove(0)
    }

    fn err(input: &str) -> String {
        parse(input).unwrap_err().message
    }

    #[test]
    fn equals_string() {
        let c = one(r#"equals(email,"ann@example.com")"#);
        assert_eq!(c.op, Op::Equals);
        assert_eq!(c.field, "email");
        assert_eq!(c.value, Some(Value::String("ann@example.com".into())));
    }

    #[test]
    fn comma_is_and() {
        let all = parse(
            r#"equals(metric_id,"AbC123"), greater-or-equal(datetime,2023-01-01T00:00:00Z),less-than(timestamp,1700000000)"#,
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[1].op, Op::GreaterOrEqual);
        assert_eq!(all[2].value, Some(Value::Number(1_700_000_000.0)));
    }

    #[test]
    fn any_list() {
        let c = one(r#"any(email,["a@b.com","c@d.com"])"#);
        assert_eq!(c.strings().unwrap(), vec!["a@b.com", "c@d.com"]);
        assert!(one(r#"any(email,"a@b.com")"#).strings().is_err());
    }

    #[test]
    fn has_takes_no_value() {
        let c = one("has(profile)");
        assert_eq!(c.value, None);
        assert!(parse("has(profile,1)").is_err());
    }

    #[test]
    fn datetimes() {
        let utc = TimeZone::UTC;
        let want: Timestamp = "2023-04-19T00:00:00Z".parse().unwrap();
        for text in [
            "2023-04-19T00:00:00Z",
            "2023-04-19T00:00:00+00:00",
            "2023-04-19T00:00:00 00:00",
            "2023-04-19T02:00:00+02:00",
            "2023-04-19T00:00:00",
            "2023-04-19",
        ] {
            let c = one(&format!("greater-than(updated,{text})"));
            assert_eq!(c.instant(&utc, false).unwrap(), want, "{text}");
        }
        let paris = TimeZone::get("Europe/Paris").unwrap();
        let local = one("less-than(datetime,2023-04-19T02:00:00)");
        assert_eq!(local.instant(&paris, false).unwrap(), want);
        let micros = one("less-than(datetime,2023-04-19T00:00:00.250000+00:00)");
        assert!(micros.instant(&utc, false).unwrap() > want);
    }

    #[test]
    fn quoted_datetime_is_refused() {
        let c = one(r#"greater-than(updated,"2023-04-19T00:00:00Z")"#);
        let e = c.instant(&TimeZone::UTC, false).unwrap_err();
        assert!(e.message.contains("unquoted"), "{}", e.message);
    }

    #[test]
    fn unix_seconds() {
        let c = one("greater-than(timestamp,1700000000)");
        assert_eq!(
            c.instant(&TimeZone::UTC, true).unwrap().as_second(),
            1_700_000_000
        );
        assert!(c.instant(&TimeZone::UTC, false).is_err());
        assert!(one("greater-than(timestamp,1.5)")
            .instant(&TimeZone::UTC, true)
            .is_err());
    }

    #[test]
    fn json_escapes() {
        let c = one(r#"equals(email,"a\"b\\c\u00e9\ud83d\ude00")"#);
        assert_eq!(c.string().unwrap(), "a\"b\\cé😀");
        assert!(parse(r#"equals(email,"\ud83d")"#).is_err());
        assert!(parse(r#"equals(email,"\x")"#).is_err());
    }

    #[test]
    fn single_quotes_as_the_sdk_filter_builder_writes_lists() {
        // FilterBuilder().any("email", [...]) renders Python's repr of the list.
        let c = one("any(email,['a@b.com','c\\'d@e.com',\"it's@f.com\"])");
        assert_eq!(
            c.strings().unwrap(),
            vec!["a@b.com", "c'd@e.com", "it's@f.com"]
        );
        assert_eq!(one(r"equals(a,'\xe9')").string().unwrap(), "é");
        assert!(parse("equals(email,'ann)").is_err());
    }

    #[test]
    fn keywords_and_numbers() {
        assert_eq!(one("equals(a,true)").value, Some(Value::Bool(true)));
        assert_eq!(one("equals(a,null)").value, Some(Value::Null));
        assert_eq!(one("equals(a,-1.5e2)").value, Some(Value::Number(-150.0)));
    }

    #[test]
    fn errors_say_what_and_where() {
        assert!(err("").contains("expected an operator"));
        assert!(err("nope(a,1)").contains("unknown operator 'nope'"));
        assert!(err("equals(email,ann)").contains("must be quoted"));
        assert!(err(r#"equals(email,"ann""#).contains("expected ')'"));
        assert!(err(r#"equals(email,"ann)"#).contains("unterminated string"));
        assert!(err(r#"equals(email,"a") x"#).contains("expected ','"));
        assert!(err(r#"any(email,[])"#).contains("at least one"));
        assert!(err(r#"any(email,[["a"]])"#).contains("nested"));
        assert!(err("greater-than(updated,2023-13-45T00:00:00Z)").contains("invalid datetime"));
        assert!(err(r#"equals(email,"a"),"#).contains("expected an operator"));
    }

    #[test]
    fn check_against_rules() {
        const RULES: &[FieldRule] = &[
            FieldRule {
                field: "email",
                ops: &[Op::Equals, Op::Any],
            },
            FieldRule {
                field: "updated",
                ops: &[Op::GreaterThan, Op::LessThan],
            },
        ];
        assert!(check(&parse(r#"equals(email,"a")"#).unwrap(), RULES).is_ok());
        let e = check(&parse(r#"contains(email,"a")"#).unwrap(), RULES).unwrap_err();
        assert!(e
            .message
            .contains("'contains' is not a valid operator for 'email'"));
        let e = check(&parse(r#"equals(first_name,"a")"#).unwrap(), RULES).unwrap_err();
        assert!(e.message.contains("'first_name' is not a valid field"));
    }

    #[test]
    fn limits() {
        let many = vec![r#"equals(a,"b")"#; MAX_CONDITIONS + 1].join(",");
        assert!(err(&many).contains("at most"));
        let long = format!(r#"equals(a,"{}")"#, "x".repeat(MAX_FILTER_LEN));
        assert!(err(&long).contains("longer"));
    }

    fn render_value(v: &Value) -> String {
        match v {
            Value::String(s) => serde_json::to_string(s).unwrap(),
            Value::Number(n) => format!("{n}"),
            Value::Bool(b) => b.to_string(),
            Value::Null => "null".into(),
            Value::DateTime(DateTimeLit::Instant(ts)) => ts.to_string(),
            Value::DateTime(DateTimeLit::Local(dt)) => dt.to_string(),
            Value::List(items) => format!(
                "[{}]",
                items.iter().map(render_value).collect::<Vec<_>>().join(",")
            ),
        }
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            (-1.0e12f64..1.0e12).prop_map(Value::Number),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            (0i64..4_000_000_000).prop_map(|s| Value::DateTime(DateTimeLit::Instant(
                Timestamp::from_second(s).unwrap()
            ))),
        ]
    }

    fn condition() -> impl Strategy<Value = Condition> {
        let field = "[a-z_$][a-z0-9_.]{0,12}";
        prop_oneof![
            (field, prop::sample::select(&Op::ALL[..11]), scalar()).prop_map(|(f, op, v)| {
                Condition {
                    op,
                    field: f,
                    value: Some(v),
                }
            }),
            (field, prop::collection::vec(scalar(), 1..5)).prop_map(|(f, items)| Condition {
                op: Op::Any,
                field: f,
                value: Some(Value::List(items)),
            }),
            field.prop_map(|f| Condition {
                op: Op::Has,
                field: f,
                value: None,
            }),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,200}") {
            let _ = parse(&input);
        }

        #[test]
        fn never_panics_on_near_misses(
            op in prop::sample::select(&Op::ALL[..]),
            body in "[a-z\"\\[\\](),:.+\\\\ 0-9TZu-]{0,60}",
        ) {
            let _ = parse(&format!("{op}({body}"));
        }

        #[test]
        fn rendered_conditions_parse_back(conditions in prop::collection::vec(condition(), 1..5)) {
            let text = conditions
                .iter()
                .map(|c| match &c.value {
                    None => format!("{}({})", c.op, c.field),
                    Some(v) => format!("{}({},{})", c.op, c.field, render_value(v)),
                })
                .collect::<Vec<_>>()
                .join(",");
            prop_assert_eq!(parse(&text).unwrap(), conditions);
        }
    }
}
