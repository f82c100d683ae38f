//! Lists, membership and email consent: API writes, identify with `listId`, the change feed
//! and rebuild.

use std::sync::Arc;

use serde_json::json;
use signalbox_engage::feed::FeedCursor;
use signalbox_engage::{
    rebuild, ConfirmOutcome, ConsentStatus, Engage, EngageError, EventQuery, ListQuery,
    MemberQuery, MemberStatus, OptInProcess, ProfileInput, SubscribeRequest, SuppressTarget,
    SuppressionReason, UnsubscribeRequest,
};

use crate::helpers::TestApp;

async fn members(app: &TestApp, list: &signalbox_engage::ListId) -> Vec<String> {
    app.engage
        .list_members(MemberQuery {
            list_id: list.clone(),
            page_size: 1000,
            ..MemberQuery::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.profile.email.unwrap_or_default())
        .collect()
}

async fn pending(app: &TestApp, list: &signalbox_engage::ListId) -> Vec<String> {
    app.engage
        .list_members(MemberQuery {
            list_id: list.clone(),
            status: Some(MemberStatus::Pending),
            page_size: 1000,
            ..MemberQuery::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|m| m.profile.email.unwrap_or_default())
        .collect()
}

async fn metric_count(app: &TestApp, name: &str) -> usize {
    let metric = app.metric(name).await;
    assert_eq!(metric.integration.name, "Signalbox");
    app.engage
        .list_events(EventQuery {
            metric_id: Some(metric.id),
            page_size: 1000,
            ..EventQuery::default()
        })
        .await
        .unwrap()
        .items
        .len()
}

#[tokio::test]
async fn lists_are_created_renamed_listed_and_deleted() {
    let app = TestApp::start().await;
    let news = app
        .engage
        .create_list("Newsletter", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    assert_eq!(news.id.0.len(), 6);
    assert!(news.id.0.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(news.profile_count, 0);
    let vip = app
        .engage
        .create_list("VIP", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    assert_ne!(news.id, vip.id);
    let renamed = app
        .engage
        .update_list(&news.id, Some("Weekly"), None)
        .await
        .unwrap();
    assert_eq!(renamed.name, "Weekly");
    assert_eq!(renamed.opt_in_process, OptInProcess::SingleOptIn);
    let page = app
        .engage
        .list_lists(ListQuery {
            page_size: 1,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let next = app
        .engage
        .list_lists(ListQuery {
            page_size: 1,
            cursor: page.next_cursor.clone(),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(next.items[0].name, "VIP");
    assert_eq!(next.next_cursor, None);
    assert!(matches!(
        app.engage
            .create_list("  ", OptInProcess::SingleOptIn)
            .await,
        Err(EngageError::Invalid { .. })
    ));
    app.engage.delete_list(&vip.id).await.unwrap();
    assert!(matches!(
        app.engage.get_list(&vip.id).await,
        Err(EngageError::NotFound { .. })
    ));
    assert!(matches!(
        app.engage.delete_list(&vip.id).await,
        Err(EngageError::NotFound { .. })
    ));
}

#[tokio::test]
async fn members_are_added_and_removed_by_id_without_changing_consent() {
    let app = TestApp::start().await;
    let list = app
        .engage
        .create_list("L", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    let a = app
        .engage
        .create_profile(ProfileInput {
            email: Some("a@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let added = app
        .engage
        .add_list_members(&list.id, &[a.id.clone(), a.id.clone()])
        .await
        .unwrap();
    assert_eq!(added, 1);
    assert_eq!(members(&app, &list.id).await, ["a@example.com"]);
    assert_eq!(
        app.engage.get_list(&list.id).await.unwrap().profile_count,
        1
    );
    let consent = app.engage.email_consent(&a.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::NeverSubscribed);
    // An unknown profile changes nothing.
    let unknown = signalbox_engage::ProfileId("01ARZ3NDEKTSV4RRFFQ69G5FAV".into());
    assert!(matches!(
        app.engage
            .remove_list_members(&list.id, &[a.id.clone(), unknown])
            .await,
        Err(EngageError::NotFound { .. })
    ));
    assert_eq!(members(&app, &list.id).await, ["a@example.com"]);
    assert_eq!(
        app.engage
            .remove_list_members(&list.id, std::slice::from_ref(&a.id))
            .await
            .unwrap(),
        1
    );
    assert!(members(&app, &list.id).await.is_empty());
}

#[tokio::test]
async fn identify_with_list_id_subscribes_single_opt_in_at_once_and_double_opt_in_on_confirm() {
    let mut app = TestApp::start().await;
    let single = app
        .engage
        .create_list("Single", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let double = app
        .engage
        .create_list("Double", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    app.identify(
        json!({"userId": "u1", "traits": {"email": "one@example.com"},
        "integrations": {"Klaviyo": {"listId": single.id.0}}}),
    )
    .await;
    app.identify(
        json!({"userId": "u2", "traits": {"email": "two@example.com"},
        "integrations": {"Klaviyo": {"listId": double.id.0}}}),
    )
    .await;
    app.identify(
        json!({"userId": "u3", "traits": {"email": "three@example.com"},
        "integrations": {"Klaviyo": {"listId": double.id.0, "confirmOptin": false}}}),
    )
    .await;
    app.identify(
        json!({"userId": "u4", "traits": {"email": "four@example.com"},
        "integrations": {"Klaviyo": {"listId": "NOPE00"}}}),
    )
    .await;
    app.settle().await;

    assert_eq!(members(&app, &single.id).await, ["one@example.com"]);
    let one = app.by_email("one@example.com").await;
    let consent = app.engage.email_consent(&one.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Subscribed);
    assert_eq!(consent.double_optin, Some(false));
    assert!(consent.can_receive_email_marketing);

    // A message's `confirmOptin: false` does not skip the double opt-in (write keys are
    // public); it is a problem on the profile.
    assert!(members(&app, &double.id).await.is_empty());
    assert_eq!(
        pending(&app, &double.id).await,
        ["two@example.com", "three@example.com"]
    );
    let three = app.by_email("three@example.com").await;
    assert_eq!(
        app.engage.email_consent(&three.id).await.unwrap().consent,
        ConsentStatus::NeverSubscribed
    );
    let history = app.engage.profile_history(&three.id).await.unwrap();
    assert!(
        history
            .problems
            .iter()
            .any(|p| p.contains("confirmOptin false ignored")),
        "{:?}",
        history.problems
    );
    let two = app.by_email("two@example.com").await;
    assert_eq!(
        app.engage.email_consent(&two.id).await.unwrap().consent,
        ConsentStatus::NeverSubscribed
    );
    assert_eq!(
        app.engage.member_status(&double.id, &two.id).await.unwrap(),
        Some(MemberStatus::Pending)
    );
    // An unknown list is a problem; nothing is created.
    let four = app.by_email("four@example.com").await;
    let history = app.engage.profile_history(&four.id).await.unwrap();
    let text = serde_json::to_string(&history).unwrap();
    assert!(text.contains("NOPE00"), "{text}");
    assert_eq!(
        app.engage
            .list_lists(ListQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    let outcome = app
        .engage
        .confirm_subscription(&two.id, &double.id)
        .await
        .unwrap();
    assert_eq!(outcome, ConfirmOutcome::Confirmed);
    assert_eq!(
        app.engage
            .confirm_subscription(&two.id, &double.id)
            .await
            .unwrap(),
        ConfirmOutcome::AlreadyMember
    );
    let consent = app.engage.email_consent(&two.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Subscribed);
    assert_eq!(consent.double_optin, Some(true));
    assert_eq!(pending(&app, &double.id).await, ["three@example.com"]);
    // Not on the list at all: nothing to confirm.
    assert!(matches!(
        app.engage.confirm_subscription(&one.id, &double.id).await,
        Err(EngageError::NotFound { .. })
    ));
    // one (added) and two (confirmed).
    assert_eq!(metric_count(&app, "Subscribed to List").await, 2);

    // A member who unsubscribed stays unsubscribed when the same identify comes again.
    app.engage.unsubscribe_profile(&one.id).await.unwrap();
    app.identify(
        json!({"userId": "u1", "traits": {"email": "one@example.com"},
        "integrations": {"Klaviyo": {"listId": single.id.0}}}),
    )
    .await;
    app.settle().await;
    assert_eq!(
        app.engage.email_consent(&one.id).await.unwrap().consent,
        ConsentStatus::Unsubscribed
    );
}

#[tokio::test]
async fn the_source_list_id_setting_subscribes_too() {
    let mut app = TestApp::start().await;
    let list = app
        .engage
        .create_list("From settings", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    let id = list.id.0.clone();
    app.settings(|s| s.list_id = Some(id)).await;
    app.identify(json!({"userId": "u1", "traits": {"email": "s@example.com"}}))
        .await;
    app.settle().await;
    assert_eq!(pending(&app, &list.id).await, ["s@example.com"]);
}

#[tokio::test]
async fn consent_moves_through_subscribe_unsubscribe_and_suppression() {
    let app = TestApp::start().await;
    let list = app
        .engage
        .create_list("L", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(list.id.clone()),
            emails: vec![
                "C@Example.com".parse().unwrap(),
                "d@example.com".parse().unwrap(),
            ],
            custom_source: Some("checkout".into()),
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    let c = app.by_email("c@example.com").await;
    let consent = app.engage.email_consent(&c.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Subscribed);
    assert_eq!(consent.custom_source.as_deref(), Some("checkout"));
    assert_eq!(consent.method.as_deref(), Some("API"));
    assert!(consent.consent_timestamp.is_some());
    assert_eq!(members(&app, &list.id).await.len(), 2);

    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: None,
            emails: vec!["c@example.com".parse().unwrap()],
        })
        .await
        .unwrap();
    let consent = app.engage.email_consent(&c.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Unsubscribed);
    assert_eq!(
        consent
            .suppressions
            .iter()
            .map(|s| s.reason)
            .collect::<Vec<_>>(),
        [SuppressionReason::Unsubscribe]
    );
    assert!(!consent.can_receive_email_marketing);
    // Still on the list: unsubscribing without a list keeps memberships.
    assert_eq!(members(&app, &list.id).await.len(), 2);
    assert_eq!(metric_count(&app, "Unsubscribed").await, 1);
    // Unsubscribing again stores no second event.
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: Some(list.id.clone()),
            emails: vec!["c@example.com".parse().unwrap()],
        })
        .await
        .unwrap();
    assert_eq!(metric_count(&app, "Unsubscribed").await, 1);
    assert_eq!(members(&app, &list.id).await, ["d@example.com"]);

    // Subscribing again lifts UNSUBSCRIBE, not a hard bounce.
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["c@example.com".parse().unwrap()]),
            SuppressionReason::HardBounce,
        )
        .await
        .unwrap();
    app.engage
        .subscribe(SubscribeRequest {
            emails: vec!["c@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    let consent = app.engage.email_consent(&c.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Subscribed);
    assert_eq!(
        consent
            .suppressions
            .iter()
            .map(|s| s.reason)
            .collect::<Vec<_>>(),
        [SuppressionReason::HardBounce]
    );
    assert!(!consent.can_receive_email_marketing);

    // A list suppression, lifted again.
    let d = app.by_email("d@example.com").await;
    app.engage
        .suppress(
            SuppressTarget::List(list.id.clone()),
            SuppressionReason::UserSuppressed,
        )
        .await
        .unwrap();
    assert!(
        !app.engage
            .email_consent(&d.id)
            .await
            .unwrap()
            .can_receive_email_marketing
    );
    app.engage
        .unsuppress(SuppressTarget::Emails(vec!["d@example.com"
            .parse()
            .unwrap()]))
        .await
        .unwrap();
    let consent = app.engage.email_consent(&d.id).await.unwrap();
    assert!(consent.suppressions.is_empty());
    assert!(consent.can_receive_email_marketing);

    // A profile that never subscribed and is not suppressed may receive (implicit consent).
    let e = app
        .engage
        .create_profile(ProfileInput {
            email: Some("e@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let consent = app.engage.email_consent(&e.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::NeverSubscribed);
    assert!(consent.can_receive_email_marketing);
    assert!(app.engage.unsubscribe_profile(&e.id).await.unwrap());
    assert!(!app.engage.unsubscribe_profile(&e.id).await.unwrap());
    let consent = app.engage.email_consent(&e.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Unsubscribed);
    assert!(!consent.can_receive_email_marketing);

    // Bad input: a job that names nobody.
    assert!(matches!(
        app.engage
            .subscribe(SubscribeRequest {
                emails: vec![],
                ..SubscribeRequest::default()
            })
            .await,
        Err(EngageError::Invalid { .. })
    ));
}

#[tokio::test]
async fn double_opt_in_subscription_jobs_wait_for_confirmation_unless_historical() {
    let app = TestApp::start().await;
    let list = app
        .engage
        .create_list("DOI", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(list.id.clone()),
            emails: vec!["p@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(pending(&app, &list.id).await, ["p@example.com"]);
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(list.id.clone()),
            emails: vec!["h@example.com".parse().unwrap()],
            historical_import: true,
            consented_at: Some("2025-01-01T00:00:00Z".parse().unwrap()),
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    assert_eq!(members(&app, &list.id).await, ["h@example.com"]);
    let h = app.by_email("h@example.com").await;
    let consent = app.engage.email_consent(&h.id).await.unwrap();
    assert_eq!(
        consent.consent_timestamp,
        Some("2025-01-01T00:00:00Z".parse().unwrap())
    );
}

// The reader is called from the test's task: a backend that waits on the runtime steps
// out of a worker of a multi-thread one to do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_reports_list_and_consent_changes() {
    let mut app = TestApp::start().await;
    app.identify(json!({"userId": "u1", "traits": {"email": "f@example.com"}}))
        .await;
    app.settle().await;
    let reader = app.engage.reader().unwrap();
    let start = reader
        .changes(&FeedCursor::default(), app.engage.applied_seq(), 100)
        .unwrap();
    let list = app
        .engage
        .create_list("Feed", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    app.identify(json!({"userId": "u1",
        "integrations": {"Klaviyo": {"listId": list.id.0}}, "traits": {"email": "f@example.com"}}))
        .await;
    app.settle().await;
    let f = app.by_email("f@example.com").await;
    let pk = reader.profile_key(&f.id).unwrap().unwrap();
    let changes = reader
        .changes(&start.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(changes.profiles, [pk]);
    assert_eq!(
        changes
            .lists
            .iter()
            .map(|c| (c.list_id.as_str(), c.change.as_str()))
            .collect::<Vec<_>>(),
        [(list.id.0.as_str(), "pending")]
    );
    app.engage
        .confirm_subscription(&f.id, &list.id)
        .await
        .unwrap();
    app.engage
        .remove_list_members(&list.id, std::slice::from_ref(&f.id))
        .await
        .unwrap();
    let later = reader
        .changes(&changes.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(later.profiles, [pk]);
    assert_eq!(
        later
            .lists
            .iter()
            .map(|c| c.change.as_str())
            .collect::<Vec<_>>(),
        ["confirmed", "removed"]
    );
    // A consent change alone reports the profile.
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["f@example.com".parse().unwrap()]),
            SuppressionReason::SpamComplaint,
        )
        .await
        .unwrap();
    let last = reader
        .changes(&later.cursor, app.engage.applied_seq(), 100)
        .unwrap();
    assert_eq!(last.profiles, [pk]);
    assert!(last.lists.is_empty());
}

#[tokio::test]
async fn rebuild_gives_the_same_lists_members_and_consent() {
    let mut app = TestApp::start().await;
    let single = app
        .engage
        .create_list("S", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let double = app
        .engage
        .create_list("D", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    for i in 0..6 {
        let list = if i % 2 == 0 { &single.id } else { &double.id };
        app.identify(json!({"userId": format!("u{i}"),
            "traits": {"email": format!("r{i}@example.com")},
            "integrations": {"Klaviyo": {"listId": list.0}}}))
            .await;
    }
    app.settle().await;
    let one = app.by_email("r1@example.com").await;
    app.engage
        .confirm_subscription(&one.id, &double.id)
        .await
        .unwrap();
    app.engage
        .unsubscribe(UnsubscribeRequest {
            list_id: Some(single.id.clone()),
            emails: vec!["r0@example.com".parse().unwrap()],
        })
        .await
        .unwrap();
    app.engage
        .import_list_members(
            &single.id,
            vec![signalbox_engage::ImportRow {
                email: "imported@example.com".parse().unwrap(),
                first_name: Some("Imp".into()),
                last_name: None,
            }],
        )
        .await
        .unwrap();
    app.engage
        .update_list(&double.id, Some("D2"), None)
        .await
        .unwrap();
    app.settle().await;
    let before = app.engage.dump().await.unwrap();
    assert!(before.contains("email_consent "));
    assert!(before.contains("list_changes "));
    assert!(before.contains("imported@example.com"));
    app.engage.shutdown().await;
    let path = app.config.path.clone();
    rebuild(
        Arc::clone(&app.store),
        &path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let rebuilt = Engage::open_readonly(&path).await.unwrap();
    let after = rebuilt.dump().await.unwrap();
    assert_eq!(before, after);
}

#[tokio::test]
async fn a_merge_keeps_the_survivors_consent_or_takes_the_losers() {
    let app = TestApp::start().await;
    app.engage
        .subscribe(SubscribeRequest {
            emails: vec!["loser@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    let loser = app.by_email("loser@example.com").await;
    let survivor = app
        .engage
        .create_profile(ProfileInput {
            external_id: Some("ext-1".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    app.engage
        .merge_profiles(&survivor.id, std::slice::from_ref(&loser.id))
        .await
        .unwrap();
    let consent = app.engage.email_consent(&survivor.id).await.unwrap();
    assert_eq!(consent.consent, ConsentStatus::Subscribed);
    // The loser's id redirects to the survivor, consent included.
    assert_eq!(app.engage.email_consent(&loser.id).await.unwrap(), consent);
}

fn reasons(consent: &signalbox_engage::EmailConsent) -> Vec<SuppressionReason> {
    consent.suppressions.iter().map(|s| s.reason).collect()
}

async fn consent_of(app: &TestApp, email: &str) -> signalbox_engage::EmailConsent {
    let profile = app.by_email(email).await;
    app.engage.email_consent(&profile.id).await.unwrap()
}

async fn problems_of(app: &TestApp, email: &str) -> Vec<String> {
    let profile = app.by_email(email).await;
    app.engage
        .profile_history(&profile.id)
        .await
        .unwrap()
        .problems
}

#[tokio::test]
async fn an_identify_never_resubscribes_or_unsuppresses_and_says_why() {
    let mut app = TestApp::start().await;
    let first = app
        .engage
        .create_list("First", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let other = app
        .engage
        .create_list("Other", OptInProcess::SingleOptIn)
        .await
        .unwrap();
    let double = app
        .engage
        .create_list("Double", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    // gone@ subscribes, then unsubscribes through the email's link.
    app.identify(
        json!({"userId": "gone", "traits": {"email": "gone@example.com"},
        "integrations": {"Klaviyo": {"listId": first.id.0}}}),
    )
    .await;
    app.settle().await;
    let gone = app.by_email("gone@example.com").await;
    assert!(app.engage.unsubscribe_profile(&gone.id).await.unwrap());
    // bounced@ and quiet@ are suppressed without ever unsubscribing.
    for email in ["bounced@example.com", "quiet@example.com"] {
        app.engage
            .create_profile(ProfileInput {
                email: Some(email.into()),
                ..ProfileInput::default()
            })
            .await
            .unwrap();
    }
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["bounced@example.com".parse().unwrap()]),
            SuppressionReason::HardBounce,
        )
        .await
        .unwrap();
    app.engage
        .suppress(
            SuppressTarget::Emails(vec!["quiet@example.com".parse().unwrap()]),
            SuppressionReason::UserSuppressed,
        )
        .await
        .unwrap();
    app.settle().await;
    let gone_before = consent_of(&app, "gone@example.com").await;
    let bounced_before = consent_of(&app, "bounced@example.com").await;
    let quiet_before = consent_of(&app, "quiet@example.com").await;
    assert_eq!(gone_before.consent, ConsentStatus::Unsubscribed);

    // Write-key identifies naming lists, with and without skipping double opt-in.
    for (user, email) in [
        ("gone", "gone@example.com"),
        ("bounced", "bounced@example.com"),
        ("quiet", "quiet@example.com"),
    ] {
        for list in [&first.id, &other.id, &double.id] {
            app.identify(json!({"userId": user, "traits": {"email": email},
                "integrations": {"Klaviyo": {"listId": list.0, "confirmOptin": false}}}))
                .await;
        }
    }
    app.settle().await;
    assert_eq!(consent_of(&app, "gone@example.com").await, gone_before);
    assert_eq!(
        consent_of(&app, "bounced@example.com").await,
        bounced_before
    );
    assert_eq!(consent_of(&app, "quiet@example.com").await, quiet_before);
    assert_eq!(reasons(&gone_before), [SuppressionReason::Unsubscribe]);
    assert_eq!(reasons(&bounced_before), [SuppressionReason::HardBounce]);
    assert_eq!(reasons(&quiet_before), [SuppressionReason::UserSuppressed]);
    // No membership changed either: gone@ stays on the list it joined, no one joined another.
    assert_eq!(members(&app, &first.id).await, ["gone@example.com"]);
    assert!(members(&app, &other.id).await.is_empty());
    assert!(members(&app, &double.id).await.is_empty());
    assert!(pending(&app, &double.id).await.is_empty());
    // Each refusal is a problem on the profile, naming the list and why.
    let gone_problems = problems_of(&app, "gone@example.com").await;
    for list in [&other.id, &double.id] {
        assert!(
            gone_problems
                .iter()
                .any(|p| p.contains(&list.0) && p.contains("unsubscribed")),
            "{gone_problems:?}"
        );
    }
    let bounced_problems = problems_of(&app, "bounced@example.com").await;
    assert!(
        bounced_problems
            .iter()
            .any(|p| p.contains(&first.id.0) && p.contains("is suppressed (HARD_BOUNCE)")),
        "{bounced_problems:?}"
    );
    let quiet_problems = problems_of(&app, "quiet@example.com").await;
    assert!(
        quiet_problems
            .iter()
            .any(|p| p.contains("is suppressed (USER_SUPPRESSED)")),
        "{quiet_problems:?}"
    );
    assert_eq!(metric_count(&app, "Subscribed to List").await, 1);

    // A subscription through the API (a private key) does subscribe them again.
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(other.id.clone()),
            emails: vec![
                "gone@example.com".parse().unwrap(),
                "quiet@example.com".parse().unwrap(),
            ],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    let gone_after = consent_of(&app, "gone@example.com").await;
    assert_eq!(gone_after.consent, ConsentStatus::Subscribed);
    assert!(gone_after.suppressions.is_empty());
    assert!(gone_after.can_receive_email_marketing);
    let quiet_after = consent_of(&app, "quiet@example.com").await;
    assert_eq!(quiet_after.consent, ConsentStatus::Subscribed);
    assert!(quiet_after.suppressions.is_empty());
    assert_eq!(
        members(&app, &other.id).await,
        ["gone@example.com", "quiet@example.com"]
    );

    // Derived state stays a function of the log, refusals included.
    app.settle().await;
    let dumped = app.engage.dump().await.unwrap();
    assert!(dumped.contains("does not subscribe it again"));
    app.engage.shutdown().await;
    let path = app.config.path.clone();
    rebuild(
        Arc::clone(&app.store),
        &path,
        app.config.hold_window,
        app.clock_now(),
        |_| {},
    )
    .await
    .unwrap();
    let rebuilt = Engage::open_readonly(&path).await.unwrap();
    assert_eq!(rebuilt.dump().await.unwrap(), dumped);
}

#[tokio::test]
async fn only_the_source_setting_may_skip_double_opt_in() {
    let mut app = TestApp::start().await;
    let double = app
        .engage
        .create_list("Double", OptInProcess::DoubleOptIn)
        .await
        .unwrap();
    app.settings(|s| s.list_id = Some(double.id.0.clone()))
        .await;
    // The source's setting names the list; the message asks to skip the confirmation.
    app.identify(json!({"userId": "p", "traits": {"email": "p@example.com"},
        "integrations": {"Klaviyo": {"confirmOptin": false}}}))
        .await;
    app.settle().await;
    assert_eq!(pending(&app, &double.id).await, ["p@example.com"]);
    assert!(members(&app, &double.id).await.is_empty());
    let p = app.by_email("p@example.com").await;
    assert_eq!(
        app.engage.email_consent(&p.id).await.unwrap().consent,
        ConsentStatus::NeverSubscribed
    );
    // Again: still pending, and the same identify on every visit adds no problem.
    app.identify(json!({"userId": "p", "traits": {"email": "p@example.com"},
        "integrations": {"Klaviyo": {"confirmOptin": false}}}))
        .await;
    app.settle().await;
    assert_eq!(pending(&app, &double.id).await, ["p@example.com"]);
    let problems = problems_of(&app, "p@example.com").await;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("confirmOptin false ignored"));

    // The operator turns double opt-in off for the source: that is trusted.
    app.settings(|s| s.confirm_optin = false).await;
    app.identify(json!({"userId": "q", "traits": {"email": "q@example.com"}}))
        .await;
    // A message may still ask for double opt-in.
    app.identify(json!({"userId": "r", "traits": {"email": "r@example.com"},
        "integrations": {"Klaviyo": {"confirmOptin": true}}}))
        .await;
    app.settle().await;
    assert_eq!(members(&app, &double.id).await, ["q@example.com"]);
    let q = app.by_email("q@example.com").await;
    assert_eq!(
        app.engage.email_consent(&q.id).await.unwrap().consent,
        ConsentStatus::Subscribed
    );
    assert_eq!(
        pending(&app, &double.id).await,
        ["p@example.com", "r@example.com"]
    );
    assert!(problems_of(&app, "q@example.com").await.is_empty());
}

#[tokio::test]
async fn a_profiles_lists_are_read_in_one_query_however_many_lists_there_are() {
    let app = TestApp::start().await;
    let ada = app
        .engage
        .create_profile(ProfileInput {
            email: Some("ada@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let bo = app
        .engage
        .create_profile(ProfileInput {
            email: Some("bo@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .unwrap();
    let mut lists = Vec::new();
    for n in 1..=60 {
        let opt_in = if n == 60 {
            OptInProcess::DoubleOptIn
        } else {
            OptInProcess::SingleOptIn
        };
        lists.push(
            app.engage
                .create_list(&format!("List {n}"), opt_in)
                .await
                .unwrap(),
        );
    }
    // Ada is only on the last list of 60 (past any first page of lists), pending its
    // confirmation; Bo is on every list.
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(lists[59].id.clone()),
            emails: vec!["ada@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .unwrap();
    for list in &lists {
        app.engage
            .add_list_members(&list.id, std::slice::from_ref(&bo.id))
            .await
            .unwrap();
    }

    let of_ada = app.engage.lists_of_profile(&ada.id, 100).await.unwrap();
    assert_eq!(of_ada.total, 1);
    assert_eq!(of_ada.items.len(), 1);
    let only = &of_ada.items[0];
    assert_eq!(only.list_id, lists[59].id);
    assert_eq!(only.name, "List 60");
    assert_eq!(only.opt_in_process, OptInProcess::DoubleOptIn);
    assert_eq!(only.status, MemberStatus::Pending);
    assert!(only.confirm_optin);

    // Bounded: the first ones by list id, and the number of all of them.
    let of_bo = app.engage.lists_of_profile(&bo.id, 25).await.unwrap();
    assert_eq!(of_bo.total, 60);
    assert_eq!(of_bo.items.len(), 25);
    let mut ids: Vec<_> = lists.iter().map(|l| l.id.clone()).collect();
    ids.sort();
    let shown: Vec<_> = of_bo.items.iter().map(|m| m.list_id.clone()).collect();
    assert_eq!(shown, ids[..25]);
    assert!(of_bo
        .items
        .iter()
        .all(|m| m.status == MemberStatus::Member && !m.confirm_optin));

    // An unknown profile is not found.
    let unknown = signalbox_engage::ProfileId("01ARZ3NDEKTSV4RRFFQ69G5FAV".into());
    assert!(matches!(
        app.engage.lists_of_profile(&unknown, 100).await,
        Err(EngageError::NotFound { .. })
    ));
}

// The reader is called from the test's task: a backend that waits on the runtime steps
// out of a worker of a multi-thread one to do so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profiles_suppressed_by_id_show_it_in_consent_and_in_facts() {
    use signalbox_engage::facts::no_segments;
    use signalbox_engage::ProfileId;
    use signalbox_seglang::{ProfileFacts, PropertyPath};

    let app = TestApp::start().await;
    let mut ids = Vec::new();
    for email in ["a@example.com", "b@example.com"] {
        let profile = app
            .engage
            .create_profile(ProfileInput {
                email: Some(email.into()),
                ..ProfileInput::default()
            })
            .await
            .unwrap();
        ids.push(profile.id);
    }
    let unknown = ProfileId("01JUNKNOWNPROFILE000000000".into());
    let changed = app
        .engage
        .suppress(
            SuppressTarget::Profiles(vec![ids[0].clone(), unknown]),
            SuppressionReason::UserSuppressed,
        )
        .await
        .unwrap();
    assert_eq!(changed, 1, "an unknown profile is skipped");
    let consent = app.engage.email_consent(&ids[0]).await.unwrap();
    assert!(!consent.can_receive_email_marketing);
    assert!(
        app.engage
            .email_consent(&ids[1])
            .await
            .unwrap()
            .can_receive_email_marketing
    );

    // Facts as flows load them: the same consent, fields and lists as segments read.
    let reader = app.engage.reader().unwrap();
    let pk = reader.profile_key(&ids[0]).unwrap().unwrap();
    let reader = app.engage.facts_reader().unwrap();
    let facts = reader
        .load(pk, Arc::new(no_segments))
        .unwrap()
        .expect("the profile exists");
    let consent = facts.email_consent();
    assert!(!consent.can_receive_marketing);
    assert_eq!(
        consent.suppressions[0].reason,
        signalbox_seglang::SuppressionReason::UserSuppressed
    );
    assert_eq!(
        facts.property(&PropertyPath::from_wire("email").unwrap()),
        Some(&json!("a@example.com"))
    );
    assert!(reader
        .load(
            signalbox_engage::ProfileKey(i64::MAX),
            Arc::new(no_segments)
        )
        .unwrap()
        .is_none());

    let lifted = app
        .engage
        .unsuppress(SuppressTarget::Profiles(vec![ids[0].clone()]))
        .await
        .unwrap();
    assert_eq!(lifted, 1);
    let facts = reader.load(pk, Arc::new(no_segments)).unwrap().unwrap();
    assert!(facts.email_consent().can_receive_marketing);
    assert!(facts.email_consent().suppressions.is_empty());
}
