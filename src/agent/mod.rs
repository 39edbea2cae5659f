//! `swarmgate agent`: the node side. One process per node, a pull-through
//! mirror of the OCI Distribution pull API that containerd (or CRI-O) names
//! in its registry host configuration. Manifests go to the registry; layer
//! blobs come from other agents over BitTorrent (the torrent from the
//! bridge, peers from the tracker), with the origin (the bridge's web seed,
//! else the registry) for whatever peers do not deliver in time. Verified
//! blobs stay in a bounded cache and are seeded while they are there.
//!
//! - [`http`]: the mirror's routes (`/v2/...`) and the operators' listener.
//! - [`pull`]: one shared pull per blob, streamed to every reader in order,
//!   released whole only once its sha256 matched.
//! - [`cache`]: verified blobs on disk, least recently used out, checked
//!   again at start.
//! - [`engine`]: the BitTorrent engine (librqbit) behind a narrow seam.
//! - [`auths`]: the agent's own logins, from a Docker `config.json`.
//! - [`hosts`]: containerd's `hosts.toml` naming the agent.
//!
//! Nothing is served, from cache or from peers, to a caller the registry
//! has not just authorised: every manifest goes to the registry, and every
//! blob request is preceded by a `HEAD` upstream with the caller's
//! credentials (or the agent's own, when the caller sends none).
//!
//! The agent talks to the tracker and the bridge over the wire only; it
//! shares no code with the engine behind `serve`.

pub mod auths;
pub mod cache;
pub mod engine;
pub mod hosts;
mod http;
pub mod pull;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Histogram};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bridge::upstream::{Upstream, UpstreamError};
use crate::config::Config;
use crate::metrics::Metrics;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
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
    /// The cache directory is unusable.
    #[error("agent.cache_dir {path}: {source}")]
    Cache {
        /// The directory.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `agent.docker_config` could not be read.
    #[error("agent.docker_config {path}: {reason}")]
    Auths {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The BitTorrent engine did not start.
    #[error("{0} (agent.peer_listen)")]
    Engine(#[from] engine::EngineError),
    /// An HTTP client could not be made.
    #[error("agent.registries: {0}")]
    Upstream(#[from] UpstreamError),
}

/// Where a blob's bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Other agents, over BitTorrent.
    Peers,
    /// The bridge's web seed.
    Bridge,
    /// The registry, directly.
    Registry,
}

impl Source {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Source::Peers => "peers",
            Source::Bridge => "bridge",
            Source::Registry => "registry",
        }
    }
}

/// The agent's metrics.
pub struct AgentMetrics {
    registry: Arc<Metrics>,
    bytes_peers: Counter,
    bytes_bridge: Counter,
    bytes_registry: Counter,
    /// Blobs evicted from the cache.
    pub evictions: Counter,
    /// Bytes from peers that failed verification or were cut off mid-piece.
    pub discarded: Counter,
    /// Seconds from a pull's start to its verified end.
    pub pull_seconds: Histogram,
}

impl AgentMetrics {
    fn new(registry: Arc<Metrics>) -> Self {
        let bytes =
            |source| registry.counter("swarmgate_agent_blob_bytes_total", &[("source", source)]);
        Self {
            bytes_peers: bytes("peers"),
            bytes_bridge: bytes("bridge"),
            bytes_registry: bytes("registry"),
            evictions: registry.counter("swarmgate_agent_cache_evictions_total", &[]),
            discarded: registry.counter("swarmgate_agent_peer_bytes_discarded_total", &[]),
            pull_seconds: registry.histogram("swarmgate_agent_pull_duration_seconds", &[]),
            registry,
        }
    }

    /// Counts blob bytes received from `source`.
    pub fn bytes(&self, source: Source, n: u64) {
        match source {
            Source::Peers => self.bytes_peers.increment(n),
            Source::Bridge => self.bytes_bridge.increment(n),
            Source::Registry => self.bytes_registry.increment(n),
        }
    }

