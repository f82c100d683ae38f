//! [`OutboundClient`]: HTTP requests to destinations that users configure.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::HeaderMap;
use reqwest::{Method, Url};

use crate::address::classify;
use crate::error::OutboundError;
use crate::headers::check_header;

/// How an [`OutboundClient`] behaves.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// The longest a connection (TCP and TLS) may take to set up.
    pub connect_timeout: Duration,
    /// The longest a whole request may take, response body included.
    pub timeout: Duration,
    /// Response bodies larger than this are refused ([`OutboundError::ResponseTooLarge`]).
    pub max_response_bytes: usize,
    /// Lets requests reach loopback, private, link-local and other non-public addresses:
    /// for tests and receivers on the same network. Off by default.
    pub allow_private_destinations: bool,
}

impl Default for OutboundConfig {
    fn default() -> OutboundConfig {
        OutboundConfig {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            max_response_bytes: 1024 * 1024,
            allow_private_destinations: false,
        }
    }
}

/// A request to send: method, URL, the caller's headers and a body.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl OutboundRequest {
    pub fn new(method: Method, url: impl Into<String>) -> OutboundRequest {
        OutboundRequest {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    pub fn post(url: impl Into<String>) -> OutboundRequest {
        OutboundRequest::new(Method::POST, url)
    }

    /// Adds a header; checked when the request is sent (see
    /// [`check_header_name`](crate::check_header_name)).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> OutboundRequest {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<Bytes>) -> OutboundRequest {
        self.body = body.into();
        self
    }
}

/// A response read whole (up to the size limit).
#[derive(Debug, Clone)]
pub struct OutboundResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl OutboundResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An HTTP client for destinations that users configure (flow webhooks, destinations). It
/// refuses, unless [`OutboundConfig::allow_private_destinations`] is set:
///
/// - URLs other than `http` and `https`;
/// - destinations that are, or whose host name resolves to, a non-public address (see
///   [`classify`]). Names are resolved by the client's own resolver, which hands the connector
///   only the addresses it checked, so a DNS answer that changes between the check and the
///   connection (rebinding) cannot slip through; IP-literal URLs, which skip resolution, are
///   checked before the request starts;
///
/// and always refuses caller-set `Host`, hop-by-hop and framing headers. Redirects are not
/// followed (a 3xx is returned as is), proxies from the environment are not used, and the
/// response body is read up to [`OutboundConfig::max_response_bytes`]. Cheap to clone.
#[derive(Clone)]
pub struct OutboundClient {
    http: reqwest::Client,
    config: Arc<OutboundConfig>,
}

