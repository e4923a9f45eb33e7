//! Protection: per-IP and per-center rate limits, client addresses behind
//! proxies, failed-authentication throttling, CORS, security headers,
//! production refusals, timeouts and panics. Everything runs through the
//! real server over a socket, with small quotas so that the tests are fast.

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use axum::routing::get;
use common::{day, Backend, TestApp, DASHBOARD_PASSWORD, MASTER_KEY};
use kpi_service::settings::Settings;
use kpi_service::AppState;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

fn batch(code: &str) -> Value {
    json!({"center_code": code, "date": day(0), "total_orders": 1})
}

/// Sends a submit with an optional forwarded address and returns the response.
async fn submit_from(
    app: &TestApp,
    key: &str,
    code: &str,
    forwarded: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/kpi/submit", app.base_url))
        .header("X-API-Key", key)
        .json(&batch(code));
    if let Some((name, value)) = forwarded {
        request = request.header(name, value);
    }
    request.send().await.unwrap()
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

both_backends!(
    ip_limit_is_a_burst_then_a_rate,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_SUBMIT", "2/second")]).await;
        let key = app.center_with_key("HVC", "Central").await;

        let first = submit_from(&app, &key, "HVC", None).await;
        let second = submit_from(&app, &key, "HVC", None).await;
        let refused = submit_from(&app, &key, "HVC", None).await;

        assert_eq!(first.status(), StatusCode::CREATED);
        assert_eq!(header(&first, "x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(second.status(), StatusCode::CREATED);
        assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
        assert_eq!(header(&refused, "x-ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            header(&refused, "x-ratelimit-remaining").as_deref(),
            Some("0")
        );
        assert!(header(&refused, "content-type").unwrap().contains("json"));
        let (_, body) = common::read(refused).await;
        assert_eq!(body["type"], "rate_limit_exceeded");
        assert_eq!(body["status"], 429);
        assert_eq!(body["instance"], "/kpi/submit");

        // One request is refilled every period/N = 500 ms.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let refilled = submit_from(&app, &key, "HVC", None).await;
        let again = submit_from(&app, &key, "HVC", None).await;
        assert_eq!(refilled.status(), StatusCode::CREATED);
        assert_eq!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    }
);

both_backends!(groups_have_separate_limits, |backend: Backend| async move {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("RATE_LIMIT_SUBMIT", "1/minute"),
            ("RATE_LIMIT_DASHBOARD", "1/minute"),
        ],
    )
    .await;
    let key = app.center_with_key("HVC", "Central").await;
    submit_from(&app, &key, "HVC", None).await;

    let submit = submit_from(&app, &key, "HVC", None).await;
    let put = app
        .put("/kpi/centers/HVC", Some(&key), &json!({"city": "X"}))
        .await
        .0;
    let event = json!({"center_code": "HVC", "event_type": "pet_created",
                       "timestamp": format!("{}T10:00:00Z", day(0)), "data": {}});
    let events = app.post("/kpi/events", Some(&key), &event).await.0;
    let first_read = app.admin_json("/kpi/centers").await.0;
    let second_read = app.admin_json("/kpi/stats/summary").await.0;
    let health = app.send(Method::GET, "/health", None, None).await.0;

    assert_eq!(submit.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        put,
        StatusCode::TOO_MANY_REQUESTS,
        "PUT counts against the submit limit"
    );
    assert_eq!(events, StatusCode::ACCEPTED);
    assert_eq!(first_read, StatusCode::OK);
    assert_eq!(
        second_read,
        StatusCode::TOO_MANY_REQUESTS,
        "the read API shares the dashboard limit"
    );
    assert_eq!(health, StatusCode::OK);
});

both_backends!(
    health_allows_sixty_a_minute,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;

        let mut statuses = Vec::new();
        for i in 0..61 {
            let path = if i % 2 == 0 {
                "/health"
            } else {
                "/health/ready"
            };
            statuses.push(app.send(Method::GET, path, None, None).await.0);
        }

        assert!(
            statuses[..60].iter().all(|s| *s == StatusCode::OK),
            "{statuses:?}"
        );
        assert_eq!(statuses[60], StatusCode::TOO_MANY_REQUESTS);
    }
);