    fn labelled(&self, name: &'static str, key: &'static str, value: &'static str) {
        self.registry.counter(name, &[(key, value)]).increment(1);
    }

    /// A pull ended (`verified`, `digest_mismatch`, `origin_failed`, `disk_error`).
    pub fn pull(&self, result: &'static str) {
        self.labelled("swarmgate_agent_pulls_total", "result", result);
    }

    /// A pull turned to the origin, and why.
    pub fn fallback(&self, reason: &'static str) {
        self.labelled("swarmgate_agent_fallbacks_total", "reason", reason);
    }

    /// A blob streamed uncached, and why.
    pub fn bypass(&self, reason: &'static str) {
        self.labelled("swarmgate_agent_cache_bypass_total", "reason", reason);
    }

    /// A mirror request answered (`kind`: manifest, blob, ping; `result`).
    pub fn request(&self, kind: &'static str, result: &'static str) {
        self.registry
            .counter(
                "swarmgate_agent_requests_total",
                &[("kind", kind), ("result", result)],
            )
            .increment(1);
    }
}

/// One mirrored registry.
pub struct Registry {
    /// The host as image references name it (containerd's `?ns=`).
    pub name: String,
    /// Its client, with the agent's own login when `agent.docker_config` has one.
    pub upstream: Upstream,
    /// The bridge's base URL, if any.
    pub bridge: Option<String>,
    /// Whether the agent has a login of its own for it.
    pub has_login: bool,
}

impl Registry {
    /// The credentials a request uses: the caller's `Authorization`, else
    /// the agent's own login, else none (the registry's 401 goes back).
    pub fn caller(&self, header: Option<&axum::http::HeaderValue>) -> pull::Caller {
        match header {
            Some(header) => pull::Caller::Header(Some(header.clone())),
            None if self.has_login => pull::Caller::Own,
            None => pull::Caller::Header(None),
        }
    }
}

/// Settings the handlers and pulls read.
pub struct Settings {
    /// No verified byte from peers for this long: the origin takes over.
    pub peer_deadline: Duration,
    /// Smaller blobs are proxied, not pulled.
    pub p2p_min_bytes: u64,
    /// Limit on upstream answers, and on a reader's wait for progress.
    pub upstream_timeout: Duration,
}

/// What the handlers and pulls share.
pub struct AgentState {
    registries: Vec<Arc<Registry>>,
    /// The BitTorrent engine.
    pub engine: engine::Engine,
    /// Verified blobs.
    pub cache: cache::BlobCache,
    /// Pulls under way.
    pub pulls: pull::Pulls,
    /// Counters.
    pub metrics: AgentMetrics,
    /// Settings.
    pub settings: Settings,
    /// For the bridge (torrents, web seed).
    pub http: reqwest::Client,
}

impl AgentState {
    /// The registry `ns` names, or the first when none is named.
    fn registry(&self, ns: Option<&str>) -> Option<&Arc<Registry>> {
        match ns {
            None => self.registries.first(),
            Some(ns) => self.registries.iter().find(|r| r.name == ns),
        }
    }
}

/// A running agent.
pub struct Agent {
    /// The mirror listener.
    pub addr: SocketAddr,
    /// The operators' listener.
    pub admin_addr: SocketAddr,
    /// The BitTorrent listener.
    pub peer_addr: Option<SocketAddr>,
    state: Arc<AgentState>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Agent {
    /// Stops accepting, lets open responses finish, stops the engine.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.state.engine.stop().await;
    }
}

async fn bind(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), AgentError> {
    crate::admin::bind(addr)
        .await
        .map_err(|source| AgentError::Bind { what, addr, source })
}

