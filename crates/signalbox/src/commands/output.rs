//! What `--json` prints: one named struct per command, so the fields a script reads stay put.
//! `docs/cli-json.md` documents each one; the test at the end of this file and
//! `tests/cli.rs` check the documentation against these structs and against the commands.
//!
//! The commands that print a domain type as it is (`admin list`: `Account`, `source list`:
//! `Source`, `destination status`: `DestinationStatus`, `destination dead-letters`:
//! `DeadLetter`, `profiles held`: `HeldCall`) are checked the same way.
//!
//! Lines read from a server's API are parsed into these structs (fields the server adds are
//! left out) and printed from them, never passed through.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use signalbox_engage::QuarantinedEntry;
use signalbox_server::retention::Hold;
use signalbox_sync::{Destination, DestinationConfig};

/// Prints one JSON line.
pub fn print_line(line: &impl Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string(line)?)?;
    Ok(())
}

/// `destination list --json`: a destination, its secret redacted. Every kind prints every
/// field; the fields of another kind are `null`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DestinationLine {
    pub id: String,
    pub name: String,
    /// `segment`, `klaviyo` or `webhook`.
    pub kind: &'static str,
    /// `active` or `paused`.
    pub state: &'static str,
    /// Calls per second at most; `null`: the kind's default.
    pub rate: Option<f64>,
    pub created: Timestamp,
    pub updated: Timestamp,
    /// segment, klaviyo: the API host.
    pub endpoint: Option<String>,
    /// webhook: where batches are posted.
    pub url: Option<String>,
    /// segment: the Segment source's write key, redacted.
    pub write_key: Option<String>,
    /// klaviyo: the receiving account's private key, redacted.
    pub api_key: Option<String>,
    /// webhook: the signing secret, redacted; `null` when unsigned.
    pub secret: Option<String>,
    /// klaviyo, webhook: the sources whose calls are forwarded.
    pub sources: Option<Vec<String>>,
    /// segment: whether only profiles a Segment source touched are synced.
    pub only_segment_profiles: Option<bool>,
}

impl From<&Destination> for DestinationLine {
    fn from(destination: &Destination) -> DestinationLine {
        let mut line = DestinationLine {
            id: destination.id.clone(),
            name: destination.name.clone(),
            kind: destination.config.kind().as_str(),
            state: destination.state.as_str(),
            rate: destination.rate,
            created: destination.created,
            updated: destination.updated,
            endpoint: None,
            url: None,
            write_key: None,
            api_key: None,
            secret: None,
            sources: None,
            only_segment_profiles: None,
        };
        match &destination.config {
            DestinationConfig::Segment {
                write_key,
                endpoint,
                only_segment_profiles,
            } => {
                line.write_key = Some(write_key.redacted());
                line.endpoint = Some(endpoint.clone());
                line.only_segment_profiles = Some(*only_segment_profiles);
            }
            DestinationConfig::Klaviyo {
                api_key,
                endpoint,
                sources,
            } => {
                line.api_key = Some(api_key.redacted());
                line.endpoint = Some(endpoint.clone());
                line.sources = Some(sources.clone());
            }
            DestinationConfig::Webhook {
                url,
                secret,
                sources,
            } => {
                line.url = Some(url.clone());
                line.secret = secret.as_ref().map(|secret| secret.redacted());
                line.sources = Some(sources.clone());
            }
        }
        line
    }
}

/// `engage quarantine --json`: a log entry the pipeline set aside.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuarantineLine {
    pub seq: i64,
    pub kind: String,
    pub source_id: i64,
    /// The source's name; `null` when it was deleted.
    pub source: Option<String>,
    pub received: Timestamp,
    pub error: String,
    pub tries: i64,
}

impl QuarantineLine {
    pub fn new(entry: &QuarantinedEntry, source: Option<String>) -> QuarantineLine {
        QuarantineLine {
            seq: entry.seq,
            kind: entry.kind.clone(),
            source_id: entry.source_id,
            source,
            received: entry.received,
            error: entry.error.clone(),
            tries: entry.tries,
        }
    }
}

/// `list ls --json`: a list with its member count.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListLine {
    pub id: String,
    pub name: String,
    /// `single_opt_in` or `double_opt_in`.
    pub opt_in_process: String,
    pub profile_count: u64,
    pub created: String,
}

/// A list resource of `/api/lists` with `profile_count`.
#[derive(Debug, Deserialize)]
pub struct ListResource {
    id: String,
    attributes: ListAttributes,
}

