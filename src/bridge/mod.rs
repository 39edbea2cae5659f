//! `swarmgate bridge`: the registry side of swarmgate, beside an OCI
//! Distribution registry an operator already runs (CNCF Distribution, Harbor,
//! zot, a cloud registry).
//!
//! - `GET /c1/torrent/<name>/blobs/<digest>`: the blob's torrent, to callers
//!   the registry itself authorises (their `Authorization` goes upstream in a
//!   `HEAD`; its 401/403/404 and challenge come back unchanged). The `info`
//!   is built once per blob ([`build`], [`cache`]); announce URLs and the web
//!   seed URL carry a token signed afresh for the caller ([`keys`]).
//! - `GET /seed/<name>/blobs/<digest>?jwt=`: a BEP 19 web seed, for holders of
//!   a token this bridge signed for that blob's infohash; streams from the
//!   registry with the bridge's own account, ranges passed through.
//! - `GET /keys/services/<service>/keys`: the JWKS trackers check tokens with.
//!
//! Nobody gets a layer the registry would not give them: a torrent needs the
//! registry's yes, a web seed read needs a torrent's token.

pub mod build;
pub mod cache;
pub(crate) mod http;
pub mod keys;
pub mod reference;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::{Counter, Histogram};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::frontend::http::HttpSettings;
use crate::gateway::layer::unix_now;
use crate::metrics::Metrics;

