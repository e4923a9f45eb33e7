//! The service's one error type and the problem documents it becomes.
//!
//! Handlers return [`ApiError`]; its response carries a [`Problem`] in the
//! response extensions, and the [`render_problems`] middleware writes the
//! body with the request path as `instance`. Error responses made elsewhere
//! (axum's own rejections, tower-http's limits) are turned into problem
//! documents by the same middleware, so no client ever sees plain text.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::store::StoreError;

/// The challenge that makes a browser ask for the dashboard credentials.
const BASIC_CHALLENGE: &str = "Basic realm=\"PetHospital KPI Dashboard\", charset=\"UTF-8\"";

/// One failed validation rule, in the shape the old service used.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct FieldError {
    /// Path to the value, starting with `"body"`, `"path"` or `"query"`; list
    /// indices are numbers.
    #[schema(value_type = Vec<LocationSegment>, example = json!(["body", "tests", 2, "count"]))]
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl FieldError {
    pub fn new(loc: Vec<Value>, msg: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            loc,
            msg: msg.into(),
            kind: kind.into(),
        }
    }

    /// Creates an error about the body as a whole.
    pub fn body(msg: impl Into<String>, kind: &str) -> Self {
        Self::new(vec![Value::from("body")], msg, kind)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    /// A missing, wrong, inactive or expired key; the text is the `detail`.
    #[error("authentication failed: {0}")]
    Unauthorized(String),
    /// Missing or wrong dashboard credentials.
    #[error("dashboard authentication failed")]
    DashboardUnauthorized,
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("unsupported media type")]
    UnsupportedMediaType,
    #[error("payload too large")]
    PayloadTooLarge,
    /// A rate limit was reached; the client may retry after `retry_after` seconds.
    #[error("rate limit exceeded")]
    RateLimited { limit: u32, retry_after: u64 },
    /// A failure inside the service; the text goes to the log, never to the client.
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A segment of a field error's `loc`: a field name or a list index.
#[derive(ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // Only the OpenAPI document uses this type.
enum LocationSegment {
    Field(String),
    Index(u64),
}

/// The body of an error response before the middleware adds `instance`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub status: StatusCode,
    pub kind: &'static str,
    pub title: &'static str,
    pub detail: String,
    pub errors: Option<Vec<FieldError>>,
}

impl Problem {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        title: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            kind,
            title,
            detail: detail.into(),
            errors: None,
        }
    }

    /// Builds the problem for an error response that carried none, from its status code.
    fn for_status(status: StatusCode) -> Self {
        let (kind, title, detail) = match status {
            StatusCode::NOT_FOUND => ("not_found", "Not Found", "Not Found"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "Method Not Allowed",
                "Method Not Allowed",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload_too_large",
                "Payload Too Large",
                "Request body is larger than 1 MiB",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                "unsupported_media_type",
                "Unsupported Media Type",
                "Request body must be JSON (Content-Type: application/json)",
            ),
            StatusCode::UNAUTHORIZED => (
                "authentication_error",
                "Authentication Error",
                "Authentication required",
            ),
            StatusCode::SERVICE_UNAVAILABLE => (
                "internal_error",
                "Service Unavailable",
                "The request did not finish in time; retry later",
            ),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
                "request_header_fields_too_large",
                "Request Header Fields Too Large",
                "The request headers are larger than 16 KiB",
            ),
            status if status.is_server_error() => (
                "internal_error",
                "Internal Server Error",
                "Internal server error",
            ),
            _ => (
                "http_error",
                "HTTP Error",
                status.canonical_reason().unwrap_or("Request failed"),
            ),
        };
        Self::new(status, kind, title, detail)
    }

    fn document<'a>(
        &'a self,
        instance: &'a str,
        request_id: Option<&'a str>,
    ) -> ProblemDocument<'a> {
        ProblemDocument {
            kind: self.kind,
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            instance,
            request_id,
            errors: self.errors.as_deref(),
        }
    }
}

