//! Exactly-once events. An event id (`event_id` in the body or the
//! `Idempotency-Key` header) already accepted for a center gets the first
//! response again and counts nothing. Ids expire after 7 days, and a group of
//! events that fails to commit fails every request in it.

mod common;

use chrono::{Duration, Utc};
use common::{day, Arg, Backend, TestApp, TestDb, MASTER_KEY};
use kpi_service::keys::KeyHash;
use kpi_service::settings::DatabaseUrl;
use kpi_service::store::{CenterChanges, NewKey};
use reqwest::StatusCode;
use serde_json::{json, Value};

const REPLAYED: &str = "idempotent-replayed";

fn order(code: &str, event_id: Option<&str>) -> Value {
    let mut body = json!({"center_code": code, "event_type": "order_created",
        "timestamp": format!("{}T12:00:00Z", day(0)),
        "data": {"tests": ["GLU", "BUN"], "species": "Canino", "breed": "Labrador"}});
    if let Some(id) = event_id {
        body["event_id"] = json!(id);
    }
    body
}

/// Posts an event with optional `Idempotency-Key`; returns the status, the
/// body and whether the response is marked as a repeat.
async fn post_event(
    app: &TestApp,
    key: &str,
    body: &Value,
    idempotency_key: Option<&str>,
) -> (StatusCode, Value, bool) {
    let mut request = app
        .client
        .post(format!("{}/kpi/events", app.base_url))
        .header("X-API-Key", key)
        .json(body);
    if let Some(id) = idempotency_key {
        request = request.header("Idempotency-Key", id);
    }
    let response = request.send().await.expect("request sent");
    let replayed = response.headers().get(REPLAYED).is_some();
    let (status, body) = common::read(response).await;
    (status, body, replayed)
}

/// Reads today's orders and the center's summed test, species and breed counts.
async fn counts(app: &TestApp, code: &str) -> (i64, i64, i64, i64) {
    let date = day(0);
    let orders = app.day_totals(code, &date).await.map_or(0, |t| t[0]);
    let sum = |table: &'static str| {
        let sql = format!(
            "SELECT CAST(COALESCE(SUM(t.count), 0) AS INTEGER) FROM {table} t \
             JOIN centers c ON c.id = t.center_id WHERE c.code = $1"
        );
        async move { app.db.scalar(&sql, &[code.into()]).await }
    };
    (
        orders,
        sum("test_summaries").await,
        sum("species_summaries").await,
        sum("breed_summaries").await,
    )
}

both_backends!(
    a_repeated_body_id_counts_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let body = order("HVC", Some("order-1"));

        let (first_status, first_body, first_replayed) = post_event(&app, &key, &body, None).await;
        let (again_status, again_body, again_replayed) = post_event(&app, &key, &body, None).await;

        assert_eq!(first_status, StatusCode::ACCEPTED, "{first_body}");
        assert!(!first_replayed, "a first event is not marked as a repeat");
        assert_eq!(again_status, StatusCode::ACCEPTED, "{again_body}");
        assert!(again_replayed, "the repeat is marked");
        assert_eq!(again_body, first_body);
        assert_eq!(counts(&app, "HVC").await, (1, 2, 1, 1));
    }
);

both_backends!(
    events_without_ids_count_every_time,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        for _ in 0..3 {
            let (status, body, replayed) = post_event(&app, &key, &order("HVC", None), None).await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            assert!(!replayed);
        }
        assert_eq!(counts(&app, "HVC").await, (3, 6, 3, 3));
    }
);

both_backends!(
    the_header_wins_over_the_body_id,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;

        let (status, _, _) = post_event(
            &app,
            &key,
            &order("HVC", Some("body-id")),
            Some("header-id"),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED);
        // The stored id is the header's: sending it in the body is a repeat,
        // while the body's id was never recorded.
        let (_, _, header_id_replayed) =
            post_event(&app, &key, &order("HVC", Some("header-id")), None).await;
        let (_, _, body_id_replayed) =
            post_event(&app, &key, &order("HVC", Some("body-id")), None).await;

        assert!(header_id_replayed);
        assert!(!body_id_replayed);
        assert_eq!(counts(&app, "HVC").await.0, 2);
    }
);

