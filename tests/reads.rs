//! The read side: the JSON read API, dashboard credentials, the HTML
//! dashboard, the CSV export and the health probes.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{day, Backend, TestApp, DASHBOARD_PASSWORD, MASTER_KEY};
use kpi_service::settings::Settings;
use kpi_service::AppState;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Submits a day's totals for a center.
async fn seed_day(app: &TestApp, key: &str, code: &str, date: &str, orders: i64) {
    let body = json!({"center_code": code, "date": date, "total_orders": orders, "total_results": orders - 1,
                      "total_pets": 5, "total_owners": 4,
                      "tests": [{"code": "GLU", "name": "Glucosa", "count": orders}, {"code": "T4", "count": 2}],
                      "species": [{"species": "Canino", "count": 3}, {"species": "Felino", "count": 1}],
                      "breeds": [{"breed": "Labrador", "species": "Canino", "count": 2}]});
    let (status, body) = app.post("/kpi/submit", Some(key), &body).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
}

const READ_PATHS: [&str; 5] = [
    "/kpi/centers",
    "/kpi/centers/HVC/metrics",
    "/kpi/stats/summary",
    "/",
    "/export.csv",
];

both_backends!(reads_require_credentials, |backend: Backend| async move {
    let encode = |raw: &[u8]| format!("Basic {}", STANDARD.encode(raw));
    let bad_headers = [
        ("no header", None),
        ("wrong password", Some(encode(b"admin:wrong"))),
        (
            "wrong user",
            Some(encode(format!("root:{DASHBOARD_PASSWORD}").as_bytes())),
        ),
        (
            "password cut at its colon",
            Some(encode(b"admin:test-dashboard")),
        ),
        ("no colon", Some(encode(b"admin"))),
        ("not base64", Some("Basic %%%".to_owned())),
        ("not UTF-8", Some(encode(&[0xff, 0xfe, b':', b'a']))),
        (
            "bearer scheme",
            Some(format!(
                "Bearer {}",
                STANDARD.encode(format!("admin:{DASHBOARD_PASSWORD}"))
            )),
        ),
        ("center key", Some(MASTER_KEY.to_owned())),
    ];

    for path in READ_PATHS {
        // A fresh service per path, so that the failures stay under the
        // failed-authentication throttle (20 a minute per address).
        let app = TestApp::spawn(backend).await;
        app.center_with_key("HVC", "Central").await;
        for (case, header) in &bad_headers {
            let mut request = app.client.get(format!("{}{path}", app.base_url));
            if let Some(header) = header {
                request = request.header("Authorization", header);
            }
            let response = request.send().await.unwrap();
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().unwrap().to_owned());
            let (status, body) = common::read(response).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path} {case}");
            assert_eq!(body["type"], "authentication_error", "{path} {case}");
            assert!(
                challenge.unwrap_or_default().starts_with("Basic realm=\""),
                "{path} {case}"
            );
        }
    }
});

both_backends!(
    credentials_scheme_is_case_insensitive,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let header = format!(
            "bAsIc {}",
            STANDARD.encode(format!("admin:{DASHBOARD_PASSWORD}"))
        );

        let response = app
            .client
            .get(format!("{}/kpi/centers", app.base_url))
            .header("Authorization", header)
            .send()
            .await
            .unwrap();

        assert_eq!(response.status(), StatusCode::OK);
    }
);

both_backends!(
    centers_list_ordered_by_code,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.put(
            "/kpi/centers/VSP",
            Some(MASTER_KEY),
            &json!({"name": "San Pedro", "city": "SPM", "country": "RD"}),
        )
        .await;
        let key = app.center_with_key("CVN", "Norte").await;
        app.put(
            "/kpi/centers/CVN",
            Some(MASTER_KEY),
            &json!({"is_active": false}),
        )
        .await;
        app.store.set_active("CVN", true).await.unwrap();
        app.store.set_active("CVN", false).await.unwrap();

        let (status, body) = app.admin_json("/kpi/centers").await;

        assert_eq!(status, StatusCode::OK);
        let centers = body.as_array().unwrap();
        let codes: Vec<&str> = centers
            .iter()
            .map(|c| c["code"].as_str().unwrap())
            .collect();
        assert_eq!(codes, ["CVN", "VSP"]);
        let vsp = &centers[1];
        assert_eq!(vsp["name"], "San Pedro");
        assert_eq!(vsp["city"], "SPM");
        assert_eq!(vsp["country"], "RD");
        assert_eq!(vsp["is_active"], 1);
        assert_eq!(vsp["last_sync_at"], Value::Null);
        assert!(
            vsp["registered_at"].as_str().unwrap().ends_with('Z'),
            "{vsp}"
        );
        assert!(vsp["id"].is_i64());
        assert_eq!(centers[0]["is_active"], 0);
        let fields: Vec<&String> = vsp.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 8, "{fields:?}");
        assert!(!body.to_string().contains(&key), "no key in the listing");
        assert!(
            !body.to_string().contains("api_key"),
            "no key field in the listing"
        );
    }
);

