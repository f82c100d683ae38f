//! `signalbox flow apply FILE | list | status NAME | messages FLOW | approve FLOW | skip FLOW`:
//! flows on a running server, through its Klaviyo-compatible API (`/api/flows`) and, for the
//! review queue of held messages, the admin API (`/admin/v1/flows/{id}/messages`). The engine
//! runs inside `serve`, so changes go through it rather than to `flows.db` behind its back.

use std::path::Path;

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::api::ServerClient;
use super::output::{print_line, FlowLine, FlowResource, FlowStatusLine, HeldMessageLine};
use crate::cli::{FlowArgs, FlowCommand, GlobalArgs};

pub async fn run(global: &GlobalArgs, args: FlowArgs) -> anyhow::Result<()> {
    let client = Client(ServerClient::new(global, &args.server, &args.api_key)?);
    match args.command {
        FlowCommand::Apply { file } => apply(&client, &file).await,
        FlowCommand::List { json } => list(&client, json).await,
        FlowCommand::Status { name_or_id, json } => status(&client, &name_or_id, json).await,
        FlowCommand::Messages {
            flow,
            pending,
            json,
        } => messages(&client, &flow, pending, json).await,
        FlowCommand::Approve { flow, message } => {
            release(&client, &flow, message, Release::Approve).await
        }
        FlowCommand::Skip { flow, message } => {
            release(&client, &flow, message, Release::Skip).await
        }
    }
}

/// The server's flows API.
struct Client(ServerClient);

impl Client {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        self.0.ok(method, path, body).await
    }

    async fn flows(&self) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        let mut path = "/api/flows".to_owned();
        loop {
            let page = self.call(reqwest::Method::GET, &path, None).await?;
            out.extend(page["data"].as_array().cloned().unwrap_or_default());
            match page["links"]["next"].as_str() {
                Some(next) => {
                    let query = next.split_once('?').map(|(_, q)| q).unwrap_or("");
                    path = format!("/api/flows?{query}");
                }
                None => return Ok(out),
            }
        }
    }

    /// The flow named (or with id) `name_or_id`.
    async fn find(&self, name_or_id: &str) -> anyhow::Result<Option<Value>> {
        let flows = self.flows().await?;
        let mut found = flows
            .iter()
            .filter(|f| f["id"] == name_or_id)
            .cloned()
            .collect::<Vec<_>>();
        if found.is_empty() {
            found = flows
                .into_iter()
                .filter(|f| f["attributes"]["name"] == name_or_id)
                .collect();
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            n => bail!("{n} flows are named {name_or_id:?}; use the id"),
        }
    }
}

/// What a flow file says: a name, a definition, maybe a status.
fn read_file(file: &Path) -> anyhow::Result<(String, Value, Option<String>)> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let attributes = match value.pointer("/data/attributes") {
        Some(attributes) => attributes.clone(),
        None => value,
    };
    let name = attributes["name"]
        .as_str()
        .filter(|n| !n.trim().is_empty())
        .with_context(|| format!("{} has no \"name\"", file.display()))?
        .to_owned();
    let definition = attributes
        .get("definition")
        .filter(|d| d.is_object())
        .cloned()
        .with_context(|| format!("{} has no \"definition\" object", file.display()))?;
    let status = attributes["status"].as_str().map(str::to_owned);
    Ok((name, definition, status))
}

async fn apply(client: &Client, file: &Path) -> anyhow::Result<()> {
    let (name, definition, status) = read_file(file)?;
    match client.find(&name).await? {
        None => {
            let mut attributes = json!({"name": name, "definition": definition});
            if let Some(status) = &status {
                attributes["status"] = json!(status);
            }
            let created = client
                .call(
                    reqwest::Method::POST,
                    "/api/flows",
                    Some(json!({"data": {"type": "flow", "attributes": attributes}})),
                )
                .await?;
            outln!(
                "created flow {} {:?} ({})",
                created["data"]["id"].as_str().unwrap_or(""),
                name,
                created["data"]["attributes"]["status"]
                    .as_str()
                    .unwrap_or("")
            )?;
        }
        Some(existing) => {
            let id = existing["id"].as_str().unwrap_or("").to_owned();
            let mut attributes = json!({"definition": definition});
            if let Some(status) = &status {
                attributes["status"] = json!(status);
            }
            let updated = client
                .call(
                    reqwest::Method::PATCH,
                    &format!("/api/flows/{id}"),
                    Some(json!({"data": {"type": "flow", "id": id, "attributes": attributes}})),
                )
                .await?;
            outln!(
                "updated flow {id} {:?} ({})",
                name,
                updated["data"]["attributes"]["status"]
                    .as_str()
                    .unwrap_or("")
            )?;
        }
    }
    Ok(())
}

