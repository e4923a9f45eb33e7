//! Error reporting to Sentry, active only when `SENTRY_DSN` is set.
//!
//! ERROR log events and panics become Sentry events, WARN and INFO log
//! events become their breadcrumbs, and requests are sampled as performance
//! transactions named by route template. Before anything leaves the process,
//! request headers, cookies, query strings, bodies and user data are removed
//! from events and transactions, and log fields whose names mark a credential
//! or a person's data (`password`, `api_key`, `client_ip`, `username`) are
//! replaced by `[Filtered]`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use secrecy::ExposeSecret;
use sentry::integrations::tracing::{BreadcrumbLayer, ErrorLayer};
use sentry::protocol::{Context, EnvelopeItem, Event, Map, Transaction, Value};
use sentry::transports::DefaultTransportFactory;
use sentry::types::Dsn;
use sentry::{
    Breadcrumb, ClientInitGuard, ClientOptions, Envelope, Transport, TransportFactory,
    TransportOptions,
};
use tracing::Level;
use tracing_subscriber::filter::{filter_fn, FilterExt, LevelFilter};
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::settings::Settings;

/// The share of requests traced in production. Other environments trace every request.
const PRODUCTION_TRACES_SAMPLE_RATE: f32 = 0.1;

/// The value that replaces a removed log field, as Sentry's own scrubbers write it.
const FILTERED: &str = "[Filtered]";

/// Parts of a field name that mark a credential, such as `password` or `api_key`.
const CREDENTIAL_WORDS: &[&str] = &[
    "password", "passwd", "secret", "token", "key", "auth", "cookie", "session", "dsn",
];

/// Words of a field name that mark data about a person, such as `client_ip`.
const PERSONAL_WORDS: &[&str] = &["ip", "user", "username", "email"];

/// The maximum length of a Sentry tag value, in characters (Sentry's "Tags" documentation).
const MAX_TAG_CHARS: usize = 200;

/// An invalid `SENTRY_DSN`. The message leaves the value out, because its key is a credential.
#[derive(Debug, thiserror::Error)]
#[error("invalid SENTRY_DSN=[redacted]: {problem}; expected a Sentry DSN such as https://PUBLIC_KEY@HOST/PROJECT_ID")]
pub struct InvalidDsn {
    problem: String,
}

/// Starts the Sentry client when `SENTRY_DSN` is set and returns its guard,
/// or `None` without a DSN.
///
/// Call it before the async runtime starts, so that every worker thread
/// inherits the client, and keep the guard until the process exits. Dropping
/// it sends the queued events and waits up to 2 seconds.
pub fn init(settings: &Settings) -> Result<Option<ClientInitGuard>, InvalidDsn> {
    init_with_transport(settings, Arc::new(DefaultTransportFactory))
}

/// Starts the Sentry client like [`init`], but hands envelopes to `transport`
/// after removing request details from transactions. Tests use it to record
/// envelopes in memory.
pub fn init_with_transport(
    settings: &Settings,
    transport: Arc<dyn TransportFactory>,
) -> Result<Option<ClientInitGuard>, InvalidDsn> {
    let Some(dsn) = &settings.sentry_dsn else {
        return Ok(None);
    };
    let dsn: Dsn = dsn.expose_secret().parse().map_err(|err| InvalidDsn {
        problem: format!("{err}"),
    })?;
    let traces_sample_rate = if settings.is_production() {
        PRODUCTION_TRACES_SAMPLE_RATE
    } else {
        1.0
    };
    let mut options = ClientOptions::new()
        .environment(settings.environment.as_str())
        .release(format!("kpi-service@{}", settings.app_version))
        .traces_sample_rate(traces_sample_rate)
        .send_default_pii(false)
        .shutdown_timeout(Duration::from_secs(2))
        .before_send(scrub_event)
        .before_breadcrumb(scrub_breadcrumb)
        .transport(ScrubbingTransportFactory { inner: transport });
    options.dsn = Some(dsn);
    Ok(Some(sentry::init(options)))
}

/// Returns whether a Sentry client is running, that is whether [`init`] found a DSN.
pub fn is_enabled() -> bool {
    sentry::Hub::main()
        .client()
        .is_some_and(|client| client.is_enabled())
}