both_backends!(ids_belong_to_their_center, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let hvc = app.center_with_key("HVC", "Central").await;
    let vsp = app.center_with_key("VSP", "South").await;

    let (_, _, hvc_replayed) = post_event(&app, &hvc, &order("HVC", Some("7")), None).await;
    let (_, _, vsp_replayed) = post_event(&app, &vsp, &order("VSP", Some("7")), None).await;

    assert!(!hvc_replayed);
    assert!(!vsp_replayed);
    assert_eq!(counts(&app, "HVC").await.0, 1);
    assert_eq!(counts(&app, "VSP").await.0, 1);
});

both_backends!(
    a_repeat_gets_the_first_answer_after_a_rename,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let body = order("HVC", Some("before-rename"));
        let (_, first, _) = post_event(&app, &key, &body, None).await;

        let (status, renamed) = app
            .put("/kpi/centers/HVC", Some(&key), &json!({"name": "Renamed"}))
            .await;
        assert_eq!(status, StatusCode::OK, "{renamed}");
        let (_, again, replayed) = post_event(&app, &key, &body, None).await;

        assert!(replayed);
        assert_eq!(first["center"], "Central");
        assert_eq!(again, first);
    }
);

both_backends!(
    fifty_concurrent_copies_count_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let body = order("HVC", Some("burst"));

        let answers =
            futures::future::join_all((0..50).map(|_| post_event(&app, &key, &body, None))).await;

        let first = &answers[0].1;
        for (status, answer, _) in &answers {
            assert_eq!(*status, StatusCode::ACCEPTED, "{answer}");
            assert_eq!(answer, first);
        }
        let repeats = answers.iter().filter(|(_, _, replayed)| *replayed).count();
        assert_eq!(repeats, 49, "all but one copy are marked as repeats");
        assert_eq!(counts(&app, "HVC").await, (1, 2, 1, 1));
    }
);

both_backends!(
    fifty_concurrent_copies_of_a_registering_event_count_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let body = order("NEW", Some("first-contact"));

        let answers =
            futures::future::join_all((0..50).map(|_| post_event(&app, MASTER_KEY, &body, None)))
                .await;

        for (status, answer, _) in &answers {
            assert_eq!(*status, StatusCode::ACCEPTED, "{answer}");
        }
        let centers = app
            .db
            .scalar("SELECT COUNT(*) FROM centers WHERE code = 'NEW'", &[])
            .await;
        assert_eq!(centers, 1);
        assert_eq!(counts(&app, "NEW").await, (1, 2, 1, 1));
    }
);

both_backends!(
    many_concurrent_events_with_repeats_count_each_id_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        // 40 ids, each sent three times at once: groups hold new ids,
        // repeats of committed ids and copies of ids in the same group.
        let bodies: Vec<Value> = (0..120)
            .map(|n| order("HVC", Some(&format!("id-{}", n % 40))))
            .collect();

        let answers =
            futures::future::join_all(bodies.iter().map(|body| post_event(&app, &key, body, None)))
                .await;

        for (status, answer, _) in &answers {
            assert_eq!(*status, StatusCode::ACCEPTED, "{answer}");
        }
        let repeats = answers.iter().filter(|(_, _, replayed)| *replayed).count();
        assert_eq!(repeats, 80);
        assert_eq!(counts(&app, "HVC").await, (40, 80, 40, 40));
    }
);

