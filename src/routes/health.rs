//! Liveness: responds without touching the database.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new().route("/health", get(health))
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
