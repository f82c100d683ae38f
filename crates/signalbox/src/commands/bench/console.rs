//! `signalbox bench console`: the console's page times over the segments benchmark's data set
//! (`ecommerce.rs`), measured through the real server.
//!
//! 1. A `serve` child on a fresh data folder, a console account made with `signalbox admin
//!    create` and an API key with `signalbox api-key create`.
//! 2. `--profiles` identifies and `--events` tracks over the last 90 days, posted to
//!    `/v1/batch`, then a wait until the engage pipeline applied every entry of the log.
//! 3. A browser's sign-in: the form's `csrf` field and `signalbox_signin` cookie from `GET
//!    /sign-in`, the form posted, the `signalbox_session` cookie kept.
//! 4. Every page fetched `--warmups` times unmeasured, then `--iterations` times one after the
//!    other on one connection, each timed from the request to the body's last byte.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::Timestamp;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::bench_dir;
use super::ecommerce::{self, METRICS};
use super::load::thousands;
use super::server::ServerChild;
use crate::cli::ConsoleBenchArgs;

/// The issue's target for every page's server time.
const TARGET_MS: f64 = 100.0;
/// Calls per `/v1/batch` request while loading the data set.
const BATCH: usize = 500;
/// `/v1/batch` requests in flight while loading.
const LOAD_CONNECTIONS: usize = 8;
/// How long the pipeline may take to apply the data set.
const APPLY_LIMIT: Duration = Duration::from_secs(3_600);
/// The Klaviyo API revision the id look-ups ask for.
const REVISION: &str = signalbox_core::KLAVIYO_REVISION;
const ACCOUNT_EMAIL: &str = "bench@signalbox.example";
const ACCOUNT_PASSWORD: &str = "bench-console-password";

