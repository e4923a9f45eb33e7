//! API documentation: the OpenAPI document at `/openapi.json`, the Swagger UI
//! page at `/docs` with its assets served by the service itself, and both
//! gone with `ENABLE_DOCS=false`.
//!
//! The documentation does not touch the database, so these tests run on
//! SQLite only.

mod common;

use std::collections::BTreeSet;

use common::{Backend, TestApp};
use reqwest::{StatusCode, Url};
use serde_json::{json, Value};

/// Every route of the service with its method, as the document names them.
const ROUTES: [(&str, &str); 13] = [
    ("post", "/kpi/submit"),
    ("post", "/kpi/submit/enhanced"),
    ("post", "/kpi/events"),
    ("put", "/kpi/centers/{code}"),
    ("delete", "/kpi/centers/{code}/data"),
    ("get", "/kpi/centers"),
    ("get", "/kpi/centers/{code}/metrics"),
    ("get", "/kpi/stats/summary"),
    ("get", "/"),
    ("get", "/export.csv"),
    ("get", "/health"),
    ("get", "/health/ready"),
    ("get", "/api/docs-info"),
];

const WRITE_ROUTES: [(&str, &str); 5] = [
    ("post", "/kpi/submit"),
    ("post", "/kpi/submit/enhanced"),
    ("post", "/kpi/events"),
    ("put", "/kpi/centers/{code}"),
    ("delete", "/kpi/centers/{code}/data"),
];

const DASHBOARD_ROUTES: [&str; 5] = [
    "/kpi/centers",
    "/kpi/centers/{code}/metrics",
    "/kpi/stats/summary",
    "/",
    "/export.csv",
];

const PROBLEM_REF: &str = "#/components/schemas/Problem";

fn sqlite<F, Fut>(body: F)
where
    F: FnOnce(Backend) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    common::run(Backend::Sqlite, body);
}

/// Fetches and parses the OpenAPI document.
async fn openapi_document(app: &TestApp) -> Value {
    let response = app
        .client
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let text = response.text().await.unwrap();
    serde_json::from_str(&text).expect("the document is JSON")
}

/// Returns the operation object of a route.
fn operation<'a>(document: &'a Value, method: &str, path: &str) -> &'a Value {
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "{method} {path} is not documented");
    operation
}

/// Returns the values of every `name="..."` attribute in an HTML page.
fn attribute_values(html: &str, name: &str) -> Vec<String> {
    let marker = format!("{name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find(&marker) {
        let after = &rest[start + marker.len()..];
        let end = after.find('"').expect("attribute value is closed");
        values.push(after[..end].to_owned());
        rest = &after[end..];
    }
    values
}

#[test]
fn document_lists_every_route() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;

        let version = document["openapi"].as_str().unwrap();
        assert!(version.starts_with("3."), "{version}");
        assert_eq!(document["info"]["title"], "PetHospital KPI Service");
        assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));
        let documented: BTreeSet<(String, String)> = document["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| {
                item.as_object()
                    .unwrap()
                    .keys()
                    .map(move |method| (method.clone(), path.clone()))
            })
            .collect();
        let expected: BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(method, path)| (method.to_string(), path.to_string()))
            .collect();
        assert_eq!(documented, expected);
    });
}

#[test]
fn document_has_both_security_schemes() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;
        let schemes = &document["components"]["securitySchemes"];

        assert_eq!(schemes["center_api_key"]["type"], "apiKey");
        assert_eq!(schemes["center_api_key"]["in"], "header");
        assert_eq!(schemes["center_api_key"]["name"], "X-API-Key");
        assert_eq!(schemes["dashboard_credentials"]["type"], "http");
        assert_eq!(schemes["dashboard_credentials"]["scheme"], "basic");
        for (method, path) in WRITE_ROUTES {
            assert_eq!(
                operation(&document, method, path)["security"],
                json!([{"center_api_key": []}]),
                "{method} {path}"
            );
        }
        for path in DASHBOARD_ROUTES {
            assert_eq!(
                operation(&document, "get", path)["security"],
                json!([{"dashboard_credentials": []}]),
                "GET {path}"
            );
        }
        for path in ["/health", "/health/ready", "/api/docs-info"] {
            assert!(
                operation(&document, "get", path)["security"].is_null(),
                "GET {path} needs no credentials"
            );
        }
    });
}

