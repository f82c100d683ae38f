//! Each Klaviyo template construct and what it renders to.

use serde_json::{json, Value};
use signalbox_mail::{EmailTemplate, EmailTemplateSource, Part, RenderContext, TemplateError};

fn context() -> RenderContext {
    let person = json!({
        "email": "ada@example.com",
        "first_name": "Ada",
        "last_name": "Lovelace",
        "Loyalty Points": 1250,
        "$city": "London",
        "signup_date": "2023-11-02T09:15:00Z",
        "vip": true,
        "bio": "",
        "middle_name": null,
        "location": null,
    });
    RenderContext {
        person: person.as_object().cloned().unwrap_or_default(),
        event: Some(json!({
            "$value": 1234.5,
            "Currency": "EUR",
            "ItemNames": ["Teapot", "Cups", "Tea"],
            "Items": [
                {"ProductName": "Teapot", "Price": 30, "Quantity": 1},
                {"ProductName": "Cups", "Price": 12.5, "Quantity": 4},
            ],
            "Empty": [],
            "Brand": {"name": "Kettle & Co"},
            "Checkout Date": "2024-03-05 18:30:00",
            "Note": "<b>fragile</b> & heavy",
            "Count": 3,
        })),
        organization: json!({"name": "Tea Shop", "url": "https://tea.test"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        unsubscribe_url: "https://sb.test/u/TOKEN".into(),
        manage_preferences_url: "https://sb.test/p/TOKEN".into(),
        now: Some("2024-06-01T12:00:00Z".parse().expect("a timestamp")),
    }
}

fn render_text(source: &str) -> Result<String, TemplateError> {
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: String::new(),
        html: String::new(),
        text: Some(source.to_owned()),
    })?;
    Ok(template.render(&context())?.text)
}

fn render_html(source: &str) -> String {
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: String::new(),
        html: source.to_owned(),
        text: Some(String::new()),
    })
    .unwrap_or_else(|error| panic!("{source}: {error}"));
    template.render(&context()).expect("renders").html
}

#[track_caller]
fn check(source: &str, expected: &str) {
    match render_text(source) {
        Ok(rendered) => assert_eq!(rendered, expected, "template: {source}"),
        Err(error) => panic!("template {source}: {error}"),
    }
}

#[test]
fn variables_and_profile_fields() {
    check("Hi {{ first_name }}", "Hi Ada");
    check(
        "{{ person.first_name }} {{ person.last_name }}",
        "Ada Lovelace",
    );
    check("{{ email }}", "ada@example.com");
    check("{{ organization.name }}", "Tea Shop");
    check("{{ event.Items.0.ProductName }}", "Teapot");
    check("{{ event.Brand.name }}", "Kettle & Co");
    check("[{{ nickname }}][{{ event.Missing.Deeper }}]", "[][]");
    check("[{{ middle_name }}][{{ person.location.city }}]", "[][]");
}

