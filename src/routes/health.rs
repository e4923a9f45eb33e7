//! Probes and service information: `GET /health` (liveness, no database),
//! `GET /health/ready` (the database answers within a second) and
//! `GET /api/docs-info`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::SharedState;

/// How long readiness waits for the database. A probe must get an answer
/// quickly even when the database hangs, so this is far below the pool's
/// acquire timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/api/docs-info", get(docs_info))
}

async fn health(State(state): State<SharedState>) -> Json<Value> {
    let settings = &state.settings;
    Json(json!({
        "status": "ok",
        "service": settings.app_title,
        "version": settings.app_version,
        "environment": settings.environment.as_str(),
    }))
}

async fn ready(State(state): State<SharedState>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(err.to_string()),
        Err(_) => Err(format!("no answer within {} ms", READY_TIMEOUT.as_millis())),
    };
    let settings = &state.settings;
    let (status, ready, database) = match database {
        Ok(()) => (StatusCode::OK, "ready", "ok"),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed: database unavailable");
            (StatusCode::SERVICE_UNAVAILABLE, "not_ready", "error")
        }
    };
    let body = json!({
        "status": ready,
        "service": settings.app_title,
        "version": settings.app_version,
        "checks": {"database": database},
    });
    (status, Json(body))
}

async fn docs_info(State(state): State<SharedState>) -> Json<Value> {
    let settings = &state.settings;
    let mut body = json!({
        "service": settings.app_title,
        "version": settings.app_version,
        "environment": settings.environment.as_str(),
        "docs_enabled": settings.enable_docs,
        "endpoints": {
            "submit": "POST /kpi/submit",
            "submit_enhanced": "POST /kpi/submit/enhanced",
            "events": "POST /kpi/events",
            "update_center": "PUT /kpi/centers/{code}",
            "delete_center_data": "DELETE /kpi/centers/{code}/data",
            "centers": "GET /kpi/centers",
            "center_metrics": "GET /kpi/centers/{code}/metrics?days=30",
            "summary": "GET /kpi/stats/summary?days=30",
            "dashboard": "GET /?days=30",
            "export": "GET /export.csv?days=30",
            "health": "GET /health",
            "ready": "GET /health/ready",
        },
    });
    if settings.enable_docs {
        body["openapi_url"] = json!("/openapi.json");
        body["docs_url"] = json!("/docs");
    }
    Json(body)
}