#[test]
fn problem_schema_matches_error_bodies() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;
        let schemas = &document["components"]["schemas"];
        let problem = &schemas["Problem"];
        let properties: BTreeSet<&str> = problem["properties"]
            .as_object()
            .expect("Problem has properties")
            .keys()
            .map(String::as_str)
            .collect();

        let expected = BTreeSet::from([
            "type",
            "title",
            "status",
            "detail",
            "instance",
            "request_id",
            "errors",
        ]);
        assert_eq!(properties, expected);
        let required: BTreeSet<&str> = problem["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        let always = BTreeSet::from(["type", "title", "status", "detail", "instance"]);
        assert_eq!(required, always);
        assert_eq!(problem["properties"]["status"]["type"], "integer");
        let field_error: BTreeSet<&str> = schemas["FieldError"]["properties"]
            .as_object()
            .expect("FieldError has properties")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(field_error, BTreeSet::from(["loc", "msg", "type"]));

        // A real validation error has exactly the documented fields.
        let (status, body) = app
            .post("/kpi/submit", None, &json!({"center_code": ""}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let sent: BTreeSet<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(sent, expected);
        let error_fields: BTreeSet<&str> = body["errors"][0]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(error_fields, field_error);
    });
}

#[test]
fn error_responses_use_problem_schema() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;

        for (method, path) in ROUTES {
            let responses = operation(&document, method, path)["responses"]
                .as_object()
                .unwrap();
            for (status, response) in responses {
                if status.starts_with('2') || (path == "/health/ready" && status == "503") {
                    continue;
                }
                assert_eq!(
                    response["content"]["application/problem+json"]["schema"]["$ref"], PROBLEM_REF,
                    "{method} {path} {status}"
                );
            }
        }
        let statuses = |method: &str, path: &str| -> BTreeSet<String> {
            operation(&document, method, path)["responses"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        };
        let submit = statuses("post", "/kpi/submit");
        for status in ["201", "401", "413", "415", "422", "429", "503"] {
            assert!(submit.contains(status), "POST /kpi/submit lacks {status}");
        }
        let delete = statuses("delete", "/kpi/centers/{code}/data");
        for status in ["200", "401", "404", "422"] {
            assert!(delete.contains(status), "DELETE lacks {status}");
        }
        let metrics = statuses("get", "/kpi/centers/{code}/metrics");
        for status in ["200", "401", "404", "422", "429", "503"] {
            assert!(metrics.contains(status), "GET metrics lacks {status}");
        }
        let ready = statuses("get", "/health/ready");
        assert!(ready.contains("200"), "GET /health/ready lacks 200");
        assert!(ready.contains("503"), "GET /health/ready lacks 503");
    });
}

