//! The administrators' pages, behind the dashboard credentials: the HTML
//! dashboard at `/`, its stylesheet, and the CSV export.

use askama::Template;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::reads::{DaysParam, Window};
use crate::dashboard_auth::Administrator;
use crate::error::{ApiError, ProblemDocument};
use crate::view::DashboardPage;
use crate::SharedState;

/// Allows the service's own origin only: no inline script or style, no
/// third-party asset, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
     script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const STYLESHEET: &str = include_str!("../../templates/dashboard.css");

pub fn router() -> Router<SharedState> {
    Router::new()
        .route("/", get(dashboard))
        .route("/export.csv", get(export_csv))
}

/// Serves the stylesheet outside the dashboard's rate limit, because it is
/// static and a page view would otherwise count twice.
pub fn assets_router() -> Router<SharedState> {
    Router::new().route("/assets/dashboard.css", get(stylesheet))
}

/// Renders the dashboard page for the window.
#[utoipa::path(
    get,
    path = "/",
    tag = "dashboard",
    params(DaysParam),
    security(("dashboard_credentials" = [])),
    responses(
        (status = 200, description = "The dashboard page", body = String, content_type = "text/html"),
        (status = 401, description = "Missing or wrong dashboard credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `days`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Dashboard rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn dashboard(
    _: Administrator,
    State(state): State<SharedState>,
    window: Window,
) -> Result<Response, ApiError> {
    let data = state.store.dashboard(window.from, window.to).await?;
    let settings = &state.settings;
    let page = DashboardPage::new(
        &settings.app_title,
        &settings.app_version,
        window.days,
        window.from,
        window.to,
        &data,
    );
    let html = page
        .render()
        .map_err(|err| ApiError::Internal(format!("dashboard template failed: {err}")))?;
    let mut response = Html(html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The stylesheet is public because it contains no data, and a browser fetches it
/// before the user has typed the credentials on some platforms.
async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
}

/// Exports every center's daily totals in the window as CSV, one row per
/// center and day.
#[utoipa::path(
    get,
    path = "/export.csv",
    tag = "dashboard",
    params(DaysParam),
    security(("dashboard_credentials" = [])),
    responses(
        (status = 200, description = "CSV with a header row: center_code, center_name, date, total_orders, total_results, total_pets, total_owners", body = String, content_type = "text/csv"),
        (status = 401, description = "Missing or wrong dashboard credentials", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 422, description = "Invalid `days`", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 429, description = "Dashboard rate limit exceeded", body = ProblemDocument, content_type = "application/problem+json"),
        (status = 503, description = "Database unavailable, or the request timed out", body = ProblemDocument, content_type = "application/problem+json"),
    )
)]
async fn export_csv(
    _: Administrator,
    State(state): State<SharedState>,
    window: Window,
) -> Result<Response, ApiError> {
    let rows = state.store.export_days(window.from, window.to).await?;
    let mut writer = csv::Writer::from_writer(Vec::new());
    let write = |writer: &mut csv::Writer<Vec<u8>>| -> csv::Result<()> {
        writer.write_record([
            "center_code",
            "center_name",
            "date",
            "total_orders",
            "total_results",
            "total_pets",
            "total_owners",
        ])?;
        for row in &rows {
            writer.write_record([
                spreadsheet_safe(&row.code),
                spreadsheet_safe(&row.name),
                row.date.to_string(),
                row.total_orders.to_string(),
                row.total_results.to_string(),
                row.total_pets.to_string(),
                row.total_owners.to_string(),
            ])?;
        }
        writer.flush()?;
        Ok(())
    };
    write(&mut writer).map_err(|err| ApiError::Internal(format!("CSV export failed: {err}")))?;
    let body = writer
        .into_inner()
        .map_err(|err| ApiError::Internal(format!("CSV export failed: {err}")))?;
    let disposition = format!(
        "attachment; filename=\"kpi-{}-to-{}.csv\"",
        window.from, window.to
    );
    let disposition =
        HeaderValue::from_str(&disposition).unwrap_or(HeaderValue::from_static("attachment"));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(header::CONTENT_DISPOSITION, disposition);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// Prefixes a cell that a spreadsheet would read as a formula with `'`, so
/// that a center name such as `=cmd|...` is shown as text, never run.
fn spreadsheet_safe(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}