both_backends!(metrics_window_edges, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    for (offset, orders) in [(0, 10), (-1, 11), (-7, 17), (-8, 18)] {
        seed_day(&app, &key, "HVC", &day(offset), orders).await;
    }

    let (_, today_only) = app.admin_json("/kpi/centers/HVC/metrics?days=0").await;
    let (_, week) = app.admin_json("/kpi/centers/HVC/metrics?days=7").await;
    let (_, default) = app.admin_json("/kpi/centers/HVC/metrics").await;

    let dates = |body: &Value| {
        body.as_array()
            .unwrap()
            .iter()
            .map(|r| r["date"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(dates(&today_only), [day(0)]);
    assert_eq!(
        dates(&week),
        [day(0), day(-1), day(-7)],
        "newest first, today minus 7 included"
    );
    assert_eq!(dates(&default).len(), 4);
    let row = &today_only[0];
    assert_eq!(row["total_orders"], 10);
    assert_eq!(row["total_results"], 9);
    assert_eq!(row["total_pets"], 5);
    assert_eq!(row["total_owners"], 4);
    assert!(row["created_at"].as_str().unwrap().ends_with('Z'));
    assert!(row["center_id"].is_i64());
    assert!(row["id"].is_i64());
});

both_backends!(metrics_unknown_center_404, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let (status, body) = app.admin_json("/kpi/centers/NOPE/metrics").await;

    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["detail"], "Center not found");
});

both_backends!(days_outside_range_422, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    app.center_with_key("HVC", "Central").await;

    for days in ["-1", "3651", "abc", "1.5", "99999999999999999999", ""] {
        for path in [
            "/kpi/centers/HVC/metrics",
            "/kpi/stats/summary",
            "/",
            "/export.csv",
        ] {
            let (status, body) = app.admin_json(&format!("{path}?days={days}")).await;
            assert_eq!(
                status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{path} days={days}"
            );
            assert_eq!(
                body["errors"][0]["loc"],
                json!(["query", "days"]),
                "{path} days={days}"
            );
        }
    }
    let (edge, _) = app.admin_json("/kpi/stats/summary?days=3650").await;
    assert_eq!(edge, StatusCode::OK);
});

both_backends!(summary_totals_window, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let hvc = app.center_with_key("HVC", "Central").await;
    let cvn = app.center_with_key("CVN", "Norte").await;
    app.center_with_key("VSP", "San Pedro").await;
    app.store.set_active("VSP", false).await.unwrap();
    seed_day(&app, &hvc, "HVC", &day(0), 10).await;
    seed_day(&app, &cvn, "CVN", &day(-2), 20).await;
    seed_day(&app, &cvn, "CVN", &day(-40), 99).await;

    let (status, body) = app.admin_json("/kpi/stats/summary?days=30").await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({"total_centers": 3, "active_centers": 2,
               "date_range": {"from": day(-30), "to": day(0), "days": 30},
               "total_orders": 30, "total_results": 28, "total_pets": 10})
    );
});

both_backends!(
    dashboard_shows_seeded_numbers,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let hvc = app
            .center_with_key("HVC", "Hospital Veterinario Central")
            .await;
        let cvn = app.center_with_key("CVN", "Clínica <Norte>").await;
        seed_day(&app, &hvc, "HVC", &day(0), 1200).await;
        seed_day(&app, &cvn, "CVN", &day(-1), 34).await;

        let response = app.get_as_admin("/?days=7").await;
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let html = response.text().await.unwrap();

        assert!(content_type.starts_with("text/html"));
        assert!(csp.contains("default-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(html.contains("1\u{202f}234"), "total orders 1200 + 34");
        assert!(html.contains("617"), "average orders per center, rounded");
        assert!(html.contains("Hospital Veterinario Central"));
        assert!(
            html.contains("Clínica &#60;Norte&#62;") || html.contains("Clínica &lt;Norte&gt;"),
            "names are escaped"
        );
        assert!(html.contains("Glucosa"), "top tests");
        assert!(html.contains("Labrador"), "top breeds");
        assert!(html.contains("Felino"), "species");
        assert!(html.contains("<polyline class=\"orders\""), "trend chart");
        assert!(html.contains("href=\"/?days=90\""), "period switch");
        assert!(!html.contains("No centers yet"));
        assert!(
            !html.contains("http://") && !html.contains("https://cdn"),
            "no third-party asset"
        );
    }
);

both_backends!(dashboard_empty_state, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let html = app.get_as_admin("/").await.text().await.unwrap();

    assert!(html.contains("No centers yet"));
    assert!(html.contains("centers add"));
    assert!(html.contains("/kpi/submit"));
});