fn read_logins(path: &str) -> Result<HashMap<String, auths::Login>, AgentError> {
    if path.is_empty() {
        return Ok(HashMap::new());
    }
    let failed = |reason: String| AgentError::Auths {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    auths::parse(&text).map_err(|e| failed(e.to_string()))
}

/// Opens the cache (checking every kept blob again), starts the engine and
/// seeds what the cache kept, binds both listeners, and serves.
pub async fn start(config: &Config) -> Result<Agent, AgentError> {
    let settings = &config.agent;
    let logins = read_logins(&settings.docker_config)?;
    let mut registries = Vec::new();
    for entry in &settings.registries {
        let login = logins.get(&entry.name);
        let upstream = Upstream::new(
            &entry.url,
            login.map(|l| l.username.as_str()).unwrap_or_default(),
            login.map(|l| l.password.as_str()).unwrap_or_default(),
            settings.upstream_timeout,
        )?;
        registries.push(Arc::new(Registry {
            name: entry.name.clone(),
            upstream,
            bridge: (!entry.bridge.is_empty())
                .then(|| entry.bridge.trim_end_matches('/').to_owned()),
            has_login: login.is_some(),
        }));
    }
    let cache_dir = Path::new(&settings.cache_dir).join("blobs");
    let max_bytes = settings.cache_max_bytes;
    let started = std::time::Instant::now();
    let opened = tokio::task::spawn_blocking(move || cache::BlobCache::open(&cache_dir, max_bytes))
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|opened| opened);
    let (blob_cache, recovered) = opened.map_err(|source| AgentError::Cache {
        path: settings.cache_dir.clone(),
        source,
    })?;
    let announce_port = (settings.announce_port != 0).then_some(settings.announce_port);
    let engine = engine::Engine::start(
        blob_cache.dir(),
        settings.peer_listen,
        announce_port,
        settings.numwant,
        settings.upstream_timeout,
    )
    .await?;
    let mut seeding = 0usize;
    for kept in &recovered {
        if let Some(torrent) = &kept.torrent {
            match engine.seed(bytes::Bytes::from(torrent.clone())).await {
                Ok(_) => seeding += 1,
                Err(error) => {
                    tracing::warn!(blob = %kept.digest, "agent: cannot seed a kept blob: {error}")
                }
            }
        }
    }
    if !recovered.is_empty() {
        tracing::info!(blobs = recovered.len(), seeding, took = ?started.elapsed(),
            "agent: kept blobs verified again and seeded");
    }
    let http = reqwest::Client::builder()
        .connect_timeout(settings.upstream_timeout)
        .read_timeout(settings.upstream_timeout)
        .user_agent(concat!("swarmgate-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
    let registry = Arc::new(Metrics::new());
    let state = Arc::new(AgentState {
        registries,
        engine,
        cache: blob_cache,
        pulls: pull::Pulls::default(),
        metrics: AgentMetrics::new(registry.clone()),
        settings: Settings {
            peer_deadline: settings.peer_deadline,
            p2p_min_bytes: settings.p2p_min_bytes,
            upstream_timeout: settings.upstream_timeout,
        },
        http,
    });

    let (listener, addr) = bind("agent", settings.listen).await?;
    let (admin_listener, admin_addr) = bind("agent admin", settings.admin_listen).await?;
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for (listener, app, what) in [
        (listener, http::mirror_app(state.clone()), "agent mirror"),
        (
            admin_listener,
            http::admin_app(state.clone()),
            "agent admin",
        ),
    ] {
        tasks.spawn(crate::admin::serve_until_stopped(
            listener,
            app,
            stopped.clone(),
            what,
        ));
    }
    let upkeep = state.clone();
    let mut upkeep_stopped = stopped;
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = upkeep_stopped.wait_for(|stop| *stop) => return,
            }
            upkeep.metrics.registry.run_upkeep();
        }
    });
    let peer_addr = state.engine.listen_addr();
    tracing::info!(
        %addr, %admin_addr, peer_addr = ?peer_addr,
        registries = ?settings.registries.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(),
        "swarmgate agent is serving; containerd's hosts.toml: `swarmgate agent hosts`"
    );
    Ok(Agent {
        addr,
        admin_addr,
        peer_addr,
        state,
        stop,
        tasks,
    })
}
