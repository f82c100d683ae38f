//! `signalbox list …`: lists on a running server, through its HTTP API (the Klaviyo-compatible
//! `/api/lists` and the admin `/admin/v1/lists/{id}/…`), so the server's pipeline stays the
//! only writer of the engage state.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;
use serde_json::{json, Value};

use super::api::{encode, error_message, next_cursor, ServerClient};
use super::output::{
    print_line, ListLine, ListResource, MemberLine, MemberResource, PendingMemberLine,
};
use crate::cli::{GlobalArgs, ListArgs, ListCommand};

/// Profiles per import request (the server takes up to 1000).
const IMPORT_BATCH: usize = 500;
/// A list's id from its id or its name.
async fn resolve(client: &ServerClient, list: &str) -> anyhow::Result<String> {
    let (status, value) = client
        .call(Method::GET, &format!("/api/lists/{}", encode(list)), None)
        .await?;
    if status.is_success() {
        return Ok(list.to_owned());
    }
    let filter = format!("equals(name,{})", serde_json::to_string(list)?);
    let found = client
        .get(&format!("/api/lists?filter={}", encode(&filter)))
        .await?;
    let ids: Vec<&str> = found["data"]
        .as_array()
        .map(|items| items.iter().filter_map(|l| l["id"].as_str()).collect())
        .unwrap_or_default();
    match ids.as_slice() {
        [id] => Ok((*id).to_owned()),
        [] => bail!(
            "no list has the id or name {list:?} ({}); `signalbox list ls` shows them",
            error_message(&value)
        ),
        _ => bail!("several lists are named {list:?}; give its id"),
    }
}

