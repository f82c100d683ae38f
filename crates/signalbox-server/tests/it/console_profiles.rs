//! The profile page's lists over real HTTP: every list the person is on, however many lists
//! there are, read from the person's memberships.

use reqwest::StatusCode;
use signalbox_engage::{OptInProcess, ProfileInput, SubscribeRequest};
use signalbox_server::ServerConfig;

use crate::console_harness::{ConsoleServer, SESSION_A};

#[tokio::test]
async fn a_profile_page_shows_a_list_past_the_first_sixty() {
    let app = ConsoleServer::spawn(ServerConfig::default()).await;
    let ada = app
        .engage
        .create_profile(ProfileInput {
            email: Some("ada@example.com".into()),
            ..ProfileInput::default()
        })
        .await
        .expect("a profile");
    let mut lists = Vec::new();
    for n in 1..=60 {
        let opt_in = if n == 60 {
            OptInProcess::DoubleOptIn
        } else {
            OptInProcess::SingleOptIn
        };
        lists.push(
            app.engage
                .create_list(&format!("List {n:02}"), opt_in)
                .await
                .expect("a list"),
        );
    }
    app.engage
        .add_list_members(&lists[0].id, std::slice::from_ref(&ada.id))
        .await
        .expect("add to the first");
    app.engage
        .subscribe(SubscribeRequest {
            list_id: Some(lists[59].id.clone()),
            emails: vec!["ada@example.com".parse().unwrap()],
            ..SubscribeRequest::default()
        })
        .await
        .expect("subscribe to the last");
    app.settle().await;

    let (status, html) = app
        .page(SESSION_A, &format!("/profiles/{}", ada.id.0))
        .await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let section = &html[html.find("<h2 id=\"lists\">").expect("the lists")..];
    let section = &section[..section.find("</section>").expect("its end")];
    let first = format!("<a href=\"/lists/{}\">List 01</a>: member", lists[0].id.0);
    assert!(section.contains(&first), "{section}");
    let last = format!(
        "<a href=\"/lists/{}\">List 60</a>: pending (double opt-in)",
        lists[59].id.0
    );
    assert!(section.contains(&last), "{section}");
    assert_eq!(section.matches("<li>").count(), 2, "{section}");
    assert!(!section.contains("are shown"), "{section}");

    let (status, _) = app
        .page(SESSION_A, "/profiles/01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