both_backends!(silent_center_is_marked, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let key = app.center_with_key("HVC", "Central").await;
    app.center_with_key("CVN", "Norte").await;
    seed_day(&app, &key, "HVC", &day(0), 3).await;

    let html = app.get_as_admin("/").await.text().await.unwrap();

    assert_eq!(
        html.matches("class=\"silent\"").count(),
        1,
        "only the center that never synced"
    );
    assert!(html.contains("just now") || html.contains("min ago"));
});

both_backends!(stylesheet_is_served, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let response = app
        .client
        .get(format!("{}/assets/dashboard.css", app.base_url))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
});

both_backends!(csv_export_rows, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let cvn = app
        .center_with_key("CVN", "Clínica Veterinaria del Norte, \"CVN\"")
        .await;
    seed_day(&app, &cvn, "CVN", &day(-1), 20).await;
    seed_day(&app, &cvn, "CVN", &day(0), 21).await;
    seed_day(&app, &cvn, "CVN", &day(-10), 99).await;

    let response = app.get_as_admin("/export.csv?days=7").await;
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();

    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert!(disposition.starts_with("attachment"));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "center_code,center_name,date,total_orders,total_results,total_pets,total_owners"
    );
    assert_eq!(
        lines[1],
        format!(
            "CVN,\"Clínica Veterinaria del Norte, \"\"CVN\"\"\",{},20,19,5,4",
            day(-1)
        )
    );
    assert_eq!(
        lines[2],
        format!(
            "CVN,\"Clínica Veterinaria del Norte, \"\"CVN\"\"\",{},21,20,5,4",
            day(0)
        )
    );
    assert_eq!(lines.len(), 3);
});

both_backends!(health_and_ready, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;

    let (health_status, health) = app.send(reqwest::Method::GET, "/health", None, None).await;
    let (ready_status, ready) = app
        .send(reqwest::Method::GET, "/health/ready", None, None)
        .await;
    let (_, info) = app
        .send(reqwest::Method::GET, "/api/docs-info", None, None)
        .await;

    assert_eq!(health_status, StatusCode::OK);
    assert_eq!(
        health,
        json!({"status": "ok", "service": "PetHospital KPI Service", "version": env!("CARGO_PKG_VERSION"),
               "environment": "development"})
    );
    assert_eq!(ready_status, StatusCode::OK);
    assert_eq!(ready["status"], "ready");
    assert_eq!(ready["checks"], json!({"database": "ok"}));
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["openapi_url"], "/openapi.json");
    assert!(info["endpoints"].as_object().unwrap().len() >= 10);
});

/// Readiness against a database that accepts connections and never responds:
/// 503 within about a second, never a hanging probe.
#[test]
fn ready_503_when_database_hangs() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_url = format!("postgres://postgres@{}/kpi", silent.local_addr().unwrap());
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = silent.accept().await {
                sockets.push(socket);
            }
        });
        let vars = HashMap::from([("DASHBOARD_PASSWORD", "p")]);
        let settings = Settings::from_lookup(|name| vars.get(name).map(|v| v.to_string())).unwrap();
        let store = kpi_service::store::connect_postgres_lazy(&silent_url).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/health/ready", listener.local_addr().unwrap());
        tokio::spawn(kpi_service::serve(
            listener,
            AppState::new(settings, store),
            std::future::pending(),
        ));

        let started = Instant::now();
        let response = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let elapsed = started.elapsed();
        let (status, body) = common::read(response).await;

        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["checks"]["database"], "error");
        assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
        held.abort();
    });
}

both_backends!(
    csv_export_neutralizes_formulas,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let key = app.center_with_key("CSV", "Central").await;
        app.put(
            "/kpi/centers/CSV",
            Some(&key),
            &json!({"name": "=cmd|' /C calc'!A0"}),
        )
        .await;
        seed_day(&app, &key, "CSV", &day(0), 3).await;

        let text = app
            .get_as_admin("/export.csv?days=1")
            .await
            .text()
            .await
            .unwrap();

        let row = text.lines().nth(1).unwrap();
        assert!(row.starts_with("CSV,'=cmd|"), "{row}");
    }
);