async fn list(client: &Client, as_json: bool) -> anyhow::Result<()> {
    let flows = client.flows().await?;
    if as_json {
        for flow in &flows {
            print_line(&FlowLine::from(flow_resource(flow.clone())?))?;
        }
        return Ok(());
    }
    outln!("{:<10} {:<8} {:<18} NAME", "ID", "STATUS", "TRIGGER")?;
    for flow in &flows {
        let a = &flow["attributes"];
        outln!(
            "{:<10} {:<8} {:<18} {}",
            flow["id"].as_str().unwrap_or(""),
            a["status"].as_str().unwrap_or(""),
            a["trigger_type"].as_str().unwrap_or(""),
            a["name"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

async fn status(client: &Client, name_or_id: &str, as_json: bool) -> anyhow::Result<()> {
    let Some(flow) = client.find(name_or_id).await? else {
        bail!("no flow named {name_or_id:?}");
    };
    let id = flow["id"].as_str().unwrap_or("");
    let full = client
        .call(
            reqwest::Method::GET,
            &format!("/api/flows/{id}?additional-fields[flow]=definition,statistics"),
            None,
        )
        .await?;
    let data = &full["data"];
    if as_json {
        print_line(&FlowStatusLine::from(flow_resource(data.clone())?))?;
        return Ok(());
    }
    let a = &data["attributes"];
    outln!(
        "{} {:?}: {}, trigger {}",
        id,
        a["name"].as_str().unwrap_or(""),
        a["status"].as_str().unwrap_or(""),
        a["trigger_type"].as_str().unwrap_or("")
    )?;
    let stats = &a["statistics"];
    outln!("  flow      {}", counters_line(&stats["flow"]))?;
    for action in a["definition"]["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let action_id = action["id"].as_str().unwrap_or("");
        outln!(
            "  {:<9} {:<18} {}",
            action_id,
            action["type"].as_str().unwrap_or(""),
            counters_line(&stats["actions"][action_id])
        )?;
    }
    Ok(())
}

/// A flow resource of the server's answer, as `--json` prints it.
fn flow_resource(value: Value) -> anyhow::Result<FlowResource> {
    serde_json::from_value(value).context("the server answered a flow this version cannot read")
}

/// The id of the flow named (or with id) `name_or_id`.
async fn flow_id(client: &Client, name_or_id: &str) -> anyhow::Result<String> {
    let Some(flow) = client.find(name_or_id).await? else {
        bail!("no flow named {name_or_id:?}; `signalbox flow list` shows them");
    };
    Ok(flow["id"].as_str().unwrap_or_default().to_owned())
}

async fn messages(
    client: &Client,
    name_or_id: &str,
    pending: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let id = flow_id(client, name_or_id).await?;
    let status = if pending { "&status=pending" } else { "" };
    if !as_json {
        outln!(
            "{:<8} {:<9} {:<10} {:<30} {:<24} SUBJECT",
            "ID",
            "STATUS",
            "ACTION",
            "EMAIL",
            "EXPIRES"
        )?;
    }
    let mut after = 0;
    loop {
        let page = client
            .call(
                reqwest::Method::GET,
                &format!("/admin/v1/flows/{id}/messages?limit=1000&after={after}{status}"),
                None,
            )
            .await?;
        for message in page["data"].as_array().into_iter().flatten() {
            if as_json {
                let line: HeldMessageLine = serde_json::from_value(message.clone())
                    .context("the server answered a message this version cannot read")?;
                print_line(&line)?;
                continue;
            }
            outln!(
                "{:<8} {:<9} {:<10} {:<30} {:<24} {}",
                message["id"],
                message["status"].as_str().unwrap_or_default(),
                message["actionId"].as_str().unwrap_or_default(),
                message["email"].as_str().unwrap_or("-"),
                message["expires"].as_str().unwrap_or_default(),
                message["subject"].as_str().unwrap_or("-"),
            )?;
        }
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return Ok(()),
        }
    }
}

#[derive(Clone, Copy)]
enum Release {
    Approve,
    Skip,
}

async fn release(
    client: &Client,
    name_or_id: &str,
    message: i64,
    how: Release,
) -> anyhow::Result<()> {
    let id = flow_id(client, name_or_id).await?;
    let verb = match how {
        Release::Approve => "approve",
        Release::Skip => "skip",
    };
    let held = client
        .call(
            reqwest::Method::POST,
            &format!("/admin/v1/flows/{id}/messages/{message}/{verb}"),
            None,
        )
        .await?;
    let to = held["email"].as_str().unwrap_or("-");
    match how {
        Release::Approve => {
            outln!("approved message {message} of flow {id} to {to}; it is sent shortly")?
        }
        Release::Skip => {
            outln!("skipped message {message} of flow {id} to {to}; it will not be sent")?
        }
    }
    Ok(())
}

fn counters_line(counters: &Value) -> String {
    let mut parts: Vec<String> = counters["counts"]
        .as_object()
        .map(|counts| {
            counts
                .iter()
                .map(|(name, n)| format!("{name}={n}"))
                .collect()
        })
        .unwrap_or_default();
    if let Some(revenue) = counters["revenue"].as_f64().filter(|r| *r != 0.0) {
        parts.push(format!("revenue={revenue:.2}"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(" ")
    }
}