pub async fn run(global: &GlobalArgs, args: ListArgs) -> anyhow::Result<()> {
    let client = ServerClient::new(global, &args.server, &args.api_key)?;
    match args.command {
        ListCommand::Create {
            name,
            double_opt_in,
        } => {
            let opt_in = if double_opt_in {
                "double_opt_in"
            } else {
                "single_opt_in"
            };
            let created = client
                .ok(
                    Method::POST,
                    "/api/lists",
                    Some(json!({"data": {"type": "list",
                        "attributes": {"name": name, "opt_in_process": opt_in}}})),
                )
                .await?;
            outln!("{}", created["data"]["id"].as_str().unwrap_or_default())?;
        }
        ListCommand::Ls { json } => {
            if !json {
                outln!("{:<8} {:<14} {:>8} NAME", "ID", "OPT-IN", "MEMBERS")?;
            }
            let mut cursor: Option<String> = None;
            loop {
                let mut path = "/api/lists?additional-fields%5Blist%5D=profile_count".to_owned();
                if let Some(cursor) = &cursor {
                    path.push_str(&format!("&page%5Bcursor%5D={}", encode(cursor)));
                }
                let page = client.ok(Method::GET, &path, None).await?;
                for list in page["data"].as_array().into_iter().flatten() {
                    let attributes = &list["attributes"];
                    if json {
                        let resource: ListResource = serde_json::from_value(list.clone())
                            .context("the server answered a list this version cannot read")?;
                        print_line(&ListLine::from(resource))?;
                    } else {
                        outln!(
                            "{:<8} {:<14} {:>8} {}",
                            list["id"].as_str().unwrap_or_default(),
                            attributes["opt_in_process"].as_str().unwrap_or_default(),
                            attributes["profile_count"].as_u64().unwrap_or(0),
                            attributes["name"].as_str().unwrap_or_default()
                        )?;
                    }
                }
                match next_cursor(&page) {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        ListCommand::Members {
            list,
            pending,
            json,
        } => {
            let id = resolve(&client, &list).await?;
            if pending {
                let mut after = String::new();
                loop {
                    let page = client
                        .ok(
                            Method::GET,
                            &format!(
                                "/admin/v1/lists/{id}/pending?limit=1000&after={}",
                                encode(&after)
                            ),
                            None,
                        )
                        .await?;
                    for member in page["data"].as_array().into_iter().flatten() {
                        if json {
                            let line: PendingMemberLine = serde_json::from_value(member.clone())
                                .context("the server answered a member this version cannot read")?;
                            print_line(&line)?;
                        } else {
                            outln!(
                                "{:<26} {:<32} {}",
                                member["profileId"].as_str().unwrap_or_default(),
                                member["email"].as_str().unwrap_or("-"),
                                member["confirmUrl"].as_str().unwrap_or_default()
                            )?;
                        }
                    }
                    match page["next"].as_str() {
                        Some(next) => after = next.to_owned(),
                        None => break,
                    }
                }
                return Ok(());
            }
            let mut cursor: Option<String> = None;
            loop {
                let mut path = format!("/api/lists/{id}/profiles?page%5Bsize%5D=100");
                if let Some(cursor) = &cursor {
                    path.push_str(&format!("&page%5Bcursor%5D={}", encode(cursor)));
                }
                let page = client.ok(Method::GET, &path, None).await?;
                for member in page["data"].as_array().into_iter().flatten() {
                    let attributes = &member["attributes"];
                    if json {
                        let resource: MemberResource = serde_json::from_value(member.clone())
                            .context("the server answered a member this version cannot read")?;
                        print_line(&MemberLine::from(resource))?;
                    } else {
                        outln!(
                            "{:<26} {:<32} {}",
                            member["id"].as_str().unwrap_or_default(),
                            attributes["email"].as_str().unwrap_or("-"),
                            attributes["joined_group_at"].as_str().unwrap_or_default()
                        )?;
                    }
                }
                match next_cursor(&page) {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        ListCommand::Import { list, file } => {
            let rows = read_rows(&file)?;
            let id = resolve(&client, &list).await?;
            let bar = ProgressBar::new(rows.len() as u64);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} profiles ({per_sec}, eta {eta}) {msg}",
                )
                .expect("progress template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            let mut added = 0;
            for (n, chunk) in rows.chunks(IMPORT_BATCH).enumerate() {
                let answer = client
                    .ok(
                        Method::POST,
                        &format!("/admin/v1/lists/{id}/import"),
                        Some(json!({ "profiles": chunk })),
                    )
                    .await
                    .with_context(|| {
                        format!(
                            "import stopped at record {} of {}",
                            n * IMPORT_BATCH + 1,
                            rows.len()
                        )
                    })?;
                added += answer["added"].as_u64().unwrap_or(0);
                bar.inc(chunk.len() as u64);
                bar.set_message(format!("{added} added"));
            }
            bar.finish_and_clear();
            eprintln!(
                "imported {} profiles into list {id}: {added} added, {} already members",
                rows.len(),
                rows.len() as u64 - added
            );
        }
    }
    Ok(())
}

/// The records of a CSV (header with an `email` column) or JSON lines file, as the admin
/// import takes them (`email`, `firstName`, `lastName`).
fn read_rows(path: &Path) -> anyhow::Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let first = text.trim_start().chars().next();
    let rows = if first == Some('{') {
        let mut rows = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("line {}: not a JSON object", n + 1))?;
            let field = |names: &[&str]| {
                names
                    .iter()
                    .find_map(|name| value[*name].as_str())
                    .map(str::to_owned)
            };
            let email = field(&["email", "$email"])
                .with_context(|| format!("line {}: no \"email\"", n + 1))?;
            rows.push(json!({"email": email,
                "firstName": field(&["first_name", "firstName"]),
                "lastName": field(&["last_name", "lastName"])}));
        }
        rows
    } else {
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let header = parse_csv_line(lines.next().context("the file is empty")?);
        let column = |names: &[&str]| {
            header.iter().position(|h| {
                let h = h.trim().to_ascii_lowercase().replace([' ', '-'], "_");
                names.contains(&h.as_str())
            })
        };
        let email = column(&["email", "email_address", "$email"])
            .context("the CSV header has no email column")?;
        let first = column(&["first_name", "firstname"]);
        let last = column(&["last_name", "lastname"]);
        let mut rows = Vec::new();
        for (n, line) in lines.enumerate() {
            let fields = parse_csv_line(line);
            let get = |idx: Option<usize>| {
                idx.and_then(|i| fields.get(i))
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
            };
            let Some(address) = get(Some(email)) else {
                bail!("row {}: no email", n + 2);
            };
            rows.push(json!({"email": address, "firstName": get(first), "lastName": get(last)}));
        }
        rows
    };
    if rows.is_empty() {
        bail!("{} holds no records", path.display());
    }
    Ok(rows)
}

/// One CSV line (RFC 4180 quoting; no newlines inside fields).
fn parse_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.trim_end_matches('\r').chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if field.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_lines_with_quotes() {
        assert_eq!(
            parse_csv_line(r#"a@b.com,"Smith, Ann","say ""hi""""#),
            ["a@b.com", "Smith, Ann", "say \"hi\""]
        );
        assert_eq!(parse_csv_line("x,,y\r"), ["x", "", "y"]);
    }
}
