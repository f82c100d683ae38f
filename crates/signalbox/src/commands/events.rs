//! `signalbox events tail|export|rejected`: read the log directly.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;
use signalbox_core::SourceId;
use signalbox_store::{CallQuery, RejectionQuery, Store};

use super::open_store_readonly;
use crate::cli::{EventsCommand, GlobalArgs};

const PAGE: u32 = 5_000;

pub async fn run(global: &GlobalArgs, cmd: EventsCommand) -> anyhow::Result<()> {
    let store = open_store_readonly(global).await?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match cmd {
        EventsCommand::Export { source, since } => {
            let source_id = resolve_source(store.as_ref(), source.as_deref()).await?;
            let since = since
                .map(|s| {
                    s.parse::<jiff::Timestamp>()
                        .with_context(|| format!("--since: {s:?} is not an RFC 3339 time"))
                })
                .transpose()?;
            let mut after = 0;
            loop {
                let page = store
                    .read_calls(CallQuery {
                        after_seq: after,
                        source_id,
                        since,
                        limit: PAGE,
                    })
                    .await?;
                for call in &page {
                    writeln!(out, "{}", call.payload)?;
                }
                match page.last() {
                    Some(last) => after = last.seq,
                    None => break,
                }
            }
        }
        EventsCommand::Tail { source, from_start } => {
            let source_id = resolve_source(store.as_ref(), source.as_deref()).await?;
            let mut after = if from_start {
                0
            } else {
                store.last_seq().await?
            };
            loop {
                let page = store
                    .read_calls(CallQuery {
                        after_seq: after,
                        source_id,
                        since: None,
                        limit: PAGE,
                    })
                    .await?;
                for call in &page {
                    writeln!(out, "{}", call.payload)?;
                }
                out.flush()?;
                match page.last() {
                    Some(last) => after = last.seq,
                    None => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            }
        }
        EventsCommand::Rejected { source } => {
            let source_id = resolve_source(store.as_ref(), source.as_deref()).await?;
            let mut after = 0;
            loop {
                let page = store
                    .read_rejections(RejectionQuery {
                        after_id: after,
                        source_id,
                        limit: PAGE,
                    })
                    .await?;
                for r in &page {
                    let line = json!({
                        "id": r.id,
                        "sourceId": r.source_id,
                        "code": r.code,
                        "message": r.message,
                        "receivedAt": r.received_at.to_string(),
                        "payload": serde_json::from_str::<serde_json::Value>(&r.payload)
                            .unwrap_or_else(|_| serde_json::Value::String(r.payload.clone())),
                    });
                    writeln!(out, "{line}")?;
                }
                match page.last() {
                    Some(last) => after = last.id,
                    None => break,
                }
            }
        }
    }
    out.flush()?;
    Ok(())
}

async fn resolve_source(store: &dyn Store, name: Option<&str>) -> anyhow::Result<Option<SourceId>> {
    match name {
        None => Ok(None),
        Some(name) => Ok(Some(store.source_by_name(name).await?.id)),
    }
}