/// Builds the tracing layers that report to Sentry: ERROR events become
/// Sentry events, and WARN and INFO events that pass `log_filter` become
/// breadcrumbs. Returns no layer when Sentry is off.
pub fn tracing_layers(log_filter: EnvFilter) -> Vec<Box<dyn Layer<Registry> + Send + Sync>> {
    if !is_enabled() {
        return Vec::new();
    }
    let breadcrumb_levels =
        filter_fn(|metadata| matches!(*metadata.level(), Level::WARN | Level::INFO));
    vec![
        BreadcrumbLayer::new()
            .with_filter(log_filter.and(breadcrumb_levels))
            .boxed(),
        ErrorLayer::new().with_filter(LevelFilter::ERROR).boxed(),
    ]
}

/// Names the request's transaction and its error events "METHOD /route/{template}".
///
/// Sentry's HTTP layer names only the transaction, and names it by the raw
/// path when no route matched. Such requests share "METHOD <unmatched route>"
/// here, so that scans of random paths do not create a name each.
pub async fn set_transaction_name(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("<unmatched route>", MatchedPath::as_str);
    let name = format!("{} {route}", request.method());
    sentry::configure_scope(|scope| scope.set_transaction(Some(&name)));
    next.run(request).await
}

/// Removes request details, user data and sensitive log fields from an error event.
fn scrub_event(mut event: Event<'static>) -> Option<Event<'static>> {
    event.user = None;
    if let Some(request) = &mut event.request {
        scrub_request(request, &mut event.tags);
    }
    scrub_fields(&mut event.extra);
    scrub_contexts(&mut event.contexts);
    Some(event)
}

/// Removes request details, user data and sensitive fields from a transaction.
fn scrub_transaction(transaction: &mut Transaction<'static>) {
    transaction.user = None;
    if let Some(request) = &mut transaction.request {
        scrub_request(request, &mut transaction.tags);
    }
    scrub_fields(&mut transaction.extra);
    scrub_contexts(&mut transaction.contexts);
}

fn scrub_breadcrumb(mut breadcrumb: Breadcrumb) -> Option<Breadcrumb> {
    scrub_fields(&mut breadcrumb.data);
    Some(breadcrumb)
}

/// Keeps only a request's method and its URL without credentials, query and
/// fragment. The request id moves to the `request_id` tag, so that an event
/// can be found in the service's logs.
fn scrub_request(request: &mut sentry::protocol::Request, tags: &mut Map<String, String>) {
    if let Some(request_id) = request.headers.get("x-request-id") {
        if request_id.chars().count() <= MAX_TAG_CHARS {
            tags.insert("request_id".to_owned(), request_id.clone());
        }
    }
    request.headers.clear();
    request.env.clear();
    request.cookies = None;
    request.query_string = None;
    request.data = None;
    if let Some(url) = &mut request.url {
        url.set_query(None);
        url.set_fragment(None);
        // Both calls fail only for URLs that cannot carry credentials.
        let _ = url.set_username("");
        let _ = url.set_password(None);
    }
}

fn scrub_contexts(contexts: &mut Map<String, Context>) {
    for context in contexts.values_mut() {
        if let Context::Other(fields) = context {
            scrub_fields(fields);
        }
    }
}

fn scrub_fields(fields: &mut Map<String, Value>) {
    for (name, value) in fields.iter_mut() {
        if is_sensitive_field(name) {
            *value = Value::from(FILTERED);
        }
    }
}

/// Returns whether a log field's name marks a credential or a person's data.
fn is_sensitive_field(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    CREDENTIAL_WORDS.iter().any(|word| name.contains(word))
        || name
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| PERSONAL_WORDS.contains(&word))
}

/// Creates transports that scrub transactions before sending them, because
/// sentry 0.49 has no `before_send_transaction` callback. Error events are
/// scrubbed earlier, by `before_send`.
struct ScrubbingTransportFactory {
    inner: Arc<dyn TransportFactory>,
}

impl TransportFactory for ScrubbingTransportFactory {
    fn create_transport_with_options(&self, options: TransportOptions) -> Arc<dyn Transport> {
        Arc::new(ScrubbingTransport {
            inner: self.inner.create_transport_with_options(options),
        })
    }
}

struct ScrubbingTransport {
    inner: Arc<dyn Transport>,
}

impl Transport for ScrubbingTransport {
    fn send_envelope(&self, envelope: Envelope) {
        self.inner.send_envelope(scrub_envelope(envelope));
    }

    fn flush(&self, timeout: Duration) -> bool {
        self.inner.flush(timeout)
    }