both_backends!(health_quota_is_a_setting, |backend: Backend| async move {
    let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_HEALTH", "3/minute")]).await;

    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(app.send(Method::GET, "/health", None, None).await.0);
    }

    assert_eq!(statuses[..3], [StatusCode::OK; 3], "{statuses:?}");
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
});

both_backends!(
    forged_forwarded_header_ignored,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, &[("RATE_LIMIT_SUBMIT", "2/minute")]).await;
        let key = app.center_with_key("HVC", "Central").await;

        let mut statuses = Vec::new();
        for i in 0..3 {
            let forged = format!("198.51.100.{i}");
            let response = app
                .client
                .post(format!("{}/kpi/submit", app.base_url))
                .header("X-API-Key", &key)
                .header("X-Forwarded-For", &forged)
                .header("X-Real-IP", &forged)
                .json(&batch("HVC"))
                .send()
                .await
                .unwrap();
            statuses.push(response.status());
        }

        assert_eq!(
            statuses,
            [
                StatusCode::CREATED,
                StatusCode::CREATED,
                StatusCode::TOO_MANY_REQUESTS
            ]
        );
    }
);

both_backends!(
    trusted_proxy_forwards_client,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(
            backend,
            &[
                ("RATE_LIMIT_SUBMIT", "1/minute"),
                ("RATE_LIMIT_CENTER_SUBMIT", "100/minute"),
                ("TRUSTED_PROXIES", "127.0.0.0/8"),
            ],
        )
        .await;
        let key = app.center_with_key("HVC", "Central").await;

        let a = submit_from(&app, &key, "HVC", Some(("X-Forwarded-For", "198.51.100.1")))
            .await
            .status();
        let b = submit_from(
            &app,
            &key,
            "HVC",
            Some(("X-Forwarded-For", "6.6.6.6, 198.51.100.2")),
        )
        .await
        .status();
        let a_again = submit_from(&app, &key, "HVC", Some(("X-Forwarded-For", "198.51.100.1")))
            .await
            .status();
        // The left entry is whatever the client wrote; only the right-most untrusted one counts.
        let spoofed = submit_from(
            &app,
            &key,
            "HVC",
            Some(("X-Forwarded-For", "198.51.100.9, 198.51.100.2")),
        )
        .await
        .status();

        assert_eq!(a, StatusCode::CREATED);
        assert_eq!(b, StatusCode::CREATED);
        assert_eq!(a_again, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(spoofed, StatusCode::TOO_MANY_REQUESTS);
    }
);

both_backends!(real_ip_header_from_proxy, |backend: Backend| async move {
    let settings = [
        ("RATE_LIMIT_SUBMIT", "1/minute"),
        ("RATE_LIMIT_CENTER_SUBMIT", "100/minute"),
        ("TRUSTED_PROXIES", "127.0.0.1"),
        ("CLIENT_IP_HEADER", "X-Real-IP"),
    ];
    let app = TestApp::spawn_with(backend, &settings).await;
    let key = app.center_with_key("HVC", "Central").await;

    let a = submit_from(&app, &key, "HVC", Some(("X-Real-IP", "198.51.100.1")))
        .await
        .status();
    let b = submit_from(&app, &key, "HVC", Some(("X-Real-IP", "198.51.100.2")))
        .await
        .status();
    let forwarded = submit_from(&app, &key, "HVC", Some(("X-Forwarded-For", "198.51.100.3")))
        .await
        .status();
    let a_again = submit_from(&app, &key, "HVC", Some(("X-Real-IP", "198.51.100.1")))
        .await
        .status();

    assert_eq!(a, StatusCode::CREATED);
    assert_eq!(b, StatusCode::CREATED);
    assert_eq!(
        forwarded,
        StatusCode::CREATED,
        "without X-Real-IP the proxy itself is the client"
    );
    assert_eq!(a_again, StatusCode::TOO_MANY_REQUESTS);
});

