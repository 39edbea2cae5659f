//! The operators' listener: `/healthz` (the process is alive), `/readyz`
//! (listeners bound and, in `jwt` mode, a key set loaded), `/metrics`
//! (Prometheus text format) and `/swarms` (the busiest swarms by reported
//! bytes, as JSON: per-swarm figures that would be unbounded as labels).

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use axum::Router;
use axum::extract::{Query, State};
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
        .route("/swarms", get(swarms))
        .with_state(readiness)
}

/// A lost Redis link leaves the instance ready: it answers from what it
/// holds, and a load balancer that took every instance out because Redis
/// went away would send every agent to the registry. The body says so.
async fn ready(State(readiness): State<Readiness>) -> (StatusCode, Cow<'static, str>) {
    readiness_of(&readiness)
}

/// `/readyz`'s answer, also sampled into `swarmgate_ready` at each scrape
/// so that an alert sees what a load balancer sees.
fn readiness_of(readiness: &Readiness) -> (StatusCode, Cow<'static, str>) {
    match readiness.gateway.load_full() {
        Some(gateway) if !gateway.keys_loaded() => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no signing keys loaded yet (JWKS unreachable so far)\n".into(),
        ),
        _ if readiness.cluster.as_ref().is_some_and(|link| !link.is_up()) => {
            let why = readiness
                .cluster
                .as_ref()
                .and_then(|link| link.last_error())
                .map(|error| format!("; last error: {error}"))
                .unwrap_or_default();
            (
                StatusCode::OK,
                format!(
                    "ready, degraded: the cluster link to Redis is down (answering from this instance's swarms; reconnecting){why}\n"
                )
                .into(),
            )
        }
        _ => (StatusCode::OK, "ready\n".into()),
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
    let ready = readiness_of(&readiness).0 == StatusCode::OK;
    metrics
        .gauge("swarmgate_ready", &[])
        .set(if ready { 1.0 } else { 0.0 });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics.render(),
    )
}

/// Most swarms one `/swarms` answer lists.
const MAX_LISTED_SWARMS: usize = 1000;

/// `/swarms?limit=N`.
#[derive(serde::Deserialize)]
struct SwarmsQuery {
    limit: Option<usize>,
}

/// The offload in total and for the busiest swarms (by bytes reported,
/// both directions), busiest first. Each figure counts from when the swarm
/// entered its shard's table (`tracked_seconds` ago); `error_bytes` bounds
/// how much of its rank it may owe to swarms it replaced there.
async fn swarms(
    State(readiness): State<Readiness>,
    Query(query): Query<SwarmsQuery>,
) -> impl IntoResponse {
    let engine = &readiness.engine;
    let limit = query.limit.unwrap_or(20).min(MAX_LISTED_SWARMS);
    // Engine seconds, as `tracked_since` counts.
    let now = u32::try_from(engine.epoch().elapsed().as_secs()).unwrap_or(u32::MAX);
    let listed: Vec<serde_json::Value> = engine
        .busiest_swarms(limit)
        .into_iter()
        .map(|(swarm, stats)| {
            let mut entry = transfer_json(&swarm.totals);
            entry["info_hash"] = swarm.info_hash.to_hex().into();
            entry["error_bytes"] = swarm.error_bytes.into();
            entry["tracked_seconds"] = now.saturating_sub(swarm.tracked_since).into();
            entry["seeders"] = stats.complete.into();
            entry["leechers"] = stats.incomplete.into();
            entry
        })
        .collect();
    let body = serde_json::json!({
        "total": transfer_json(&engine.transfer_totals()),
        "swarms": listed,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body:#}\n"),
    )
}

fn transfer_json(totals: &crate::swarm::TransferTotals) -> serde_json::Value {
    serde_json::json!({
        "downloaded_bytes": totals.downloaded,
        "uploaded_by_peers_bytes": totals.uploaded_by_peers,
        "uploaded_by_origins_bytes": totals.uploaded_by_origins,
        "offload": totals.offload(),
        "resets": totals.resets,
        "implausible": totals.implausible,
    })
}

/// Serves `app` on `listener` until `stopped` turns true, letting open
/// requests finish; a failure of the listener is logged as `what`'s.
/// For the operators' listeners of `bridge` and `agent`.
pub async fn serve_until_stopped(
    listener: tokio::net::TcpListener,
    app: Router,
    mut stopped: tokio::sync::watch::Receiver<bool>,
    what: &'static str,
) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "{what} listener failed");
    }
}

/// Binds a TCP listener; returns it with the address it got (port 0 picks
/// one). The bridge's and the agent's listeners, each wrapping the error in
/// its own type.
pub async fn bind(
    addr: std::net::SocketAddr,
) -> std::io::Result<(tokio::net::TcpListener, std::net::SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}
