//! `POST /kpi/events`: increments, days in the timestamp's own offset,
//! atomic counting under concurrency.

mod common;

use chrono::{FixedOffset, Utc};
use common::{day, Backend, TestApp, MASTER_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn event(code: &str, event_type: &str, timestamp: &str, data: Value) -> Value {
    json!({"center_code": code, "event_type": event_type, "timestamp": timestamp, "data": data})
}

/// Noon of a day, UTC.
fn noon(date: &str) -> String {
    format!("{date}T12:00:00Z")
}

both_backends!(
    order_event_counts_everything,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);
        let data = json!({"order_id": 10, "pet_id": 3, "tests": ["GLU", "BUN", "GLU"], "species": "Canino",
                      "breed": "Labrador", "test_count": 3});

        let (status, body) = app
            .post(
                "/kpi/events",
                Some(&key),
                &event("HVC", "order_created", &noon(&date), data),
            )
            .await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(
            body,
            json!({"message": "Event processed successfully", "event_type": "order_created", "center": "Central",
               "date": date})
        );
        assert_eq!(app.day_totals("HVC", &date).await, Some([1, 0, 0, 0]));
        let tests = app
            .day_rows(
                "test_summaries",
                "test_code, test_name, count",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(
            tests,
            vec![
                vec![json!("BUN"), json!("BUN"), json!(1)],
                vec![json!("GLU"), json!("GLU"), json!(2)]
            ]
        );
        let species = app
            .day_rows("species_summaries", "species, count", "HVC", &date)
            .await;
        assert_eq!(species, vec![vec![json!("Canino"), json!(1)]]);
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", "HVC", &date)
            .await;
        assert_eq!(
            breeds,
            vec![vec![json!("Labrador"), json!("Canino"), json!(1)]]
        );
    }
);

both_backends!(
    events_add_to_a_submitted_day,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);
        let batch = json!({"center_code": "HVC", "date": date, "total_orders": 10, "total_results": 4,
                       "tests": [{"code": "GLU", "name": "Glucosa", "count": 5}]});
        app.post("/kpi/submit", Some(&key), &batch).await;

        for (event_type, data) in [
            ("order_created", json!({"tests": ["GLU"]})),
            ("result_created", json!({})),
            (
                "pet_created",
                json!({"species": "Felino", "breed": "Persa"}),
            ),
            ("owner_created", json!({"owner_id": 5})),
        ] {
            let (status, body) = app
                .post(
                    "/kpi/events",
                    Some(&key),
                    &event("HVC", event_type, &noon(&date), data),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{event_type}: {body}");
        }

        assert_eq!(app.day_totals("HVC", &date).await, Some([11, 5, 1, 1]));
        // An existing test keeps its name; the species and breed come from the pet.
        let tests = app
            .day_rows(
                "test_summaries",
                "test_code, test_name, count",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(tests, vec![vec![json!("GLU"), json!("Glucosa"), json!(6)]]);
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", "HVC", &date)
            .await;
        assert_eq!(
            breeds,
            vec![vec![json!("Persa"), json!("Felino"), json!(1)]]
        );
    }
);

both_backends!(breed_needs_species, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let date = day(0);

    let data = json!({"breed": "Labrador"});
    let (status, _) = app
        .post(
            "/kpi/events",
            Some(&key),
            &event("HVC", "pet_created", &noon(&date), data),
        )
        .await;

    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(app.day_totals("HVC", &date).await, Some([0, 0, 1, 0]));
    assert!(app
        .day_rows("breed_summaries", "breed", "HVC", &date)
        .await
        .is_empty());
});

both_backends!(
    result_event_ignores_details,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);

        let data = json!({"tests": ["GLU"], "species": "Canino", "breed": "Labrador"});
        app.post(
            "/kpi/events",
            Some(&key),
            &event("HVC", "result_created", &noon(&date), data),
        )
        .await;

        assert_eq!(app.day_totals("HVC", &date).await, Some([0, 1, 0, 0]));
        assert!(app
            .day_rows("test_summaries", "test_code", "HVC", &date)
            .await
            .is_empty());
        assert!(app
            .day_rows("species_summaries", "species", "HVC", &date)
            .await
            .is_empty());
    }
);

