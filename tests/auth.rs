//! Center keys on the write endpoints: header and body keys, the master key,
//! inactive centers, expiry and rotation.

mod common;

use chrono::{Duration, Utc};
use common::{day, Backend, TestApp, MASTER_KEY};
use kpi_service::keys::{self, KeyHash};
use kpi_service::store::NewKey;
use reqwest::StatusCode;
use serde_json::{json, Value};

const MISSING: &str = "API key required. Provide via X-API-Key header or request body.";
const INVALID: &str = "Invalid center code or API key";

fn submit(code: &str) -> Value {
    json!({"center_code": code, "date": day(0), "total_orders": 1})
}

fn submit_with_body_key(code: &str, key: &str) -> Value {
    let mut body = submit(code);
    body["api_key"] = json!(key);
    body
}

both_backends!(missing_key_is_401, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;

    let response = app
        .client
        .post(format!("{}/kpi/submit", app.base_url))
        .json(&submit("HVC"))
        .send()
        .await
        .unwrap();
    let challenge = response.headers().get("www-authenticate").cloned();
    let (status, body) = common::read(response).await;
    let (empty_header, _) = app.post("/kpi/submit", Some(""), &submit("HVC")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], MISSING);
    assert_eq!(body["type"], "authentication_error");
    assert_eq!(challenge.unwrap(), "ApiKey");
    assert_eq!(empty_header, StatusCode::UNAUTHORIZED);
});

both_backends!(wrong_key_is_401, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    let other = app.center_with_key("CVN", "Norte").await;

    let cases = [
        ("another center's key", other.as_str()),
        ("a prefix", &key[..10]),
        ("a longer key", &format!("{key}x")),
        ("junk", "wrong"),
    ];
    for (case, wrong) in cases {
        let (status, body) = app.post("/kpi/submit", Some(wrong), &submit("HVC")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(body["detail"], INVALID, "{case}");
    }
    assert_eq!(app.count_rows("daily_metrics", "HVC").await, 0);
});

both_backends!(non_ascii_header_is_401, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;
    let value = reqwest::header::HeaderValue::from_bytes("clé-ñ".as_bytes()).unwrap();

    let response = app
        .client
        .post(format!("{}/kpi/submit", app.base_url))
        .header("X-API-Key", value)
        .json(&submit("HVC"))
        .send()
        .await
        .unwrap();
    let (status, body) = common::read(response).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], INVALID);
});

both_backends!(body_key_still_works, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let (status, body) = app
        .post("/kpi/submit", None, &submit_with_body_key("HVC", &key))
        .await;
    let event = json!({"center_code": "HVC", "api_key": key, "event_type": "owner_created",
                       "timestamp": format!("{}T10:00:00Z", day(0)), "data": {}});
    let (event_status, _) = app.post("/kpi/events", None, &event).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(event_status, StatusCode::ACCEPTED);
});

both_backends!(header_key_wins_over_body, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let (right_header, _) = app
        .post(
            "/kpi/submit",
            Some(&key),
            &submit_with_body_key("HVC", "wrong"),
        )
        .await;
    let (wrong_header, _) = app
        .post(
            "/kpi/submit",
            Some("wrong"),
            &submit_with_body_key("HVC", &key),
        )
        .await;

    assert_eq!(right_header, StatusCode::CREATED);
    assert_eq!(wrong_header, StatusCode::UNAUTHORIZED);
});

both_backends!(master_key_in_body, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;

    let (status, _) = app
        .post(
            "/kpi/submit",
            None,
            &submit_with_body_key("HVC", MASTER_KEY),
        )
        .await;

    assert_eq!(status, StatusCode::CREATED);
});

both_backends!(inactive_center_is_401, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    app.store.set_active("HVC", false).await.unwrap();

    let (own_key, body) = app.post("/kpi/submit", Some(&key), &submit("HVC")).await;
    let (master, _) = app
        .post("/kpi/submit", Some(MASTER_KEY), &submit("HVC"))
        .await;

    assert_eq!(own_key, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], INVALID);
    assert_eq!(master, StatusCode::UNAUTHORIZED);
    assert_eq!(app.count_rows("daily_metrics", "HVC").await, 0);
});

both_backends!(expired_key_is_401, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app
        .center_with_key_expiring("HVC", "Central", Some(Utc::now() - Duration::minutes(1)))
        .await;
    let fresh = app
        .center_with_key_expiring("CVN", "Norte", Some(Utc::now() + Duration::hours(1)))
        .await;

    let (status, body) = app.post("/kpi/submit", Some(&key), &submit("HVC")).await;
    let (fresh_status, _) = app.post("/kpi/submit", Some(&fresh), &submit("CVN")).await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(fresh_status, StatusCode::CREATED);
});

both_backends!(rotated_key_has_grace, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let old = app.center_with_key("HVC", "Central").await;
    let new = keys::generate();
    let new_key = NewKey {
        hash: KeyHash::of(&new),
        expires_at: None,
    };
    app.store
        .rotate_key("HVC", &new_key, Utc::now() + Duration::hours(24))
        .await
        .unwrap();

    let (old_in_grace, _) = app.post("/kpi/submit", Some(&old), &submit("HVC")).await;
    let (new_status, _) = app.post("/kpi/submit", Some(&new), &submit("HVC")).await;

    assert_eq!(old_in_grace, StatusCode::CREATED);
    assert_eq!(new_status, StatusCode::CREATED);

    let newest = keys::generate();
    let newest_key = NewKey {
        hash: KeyHash::of(&newest),
        expires_at: None,
    };
    app.store
        .rotate_key("HVC", &newest_key, Utc::now())
        .await
        .unwrap();
    // A change made outside the service's API applies within the center
    // cache's lifetime.
    tokio::time::sleep(kpi_service::center_cache::TTL).await;

    let (old_after, body) = app.post("/kpi/submit", Some(&old), &submit("HVC")).await;
    let (new_after, _) = app.post("/kpi/submit", Some(&new), &submit("HVC")).await;
    let (newest_status, _) = app.post("/kpi/submit", Some(&newest), &submit("HVC")).await;

    assert_eq!(old_after, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(new_after, StatusCode::UNAUTHORIZED);
    assert_eq!(newest_status, StatusCode::CREATED);
});

both_backends!(no_master_key_configured, |backend: Backend| async move {
    let app = TestApp::spawn_with(backend, &[("CENTER_API_KEY", "")]).await;

    let (status, _) = app
        .put(
            "/kpi/centers/NEW",
            Some(MASTER_KEY),
            &json!({"name": "New"}),
        )
        .await;

    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.db.scalar("SELECT COUNT(*) FROM centers", &[]).await, 0);
});

both_backends!(keys_are_stored_as_digests, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let stored = app
        .db
        .rows("SELECT key_hash FROM center_api_keys", &[])
        .await;
    let leaked = app
        .db
        .scalar(
            "SELECT COUNT(*) FROM centers WHERE api_key IS NOT NULL",
            &[],
        )
        .await;

    assert_eq!(stored, vec![vec![json!(KeyHash::of(&key).to_hex())]]);
    assert_eq!(leaked, 0);
});
