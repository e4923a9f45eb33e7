//! Probes and service information: `GET /health` (liveness, no database),
//! `GET /health/ready` (the database responds within a second, and with
//! `REDIS_URL` Redis is checked too) and `GET /api/docs-info`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::collections::BTreeMap;

use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::ProblemDocument;
use crate::openapi::{DOCS_PATH, OPENAPI_PATH};
use crate::SharedState;

/// How long readiness waits for the database. A probe must get a response
/// quickly even when the database hangs, so this is far below the pool's
/// acquire timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// How long readiness waits for Redis.
const REDIS_READY_TIMEOUT: Duration = Duration::from_millis(500);

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/api/docs-info", get(docs_info))
}

/// The endpoints that `GET /api/docs-info` lists, by name.
const ENDPOINTS: [(&str, &str); 12] = [
    ("submit", "POST /kpi/submit"),
    ("submit_enhanced", "POST /kpi/submit/enhanced"),
    ("events", "POST /kpi/events"),
    ("update_center", "PUT /kpi/centers/{code}"),
    ("delete_center_data", "DELETE /kpi/centers/{code}/data"),
    ("centers", "GET /kpi/centers"),
    ("center_metrics", "GET /kpi/centers/{code}/metrics?days=30"),
    ("summary", "GET /kpi/stats/summary?days=30"),
    ("dashboard", "GET /?days=30"),
    ("export", "GET /export.csv?days=30"),
    ("health", "GET /health"),
    ("ready", "GET /health/ready"),
];

/// The response of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    /// The `APP_TITLE` setting.
    service: String,
    /// The `APP_VERSION` setting.
    version: String,
    #[schema(example = "development")]
    environment: &'static str,
}

/// The response of `GET /health/ready`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    status: ReadinessStatus,
    service: String,
    version: String,
    checks: ReadinessChecks,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadinessStatus {
    Ready,
    NotReady,
}

/// The result of each dependency check.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessChecks {
    database: CheckStatus,
    /// Present when `REDIS_URL` is set. `error` leaves the service ready,
    /// because the rate limits then fall back to each replica's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(required = false, nullable = false)]
    redis: Option<CheckStatus>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Ok,
    Error,
}

/// The response of `GET /api/docs-info`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DocsInfo {
    service: String,
    version: String,
    #[schema(example = "development")]
    environment: &'static str,
    docs_enabled: bool,
    /// Method and path of each endpoint, by name.
    #[schema(example = json!({"submit": "POST /kpi/submit", "health": "GET /health"}))]
    endpoints: BTreeMap<&'static str, &'static str>,
    /// Present when the documentation is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, example = "/openapi.json")]
    openapi_url: Option<&'static str>,
    /// Present when the documentation is enabled.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String, required = false, example = "/docs")]
    docs_url: Option<&'static str>,
}

/// Reports that the process is up, without touching the database.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses(
        (status = 200, description = "The service is up", body = Health),
        (status = 429, description = "Health rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn health(State(state): State<SharedState>) -> Json<Health> {
    let settings = &state.settings;
    Json(Health {
        status: "ok",
        service: settings.app_title.clone(),
        version: settings.app_version.clone(),
        environment: settings.environment.as_str(),
    })
}

/// Reports whether the database responds within a second, and whether Redis
/// responds when it is configured.
#[utoipa::path(
    get,
    path = "/health/ready",
    tag = "health",
    responses(
        (status = 200, description = "The database responded; a Redis failure shows only in `checks.redis`", body = Readiness),
        (status = 429, description = "Health rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "The database query failed or timed out", body = Readiness),
    )
)]
async fn ready(State(state): State<SharedState>) -> (StatusCode, Json<Readiness>) {
    let database = async {
        match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(_) => Err(format!(
                "no response within {} ms",
                READY_TIMEOUT.as_millis()
            )),
        }
    };
    // A failed Redis check is logged by the limiter, at most once a minute.
    let redis = state.limits.redis_reachable(REDIS_READY_TIMEOUT);
    let (database, redis) = tokio::join!(database, redis);
    let redis = redis.map(|reachable| {
        if reachable {
            CheckStatus::Ok
        } else {
            CheckStatus::Error
        }
    });
    let settings = &state.settings;
    let (status, ready, database) = match database {
        Ok(()) => (StatusCode::OK, ReadinessStatus::Ready, CheckStatus::Ok),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                ReadinessStatus::NotReady,
                CheckStatus::Error,
            )
        }
    };
    let body = Readiness {
        status: ready,
        service: settings.app_title.clone(),
        version: settings.app_version.clone(),
        checks: ReadinessChecks { database, redis },
    };
    (status, Json(body))
}

/// Describes the service: version, environment, the endpoints, and where the
/// documentation is when it is enabled.
#[utoipa::path(
    get,
    path = "/api/docs-info",
    tag = "health",
    responses(
        (status = 200, description = "Service information", body = DocsInfo),
        (status = 429, description = "Health rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn docs_info(State(state): State<SharedState>) -> Json<DocsInfo> {
    let settings = &state.settings;
    let (openapi_url, docs_url) = if settings.enable_docs {
        (Some(OPENAPI_PATH), Some(DOCS_PATH))
    } else {
        (None, None)
    };
    Json(DocsInfo {
        service: settings.app_title.clone(),
        version: settings.app_version.clone(),
        environment: settings.environment.as_str(),
        docs_enabled: settings.enable_docs,
        endpoints: ENDPOINTS.into_iter().collect(),
        openapi_url,
        docs_url,
    })
}
