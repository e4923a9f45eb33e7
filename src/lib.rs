//! The PetHospital KPI service: collects daily KPI batches and real-time
//! events from veterinary clinics.
//!
//! [`router`] builds the whole HTTP application and [`serve`] runs it on a
//! listener until a shutdown signal, so that tests run the real service on
//! port 0.

pub mod auth;
pub mod center_cache;
pub mod cli;
pub mod client_ip;
pub mod dashboard_auth;
pub mod error;
pub mod error_reporting;
pub mod event_writer;
pub mod extract;
pub mod keys;
pub mod layers;
pub mod lenient;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod openapi;
pub mod routes;
pub mod server;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod view;

use std::future::Future;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

use crate::auth::BodyKeyWarnings;
use crate::center_cache::CenterCache;
use crate::client_ip::ClientIpResolver;
use crate::dashboard_auth::DashboardCredentials;
use crate::error::ApiError;
use crate::event_writer::EventWriter;
use crate::keys::KeyHash;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::server::ConnectionLimits;
use crate::settings::Settings;
use crate::store::Store;

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// The state every handler shares.
pub struct AppState {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    /// Digest of `CENTER_API_KEY`, if set.
    pub master_key: Option<KeyHash>,
    pub body_key_warnings: BodyKeyWarnings,
    pub dashboard: DashboardCredentials,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub client_ip: Arc<ClientIpResolver>,
    pub events: EventWriter,
    /// Active centers read by authentication, kept for a second.
    pub centers: CenterCache,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    /// Builds the state and starts the event writer task, so it must be
    /// called inside a Tokio runtime.
    pub fn new(settings: Settings, store: Arc<dyn Store>) -> SharedState {
        let master_key = settings.master_key().map(KeyHash::of);
        let dashboard = DashboardCredentials::new(
            &settings.dashboard_username,
            settings.dashboard_password.as_ref(),
        );
        let metrics = Arc::new(Metrics::new());
        metrics.register_store(store.as_ref());
        let events = EventWriter::spawn(
            store.clone(),
            metrics.event_group_sizes.clone(),
            settings.request_timeout,
        );
        Arc::new(AppState {
            events,
            centers: CenterCache::default(),
            store,
            master_key,
            body_key_warnings: BodyKeyWarnings::default(),
            dashboard,
            limits: Arc::new(Limits::new(&settings, metrics.clone())),
            metrics,
            client_ip: Arc::new(ClientIpResolver::new(&settings)),
            settings,
        })
    }
}

/// Builds the application: routes with their rate limits, inside the
/// service's middleware.
pub fn router(state: SharedState) -> Router {
    let routes = routes::router(&state)
        .fallback(|| async { ApiError::NotFound("Not Found".to_owned()) })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES));
    layers::wrap(routes, &state)
}

/// Serves `state`'s application on `listener` until `shutdown` completes,
/// then lets requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    state: SharedState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let limits_maintenance = Limits::spawn_maintenance(state.limits.clone());
    let purge = event_writer::spawn_id_purge(state.store.clone());
    let limits = ConnectionLimits::from_settings(&state.settings);
    let open_connections = state.metrics.open_connections.clone();
    // Paths are normalized before routing, so `/kpi/submit/` reaches `/kpi/submit`.
    let app = NormalizePathLayer::trim_trailing_slash().layer(router(state));
    server::serve_connections(listener, app, limits, open_connections, shutdown).await;
    limits_maintenance.abort();
    purge.abort();
}