both_backends!(
    late_evening_counts_on_local_day,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        // 22:30 at -04:00 is 02:30 UTC the next day; it counts on the clinic's day.
        let clinic = FixedOffset::west_opt(4 * 3600).unwrap();
        let local_day = Utc::now().with_timezone(&clinic).date_naive() - chrono::Days::new(1);
        let timestamp = format!("{local_day}T22:30:00-04:00");

        let (status, body) = app
            .post(
                "/kpi/events",
                Some(&key),
                &event("HVC", "order_created", &timestamp, json!({})),
            )
            .await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["date"], local_day.to_string());
        assert_eq!(
            app.day_totals("HVC", &local_day.to_string()).await,
            Some([1, 0, 0, 0])
        );
        let next_day = (local_day + chrono::Days::new(1)).to_string();
        assert_eq!(app.day_totals("HVC", &next_day).await, None);
    }
);

both_backends!(
    timestamp_without_offset_is_utc,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(-1);
        let timestamp = format!("{date}T23:59:59");

        let (status, body) = app
            .post(
                "/kpi/events",
                Some(&key),
                &event("HVC", "owner_created", &timestamp, json!({})),
            )
            .await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["date"], date);
    }
);

both_backends!(concurrent_orders_all_count, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let date = day(0);
    let body = event(
        "HVC",
        "order_created",
        &noon(&date),
        json!({"tests": ["GLU"], "species": "Canino",
                                                                   "breed": "Mestizo"}),
    );

    let requests = (0..200).map(|_| app.post("/kpi/events", Some(&key), &body));
    let results = futures::future::join_all(requests).await;

    let failed: Vec<_> = results
        .iter()
        .filter(|(status, _)| *status != StatusCode::ACCEPTED)
        .collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(app.day_totals("HVC", &date).await, Some([200, 0, 0, 0]));
    let tests = app
        .day_rows("test_summaries", "test_code, count", "HVC", &date)
        .await;
    assert_eq!(tests, vec![vec![json!("GLU"), json!(200)]]);
    let breeds = app
        .day_rows("breed_summaries", "breed, count", "HVC", &date)
        .await;
    assert_eq!(breeds, vec![vec![json!("Mestizo"), json!(200)]]);
});

both_backends!(
    master_key_registers_unknown_center,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let date = day(0);

        let (status, body) = app
            .post(
                "/kpi/events",
                Some(MASTER_KEY),
                &event("NEW", "pet_created", &noon(&date), json!({})),
            )
            .await;

        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        assert_eq!(body["center"], "NEW");
        assert_eq!(app.day_totals("NEW", &date).await, Some([0, 0, 1, 0]));
    }
);

both_backends!(
    unknown_center_without_master_key,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;

        let (status, body) = app
            .post(
                "/kpi/events",
                Some(&key),
                &event("NEW", "pet_created", &noon(&day(0)), json!({})),
            )
            .await;

        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid API key for center");
        assert_eq!(
            app.db
                .scalar("SELECT COUNT(*) FROM centers WHERE code = 'NEW'", &[])
                .await,
            0
        );
    }
);

both_backends!(
    inactive_center_events_rejected,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        app.store.set_active("HVC", false).await.unwrap();

        let body = event("HVC", "order_created", &noon(&day(0)), json!({}));
        let (own_key, _) = app.post("/kpi/events", Some(&key), &body).await;
        let (master, _) = app.post("/kpi/events", Some(MASTER_KEY), &body).await;

        assert_eq!(own_key, StatusCode::UNAUTHORIZED);
        assert_eq!(master, StatusCode::UNAUTHORIZED);
        assert_eq!(app.count_rows("daily_metrics", "HVC").await, 0);
    }
);

both_backends!(event_test_list_is_bounded, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let tests: Vec<String> = (0..1_001).map(|i| format!("T{i}")).collect();
    let many: Vec<String> = (0..1_000).map(|i| format!("T{}", i % 7)).collect();

    let (rejected, body) = app
        .post(
            "/kpi/events",
            Some(&key),
            &event(
                "HVC",
                "order_created",
                &noon(&day(0)),
                json!({"tests": tests}),
            ),
        )
        .await;
    let (accepted, _) = app
        .post(
            "/kpi/events",
            Some(&key),
            &event(
                "HVC",
                "order_created",
                &noon(&day(0)),
                json!({"tests": many}),
            ),
        )
        .await;

    assert_eq!(rejected, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["errors"][0]["loc"], json!(["body", "data", "tests"]));
    assert_eq!(accepted, StatusCode::ACCEPTED);
    let tests = app
        .day_rows("test_summaries", "test_code, count", "HVC", &day(0))
        .await;
    assert_eq!(tests.len(), 7);
    assert_eq!(tests[0], vec![json!("T0"), json!(143)]);
});