both_backends!(event_ids_are_validated, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let long = "x".repeat(101);
    let cases: Vec<(Value, Option<&str>, Value, &str)> = vec![
        (
            order("HVC", Some("")),
            None,
            json!(["body", "event_id"]),
            "string_too_short",
        ),
        (
            order("HVC", Some(&long)),
            None,
            json!(["body", "event_id"]),
            "string_too_long",
        ),
        (
            order("HVC", Some("a\u{0}b")),
            None,
            json!(["body", "event_id"]),
            "string_contains_nul",
        ),
        (
            order("HVC", None),
            Some(""),
            json!(["header", "Idempotency-Key"]),
            "string_too_short",
        ),
        (
            order("HVC", None),
            Some(&long),
            json!(["header", "Idempotency-Key"]),
            "string_too_long",
        ),
    ];
    for (body, header, loc, kind) in cases {
        let (status, problem, _) = post_event(&app, &key, &body, header).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        let error = &problem["errors"][0];
        assert_eq!(error["loc"], loc, "{problem}");
        assert_eq!(error["type"], kind, "{problem}");
    }
    let (status, _, _) = post_event(&app, &key, &order("HVC", Some(&"y".repeat(100))), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "100 characters are allowed");
    assert_eq!(
        counts(&app, "HVC").await.0,
        1,
        "rejected events count nothing"
    );
});

both_backends!(
    a_header_that_is_not_ascii_is_refused,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let values: [&[u8]; 3] = [b"caf\xc3\xa9", b"order 58213", b"order\t58213"];

        for value in values {
            let response = app
                .client
                .post(format!("{}/kpi/events", app.base_url))
                .header("X-API-Key", &key)
                .header(
                    "Idempotency-Key",
                    reqwest::header::HeaderValue::from_bytes(value).unwrap(),
                )
                .json(&order("HVC", None))
                .send()
                .await
                .unwrap();
            let (status, problem) = common::read(response).await;

            assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
            assert_eq!(
                problem["errors"][0]["loc"],
                json!(["header", "Idempotency-Key"])
            );
            assert_eq!(
                problem["errors"][0]["type"], "string_pattern_mismatch",
                "{problem}"
            );
        }
        assert_eq!(counts(&app, "HVC").await.0, 0);
    }
);

both_backends!(
    deleting_a_centers_data_forgets_its_ids,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let body = order("HVC", Some("resend-me"));
        post_event(&app, &key, &body, None).await;

        let (status, deleted) = app.delete("/kpi/centers/HVC/data", Some(&key)).await;
        assert_eq!(status, StatusCode::OK, "{deleted}");
        let (_, _, replayed) = post_event(&app, &key, &body, None).await;

        assert!(
            !replayed,
            "the data it counted is gone, so the id counts again"
        );
        assert_eq!(counts(&app, "HVC").await.0, 1);
    }
);

