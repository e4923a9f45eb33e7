//! Client connections: accepting them and serving the application on each
//! over HTTP/1.1.
//!
//! axum::serve installs no timer in hyper, so a client could keep a
//! connection open without ever sending a request. Here every connection
//! gets hyper's header-read timeout, which also closes a keep-alive
//! connection left idle, and only `MAX_CONNECTIONS` are served at once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus::IntGauge;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::{Service, ServiceExt};

use crate::settings::Settings;

/// The bounds on client connections.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Time allowed for a request's headers, and for an idle keep-alive
    /// connection before it is closed.
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

impl ConnectionLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            header_read_timeout: settings.header_read_timeout,
            max_connections: settings.max_connections,
        }
    }
}

/// Minimum time between two warnings of the same kind.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// Pause after an accept fails for lack of resources, such as file
/// descriptors, so that the loop does not spin while none are free.
const ACCEPT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// Serves `app` on connections from `listener` until `shutdown` completes,
/// then stops accepting and waits for the requests in flight to finish.
pub async fn serve_connections<S>(
    listener: TcpListener,
    app: S,
    limits: ConnectionLimits,
    open_connections: IntGauge,
    shutdown: impl Future<Output = ()>,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    // TODO: no timeout covers writes, so a client that stops reading its
    // responses keeps its connection until it closes it.
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut acceptor = Acceptor::new(listener, limits.max_connections);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer, slot) = tokio::select! {
            () = &mut shutdown => break,
            accepted = acceptor.next() => accepted,
        };
        let service = app
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            });
        let connection = graceful.watch(
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)),
        );
        let guard = OpenConnection::new(slot, open_connections.clone());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(peer = %peer, error = %err, "connection closed with an error");
            }
            drop(guard);
        });
    }
    // New connections are refused from here on, while open ones finish.
    drop(acceptor);
    graceful.shutdown().await;
}

/// The listener with its connection cap and its warnings.
struct Acceptor {
    listener: TcpListener,
    slots: Arc<Semaphore>,
    max_connections: u32,
    last_cap_warning: Option<Instant>,
    last_accept_warning: Option<Instant>,
}

impl Acceptor {
    fn new(listener: TcpListener, max_connections: u32) -> Self {
        Self {
            listener,
            slots: Arc::new(Semaphore::new(max_connections as usize)),
            max_connections,
            last_cap_warning: None,
            last_accept_warning: None,
        }
    }

    /// Waits for a free slot, then for a connection to accept. While every
    /// slot is taken, new connections wait in the kernel's backlog.
    async fn next(&mut self) -> (TcpStream, SocketAddr, OwnedSemaphorePermit) {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if is_due(&mut self.last_cap_warning) {
                    tracing::warn!(
                        max_connections = self.max_connections,
                        "connection limit reached; new connections wait until one closes \
                         (MAX_CONNECTIONS)"
                    );
                }
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the connection semaphore is never closed")
            }
        };
        loop {
            match self.listener.accept().await {
                Ok((stream, peer)) => {
                    // Responses are small and written whole, so waiting to
                    // fill a segment only adds latency.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(peer = %peer, error = %err, "failed to set TCP_NODELAY");
                    }
                    return (stream, peer, slot);
                }
                Err(err) if is_connection_error(&err) => {
                    tracing::debug!(error = %err, "connection failed before it was accepted");
                }
                Err(err) => {
                    if is_due(&mut self.last_accept_warning) {
                        tracing::warn!(error = %err, "failed to accept a connection; retrying");
                    }
                    tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
                }
            }
        }
    }
}

/// Returns whether a warning last logged at `last` may be logged again,
/// and if so records it as logged now.
fn is_due(last: &mut Option<Instant>) -> bool {
    let now = Instant::now();
    if last.is_some_and(|at| now.duration_since(at) < WARNING_INTERVAL) {
        return false;
    }
    *last = Some(now);
    true
}

/// Returns whether `err` concerns one connection only, rather than the
/// listener or the process.
fn is_connection_error(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// A served connection's slot and its count in the metrics, both released
/// when it is dropped.
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    gauge: IntGauge,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, gauge: IntGauge) -> Self {
        gauge.inc();
        Self { _slot: slot, gauge }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}
