//! Real-time events: `POST /kpi/events`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use chrono::NaiveDate;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{authenticate_write, require_active, ClientIp};
use crate::auth::Caller;
use crate::error::{ApiError, FieldError, ProblemDocument};
use crate::extract::{parse, JsonObject};
use crate::limits::Group;
use crate::model::{EventBody, EventType};
use crate::store::{EventCenter, EventIncrements, EventOutcome, EventWrite, Total};
use crate::SharedState;

const INVALID_DETAIL: &str = "Invalid API key for center";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_EVENT_ID_CHARS: usize = 100;

/// Marks the response to a repeated event id, which counted nothing.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
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
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "The event's id, 1 to 100 visible ASCII characters; wins over `event_id` in the body"),
    ),
    security(("center_api_key" = [])),
    responses(
        (status = 202, description = "Event counted, or a repeat of an event id already accepted, which gets the first response again, marked with `Idempotent-Replayed: true`", body = EventResponse),
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
) -> Result<Response, ApiError> {
    let event: EventBody = parse(&body).map_err(ApiError::Validation)?;
    let event_id = match idempotency_key(&headers)? {
        Some(key) => Some(key),
        None => event.event_id.clone(),
    };
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
    let (center, center_name) = match caller {
        Caller::CenterKey(center) | Caller::Master(center) => {
            (EventCenter::Known(center.id), center.name)
        }
        // The master key may register a center, in the event's own transaction;
        // its name starts as the code.
        Caller::MasterForUnknownCenter => (EventCenter::Register(code.clone()), code.clone()),
    };
    let registers = matches!(center, EventCenter::Register(_));
    let increments = increments(&event);
    let response = EventResponse {
        message: "Event processed successfully",
        event_type: event.event_type,
        center: center_name,
        date: increments.date,
    };
    let response = serde_json::to_string(&response)
        .map_err(|err| ApiError::Internal(format!("cannot write the event response: {err}")))?;
    let write = EventWrite {
        center,
        event_id,
        increments,
        response,
    };
    let event_id = write.event_id.clone();
    let response = write.response.clone();
    match state.events.record(write).await? {
        EventOutcome::Counted => {
            if registers {
                tracing::info!(center_code = ?code, "center registered by an event sent with the master key");
            }
            state.metrics.event_counted(code, event.event_type.as_str());
            tracing::debug!(center_code = ?code, event_type = event.event_type.as_str(), event_id = ?event_id, "event counted");
            Ok(accepted(response, false))
        }
        EventOutcome::Repeated(first_response) => {
            state.metrics.event_repeated(code);
            tracing::info!(center_code = ?code, event_id = ?event_id, "event id already accepted; returned the first response and counted nothing");
            Ok(accepted(first_response, true))
        }
    }
}

/// Reads the `Idempotency-Key` header, which must hold 1 to 100 visible
/// ASCII characters when present.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let invalid = |msg: &str, kind: &str| {
        let loc = vec![Value::from("header"), Value::from("Idempotency-Key")];
        ApiError::Validation(vec![FieldError::new(loc, msg, kind)])
    };
    // `to_str` also lets spaces and tabs through, which are easy to lose
    // when a client copies or logs the key.
    let text = value
        .to_str()
        .ok()
        .filter(|text| text.bytes().all(|byte| byte.is_ascii_graphic()))
        .ok_or_else(|| {
            invalid(
                "must hold visible ASCII characters only",
                "string_pattern_mismatch",
            )
        })?;
    match text.chars().count() {
        0 => Err(invalid(
            "must have at least 1 character",
            "string_too_short",
        )),
        1..=MAX_EVENT_ID_CHARS => Ok(Some(text.to_owned())),
        _ => Err(invalid(
            "must have at most 100 characters",
            "string_too_long",
        )),
    }
}

/// Builds the 202 response with the event's JSON body, and marks a repeat with a header.
fn accepted(body: String, repeated: bool) -> Response {
    let mut response = (
        StatusCode::ACCEPTED,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    if repeated {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
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
