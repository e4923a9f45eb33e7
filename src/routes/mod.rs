//! The HTTP routes, one module per group, and what they share.

mod centers;
mod dashboard;
mod events;
mod health;
pub mod reads;
mod submit;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;

use crate::auth::{self, AuthError, AuthFailure, Caller, PresentedKey};
use crate::error::ApiError;
use crate::SharedState;

pub fn router() -> Router<SharedState> {
    Router::new()
        .merge(submit::router())
        .merge(events::router())
        .merge(centers::router())
        .merge(health::router())
        .merge(reads::router())
        .merge(dashboard::router())
}

/// The client's address: the TCP peer.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        Ok(ClientIp(peer))
    }
}

/// Authenticates a write request for center `code`. Failures are logged and
/// become a 401 with `invalid_detail` (or the expiry notice); a body key that
/// worked is logged as deprecated.
pub async fn authenticate_write(
    state: &SharedState,
    headers: &axum::http::HeaderMap,
    body_key: Option<&str>,
    code: &str,
    client_ip: IpAddr,
    invalid_detail: &str,
) -> Result<Caller, ApiError> {
    tracing::Span::current().record("center_code", code);
    let presented = PresentedKey::from_request(headers, body_key);
    match auth::authenticate(
        state.store.as_ref(),
        state.master_key.as_ref(),
        code,
        presented,
    )
    .await
    {
        Ok(caller) => {
            if let (Some(key), Caller::CenterKey(center)) = (presented, &caller) {
                if key.from_body {
                    state.body_key_warnings.warn(center);
                }
            }
            Ok(caller)
        }
        Err(AuthError::Store(err)) => Err(err.into()),
        Err(AuthError::Failed(failure)) => {
            auth::log_failure(failure, code, client_ip);
            Err(unauthorized(failure, invalid_detail))
        }
    }
}

/// Builds the 401 for a failed authentication.
pub fn unauthorized(failure: AuthFailure, invalid_detail: &str) -> ApiError {
    let detail = match failure {
        AuthFailure::MissingKey => auth::MISSING_KEY_DETAIL,
        AuthFailure::ExpiredKey => "API key expired. Ask the service operator for a new key.",
        AuthFailure::InvalidKey => invalid_detail,
    };
    ApiError::Unauthorized(detail.to_owned())
}

/// Rejects an inactive center like a wrong key.
pub fn require_active(
    caller: &Caller,
    client_ip: IpAddr,
    invalid_detail: &str,
) -> Result<(), ApiError> {
    match caller.center() {
        Some(center) if !center.is_active => {
            tracing::warn!(center_code = %center.code, client_ip = %client_ip, "request for an inactive center");
            Err(ApiError::Unauthorized(invalid_detail.to_owned()))
        }
        _ => Ok(()),
    }
}