both_backends!(
    center_limit_spans_addresses,
    |backend: Backend| async move {
        let settings = [
            ("RATE_LIMIT_CENTER_SUBMIT", "2/minute"),
            ("TRUSTED_PROXIES", "127.0.0.1"),
        ];
        let app = TestApp::spawn_with(backend, &settings).await;
        let hvc = app.center_with_key("HVC", "Central").await;
        let cvn = app.center_with_key("CVN", "Norte").await;

        let mut statuses = Vec::new();
        for i in 0..3 {
            let address = format!("198.51.100.{i}");
            statuses
                .push(submit_from(&app, &hvc, "HVC", Some(("X-Forwarded-For", &address))).await);
        }
        let other_center =
            submit_from(&app, &cvn, "CVN", Some(("X-Forwarded-For", "198.51.100.0"))).await;
        let wrong_key = submit_from(
            &app,
            "wrong",
            "CVN",
            Some(("X-Forwarded-For", "198.51.100.5")),
        )
        .await;

        assert_eq!(statuses[0].status(), StatusCode::CREATED);
        assert_eq!(statuses[1].status(), StatusCode::CREATED);
        assert_eq!(statuses[2].status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(
            header(&statuses[2], "retry-after")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 1
        );
        assert_eq!(other_center.status(), StatusCode::CREATED);
        assert_eq!(
            wrong_key.status(),
            StatusCode::UNAUTHORIZED,
            "failed attempts do not spend a center's quota"
        );
        let after = submit_from(&app, &cvn, "CVN", Some(("X-Forwarded-For", "198.51.100.6"))).await;
        assert_eq!(after.status(), StatusCode::CREATED);
    }
);

both_backends!(failed_keys_are_throttled, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;

    let mut missing = Vec::new();
    for _ in 0..25 {
        missing.push(app.post("/kpi/submit", None, &batch("HVC")).await.0);
    }
    let mut wrong = Vec::new();
    for _ in 0..20 {
        wrong.push(
            app.post("/kpi/submit", Some("wrong-key"), &batch("HVC"))
                .await
                .0,
        );
    }
    let blocked = submit_from(&app, &key, "HVC", None).await;
    let dashboard = app.admin_json("/kpi/centers").await.0;

    assert!(
        missing.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "requests without a key do not count"
    );
    assert!(
        wrong.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{wrong:?}"
    );
    assert_eq!(
        blocked.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even the right key waits out the minute"
    );
    let retry_after: u64 = header(&blocked, "retry-after").unwrap().parse().unwrap();
    assert!(
        (50..=60).contains(&retry_after),
        "Retry-After {retry_after}"
    );
    assert_eq!(dashboard, StatusCode::TOO_MANY_REQUESTS);
});

both_backends!(
    failed_dashboard_logins_are_throttled,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let url = format!("{}/", app.base_url);

        for _ in 0..30 {
            let status = app.client.get(&url).send().await.unwrap().status();
            assert_eq!(
                status,
                StatusCode::UNAUTHORIZED,
                "no credentials, as a browser's first request"
            );
        }
        let mut wrong = Vec::new();
        for _ in 0..20 {
            wrong.push(
                app.client
                    .get(&url)
                    .basic_auth("admin", Some("guess"))
                    .send()
                    .await
                    .unwrap()
                    .status(),
            );
        }
        let right = app
            .client
            .get(&url)
            .basic_auth("admin", Some(DASHBOARD_PASSWORD))
            .send()
            .await
            .unwrap()
            .status();

        assert!(
            wrong.iter().all(|s| *s == StatusCode::UNAUTHORIZED),
            "{wrong:?}"
        );
        assert_eq!(right, StatusCode::TOO_MANY_REQUESTS);
    }
);

async fn preflight(app: &TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(Method::OPTIONS, format!("{}/kpi/submit", app.base_url))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,x-api-key")
        .send()
        .await
        .unwrap()
}

