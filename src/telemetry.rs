//! Logging: the subscriber set-up and one span and line per request.
//!
//! Development gets human-readable lines; production gets one JSON object
//! per line with the span's fields, including the request id. With
//! `LOG_DIR`, daily files are written too: every level in one, errors in
//! another, kept 30 and 90 days as the old service kept them. With
//! `SENTRY_DSN`, [`crate::error_reporting`] adds layers that send ERROR
//! events to Sentry.

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnBodyChunk, DefaultOnEos, MakeSpan, OnResponse, TraceLayer};
use tracing::{Level, Span};
use tracing_appender::non_blocking::WorkerGuard;
use tracing_appender::rolling::{Builder, Rotation};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::settings::Settings;

/// Days of daily log files kept: all levels, and errors only.
const ALL_LOG_DAYS: usize = 30;
const ERROR_LOG_DAYS: usize = 90;

/// Maps the old service's level names to tracing directives; anything else
/// (`info,tower_http=debug`) is taken as a directive already.
///
/// NOTE: a directive that turns off PostgreSQL's notices, such as
/// `sqlx=warn`, can also drop the next line logged on that thread. sqlx
/// checks `enabled!` before a notice, and with per-layer filters a check
/// that is not followed by an event disables the next event.
pub fn filter_directives(log_level: &str) -> String {
    match log_level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug".to_owned(),
        "INFO" => "info".to_owned(),
        "WARNING" | "WARN" => "warn".to_owned(),
        "ERROR" | "CRITICAL" => "error".to_owned(),
        _ => log_level.to_owned(),
    }
}

/// The stream that console lines go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// The service logs to standard output, where platforms collect it.
    Stdout,
    /// Administration commands log to standard error, so that their output
    /// (a new key, a listing) stays alone on standard output.
    Stderr,
}

/// Keeps the log file writers flushing; drop it last.
pub struct LogGuards(#[allow(dead_code)] Vec<WorkerGuard>);

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn env_filter(log_level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter_directives(log_level)))
        .unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Builds a formatting layer: JSON lines in production, plain text otherwise.
fn format_layer<W>(writer: W, json: bool, ansi: bool) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true);
    if json {
        layer
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed()
    } else {
        layer.with_ansi(ansi).boxed()
    }
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `LOG_LEVEL`.
pub fn init(settings: &Settings, output: LogOutput) -> anyhow::Result<LogGuards> {
    let json = settings.is_production();
    let level = settings.log_level.as_str();
    let console = match output {
        LogOutput::Stdout => format_layer(std::io::stdout, json, std::io::stdout().is_terminal()),
        LogOutput::Stderr => format_layer(std::io::stderr, json, std::io::stderr().is_terminal()),
    };
    let mut layers: Vec<BoxedLayer> = vec![console.with_filter(env_filter(level)).boxed()];
    let mut guards = Vec::new();
    if let Some(dir) = &settings.log_dir {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create LOG_DIR {}", dir.display()))?;
        for (prefix, days, errors_only) in [
            ("kpi-service", ALL_LOG_DAYS, false),
            ("errors", ERROR_LOG_DAYS, true),
        ] {
            let appender = Builder::new()
                .rotation(Rotation::DAILY)
                .filename_prefix(prefix)
                .filename_suffix("log")
                .max_log_files(days)
                .build(dir)
                .with_context(|| format!("cannot write log files in {}", dir.display()))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            guards.push(guard);
            let layer = format_layer(writer, json, false);
            layers.push(if errors_only {
                layer.with_filter(LevelFilter::ERROR).boxed()
            } else {
                layer.with_filter(env_filter(level)).boxed()
            });
        }
    }
    layers.extend(crate::error_reporting::tracing_layers(env_filter(level)));
    // A second initialisation (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry().with(layers).try_init();
    Ok(LogGuards(guards))
}

/// Routes whose requests are logged at DEBUG: probes run every few seconds.
fn is_probe(route: &str) -> bool {
    route == "/health" || route == "/health/ready"
}

#[derive(Clone, Copy)]
pub struct RequestSpan;

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let route = request.extensions().get::<MatchedPath>().map_or_else(
            || request.uri().path().to_owned(),
            |path| path.as_str().to_owned(),
        );
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        let client_ip = request
            .extensions()
            .get::<crate::client_ip::ClientAddr>()
            .map(|addr| addr.0.to_string())
            .unwrap_or_default();
        macro_rules! request_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "request",
                    method = %request.method(),
                    route = %route,
                    request_id = %request_id,
                    client_ip = %client_ip,
                    center_code = tracing::field::Empty,
                )
            };
        }
        if is_probe(&route) {
            request_span!(Level::DEBUG)
        } else {
            request_span!(Level::INFO)
        }
    }
}

#[derive(Clone, Copy)]
pub struct ResponseLine;

impl<B> OnResponse<B> for ResponseLine {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        let probe = span
            .metadata()
            .is_none_or(|meta| *meta.level() == Level::DEBUG);
        if response.status().is_server_error() {
            tracing::error!(status, latency_ms, "request finished");
        } else if probe {
            tracing::debug!(status, latency_ms, "request finished");
        } else {
            tracing::info!(status, latency_ms, "request finished");
        }
    }
}

type RequestTraceLayer = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RequestSpan,
    (),
    ResponseLine,
    DefaultOnBodyChunk,
    DefaultOnEos,
    (),
>;

/// One span per request and one line when its response is sent; 5xx are
/// logged by [`ResponseLine`], so the failure callback stays silent.
pub fn trace_layer() -> RequestTraceLayer {
    TraceLayer::new_for_http()
        .make_span_with(RequestSpan)
        .on_request(())
        .on_response(ResponseLine)
        .on_failure(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_level_names_map_to_directives() {
        assert_eq!(filter_directives("WARNING"), "warn");
        assert_eq!(filter_directives("CRITICAL"), "error");
        assert_eq!(filter_directives("debug"), "debug");
        assert_eq!(filter_directives("info,sqlx=warn"), "info,sqlx=warn");
    }
}
