//! `POST /kpi/submit` and `POST /kpi/submit/enhanced`: bodies, stored rows,
//! replace and merge semantics, concurrency.

mod common;

use common::{day, Backend, TestApp, MASTER_KEY};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn batch(code: &str, date: &str) -> Value {
    json!({
        "center_code": code,
        "date": date,
        "total_orders": 30,
        "total_results": 28,
        "total_pets": 20,
        "total_owners": 15,
        "tests": [
            {"code": "GLU", "name": "Glucosa", "count": 12},
            {"code": "BUN", "name": null, "count": 4},
        ],
        "species": [{"species": "Canino", "count": 14}, {"species": "Felino", "count": 6}],
        "breeds": [
            {"breed": "Labrador", "species": "Canino", "count": 5},
            {"breed": "Mestizo", "count": 3},
        ],
    })
}

both_backends!(submit_stores_the_batch, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app
        .center_with_key("HVC", "Hospital Veterinario Central")
        .await;
    let date = day(-1);

    let (status, body) = app
        .post("/kpi/submit", Some(&key), &batch("HVC", &date))
        .await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"message": "Metrics submitted successfully", "center": "Hospital Veterinario Central",
               "date": date, "total_orders": 30})
    );
    assert_eq!(app.day_totals("HVC", &date).await, Some([30, 28, 20, 15]));
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
            vec![json!("BUN"), Value::Null, json!(4)],
            vec![json!("GLU"), json!("Glucosa"), json!(12)]
        ]
    );
    let species = app
        .day_rows("species_summaries", "species, count", "HVC", &date)
        .await;
    assert_eq!(
        species,
        vec![
            vec![json!("Canino"), json!(14)],
            vec![json!("Felino"), json!(6)]
        ]
    );
    let breeds = app
        .day_rows("breed_summaries", "breed, species, count", "HVC", &date)
        .await;
    assert_eq!(
        breeds,
        vec![
            vec![json!("Labrador"), json!("Canino"), json!(5)],
            vec![json!("Mestizo"), Value::Null, json!(3)]
        ]
    );
    let synced = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM centers WHERE code = 'HVC' AND last_sync_at IS NOT NULL",
            &[],
        )
        .await;
    assert_eq!(synced, 1);
});

both_backends!(submit_replaces_the_day, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let date = day(0);
    app.post("/kpi/submit", Some(&key), &batch("HVC", &date))
        .await;

    let second = json!({"center_code": "HVC", "date": date, "total_orders": 7,
                        "tests": [{"code": "ALT", "count": 2}]});
    let (status, _) = app.post("/kpi/submit", Some(&key), &second).await;

    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(app.day_totals("HVC", &date).await, Some([7, 0, 0, 0]));
    let tests = app
        .day_rows("test_summaries", "test_code, count", "HVC", &date)
        .await;
    assert_eq!(tests, vec![vec![json!("ALT"), json!(2)]]);
    assert!(app
        .day_rows("species_summaries", "species", "HVC", &date)
        .await
        .is_empty());
    assert!(app
        .day_rows("breed_summaries", "breed", "HVC", &date)
        .await
        .is_empty());
});

both_backends!(
    submit_leaves_other_days_alone,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        app.post("/kpi/submit", Some(&key), &batch("HVC", &day(-2)))
            .await;

        app.post(
            "/kpi/submit",
            Some(&key),
            &json!({"center_code": "HVC", "date": day(-1)}),
        )
        .await;

        assert_eq!(
            app.day_totals("HVC", &day(-2)).await,
            Some([30, 28, 20, 15])
        );
        assert_eq!(
            app.day_rows("test_summaries", "test_code", "HVC", &day(-2))
                .await
                .len(),
            2
        );
    }
);

both_backends!(
    submit_merges_duplicate_entries,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);
        let body = json!({
            "center_code": "HVC", "date": date,
            "tests": [{"code": "GLU", "count": 2}, {"code": "GLU", "name": "Glucosa", "count": 3},
                      {"code": "glu", "count": 1}],
            "species": [{"species": "Canino", "count": 1}, {"species": "Canino", "count": 4}],
            "breeds": [{"breed": "Mestizo", "count": 1}, {"breed": "Mestizo", "species": null, "count": 2},
                       {"breed": "Mestizo", "species": "Canino", "count": 5}],
        });

        let (status, body) = app.post("/kpi/submit", Some(&key), &body).await;

        assert_eq!(status, StatusCode::CREATED, "{body}");
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
                vec![json!("GLU"), json!("Glucosa"), json!(5)],
                vec![json!("glu"), Value::Null, json!(1)]
            ]
        );
        let species = app
            .day_rows("species_summaries", "species, count", "HVC", &date)
            .await;
        assert_eq!(species, vec![vec![json!("Canino"), json!(5)]]);
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", "HVC", &date)
            .await;
        assert_eq!(
            breeds,
            vec![
                vec![json!("Mestizo"), json!("Canino"), json!(5)],
                vec![json!("Mestizo"), Value::Null, json!(3)]
            ]
        );
    }
);

