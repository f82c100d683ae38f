//! The guarded client against local servers: refusals happen before any connection, limits
//! hold, and with private destinations allowed a local receiver is reached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::post;
use axum::Router;
use signalbox_outbound::{
    AddressClass, OutboundClient, OutboundConfig, OutboundError, OutboundRequest,
};
use tokio::net::TcpListener;

fn client(allow_private: bool) -> OutboundClient {
    OutboundClient::new(OutboundConfig {
        allow_private_destinations: allow_private,
        max_response_bytes: 64 * 1024,
        timeout: Duration::from_secs(5),
        ..OutboundConfig::default()
    })
    .unwrap()
}

/// A listener that only counts the connections it is offered.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, accepted)
}

async fn serve(app: Router) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn loopback_literals_and_names_are_refused_without_connecting() {
    let (port, accepted) = counting_listener().await;
    let client = client(false);
    for url in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://localhost:{port}/hook"),
    ] {
        let error = client
            .send(OutboundRequest::post(&url).body("{}"))
            .await
            .unwrap_err();
        match &error {
            OutboundError::Refused { class, .. } => {
                assert_eq!(*class, AddressClass::Loopback, "{url}")
            }
            other => panic!("{url}: {other:?}"),
        }
        assert!(error.is_refused() && !error.is_transient());
        assert!(error.to_string().contains("loopback"), "{error}");
    }
    // Give a connection that slipped through time to show up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
}

#[tokio::test]
async fn private_and_metadata_literals_are_refused_before_any_traffic() {
    // Nothing may be sent to these: the refusal must come before the connector runs. A
    // connect timeout of a millisecond would fail differently (a connection error) if it
    // were tried.
    let client = OutboundClient::new(OutboundConfig {
        connect_timeout: Duration::from_millis(1),
        ..OutboundConfig::default()
    })
    .unwrap();
    for (url, class) in [
        ("http://10.0.0.1/hook", AddressClass::Private),
        (
            "http://169.254.169.254/latest/meta-data",
            AddressClass::CloudMetadata,
        ),
        ("http://100.64.0.1/", AddressClass::SharedAddressSpace),
        ("http://[fe80::1]/", AddressClass::LinkLocal),
    ] {
        match client.send(OutboundRequest::post(url)).await {
            Err(OutboundError::Refused { class: found, .. }) => assert_eq!(found, class, "{url}"),
            other => panic!("{url}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_local_receiver_is_reached_when_private_destinations_are_allowed() {
    let app = Router::new().route(
        "/hook",
        post(|headers: HeaderMap, body: String| async move {
            let shop = headers["x-shop"].to_str().unwrap().to_owned();
            (StatusCode::ACCEPTED, format!("{shop}:{body}"))
        }),
    );
    let base = serve(app).await;
    let response = client(true)
        .send(
            OutboundRequest::post(format!("{base}/hook"))
                .header("X-Shop", "acme")
                .body("hi"),
        )
        .await
        .unwrap();
    assert_eq!(response.status, 202);
    assert_eq!(&response.body[..], b"acme:hi");
}

#[tokio::test]
async fn host_and_hop_by_hop_headers_are_refused_at_send() {
    let (port, accepted) = counting_listener().await;
    for name in [
        "Host",
        "Transfer-Encoding",
        "Connection",
        "Proxy-Authorization",
    ] {
        let error = client(true)
            .send(
                OutboundRequest::post(format!("http://127.0.0.1:{port}/"))
                    .header(name, "secret-value"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, OutboundError::ForbiddenHeader { name: n, .. } if n == name),
            "{error:?}"
        );
        assert!(error.to_string().contains(name), "{error}");
        assert!(!error.to_string().contains("secret-value"), "{error}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_huge_response_body_is_cut_off_with_a_clear_error() {
    // 8 MiB, streamed in chunks and without a Content-Length: the client must stop reading.
    let app = Router::new()
        .route(
            "/huge",
            post(|| async {
                let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                let stream = futures_stream(chunk, 128);
                Response::new(Body::from_stream(stream))
            }),
        )
        .route(
            "/declared",
            post(|| async { vec![b'y'; 1024 * 1024].into_response() }),
        );
    let base = serve(app).await;
    for path in ["/huge", "/declared"] {
        let error = client(true)
            .send(OutboundRequest::post(format!("{base}{path}")))
            .await
            .unwrap_err();
        assert_eq!(
            error,
            OutboundError::ResponseTooLarge { limit: 64 * 1024 },
            "{path}"
        );
        assert_eq!(error.to_string(), "response body larger than 65536 bytes");
    }
}

fn futures_stream(
    chunk: bytes::Bytes,
    n: usize,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::iter((0..n).map(move |_| Ok(chunk.clone())))
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let app = Router::new().route(
        "/moved",
        post(|| async { Redirect::temporary("http://169.254.169.254/latest/meta-data") }),
    );
    let base = serve(app).await;
    let response = client(true)
        .send(OutboundRequest::post(format!("{base}/moved")))
        .await
        .unwrap();
    assert_eq!(response.status, 307);
}

#[tokio::test]
async fn a_slow_receiver_times_out() {
    let app = Router::new().route(
        "/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let base = serve(app).await;
    let client = OutboundClient::new(OutboundConfig {
        allow_private_destinations: true,
        timeout: Duration::from_millis(300),
        ..OutboundConfig::default()
    })
    .unwrap();
    let error = client
        .send(OutboundRequest::post(format!("{base}/slow")))
        .await
        .unwrap_err();
    assert!(matches!(error, OutboundError::Timeout(_)), "{error:?}");
    assert!(error.is_transient());
}
