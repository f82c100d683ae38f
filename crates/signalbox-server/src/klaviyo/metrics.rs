//! `GET /api/metrics` and `GET /api/metrics/{id}`.

use axum::extract::Path;
use axum::http::StatusCode;
use serde_json::{json, Map};
use signalbox_engage::{Metric, MetricId, MetricQuery};

use super::auth::Caller;
use super::error::ApiError;
use super::filter::{FieldRule, Op};
use super::jsonapi::{datetime, BaseUrl, JsonApi, Params, QuerySpec, RawQuery, Resource};
use super::scopes::MetricsRead;

/// Metrics per page (Klaviyo's fixed page size; the endpoint takes no `page[size]`).
const PAGE_SIZE: u32 = 200;

pub const FIELDS: &[&str] = &["id", "name", "created", "updated", "integration"];

const LIST: QuerySpec = QuerySpec {
    filters: &[
        FieldRule {
            field: "integration.name",
            ops: &[Op::Equals],
        },
        FieldRule {
            field: "integration.category",
            ops: &[Op::Equals],
        },
    ],
    sorts: &[],
    includes: &[],
    fieldsets: &[("metric", FIELDS)],
    page_size: None,
    paged: true,
};

const ONE: QuerySpec = QuerySpec::single(&[], &[("metric", FIELDS)]);

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn list(
    caller: Caller<MetricsRead>,
    base: BaseUrl,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &LIST)?;
    let mut q = MetricQuery {
        page_size: PAGE_SIZE,
        cursor: params.cursor.clone(),
        ..MetricQuery::default()
    };
    for condition in &params.filter {
        let value = condition.string()?;
        match condition.field.as_str() {
            "integration.name" => q.integration_name = Some(value),
            _ => q.integration_category = Some(value),
        }
    }
    let page = caller.engage.list_metrics(q).await?;
    let data = page
        .items
        .iter()
        .map(|m| params.render(&resource(m, &base)));
    Ok(JsonApi(
        StatusCode::OK,
        params.collection(&base, "metrics", data, page.next_cursor.as_deref()),
    ))
}

#[tracing::instrument(skip_all, fields(key = %caller.key_name))]
pub async fn get(
    caller: Caller<MetricsRead>,
    base: BaseUrl,
    Path(id): Path<String>,
    query: RawQuery,
) -> Result<JsonApi, ApiError> {
    let params = Params::parse(query, &ONE)?;
    let metric = caller.engage.get_metric(&MetricId(id)).await?;
    Ok(params.document(StatusCode::OK, &resource(&metric, &base)))
}

/// A metric as a JSON:API resource.
pub fn resource(metric: &Metric, base: &BaseUrl) -> Resource {
    let mut attributes = Map::new();
    attributes.insert("name".into(), json!(metric.name));
    attributes.insert("created".into(), json!(datetime(metric.created)));
    attributes.insert("updated".into(), json!(datetime(metric.updated)));
    attributes.insert(
        "integration".into(),
        json!({
            "object": "integration",
            "key": integration_key(&metric.integration.name),
            "name": metric.integration.name,
            "category": metric.integration.category,
        }),
    );
    Resource {
        kind: "metric",
        id: metric.id.to_string(),
        attributes,
        relationships: None,
        self_link: base.link(&format!("metrics/{}", metric.id)),
    }
}

/// An integration's key as Klaviyo writes it: lowercase, words joined by `_`.
fn integration_key(name: &str) -> String {
    name.split_whitespace()
        .map(str::to_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}