/// A problem document (RFC 7807 style), the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Problem)]
pub struct ProblemDocument<'a> {
    /// The kind of error, such as `validation_error`, `authentication_error`
    /// or `not_found`.
    #[serde(rename = "type")]
    #[schema(example = "validation_error")]
    pub kind: &'a str,
    #[schema(example = "Validation Error")]
    pub title: &'a str,
    /// The HTTP status code.
    #[schema(example = 422)]
    pub status: u16,
    #[schema(example = "Request validation failed")]
    pub detail: &'a str,
    /// The request path.
    #[schema(example = "/kpi/submit")]
    pub instance: &'a str,
    /// The request's `X-Request-Id`, as in the service's log lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "0b7c4f3e-8a57-4a65-9d1e-2f0e4c1d9a11", required = false)]
    pub request_id: Option<&'a str>,
    /// Every failed rule; present for validation errors only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Vec<FieldError>, required = false)]
    pub errors: Option<&'a [FieldError]>,
}

impl ApiError {
    fn problem(&self) -> Problem {
        match self {
            ApiError::Validation(errors) => Problem {
                errors: Some(errors.clone()),
                ..Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_error",
                    "Validation Error",
                    "Request validation failed",
                )
            },
            ApiError::Unauthorized(detail) => Problem::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Authentication Error",
                detail.clone(),
            ),
            ApiError::DashboardUnauthorized => Problem::new(
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "Authentication Error",
                "Valid dashboard credentials required",
            ),
            ApiError::NotFound(detail) => Problem::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Not Found",
                detail.clone(),
            ),
            ApiError::BadRequest(detail) => Problem::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Bad Request",
                detail.clone(),
            ),
            ApiError::UnsupportedMediaType => {
                Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
            }
            ApiError::PayloadTooLarge => Problem::for_status(StatusCode::PAYLOAD_TOO_LARGE),
            ApiError::RateLimited { retry_after, .. } => Problem::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_exceeded",
                "Too Many Requests",
                format!("Rate limit exceeded; retry in {retry_after} s"),
            ),
            ApiError::Internal(message) => {
                tracing::error!(error = %message, "request failed");
                Problem::for_status(StatusCode::INTERNAL_SERVER_ERROR)
            }
            ApiError::Store(err) => {
                // The client learns only that storage failed; the cause goes to the log.
                match err.pooler_hint() {
                    Some(hint) => tracing::error!(error = %err, hint, "storage operation failed"),
                    None => tracing::error!(error = %err, "storage operation failed"),
                }
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_error",
                    "Database Error",
                    "The database is unavailable; retry later",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = problem.status.into_response();
        let challenge = match &self {
            ApiError::DashboardUnauthorized => Some(BASIC_CHALLENGE),
            ApiError::Unauthorized(_) => Some("ApiKey"),
            _ => None,
        };
        if let Some(challenge) = challenge {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        if let ApiError::RateLimited { limit, retry_after } = self {
            let headers = response.headers_mut();
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(0));
            headers.insert("x-ratelimit-after", HeaderValue::from(retry_after));
        }
        if problem.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(problem);
        response
    }
}

/// Writes every error response as a problem document with the request path
/// as `instance` and the request id as `request_id`.
pub async fn render_problems(request: Request, next: Next) -> Response {
    let instance = request.uri().path().to_owned();
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let problem = match parts.extensions.remove::<Problem>() {
        Some(problem) => problem,
        // A JSON error body is a deliberate one, such as readiness's 503.
        None if is_json(&parts.headers) => return Response::from_parts(parts, body),
        None => Problem::for_status(status),
    };
    let bytes =
        serde_json::to_vec(&problem.document(&instance, request_id.as_deref())).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key(header::RETRY_AFTER)
    {
        parts
            .headers
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    Response::from_parts(parts, Body::from(bytes))
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.starts_with(b"application/json") || value.starts_with(b"application/problem+json")
    })
}