both_backends!(
    merged_count_beyond_32_bits_is_rejected,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let body = json!({"center_code": "HVC", "date": day(0),
                      "tests": [{"code": "GLU", "count": 2147483647}, {"code": "GLU", "count": 1}]});

        let (status, body) = app.post("/kpi/submit", Some(&key), &body).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["errors"][0]["loc"],
            json!(["body", "tests", 1, "count"])
        );
        assert_eq!(app.count_rows("daily_metrics", "HVC").await, 0);
    }
);

fn enhanced(code: &str, date: &str) -> Value {
    let mut body = batch(code, date);
    body["performance"] = json!({"avg_order_processing_time": 95, "peak_hour": 10, "peak_hour_orders": 8,
        "completion_rate": 92, "same_day_completion": 20, "morning_orders": 9, "afternoon_orders": 14,
        "evening_orders": 5, "night_orders": 2});
    body["modules"] = json!([
        {"module_name": "laboratorio", "operations_count": 40, "active_users": 3, "total_revenue": 90000,
         "avg_transaction": 2250},
        {"module_name": "farmacia", "operations_count": 12},
    ]);
    body["system_usage"] = json!({"total_active_users": 6, "peak_concurrent_users": 4, "avg_session_duration": 45,
        "web_access_count": 120, "mobile_access_count": 10, "desktop_access_count": 60, "total_workstations": 5});
    body["payment_methods"] =
        json!([{"payment_method": "tarjeta", "transaction_count": 22, "total_amount": 41000}]);
    body
}

both_backends!(
    enhanced_submit_stores_every_part,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);

        let (status, body) = app
            .post("/kpi/submit/enhanced", Some(&key), &enhanced("HVC", &date))
            .await;

        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body,
            json!({"message": "Enhanced metrics submitted successfully", "center": "Central", "date": date,
               "saved": {"daily_metrics": true, "tests": 2, "species": 2, "breeds": 2, "performance": true,
                         "modules": 2, "system_usage": true, "payment_methods": 1}})
        );
        assert_eq!(app.day_totals("HVC", &date).await, Some([30, 28, 20, 15]));
        let performance = app
            .day_rows(
                "performance_metrics",
                "avg_order_processing_time, peak_hour, completion_rate, night_orders",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(
            performance,
            vec![vec![json!(95), json!(10), json!(92), json!(2)]]
        );
        let modules = app
            .day_rows(
                "module_metrics",
                "module_name, operations_count, active_users, total_revenue",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(
            modules,
            vec![
                vec![json!("farmacia"), json!(12), json!(0), Value::Null],
                vec![json!("laboratorio"), json!(40), json!(3), json!(90000)],
            ]
        );
        let usage = app
            .day_rows(
                "system_usage_metrics",
                "total_active_users, avg_session_duration",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(usage, vec![vec![json!(6), json!(45)]]);
        let payments = app
            .day_rows(
                "payment_method_metrics",
                "payment_method, transaction_count, total_amount",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(
            payments,
            vec![vec![json!("tarjeta"), json!(22), json!(41000)]]
        );
    }
);

both_backends!(
    enhanced_submit_keeps_rows_of_empty_lists,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);
        app.post("/kpi/submit/enhanced", Some(&key), &enhanced("HVC", &date))
            .await;

        let mut second = batch("HVC", &date);
        second["modules"] = json!([]);
        second["performance"] = json!({"peak_hour": 16});
        let (status, body) = app.post("/kpi/submit/enhanced", Some(&key), &second).await;

        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["saved"]["modules"], 0);
        assert_eq!(body["saved"]["system_usage"], false);
        // Empty or absent lists leave the stored rows; a given performance block replaces the row.
        assert_eq!(app.count_rows("module_metrics", "HVC").await, 2);
        assert_eq!(app.count_rows("payment_method_metrics", "HVC").await, 1);
        assert_eq!(app.count_rows("system_usage_metrics", "HVC").await, 1);
        let performance = app
            .day_rows(
                "performance_metrics",
                "peak_hour, completion_rate, morning_orders",
                "HVC",
                &date,
            )
            .await;
        assert_eq!(performance, vec![vec![json!(16), Value::Null, json!(0)]]);

        let mut third = batch("HVC", &date);
        third["modules"] = json!([{"module_name": "consultas", "operations_count": 3}]);
        app.post("/kpi/submit/enhanced", Some(&key), &third).await;
        let modules = app
            .day_rows("module_metrics", "module_name", "HVC", &date)
            .await;
        assert_eq!(modules, vec![vec![json!("consultas")]]);
    }
);

