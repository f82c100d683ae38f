//! The command line as a person meets it: every subcommand's `--help` (one spelling for the
//! server's address, the key's variable named), the commands and flags README.md and
//! ARCHITECTURE.md name exist, and errors that say what was wrong and what to do, with exit code 2 for usage and 1 for failure.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_signalbox");

fn signalbox(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("SIGNALBOX_URL")
        .env_remove("SIGNALBOX_SERVER")
        .env_remove("SIGNALBOX_API_KEY")
        .env("NO_COLOR", "1")
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The subcommands a `--help` text lists under `Commands:`.
fn subcommands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with("  ") {
                break;
            }
            if let Some(name) = line.split_whitespace().next() {
                if name != "help" && !line.starts_with("    ") {
                    out.push(name.to_owned());
                }
            }
        }
    }
    out
}

/// Every command path (`["list", "ls"]`, …) with its `--help` text, depth first.
fn every_help() -> Vec<(Vec<String>, String)> {
    let mut out = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let output = signalbox(&args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let help = stdout(&output);
        for sub in subcommands(&help) {
            let mut next = path.clone();
            next.push(sub);
            todo.push(next);
        }
        out.push((path, help));
    }
    out
}

#[test]
fn every_subcommand_spells_the_server_and_the_key_one_way() {
    let helps = every_help();
    assert!(helps.len() > 40, "only {} commands found", helps.len());
    let mut with_url = BTreeSet::new();
    for (path, help) in &helps {
        let name = format!("signalbox {}", path.join(" "));
        assert!(
            !help.contains("--server"),
            "{name} still shows --server:\n{help}"
        );
        assert!(
            !help.contains("SIGNALBOX_SERVER"),
            "{name} still names SIGNALBOX_SERVER:\n{help}"
        );
        // A destination's `--url` and `--api-key` are the receiver's, not this server's.
        let receiver = path.first().is_some_and(|p| p == "destination");
        for line in help.lines() {
            let line = line.trim_start();
            if receiver {
                continue;
            }
            if line.starts_with("--url ") {
                assert!(
                    line.contains("[env: SIGNALBOX_URL="),
                    "{name}: --url without SIGNALBOX_URL: {line}"
                );
                with_url.insert(name.clone());
            }
            if line.starts_with("--api-key ") {
                assert!(
                    line.contains("[env: SIGNALBOX_API_KEY"),
                    "{name}: --api-key without SIGNALBOX_API_KEY: {line}"
                );
            }
        }
    }
    for command in [
        "signalbox list",
        "signalbox flow",
        "signalbox segment",
        "signalbox engage quarantine retry",
    ] {
        assert!(with_url.contains(command), "{command} takes no --url");
    }
}

#[test]
fn the_commands_the_readme_names_exist() {
    let checked = check_doc("README.md", &every_help());
    assert!(checked > 20, "only {checked} commands found in README.md");
}

#[test]
fn the_commands_and_flags_architecture_names_exist() {
    let checked = check_doc("ARCHITECTURE.md", &every_help());
    assert!(
        checked > 20,
        "only {checked} commands and flags found in ARCHITECTURE.md"
    );
}