#[derive(Debug, Deserialize)]
struct ListAttributes {
    name: String,
    #[serde(default)]
    opt_in_process: String,
    #[serde(default)]
    profile_count: u64,
    #[serde(default)]
    created: String,
}

impl From<ListResource> for ListLine {
    fn from(list: ListResource) -> ListLine {
        ListLine {
            id: list.id,
            name: list.attributes.name,
            opt_in_process: list.attributes.opt_in_process,
            profile_count: list.attributes.profile_count,
            created: list.attributes.created,
        }
    }
}

/// `list members LIST --json`: a member.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberLine {
    /// The profile's id.
    pub id: String,
    pub email: Option<String>,
    pub joined_group_at: Option<String>,
}

/// A profile resource of `/api/lists/{id}/profiles`.
#[derive(Debug, Deserialize)]
pub struct MemberResource {
    id: String,
    attributes: MemberAttributes,
}

#[derive(Debug, Deserialize)]
struct MemberAttributes {
    email: Option<String>,
    joined_group_at: Option<String>,
}

impl From<MemberResource> for MemberLine {
    fn from(member: MemberResource) -> MemberLine {
        MemberLine {
            id: member.id,
            email: member.attributes.email,
            joined_group_at: member.attributes.joined_group_at,
        }
    }
}

/// `list members LIST --pending --json`: a member waiting to confirm a double opt-in, with
/// the links the confirmation email carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingMemberLine {
    pub profile_id: String,
    pub email: Option<String>,
    pub joined: String,
    pub confirm_url: String,
    pub unsubscribe_url: String,
}

/// `flow list --json`: a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowLine {
    pub id: String,
    pub name: String,
    /// `draft`, `manual`, `live` or `paused`.
    pub status: String,
    pub archived: bool,
    /// The trigger's kind (`Metric`, `Added to List`, …); `null` without a trigger.
    pub trigger_type: Option<String>,
    pub created: String,
    pub updated: String,
}

/// `flow status NAME --json`: a flow with its definition and counters.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowStatusLine {
    pub id: String,
    pub name: String,
    pub status: String,
    pub archived: bool,
    pub trigger_type: Option<String>,
    pub created: String,
    pub updated: String,
    /// The flow definition, as `/api/flows/{id}` gives it.
    pub definition: Value,
    /// `{"flow": counters, "actions": {action id: counters}}`, counters being
    /// `{"counts": {name: number}, "revenue": number}`.
    pub statistics: Value,
}

/// A flow resource of `/api/flows`.
#[derive(Debug, Clone, Deserialize)]
pub struct FlowResource {
    pub id: String,
    pub attributes: FlowAttributes,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlowAttributes {
    pub name: String,
    pub status: String,
    #[serde(default)]
    pub archived: bool,
    pub trigger_type: Option<String>,
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub updated: String,
    #[serde(default)]
    pub definition: Value,
    #[serde(default)]
    pub statistics: Value,
}

impl From<FlowResource> for FlowLine {
    fn from(flow: FlowResource) -> FlowLine {
        FlowLine {
            id: flow.id,
            name: flow.attributes.name,
            status: flow.attributes.status,
            archived: flow.attributes.archived,
            trigger_type: flow.attributes.trigger_type,
            created: flow.attributes.created,
            updated: flow.attributes.updated,
        }
    }
}

impl From<FlowResource> for FlowStatusLine {
    fn from(flow: FlowResource) -> FlowStatusLine {
        FlowStatusLine {
            id: flow.id,
            name: flow.attributes.name,
            status: flow.attributes.status,
            archived: flow.attributes.archived,
            trigger_type: flow.attributes.trigger_type,
            created: flow.attributes.created,
            updated: flow.attributes.updated,
            definition: flow.attributes.definition,
            statistics: flow.attributes.statistics,
        }
    }
}

/// `flow messages FLOW --json`: a message held for review.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldMessageLine {
    pub id: i64,
    pub flow_id: String,
    pub action_id: String,
    /// `send-email` or `send-webhook`.
    pub kind: String,
    pub run_id: i64,
    pub profile_id: String,
    pub email: Option<String>,
    pub subject: Option<String>,
    /// `pending`, `approved`, `skipped`, `expired` or `cancelled`.
    pub status: String,
    pub created: String,
    pub expires: String,
    pub decided: Option<String>,
}

