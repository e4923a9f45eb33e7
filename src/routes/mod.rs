//! The HTTP routes, one module per group, and what they share.

pub(crate) mod centers;
pub(crate) mod dashboard;
pub(crate) mod events;
pub(crate) mod health;
pub mod reads;
pub(crate) mod submit;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::Router;

use crate::auth::{self, AuthError, AuthFailure, Caller, PresentedKey};
use crate::client_ip::ClientAddr;
use crate::error::ApiError;
use crate::limits::{retry_after_secs, Group, MAX_FAILURES};
use crate::store::StoreResult;
use crate::SharedState;

/// Builds every route, each group behind its own per-IP rate limit.
pub fn router(state: &SharedState) -> Router<SharedState> {
    let limits = &state.limits;
    let writes = limits.limit_ip(Group::Submit, submit::router().merge(centers::router()));
    let events = limits.limit_ip(Group::Events, events::router());
    let reads = limits.limit_ip(
        Group::Dashboard,
        reads::router()
            .merge(dashboard::router())
            .merge(crate::openapi::router(&state.settings))
            .merge(crate::metrics::router(state)),
    );
    let probes = limits.limit_ip(Group::Health, health::router());
    Router::new()
        .merge(writes)
        .merge(events)
        .merge(reads)
        .merge(probes)
        .merge(dashboard::assets_router())
}

/// The client's address as resolved from the peer and trusted proxy headers.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let resolved = parts.extensions.get::<ClientAddr>().map(|addr| addr.0);
        let peer = || {
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
        };
        Ok(ClientIp(resolved.unwrap_or_else(peer)))
    }
}

/// Rejects a client that failed authentication too often this minute.
pub async fn check_auth_throttle(state: &SharedState, client_ip: IpAddr) -> Result<(), ApiError> {
    match state.limits.auth_blocked_for(client_ip).await {
        Some(wait) => {
            state.metrics.rate_limited("auth_failures");
            Err(ApiError::RateLimited {
                limit: MAX_FAILURES,
                retry_after: retry_after_secs(wait),
            })
        }
        None => Ok(()),
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
    group: Group,
    invalid_detail: &str,
) -> Result<Caller, ApiError> {
    tracing::Span::current().record("center_code", code);
    check_auth_throttle(state, client_ip).await?;
    let presented = PresentedKey::from_request(headers, body_key);
    match auth::authenticate(
        state.store.as_ref(),
        &state.centers,
        state.master_key.as_ref(),
        code,
        presented,
    )
    .await
    {
        Ok(caller) => {
            if presented.is_some_and(|key| key.from_body) {
                state.body_key_warnings.warn(code);
            }
            state.limits.check_center(group, code).await?;
            Ok(caller)
        }
        Err(AuthError::Store(err)) => Err(err.into()),
        Err(AuthError::Failed(failure)) => {
            if failure != AuthFailure::MissingKey {
                state.limits.record_auth_failure(client_ip).await;
            }
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
            tracing::warn!(center_code = ?center.code, client_ip = %client_ip, "request for an inactive center");
            Err(ApiError::Unauthorized(invalid_detail.to_owned()))
        }
        _ => Ok(()),
    }
}

/// Runs a storage write to completion on a task of its own, so that a client
/// that disconnects or a request timeout cannot cancel it halfway. A
/// cancelled `BEGIN IMMEDIATE` would leave a pooled SQLite connection holding
/// the write lock, and every later write would wait for it in vain.
pub async fn complete<T: Send + 'static>(
    write: impl std::future::Future<Output = StoreResult<T>> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::spawn(write).await {
        Ok(result) => result.map_err(ApiError::from),
        Err(err) => Err(ApiError::Internal(format!("storage task failed: {err}"))),
    }
}