/// Why the bridge could not start.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The keys directory is unusable.
    #[error("bridge.keys_dir: {0}")]
    Keys(#[from] keys::KeyError),
    /// The cache directory is unusable.
    #[error("bridge.cache_dir {path}: {source}")]
    Cache {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The HTTP client could not be made.
    #[error("bridge.upstream: {0}")]
    Upstream(#[from] upstream::UpstreamError),
    /// A setting the configuration check should have caught.
    #[error("{0}")]
    Config(String),
}

/// The bridge's metrics, registered once.
pub struct BridgeMetrics {
    registry: Arc<Metrics>,
    cache_hit: Counter,
    cache_miss: Counter,
    cache_corrupt: Counter,
    build_seconds: Histogram,
    build_bytes: Counter,
    seed_bytes: Counter,
}

impl BridgeMetrics {
    /// Handles registered in `registry`.
    pub fn new(registry: Arc<Metrics>) -> Self {
        let cache = |result| {
            registry.counter(
                "swarmgate_bridge_cache_lookups_total",
                &[("result", result)],
            )
        };
        Self {
            cache_hit: cache("hit"),
            cache_miss: cache("miss"),
            cache_corrupt: cache("corrupt"),
            build_seconds: registry.histogram("swarmgate_bridge_build_duration_seconds", &[]),
            build_bytes: registry.counter("swarmgate_bridge_build_bytes_total", &[]),
            seed_bytes: registry.counter("swarmgate_bridge_seed_bytes_total", &[]),
            registry,
        }
    }

    /// Handles in a registry of their own (benchmarks, embedders).
    pub fn detached() -> Self {
        Self::new(Arc::new(Metrics::new()))
    }

    fn build(&self, result: &'static str) {
        self.registry
            .counter("swarmgate_bridge_builds_total", &[("result", result)])
            .increment(1);
    }

    fn torrent(&self, result: &'static str) {
        self.registry
            .counter("swarmgate_bridge_torrents_total", &[("result", result)])
            .increment(1);
    }

    fn seed(&self, result: &'static str) {
        self.registry
            .counter(
                "swarmgate_bridge_seed_requests_total",
                &[("result", result)],
            )
            .increment(1);
    }

    fn upstream_error(&self, status: &'static str) {
        self.registry
            .counter(
                "swarmgate_bridge_upstream_errors_total",
                &[("status", status)],
            )
            .increment(1);
    }
}

/// What the handlers share.
pub(crate) struct BridgeState {
    upstream: Arc<upstream::Upstream>,
    builder: build::Builder,
    keys: keys::KeyStore,
    trackers: Vec<String>,
    public_url: String,
    service: String,
    max_blob_bytes: u64,
    metrics: Arc<BridgeMetrics>,
}

/// A running bridge.
pub struct Bridge {
    /// Where the public listener is bound.
    pub addr: SocketAddr,
    /// Where the operators' listener is bound.
    pub admin_addr: SocketAddr,
    state: Arc<BridgeState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Bridge {
    /// Starts a key rotation now (as SIGHUP and `POST /admin/rotate` do).
    pub fn rotate(&self) -> Result<keys::ScheduledKey, keys::KeyError> {
        let rotated = self.state.keys.rotate(unix_now());
        self.state.record_rotation(&rotated);
        rotated
    }

    /// Stops accepting, lets open requests finish, and returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

impl BridgeState {
    fn record_rotation(&self, result: &Result<keys::ScheduledKey, keys::KeyError>) {
        let label = if result.is_ok() { "ok" } else { "refused" };
        self.metrics
            .registry
            .counter("swarmgate_bridge_rotations_total", &[("result", label)])
            .increment(1);
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), BridgeError> {
    crate::admin::bind(addr)
        .await
        .map_err(|source| BridgeError::Bind { what, addr, source })
}

/// Binds both listeners, opens the keys and the cache, and serves.
pub async fn start(config: &Config) -> Result<Bridge, BridgeError> {
    let settings = &config.bridge;
    let piece_length = crate::torrent::parse_piece_length(&settings.piece_length)
        .map_err(|e| BridgeError::Config(format!("bridge.piece_length: {e}")))?;
    let algorithm = keys::parse_algorithm(&settings.key_algorithm)
        .ok_or_else(|| BridgeError::Config("bridge.key_algorithm".into()))?;
    let key_store = keys::KeyStore::open(
        keys::KeySettings {
            dir: PathBuf::from(&settings.keys_dir),
            algorithm,
            issuer: settings.issuer.clone(),
            audience: (!settings.audience.is_empty()).then(|| settings.audience.clone()),
            token_ttl: (!settings.token_ttl.is_zero()).then_some(settings.token_ttl),
            rotation_delay: settings.rotation_delay,
            retired_overlap: settings.retired_overlap,
        },
        unix_now(),
    )?;
    let cache = cache::DiskCache::open(
        std::path::Path::new(&settings.cache_dir),
        settings.cache_max_bytes,
    )
    .map_err(|source| BridgeError::Cache {
        path: settings.cache_dir.clone(),
        source,
    })?;
    let upstream = Arc::new(upstream::Upstream::new(
        &settings.upstream,
        &settings.upstream_username,
        &settings.upstream_password,
        settings.upstream_timeout,
    )?);
    let registry = Arc::new(Metrics::new());
    let metrics = Arc::new(BridgeMetrics::new(registry.clone()));

    let (listener, addr) = bind("bridge", settings.listen).await?;
    let (admin_listener, admin_addr) = bind("bridge admin", settings.admin_listen).await?;
    let public_url = if settings.public_url.is_empty() {
        let reachable = if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        };
        tracing::warn!(
            "bridge.public_url is empty: web seed URLs in torrents name http://{reachable}, \
             which only clients that reach this address can use; set bridge.public_url"
        );
        format!("http://{reachable}")
    } else {
        settings.public_url.trim_end_matches('/').to_owned()
    };
    let state = Arc::new(BridgeState {
        builder: build::Builder::new(
            upstream.clone(),
            cache,
            piece_length,
            settings.max_blob_bytes,
            metrics.clone(),
        ),
        upstream,
        keys: key_store,
        trackers: settings.trackers.clone(),
        public_url,
        service: settings.service.clone(),
        max_blob_bytes: settings.max_blob_bytes,
        metrics,
    });

    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // The public listener has the tracker's connection hygiene ([http]
    // header and idle timeouts, connection cap).
    tasks.spawn(crate::frontend::http_listener::serve(
        listener,
        http::public_app(state.clone()),
        Arc::new(ArcSwap::from_pointee(HttpSettings::from_config(config))),
        config.http.max_connections,
        registry.counter(
            "swarmgate_limit_hits_total",
            &[("limit", "http_connections")],
        ),
        stopped.clone(),
    ));
    tasks.spawn(crate::admin::serve_until_stopped(
        admin_listener,
        http::admin_app(state.clone()),
        stopped.clone(),
        "bridge admin",
    ));
    // Upkeep: retire keys past their overlap; fold latency samples.
    let upkeep = state.clone();
    let mut upkeep_stopped = stopped;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = upkeep_stopped.wait_for(|stop| *stop) => return,
            }
            if let Err(error) = upkeep.keys.prune(unix_now()) {
                tracing::error!("retiring keys failed: {error}");
            }
            upkeep.metrics.registry.run_upkeep();
        }
    });
    tracing::info!(
        %addr, %admin_addr, upstream = %settings.upstream, public_url = %state.public_url,
        signing_kid = ?state.keys.signing_kid(unix_now()),
        "swarmgate bridge is serving; torrents at {}/c1/torrent/NAME/blobs/DIGEST, JWKS at {}/keys/services/{}/keys",
        state.public_url, state.public_url, state.service
    );
    Ok(Bridge {
        addr,
        admin_addr,
        state,
        stop,
        tasks,
    })
}
