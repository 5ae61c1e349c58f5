//! The master's HTTP API: an axum [`Router`] over the master's live view, and two
//! ways to serve it — a whole `TcpListener` ([`serve`]) or one connection at a time
//! ([`serve_connection`]), for the port sniffer that splits HTTP from the replica
//! protocol on the shared port. Both run the same hyper connection
//! ([`http1_connection`]), so limits set there hold on both paths.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use super::metrics::Metrics;
use super::operator_api::{self, OperatorState};
use super::registrar::Registrar;
use super::view::SharedMasterView;

/// Content type of the Prometheus exposition written by `prometheus-client`.
const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a client may take to send a request's headers before its connection is
/// closed; hyper's own default once it has a timer.
pub const HEADER_READ_TIMEOUT_MS: u64 = 30_000;

/// Pause after a failed accept, so a persistent failure (no file descriptors left)
/// does not spin a core while connections drain.
const ACCEPT_ERROR_BACKOFF_MS: u64 = 100;

/// What the handlers read: the live view and the metrics registry.
#[derive(Debug, Clone)]
pub struct MasterState {
    pub view: SharedMasterView,
    pub metrics: Arc<Metrics>,
}

/// The master's routes without the registry. Unknown paths answer 404, known paths
/// with another method 405; no handler here reads a request body.
pub fn router(state: MasterState) -> Router {
    Router::new()
        .route("/health", get(health))
        // Mesos serves the redirect under both names.
        .route("/master/redirect", get(redirect_to_leader))
        .route("/redirect", get(redirect_to_leader))
        .route("/log/status", get(log_status))
        .route("/metrics/snapshot", get(metrics_snapshot))
        .route("/metrics", get(prometheus_metrics))
        .fallback(not_found)
        .with_state(state)
}

/// The master's routes plus the registry's operator API ([`operator_api::router`]:
/// `/api/v1`, `/master/state`, `/master/slaves`, `/master/maintenance/schedule`,
/// `/quota`, `/weights`, `/registrar/admit`). Those routes read bodies, limited to
/// [`operator_api::MAX_BODY_BYTES`].
pub fn router_with_registry(state: MasterState, registrar: Registrar) -> Router {
    let operator = operator_api::router(OperatorState {
        view: state.view.clone(),
        registrar,
    });
    router(state).merge(operator)
}

/// A hyper HTTP/1.1 connection serving the master's router; a caller that owns
/// connections (the port sniffer) can await it, or hand it to a
/// [`GracefulShutdown`] to have it finish its request and close on shutdown.
pub type Http1Connection<I> = http1::Connection<TokioIo<I>, TowerToHyperService<Router>>;

/// Serves `router` on every connection `listener` accepts until `shutdown`
/// completes; then stops accepting, lets each connection finish the request it is
/// serving, and returns once all are closed. Accepting goes on after an accept error
/// (e.g. out of file descriptors): one bad moment must not stop the master serving.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let connection = graceful.watch(http1_connection(stream, router.clone()));
                    tokio::spawn(async move {
                        if let Err(err) = connection.await {
                            tracing::debug!(%peer, error = %err, "HTTP connection ended with an error");
                        }
                    });
                }
                Err(err) => {
                    tracing::warn!(error = %err, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_BACKOFF_MS)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves `router` on one already-accepted connection, as the port sniffer hands
/// them over. Returns when the connection closes.
pub async fn serve_connection<I>(io: I, router: Router) -> Result<(), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    http1_connection(io, router).await
}

/// The connection [`serve`] and [`serve_connection`] run, with the master's limits.
pub fn http1_connection<I>(io: I, router: Router) -> Http1Connection<I>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    http1::Builder::new()
        // A client that never finishes its headers must not hold the connection
        // (and its task) forever.
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(HEADER_READ_TIMEOUT_MS))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
}

/// 200 for as long as the process serves, as Mesos' `/health`: liveness, not
/// readiness (readiness is `/log/status` reporting `VOTING`).
async fn health() -> StatusCode {
    StatusCode::OK
}

/// As Mesos: 307 to the leader's advertised address, 503 when there is none.
async fn redirect_to_leader(State(state): State<MasterState>) -> Response {
    match state.view.get().leader {
        Some(leader) => Redirect::temporary(&format!("http://{leader}")).into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "No leader elected\n").into_response(),
    }
}

async fn log_status(State(state): State<MasterState>) -> Response {
    Json(state.view.get().log_status()).into_response()
}

async fn metrics_snapshot(State(state): State<MasterState>) -> Response {
    let view = state.view.get();
    Json(state.metrics.snapshot(&view, state.view.uptime())).into_response()
}

async fn prometheus_metrics(State(state): State<MasterState>) -> Response {
    let view = state.view.get();
    match state.metrics.encode_prometheus(&view, state.view.uptime()) {
        Ok(text) => ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "encoding Prometheus metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            )
                .into_response()
        }
    }
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "Not found\n")
}
