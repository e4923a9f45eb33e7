//! API documentation: the OpenAPI 3 document at `GET /openapi.json`,
//! generated from the handlers' `#[utoipa::path]` attributes and the request
//! and response types, and Swagger UI at `GET /docs`.
//!
//! Swagger UI's files are embedded at build time from the crate registry
//! (utoipa-swagger-ui's `vendored` feature) and served by the service
//! itself, so the page loads nothing from another host. Both are served only
//! with the `ENABLE_DOCS` setting on; otherwise their paths are unknown
//! routes and get the usual 404 problem document.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerFile};

use crate::error::ApiError;
use crate::settings::Settings;
use crate::SharedState;

/// Path of the OpenAPI document.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Path of the Swagger UI page.
pub const DOCS_PATH: &str = "/docs";

/// Name of the security scheme for a center's key in the `X-API-Key` header.
pub const CENTER_KEY_SCHEME: &str = "center_api_key";

/// Name of the security scheme for the dashboard credentials (HTTP Basic).
pub const DASHBOARD_SCHEME: &str = "dashboard_credentials";

/// Allows the service's own origin only. Swagger UI 5.17 applies inline
/// styles, which Chromium blocks without `'unsafe-inline'`, and its icons are
/// `data:` images.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; img-src 'self' data:; \
     style-src 'self' 'unsafe-inline'; script-src 'self'; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

#[derive(OpenApi)]
#[openapi(
    info(
        description = "Collects daily KPI batches and real-time events from veterinary clinics, \
            and serves the totals to administrators.\n\n\
            Clinic software authenticates with its center's key in the `X-API-Key` header; \
            administrators use HTTP Basic with the dashboard credentials. \
            Every error response is a problem document (`Problem`)."
    ),
    paths(
        crate::routes::submit::submit,
        crate::routes::submit::submit_enhanced,
        crate::routes::events::record_event,
        crate::routes::centers::update_center,
        crate::routes::centers::delete_center_data,
        crate::routes::reads::list_centers,
        crate::routes::reads::center_metrics,
        crate::routes::reads::summary,
        crate::routes::dashboard::dashboard,
        crate::routes::dashboard::export_csv,
        crate::routes::health::health,
        crate::routes::health::ready,
        crate::routes::health::docs_info,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "write", description = "Clinic software: daily batches, events and center metadata, with a center's key or the master key"),
        (name = "read", description = "The JSON read API, with the dashboard credentials"),
        (name = "dashboard", description = "The HTML dashboard and the CSV export, with the dashboard credentials"),
        (name = "health", description = "Probes and service information, without credentials"),
    )
)]
pub struct ApiDoc;

