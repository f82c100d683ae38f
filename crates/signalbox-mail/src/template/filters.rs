//! Django and Klaviyo filters with their Django meaning, registered on every environment.
//!
//! A filter given a value it cannot use (text to `floatformat`, a list to `date`) renders it
//! unchanged or empty, as Django does, rather than failing the whole email.

use minijinja::value::ValueKind;
use minijinja::{Environment, Error, ErrorKind, Value};

use super::dates;

pub(crate) fn register(env: &mut Environment<'static>) {
    env.add_filter("add", add);
    env.add_filter("capfirst", capfirst);
    env.add_filter("currency_format", currency_format);
    env.add_filter("cut", cut);
    env.add_filter("date", date);
    env.add_filter("default", default);
    env.add_filter("default_if_none", default_if_none);
    env.add_filter("divide", divide);
    env.add_filter("divisibleby", divisibleby);
    env.add_filter("floatformat", floatformat);
    env.add_filter("format_date_string", format_date_string);
    env.add_filter("length", length);
    env.add_filter("linebreaksbr", linebreaksbr);
    env.add_filter("lookup", lookup);
    env.add_filter("multiply", multiply);
    env.add_filter("pluralize", pluralize);
    env.add_filter("slice", slice);
    env.add_filter("striptags", striptags);
    env.add_filter("time", time);
    env.add_filter("truncatechars", truncatechars);
    env.add_filter("truncatewords", truncatewords);
    env.add_filter("wordcount", wordcount);
    env.add_filter("yesno", yesno);
}

/// Django's `default`: the fallback when the value is missing or false-ish (empty string,
/// empty list, zero, false, none).
fn default(value: Value, fallback: Option<Value>) -> Value {
    if value.is_undefined() || value.is_none() || !value.is_true() {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value
    }
}

fn default_if_none(value: Value, fallback: Option<Value>) -> Value {
    if value.is_undefined() || value.is_none() {
        fallback.unwrap_or_else(|| Value::from(""))
    } else {
        value
    }
}

/// Klaviyo's `lookup`: a key that is not a valid variable name (`'Loyalty Points'`,
/// `'$value'`) or an index.
fn lookup(value: Value, key: Value) -> Result<Value, Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(Value::UNDEFINED);
    }
    if value.kind() == ValueKind::Seq {
        if let Some(index) = key
            .as_str()
            .and_then(|text| text.trim().parse::<i64>().ok())
        {
            return value.get_item(&Value::from(index));
        }
    }
    value.get_item(&key)
}

fn length(value: Value) -> Result<Value, Error> {
    if value.is_undefined() || value.is_none() {
        return Ok(Value::from(0));
    }
    match value.len() {
        Some(len) => Ok(Value::from(len)),
        None => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("cannot take the length of {}", value.kind()),
        )),
    }
}

/// A number from a number or numeric text.
pub(crate) fn number(value: &Value) -> Option<f64> {
    match value.kind() {
        ValueKind::Number => f64::try_from(value.clone()).ok(),
        ValueKind::Bool => Some(if value.is_true() { 1.0 } else { 0.0 }),
        ValueKind::String => value
            .as_str()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite()),
        _ => None,
    }
}