both_backends!(
    ids_older_than_seven_days_are_purged,
    |backend: Backend| async move {
        let db = TestDb::create(backend).await;
        let store = kpi_service::store::connect(&database_url(&db))
            .await
            .unwrap();
        store.migrate().await.unwrap();
        let key = kpi_service::keys::generate();
        let new_key = NewKey {
            hash: KeyHash::of(&key),
            expires_at: None,
        };
        let center = store
            .create_center(&CenterChanges::default(), "HVC", &new_key)
            .await
            .unwrap();
        store.close().await;
        let aged = |days: i64| (Utc::now() - Duration::days(days)).to_rfc3339();
        let insert = match backend {
            Backend::Postgres => {
                "INSERT INTO event_receipts (center_id, event_id, response, received_at) \
                 VALUES ($1, $2, '{}', CAST($3 AS timestamptz))"
            }
            Backend::Sqlite => {
                "INSERT INTO event_receipts (center_id, event_id, response, received_at) \
                 VALUES ($1, $2, '{}', $3)"
            }
        };
        for (id, days) in [("old", 8), ("recent", 6)] {
            let args = [Arg::Int(center.id.into()), id.into(), Arg::Text(aged(days))];
            db.execute(insert, &args).await;
        }

        // The service purges expired ids when it starts.
        let app = TestApp::spawn_on(db, &[]).await;
        let mut left = Vec::new();
        for _ in 0..100 {
            left = app
                .db
                .rows("SELECT event_id FROM event_receipts ORDER BY event_id", &[])
                .await;
            if left.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(left, vec![vec![json!("recent")]]);
        let (_, _, old_replayed) = post_event(&app, &key, &order("HVC", Some("old")), None).await;
        let (_, _, recent_replayed) =
            post_event(&app, &key, &order("HVC", Some("recent")), None).await;
        assert!(!old_replayed, "a purged id counts again");
        assert!(recent_replayed, "an id younger than 7 days is still known");
        assert_eq!(counts(&app, "HVC").await.0, 1);
    }
);

fn database_url(db: &TestDb) -> DatabaseUrl {
    match db.backend() {
        Backend::Postgres => DatabaseUrl::Postgres(db.url().to_owned()),
        Backend::Sqlite => DatabaseUrl::Sqlite(db.url().to_owned()),
    }
}

both_backends!(
    a_failed_group_fails_every_event_in_it,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        // A trigger makes any transaction that counts the test code POISON fail.
        let statements: &[&str] = match backend {
            Backend::Postgres => &[
                "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
                 IF NEW.test_code = 'POISON' THEN RAISE EXCEPTION 'poisoned test code'; END IF; \
                 RETURN NEW; END $$",
                "CREATE TRIGGER poison BEFORE INSERT ON test_summaries \
                 FOR EACH ROW EXECUTE FUNCTION poison()",
            ],
            Backend::Sqlite => &["CREATE TRIGGER poison BEFORE INSERT ON test_summaries \
                 WHEN NEW.test_code = 'POISON' BEGIN SELECT RAISE(ABORT, 'poisoned test code'); END"],
        };
        for statement in statements {
            app.db.execute(statement, &[]).await;
        }
        let bodies: Vec<Value> = (0..60)
            .map(|n| {
                let mut body = order("HVC", Some(&format!("event-{n}")));
                if n % 20 == 7 {
                    body["data"]["tests"] = json!(["POISON"]);
                }
                body
            })
            .collect();

        let (app, key) = (&app, &key);
        let answers = futures::future::join_all(bodies.iter().map(|body| async move {
            let response = app
                .client
                .post(format!("{}/kpi/events", app.base_url))
                .header("X-API-Key", key)
                .json(body)
                .send()
                .await
                .unwrap();
            let retry_after = response.headers().get("retry-after").cloned();
            let content_type = response.headers().get("content-type").cloned();
            (response.status(), retry_after, content_type)
        }))
        .await;

        let mut acknowledged = 0;
        for (n, (status, retry_after, content_type)) in answers.iter().enumerate() {
            if n % 20 == 7 {
                assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "event {n}");
            }
            if *status == StatusCode::ACCEPTED {
                acknowledged += 1;
            } else {
                assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "event {n}");
                assert!(retry_after.is_some(), "event {n} has Retry-After");
                assert_eq!(content_type.as_ref().unwrap(), "application/problem+json");
            }
        }
        assert_eq!(
            counts(app, "HVC").await,
            (acknowledged, 2 * acknowledged, acknowledged, acknowledged),
            "exactly the acknowledged events are counted"
        );

        // Without the trigger, retrying every refused event counts each once.
        let drop = match backend {
            Backend::Postgres => "DROP TRIGGER poison ON test_summaries",
            Backend::Sqlite => "DROP TRIGGER poison",
        };
        app.db.execute(drop, &[]).await;
        for (n, body) in bodies.iter().enumerate() {
            let (status, answer, _) = post_event(app, key, body, None).await;
            assert_eq!(status, StatusCode::ACCEPTED, "retry of event {n}: {answer}");
        }
        let (orders, tests, _, _) = counts(app, "HVC").await;
        assert_eq!(orders, 60);
        assert_eq!(tests, 57 * 2 + 3);
    }
);
