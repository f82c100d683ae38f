//! `signalbox bench console` end to end over a tiny data set: it starts its own server, loads
//! the data, signs in as a browser and times every console page without an error.

use std::process::Command;

#[test]
fn a_tiny_run_signs_in_and_times_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("figures.json");
    let output = Command::new(env!("CARGO_BIN_EXE_signalbox"))
        .args(["bench", "console", "--profiles", "50", "--events", "500"])
        .args(["--iterations", "3", "--warmups", "1", "--json"])
        .arg(&json)
        .env("TMPDIR", dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("p99 < 100 ms"), "{stdout}");

    let figures: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(figures["profiles"], 50);
    let pages = figures["pages"].as_array().unwrap();
    assert_eq!(pages.len(), 22, "{figures}");
    for page in pages {
        // Signed in: every page answered 200 with a body, none redirected to the sign-in.
        assert!(page["errors"].as_object().unwrap().is_empty(), "{page}");
        assert_eq!(page["samples"], 3, "{page}");
        assert!(page["bytes"].as_u64().unwrap() > 500, "{page}");
        let p50 = page["p50_ms"].as_f64().unwrap();
        let p99 = page["p99_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 <= p99, "{page}");
        assert!(page["max_ms"].as_f64().unwrap() >= p99, "{page}");
    }
    let paths: Vec<&str> = pages.iter().map(|p| p["page"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"/profiles?q=user25%40example.com"),
        "{paths:?}"
    );
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("/analytics/metrics/") && p.ends_with("interval=month")),
        "{paths:?}"
    );
}