/// Checks every command and flag a document of the repository names in code spans against
/// `--help`: `signalbox list import LIST FILE`, `serve --discard` (a command without the
/// binary's name is checked when it has a subcommand or a flag), and a flag alone
/// (`--max-connections`, which some command must take). Returns how many were checked.
fn check_doc(name: &str, helps: &[(Vec<String>, String)]) -> usize {
    let path = format!("{}/../../{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("{name}: {err}"));
    let known: BTreeSet<String> = helps.iter().map(|(path, _)| path.join(" ")).collect();
    let root = &helps[0].1;
    let help_of = |command: &str| -> &str {
        &helps
            .iter()
            .find(|(path, _)| path.join(" ") == command)
            .expect("known")
            .1
    };
    let top_level = subcommands(root);
    let mut checked = 0;
    // Code spans are the odd pieces between backticks; a span may run over a line break.
    for cell in text.split('`').skip(1).step_by(2) {
        let cell = cell.split_whitespace().collect::<Vec<_>>().join(" ");
        if let Some(flag) = cell.strip_prefix("--") {
            if flag.is_empty() || cell.contains(' ') {
                continue;
            }
            let flag = flag_name(&cell);
            assert!(
                helps.iter().any(|(_, help)| takes_flag(help, flag))
                    || known.iter().any(|command| is_hidden_flag(command, flag)),
                "{name} names the flag {flag}, which no command takes"
            );
            checked += 1;
            continue;
        }
        let (rest, named) = match cell.strip_prefix("signalbox ") {
            Some(rest) => (rest, true),
            None => (cell.as_str(), false),
        };
        // The longest known command this mention starts with: `signalbox list import LIST
        // FILE` names `list import`.
        let words: Vec<&str> = rest
            .split_whitespace()
            .take_while(|w| w.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
            .collect();
        if words.is_empty() {
            continue;
        }
        let has_flag = rest.split_whitespace().any(|w| w.starts_with("--"));
        if !named && (!top_level.iter().any(|c| c == words[0]) || (words.len() < 2 && !has_flag)) {
            continue;
        }
        let found = (1..=words.len())
            .rev()
            .map(|n| words[..n].join(" "))
            .find(|candidate| known.contains(candidate));
        let Some(command) = found else {
            panic!("{name} names `signalbox {rest}`, which is not a command");
        };
        if !named && !has_flag {
            assert_eq!(
                command,
                words.join(" "),
                "{name} names `{rest}`, which is not a command"
            );
        }
        // Its flags are the command's own.
        let help = help_of(&command);
        for word in rest.split_whitespace().filter(|w| w.starts_with("--")) {
            let flag = flag_name(word);
            assert!(
                takes_flag(help, flag) || takes_flag(root, flag) || is_hidden_flag(&command, flag),
                "{name} gives `signalbox {command}` the flag {flag}, which it does not take"
            );
        }
        checked += 1;
    }
    checked
}

/// `--set`, from `--set=KEY`, `--scope,` and the like.
fn flag_name(word: &str) -> &str {
    word.split(['=', '`', ',', ')']).next().unwrap_or(word)
}

/// Whether a `--help` text lists the flag (not merely a longer one that starts with it).
fn takes_flag(help: &str, flag: &str) -> bool {
    help.lines().any(|line| {
        line.split([' ', ',', '[', ']', '='])
            .any(|word| word == flag)
    })
}

/// A flag `--help` does not show (the switch `serve --test-clock`, the old spelling
/// `--server` of `--url`) but the command accepts: the command still parses with it, alone or
/// with a value.
fn is_hidden_flag(command: &str, flag: &str) -> bool {
    let path: Vec<&str> = command.split_whitespace().collect();
    [&[flag][..], &[flag, "x"][..]].iter().any(|given| {
        let mut args = path.clone();
        args.extend_from_slice(given);
        args.push("--help");
        signalbox(&args).status.success()
    })
}

#[test]
fn a_server_that_is_not_running_is_named_in_one_line_with_what_to_do() {
    let output = signalbox(&[
        "list",
        "--url",
        "http://127.0.0.1:9",
        "--api-key",
        "pk_x",
        "ls",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the server at http://127.0.0.1:9"),
        "{err}"
    );
    assert!(
        err.contains("signalbox serve") && err.contains("--url"),
        "{err}"
    );

    // The older spelling still works, hidden: the flag and its variable.
    let output = signalbox(&[
        "flow",
        "--server",
        "http://127.0.0.1:9",
        "--api-key",
        "pk_x",
        "list",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("cannot reach the server at http://127.0.0.1:9"));
    let output = Command::new(BIN)
        .args(["flow", "--api-key", "pk_x", "list"])
        .env_remove("SIGNALBOX_URL")
        .env("SIGNALBOX_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(stderr(&output).contains("cannot reach the server at http://127.0.0.1:9"));
}

#[test]
fn a_bad_url_or_a_missing_key_is_a_failure_that_says_what_to_give() {
    let output = signalbox(&[
        "segment",
        "--url",
        "localhost:8080",
        "--api-key",
        "pk_x",
        "members",
        "x",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("--url") && err.contains("http://"), "{err}");

    let output = signalbox(&[
        "list",
        "--url",
        "http://127.0.0.1:9",
        "--api-key",
        " ",
        "ls",
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("SIGNALBOX_API_KEY"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn usage_errors_exit_with_two() {
    for args in [
        vec!["lst"],
        vec!["list", "ls", "--no-such-flag"],
        vec!["source", "create"],
    ] {
        let output = signalbox(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
        assert!(!stderr(&output).is_empty());
    }
}

#[test]
fn a_missing_data_folder_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let folder = missing.to_str().unwrap();
    for command in [
        &["source", "list"][..],
        &["events", "export"],
        &["profiles", "held"],
        &["engage", "quarantine"],
        &["destination", "list"],
        &["admin", "list"],
        &["storage", "status"],
    ] {
        let mut args = vec!["--data-dir", folder];
        args.extend_from_slice(command);
        let output = signalbox(&args);
        let err = stderr(&output);
        assert_eq!(output.status.code(), Some(1), "{command:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.contains("nothing-here") && err.contains("--data-dir"),
            "{err}"
        );
        assert!(!missing.exists(), "{command:?} made the folder");
    }
    // Creating a source is how a new installation starts: it makes the folder.
    let output = signalbox(&["--data-dir", folder, "source", "create", "web"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(missing.exists());
}

#[test]
fn a_source_takes_a_name_people_use_and_the_commands_take_either_name() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let output = signalbox(&["--data-dir", folder, "source", "create", "test website"]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output).trim().lines().count(), 1, "only the key");
    let list = stdout(&signalbox(&["--data-dir", folder, "source", "list"]));
    let row = list
        .lines()
        .find(|l| l.starts_with("test-website "))
        .expect(&list);
    assert!(row.ends_with("test website"), "{row}");
    for (command, name) in [("disable", "test website"), ("enable", "test-website")] {
        let output = signalbox(&["--data-dir", folder, "source", command, name]);
        assert!(
            output.status.success(),
            "{command} {name}: {}",
            stderr(&output)
        );
    }
    let json = stdout(&signalbox(&[
        "--data-dir",
        folder,
        "source",
        "list",
        "--json",
    ]));
    let source: serde_json::Value = serde_json::from_str(json.lines().next().unwrap()).unwrap();
    assert_eq!(source["name"], "test-website");
    assert_eq!(source["display_name"], "test website");
    assert_eq!(source["status"], "enabled");
}

/// `serve` started on a fresh folder until its banner, then stopped: what it wrote to stderr.
fn serve_stderr(extra: &[&str]) -> String {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    args.push("serve");
    let mut child = Command::new(BIN)
        .args(&args)
        .env_remove("SIGNALBOX_LOG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The banner's last line, read on a thread so that a banner that changed fails the test
    // after a while instead of hanging it.
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let (seen, banner) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if line.starts_with("  Segments") {
                let _ = seen.send(());
            }
        }
    });
    let started = banner.recv_timeout(std::time::Duration::from_secs(60));
    // Give the last start-up lines a moment, then stop it and read what it logged.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(started.is_ok(), "no banner within 60 s:\n{stderr}");
    stderr
}

#[test]
fn start_up_logs_are_signalboxs_own_and_json_when_asked() {
    let pretty = serve_stderr(&[]);
    assert!(pretty.contains("engage pipeline started"), "{pretty}");
    for chatter in ["Creating database at", "Finished ingestion writer"] {
        assert!(
            !pretty.contains(chatter),
            "{chatter:?} is logged:\n{pretty}"
        );
    }
    let json = serve_stderr(&["--log-format", "json"]);
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{json}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            value["level"].is_string() && value["fields"].is_object(),
            "{line}"
        );
    }
}

/// The `signalbox-… → …` lines of ARCHITECTURE.md's code map, as each crate's Signalbox
/// dependencies.
fn architecture_crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../ARCHITECTURE.md"
    ))
    .expect("ARCHITECTURE.md");
    let mut graph = BTreeMap::new();
    for line in text.lines() {
        let Some((name, deps)) = line.split_once(" → ") else {
            continue;
        };
        let name = name.trim();
        if !name.starts_with("signalbox") || name.contains(' ') {
            continue;
        }
        let deps: BTreeSet<String> = if deps.starts_with("(none") {
            BTreeSet::new()
        } else {
            deps.split(',')
                .map(|dep| format!("signalbox-{}", dep.trim()))
                .collect()
        };
        graph.insert(name.to_owned(), deps);
    }
    graph
}

/// Each crate's Signalbox `[dependencies]`, from its `Cargo.toml`.
fn manifest_crate_graph() -> BTreeMap<String, BTreeSet<String>> {
    let crates = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut graph = BTreeMap::new();
    for entry in std::fs::read_dir(crates).expect("crates/") {
        let dir = entry.expect("an entry").path();
        let Ok(manifest) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let mut section = "";
        let mut deps = BTreeSet::new();
        for line in manifest.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                section = line;
                continue;
            }
            if section == "[dependencies]" && line.starts_with("signalbox") {
                let dep = line.split(['.', ' ', '=']).next().expect("a name");
                deps.insert(dep.to_owned());
            }
        }
        let name = dir
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        graph.insert(name, deps);
    }
    graph
}

#[test]
fn the_crate_graph_architecture_draws_is_the_manifests() {
    let drawn = architecture_crate_graph();
    let manifests = manifest_crate_graph();
    assert!(
        manifests.len() >= 12,
        "only {} crates found",
        manifests.len()
    );
    assert_eq!(
        drawn, manifests,
        "ARCHITECTURE.md's code map and the crates' Cargo.toml disagree"
    );
}

#[path = "common/cli_json.rs"]
mod cli_json;

/// Each line `command` prints, parsed; fails when the command fails.
fn json_lines_of(folder: &str, command: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["--data-dir", folder];
    args.extend_from_slice(command);
    let output = signalbox(&args);
    assert!(output.status.success(), "{command:?}: {}", stderr(&output));
    stdout(&output)
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{command:?}: {err}: {line}"))
        })
        .collect()
}

