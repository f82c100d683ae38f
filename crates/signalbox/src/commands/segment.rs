//! `signalbox segment apply FILE` and `signalbox segment members NAME`: segments through a
//! running server's Klaviyo-compatible API, so the server's segment engine stays the only
//! writer of `audience.db`.
//!
//! The file is JSON: `{"name": "…", "definition": {"condition_groups": […]}}` (optionally
//! `"is_starred"`). `apply` creates the segment, or updates the one with that name, then shows
//! the backfill's progress until it is done and prints the member count.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{encode, ServerClient};
use crate::cli::{GlobalArgs, SegmentArgs, SegmentCommand};

/// The server's segments API.
struct Api(ServerClient);

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.0.get(&format!("/api/{path}")).await
    }

    async fn segment_by_name(&self, name: &str) -> anyhow::Result<Option<Value>> {
        let filter = format!("equals(name,{})", json!(name));
        let found = self
            .get(&format!("segments?filter={}", encode(&filter)))
            .await?;
        Ok(found["data"].as_array().and_then(|a| a.first()).cloned())
    }
}

pub async fn run(global: &GlobalArgs, args: SegmentArgs) -> anyhow::Result<()> {
    let api = Api(ServerClient::new(global, &args.server, &args.api_key)?);
    match &args.command {
        SegmentCommand::Apply { file } => apply(&api, file).await,
        SegmentCommand::Members { name } => members(&api, name).await,
    }
}

async fn apply(api: &Api, file: &Path) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let spec: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let Some(name) = spec["name"].as_str() else {
        bail!("{}: \"name\" (a string) is required", file.display());
    };
    if !spec["definition"].is_object() {
        bail!("{}: \"definition\" (an object) is required", file.display());
    }
    let mut attributes = json!({"name": name, "definition": spec["definition"]});
    if let Some(starred) = spec["is_starred"].as_bool() {
        attributes["is_starred"] = json!(starred);
    }
    let id = match api.segment_by_name(name).await? {
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or_default().to_owned();
            let body = json!({"data": {"type": "segment", "id": id, "attributes": attributes}});
            api.0
                .ok(Method::PATCH, &format!("/api/segments/{id}"), Some(body))
                .await?;
            outln!("updated segment {id} ({name})")?;
            id
        }
        None => {
            let body = json!({"data": {"type": "segment", "attributes": attributes}});
            let created = api.0.ok(Method::POST, "/api/segments", Some(body)).await?;
            let id = created["data"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            outln!("created segment {id} ({name})")?;
            id
        }
    };
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("backfill {bar:40} {pos}/{len} profiles {msg}")
            .expect("valid template"),
    );
    let count = loop {
        let got = api
            .get(&format!(
                "segments/{id}?additional-fields%5Bsegment%5D=profile_count"
            ))
            .await?;
        let data = &got["data"];
        if let Some(progress) = data.get("meta").and_then(|m| m.get("backfill")) {
            bar.set_length(progress["total"].as_u64().unwrap_or(0));
            bar.set_position(progress["done"].as_u64().unwrap_or(0));
        }
        if data["attributes"]["is_processing"] == json!(false) {
            bar.set_length(bar.length().unwrap_or(0).max(bar.position()));
            bar.finish_and_clear();
            break data["attributes"]["profile_count"].as_u64().unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    outln!("{count} profiles in {name}")?;
    Ok(())
}

async fn members(api: &Api, name: &str) -> anyhow::Result<()> {
    let Some(segment) = api.segment_by_name(name).await? else {
        bail!("no segment named {name:?}");
    };
    let id = segment["id"].as_str().unwrap_or_default();
    let mut path = format!("segments/{id}/profiles?page%5Bsize%5D=100");
    loop {
        let page = api.get(&path).await?;
        for profile in page["data"].as_array().into_iter().flatten() {
            let attributes = &profile["attributes"];
            outln!(
                "{}\t{}\t{}",
                profile["id"].as_str().unwrap_or_default(),
                attributes["email"].as_str().unwrap_or("-"),
                attributes["joined_group_at"].as_str().unwrap_or("-"),
            )?;
        }
        let Some(next) = page["links"]["next"].as_str() else {
            break;
        };
        // Links are absolute (https, as Klaviyo's); keep the path and query.
        let Some((_, rest)) = next.split_once("/api/") else {
            break;
        };
        path = rest.to_owned();
    }
    Ok(())
}