    fn shutdown(&self, timeout: Duration) -> bool {
        self.inner.shutdown(timeout)
    }
}

/// Scrubs every transaction in `envelope`. Envelopes without a transaction pass unchanged.
fn scrub_envelope(envelope: Envelope) -> Envelope {
    let has_transaction = envelope
        .items()
        .any(|item| matches!(item, EnvelopeItem::Transaction(_)));
    if !has_transaction {
        return envelope;
    }
    let mut scrubbed = Envelope::new().with_headers(envelope.headers().clone());
    for item in envelope.into_items() {
        match item {
            EnvelopeItem::Transaction(mut transaction) => {
                scrub_transaction(&mut transaction);
                scrubbed.add_item(EnvelopeItem::Transaction(transaction));
            }
            other => scrubbed.add_item(other),
        }
    }
    scrubbed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sensitive_field_names() {
        for name in [
            "password",
            "api_key",
            "X-API-Key",
            "authorization",
            "client_ip",
            "username",
            "session_id",
            "request:client_ip",
        ] {
            assert!(is_sensitive_field(name), "{name}");
        }
        for name in [
            "error",
            "status",
            "center_code",
            "route",
            "request_id",
            "address",
        ] {
            assert!(!is_sensitive_field(name), "{name}");
        }
    }

    #[test]
    fn request_keeps_method_path_and_request_id() {
        let mut request = sentry::protocol::Request {
            url: Some(
                "http://user:pass@service.test/kpi/submit?key=abc#part"
                    .parse()
                    .unwrap(),
            ),
            method: Some("POST".to_owned()),
            data: Some("{\"api_key\":\"abc\"}".to_owned()),
            query_string: Some("key=abc".to_owned()),
            cookies: Some("session=abc".to_owned()),
            ..Default::default()
        };
        request
            .headers
            .insert("authorization".to_owned(), "Basic abc".to_owned());
        request
            .headers
            .insert("x-request-id".to_owned(), "id-1".to_owned());
        request
            .env
            .insert("REMOTE_ADDR".to_owned(), "203.0.113.9".to_owned());
        let mut tags = Map::new();

        scrub_request(&mut request, &mut tags);

        assert_eq!(
            request.url.as_ref().map(|url| url.as_str()),
            Some("http://service.test/kpi/submit")
        );
        assert_eq!(request.method.as_deref(), Some("POST"));
        assert!(request.headers.is_empty());
        assert!(request.env.is_empty());
        assert_eq!(request.data, None);
        assert_eq!(request.query_string, None);
        assert_eq!(request.cookies, None);
        assert_eq!(tags.get("request_id").map(String::as_str), Some("id-1"));
    }

    #[test]
    fn transaction_envelope_keeps_headers() {
        let mut transaction = Transaction {
            name: Some("POST /kpi/submit".to_owned()),
            ..Default::default()
        };
        let mut request = sentry::protocol::Request::default();
        request
            .headers
            .insert("x-api-key".to_owned(), "secret".to_owned());
        transaction.request = Some(request);
        let trace = sentry::protocol::DynamicSamplingContext::new().with_sampled(true);
        let mut envelope = Envelope::new()
            .with_headers(sentry::protocol::EnvelopeHeaders::new().with_trace(trace));
        envelope.add_item(transaction);
        let headers = envelope.headers().clone();

        let scrubbed = scrub_envelope(envelope);

        assert_eq!(scrubbed.headers(), &headers);
        let Some(EnvelopeItem::Transaction(transaction)) = scrubbed.items().next() else {
            panic!("the transaction was dropped");
        };
        let request = transaction.request.as_ref().unwrap();
        assert!(request.headers.is_empty());
    }

    #[test]
    fn breadcrumb_fields_filtered() {
        let mut breadcrumb = Breadcrumb::default();
        breadcrumb
            .data
            .insert("password".to_owned(), Value::from("generated-secret"));
        breadcrumb
            .data
            .insert("client_ip".to_owned(), Value::from("203.0.113.9"));
        breadcrumb
            .data
            .insert("center_code".to_owned(), Value::from("HVC"));

        let breadcrumb = scrub_breadcrumb(breadcrumb).unwrap();

        assert_eq!(breadcrumb.data["password"], Value::from(FILTERED));
        assert_eq!(breadcrumb.data["client_ip"], Value::from(FILTERED));
        assert_eq!(breadcrumb.data["center_code"], Value::from("HVC"));
    }
}
