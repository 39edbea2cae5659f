//! The operators' listener: `/healthz` (the process is alive), `/readyz`
//! (listeners bound and, in `jwt` mode, a key set loaded) and `/metrics`
//! (Prometheus text format).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::cluster::ClusterStatus;
use crate::gateway::Gateway;
use crate::metrics::Metrics;
use crate::swarm::Engine;

/// What the admin routes read.
#[derive(Clone)]
pub struct Readiness {
    /// The gateway in force; empty in `open` mode. Ready once it has keys.
    pub gateway: Arc<ArcSwapOption<Gateway>>,
    /// The engine, for the per-tier handout counts.
    pub engine: Arc<Engine>,
    /// The server's registry.
    pub metrics: Arc<Metrics>,
    /// The Redis link, in cluster mode.
    pub cluster: Option<Arc<ClusterStatus>>,
}

/// The admin routes. The router exists only once every listener is bound.
pub fn app(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(readiness)
}

/// A lost Redis link leaves the instance ready: it answers from what it
/// holds, and a load balancer that took every instance out because Redis
/// went away would send every agent to the registry. The body says so.
async fn ready(State(readiness): State<Readiness>) -> (StatusCode, &'static str) {
    match readiness.gateway.load_full() {
        Some(gateway) if !gateway.keys_loaded() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no signing keys loaded yet (JWKS unreachable so far)\n",
        ),
        _ if readiness.cluster.as_ref().is_some_and(|link| !link.is_up()) => (
            StatusCode::OK,
            "ready, degraded: the cluster link to Redis is down (answering from this instance's swarms; reconnecting)\n",
        ),
        _ => (StatusCode::OK, "ready\n"),
    }
}

async fn metrics(State(readiness): State<Readiness>) -> impl IntoResponse {
    let metrics = &readiness.metrics;
    // Sampled now rather than counted on the hot path.
    metrics.record_engine(&readiness.engine);
    let cached = readiness
        .gateway
        .load_full()
        .map_or(0, |gateway| gateway.cached_tokens());
    metrics
        .gauge("swarmgate_token_cache_size", &[])
        .set(cached as f64);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}
