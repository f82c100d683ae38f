//! The template environment: every page's templates, compiled once, plus the layout they
//! extend (`layout.html`: the navigation, the signed-in account, the skip link).

use axum::http::StatusCode;
use axum::response::Html;
use minijinja::Environment;
use serde::Serialize;

use crate::error::{ConsoleError, ConsoleResult};

/// The layout every page extends.
const LAYOUT: &str = include_str!("../templates/layout.html");

pub(crate) struct Templates {
    env: Environment<'static>,
}

impl Templates {
    pub fn new() -> Templates {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::Html);
        env.add_template("layout.html", LAYOUT)
            .expect("the layout compiles");
        for (name, source) in crate::pages::templates() {
            env.add_template(name, source)
                .unwrap_or_else(|err| panic!("template {name} does not compile: {err}"));
        }
        Templates { env }
    }

    /// Renders a page; `context` is serialised for the template.
    pub fn render(&self, name: &str, context: impl Serialize) -> ConsoleResult<Html<String>> {
        let template = self
            .env
            .get_template(name)
            .map_err(ConsoleError::internal)?;
        template
            .render(context)
            .map(Html)
            .map_err(ConsoleError::internal)
    }
}

/// A minimal page for an error, without the layout (it must render whatever failed).
pub(crate) fn error_page(status: StatusCode, message: &str) -> Html<String> {
    let escape = |text: &str| {
        text.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{code} · Signalbox</title><link rel=\"stylesheet\" href=\"/assets/console.css\"></head>\
         <body><main class=\"narrow\"><h1>{code} {reason}</h1><p role=\"alert\">{message}</p>\
         <p><a href=\"/\">Back to the console</a></p></main></body></html>",
        code = status.as_u16(),
        reason = escape(status.canonical_reason().unwrap_or("")),
        message = escape(message),
    ))
}
