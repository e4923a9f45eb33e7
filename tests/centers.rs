//! `PUT /kpi/centers/{code}` and `DELETE /kpi/centers/{code}/data`.

mod common;

use common::{day, Backend, TestApp, MASTER_KEY};
use reqwest::StatusCode;
use serde_json::json;

both_backends!(master_key_registers_center, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let meta = json!({"name": "Clínica del Norte", "city": "Santiago", "country": "RD", "is_active": true});
    let (status, body) = app.put("/kpi/centers/CVN", Some(MASTER_KEY), &meta).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"message": "Center metadata updated successfully", "center_code": "CVN",
               "center_name": "Clínica del Norte"})
    );
    let rows = app
        .db
        .rows(
            "SELECT name, city, country, is_active FROM centers WHERE code = 'CVN'",
            &[],
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!("Clínica del Norte"),
            json!("Santiago"),
            json!("RD"),
            json!(1)
        ]]
    );
    // Registered with the master key, the center has no key of its own yet.
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM center_api_keys", &[])
            .await,
        0
    );
});

both_backends!(
    registered_name_defaults_to_code,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;

        let (status, body) = app
            .put("/kpi/centers/VSP", Some(MASTER_KEY), &json!({}))
            .await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["center_name"], "VSP");
    }
);

both_backends!(center_key_cannot_register, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let (status, body) = app
        .put("/kpi/centers/NEW", Some(&key), &json!({"name": "New"}))
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "Invalid center code or API key");
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM centers WHERE code = 'NEW'", &[])
            .await,
        0
    );
});

both_backends!(update_leaves_null_fields, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    app.put(
        "/kpi/centers/HVC",
        Some(&key),
        &json!({"city": "Santo Domingo", "country": "RD"}),
    )
    .await;

    let (status, body) = app
        .put(
            "/kpi/centers/HVC",
            Some(&key),
            &json!({"name": "Central II", "city": null}),
        )
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["center_name"], "Central II");
    let rows = app
        .db
        .rows(
            "SELECT name, city, country, is_active FROM centers WHERE code = 'HVC'",
            &[],
        )
        .await;
    assert_eq!(
        rows,
        vec![vec![
            json!("Central II"),
            json!("Santo Domingo"),
            json!("RD"),
            json!(1)
        ]]
    );
});

both_backends!(update_sets_is_active, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;

    app.put(
        "/kpi/centers/HVC",
        Some(MASTER_KEY),
        &json!({"is_active": false}),
    )
    .await;
    let off = app
        .db
        .scalar("SELECT is_active FROM centers WHERE code = 'HVC'", &[])
        .await;
    app.put(
        "/kpi/centers/HVC",
        Some(MASTER_KEY),
        &json!({"is_active": 1}),
    )
    .await;
    let on = app
        .db
        .scalar("SELECT is_active FROM centers WHERE code = 'HVC'", &[])
        .await;

    assert_eq!(off, 0);
    assert_eq!(on, 1);
});

both_backends!(put_never_changes_a_key, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    // The old service stored a body api_key as the center's new key.
    let (with_header, _) = app
        .put(
            "/kpi/centers/HVC",
            Some(&key),
            &json!({"api_key": "chosen-by-client"}),
        )
        .await;
    let (body_only, _) = app
        .put(
            "/kpi/centers/HVC",
            None,
            &json!({"api_key": "chosen-by-client"}),
        )
        .await;
    let submit = json!({"center_code": "HVC", "date": day(0)});
    let (old_key, _) = app.post("/kpi/submit", Some(&key), &submit).await;
    let (chosen, _) = app
        .post("/kpi/submit", Some("chosen-by-client"), &submit)
        .await;

    assert_eq!(with_header, StatusCode::OK);
    assert_eq!(body_only, StatusCode::UNAUTHORIZED);
    assert_eq!(old_key, StatusCode::CREATED);
    assert_eq!(chosen, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.db
            .scalar("SELECT COUNT(*) FROM center_api_keys", &[])
            .await,
        1
    );
});

both_backends!(put_without_key, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;

    let (status, body) = app
        .put("/kpi/centers/HVC", None, &json!({"name": "X"}))
        .await;
    let (no_body, _) = app
        .send(reqwest::Method::PUT, "/kpi/centers/HVC", None, None)
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body["detail"],
        "API key required. Provide via X-API-Key header or request body."
    );
    assert_eq!(no_body, StatusCode::UNAUTHORIZED);
});

