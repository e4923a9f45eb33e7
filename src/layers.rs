//! The middleware around every route: request ids, client addresses, request
//! logs, CORS, security headers, problem documents, panics and timeouts.
//!
//! The order, outermost first, matters. A request id is set before anything
//! logs, and the client address is resolved before the request span records
//! it. CORS sits outside the rate limits, so that preflights use no quota and
//! a 429 carries CORS headers. Problem documents are rendered outside the
//! panic and timeout handlers, so that their 500 and 503 become problem
//! documents too. With
//! Sentry on, its per-request hub and transaction sit just inside the request
//! id layers, so that they cover the request span's log lines and panics.

use std::any::Any;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderName, HeaderValue, Method, Response, StatusCode};
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use axum::Router;
use sentry::integrations::tower::{NewSentryLayer, SentryHttpLayer};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::client_ip::resolve_client_ip;
use crate::error::{render_problems, ApiError};
use crate::error_reporting::{self, set_transaction_name};
use crate::metrics::record_request;
use crate::settings::AllowedOrigins;
use crate::{telemetry, SharedState};

/// The largest total size of a request's headers.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Wraps the routes in every layer of the service.
pub fn wrap(routes: Router, state: &SharedState) -> Router {
    let production = state.settings.is_production();
    let mut app = routes
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.settings.request_timeout,
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn(limit_header_size))
        .layer(middleware::from_fn(render_problems))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ));
    // Compress responses over 1 KiB when the client accepts gzip or brotli.
    let compress = SizeAbove::new(1024).and(NotForContentType::IMAGES);
    app = app.layer(
        CompressionLayer::new()
            .gzip(true)
            .br(true)
            .compress_when(compress),
    );
    app = security_headers(app, production);
    if let Some(cors) = cors_layer(&state.settings.allowed_origins) {
        app = app.layer(cors);
    }
    app = app
        .layer(telemetry::trace_layer())
        .layer(middleware::from_fn_with_state(
            state.client_ip.clone(),
            resolve_client_ip,
        ));
    if error_reporting::is_enabled() {
        app = app
            .layer(middleware::from_fn(set_transaction_name))
            .layer(SentryHttpLayer::new().enable_transaction())
            .layer(NewSentryLayer::<Request>::new_from_top());
    }
    app.layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

fn security_headers(app: Router, production: bool) -> Router {
    let app = app
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ));
    if !production {
        return app;
    }
    // Only production is known to run behind HTTPS; a browser that saw this
    // header on a development machine would refuse plain HTTP to it for a year.
    app.layer(SetResponseHeaderLayer::overriding(
        header::STRICT_TRANSPORT_SECURITY,
        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
    ))
}

/// Builds the CORS layer, or none when no origin is allowed.
fn cors_layer(origins: &AllowedOrigins) -> Option<CorsLayer> {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            HeaderName::from_static("idempotency-key"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-ratelimit-limit"),
            HeaderName::from_static("x-ratelimit-remaining"),
            HeaderName::from_static("x-ratelimit-after"),
            HeaderName::from_static(crate::routes::events::REPLAYED_HEADER),
        ])
        .max_age(Duration::from_secs(600));
    match origins {
        AllowedOrigins::None => None,
        AllowedOrigins::Any => Some(layer.allow_origin(AllowOrigin::any())),
        AllowedOrigins::List(list) => {
            // Settings validated every entry as a header value already.
            let values: Vec<HeaderValue> = list
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok())
                .collect();
            Some(
                layer
                    .allow_origin(AllowOrigin::list(values))
                    .allow_credentials(true),
            )
        }
    }
}

/// Turns a handler panic into a 500 problem document; the service keeps serving.
/// With Sentry on, its panic hook has reported the panic before unwinding got here.
fn panic_response(payload: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic");
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

/// Rejects requests whose headers add up to more than [`MAX_HEADER_BYTES`].
async fn limit_header_size(request: Request, next: Next) -> axum::response::Response {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if size > MAX_HEADER_BYTES {
        return StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE.into_response();
    }
    next.run(request).await
}