/// `storage status --json`: what the data folder holds and what keeps the log's oldest call.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StorageStatus {
    /// The data folder.
    pub data_dir: String,
    /// Bytes on disk per store, largest first.
    pub stores: Vec<StoreSize>,
    pub total_bytes: u64,
    /// The window calls are kept for (`30d`); `null` when retention is off.
    pub retain_log: Option<String>,
    /// Calls the log holds.
    pub calls: u64,
    /// The oldest call kept; `null` when the log is empty.
    pub oldest_seq: Option<i64>,
    pub oldest_received: Option<Timestamp>,
    /// The newest call (0 when none was ever appended).
    pub newest_seq: i64,
    /// What keeps the oldest call (empty when it may go at the next trim).
    pub held_back_by: Vec<Hold>,
    /// Everything that keeps calls: the window and every follower of the log.
    pub holds: Vec<Hold>,
}

/// One store's files in the data folder: the database with its journal and index files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoreSize {
    /// The database file's name (`signalbox.db`, `engage.db`, …); `other` for the rest.
    pub store: String,
    pub bytes: u64,
    pub files: u64,
}

/// The fields `docs/cli-json.md` lists, as the tests read them.
#[cfg(test)]
#[path = "../../tests/common/cli_json.rs"]
mod cli_json;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::json;
    use signalbox_console::accounts::Account;
    use signalbox_core::{Source, SourceId, SourceStatus};
    use signalbox_engage::{HeldCall, HeldCallStatus};
    use signalbox_sync::{
        Circuit, DeadLetter, DestinationKind, DestinationStatus, Position, Secret,
    };

    use signalbox_sync::DestinationState;

    use super::*;

    use super::cli_json;

    fn check(command: &str, line: &impl Serialize, checked: &mut BTreeSet<String>) {
        let value = serde_json::to_value(line).expect("serialises");
        cli_json::assert_documented(command, &value);
        checked.insert(command.to_owned());
    }

    fn destination(config: DestinationConfig) -> Destination {
        Destination {
            id: "dst_1".into(),
            name: "hook".into(),
            config,
            rate: None,
            state: DestinationState::Active,
            created: Timestamp::UNIX_EPOCH,
            updated: Timestamp::UNIX_EPOCH,
        }
    }

    /// Every command's struct prints the fields `docs/cli-json.md` lists, and every section of
    /// the document is checked here.
    #[test]
    fn every_json_line_has_the_documented_fields() {
        let at = Timestamp::UNIX_EPOCH;
        let mut checked = BTreeSet::new();
        let checked = &mut checked;
        check(
            "admin list --json",
            &Account {
                email: "ann@example.com".into(),
                created: at,
            },
            checked,
        );
        check(
            "source list --json",
            &Source {
                id: SourceId(1),
                name: "web".into(),
                display_name: "Web".into(),
                status: SourceStatus::Enabled,
                created_at: at,
                write_key: "••••abcd".into(),
                keys_in_grace: 0,
            },
            checked,
        );
        for config in [
            DestinationConfig::Segment {
                write_key: Secret::new("w".repeat(20)),
                endpoint: "https://api.segment.io".into(),
                only_segment_profiles: false,
            },
            DestinationConfig::Klaviyo {
                api_key: Secret::new("k".repeat(20)),
                endpoint: "https://a.klaviyo.com".into(),
                sources: vec!["web".into()],
            },
            DestinationConfig::Webhook {
                url: "https://hooks.example.com".into(),
                secret: None,
                sources: vec!["web".into()],
            },
        ] {
            check(
                "destination list --json",
                &DestinationLine::from(&destination(config)),
                checked,
            );
        }
        check(
            "destination status NAME --json",
            &DestinationStatus {
                name: "hook".into(),
                kind: DestinationKind::Webhook,
                state: DestinationState::Active,
                target: "https://hooks.example.com".into(),
                delivered: 0,
                queued: 0,
                retrying: false,
                retried: 0,
                failed: 0,
                dead_lettered: 0,
                lag_seconds: 0.0,
                last_error: None,
                last_error_at: None,
                last_delivery_at: None,
                throughput: 0.0,
                circuit: Circuit::Closed,
                cursor: Position::default(),
            },
            checked,
        );
        check(
            "destination dead-letters NAME --json",
            &DeadLetter {
                id: 1,
                destination: "dst_1".into(),
                position: Position::default(),
                message_id: "m1".into(),
                reason: "400".into(),
                status: Some(400),
                response: None,
                payload: json!({}),
                at,
                replayed_at: None,
            },
            checked,
        );
        check(
            "profiles held --json",
            &HeldCall {
                seq: 1,
                source_id: 1,
                kind: "track".into(),
                received: at,
                expires: at,
                reason: "no email".into(),
                status: HeldCallStatus::Held,
                user_id: None,
                anonymous_id: Some("a1".into()),
                released_by: None,
            },
            checked,
        );
        check(
            "engage quarantine --json",
            &QuarantineLine::new(
                &QuarantinedEntry {
                    seq: 1,
                    kind: "track".into(),
                    source_id: 1,
                    received: at,
                    error: "bad".into(),
                    tries: 3,
                },
                None,
            ),
            checked,
        );
        check(
            "list ls --json",
            &ListLine {
                id: "L1".into(),
                name: "News".into(),
                opt_in_process: "single_opt_in".into(),
                profile_count: 0,
                created: "2026-01-01T00:00:00Z".into(),
            },
            checked,
        );
        check(
            "list members LIST --json",
            &MemberLine {
                id: "P1".into(),
                email: None,
                joined_group_at: None,
            },
            checked,
        );
        check(
            "list members LIST --pending --json",
            &PendingMemberLine {
                profile_id: "P1".into(),
                email: None,
                joined: "2026-01-01T00:00:00Z".into(),
                confirm_url: "http://x/c/t".into(),
                unsubscribe_url: "http://x/u/t".into(),
            },
            checked,
        );
        let flow = FlowResource {
            id: "F1".into(),
            attributes: FlowAttributes {
                name: "Welcome".into(),
                status: "draft".into(),
                archived: false,
                trigger_type: None,
                created: String::new(),
                updated: String::new(),
                definition: json!({}),
                statistics: json!({}),
            },
        };
        check("flow list --json", &FlowLine::from(flow.clone()), checked);
        check(
            "flow status NAME --json",
            &FlowStatusLine::from(flow),
            checked,
        );
        check(
            "flow messages FLOW --json",
            &HeldMessageLine {
                id: 1,
                flow_id: "F1".into(),
                action_id: "A1".into(),
                kind: "send-email".into(),
                run_id: 1,
                profile_id: "P1".into(),
                email: None,
                subject: None,
                status: "pending".into(),
                created: String::new(),
                expires: String::new(),
                decided: None,
            },
            checked,
        );
        check(
            "storage status --json",
            &StorageStatus {
                data_dir: "signalbox-data".into(),
                stores: vec![StoreSize {
                    store: "signalbox.db".into(),
                    bytes: 1,
                    files: 1,
                }],
                total_bytes: 1,
                retain_log: Some("30d".into()),
                calls: 0,
                oldest_seq: None,
                oldest_received: None,
                newest_seq: 0,
                held_back_by: vec![],
                holds: vec![],
            },
            checked,
        );
        check(
            "migrate --json",
            &crate::commands::migrate::MigrateSummary::of(&[("calls".into(), 3)]),
            checked,
        );
        let manifest = crate::commands::backup::Manifest {
            format: 1,
            version: "0.1.0".into(),
            began_at: jiff::Timestamp::UNIX_EPOCH,
            finished_at: jiff::Timestamp::UNIX_EPOCH,
            files: vec![crate::commands::backup::ArchivedFile {
                name: "signalbox.db".into(),
                bytes: 1,
            }],
        };
        check(
            "backup --json",
            &crate::commands::backup::BackupSummary {
                file: "x.backup".into(),
                archive_bytes: 1,
                manifest: &manifest,
            },
            checked,
        );
        check(
            "restore --json",
            &crate::commands::backup::RestoreSummary {
                data_dir: "restored".into(),
                manifest: &manifest,
            },
            checked,
        );
        let documented: BTreeSet<String> = cli_json::documented().into_keys().collect();
        assert_eq!(
            &documented, checked,
            "docs/cli-json.md and this test name other commands"
        );
    }

    /// A flow as the server answers it parses, and only the documented fields are printed.
    #[test]
    fn a_flow_resource_prints_only_its_documented_fields() {
        let resource: FlowResource = serde_json::from_value(json!({
            "type": "flow", "id": "F1", "links": {"self": "http://x/api/flows/F1"},
            "attributes": {"name": "Welcome", "status": "live", "archived": false,
                "created": "2026-01-01T00:00:00Z", "updated": "2026-01-01T00:00:00Z",
                "trigger_type": "Metric", "definition": {"actions": []},
                "statistics": {"flow": {}, "actions": {}}, "new_field": 1}
        }))
        .expect("parses");
        let line = serde_json::to_value(FlowStatusLine::from(resource)).expect("serialises");
        cli_json::assert_documented("flow status NAME --json", &line);
        assert_eq!(line["trigger_type"], "Metric");
    }
}