async fn seed_enhanced(app: &TestApp, key: &str) {
    let body = json!({
        "center_code": "HVC", "date": day(0), "total_orders": 3,
        "tests": [{"code": "GLU", "count": 1}], "species": [{"species": "Canino", "count": 1}],
        "breeds": [{"breed": "Mestizo", "count": 1}],
        "performance": {"peak_hour": 9}, "modules": [{"module_name": "farmacia"}],
        "system_usage": {"total_workstations": 2}, "payment_methods": [{"payment_method": "efectivo"}],
    });
    let (status, body) = app.post("/kpi/submit/enhanced", Some(key), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = app
        .post(
            "/kpi/submit",
            Some(key),
            &json!({"center_code": "HVC", "date": day(-1)}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}

both_backends!(delete_removes_every_table, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let other = app.center_with_key("CVN", "Norte").await;
    seed_enhanced(&app, &key).await;
    app.post(
        "/kpi/submit",
        Some(&other),
        &json!({"center_code": "CVN", "date": day(0)}),
    )
    .await;

    let (status, body) = app.delete("/kpi/centers/HVC/data", Some(&key)).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"center_code": "HVC", "message": "KPI data deleted successfully",
               "deleted": {"daily_metrics": 2, "test_summaries": 1, "species_summaries": 1, "breed_summaries": 1,
                           "performance_metrics": 1, "module_metrics": 1, "system_usage_metrics": 1,
                           "payment_method_metrics": 1}})
    );
    for table in [
        "daily_metrics",
        "test_summaries",
        "performance_metrics",
        "payment_method_metrics",
    ] {
        assert_eq!(app.count_rows(table, "HVC").await, 0, "{table}");
    }
    let center = app
        .db
        .rows(
            "SELECT code FROM centers WHERE code = 'HVC' AND last_sync_at IS NULL",
            &[],
        )
        .await;
    assert_eq!(center.len(), 1, "the center stays, with no last sync");
    assert_eq!(
        app.count_rows("daily_metrics", "CVN").await,
        1,
        "other centers keep their data"
    );
});

both_backends!(delete_with_master_key, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    seed_enhanced(&app, &key).await;

    let (status, body) = app.delete("/kpi/centers/HVC/data", Some(MASTER_KEY)).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["deleted"]["daily_metrics"], 2);
});

both_backends!(
    delete_hides_whether_center_exists,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let other = app.center_with_key("CVN", "Norte").await;
        seed_enhanced(&app, &key).await;

        let (wrong_key, wrong_body) = app.delete("/kpi/centers/HVC/data", Some(&other)).await;
        let (unknown, unknown_body) = app.delete("/kpi/centers/NOPE/data", Some(MASTER_KEY)).await;
        let (missing, missing_body) = app.delete("/kpi/centers/HVC/data", None).await;

        assert_eq!(wrong_key, StatusCode::NOT_FOUND);
        assert_eq!(
            wrong_body["detail"],
            "Center HVC not found or invalid API key"
        );
        assert_eq!(unknown, StatusCode::NOT_FOUND);
        assert_eq!(
            unknown_body["detail"],
            "Center NOPE not found or invalid API key"
        );
        assert_eq!(missing, StatusCode::UNAUTHORIZED);
        assert_eq!(
            missing_body["detail"],
            "API key required. Provide via X-API-Key header or request body."
        );
        assert_eq!(
            app.count_rows("daily_metrics", "HVC").await,
            2,
            "nothing deleted"
        );
    }
);

both_backends!(delete_rejects_nul_in_code, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let (status, body) = app
        .delete("/kpi/centers/A%00B/data", Some(MASTER_KEY))
        .await;
    let (read_status, _) = app.admin_json("/kpi/centers/A%00B/metrics").await;

    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["errors"][0]["loc"], json!(["path", "code"]));
    assert_eq!(read_status, StatusCode::NOT_FOUND);
});

both_backends!(
    inactive_center_cannot_reactivate,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        app.post(
            "/kpi/submit",
            Some(&key),
            &json!({"center_code": "HVC", "date": day(0)}),
        )
        .await;
        app.store.set_active("HVC", false).await.unwrap();

        let (own_put, _) = app
            .put("/kpi/centers/HVC", Some(&key), &json!({"is_active": true}))
            .await;
        let (own_delete, _) = app.delete("/kpi/centers/HVC/data", Some(&key)).await;
        let still_inactive = app
            .db
            .scalar("SELECT is_active FROM centers WHERE code = 'HVC'", &[])
            .await;
        let (master_put, _) = app
            .put(
                "/kpi/centers/HVC",
                Some(MASTER_KEY),
                &json!({"is_active": true}),
            )
            .await;

        assert_eq!(own_put, StatusCode::UNAUTHORIZED);
        assert_eq!(own_delete, StatusCode::NOT_FOUND);
        assert_eq!(still_inactive, 0);
        assert_eq!(
            app.count_rows("daily_metrics", "HVC").await,
            1,
            "nothing deleted"
        );
        assert_eq!(master_put, StatusCode::OK);
        assert_eq!(
            app.db
                .scalar("SELECT is_active FROM centers WHERE code = 'HVC'", &[])
                .await,
            1
        );
    }
);

both_backends!(
    deactivation_over_the_api_applies_at_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("HVC", "Central").await;
        let batch = json!({"center_code": "HVC", "date": day(0), "total_orders": 3});
        let (before, _) = app.post("/kpi/submit", Some(&key), &batch).await;

        let (status, _) = app
            .put(
                "/kpi/centers/HVC",
                Some(MASTER_KEY),
                &json!({"is_active": false}),
            )
            .await;
        let (after, _) = app.post("/kpi/submit", Some(&key), &batch).await;

        assert_eq!(before, StatusCode::CREATED);
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            after,
            StatusCode::UNAUTHORIZED,
            "the cached center was dropped"
        );
    }
);
