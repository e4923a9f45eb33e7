//! Real-time events: `POST /kpi/events`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use chrono::NaiveDate;
use serde::Serialize;
use utoipa::ToSchema;

use super::{authenticate_write, require_active, ClientIp};
use crate::auth::Caller;
use crate::error::{ApiError, ProblemDocument};
use crate::extract::{parse, JsonObject};
use crate::limits::Group;
use crate::model::{EventBody, EventType};
use crate::store::{EventCenter, EventIncrements, Total};
use crate::SharedState;

const INVALID_DETAIL: &str = "Invalid API key for center";
const INACTIVE_DETAIL: &str = "Invalid center code or API key";

pub fn router() -> Router<SharedState> {
    Router::new().route("/kpi/events", post(record_event))
}

/// The response of `POST /kpi/events`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventResponse {
    #[schema(example = "Event processed successfully")]
    message: &'static str,
    event_type: EventType,
    /// The center's name.
    center: String,
    /// The day the event counted on.
    date: NaiveDate,
}

/// Counts one real-time event on the day of its timestamp, in the
/// timestamp's own offset. The master key may send events for a center that
/// does not exist yet, which registers it.
#[utoipa::path(
    post,
    path = "/kpi/events",
    tag = "write",
    request_body = EventBody,
    security(("center_api_key" = [])),
    responses(
        (status = 202, description = "Event counted", body = EventResponse),
        (status = 401, description = "Missing, invalid or expired API key, or an inactive center", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 413, description = "Body larger than 1 MiB", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or an unknown event type", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Events rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn record_event(
    State(state): State<SharedState>,
    ClientIp(client_ip): ClientIp,
    headers: HeaderMap,
    JsonObject(body): JsonObject,
) -> Result<(StatusCode, Json<EventResponse>), ApiError> {
    let event: EventBody = parse(&body).map_err(ApiError::Validation)?;
    let code = &event.center_code;
    let caller = authenticate_write(
        &state,
        &headers,
        event.api_key.as_deref(),
        code,
        client_ip,
        Group::Events,
        INVALID_DETAIL,
    )
    .await?;
    require_active(&caller, client_ip, INACTIVE_DETAIL)?;
    let (target, center_name) = match caller {
        Caller::CenterKey(center) | Caller::Master(center) => {
            (EventCenter::Known(center.id), center.name)
        }
        // The master key may register a center, in the event's own transaction;
        // its name starts as the code.
        Caller::MasterForUnknownCenter => (EventCenter::Register(code.clone()), code.clone()),
    };
    let registers = matches!(target, EventCenter::Register(_));
    let increments = increments(&event);
    let store = state.store.clone();
    let counted = increments.clone();
    super::complete(async move { store.record_event(&target, &counted).await }).await?;
    if registers {
        tracing::info!(center_code = ?code, "center registered by an event sent with the master key");
    }
    state.metrics.event_counted(code, event.event_type.as_str());
    tracing::debug!(center_code = ?code, event_type = event.event_type.as_str(), "event counted");
    let response = EventResponse {
        message: "Event processed successfully",
        event_type: event.event_type,
        center: center_name,
        date: increments.date,
    };
    Ok((StatusCode::ACCEPTED, Json(response)))
}

/// Computes what an event adds to its day, the timestamp's own calendar date.
fn increments(event: &EventBody) -> EventIncrements {
    let data = &event.data;
    let (total, counts_details, counts_tests) = match event.event_type {
        EventType::OrderCreated => (Total::Orders, true, true),
        EventType::ResultCreated => (Total::Results, false, false),
        EventType::PetCreated => (Total::Pets, true, false),
        EventType::OwnerCreated => (Total::Owners, false, false),
    };
    let mut tests: Vec<(String, i32)> = Vec::new();
    if counts_tests {
        let mut positions: HashMap<&str, usize> = HashMap::new();
        for code in &data.tests {
            match positions.get(code.0.as_str()) {
                Some(&position) => tests[position].1 += 1,
                None => {
                    positions.insert(&code.0, tests.len());
                    tests.push((code.0.clone(), 1));
                }
            }
        }
    }
    let species = data.species.clone().filter(|_| counts_details);
    let breed = match (&data.breed, &data.species) {
        (Some(breed), Some(species)) if counts_details => Some((breed.clone(), species.clone())),
        _ => None,
    };
    EventIncrements {
        date: event.day(),
        total,
        tests,
        species,
        breed,
    }
}
