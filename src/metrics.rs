//! Prometheus metrics: requests by route template and status, latency,
//! rate-limit refusals by group, the database pool, Redis failures, and what
//! each center sent. Served at `/metrics` behind the dashboard credentials, or without
//! them on `METRICS_PORT` when that is set.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::dashboard_auth::Administrator;
use crate::error::ApiError;
use crate::store::Store;
use crate::SharedState;

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Every metric of one running service.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    rate_limited: IntCounterVec,
    batches: IntCounterVec,
    events: IntCounterVec,
    repeated_events: IntCounterVec,
    pool: IntGaugeVec,
    redis_errors: IntCounterVec,
    /// 1 while the shared rate limits reach Redis and 0 after a failed call.
    /// Registered only when `REDIS_URL` is set.
    redis_up: IntGauge,
    /// Events written per group-commit transaction.
    pub event_group_sizes: Histogram,
    /// Client connections being served, the metrics port's included.
    pub open_connections: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter options");
    registry
        .register(Box::new(counter.clone()))
        .expect("metric names are unique");
    counter
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "kpi_http_request_duration_seconds",
                "Time to answer a request",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
            ]),
            &["method", "route"],
        )
        .expect("valid histogram options");
        registry
            .register(Box::new(latency.clone()))
            .expect("metric names are unique");
        let pool = IntGaugeVec::new(
            Opts::new(
                "kpi_db_pool_connections",
                "Database pool connections by state",
            ),
            &["state"],
        )
        .expect("valid gauge options");
        registry
            .register(Box::new(pool.clone()))
            .expect("metric names are unique");
        let event_group_sizes = Histogram::with_opts(
            HistogramOpts::new(
                "kpi_event_group_size",
                "Events written in one group-commit transaction",
            )
            .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        )
        .expect("valid histogram options");
        registry
            .register(Box::new(event_group_sizes.clone()))
            .expect("metric names are unique");
        let open_connections = IntGauge::new(
            "kpi_http_connections_open",
            "Client connections being served, the metrics port's included",
        )
        .expect("valid gauge options");
        registry
            .register(Box::new(open_connections.clone()))
            .expect("metric names are unique");
        Self {
            requests: counter(
                &registry,
                "kpi_http_requests_total",
                "Requests answered",
                &["method", "route", "status"],
            ),
            rate_limited: counter(
                &registry,
                "kpi_rate_limited_total",
                "Requests refused by a rate limit",
                &["group"],
            ),
            batches: counter(
                &registry,
                "kpi_batches_ingested_total",
                "Daily batches stored",
                &["center_code", "kind"],
            ),
            events: counter(
                &registry,
                "kpi_events_ingested_total",
                "Events counted",
                &["center_code", "event_type"],
            ),
            repeated_events: counter(
                &registry,
                "kpi_events_repeated_total",
                "Events not counted because their id was accepted before",
                &["center_code"],
            ),
            redis_errors: counter(
                &registry,
                "kpi_redis_errors_total",
                "Redis calls of the shared rate limits that failed or timed out, readiness checks included",
                &["reason"],
            ),
            redis_up: IntGauge::new(
                "kpi_redis_up",
                "1 while the shared rate limits reach Redis, 0 after a failed call",
            )
            .expect("valid gauge options"),
            latency,
            pool,
            event_group_sizes,
            open_connections,
            registry,
        }
    }

    /// Adds the store's own metrics, once, when the store is known.
    pub fn register_store(&self, store: &dyn Store) {
        if let Err(err) = self.registry.register(Box::new(store.begin_wait())) {
            tracing::warn!(error = %err, "cannot register the database metrics");
        }
    }

    /// Adds `kpi_redis_up`, once, when the rate limits are shared through Redis.
    pub fn register_redis(&self) {
        if let Err(err) = self.registry.register(Box::new(self.redis_up.clone())) {
            tracing::warn!(error = %err, "failed to register the Redis metrics");
        }
    }

    /// Counts a failed Redis call, where `reason` is `timeout` or `error`.
    pub fn redis_failed(&self, reason: &str) {
        self.redis_errors.with_label_values(&[reason]).inc();
        self.redis_up.set(0);
    }

    pub fn redis_reached(&self) {
        self.redis_up.set(1);
    }

    pub fn rate_limited(&self, group: &str) {
        self.rate_limited.with_label_values(&[group]).inc();
    }

    pub fn batch_stored(&self, center_code: &str, kind: &str) {
        self.batches.with_label_values(&[center_code, kind]).inc();
    }

    pub fn event_counted(&self, center_code: &str, event_type: &str) {
        self.events
            .with_label_values(&[center_code, event_type])
            .inc();
    }

    pub fn event_repeated(&self, center_code: &str) {
        self.repeated_events.with_label_values(&[center_code]).inc();
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, store: &dyn Store) -> Result<String, ApiError> {
        let status = store.pool_status();
        self.pool
            .with_label_values(&["open"])
            .set(i64::from(status.size));
        self.pool
            .with_label_values(&["idle"])
            .set(status.idle as i64);
        self.pool
            .with_label_values(&["max"])
            .set(i64::from(status.max));
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .map_err(|err| ApiError::Internal(format!("metrics encoding failed: {err}")))?;
        String::from_utf8(buffer)
            .map_err(|err| ApiError::Internal(format!("metrics are not UTF-8: {err}")))
    }
}

/// Counts every request by route template (never the raw path, which would
/// make one series per center code) and times it.
pub async fn record_request(
    State(state): State<SharedState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let metrics = &state.metrics;
    metrics
        .latency
        .with_label_values(&[&method, &route])
        .observe(started.elapsed().as_secs_f64());
    let status = response.status().as_u16().to_string();
    metrics
        .requests
        .with_label_values(&[&method, &route, &status])
        .inc();
    response
}

async fn metrics_text(state: &SharedState) -> Result<Response, ApiError> {
    let text = state.metrics.render(state.store.as_ref())?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn protected_metrics(
    _: Administrator,
    State(state): State<SharedState>,
) -> Result<Response, ApiError> {
    metrics_text(&state).await
}

async fn open_metrics(State(state): State<SharedState>) -> Result<Response, ApiError> {
    metrics_text(&state).await
}

/// `/metrics` on the main port, behind the dashboard credentials; absent
/// when a separate metrics port is configured.
pub fn router(state: &SharedState) -> Router<SharedState> {
    if state.settings.metrics_port.is_some() {
        return Router::new();
    }
    Router::new().route("/metrics", get(protected_metrics))
}

/// Builds the application served on `METRICS_PORT`: `/metrics` without credentials,
/// for a scraper inside the private network.
pub fn port_router(state: SharedState) -> Router {
    Router::new()
        .route("/metrics", get(open_metrics))
        .with_state(state)
}