#[test]
fn request_and_success_bodies_are_described() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;
        let schemas = &document["components"]["schemas"];
        let request_body = |method: &str, path: &str| {
            operation(&document, method, path)["requestBody"]["content"]["application/json"]
                ["schema"]["$ref"]
                .clone()
        };

        assert_eq!(
            request_body("post", "/kpi/submit"),
            "#/components/schemas/SubmitBody"
        );
        assert_eq!(
            request_body("post", "/kpi/submit/enhanced"),
            "#/components/schemas/EnhancedSubmitBody"
        );
        assert_eq!(
            request_body("post", "/kpi/events"),
            "#/components/schemas/EventBody"
        );
        assert_eq!(
            request_body("put", "/kpi/centers/{code}"),
            "#/components/schemas/CenterUpdate"
        );
        let submit = &schemas["SubmitBody"];
        assert_eq!(submit["properties"]["total_orders"]["type"], "integer");
        assert_eq!(submit["properties"]["total_orders"]["minimum"], 0);
        assert_eq!(submit["properties"]["date"]["format"], "date");
        assert_eq!(submit["properties"]["api_key"]["deprecated"], true);
        assert_eq!(
            schemas["TestCount"]["properties"]["count"]["type"],
            "integer"
        );
        let description = submit["description"].as_str().unwrap_or_default();
        assert!(description.contains("digit strings"), "{description}");
        let required: Vec<&str> = schemas["EventBody"]["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|name| name.as_str().unwrap())
            .collect();
        for field in ["center_code", "event_type", "timestamp", "data"] {
            assert!(required.contains(&field), "EventBody: {field} not required");
        }
        assert_eq!(
            schemas["EventType"]["enum"],
            json!([
                "order_created",
                "result_created",
                "pet_created",
                "owner_created"
            ])
        );

        let success = [
            ("post", "/kpi/submit", "201", "application/json"),
            ("post", "/kpi/submit/enhanced", "201", "application/json"),
            ("post", "/kpi/events", "202", "application/json"),
            ("put", "/kpi/centers/{code}", "200", "application/json"),
            (
                "delete",
                "/kpi/centers/{code}/data",
                "200",
                "application/json",
            ),
            ("get", "/kpi/centers", "200", "application/json"),
            (
                "get",
                "/kpi/centers/{code}/metrics",
                "200",
                "application/json",
            ),
            ("get", "/kpi/stats/summary", "200", "application/json"),
            ("get", "/", "200", "text/html"),
            ("get", "/export.csv", "200", "text/csv"),
            ("get", "/health", "200", "application/json"),
            ("get", "/health/ready", "200", "application/json"),
            ("get", "/api/docs-info", "200", "application/json"),
        ];
        for (method, path, status, content_type) in success {
            let schema = &operation(&document, method, path)["responses"][status]["content"]
                [content_type]["schema"];
            assert!(
                schema.is_object(),
                "{method} {path} {status} {content_type}"
            );
        }
        let summary = &schemas["SummaryView"]["properties"];
        assert!(summary["date_range"].is_object());
        assert_eq!(
            operation(&document, "get", "/kpi/centers")["responses"]["200"]["content"]
                ["application/json"]["schema"]["items"]["$ref"],
            "#/components/schemas/CenterView"
        );
    });
}

#[test]
fn days_parameter_is_described() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let document = openapi_document(&app).await;

        for path in [
            "/kpi/centers/{code}/metrics",
            "/kpi/stats/summary",
            "/",
            "/export.csv",
        ] {
            let parameters = operation(&document, "get", path)["parameters"]
                .as_array()
                .unwrap_or_else(|| panic!("GET {path} has no parameters"));
            let days = parameters
                .iter()
                .find(|parameter| parameter["name"] == "days")
                .unwrap_or_else(|| panic!("GET {path} has no days parameter"));
            assert_eq!(days["in"], "query", "{path}");
            assert_eq!(days["required"], false, "{path}");
            let schema = &days["schema"];
            assert!(
                schema["type"] == "integer"
                    || schema["type"]
                        .as_array()
                        .unwrap()
                        .contains(&json!("integer")),
                "{path}: {schema}"
            );
            assert_eq!(schema["minimum"], 0, "{path}");
            assert_eq!(schema["maximum"], 3650, "{path}");
            assert_eq!(schema["default"], 30, "{path}");
        }
        let metrics = operation(&document, "get", "/kpi/centers/{code}/metrics");
        let code = metrics["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|parameter| parameter["name"] == "code")
            .expect("code parameter");
        assert_eq!(code["in"], "path");
        assert_eq!(code["required"], true);
    });
}