/// Adds the two security schemes that the paths refer to by name.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            CENTER_KEY_SCHEME,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A center's key, or the master key from the CENTER_API_KEY setting. \
                 Old clients may send it as `api_key` in the JSON body instead (deprecated).",
            ))),
        );
        components.add_security_scheme(
            DASHBOARD_SCHEME,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some(
                        "The DASHBOARD_USERNAME and DASHBOARD_PASSWORD settings.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Builds the OpenAPI document, titled and versioned from the settings.
pub fn document(settings: &Settings) -> utoipa::openapi::OpenApi {
    let mut document = ApiDoc::openapi();
    document.info.title = settings.app_title.clone();
    document.info.version = settings.app_version.clone();
    document
}

/// Builds the documentation routes, or no routes with `ENABLE_DOCS` off.
pub fn router(settings: &Settings) -> Router<SharedState> {
    if !settings.enable_docs {
        return Router::new();
    }
    // The document has only string map keys, so serializing it cannot fail.
    let json = Bytes::from(
        document(settings)
            .to_json()
            .expect("OpenAPI document serializes"),
    );
    // Swagger UI would otherwise send the document to validator.swagger.io.
    let config = Arc::new(Config::new([OPENAPI_PATH]).validator_url("none"));
    let page_config = config.clone();
    Router::new()
        .route(
            OPENAPI_PATH,
            get(move || async move { ([(header::CONTENT_TYPE, "application/json")], json) }),
        )
        .route(DOCS_PATH, get(move || docs_page(page_config.clone())))
        .route(
            &format!("{DOCS_PATH}/{{*file}}"),
            get(move |Path(file): Path<String>| swagger_file(file, config.clone())),
        )
}

/// Serves Swagger UI's entry page at [`DOCS_PATH`] itself. The page refers to
/// its files by relative URLs, which would resolve outside `/docs/` from
/// there, so they are made absolute.
async fn docs_page(config: Arc<Config<'static>>) -> Result<Response, ApiError> {
    let index = load_swagger_file("index.html", config)?;
    let html = absolute_asset_urls(&String::from_utf8_lossy(&index.bytes));
    Ok(with_docs_headers(
        html.into_bytes(),
        HeaderValue::from_static("text/html; charset=utf-8"),
    ))
}

/// Serves one of Swagger UI's embedded files; its initializer script carries
/// `config`.
async fn swagger_file(file: String, config: Arc<Config<'static>>) -> Result<Response, ApiError> {
    let found = load_swagger_file(&file, config)?;
    let content_type = HeaderValue::from_str(&found.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    Ok(with_docs_headers(found.bytes.into_owned(), content_type))
}

fn load_swagger_file(
    file: &str,
    config: Arc<Config<'static>>,
) -> Result<SwaggerFile<'static>, ApiError> {
    utoipa_swagger_ui::serve(file, config)
        .map_err(|err| {
            ApiError::Internal(format!("serving Swagger UI file {file:?} failed: {err}"))
        })?
        .ok_or_else(|| ApiError::NotFound("Not Found".to_owned()))
}

fn with_docs_headers(body: Vec<u8>, content_type: HeaderValue) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    response
}

/// Prefixes every relative `src` and `href` value of an HTML page with
/// `/docs/`, dropping a leading `./`. Absolute paths, fragments and URLs
/// with a scheme are left alone.
fn absolute_asset_urls(html: &str) -> String {
    const ATTRIBUTES: [&str; 2] = ["src=\"", "href=\""];
    let mut output = String::with_capacity(html.len() + 256);
    let mut rest = html;
    loop {
        let value_start = ATTRIBUTES
            .iter()
            .filter_map(|attribute| rest.find(attribute).map(|at| at + attribute.len()))
            .min();
        let Some(value_start) = value_start else {
            break;
        };
        output.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        let value = &rest[..rest.find('"').unwrap_or(rest.len())];
        let has_scheme = value
            .split_once(':')
            .is_some_and(|(scheme, _)| !scheme.contains('/'));
        if !value.starts_with('/') && !value.starts_with('#') && !has_scheme {
            output.push_str(DOCS_PATH);
            output.push('/');
            rest = rest.strip_prefix("./").unwrap_or(rest);
        }
    }
    output.push_str(rest);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_become_absolute() {
        let page = r##"<link href="./a.css"><link href="index.css"><script src="./b.js"></script>
            <a href="/kpi">x</a><a href="#top">y</a><img src="data:image/png;base64,AA">
            <a href="https://example.org/x">z</a>"##;

        let rewritten = absolute_asset_urls(page);

        assert!(rewritten.contains(r#"href="/docs/a.css""#), "{rewritten}");
        assert!(
            rewritten.contains(r#"href="/docs/index.css""#),
            "{rewritten}"
        );
        assert!(rewritten.contains(r#"src="/docs/b.js""#), "{rewritten}");
        assert!(rewritten.contains(r#"href="/kpi""#), "{rewritten}");
        assert!(rewritten.contains(r##"href="#top""##), "{rewritten}");
        assert!(
            rewritten.contains(r#"src="data:image/png;base64,AA""#),
            "{rewritten}"
        );
        assert!(
            rewritten.contains(r#"href="https://example.org/x""#),
            "{rewritten}"
        );
    }
}
