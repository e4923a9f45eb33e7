//! Running the service as a process: listeners, the metrics port, and a
//! graceful shutdown on SIGINT or SIGTERM with a deadline for requests in
//! flight.

use anyhow::Context;

use crate::cli::open_store;
use crate::server::{serve_connections, ConnectionLimits};
use crate::settings::Settings;
use crate::AppState;

/// Runs the service until SIGINT or SIGTERM.
pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let store = open_store(&settings).await?;
    let address = std::net::SocketAddr::new(settings.host, settings.port);
    let listener = listen(address).with_context(|| format!("cannot listen on {address}"))?;
    tracing::info!(
        address = %listener.local_addr()?,
        environment = settings.environment.as_str(),
        backend = store.backend(),
        "service started"
    );
    let state = AppState::new(settings, store.clone());
    if let Some(password) = state.dashboard.generated_password() {
        // Development only: production refuses to start without a password.
        tracing::warn!(
            url = %format!("http://{}/", listener.local_addr()?),
            username = %state.settings.dashboard_username,
            password = %password,
            "DASHBOARD_PASSWORD is not set; generated a password for this run"
        );
    }
    let metrics_server = match state.settings.metrics_port {
        Some(port) => {
            let address = std::net::SocketAddr::new(state.settings.host, port);
            let metrics_listener = tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("cannot listen for metrics on {address}"))?;
            tracing::info!(address = %metrics_listener.local_addr()?, "metrics served without credentials");
            let app = crate::metrics::port_router(state.clone());
            let limits = ConnectionLimits::from_settings(&state.settings);
            let open_connections = state.metrics.open_connections.clone();
            Some(tokio::spawn(serve_connections(
                metrics_listener,
                app,
                limits,
                open_connections,
                std::future::pending(),
            )))
        }
        None => None,
    };
    let deadline = state.settings.shutdown_timeout;
    let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown_signal().await;
        let _ = signalled.send(());
    };
    let mut server = tokio::spawn(crate::serve(listener, state.clone(), shutdown));
    tokio::select! {
        served = &mut server => served?,
        _ = on_signal => {
            // No new connections are accepted now; requests in flight get until the deadline.
            match tokio::time::timeout(deadline, &mut server).await {
                Ok(served) => served?,
                Err(_) => {
                    tracing::warn!(seconds = deadline.as_secs(), "requests still running at the shutdown deadline; stopping");
                    server.abort();
                }
            }
        }
    }
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    store.close().await;
    tracing::info!("service stopped");
    Ok(())
}

/// Connections the kernel queues while every `MAX_CONNECTIONS` slot is
/// taken. Linux caps it at `net.core.somaxconn`, 4096 by default since 5.4.
const LISTEN_BACKLOG: u32 = 1024;

/// Binds `address` with a listen queue of [`LISTEN_BACKLOG`], where
/// `TcpListener::bind` would leave 128.
fn listen(address: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => {}
        _ = terminate => {}
    }
    tracing::info!("shutdown signal received; finishing requests in flight");
}
