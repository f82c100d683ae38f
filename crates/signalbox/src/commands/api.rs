//! The one HTTP client the CLI speaks to a running server with (`list`, `segment`, `flow`,
//! `engage quarantine retry`): the server's base URL from `--url` / `SIGNALBOX_URL`, a private
//! key, the Klaviyo API revision, and errors a person can act on.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use signalbox_core::KLAVIYO_REVISION;

use crate::cli::{GlobalArgs, ServerArgs};

/// How long one request may take (imports send up to 1,000 profiles in one).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The older name of `SIGNALBOX_URL`, still read when the new one is not set.
const OLD_URL_ENV: &str = "SIGNALBOX_SERVER";

/// A running server, reached with a private key.
pub struct ServerClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl ServerClient {
    /// The server of `--url` (or `SIGNALBOX_URL`, or the older `--server` /
    /// `SIGNALBOX_SERVER`), else `http://` and the `--listen` address.
    pub fn new(global: &GlobalArgs, server: &ServerArgs, api_key: &str) -> anyhow::Result<Self> {
        let base = server
            .url
            .clone()
            .or_else(|| {
                std::env::var(OLD_URL_ENV)
                    .ok()
                    .filter(|v| !v.trim().is_empty())
            })
            .unwrap_or_else(|| format!("http://{}", global.listen));
        let base = base.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|err| {
            anyhow!("--url {base:?} is not a URL ({err}); give one such as http://127.0.0.1:8080")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--url {base:?} is not an http:// or https:// URL; give one such as http://127.0.0.1:8080");
        }
        if api_key.trim().is_empty() {
            bail!("no API key: pass --api-key or set SIGNALBOX_API_KEY (make one with `signalbox api-key create NAME`)");
        }
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(ServerClient {
            http,
            base,
            key: api_key.trim().to_owned(),
        })
    }

    /// One request to `path` (from the root, e.g. `/api/lists`), JSON:API in and out. The
    /// answer's status and body (JSON, else the text as a string, `null` when empty); only a
    /// server that cannot be reached is an error here.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .header("Authorization", format!("Klaviyo-API-Key {}", self.key))
            .header("revision", KLAVIYO_REVISION)
            .header("Accept", "application/vnd.api+json");
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/vnd.api+json")
                .body(body.to_string());
        }
        let response = request.send().await.map_err(|err| self.unreachable(&err))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("{method} {path}: the answer broke off"))?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, value))
    }

    /// A request that must succeed: any other answer is an error naming the request, the
    /// status and the server's own message (with the field it points at).
    pub async fn ok(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, value) = self.call(method.clone(), path, body).await?;
        if status.is_success() {
            return Ok(value);
        }
        let message = error_message(&value);
        match status {
            StatusCode::UNAUTHORIZED => bail!(
                "{method} {path}: the server refused the API key ({message}); pass a private key with --api-key or SIGNALBOX_API_KEY"
            ),
            StatusCode::FORBIDDEN => bail!(
                "{method} {path}: the API key may not do this ({message}); use a key with the scope it names (`signalbox api-key create NAME --scope …`)"
            ),
            _ => bail!("{method} {path}: {status}: {message}"),
        }
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.ok(Method::GET, path, None).await
    }

    fn unreachable(&self, err: &reqwest::Error) -> anyhow::Error {
        let why = if err.is_timeout() {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        } else if err.is_connect() {
            "nothing answers there".to_owned()
        } else {
            err.to_string()
        };
        anyhow!(
            "cannot reach the server at {} ({why}); start it with `signalbox serve`, or pass its address with --url",
            self.base
        )
    }
}

/// `text` as one query-string value.
pub fn encode(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The server's message in an error answer: JSON:API `errors[0].detail` (with the pointer of
/// the field), the admin API's `error.message`, else the body as it came.
pub fn error_message(value: &Value) -> String {
    if let Some(detail) = value["errors"][0]["detail"].as_str() {
        let pointer = value["errors"][0]["source"]["pointer"]
            .as_str()
            .map(|p| format!(" (at {p})"))
            .unwrap_or_default();
        return format!("{detail}{pointer}");
    }
    if let Some(message) = value["error"]["message"].as_str() {
        return message.to_owned();
    }
    match value {
        Value::Null => "no details".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The `page[cursor]` of a JSON:API answer's `links.next`, if there is a next page.
pub fn next_cursor(value: &Value) -> Option<String> {
    let next = value["links"]["next"].as_str()?;
    let query = next.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "page[cursor]")
        .map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_name_the_field() {
        let value = json!({"errors": [{"detail": "too long", "source": {"pointer": "/data/attributes/name"}}]});
        assert_eq!(error_message(&value), "too long (at /data/attributes/name)");
        assert_eq!(
            error_message(&json!({"error": {"message": "no such list"}})),
            "no such list"
        );
        assert_eq!(error_message(&Value::Null), "no details");
    }

    #[test]
    fn the_next_cursor_comes_from_the_next_link() {
        let value = json!({"links": {"next": "http://x/api/lists?page%5Bcursor%5D=abc%3D&x=1"}});
        assert_eq!(next_cursor(&value).as_deref(), Some("abc="));
        assert_eq!(next_cursor(&json!({"links": {}})), None);
    }
}