both_backends!(cors_allows_listed_origins, |backend: Backend| async move {
    let settings = [
        (
            "ALLOWED_ORIGINS",
            "https://admin.example/, https://other.example",
        ),
        ("RATE_LIMIT_SUBMIT", "1/minute"),
    ];
    let app = TestApp::spawn_with(backend, &settings).await;
    let key = app.center_with_key("HVC", "Central").await;

    let mut preflights = Vec::new();
    for _ in 0..3 {
        preflights.push(preflight(&app, "https://admin.example").await);
    }
    let denied = preflight(&app, "https://evil.example").await;
    let allowed = preflights.remove(0);

    assert_eq!(
        header(&allowed, "access-control-allow-origin").as_deref(),
        Some("https://admin.example")
    );
    assert_eq!(
        header(&allowed, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    let methods = header(&allowed, "access-control-allow-methods").unwrap();
    for method in ["GET", "POST", "PUT", "DELETE"] {
        assert!(methods.contains(method), "{methods}");
    }
    let headers = header(&allowed, "access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "content-type",
        "authorization",
        "x-api-key",
        "idempotency-key",
        "x-request-id",
    ] {
        assert!(headers.contains(name), "{headers}");
    }
    assert_eq!(header(&denied, "access-control-allow-origin"), None);

    // Preflights used no quota: the one request of the minute still passes,
    // and the next one's 429 is readable cross-origin.
    let send = || {
        app.client
            .post(format!("{}/kpi/submit", app.base_url))
            .header("Origin", "https://admin.example")
            .header("X-API-Key", &key)
            .json(&batch("HVC"))
            .send()
    };
    let first = send().await.unwrap();
    let refused = send().await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&refused, "access-control-allow-origin").as_deref(),
        Some("https://admin.example")
    );
    let exposed = header(&refused, "access-control-expose-headers")
        .unwrap()
        .to_ascii_lowercase();
    for name in [
        "retry-after",
        "x-request-id",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
    ] {
        assert!(exposed.contains(name), "{exposed}");
    }
});

both_backends!(
    cors_any_origin_without_credentials,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, &[("ALLOWED_ORIGINS", "*")]).await;

        let response = preflight(&app, "https://anywhere.example").await;

        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(header(&response, "access-control-allow-credentials"), None);
    }
);

both_backends!(cors_off_by_default, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let response = preflight(&app, "https://admin.example").await;
    let get = app
        .client
        .get(format!("{}/health", app.base_url))
        .header("Origin", "https://admin.example")
        .send()
        .await
        .unwrap();

    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&get, "access-control-allow-origin"), None);
});

both_backends!(security_headers_everywhere, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let responses = [
        app.client
            .get(format!("{}/health", app.base_url))
            .send()
            .await
            .unwrap(),
        app.client
            .get(format!("{}/no/such/path", app.base_url))
            .send()
            .await
            .unwrap(),
        app.get_as_admin("/").await,
        app.client
            .post(format!("{}/kpi/submit", app.base_url))
            .body("{}")
            .send()
            .await
            .unwrap(),
    ];

    for response in &responses {
        let url = response.url().path().to_owned();
        assert_eq!(
            header(response, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{url}"
        );
        assert_eq!(
            header(response, "referrer-policy").as_deref(),
            Some("no-referrer"),
            "{url}"
        );
        assert_eq!(
            header(response, "x-frame-options").as_deref(),
            Some("DENY"),
            "{url}"
        );
        assert_eq!(
            header(response, "strict-transport-security"),
            None,
            "{url}: HSTS only in production"
        );
        assert_eq!(header(response, "server"), None, "{url}");
        assert!(header(response, "x-request-id").is_some(), "{url}");
    }
    let csp = header(&responses[2], "content-security-policy").unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
});

both_backends!(production_sends_hsts, |backend: Backend| async move {
    let settings = [
        ("ENVIRONMENT", "production"),
        ("DASHBOARD_PASSWORD", "a-strong-dashboard-password"),
    ];
    let app = TestApp::spawn_with(backend, &settings).await;

    let response = app
        .client
        .get(format!("{}/health", app.base_url))
        .send()
        .await
        .unwrap();

    assert!(header(&response, "strict-transport-security")
        .unwrap()
        .starts_with("max-age="));
});

both_backends!(oversized_headers_rejected, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let big = "x".repeat(20 * 1024);
    let response = app
        .client
        .get(format!("{}/health", app.base_url))
        .header("X-Padding", big)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let (_, body) = common::read(response).await;

    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(body["status"], 431);
});