#[test]
fn default_and_lookup() {
    check(r#"Hi {{ nickname|default:"there" }}"#, "Hi there");
    check(r#"Hi {{ first_name|default:"there" }}"#, "Hi Ada");
    check("{{ bio|default:'(none)' }}", "(none)");
    check("{{ person|lookup:'Loyalty Points' }}", "1250");
    check("{{ person|lookup:\"$city\" }}", "London");
    check("{{ event|lookup:'$value' }}", "1234.5");
    check("{{ event|lookup:'Checkout Date' }}", "2024-03-05 18:30:00");
    check("{{ person|lookup:'Nope'|default:0 }}", "0");
    check("{{ event.Items|lookup:1|lookup:'ProductName' }}", "Cups");
    check("{{ nothing|default_if_none:'x' }}", "x");
}

#[test]
fn join_length_case_and_text_filters() {
    check("{{ event.ItemNames|join:', ' }}", "Teapot, Cups, Tea");
    check("{{ event.Items|length }}", "2");
    check("{{ event.Missing|length }}", "0");
    check("{{ 'hello world'|title }}", "Hello World");
    check("{{ first_name|upper }} {{ first_name|lower }}", "ADA ada");
    check("{{ 'ada'|capfirst }}", "Ada");
    check("{{ event.Note|striptags }}", "fragile & heavy");
    check("{{ 'Joel is a slug'|truncatechars:7 }}", "Joel i…");
    check("{{ 'Joel is a slug'|truncatewords:2 }}", "Joel is …");
    check("{{ 'a b c'|wordcount }}", "3");
    check("{{ 'String with spaces'|cut:' ' }}", "Stringwithspaces");
    check(
        "{{ event.ItemNames|first }}/{{ event.ItemNames|last }}",
        "Teapot/Tea",
    );
    check("{{ event.ItemNames|slice:':2'|join:'+' }}", "Teapot+Cups");
    check(
        "{{ event.Count }} item{{ event.Count|pluralize }}",
        "3 items",
    );
    check("{{ 1 }} cherr{{ 1|pluralize:'y,ies' }}", "1 cherry");
    check("{{ vip|yesno:'VIP,regular' }}", "VIP");
}

#[test]
fn numbers_and_currency() {
    check("{{ 34.23234|floatformat }}", "34.2");
    check("{{ 34.0|floatformat }}", "34");
    check("{{ 34.26|floatformat }}", "34.3");
    check("{{ 34.23234|floatformat:3 }}", "34.232");
    check("{{ 34|floatformat:2 }}", "34.00");
    check("{{ 34.0|floatformat:-3 }}", "34");
    check("{{ 34.23234|floatformat:-3 }}", "34.232");
    check("{{ 2.675|floatformat:2 }}", "2.68");
    check("{{ '1234567.891'|floatformat:'2g' }}", "1,234,567.89");
    check("{{ 'abc'|floatformat }}", "");
    check("{{ event|lookup:'$value'|currency_format }}", "$1,234.50");
    check(
        "{{ event|lookup:'$value'|currency_format:'EUR' }}",
        "€1,234.50",
    );
    check("{{ 5|currency_format:'GBP' }}", "£5.00");
    check("{{ 1234|currency_format:'JPY' }}", "¥1,234");
    check("{{ 5|currency_format:'XYZ' }}", "5.00 XYZ");
    check("{{ 3|add:4 }} {{ 'a'|add:'b' }}", "7 ab");
    check("{{ 6|multiply:2.5 }} {{ 10|divide:4 }}", "15 2.5");
    check("{% if 9|divisibleby:3 %}yes{% endif %}", "yes");
}

#[test]
fn dates() {
    check("{{ signup_date|date:'F j, Y' }}", "November 2, 2023");
    check(
        "{{ event|lookup:'Checkout Date'|format_date_string|date:'D, M j' }}",
        "Tue, Mar 5",
    );
    check("{{ signup_date|date }}", "Nov. 2, 2023");
    check("{{ signup_date|time:'H:i' }}", "09:15");
    check(
        "{{ signup_date|date:'Y-m-d \\a\\t g:i A' }}",
        "2023-11-02 at 9:15 AM",
    );
    check("{% now 'Y' %}", "2024");
    check("[{{ nothing|date:'Y' }}]", "[]");
}

#[test]
fn conditions() {
    check("{% if vip %}VIP{% endif %}", "VIP");
    check(
        "{% if event.Count > 5 %}many{% elif event.Count > 2 %}some{% else %}few{% endif %}",
        "some",
    );
    check("{% if not nickname %}no nickname{% endif %}", "no nickname");
    check("{% if first_name == 'Ada' and vip %}yes{% endif %}", "yes");
    check("{% if 'Cups' in event.ItemNames %}cups{% endif %}", "cups");
    check(
        "{% if event.Missing.Deep %}x{% else %}none{% endif %}",
        "none",
    );
    check("{% if nickname == None %}unset{% endif %}", "");
    check(
        "{% ifequal first_name 'Ada' %}eq{% else %}ne{% endifequal %}",
        "eq",
    );
    check(
        "{% ifnotequal first_name 'Bob' %}ne{% endifnotequal %}",
        "ne",
    );
    check("{% firstof nickname first_name 'friend' %}", "Ada");
}

#[test]
fn loops() {
    check(
        "{% for item in event.Items %}{{ forloop.counter }}. {{ item.ProductName }} x{{ item.Quantity }}\n{% endfor %}",
        "1. Teapot x1\n2. Cups x4\n",
    );
    check(
        "{% for item in event.Empty %}x{% empty %}no items{% endfor %}",
        "no items",
    );
    check(
        "{% for item in event.Missing %}x{% empty %}none{% endfor %}",
        "none",
    );
    check(
        "{% for name in event.ItemNames %}{% if forloop.first %}[{% endif %}{{ name }}{% if not forloop.last %},{% else %}]{% endif %}{% endfor %}",
        "[Teapot,Cups,Tea]",
    );
    check(
        "{% for name in event.ItemNames reversed %}{{ name }}{{ forloop.revcounter0 }} {% endfor %}",
        "Tea2 Cups1 Teapot0 ",
    );
    check(
        "{% for key, value in event.Brand.items %}{{ key }}={{ value }}{% endfor %}",
        "name=Kettle & Co",
    );
    check(
        "{% for item in event.Items %}{{ forloop.counter0 }}{% endfor %}",
        "01",
    );
}

#[test]
fn with_comment_and_load() {
    check(
        "{% with total=event.Items|length name=first_name %}{{ name }}:{{ total }}{% endwith %}",
        "Ada:2",
    );
    check("{% with first_name as n %}{{ n }}{% endwith %}", "Ada");
    check("a{% comment %} {{ not rendered }} {% endcomment %}b", "ab");
    check("{% load klaviyo %}x{# note #}", "x");
}

#[test]
fn unsubscribe_tags() {
    check("{% unsubscribe_link %}", "https://sb.test/u/TOKEN");
    check("{{ unsubscribe_url }}", "https://sb.test/u/TOKEN");
    check("{% unsubscribe %}", "Unsubscribe: https://sb.test/u/TOKEN");
    assert_eq!(
        render_html("{% unsubscribe 'Stop these emails' %} | {% manage_preferences %}"),
        "<a href=\"https://sb.test/u/TOKEN\">Stop these emails</a> | \
         <a href=\"https://sb.test/p/TOKEN\">Manage preferences</a>"
    );
}

#[test]
fn html_escapes_and_text_does_not() {
    assert_eq!(
        render_html("<p>{{ event.Note }}</p><p>{{ event.Brand.name }}</p>"),
        "<p>&lt;b&gt;fragile&lt;/b&gt; &amp; heavy</p><p>Kettle &amp; Co</p>"
    );
    assert_eq!(
        render_html("{{ event.Note|safe }}"),
        "<b>fragile</b> & heavy"
    );
    assert_eq!(
        render_html("{% autoescape off %}{{ event.Note }}{% endautoescape %}"),
        "<b>fragile</b> & heavy"
    );
    check("{{ event.Note }}", "<b>fragile</b> & heavy");
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: "Hi {{ event.Brand.name }}\n  again".into(),
        html: String::new(),
        text: None,
    })
    .expect("compiles");
    assert_eq!(
        template.render(&context()).expect("renders").subject,
        "Hi Kettle & Co again"
    );
}

