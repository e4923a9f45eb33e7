//! Reading request bodies: content type, size, JSON syntax, then the typed
//! body with every validation rule, each failure reported at its path.

use std::cmp::Ordering;

use axum::body::Bytes;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use validator::{Validate, ValidationError, ValidationErrors, ValidationErrorsKind};

use crate::error::{ApiError, FieldError};
use crate::model::SELF_FIELD;

/// A request body that is a JSON object. Typed parsing comes after, with
/// [`parse`], so that one body can feed several typed parts.
#[derive(Debug)]
pub struct JsonObject(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        Self::from_bytes(&bytes)
    }
}

/// An empty body reads as `None`, for endpoints whose body is optional.
impl<S: Send + Sync> OptionalFromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let bytes = read_body(request, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        Self::from_bytes(&bytes).map(Some)
    }
}

async fn read_body<S: Send + Sync>(request: Request, state: &S) -> Result<Bytes, ApiError> {
    if !is_json_content_type(request.headers()) {
        return Err(ApiError::UnsupportedMediaType);
    }
    Bytes::from_request(request, state)
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })
}

impl JsonObject {
    /// Parses a request body that must be a JSON object, as the extractor
    /// does after the content type and size checks. Public for the fuzz target.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|err| {
            ApiError::Validation(vec![FieldError::body(
                format!("body is not valid JSON: {err}"),
                "json_invalid",
            )])
        })?;
        if !value.is_object() {
            return Err(ApiError::Validation(vec![FieldError::body(
                "body must be a JSON object",
                "model_type",
            )]));
        }
        Ok(JsonObject(value))
    }
}

/// JSON content types, or none at all, are read as JSON.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return true;
    };
    let Ok(text) = value.to_str() else {
        return false;
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence.is_empty()
        || essence == "application/json"
        || essence == "text/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserializes and validates `T` from a JSON object. A type error stops at
/// the first failure (the rest cannot be read); rule violations are all reported.
pub fn parse<T: DeserializeOwned + Validate>(value: &Value) -> Result<T, Vec<FieldError>> {
    let parsed: T = serde_path_to_error::deserialize(value).map_err(|err| vec![type_error(err)])?;
    parsed.validate().map_err(|errors| {
        let mut list = Vec::new();
        flatten(&errors, &mut vec![Value::from("body")], &mut list);
        list.sort_by(|a, b| compare_locations(&a.loc, &b.loc).then_with(|| a.msg.cmp(&b.msg)));
        cap_errors(list)
    })?;
    Ok(parsed)
}

/// Orders error locations segment by segment, list indexes by number, so
/// that `tests[2]` comes before `tests[10]` and a capped list keeps the
/// first items.
fn compare_locations(a: &[Value], b: &[Value]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x, y) {
            (Value::Number(x), Value::Number(y)) => x.as_u64().cmp(&y.as_u64()),
            (Value::String(x), Value::String(y)) => x.cmp(y),
            (Value::String(_), _) => Ordering::Less,
            (_, Value::String(_)) => Ordering::Greater,
            _ => Ordering::Equal,
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// The maximum number of errors one response lists, so that a huge invalid body cannot
/// turn into an even larger response.
pub const MAX_REPORTED_ERRORS: usize = 100;

fn cap_errors(mut list: Vec<FieldError>) -> Vec<FieldError> {
    if list.len() > MAX_REPORTED_ERRORS {
        let hidden = list.len() - MAX_REPORTED_ERRORS;
        list.truncate(MAX_REPORTED_ERRORS);
        list.push(FieldError::body(
            format!("{hidden} more errors not listed"),
            "too_many_errors",
        ));
    }
    list
}

fn type_error(err: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
    let mut loc = vec![Value::from("body")];
    for segment in err.path().iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => loc.push(Value::from(*index)),
            serde_path_to_error::Segment::Map { key } => loc.push(Value::from(key.as_str())),
            serde_path_to_error::Segment::Enum { variant } => {
                loc.push(Value::from(variant.as_str()))
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    let message = err.inner().to_string();
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        loc.push(Value::from(field));
        return FieldError::new(loc, "field required", "missing");
    }
    let kind = if message.starts_with("unknown variant") {
        "enum"
    } else if message.starts_with("invalid type") {
        "type_error"
    } else {
        "value_error"
    };
    FieldError::new(loc, message, kind)
}

fn flatten(errors: &ValidationErrors, loc: &mut Vec<Value>, out: &mut Vec<FieldError>) {
    for (field, kind) in errors.errors() {
        let pushed = field != SELF_FIELD;
        if pushed {
            loc.push(Value::from(field.as_ref()));
        }
        match kind {
            ValidationErrorsKind::Field(list) => {
                for error in list {
                    let (msg, kind) = describe(error);
                    out.push(FieldError::new(loc.clone(), msg, kind));
                }
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, loc, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    loc.push(Value::from(*index));
                    flatten(inner, loc, out);
                    loc.pop();
                }
            }
        }
        if pushed {
            loc.pop();
        }
    }
}

/// Describes one failed rule as a message and an error type.
fn describe(error: &ValidationError) -> (String, String) {
    let param = |name: &str| error.params.get(name).and_then(Value::as_f64);
    let (min, max) = (param("min"), param("max"));
    match error.code.as_ref() {
        "length" => {
            let length = error
                .params
                .get("value")
                .and_then(Value::as_str)
                .map_or(0, |s| s.chars().count()) as f64;
            if min.is_some_and(|min| length < min) {
                let min = min.unwrap_or_default();
                let unit = if min == 1.0 {
                    "character"
                } else {
                    "characters"
                };
                (
                    format!("must have at least {min} {unit}"),
                    "string_too_short".into(),
                )
            } else {
                let max = max.unwrap_or_default();
                (
                    format!("must have at most {max} characters"),
                    "string_too_long".into(),
                )
            }
        }
        "range" => {
            let value = param("value").unwrap_or_default();
            if min.is_some_and(|min| value < min) {
                let min = min.unwrap_or_default();
                (
                    format!("must be greater than or equal to {min}"),
                    "greater_than_equal".into(),
                )
            } else {
                let max = max.unwrap_or_default();
                (
                    format!("must be less than or equal to {max}"),
                    "less_than_equal".into(),
                )
            }
        }
        code => {
            let message = error.message.as_deref().unwrap_or(code).to_owned();
            (message, code.to_owned())
        }
    }
}
