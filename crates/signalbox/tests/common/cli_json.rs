//! The fields `docs/cli-json.md` documents for each command's `--json` output, read from its
//! tables: the one list the output structs, the CLI tests and the end-to-end tests check.

use std::collections::{BTreeMap, BTreeSet};

/// The document, as built into the test.
const DOC: &str = include_str!("../../../../docs/cli-json.md");

/// Each documented invocation (its heading without `signalbox `, e.g. `list members LIST
/// --pending --json`) with its top-level fields.
pub fn documented() -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in DOC.lines() {
        if let Some(heading) = line.strip_prefix("## `signalbox ") {
            let command = heading.trim_end_matches('`').to_owned();
            out.entry(command.clone()).or_default();
            current = Some(command);
            continue;
        }
        if line.starts_with("## ") {
            current = None;
            continue;
        }
        let (Some(command), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let field = row.split('`').next().expect("a field name");
        let fields = out.get_mut(command).expect("its heading came first");
        assert!(
            fields.insert(field.to_owned()),
            "docs/cli-json.md lists {field} twice for {command}"
        );
    }
    out
}

/// The fields the document lists for `command`; panics when it has no section.
pub fn fields_of(command: &str) -> BTreeSet<String> {
    documented()
        .remove(command)
        .unwrap_or_else(|| panic!("docs/cli-json.md has no section `signalbox {command}`"))
}

/// Checks that a printed line is an object with exactly the fields documented for `command`.
pub fn assert_documented(command: &str, line: &serde_json::Value) {
    let printed: BTreeSet<String> = line
        .as_object()
        .unwrap_or_else(|| panic!("`signalbox {command}` printed a line that is no object: {line}"))
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        printed,
        fields_of(command),
        "`signalbox {command}` prints other fields than docs/cli-json.md lists: {line}"
    );
}
