//! The operators' listener: `/healthz` (the process is alive) and `/readyz`
//! (listeners bound and, in `jwt` mode, a key set loaded).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::gateway::Gateway;

/// What readiness depends on.
#[derive(Clone, Default)]
pub struct Readiness {
    /// The gateway, in `jwt` mode: ready once it has keys.
    pub gateway: Option<Arc<Gateway>>,
}

/// The admin routes. The router exists only once every listener is bound.
pub fn app(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    match &readiness.gateway {
        Some(gateway) if !gateway.keys_loaded() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no signing keys loaded yet (JWKS unreachable so far)\n",
        ),
        _ => (StatusCode::OK, "ready\n"),
    }
}