pub async fn run(args: ConsoleBenchArgs) -> anyhow::Result<()> {
    if args.profiles == 0 {
        bail!("--profiles must be at least 1");
    }
    if args.iterations == 0 {
        bail!("--iterations must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "signalbox bench console: {cores} cores, {} profiles, {} events, {} timed fetches per page after {} warm-ups",
        thousands(args.profiles as u64),
        thousands(args.events as u64),
        args.iterations,
        args.warmups
    );
    let dir = bench_dir()?;
    let child = ServerChild::start(dir.path(), false).await?;
    let outcome = measure(&args, dir.path(), &child).await;
    child.stop().await?;
    let pages = outcome?;

    print_table(&pages);
    if let Some(path) = &args.json {
        let figures = serde_json::json!({
            "cores": cores,
            "profiles": args.profiles,
            "events": args.events,
            "iterations": args.iterations,
            "warmups": args.warmups,
            "target_ms": TARGET_MS,
            "pages": pages,
        });
        std::fs::write(path, serde_json::to_string_pretty(&figures)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}

async fn measure(
    args: &ConsoleBenchArgs,
    data_dir: &Path,
    child: &ServerChild,
) -> anyhow::Result<Vec<PageFigures>> {
    cli(
        data_dir,
        &["admin", "create", ACCOUNT_EMAIL, "--password-stdin"],
        Some(ACCOUNT_PASSWORD),
    )
    .await?;
    let api_key = cli(
        data_dir,
        &["api-key", "create", "bench-console", "--scope", "full"],
        None,
    )
    .await?;

    let client = reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(LOAD_CONNECTIONS)
        .build()?;
    let base = child.base_url.trim_end_matches('/').to_owned();

    let loading = Instant::now();
    let accepted = load(args, &client, &base, &child.write_key).await?;
    println!(
        "  posted {} calls to /v1/batch in {:.1} s",
        thousands(accepted),
        loading.elapsed().as_secs_f64()
    );
    let applying = Instant::now();
    wait_applied(&client, &base).await?;
    println!(
        "  the pipeline applied them {:.1} s later",
        applying.elapsed().as_secs_f64()
    );

    let session = sign_in(&client, &base).await?;
    let api = Api {
        client: &client,
        base: &base,
        key: api_key.trim(),
    };
    let metric_id = api.busiest_metric().await?;
    let email = ecommerce_email(args.profiles / 2);
    let profile_id = api.profile_by_email(&email).await?;

    let mut paths: Vec<String> = [
        "/",
        "/connections",
        "/sources/default",
        "/sources/default/settings",
        "/destinations/catalog",
        "/integrations",
        "/deliveries",
        "/debugger",
        "/analytics/metrics",
    ]
    .iter()
    .map(|p| (*p).to_owned())
    .collect();
    for interval in ["day", "week", "month"] {
        paths.push(format!(
            "/analytics/metrics/{metric_id}?interval={interval}"
        ));
    }
    paths.push("/profiles".to_owned());
    paths.push(format!(
        "/profiles?q={}",
        form_urlencoded::byte_serialize(email.as_bytes()).collect::<String>()
    ));
    paths.push(format!("/profiles/{profile_id}"));
    for p in [
        "/lists",
        "/lists/new",
        "/segments",
        "/segments/new",
        "/flows",
        "/flows/new",
        "/flows/new/welcome-series",
    ] {
        paths.push(p.to_owned());
    }

    let bar = progress(
        "pages",
        (paths.len() * (args.iterations + args.warmups)) as u64,
    );
    let mut pages = Vec::with_capacity(paths.len());
    for path in &paths {
        let mut times = Vec::with_capacity(args.iterations);
        let mut errors = BTreeMap::new();
        let mut bytes = 0;
        for round in 0..args.warmups + args.iterations {
            let (elapsed, status) = fetch(&client, &base, path, &session).await;
            bar.inc(1);
            if round < args.warmups {
                continue;
            }
            match status {
                Ok(size) => {
                    times.push(elapsed);
                    bytes = size;
                }
                Err(reason) => *errors.entry(reason).or_insert(0u32) += 1,
            }
        }
        pages.push(PageFigures::new(path, times, bytes, errors));
    }
    bar.finish_and_clear();
    Ok(pages)
}

/// Runs this binary's CLI against the data folder; returns its standard output.
async fn cli(data_dir: &Path, args: &[&str], stdin: Option<&str>) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let mut command = tokio::process::Command::new(exe);
    command
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("SIGNALBOX_DATABASE_URL")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut process = command
        .spawn()
        .with_context(|| format!("cannot run `signalbox {}`", args.join(" ")))?;
    let mut input = process.stdin.take().context("no stdin for the CLI")?;
    if let Some(text) = stdin {
        input.write_all(format!("{text}\n").as_bytes()).await?;
    }
    drop(input);
    let output = process.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "`signalbox {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8(output.stdout)?)
}

fn ecommerce_email(i: usize) -> String {
    format!("user{i}@example.com")
}

/// Posts the data set to `/v1/batch`: every profile's identify first, then the events.
/// Returns the calls acknowledged.
async fn load(
    args: &ConsoleBenchArgs,
    client: &reqwest::Client,
    base: &str,
    write_key: &str,
) -> anyhow::Result<u64> {
    let total = (args.profiles + args.events) as u64;
    let bar = progress("loading", total);
    let url = format!("{base}/v1/batch");
    let now = Timestamp::now();
    let (sender, receiver) = async_channel(LOAD_CONNECTIONS * 2);
    let mut workers = Vec::with_capacity(LOAD_CONNECTIONS);
    for _ in 0..LOAD_CONNECTIONS {
        let receiver = Arc::clone(&receiver);
        let client = client.clone();
        let url = url.clone();
        let key = write_key.to_owned();
        let bar = bar.clone();
        workers.push(tokio::spawn(async move {
            let mut sent = 0u64;
            loop {
                let next = receiver.lock().await.recv().await;
                let Some((body, calls)) = next else {
                    return Ok::<u64, anyhow::Error>(sent);
                };
                post_batch(&client, &url, &key, body).await?;
                sent += calls;
                bar.inc(calls);
            }
        }));
    }

    let mut batch = Vec::with_capacity(BATCH);
    let flush = |batch: &mut Vec<String>| {
        let body = format!("{{\"batch\":[{}]}}", batch.join(","));
        let calls = batch.len() as u64;
        batch.clear();
        (body, calls)
    };
    for i in 0..args.profiles {
        batch.push(ecommerce::identify(i, now).payload);
        if batch.len() == BATCH && sender.send(flush(&mut batch)).await.is_err() {
            break;
        }
    }
    // The same spread as `bench segments`: a random profile, a weighted metric and a time
    // in the last 90 days for each event.
    let mut rng = StdRng::seed_from_u64(1);
    let span_us = jiff::SignedDuration::from_hours(24 * 90).as_micros() as i64;
    for _ in 0..args.events {
        let ago = jiff::SignedDuration::from_micros(rng.random_range(0..span_us));
        let time = now.checked_sub(ago).unwrap_or(now);
        let metric = ecommerce::pick_metric(&mut rng);
        let user = rng.random_range(0..args.profiles);
        batch.push(ecommerce::track(user, metric, time, &mut rng).payload);
        if batch.len() == BATCH && sender.send(flush(&mut batch)).await.is_err() {
            break;
        }
    }
    if !batch.is_empty() {
        let _ = sender.send(flush(&mut batch)).await;
    }
    drop(sender);
    let mut sent = 0;
    for worker in workers {
        sent += worker.await.context("a loading task panicked")??;
    }
    bar.finish_and_clear();
    Ok(sent)
}

type Batches = tokio::sync::mpsc::Receiver<(String, u64)>;

/// A bounded queue of bodies shared by the loading tasks.
fn async_channel(
    capacity: usize,
) -> (
    tokio::sync::mpsc::Sender<(String, u64)>,
    Arc<tokio::sync::Mutex<Batches>>,
) {
    let (sender, receiver) = tokio::sync::mpsc::channel(capacity);
    (sender, Arc::new(tokio::sync::Mutex::new(receiver)))
}

/// One `/v1/batch` request, retried while the server sheds load (429 or 503).
async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    write_key: &str,
    body: String,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_millis(10);
    loop {
        let response = client
            .post(url)
            .basic_auth(write_key, Some(""))
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .context("posting to /v1/batch")?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status.as_u16() == 429 || status.as_u16() == 503 {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        }
        let text = response.text().await.unwrap_or_default();
        bail!("/v1/batch answered {status}: {text}");
    }
}

/// Waits until the engage pipeline applied every entry of the log (`/metrics`
/// `signalbox_engage_applied_seq` against `/healthz` `last_seq`).
async fn wait_applied(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let health: Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await?
        .json()
        .await?;
    let last = health["last_seq"]
        .as_i64()
        .context("/healthz has no last_seq")?;
    let bar = progress("applying", last.max(0) as u64);
    let deadline = Instant::now() + APPLY_LIMIT;
    loop {
        let text = client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let applied = text
            .lines()
            .find_map(|line| line.strip_prefix("signalbox_engage_applied_seq "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as i64);
        bar.set_position(applied.max(0) as u64);
        if applied >= last {
            bar.finish_and_clear();
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the pipeline did not reach entry {last} within {APPLY_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Signs in like a browser; returns the `Cookie` header of the session.
async fn sign_in(client: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    let form = client.get(format!("{base}/sign-in")).send().await?;
    if !form.status().is_success() {
        bail!("GET /sign-in answered {}", form.status());
    }
    let signin_cookie = cookie(form.headers(), "signalbox_signin")
        .context("GET /sign-in set no signalbox_signin cookie")?;
    let html = form.text().await?;
    let csrf = hidden_field(&html, "csrf").context("the sign-in form has no csrf field")?;
    let body = form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("next", "/")
        .append_pair("email", ACCOUNT_EMAIL)
        .append_pair("password", ACCOUNT_PASSWORD)
        .finish();
    let answer = client
        .post(format!("{base}/sign-in"))
        .header(COOKIE, format!("signalbox_signin={signin_cookie}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let status = answer.status();
    let session = cookie(answer.headers(), "signalbox_session");
    match session {
        Some(value) if status.is_redirection() => Ok(format!("signalbox_session={value}")),
        _ => bail!(
            "signing in answered {status} (to {}) without a session",
            answer
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("nowhere")
        ),
    }
}

/// The value of the cookie `name` among a response's `Set-Cookie` headers.
fn cookie(headers: &reqwest::header::HeaderMap, name: &str) -> Option<String> {
    headers.get_all(SET_COOKIE).iter().find_map(|value| {
        let text = value.to_str().ok()?;
        let pair = text.split(';').next()?;
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().to_owned())
    })
}

/// The value of `<input type="hidden" name="NAME" value="…">` in a page.
fn hidden_field(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\"");
    let at = html.find(&marker)?;
    let tag_start = html[..at].rfind('<')?;
    let tag_end = at + html[at..].find('>')?;
    let tag = &html[tag_start..tag_end];
    let value = tag.split("value=\"").nth(1)?;
    Some(value.split('"').next()?.to_owned())
}

/// The Klaviyo-compatible API, to find the ids the pages need.
struct Api<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
    key: &'a str,
}

impl Api<'_> {
    async fn get(&self, path_and_query: &str) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(format!("{}{path_and_query}", self.base))
            .header(AUTHORIZATION, format!("Klaviyo-API-Key {}", self.key))
            .header(ACCEPT, "application/vnd.api+json")
            .header("revision", REVISION)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!(
                "GET {path_and_query} answered {status}: {}",
                response.text().await.unwrap_or_default()
            );
        }
        Ok(response.json().await?)
    }

    /// The id of the data set's most frequent metric.
    async fn busiest_metric(&self) -> anyhow::Result<String> {
        let busiest = METRICS
            .iter()
            .max_by_key(|(_, weight)| *weight)
            .map(|(name, _)| *name)
            .expect("the data set has metrics");
        let page = self.get("/api/metrics").await?;
        page["data"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["attributes"]["name"] == busiest)
            .and_then(|m| m["id"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("no metric \"{busiest}\" in /api/metrics"))
    }

    async fn profile_by_email(&self, email: &str) -> anyhow::Result<String> {
        let filter = format!("equals(email,\"{email}\")");
        let query: String = form_urlencoded::byte_serialize(filter.as_bytes()).collect();
        let page = self.get(&format!("/api/profiles?filter={query}")).await?;
        page["data"][0]["id"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no profile with email {email}"))
    }
}

/// One timed page load: from sending the request to the body's last byte.
async fn fetch(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    session: &str,
) -> (Duration, Result<usize, String>) {
    let started = Instant::now();
    let result = async {
        let response = client
            .get(format!("{base}{path}"))
            .header(COOKIE, session)
            .header(ACCEPT, "text/html")
            .send()
            .await
            .map_err(|err| format!("request failed: {err}"))?;
        let status = response.status();
        let body = response.bytes().await;
        if !status.is_success() {
            return Err(format!("HTTP {}", status.as_u16()));
        }
        body.map(|b| b.len())
            .map_err(|err| format!("body failed: {err}"))
    }
    .await;
    (started.elapsed(), result)
}

#[derive(Debug, serde::Serialize)]
struct PageFigures {
    page: String,
    /// Successful fetches measured.
    samples: usize,
    /// Size of the page's body.
    bytes: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// Whether p99 is under the target (false when nothing succeeded).
    under_target: bool,
    /// Failed fetches by reason (`HTTP 500`, …).
    errors: BTreeMap<String, u32>,
}

impl PageFigures {
    fn new(
        page: &str,
        mut times: Vec<Duration>,
        bytes: usize,
        errors: BTreeMap<String, u32>,
    ) -> PageFigures {
        times.sort();
        let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
        let p99 = quantile(&times, 0.99).map(ms);
        PageFigures {
            page: page.to_owned(),
            samples: times.len(),
            bytes,
            p50_ms: quantile(&times, 0.5).map(ms),
            p99_ms: p99,
            max_ms: times.last().map(ms),
            under_target: p99.is_some_and(|p| p < TARGET_MS) && errors.is_empty(),
            errors,
        }
    }
}

/// The nearest-rank quantile of sorted values.
fn quantile(sorted: &[Duration], q: f64) -> Option<&Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1)
}

fn print_table(pages: &[PageFigures]) {
    let width = pages.iter().map(|p| p.page.len()).max().unwrap_or(4).max(4);
    println!();
    println!(
        "{:<width$}  {:>9}  {:>9}  {:>9}  {:>8}  p99 < {TARGET_MS:.0} ms",
        "page", "p50 ms", "p99 ms", "max ms", "KiB"
    );
    let cell = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    for page in pages {
        let verdict = if page.under_target { "yes" } else { "NO" };
        let errors = page
            .errors
            .iter()
            .map(|(reason, n)| format!("{n}× {reason}"))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "{:<width$}  {:>9}  {:>9}  {:>9}  {:>8.1}  {verdict}{}",
            page.page,
            cell(page.p50_ms),
            cell(page.p99_ms),
            cell(page.max_ms),
            page.bytes as f64 / 1024.0,
            if errors.is_empty() {
                String::new()
            } else {
                format!("   errors: {errors}")
            }
        );
    }
    let missed = pages.iter().filter(|p| !p.under_target).count();
    println!();
    if missed == 0 {
        println!("every page under {TARGET_MS:.0} ms at p99");
    } else {
        println!(
            "{missed} of {} pages miss {TARGET_MS:.0} ms at p99",
            pages.len()
        );
    }
}

fn progress(label: &str, len: u64) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(len), target);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:24}] {human_pos}/{human_len}  {per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_field_is_read_from_the_form() {
        let html = r#"<form><input type="hidden" name="csrf" value="abc123">
            <input type="hidden" name="next" value="/"></form>"#;
        assert_eq!(hidden_field(html, "csrf").as_deref(), Some("abc123"));
        assert_eq!(hidden_field(html, "missing"), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let times: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(quantile(&times, 0.5), Some(&Duration::from_millis(10)));
        assert_eq!(quantile(&times, 0.99), Some(&Duration::from_millis(20)));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
