//! The agent's HTTP endpoint: `/healthz` (the process serves), `/readyz` (the first full
//! node list has been applied), `/metrics` (Prometheus text format) and `/status` (JSON: the
//! last reconcile round). Read-only.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, routing::get};

/// What the endpoint reports, shared with the reconciler.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    metrics: Option<Arc<super::metrics::Metrics>>,
}

impl Health {
    /// Health that also serves `metrics` on `/metrics` and `/status`.
    pub fn with_metrics(metrics: Arc<super::metrics::Metrics>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            metrics: Some(metrics),
        }
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Relaxed);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on --metrics-addr {addr}")]
pub struct HttpError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// Binds `addr` and serves in the background.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> Result<SocketAddr, HttpError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| HttpError { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| HttpError { addr, source })?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .with_state(health);
    tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "HTTP endpoint stopped");
        }
    });
    Ok(bound)
}

async fn metrics(
    State(health): State<Arc<Health>>,
) -> (StatusCode, [(&'static str, &'static str); 1], String) {
    let body = health
        .metrics
        .as_ref()
        .map(|m| m.encode())
        .unwrap_or_default();
    (
        StatusCode::OK,
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn status(State(health): State<Arc<Health>>) -> (StatusCode, String) {
    let last = health.metrics.as_ref().and_then(|m| m.last());
    let body = serde_json::json!({ "ready": health.is_ready(), "last_round": last });
    (StatusCode::OK, body.to_string())
}

async fn readyz(State(health): State<Arc<Health>>) -> (StatusCode, &'static str) {
    if health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first node list to be applied\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    /// The status line of `GET path`, over a plain socket.
    async fn status(addr: SocketAddr, path: &'static str) -> String {
        tokio::task::spawn_blocking(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .expect("send");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read");
            out.lines().next().unwrap_or_default().to_owned()
        })
        .await
        .expect("request thread")
    }

    #[tokio::test]
    async fn readyz_follows_the_first_applied_list() {
        let health = Arc::new(Health::default());
        let addr = serve("127.0.0.1:0".parse().unwrap(), Arc::clone(&health))
            .await
            .expect("serves");
        assert_eq!(status(addr, "/healthz").await, "HTTP/1.1 200 OK");
        assert_eq!(
            status(addr, "/readyz").await,
            "HTTP/1.1 503 Service Unavailable"
        );
        health.set_ready();
        assert_eq!(status(addr, "/readyz").await, "HTTP/1.1 200 OK");
        assert_eq!(status(addr, "/nothing").await, "HTTP/1.1 404 Not Found");
    }

    #[tokio::test]
    async fn a_taken_address_is_named() {
        let first = serve("127.0.0.1:0".parse().unwrap(), Arc::default())
            .await
            .unwrap();
        let e = serve(first, Arc::default()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("cannot listen on --metrics-addr {first}")
        );
    }
}