#[test]
fn docs_page_loads_only_own_assets() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;

        for path in ["/docs", "/docs/"] {
            let response = app
                .client
                .get(format!("{}{path}", app.base_url))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(response.url().path(), path, "{path} was redirected");
            let policy = response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(policy.contains("script-src 'self'"), "{path}: {policy}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(
                content_type.starts_with("text/html"),
                "{path}: {content_type}"
            );
            let page_url = response.url().clone();
            let html = response.text().await.unwrap();
            let scripts = attribute_values(&html, "src");
            let links = attribute_values(&html, "href");
            assert!(!scripts.is_empty(), "{path}: no script");
            assert!(
                scripts
                    .iter()
                    .any(|src| src.contains("swagger-ui-bundle.js")),
                "{path}: {scripts:?}"
            );

            for reference in scripts.iter().chain(&links) {
                let target = page_url.join(reference).unwrap();
                assert_eq!(
                    target.origin(),
                    page_url.origin(),
                    "{path}: {reference} is on another host"
                );
            }
        }
    });
}

#[test]
fn docs_assets_are_served() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;
        let response = app
            .client
            .get(format!("{}/docs", app.base_url))
            .send()
            .await
            .unwrap();
        let page_url: Url = response.url().clone();
        let html = response.text().await.unwrap();
        let references: Vec<String> = attribute_values(&html, "src")
            .into_iter()
            .chain(
                attribute_values(&html, "href")
                    .into_iter()
                    .filter(|href| href.ends_with(".css")),
            )
            .collect();

        assert!(references.len() >= 4, "{references:?}");
        for reference in &references {
            let url = page_url.join(reference).unwrap();
            let response = app.client.get(url.clone()).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{url}");
            let content_type = response.headers()["content-type"]
                .to_str()
                .unwrap()
                .to_owned();
            let expected = if reference.ends_with(".css") {
                "text/css"
            } else {
                "javascript"
            };
            assert!(content_type.contains(expected), "{url}: {content_type}");
            let body = response.text().await.unwrap();
            assert!(!body.is_empty(), "{url} is empty");
        }

        let initializer = app
            .client
            .get(format!("{}/docs/swagger-initializer.js", app.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(initializer.contains("/openapi.json"), "{initializer}");
        assert!(!initializer.contains("petstore"), "{initializer}");
        assert!(
            initializer.contains("\"validatorUrl\": \"none\""),
            "{initializer}"
        );
        let (status, body) = app
            .send(reqwest::Method::GET, "/docs/no-such-file.js", None, None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["type"], "not_found");
    });
}

#[test]
fn docs_info_points_at_the_docs() {
    sqlite(|backend| async move {
        let app = TestApp::spawn(backend).await;

        let (status, info) = app
            .send(reqwest::Method::GET, "/api/docs-info", None, None)
            .await;

        assert_eq!(status, StatusCode::OK);
        assert_eq!(info["docs_enabled"], true);
        assert_eq!(info["openapi_url"], "/openapi.json");
        assert_eq!(info["docs_url"], "/docs");
        assert_eq!(info["endpoints"]["submit"], "POST /kpi/submit");
        assert_eq!(info["endpoints"].as_object().unwrap().len(), 12);
    });
}

#[test]
fn docs_disabled_are_not_found() {
    sqlite(|backend| async move {
        let app = TestApp::spawn_with(backend, &[("ENABLE_DOCS", "false")]).await;

        for path in [
            "/openapi.json",
            "/docs",
            "/docs/",
            "/docs/index.html",
            "/docs/swagger-ui-bundle.js",
        ] {
            let (status, body) = app.send(reqwest::Method::GET, path, None, None).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
            assert_eq!(body["type"], "not_found", "{path}");
            assert_eq!(body["detail"], "Not Found", "{path}");
        }
        let (status, info) = app
            .send(reqwest::Method::GET, "/api/docs-info", None, None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(info["docs_enabled"], false);
        assert!(info.get("openapi_url").is_none(), "{info}");
        assert!(info.get("docs_url").is_none(), "{info}");
    });
}
