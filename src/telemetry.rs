//! Logging: the subscriber set-up and one span and line per request.

use std::io::IsTerminal;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnBodyChunk, DefaultOnEos, MakeSpan, OnResponse, TraceLayer};
use tracing::Span;
use tracing_subscriber::EnvFilter;

/// Maps the old service's level names to tracing directives; anything else
/// (`info,sqlx=warn`) is taken as a directive already.
pub fn filter_directives(log_level: &str) -> String {
    match log_level.to_ascii_uppercase().as_str() {
        "DEBUG" => "debug".to_owned(),
        "INFO" => "info".to_owned(),
        "WARNING" | "WARN" => "warn".to_owned(),
        "ERROR" | "CRITICAL" => "error".to_owned(),
        _ => log_level.to_owned(),
    }
}

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogOutput {
    /// The service logs to standard output, where platforms collect it.
    Stdout,
    /// Administration commands log to standard error, so that their output
    /// (a new key, a listing) stays alone on standard output.
    Stderr,
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over `log_level`.
/// Colours are used only on a terminal.
pub fn init(log_level: &str, output: LogOutput) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter_directives(log_level)))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true);
    let _ = match output {
        LogOutput::Stdout => builder
            .with_ansi(std::io::stdout().is_terminal())
            .try_init(),
        LogOutput::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .try_init(),
    };
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
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = %route,
            request_id = %request_id,
            center_code = tracing::field::Empty,
        )
    }
}

#[derive(Clone, Copy)]
pub struct ResponseLine;

impl<B> OnResponse<B> for ResponseLine {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        let status = response.status().as_u16();
        let latency_ms = latency.as_secs_f64() * 1000.0;
        if response.status().is_server_error() {
            tracing::error!(status, latency_ms, "request finished");
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
