//! The node's HTTP window: `/status` (JSON view of the node and its place
//! in the ring) and `/metrics` (Prometheus text). Handlers ask the driver,
//! which owns the state, through a channel; they never touch it.

use std::io;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::sync::{mpsc, oneshot};

/// A question for the driver.
pub enum Query {
    Status(oneshot::Sender<serde_json::Value>),
    Metrics(oneshot::Sender<String>),
}

/// Binds `addr` and serves until the runtime stops; returns the bound address.
pub async fn serve(addr: SocketAddr, queries: mpsc::Sender<Query>) -> io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let app = Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(queries);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(local)
}

async fn status(State(queries): State<mpsc::Sender<Query>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if queries.send(Query::Status(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node stopping").into_response();
    }
    match rx.await {
        Ok(value) => axum::Json(value).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "node stopping").into_response(),
    }
}

async fn metrics(State(queries): State<mpsc::Sender<Query>>) -> impl IntoResponse {
    let (tx, rx) = oneshot::channel();
    if queries.send(Query::Metrics(tx)).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "node stopping").into_response();
    }
    match rx.await {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "node stopping").into_response(),
    }
}