#[track_caller]
fn check_error(part: Part, source: &str, line: usize, construct: &str) {
    let mut template = EmailTemplateSource {
        subject: "s".into(),
        html: "h".into(),
        text: Some("t".into()),
    };
    match part {
        Part::Subject => template.subject = source.into(),
        Part::Html => template.html = source.into(),
        Part::Text => template.text = Some(source.into()),
    }
    match EmailTemplate::compile(&template) {
        Err(TemplateError::Syntax {
            part: got_part,
            line: got_line,
            construct: got_construct,
            message,
        }) => {
            assert_eq!(
                (got_part, got_line, got_construct.as_str()),
                (part, line, construct),
                "{source}: {message}"
            );
        }
        other => panic!("{source}: expected a syntax error, got {other:?}"),
    }
}

#[test]
fn errors_name_the_part_line_and_construct() {
    check_error(Part::Html, "<p>\n{% for x in y %}\n</p>", 2, "{% for %}");
    check_error(Part::Html, "a\nb\n{{ x|money }}", 3, "|money");
    check_error(Part::Text, "{% if a %}\n{% endfor %}", 2, "{% endfor %}");
    check_error(Part::Subject, "{% catalog event.id %}", 1, "{% catalog %}");
    check_error(Part::Html, "\n\n\n{% include 'x' %}", 4, "{% include %}");
    check_error(Part::Html, "a\n{{ x + }}", 2, "}}");
    let error = EmailTemplate::compile(&EmailTemplateSource {
        subject: "s".into(),
        html: "ok\n{% if %}".into(),
        text: None,
    })
    .expect_err("fails");
    assert_eq!(
        error.to_string(),
        "html line 2: {% if %}: a condition is required"
    );
}