both_backends!(
    enhanced_submit_rejects_duplicate_modules,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let mut body = enhanced("HVC", &day(0));
        body["modules"] = json!([{"module_name": "farmacia"}, {"module_name": "farmacia"}]);

        let (status, body) = app.post("/kpi/submit/enhanced", Some(&key), &body).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            body["errors"][0]["loc"],
            json!(["body", "modules", 1, "module_name"])
        );
        assert_eq!(app.count_rows("daily_metrics", "HVC").await, 0);
    }
);

both_backends!(
    concurrent_batches_leave_one_whole,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);

        let requests = (0..20).map(|i| {
        let body = json!({
            "center_code": "HVC", "date": date, "total_orders": i, "total_results": i,
            "tests": (0..5).map(|t| json!({"code": format!("T{i}-{t}"), "count": i})).collect::<Vec<_>>(),
            "species": [{"species": format!("S{i}"), "count": i}],
        });
        let (app, key) = (&app, &key);
        async move { app.post("/kpi/submit", Some(key), &body).await.0 }
    });
        let statuses = futures::future::join_all(requests).await;

        assert!(
            statuses.iter().all(|s| *s == StatusCode::CREATED),
            "{statuses:?}"
        );
        let totals = app.day_totals("HVC", &date).await.unwrap();
        let winner = totals[0];
        assert_eq!(totals[1], winner, "totals come from one batch");
        let tests = app
            .day_rows("test_summaries", "test_code, count", "HVC", &date)
            .await;
        assert_eq!(tests.len(), 5, "{tests:?}");
        for row in &tests {
            assert!(
                row[0].as_str().unwrap().starts_with(&format!("T{winner}-")),
                "{tests:?}"
            );
            assert_eq!(row[1], json!(winner));
        }
        let species = app
            .day_rows("species_summaries", "species", "HVC", &date)
            .await;
        assert_eq!(species, vec![vec![json!(format!("S{winner}"))]]);
    }
);

both_backends!(
    master_key_submits_for_a_registered_center,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.center_with_key("HVC", "Central").await;

        let (status, _) = app
            .post("/kpi/submit", Some(MASTER_KEY), &batch("HVC", &day(0)))
            .await;
        let (unknown, body) = app
            .post("/kpi/submit", Some(MASTER_KEY), &batch("NEW", &day(0)))
            .await;

        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(unknown, StatusCode::UNAUTHORIZED);
        assert_eq!(body["detail"], "Invalid center code or API key");
    }
);

both_backends!(trailing_slash_is_accepted, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let (status, _) = app
        .post("/kpi/submit/", Some(&key), &batch("HVC", &day(0)))
        .await;

    assert_eq!(status, StatusCode::CREATED);
});

both_backends!(
    empty_and_null_species_merge,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let date = day(0);
        let body = json!({"center_code": "HVC", "date": date,
                      "breeds": [{"breed": "Mestizo", "count": 1}, {"breed": "Mestizo", "species": "", "count": 4}]});

        let (status, body) = app.post("/kpi/submit", Some(&key), &body).await;

        assert_eq!(status, StatusCode::CREATED, "{body}");
        let breeds = app
            .day_rows("breed_summaries", "breed, species, count", "HVC", &date)
            .await;
        assert_eq!(breeds, vec![vec![json!("Mestizo"), Value::Null, json!(5)]]);
    }
);

both_backends!(
    oversized_lists_rejected_early,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let tests: Vec<Value> = (0..10_001)
            .map(|i| json!({"code": format!("T{i}"), "count": 1}))
            .collect();
        let too_many = json!({"center_code": "HVC", "date": day(0), "tests": tests});
        let invalid: Vec<Value> = (0..150).map(|_| json!({"code": "", "count": 1})).collect();
        let many_errors = json!({"center_code": "HVC", "date": day(0), "tests": invalid});

        let (status, body) = app.post("/kpi/submit", Some(&key), &too_many).await;
        let (errors_status, errors_body) = app.post("/kpi/submit", Some(&key), &many_errors).await;

        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            body["errors"][0]["msg"]
                .as_str()
                .unwrap()
                .contains("at most 10000"),
            "{body}"
        );
        assert_eq!(errors_status, StatusCode::UNPROCESSABLE_ENTITY);
        let listed = errors_body["errors"].as_array().unwrap();
        assert_eq!(listed.len(), 101, "100 errors and a note");
        assert_eq!(listed[100]["type"], "too_many_errors");
        let indexes: Vec<u64> = listed[..100]
            .iter()
            .map(|error| error["loc"][2].as_u64().unwrap())
            .collect();
        assert_eq!(
            indexes,
            (0..100).collect::<Vec<u64>>(),
            "the first items, in order"
        );
    }
);
