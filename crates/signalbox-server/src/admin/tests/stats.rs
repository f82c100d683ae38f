use axum::http::StatusCode;
use serde_json::json;

use super::spawn_app;

#[tokio::test]
async fn totals_per_source() {
    let app = spawn_app().await;
    let empty = app.get("/admin/v1/stats").await;
    assert_eq!(empty.status, StatusCode::OK);
    assert_eq!(empty.body["lastSeq"], 0);
    assert_eq!(empty.body["calls"], 0);
    assert_eq!(empty.body["sources"][0]["source"], "default");
    assert_eq!(empty.body["sources"][0]["calls"], 0);

    for name in ["web", "idle", "gone"] {
        app.post("/admin/v1/sources", json!({"name": name})).await;
    }
    app.append("default", &["d1", "d2"]).await;
    let web = app.append("web", &["w1", "w2", "w3"]).await;
    let gone = app.append("gone", &["g1"]).await;
    app.reject("web", "{}").await;
    app.reject("default", "{}").await;
    app.reject("web", "{}").await;
    app.delete("/admin/v1/sources/gone").await;

    let stats = app.get("/admin/v1/stats").await;
    assert_eq!(stats.status, StatusCode::OK, "{}", stats.body);
    assert_eq!(stats.body["lastSeq"], gone[0]);
    assert_eq!(stats.body["calls"], 6);
    assert_eq!(stats.body["rejections"], 3);
    let rows = stats.body["sources"].as_array().unwrap();
    let row = |name: Option<&str>| {
        rows.iter()
            .find(|r| r["source"].as_str() == name)
            .unwrap_or_else(|| panic!("no row for {name:?} in {rows:?}"))
    };
    assert_eq!(row(Some("default"))["calls"], 2);
    assert_eq!(row(Some("default"))["rejections"], 1);
    assert_eq!(row(Some("web"))["calls"], 3);
    assert_eq!(row(Some("web"))["lastSeq"], web[2]);
    assert_eq!(row(Some("web"))["rejections"], 2);
    assert_eq!(row(Some("idle"))["calls"], 0);
    assert_eq!(row(Some("idle"))["lastSeq"], 0);
    // A deleted source's calls are still in the log.
    assert_eq!(row(None)["calls"], 1);
    assert_eq!(rows.len(), 4);

    // The store's aggregate query agrees with walking the log.
    let aggregated = app.store().totals().await.unwrap();
    let walked = signalbox_store::totals_by_walking(app.store())
        .await
        .unwrap();
    assert_eq!(aggregated, walked);
    assert_eq!(aggregated.len(), 3);
}