/// The exact decimal digits of a value: numeric text as written, floats by their shortest
/// round-tripping representation (so `2.675` rounds like the decimal 2.675, as Django's
/// `Decimal(repr(x))` does).
fn decimal_text(value: &Value) -> Option<String> {
    match value.kind() {
        ValueKind::Number => {
            if let Some(int) = value.as_i64() {
                return Some(int.to_string());
            }
            let float = f64::try_from(value.clone())
                .ok()
                .filter(|n| n.is_finite())?;
            Some(format!("{float}"))
        }
        ValueKind::String => {
            let text = value.as_str()?.trim();
            let valid = text.parse::<f64>().is_ok_and(f64::is_finite)
                && text
                    .trim_start_matches(['-', '+'])
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b == b'.')
                && !text.is_empty();
            if valid {
                Some(text.trim_start_matches('+').to_owned())
            } else {
                number(value).map(|n| format!("{n}"))
            }
        }
        ValueKind::Bool => Some(if value.is_true() { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

/// Rounds decimal text half away from zero to `places` digits after the point.
pub(crate) fn round_decimal(text: &str, places: usize) -> String {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let int_part = if int_part.is_empty() { "0" } else { int_part };
    let mut kept: Vec<u8> = int_part.bytes().collect();
    let frac = frac_part.as_bytes();
    kept.extend((0..places).map(|i| frac.get(i).copied().unwrap_or(b'0')));
    if frac.get(places).is_some_and(|&d| d >= b'5') {
        let mut at = kept.len();
        loop {
            if at == 0 {
                kept.insert(0, b'1');
                break;
            }
            at -= 1;
            if kept[at] == b'9' {
                kept[at] = b'0';
            } else {
                kept[at] += 1;
                break;
            }
        }
    }
    let split = kept.len() - places;
    let mut int_digits = String::from_utf8_lossy(&kept[..split]).into_owned();
    let trimmed = int_digits.trim_start_matches('0');
    int_digits = if trimmed.is_empty() {
        "0".to_owned()
    } else {
        trimmed.to_owned()
    };
    let frac_digits = String::from_utf8_lossy(&kept[split..]).into_owned();
    let is_zero = int_digits == "0" && frac_digits.bytes().all(|d| d == b'0');
    let mut out = String::with_capacity(int_digits.len() + places + 2);
    if negative && !is_zero {
        out.push('-');
    }
    out.push_str(&int_digits);
    if places > 0 {
        out.push('.');
        out.push_str(&frac_digits);
    }
    out
}

/// Inserts thousands separators into the integer part of decimal text.
pub(crate) fn group_thousands(text: &str) -> String {
    let (sign, rest) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int_part, frac_part) = match rest.split_once('.') {
        Some((int_part, frac)) => (int_part, Some(frac)),
        None => (rest, None),
    };
    let mut grouped = String::with_capacity(int_part.len() + int_part.len() / 3);
    for (index, ch) in int_part.chars().enumerate() {
        if index > 0 && (int_part.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(ch);
    }
    match frac_part {
        Some(frac) => format!("{sign}{grouped}.{frac}"),
        None => format!("{sign}{grouped}"),
    }
}

/// Django's `floatformat`: no argument = one decimal only when there is a fractional part;
/// `N` = exactly N decimals; `-N` = N decimals only when there is a fractional part; a `g`
/// suffix groups thousands.
fn floatformat(value: Value, argument: Option<Value>) -> Value {
    let Some(text) = decimal_text(&value) else {
        return Value::from("");
    };
    let (places, grouping) = match &argument {
        None => (-1, false),
        Some(argument) => match argument.as_i64() {
            Some(places) => (places, false),
            None => {
                let raw = argument.as_str().unwrap_or("").trim();
                let grouping = raw.ends_with('g');
                let digits = raw.trim_end_matches(['g', 'u']);
                match digits.parse::<i64>() {
                    Ok(places) => (places, grouping),
                    Err(_) if digits.is_empty() => (-1, grouping),
                    Err(_) => return value,
                }
            }
        },
    };
    let has_fraction = text
        .split_once('.')
        .is_some_and(|(_, frac)| frac.bytes().any(|d| d != b'0'));
    let places_abs = places.unsigned_abs().min(30) as usize;
    let formatted = if places < 0 && !has_fraction {
        round_decimal(&text, 0)
    } else {
        round_decimal(&text, places_abs)
    };
    Value::from(if grouping {
        group_thousands(&formatted)
    } else {
        formatted
    })
}

/// Klaviyo's `currency_format`: a number as an amount of a currency (ISO code, default USD):
/// `1234.5|currency_format` → `$1,234.50`, `|currency_format:'EUR'` → `€1,234.50`.
fn currency_format(value: Value, code: Option<String>) -> Value {
    let Some(text) = decimal_text(&value) else {
        return value;
    };
    let code = code
        .unwrap_or_else(|| "USD".to_owned())
        .trim()
        .to_ascii_uppercase();
    let places = match code.as_str() {
        "JPY" | "KRW" | "VND" | "CLP" | "ISK" | "HUF" => 0,
        _ => 2,
    };
    let rounded = group_thousands(&round_decimal(&text, places));
    let (sign, amount) = match rounded.strip_prefix('-') {
        Some(amount) => ("-", amount),
        None => ("", rounded.as_str()),
    };
    let symbol = match code.as_str() {
        "USD" => "$",
        "EUR" => "€",
        "GBP" => "£",
        "JPY" => "¥",
        "CNY" => "CN¥",
        "INR" => "₹",
        "KRW" => "₩",
        "CAD" => "CA$",
        "AUD" => "A$",
        "NZD" => "NZ$",
        "MXN" => "MX$",
        "BRL" => "R$",
        "CHF" => "CHF ",
        _ => return Value::from(format!("{sign}{amount} {code}")),
    };
    Value::from(format!("{sign}{symbol}{amount}"))
}

fn date(value: Value, format: Option<String>) -> Value {
    match dates::parse(&value) {
        Some(moment) => Value::from(dates::format(
            &moment,
            format.as_deref().unwrap_or("N j, Y"),
        )),
        None if value.is_undefined() || value.is_none() => Value::from(""),
        None => value,
    }
}

fn time(value: Value, format: Option<String>) -> Value {
    match dates::parse(&value) {
        Some(moment) => Value::from(dates::format(&moment, format.as_deref().unwrap_or("P"))),
        None if value.is_undefined() || value.is_none() => Value::from(""),
        None => value,
    }
}

/// Klaviyo's `format_date_string`: date text in any common form → a date the `date` filter
/// formats; rendered on its own, ISO 8601.
fn format_date_string(value: Value) -> Value {
    match dates::parse(&value) {
        Some(moment) => Value::from(moment.to_string()),
        None => value,
    }
}

fn text_of(value: &Value) -> String {
    if value.is_undefined() || value.is_none() {
        String::new()
    } else {
        value.to_string()
    }
}

fn striptags(value: Value) -> Value {
    Value::from(crate::text::strip_tags(&text_of(&value)))
}

fn truncatechars(value: Value, length: usize) -> Value {
    let text = text_of(&value);
    if text.chars().count() <= length {
        return Value::from(text);
    }
    if length == 0 {
        return Value::from("");
    }
    let mut truncated: String = text.chars().take(length - 1).collect();
    truncated.push('…');
    Value::from(truncated)
}

fn truncatewords(value: Value, count: usize) -> Value {
    let text = text_of(&value);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= count {
        return Value::from(text);
    }
    let mut truncated = words[..count].join(" ");
    truncated.push_str(" …");
    Value::from(truncated)
}

fn wordcount(value: Value) -> Value {
    Value::from(text_of(&value).split_whitespace().count())
}

fn capfirst(value: Value) -> Value {
    let text = text_of(&value);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => Value::from(first.to_uppercase().chain(chars).collect::<String>()),
        None => Value::from(text),
    }
}

fn cut(value: Value, removed: String) -> Value {
    Value::from(text_of(&value).replace(&removed, ""))
}

fn linebreaksbr(value: Value) -> Value {
    let text = text_of(&value);
    let mut escaped = String::with_capacity(text.len() + 16);
    for ch in text.chars() {
        match ch {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#x27;"),
            '\n' => escaped.push_str("<br>"),
            '\r' => {}
            other => escaped.push(other),
        }
    }
    Value::from_safe_string(escaped)
}

/// Django's `add`: numbers add, otherwise text or lists concatenate.
fn add(value: Value, other: Value) -> Value {
    if let (Some(a), Some(b)) = (integer(&value), integer(&other)) {
        return Value::from(a.saturating_add(b));
    }
    if let (ValueKind::Number, Some(a), Some(b)) = (value.kind(), number(&value), number(&other)) {
        return Value::from(a + b);
    }
    if value.kind() == ValueKind::Seq && other.kind() == ValueKind::Seq {
        let mut items: Vec<Value> = value.try_iter().map(|it| it.collect()).unwrap_or_default();
        items.extend(
            other
                .try_iter()
                .map(|it| it.collect::<Vec<_>>())
                .unwrap_or_default(),
        );
        return Value::from(items);
    }
    Value::from(format!("{}{}", text_of(&value), text_of(&other)))
}

fn integer(value: &Value) -> Option<i64> {
    match value.kind() {
        ValueKind::Number => value.as_i64(),
        ValueKind::String => value.as_str()?.trim().parse().ok(),
        _ => None,
    }
}

fn arithmetic(value: &Value, other: &Value, op: fn(f64, f64) -> Option<f64>) -> Value {
    match (number(value), number(other)) {
        (Some(a), Some(b)) => match op(a, b) {
            Some(result) if result.fract() == 0.0 && result.abs() < 9.0e15 => {
                Value::from(result as i64)
            }
            Some(result) => Value::from(result),
            None => Value::from(""),
        },
        _ => Value::from(""),
    }
}

fn multiply(value: Value, other: Value) -> Value {
    arithmetic(&value, &other, |a, b| Some(a * b))
}

fn divide(value: Value, other: Value) -> Value {
    arithmetic(&value, &other, |a, b| (b != 0.0).then(|| a / b))
}

fn divisibleby(value: Value, divisor: Value) -> bool {
    match (integer(&value), integer(&divisor)) {
        // `checked_rem`: `i64::MIN % -1` overflows, and panics even in release builds.
        (Some(a), Some(b)) if b != 0 => a.checked_rem(b).is_none_or(|rest| rest == 0),
        _ => false,
    }
}

/// Django's `pluralize`: `s` by default, `es`, or `y,ies`.
fn pluralize(value: Value, suffixes: Option<String>) -> Value {
    let suffixes = suffixes.unwrap_or_else(|| "s".to_owned());
    let (singular, plural) = match suffixes.split_once(',') {
        Some((singular, plural)) => (singular.to_owned(), plural.to_owned()),
        None => (String::new(), suffixes),
    };
    let count = match value.kind() {
        ValueKind::Seq | ValueKind::Map => value.len().map(|n| n as f64),
        _ => number(&value),
    };
    match count {
        Some(1.0) => Value::from(singular),
        Some(_) => Value::from(plural),
        None => Value::from(""),
    }
}

/// Django's `yesno`: `"yes,no,maybe"` by default.
fn yesno(value: Value, choices: Option<String>) -> Value {
    let choices = choices.unwrap_or_else(|| "yes,no,maybe".to_owned());
    let parts: Vec<&str> = choices.split(',').collect();
    if parts.len() < 2 {
        return value;
    }
    let chosen = if value.is_undefined() || value.is_none() {
        parts.get(2).copied().unwrap_or(parts[1])
    } else if value.is_true() {
        parts[0]
    } else {
        parts[1]
    };
    Value::from(chosen)
}

/// Django's `slice` with Python slice text: `":2"`, `"1:"`, `"-3:"`, `"::2"`.
fn slice(value: Value, spec: Value) -> Value {
    let spec = spec.to_string();
    let mut bounds = spec.split(':').map(|part| part.trim().parse::<i64>().ok());
    let start = bounds.next().flatten();
    let stop = bounds.next().flatten();
    let step = bounds.next().flatten().unwrap_or(1);
    if step <= 0 {
        return value;
    }
    let resolve = |bound: Option<i64>, len: usize, default: usize| -> usize {
        match bound {
            None => default,
            Some(at) if at < 0 => len.saturating_sub(at.unsigned_abs() as usize),
            Some(at) => (at as usize).min(len),
        }
    };
    if value.kind() == ValueKind::String {
        let chars: Vec<char> = text_of(&value).chars().collect();
        let (from, to) = (
            resolve(start, chars.len(), 0),
            resolve(stop, chars.len(), chars.len()),
        );
        let picked: String = (from..to.max(from))
            .step_by(step as usize)
            .map(|i| chars[i])
            .collect();
        return Value::from(picked);
    }
    match value.try_iter() {
        Ok(iter) if value.kind() == ValueKind::Seq => {
            let items: Vec<Value> = iter.collect();
            let (from, to) = (
                resolve(start, items.len(), 0),
                resolve(stop, items.len(), items.len()),
            );
            Value::from(
                (from..to.max(from))
                    .step_by(step as usize)
                    .map(|i| items[i].clone())
                    .collect::<Vec<_>>(),
            )
        }
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_rounding_is_half_up_on_the_written_digits() {
        assert_eq!(round_decimal("2.675", 2), "2.68");
        assert_eq!(round_decimal("34.23234", 1), "34.2");
        assert_eq!(round_decimal("34.26", 1), "34.3");
        assert_eq!(round_decimal("9.99", 1), "10.0");
        assert_eq!(round_decimal("-0.04", 1), "0.0");
        assert_eq!(round_decimal("-1.25", 1), "-1.3");
        assert_eq!(round_decimal("12", 2), "12.00");
        assert_eq!(round_decimal(".5", 0), "1");
    }

    #[test]
    fn divisibleby_the_ends_of_the_integer_range() {
        // Found by fuzzing: `{{ x|divisibleby:-1 }}` with x = i64::MIN panicked.
        let min = Value::from(i64::MIN);
        assert!(divisibleby(min.clone(), Value::from(-1)));
        assert!(divisibleby(
            Value::from("-9223372036854775808"),
            Value::from("-1")
        ));
        assert!(divisibleby(min.clone(), Value::from(2)));
        assert!(!divisibleby(min, Value::from(3)));
        assert!(!divisibleby(Value::from(7), Value::from(0)));
    }

    #[test]
    fn thousands() {
        assert_eq!(group_thousands("1234567.5"), "1,234,567.5");
        assert_eq!(group_thousands("-123"), "-123");
        assert_eq!(group_thousands("1000"), "1,000");
    }
}
