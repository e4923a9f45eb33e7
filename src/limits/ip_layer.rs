//! The per-IP limit of a route group when the limits are shared through
//! Redis. It takes the same key as the tower_governor layer ([`ClientIpKey`])
//! and sets the same headers: `X-RateLimit-Limit` and `X-RateLimit-Remaining`
//! on a conforming request, and a 429 problem document with `Retry-After`
//! on a rejected one.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_governor::key_extractor::KeyExtractor;

use super::{retry_after_secs, ClientIpKey, Group, Limits, Verdict};
use crate::error::ApiError;

#[derive(Clone)]
struct IpLimit {
    limits: Arc<Limits>,
    group: Group,
}

/// Puts `router` behind the shared per-IP limit of `group`.
pub fn shared_ip_limit<S>(limits: Arc<Limits>, group: Group, router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let limit = IpLimit { limits, group };
    router.layer(middleware::from_fn_with_state(limit, enforce))
}

async fn enforce(State(limit): State<IpLimit>, request: Request, next: Next) -> Response {
    let group = limit.group;
    let ip = match ClientIpKey.extract(&request) {
        Ok(ip) => ip,
        Err(err) => {
            let message = format!("rate limiter of group {} failed: {err}", group.as_str());
            return ApiError::Internal(message).into_response();
        }
    };
    let quota = limit.limits.ip_quota(group);
    match limit.limits.check_ip(group, ip).await {
        Verdict::Allowed { remaining } => {
            let mut response = next.run(request).await;
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-limit", HeaderValue::from(quota.count));
            headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
            response
        }
        Verdict::Denied { wait } => {
            tracing::warn!(group = group.as_str(), "per-IP rate limit exceeded");
            limit.limits.metrics().rate_limited(group.as_str());
            ApiError::RateLimited {
                limit: quota.count,
                retry_after: retry_after_secs(wait),
            }
            .into_response()
        }
    }
}