impl std::fmt::Debug for OutboundClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboundClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl OutboundClient {
    pub fn new(config: OutboundConfig) -> Result<OutboundClient, OutboundError> {
        let resolver = Arc::new(GuardedResolver {
            allow_private: config.allow_private_destinations,
        });
        let http = reqwest::Client::builder()
            .dns_resolver(resolver)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .build()
            .map_err(|e| OutboundError::Client(e.to_string()))?;
        Ok(OutboundClient {
            http,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    /// Checks a URL as [`OutboundClient::send`] does before sending: it parses, its scheme is
    /// http or https, and a literal IP host is a public address (unless private destinations
    /// are allowed). Host names are checked when they are resolved.
    pub fn check_url(&self, url: &str) -> Result<Url, OutboundError> {
        let url = check_url_syntax(url)?;
        if !self.config.allow_private_destinations {
            // The URL parser writes every IPv4 spelling (`2130706433`, `0x7f.1`) dotted, and
            // IPv6 in brackets.
            let host = url.host_str().unwrap_or_default();
            let literal = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(host)
                .parse::<IpAddr>();
            if let Ok(ip) = literal {
                if let Some(class) = classify(ip) {
                    return Err(OutboundError::Refused {
                        host: url.host_str().unwrap_or_default().to_owned(),
                        address: ip,
                        class,
                    });
                }
            }
        }
        Ok(url)
    }

    /// Sends the request and reads the response, refusing what the client does not allow
    /// before anything is sent.
    pub async fn send(&self, request: OutboundRequest) -> Result<OutboundResponse, OutboundError> {
        let url = self.check_url(&request.url)?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let mut headers = HeaderMap::with_capacity(request.headers.len());
        for (name, value) in &request.headers {
            let (name, value) = check_header(name, value)?;
            headers.append(name, value);
        }
        let timeout = self.config.timeout;
        let exchange = async {
            let mut response = self
                .http
                .request(request.method, url)
                .headers(headers)
                .body(request.body)
                .send()
                .await
                .map_err(|e| from_reqwest(&host, timeout, e))?;
            let limit = self.config.max_response_bytes;
            if response.content_length().is_some_and(|n| n > limit as u64) {
                return Err(OutboundError::ResponseTooLarge { limit });
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| from_reqwest(&host, timeout, e))?
            {
                if body.len() + chunk.len() > limit {
                    return Err(OutboundError::ResponseTooLarge { limit });
                }
                body.extend_from_slice(&chunk);
            }
            Ok(OutboundResponse {
                status: response.status().as_u16(),
                headers: response.headers().clone(),
                body: body.freeze(),
            })
        };
        // The client's own timeout covers this too; this one also bounds a body that trickles.
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(OutboundError::Timeout(timeout)),
        }
    }
}

/// Checks that a URL parses and is http or https. What a flow definition is checked against
/// when it is saved.
pub fn check_url_syntax(url: &str) -> Result<Url, OutboundError> {
    let parsed = Url::parse(url).map_err(|e| OutboundError::InvalidUrl {
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(OutboundError::Scheme {
            scheme: parsed.scheme().to_owned(),
        });
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(OutboundError::InvalidUrl {
            reason: "the URL has no host".into(),
        });
    }
    Ok(parsed)
}

/// Our own errors travel through reqwest's chain (the resolver's refusal); anything else is
/// told apart by reqwest's kinds.
fn from_reqwest(host: &str, timeout: Duration, error: reqwest::Error) -> OutboundError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(current) = source {
        if let Some(ours) = current.downcast_ref::<OutboundError>() {
            return ours.clone();
        }
        source = current.source();
    }
    let detail = chain(&error);
    if error.is_timeout() {
        OutboundError::Timeout(timeout)
    } else if error.is_connect() {
        OutboundError::Connect {
            host: host.to_owned(),
            detail,
        }
    } else {
        OutboundError::Transport { detail }
    }
}

/// An error and its causes, `a: b: c`. reqwest's messages never include header values.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Resolves host names with the system resolver and keeps only the addresses outbound
/// requests may reach; the connector connects to exactly these.
struct GuardedResolver {
    allow_private: bool,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let allow_private = self.allow_private;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| {
                    Box::new(OutboundError::Resolve {
                        host: host.clone(),
                        detail: e.to_string(),
                    }) as Box<dyn std::error::Error + Send + Sync>
                })?
                .collect();
            let allowed = filter_addresses(&host, found, allow_private)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The addresses of `found` a request may connect to; when there are none, why.
fn filter_addresses(
    host: &str,
    found: Vec<SocketAddr>,
    allow_private: bool,
) -> Result<Vec<SocketAddr>, Box<dyn std::error::Error + Send + Sync>> {
    if allow_private {
        return Ok(found);
    }
    let mut refused = None;
    let mut allowed = Vec::with_capacity(found.len());
    for addr in found {
        match classify(addr.ip()) {
            None => allowed.push(addr),
            Some(class) => {
                tracing::debug!(host, address = %addr.ip(), %class, "resolved address refused");
                refused.get_or_insert((addr.ip(), class));
            }
        }
    }
    match (allowed.is_empty(), refused) {
        (false, _) => Ok(allowed),
        (true, Some((address, class))) => Err(Box::new(OutboundError::Refused {
            host: host.to_owned(),
            address,
            class,
        })),
        (true, None) => Err(Box::new(OutboundError::Resolve {
            host: host.to_owned(),
            detail: "no addresses".into(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(allow_private: bool) -> OutboundClient {
        OutboundClient::new(OutboundConfig {
            allow_private_destinations: allow_private,
            ..OutboundConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn literal_addresses_are_checked_in_every_spelling() {
        let refusing = client(false);
        for url in [
            "http://127.0.0.1/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://[::1]:8080/",
            "http://[::ffff:169.254.169.254]/latest/meta-data",
            "http://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
            "http://0.0.0.0:80/",
            "http://[fd00:ec2::254]/",
        ] {
            assert!(
                matches!(refusing.check_url(url), Err(OutboundError::Refused { .. })),
                "{url}: {:?}",
                refusing.check_url(url)
            );
        }
        assert!(refusing.check_url("https://93.184.215.14/hook").is_ok());
        assert!(refusing.check_url("https://hooks.example.com/x").is_ok());
        assert!(client(true).check_url("http://127.0.0.1:9/").is_ok());
    }

    #[test]
    fn only_http_and_https() {
        let client = client(true);
        for url in ["ftp://example.com/", "file:///etc/passwd", "gopher://x/"] {
            assert!(
                matches!(client.check_url(url), Err(OutboundError::Scheme { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            client.check_url("not a url"),
            Err(OutboundError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let metadata: SocketAddr = "[fd00:ec2::254]:0".parse().unwrap();
        assert_eq!(
            filter_addresses("h", vec![loopback, public, metadata], false).unwrap(),
            vec![public]
        );
        let refused = filter_addresses("h", vec![loopback, metadata], false).unwrap_err();
        let refused = refused.downcast_ref::<OutboundError>().unwrap();
        assert!(
            matches!(refused, OutboundError::Refused { .. }),
            "{refused}"
        );
        assert_eq!(
            filter_addresses("h", vec![loopback], true).unwrap(),
            vec![loopback]
        );
    }
}