#[test]
fn the_commands_that_run_without_a_server_print_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let created = signalbox(&["--data-dir", folder, "source", "create", "web"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let mut admin = Command::new(BIN)
        .args(["--data-dir", folder, "admin", "create", "ann@example.com"])
        .arg("--password-stdin")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    {
        use std::io::Write;
        let mut stdin = admin.stdin.take().expect("stdin");
        writeln!(stdin, "a long enough password").unwrap();
    }
    let admin = admin.wait_with_output().unwrap();
    assert!(admin.status.success(), "{}", stderr(&admin));
    for (name, kind, extra) in [
        ("back", "segment", ["--write-key", "wk_0123456789abcdef"]),
        ("hook", "webhook", ["--url", "https://hooks.example.com/in"]),
        ("fwd", "klaviyo", ["--api-key", "pk_0123456789abcdef"]),
    ] {
        let mut args = vec!["--data-dir", folder, "destination", "create", name];
        args.extend(["--kind", kind]);
        args.extend(extra);
        if kind != "segment" {
            args.extend(["--source", "web"]);
        }
        let output = signalbox(&args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }

    for (documented, command, lines) in [
        ("admin list --json", vec!["admin", "list", "--json"], 1),
        ("source list --json", vec!["source", "list", "--json"], 1),
        (
            "destination list --json",
            vec!["destination", "list", "--json"],
            3,
        ),
        (
            "destination status NAME --json",
            vec!["destination", "status", "hook", "--json"],
            1,
        ),
        (
            "storage status --json",
            vec!["storage", "status", "--json"],
            1,
        ),
    ] {
        let printed = json_lines_of(folder, &command);
        assert_eq!(printed.len(), lines, "{command:?} printed {printed:?}");
        for line in &printed {
            cli_json::assert_documented(documented, line);
        }
    }
}

/// `storage status` on a folder whose log holds calls older than the window: a destination
/// that has delivered none of them keeps them, and the status names it, the window and the
/// sizes of the stores.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_status_names_the_store_sizes_and_what_keeps_the_oldest_call() {
    use signalbox_store::sqlite::SqliteOptions;
    use signalbox_store::{SqliteStore, Store};

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    let created = signalbox(&["--data-dir", folder, "source", "create", "web"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let hook = signalbox(&[
        "--data-dir",
        folder,
        "destination",
        "create",
        "hook",
        "--kind",
        "webhook",
        "--url",
        "https://hooks.example.com/in",
        "--source",
        "web",
    ]);
    assert!(hook.status.success(), "{}", stderr(&hook));
    {
        let store =
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap();
        let source = store.source_by_name("web").await.unwrap().id;
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(40 * 24);
        let calls = (0..3)
            .map(|i| signalbox_core::NewCall {
                kind: signalbox_core::CallKind::Track,
                message_id: format!("m-{i}"),
                received_at: old,
                payload: r#"{"type":"track","event":"Viewed"}"#.to_owned(),
            })
            .collect();
        store.append(source, calls, vec![]).await.unwrap();
        store.close();
    }

    let status = &json_lines_of(folder, &["storage", "status", "--json"])[0];
    cli_json::assert_documented("storage status --json", status);
    assert_eq!(status["calls"], 3);
    assert_eq!(
        (status["oldest_seq"].as_i64(), status["newest_seq"].as_i64()),
        (Some(1), Some(3))
    );
    assert_eq!(status["retain_log"], "30d", "{status}");
    let held_back_by = status["held_back_by"].as_array().unwrap();
    assert_eq!(held_back_by.len(), 1, "{status}");
    assert_eq!(held_back_by[0]["kind"], "destination");
    assert_eq!(held_back_by[0]["name"], "hook");
    assert_eq!(held_back_by[0]["from_seq"], 1);
    let kinds: Vec<&str> = status["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["window", "destination"], "{status}");
    let stores: Vec<&str> = status["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["store"].as_str().unwrap())
        .collect();
    for store in ["signalbox.db", "sync.db"] {
        assert!(stores.contains(&store), "{stores:?}");
    }
    assert!(status["total_bytes"].as_u64().unwrap() > 0);

    // Retention off: the window keeps every call; the text says so.
    let off = &json_lines_of(
        folder,
        &["storage", "status", "--json", "--retain-log", "off"],
    )[0];
    assert_eq!(off["retain_log"], serde_json::Value::Null);
    assert_eq!(off["held_back_by"][0]["kind"], "window");
    let text = stdout(&signalbox(&["--data-dir", folder, "storage", "status"]));
    assert!(text.contains("signalbox.db"), "{text}");
    assert!(
        text.contains(r#"Held back by  destination "hook": from seq 1, active"#),
        "{text}"
    );
}

/// A log that retention trimmed cannot rebuild engage: the rebuild refuses and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_refuses_a_trimmed_log() {
    use signalbox_store::sqlite::SqliteOptions;
    use signalbox_store::{SqliteStore, Store, TrimRequest};

    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().to_str().unwrap();
    {
        let store =
            SqliteStore::open(dir.path().join("signalbox.db"), SqliteOptions::default()).unwrap();
        let source = store.create_source("web").await.unwrap().0.id;
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24);
        let calls = (0..3)
            .map(|i| signalbox_core::NewCall {
                kind: signalbox_core::CallKind::Track,
                message_id: format!("m-{i}"),
                received_at: old,
                payload: r#"{"type":"track","event":"Viewed"}"#.to_owned(),
            })
            .collect();
        store.append(source, calls, vec![]).await.unwrap();
        let trimmed = store
            .trim_log(TrimRequest {
                below_seq: i64::MAX,
                received_before: jiff::Timestamp::now(),
                now: jiff::Timestamp::now(),
                chunk: 100,
            })
            .await
            .unwrap();
        assert_eq!(trimmed.calls, 2);
        store.close();
    }
    let output = signalbox(&["--data-dir", folder, "rebuild"]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--retain-log") && err.contains("seq 3"),
        "{err}"
    );
}

/// A reader that stops reading (`signalbox storage status | head -1`) ends the command
/// quietly: exit code 0 and nothing on stderr, not a panic about a broken pipe.
#[test]
fn output_to_a_reader_that_went_away_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    for args in [
        &["--data-dir", data, "source", "create", "web"][..],
        &["--data-dir", data, "source", "list"][..],
        &["--data-dir", data, "storage", "status"][..],
    ] {
        let mut child = Command::new(BIN)
            .args(args)
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the binary runs");
        // Closed before the command prints anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}
