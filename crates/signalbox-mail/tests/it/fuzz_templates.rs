//! Fuzz targets of email templates: the Django-style syntax translated to minijinja,
//! compiled, and rendered with hostile contexts (huge and odd numbers, long strings, odd
//! Unicode and NUL, deep nesting, extreme dates).
//!
//! Properties: compiling never panics and a refusal is a `TemplateError::Syntax` naming a
//! line of the part; rendering never panics, stops (fuel) and never returns more than
//! `MAX_RENDERED_PART_BYTES` per part; a preview renders what a send renders.
//!
//! Each target runs the number of cases its `config` names (hundreds) in `cargo test`, well
//! under a few seconds in a debug build;
//! `PROPTEST_CASES=100000 cargo test -p signalbox-mail --test it fuzz_` runs longer.
//! Failures are not persisted: a case found is kept as a plain regression test.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::Config;
use serde_json::{json, Map, Value};
use signalbox_mail::template::MAX_RENDERED_PART_BYTES;
use signalbox_mail::{EmailTemplate, EmailTemplateSource, Part, RenderContext, TemplateError};

/// Cases per target unless `PROPTEST_CASES` says otherwise; failures are not persisted.
fn config(cases: u32) -> Config {
    let mut config = Config {
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

/// Fuel stops a rendering after a few million steps; on a slow machine in a debug build that
/// is seconds, not minutes.
const CASE_TIME: Duration = Duration::from_secs(60);

/// Pieces of Klaviyo templates, of Jinja, and of neither.
const PIECES: &[&str] = &[
    "{{ ",
    " }}",
    "{% ",
    " %}",
    "{#",
    "#}",
    "{{",
    "}}",
    "{%",
    "%}",
    "{",
    "}",
    "{%- ",
    " -%}",
    "if ",
    "elif ",
    "else",
    "endif",
    "for ",
    " in ",
    " reversed",
    "empty",
    "endfor",
    "with ",
    " as ",
    "endwith",
    "ifequal ",
    "endifequal",
    "ifnotequal ",
    "firstof ",
    "now ",
    "comment",
    "endcomment",
    "autoescape on",
    "autoescape off",
    "endautoescape",
    "unsubscribe",
    "manage_preferences_link",
    "load static",
    "catalog ",
    "spaceless",
    "first_name",
    "person",
    "event",
    "event.Items",
    "event.Items.0.Price",
    "event.Big",
    "event.Nums",
    "event|lookup:'$value'",
    "item",
    "item.Price",
    "k, v",
    "d.items",
    "organization.name",
    "forloop.counter",
    "forloop.parentloop",
    "forloop.",
    "|default:\"there\"",
    "|default:",
    "|floatformat:-2",
    "|floatformat:'3g'",
    "|floatformat:-9223372036854775808",
    "|slice:'::-1'",
    "|slice:':2'",
    "|slice:'-9223372036854775808:'",
    "|truncatechars:-5",
    "|truncatechars:18446744073709551615",
    "|truncatewords:3",
    "|date:\"N j, Y\"",
    "|date:'\\\\'",
    "|time:'P'",
    "|add:1",
    "|add:\"x\"",
    "|add:-9223372036854775808",
    "|multiply:1e308",
    "|divide:0",
    "|divide:-0",
    "|divisibleby:-1",
    "|divisibleby:0",
    "|currency_format:'JPY'",
    "|currency_format",
    "|pluralize:'y,ies'",
    "|yesno:','",
    "|length",
    "|join:', '",
    "|cut:''",
    "|lookup:-1",
    "|linebreaksbr",
    "|striptags",
    "|capfirst",
    "|format_date_string",
    "|wordcount",
    "|safe",
    "|upper",
    "|nosuch",
    "|",
    ":",
    ".",
    ",",
    "'",
    "\"",
    "\\",
    "=",
    "==",
    "!=",
    " and ",
    " not ",
    "True",
    "None",
    "-",
    "0",
    "1",
    "-1",
    "9223372036854775807",
    "-9223372036854775808",
    "18446744073709551616",
    "1e400",
    "~",
    "*",
    "range(3)",
    "(",
    ")",
    "[",
    "]",
    "\n",
    "\r\n",
    "\t",
    "é",
    "😀",
    "\u{0}",
    "\u{202e}",
    "\u{feff}",
    "<p>",
    "&",
    "x",
    "a=b",
    "a=",
];

fn template_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(select(PIECES), 0..40).prop_map(|p| p.concat()),
        1 => any::<String>(),
        1 => "\\PC{0,120}",
    ]
}