#[test]
fn preview_lists_undefined_variables() {
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: "Hi {{ nickname|default:first_name }}".into(),
        html: "{% for item in event.Items %}<img src=\"{{ item.ImageURL }}\">{{ item.ProductName }}{% endfor %}\
               {{ person|lookup:'Loyalty Points' }} {{ person|lookup:'Tier' }} {{ organization.name }}"
            .into(),
        text: Some("{{ event.Coupon.code }} {{ first_name }}".into()),
    })
    .expect("compiles");
    let preview = template.preview(&context());
    let rendered = preview.result.expect("renders");
    assert_eq!(rendered.subject, "Hi Ada");
    assert!(rendered.html.contains("Teapot") && rendered.html.contains("1250"));
    assert_eq!(
        preview.undefined,
        vec![
            "event.Coupon",
            "event.Items[0].ImageURL",
            "event.Items[1].ImageURL",
            "nickname",
            "person.Tier",
        ]
    );
    // Rendering for sending gives the same output.
    assert_eq!(template.render(&context()).expect("renders"), rendered);
}

#[test]
fn render_errors_name_the_part() {
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: "s".into(),
        html:
            "a\n{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}"
                .into(),
        text: None,
    })
    .expect("compiles");
    match template.render(&context()) {
        Err(TemplateError::Render {
            part: Part::Html, ..
        }) => {}
        other => panic!("expected a render error, got {other:?}"),
    }
}

#[test]
fn cache_compiles_once() {
    let cache = signalbox_mail::TemplateCache::default();
    let source = EmailTemplateSource {
        subject: "{{ first_name }}".into(),
        html: "<p>x</p>".into(),
        text: None,
    };
    let first = cache.get_or_compile(&source).expect("compiles");
    let second = cache.get_or_compile(&source).expect("compiles");
    assert_eq!(cache.len(), 1);
    assert_eq!(
        first.render(&context()).expect("renders"),
        second.render(&context()).expect("renders")
    );
    let _unused: Value = json!(null);
}

#[test]
fn output_over_the_limit_is_an_error_naming_it() {
    // 3,000 copies of a 1,000-byte value: 3 MB from little work, within the fuel.
    let template = EmailTemplate::compile(&EmailTemplateSource {
        subject: "s".into(),
        html: "{% for i in range(3000) %}{{ person.blob }}{% endfor %}".into(),
        text: Some("short".into()),
    })
    .expect("compiles");
    let mut context = context();
    context
        .person
        .insert("blob".into(), json!("x".repeat(1000)));
    let limit = signalbox_mail::template::MAX_RENDERED_PART_BYTES;
    for result in [template.render(&context), template.preview(&context).result] {
        match result {
            Err(
                err @ TemplateError::Render {
                    part: Part::Html, ..
                },
            ) => {
                assert!(err.to_string().contains(&limit.to_string()), "{err}");
            }
            other => panic!("expected a render error, got {other:?}"),
        }
    }
    // Just under the limit renders.
    context
        .person
        .insert("blob".into(), json!("x".repeat(limit / 3000)));
    let rendered = template.render(&context).expect("renders");
    assert_eq!(rendered.html.len(), limit / 3000 * 3000);
}
