//! Running a `signalbox bench …` command briefly, for the bench tests.

// Each bench test binary uses part of this.
#![allow(dead_code)]

use std::process::Command;

/// Runs `signalbox bench <command>` with short phases and light load (its servers' data in a
/// temporary folder); returns what it printed and the figures it wrote.
pub fn run_bench(command: &str) -> (String, serde_json::Value) {
    run_bench_with(command, &[])
}

/// [`run_bench`] with more arguments.
pub fn run_bench_with(command: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let mut args = vec!["bench", command, "--duration", "1s", "--warmup", "0s"];
    args.extend(["--connections", "2", "--rate", "2000", "--batch-size", "20"]);
    args.extend(extra);
    run_for_figures(&args)
}

/// Runs `signalbox ARGS --json FILE` (its servers' data in a temporary folder) and asserts
/// it succeeded; returns what it printed and the figures it wrote.
pub fn run_for_figures(args: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let output = Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .env("TMPDIR", dir.path())
        .env_remove("SIGNALBOX_DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let figures = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (stdout, figures)
}