/// Well-formed Django templates with a hostile filter chain on a hostile value.
fn shaped_template() -> impl Strategy<Value = String> {
    let variable = select(
        &[
            "first_name",
            "event.Big",
            "event.Huge",
            "event.Tiny",
            "event.MinInt",
            "event.MaxU64",
            "event.Odd",
            "event.Nul",
            "event.Dates.0",
            "event.Dates.1",
            "event.Dates.2",
            "event.Deep",
            "event.Nums",
            "event.Nums.0",
            "item",
            "forloop.counter",
            "missing.thing",
        ][..],
    );
    let filter = select(
        &[
            "",
            "|floatformat",
            "|floatformat:-30",
            "|floatformat:'-9223372036854775808g'",
            "|currency_format",
            "|currency_format:'EUR'",
            "|date:\"r c U W z\"",
            "|time",
            "|add:event.MinInt",
            "|add:event.Nums",
            "|multiply:event.Huge",
            "|divide:event.Tiny",
            "|divisibleby:-1",
            "|divisibleby:event.MinInt",
            "|slice:'-9223372036854775808:9223372036854775807:9223372036854775807'",
            "|truncatechars:0",
            "|truncatewords:0",
            "|pluralize",
            "|yesno",
            "|lookup:'-9223372036854775808'",
            "|lookup:event.MinInt",
            "|length",
            "|linebreaksbr",
            "|capfirst",
            "|format_date_string|date:'Y'",
            "|first",
            "|last",
            "|join:event.Big",
            "|default:event.Big",
        ][..],
    );
    let expression = (variable, prop::collection::vec(filter, 0..4))
        .prop_map(|(v, filters)| format!("{v}{}", filters.concat()));
    let body = prop::collection::vec(
        (expression, 0usize..6).prop_map(|(expression, shape)| match shape {
            0 => format!("{{{{ {expression} }}}}"),
            1 => format!(
                "{{% for item in event.Nums %}}{{{{ {expression} }}}}{{% empty %}}-{{% endfor %}}"
            ),
            2 => format!("{{% if {expression} %}}y{{% else %}}n{{% endif %}}"),
            3 => format!("{{% with x={expression} %}}{{{{ x }}}}{{% endwith %}}"),
            4 => format!("{{% ifequal {expression} event.Big %}}e{{% endifequal %}}"),
            _ => format!("{{% firstof {expression} 'z' %}}"),
        }),
        1..6,
    );
    body.prop_map(|parts| parts.join("\n"))
}