/// Runs the binary with `vars` and returns its exit status and stderr.
fn run_binary(vars: &[(&str, &str)]) -> (std::process::ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_kpi-service"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/kpi.db", dir.path().display()),
        )
        .envs(vars.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn production_refuses_unsafe_settings() {
    let strong = "a-strong-dashboard-password";
    let cases: [(&[(&str, &str)], &str); 5] = [
        (
            &[("ALLOWED_ORIGINS", "*"), ("DASHBOARD_PASSWORD", strong)],
            "ALLOWED_ORIGINS",
        ),
        (&[], "DASHBOARD_PASSWORD"),
        (
            &[("DASHBOARD_PASSWORD", "short-password")],
            "DASHBOARD_PASSWORD",
        ),
        (
            &[("DASHBOARD_PASSWORD", "change-this-secure-password")],
            "DASHBOARD_PASSWORD",
        ),
        (
            &[
                ("DASHBOARD_PASSWORD", strong),
                ("CENTER_API_KEY", "short-master-key"),
            ],
            "CENTER_API_KEY",
        ),
    ];
    for (vars, name) in cases {
        let mut all = vars.to_vec();
        all.push(("ENVIRONMENT", "production"));
        let (status, stderr) = run_binary(&all);
        assert!(!status.success(), "{name}: {stderr}");
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(name), "{name}: {stderr}");
        assert!(stderr.contains("expected"), "{name}: {stderr}");
        assert!(
            !stderr.contains("short-master-key") && !stderr.contains("short-password"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
}

#[test]
fn invalid_limits_stop_start_up() {
    for (name, value) in [
        ("RATE_LIMIT_SUBMIT", "0/minute"),
        ("RATE_LIMIT_EVENTS", "ten/day"),
        ("ALLOWED_ORIGINS", "*,https://a.example"),
    ] {
        let (status, stderr) = run_binary(&[(name, value)]);
        assert_eq!(status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(name), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// Serves the service's middleware around test routes that panic or hang.
async fn serve_faulty_routes() -> String {
    let vars = HashMap::from([("DASHBOARD_PASSWORD", "p"), ("REQUEST_TIMEOUT", "1")]);
    let settings = Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = kpi_service::store::connect(&kpi_service::settings::DatabaseUrl::Sqlite(format!(
        "sqlite://{}/kpi.db",
        dir.path().display()
    )))
    .await
    .unwrap();
    std::mem::forget(dir);
    let state = AppState::new(settings, store);
    let routes = axum::Router::new()
        .route(
            "/panic",
            get(|| async { panic!("boom with secret detail") as &str }),
        )
        .route(
            "/slow",
            get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }),
        )
        .route("/fine", get(|| async { "fine" }));
    let app = kpi_service::layers::wrap(routes, &state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    base
}

#[tokio::test]
async fn panic_becomes_problem_document() {
    let base = serve_faulty_routes().await;
    let client = reqwest::Client::new();

    let (status, body) =
        common::read(client.get(format!("{base}/panic")).send().await.unwrap()).await;
    let after = client
        .get(format!("{base}/fine"))
        .send()
        .await
        .unwrap()
        .status();

    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["type"], "internal_error");
    assert_eq!(body["instance"], "/panic");
    assert!(!body.to_string().contains("secret detail"), "{body}");
    assert_eq!(after, StatusCode::OK, "the service keeps serving");
}

#[tokio::test]
async fn slow_request_times_out_with_503() {
    let base = serve_faulty_routes().await;

    let started = std::time::Instant::now();
    let response = reqwest::Client::new()
        .get(format!("{base}/slow"))
        .send()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let retry_after = header(&response, "retry-after");
    let (status, body) = common::read(response).await;

    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["status"], 503);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
}

both_backends!(
    master_key_not_throttled_when_right,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.center_with_key("HVC", "Central").await;

        for _ in 0..30 {
            let (status, _) = app
                .post("/kpi/submit", Some(MASTER_KEY), &batch("HVC"))
                .await;
            assert_eq!(status, StatusCode::CREATED);
        }
    }
);
