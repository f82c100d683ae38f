//! The template rules, run against each backend of [`TemplateRecords`]: the embedded store and
//! PostgreSQL.

use std::any::Any;

use super::*;

type Guard = Box<dyn Any + Send + Sync>;

async fn sqlite_store() -> Option<(Guard, TemplateStore)> {
    let dir = tempfile::tempdir().unwrap();
    let store = TemplateStore::open(dir.path().join("templates.db")).unwrap();
    Some((Box::new(dir), store))
}

async fn sqlite_reopen(guard: &Guard) -> TemplateStore {
    let dir = guard.downcast_ref::<tempfile::TempDir>().unwrap();
    TemplateStore::open(dir.path().join("templates.db")).unwrap()
}

async fn postgres_store() -> Option<(Guard, TemplateStore)> {
    let db = signalbox_store::postgres::testing::TestDatabase::create().await?;
    let records = PgTemplates::connect(db.url()).await.unwrap();
    Some((Box::new(db), TemplateStore::new(Arc::new(records))))
}

async fn postgres_reopen(guard: &Guard) -> TemplateStore {
    let db = guard
        .downcast_ref::<signalbox_store::postgres::testing::TestDatabase>()
        .unwrap();
    TemplateStore::new(Arc::new(PgTemplates::connect(db.url()).await.unwrap()))
}

macro_rules! template_tests {
    ($store:path, $reopen:path) => {
        use super::*;

        async fn store() -> Option<(Guard, TemplateStore)> {
            $store().await
        }

        async fn reopen(guard: &Guard) -> TemplateStore {
            $reopen(guard).await
        }

        fn at(s: &str) -> Timestamp {
            s.parse().unwrap()
        }

        #[tokio::test]
        async fn create_update_list_delete_and_reopen() {
            let Some((guard, store)) = store().await else {
                return;
            };
            let created = store
                .create(
                    TemplateChange {
                        name: Some("Cart".into()),
                        html: Some("<p>Hi {{ first_name|default:\"there\" }}</p>".into()),
                        text: None,
                    },
                    at("2026-03-01T00:00:00Z"),
                )
                .await
                .unwrap();
            assert_eq!(created.id.len(), 6);
            assert_eq!(created.editor_type, "CODE");
            let updated = store
                .update(
                    &created.id,
                    TemplateChange {
                        text: Some(Some("Hi {{ first_name }}".into())),
                        ..TemplateChange::default()
                    },
                    at("2026-03-02T00:00:00Z"),
                )
                .await
                .unwrap();
            assert_eq!(updated.name, "Cart");
            assert_eq!(updated.text.as_deref(), Some("Hi {{ first_name }}"));
            assert_eq!(updated.updated, at("2026-03-02T00:00:00Z"));
            // What a second handle on the same store sees (a restart, or another node).
            let store = reopen(&guard).await;
            assert_eq!(store.get(&created.id).await.unwrap(), updated);
            let source = store
                .email_source(&created.id, "Subject")
                .await
                .unwrap()
                .unwrap();
            assert_eq!(source.subject, "Subject");
            assert!(store.email_source("nosuch", "s").await.unwrap().is_none());
            store.delete(&created.id).await.unwrap();
            assert!(matches!(
                store.delete(&created.id).await,
                Err(TemplateStoreError::NotFound(_))
            ));
        }

        #[tokio::test]
        async fn refuses_templates_that_do_not_compile() {
            let Some((_guard, store)) = store().await else {
                return;
            };
            let err = store
                .create(
                    TemplateChange {
                        name: Some("Broken".into()),
                        html: Some("{% for item in event.Items %}".into()),
                        text: None,
                    },
                    at("2026-03-01T00:00:00Z"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(&err, TemplateStoreError::Invalid { field: "html", .. }),
                "{err}"
            );
            let err = store
                .create(
                    TemplateChange {
                        name: Some("Broken text".into()),
                        html: Some("<p>ok</p>".into()),
                        text: Some(Some("{{ x|nosuchfilter }}".into())),
                    },
                    at("2026-03-01T00:00:00Z"),
                )
                .await
                .unwrap_err();
            assert!(
                matches!(&err, TemplateStoreError::Invalid { field: "text", .. }),
                "{err}"
            );
            let err = store
                .create(TemplateChange::default(), at("2026-03-01T00:00:00Z"))
                .await
                .unwrap_err();
            assert!(matches!(
                &err,
                TemplateStoreError::Invalid { field: "name", .. }
            ));
        }

        #[tokio::test]
        async fn a_cursor_past_the_end_is_an_empty_page() {
            // Found by fuzzing: `offset + PAGE_SIZE` overflowed (a panic in debug builds).
            let Some((_guard, store)) = store().await else {
                return;
            };
            store
                .create(
                    TemplateChange {
                        name: Some("t".into()),
                        html: Some("<p>x</p>".into()),
                        text: None,
                    },
                    at("2026-03-01T00:00:00Z"),
                )
                .await
                .unwrap();
            for cursor in [u64::MAX.to_string(), (usize::MAX - 5).to_string()] {
                let (page, next) = store
                    .list(
                        &TemplateFilter::default(),
                        TemplateSort::Name,
                        Some(&cursor),
                    )
                    .await
                    .unwrap();
                assert!(page.is_empty());
                assert_eq!(next, None);
            }
        }

        #[tokio::test]
        async fn lists_in_pages_of_ten() {
            let Some((_guard, store)) = store().await else {
                return;
            };
            for i in 0..12 {
                store
                    .create(
                        TemplateChange {
                            name: Some(format!("t{i:02}")),
                            html: Some("<p>x</p>".into()),
                            text: None,
                        },
                        at("2026-03-01T00:00:00Z"),
                    )
                    .await
                    .unwrap();
            }
            let (first, next) = store
                .list(&TemplateFilter::default(), TemplateSort::Name, None)
                .await
                .unwrap();
            assert_eq!(first.len(), 10);
            assert_eq!(first[0].name, "t00");
            let (second, next) = store
                .list(
                    &TemplateFilter::default(),
                    TemplateSort::Name,
                    next.as_deref(),
                )
                .await
                .unwrap();
            assert_eq!(second.len(), 2);
            assert_eq!(next, None);
            let (named, _) = store
                .list(
                    &TemplateFilter {
                        name: Some("t03".into()),
                        ids: None,
                    },
                    TemplateSort::Created,
                    None,
                )
                .await
                .unwrap();
            assert_eq!(named.len(), 1);
        }
    };
}

mod sqlite {
    template_tests!(super::sqlite_store, super::sqlite_reopen);
}

mod postgres {
    template_tests!(super::postgres_store, super::postgres_reopen);
}
