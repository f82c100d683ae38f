//! Running a `signalbox bench …` command briefly, for the bench tests.

use std::process::Command;

/// Runs `signalbox bench <command>` with short phases and light load (its servers' data in a
/// temporary folder); returns what it printed and the figures it wrote.
pub fn run_bench(command: &str) -> (String, serde_json::Value) {
    run_bench_with(command, &[])
}

/// [`run_bench`] with more arguments.
pub fn run_bench_with(command: &str, extra: &[&str]) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let output = Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["bench", command])
        .args(["--duration", "1s", "--warmup", "0s", "--connections", "2"])
        .args(["--rate", "2000", "--batch-size", "20", "--json"])
        .arg(&json)
        .args(extra)
        .env("TMPDIR", dir.path())
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
