//! `signalbox segment apply FILE` and `segment members NAME` against a running server.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::TestEnv;

#[tokio::test]
async fn segment_apply_creates_then_updates_by_name_and_members_lists_them() {
    let env = TestEnv::new();
    let server = env.serve();
    let api_key = env
        .cli_ok(&[
            "api-key",
            "create",
            "segments",
            "--scope",
            "segments:write,profiles:read",
        ])
        .trim()
        .to_owned();
    let batch: Vec<_> = ["pro", "free", "pro"]
        .iter()
        .enumerate()
        .map(|(i, plan)| {
            json!({"type": "identify", "userId": format!("u{i}"),
                   "traits": {"email": format!("u{i}@example.com"), "Plan": plan}})
        })
        .collect();
    let (status, _) = server
        .post("/v1/batch", &server.write_key, &json!({"batch": batch}))
        .await;
    assert_eq!(status, 200);

    let file = env.root().join("pro.json");
    let plan_is = |plan: &str| {
        json!({"name": "Pro", "definition": {"condition_groups": [{"conditions": [
            {"type": "profile-property", "property": "properties['Plan']",
             "filter": {"type": "string", "operator": "equals", "value": plan}}]}]}})
    };
    std::fs::write(&file, plan_is("pro").to_string()).unwrap();
    let url = server.base_url.clone();
    let segment = |args: &[&str]| {
        let mut full = vec!["segment", "--api-key", &api_key, "--url", &url];
        full.extend_from_slice(args);
        env.cli(&full)
    };
    let path = file.to_str().unwrap();
    let created = segment(&["apply", path]);
    assert!(created.status.success(), "{}", created.describe());
    assert!(
        created.stdout.contains("created segment"),
        "{}",
        created.describe()
    );

    // Identifies reach profiles asynchronously; membership follows them.
    let members = |wanted: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = segment(&["members", "Pro"]);
            assert!(out.status.success(), "{}", out.describe());
            let lines: Vec<String> = out.stdout.lines().map(str::to_owned).collect();
            if lines.len() == wanted || Instant::now() > deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let pros = members(2);
    assert_eq!(pros.len(), 2, "{pros:?}");
    assert!(pros.iter().any(|l| l.contains("u0@example.com")));
    assert!(pros.iter().any(|l| l.contains("u2@example.com")));

    std::fs::write(&file, plan_is("free").to_string()).unwrap();
    let updated = segment(&["apply", path]);
    assert!(updated.status.success(), "{}", updated.describe());
    assert!(
        updated.stdout.contains("updated segment"),
        "{}",
        updated.describe()
    );
    assert!(
        updated.stdout.contains("1 profiles in Pro"),
        "{}",
        updated.describe()
    );
    let frees = members(1);
    assert!(frees[0].contains("u1@example.com"), "{frees:?}");

    // A bad definition fails with the pointer of the value at fault.
    std::fs::write(
        &file,
        json!({"name": "Bad", "definition": {"condition_groups": []}}).to_string(),
    )
    .unwrap();
    let bad = segment(&["apply", path]);
    assert!(!bad.status.success());
    assert!(
        bad.stderr
            .contains("/data/attributes/definition/condition_groups"),
        "{}",
        bad.describe()
    );
    assert!(segment(&["members", "Nobody"])
        .stderr
        .contains("no segment named"));
    server.stop();
}