fn hostile_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any::<String>().prop_map(Value::from),
        select(
            &[
                "2024-03-05 18:30:00",
                "9999-12-31T23:59:59Z",
                "-009999-01-01",
                "99999999999999",
                "1e308",
                "-0",
                "NaN"
            ][..]
        )
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map("[A-Za-z$ ]{1,8}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn context(extra: Value, big: usize) -> RenderContext {
    let mut deep = json!("bottom");
    for _ in 0..100 {
        deep = json!({"d": deep});
    }
    let event = json!({
        "Big": "<b>&\"'</b>".repeat(big),
        "Huge": f64::MAX,
        "Tiny": f64::MIN_POSITIVE,
        "MinInt": i64::MIN,
        "MaxU64": u64::MAX,
        "Odd": "\u{0}\u{202e}\u{feff}😀\r\n",
        "Nul": null,
        "Dates": ["-009999-01-01T00:00:00Z", "9999-12-31T23:59:59+25:59", 1e300],
        "Deep": deep,
        "Nums": [i64::MIN, -1, 0, u64::MAX, 1.5, "12", "-9223372036854775808", null],
        "Extra": extra,
        "Items": [{"Price": 1.005}, {"Price": -0.0}],
    });
    let person = json!({
        "first_name": "Ada\u{0}",
        "email": "ada@example.com",
        "Loyalty Points": 1e22,
    });
    RenderContext {
        person: person.as_object().cloned().unwrap_or_default(),
        event: Some(event),
        organization: Map::new(),
        unsubscribe_url: "https://sb.test/u/T".into(),
        manage_preferences_url: "https://sb.test/p/T".into(),
        now: Some("2026-03-01T12:00:00Z".parse().unwrap()),
    }
}

/// Compiles and renders, checking what holds for every template.
fn check(source: &EmailTemplateSource, context: &RenderContext) -> Result<(), TestCaseError> {
    let started = Instant::now();
    match EmailTemplate::compile(source) {
        Err(TemplateError::Syntax { part, line, .. }) => {
            let text = match part {
                Part::Subject => &source.subject,
                Part::Html => &source.html,
                Part::Text => source.text.as_ref().unwrap_or(&source.html),
            };
            prop_assert!(line >= 1);
            // Lines count from 1 in the part's source (an error at its end names the last).
            prop_assert!(
                line <= text.split('\n').count() + 1,
                "line {} of {:?}",
                line,
                text
            );
        }
        Err(other) => prop_assert!(false, "compiling gave {:?}", other),
        Ok(template) => {
            let rendered = template.render(context);
            let preview = template.preview(context);
            prop_assert_eq!(&rendered, &preview.result);
            match rendered {
                Ok(email) => {
                    prop_assert!(email.subject.len() <= MAX_RENDERED_PART_BYTES);
                    prop_assert!(email.html.len() <= MAX_RENDERED_PART_BYTES);
                    prop_assert!(!email.subject.contains('\n'));
                }
                Err(TemplateError::Render { .. }) => {}
                Err(other) => prop_assert!(false, "rendering gave {:?}", other),
            }
        }
    }
    prop_assert!(
        started.elapsed() < CASE_TIME,
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_templates_arbitrary_text(
        subject in template_text(),
        html in template_text(),
        text in prop::option::of(template_text()),
        extra in hostile_json(),
    ) {
        let source = EmailTemplateSource { subject, html, text };
        check(&source, &context(extra, 3))?;
    }

    #[test]
    fn fuzz_templates_hostile_filters_and_values(
        html in shaped_template(),
        subject in shaped_template(),
        extra in hostile_json(),
        big in prop::sample::select(vec![0usize, 1, 1_000]),
    ) {
        let source = EmailTemplateSource { subject, html: html.clone(), text: Some(html) };
        check(&source, &context(extra, big))?;
    }
}

#[test]
fn fuzz_templates_output_is_bounded() {
    // Fuel bounds the steps, not what each writes: 4,096 steps of a 4 KB value are 16 MiB.
    let source = EmailTemplateSource {
        subject: "s".into(),
        html: "{% for a in event.Nums %}{% for b in event.Nums %}{% for c in event.Nums %}\
               {% for d in event.Nums %}{{ event.Big }}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
            .into(),
        text: None,
    };
    let template = EmailTemplate::compile(&source).expect("compiles");
    let mut context = context(Value::Null, 1);
    context.event.as_mut().unwrap()["Big"] = json!("x".repeat(8 << 10));
    match template.render(&context) {
        Err(TemplateError::Render {
            part: Part::Html,
            message,
            ..
        }) => assert!(message.contains("over the limit"), "{message}"),
        other => panic!("expected a refusal, got {:?}", other.map(|e| e.html.len())),
    }
}
