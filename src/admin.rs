//! The operators' listener: `/healthz` (the process is alive and serving).
//! Metrics and readiness join it as the operations work lands.

use axum::Router;
use axum::routing::get;

/// The admin routes.
pub fn app() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}
