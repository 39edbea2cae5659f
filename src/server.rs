//! Startup wiring: builds the engine and the tracker service, binds every
//! listener, runs the frontends and the expiry sweep, and stops them together.
//!
//! [`start`] returns once every socket is bound, so callers (the binary, and
//! tests binding port 0) know the real addresses before the first request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use jsonwebtoken::Algorithm;
use tower::Layer;
use tower::util::BoxCloneSyncService;

use crate::admin::{self, Readiness};
use crate::cluster::link::{Access, LinkError};
use crate::cluster::{Cluster, ClusterSettings};
use crate::config::{AuthConfig, AuthMode, Config, LocalityConfig, OffloadConfig};
use crate::frontend::http::{self, HttpSettings, HttpState};
use crate::frontend::udp::{ConnectionIds, UdpFrontend, UdpSettings};
#[cfg(target_os = "linux")]
use crate::frontend::udp_batch;
use crate::gateway::layer::unix_now;
use crate::gateway::{Gateway, GatewayLayer, JwksFetcher, KeySources, TokenPolicy, keys};
use crate::metrics::{GatewayMetrics, Metrics, Protocol, RequestMetrics};
use crate::swarm::{
    Engine, EngineConfig, HandoutPolicy, LocalitySettings, SiteSpec, Topology, TopologyError,
};
use crate::tracker::{BoxedTracker, TrackerService};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
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
    /// The gateway's keys could not be set up.
    #[error("{0}")]
    Keys(String),
    /// `[locality]` describes no usable topology.
    #[error("locality: {0}")]
    Locality(#[from] TopologyError),
    /// `[cluster]` names no usable Redis.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::link::LinkError),
    /// The snapshot file is another instance's, or cannot be locked.
    #[error("{0}")]
    Snapshot(#[from] crate::store::OwnerError),
}

/// A running tracker.
pub struct Server {
    /// Where the HTTP frontend listens, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// Where the UDP frontend listens, if enabled.
    pub udp_addr: Option<SocketAddr>,
    /// Where the admin listener listens.
    pub admin_addr: SocketAddr,
    /// The swarm engine, for inspection.
    pub engine: Arc<Engine>,
    /// What `/metrics` shows.
    pub metrics: Arc<Metrics>,
    live: Live,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Batched UDP workers (plain threads; they watch `stop` too).
    udp_threads: Vec<std::thread::JoinHandle<()>>,
    /// Where the swarms are saved at shutdown, if anywhere.
    snapshot: Option<std::path::PathBuf>,
    /// This instance's hold on that file, for as long as it runs.
    _snapshot_owner: Option<crate::store::Owner>,
}

/// The parts a reload swaps under running listeners.
struct Live {
    config: tokio::sync::Mutex<Config>,
    http: Arc<ArcSwap<HttpSettings>>,
    udp: Arc<ArcSwap<UdpSettings>>,
    /// Empty in `open` mode.
    gateway: Arc<ArcSwapOption<Gateway>>,
    /// Stops the current gateway's JWKS refresher when a reload replaces it.
    refresher: std::sync::Mutex<Option<watch::Sender<bool>>>,
    stopped: watch::Receiver<bool>,
}

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new `[locality]` describes no usable topology.
    #[error("locality: {0}")]
    Locality(#[from] TopologyError),
    /// The new `[auth]` cannot be put in force (bad keys_dir, or the JWKS
    /// could not be fetched: keeping the old keys beats trusting none).
    #[error("auth: {0}")]
    Auth(String),
}

/// How often latency samples are folded into histogram buckets: at 50,000
/// requests/s this bounds the samples waiting to 2 MiB.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// `[cluster]`'s credentials and TLS files, read now so that a missing file
/// stops the start with the setting named.
fn redis_access(cluster: &crate::config::ClusterConfig) -> Result<Access, StartError> {
    let read = |setting: &str, path: &str| -> Result<Option<Vec<u8>>, StartError> {
        if path.is_empty() {
            return Ok(None);
        }
        std::fs::read(path).map(Some).map_err(|error| {
            StartError::Cluster(LinkError::Tls(format!(
                "cannot read {setting} {path}: {error}"
            )))
        })
    };
    let text = |value: &str| (!value.is_empty()).then(|| value.to_owned());
    let client = match (
        read("cluster.tls_cert_file", &cluster.tls_cert_file)?,
        read("cluster.tls_key_file", &cluster.tls_key_file)?,
    ) {
        (Some(certificate), Some(key)) => Some((certificate, key)),
        _ => None,
    };
    Ok(Access {
        username: text(&cluster.username),
        password: text(&cluster.password),
        root_cert: read("cluster.tls_ca_file", &cluster.tls_ca_file)?,
        client,
    })
}

/// Binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Server, StartError> {
    let metrics = Arc::new(Metrics::new());
    let clustered = !config.cluster.redis.trim().is_empty();
    let engine = Arc::new(Engine::with_locality(
        EngineConfig {
            peer_lifetime: config.announce.peer_lifetime,
            limits: config.limits.storage(),
            // A cluster replicates from the change feed, and rounds expiries
            // so that most re-announces leave nothing to replicate.
            expiry_step: if clustered {
                config.cluster.expiry_step
            } else {
                Duration::ZERO
            },
            change_feed: if clustered {
                config.cluster.max_pending
            } else {
                0
            },
            stall_window: config.announce.min_interval,
            ..EngineConfig::default()
        },
        locality_settings(&config.locality, &config.offload)?,
    ));
    let snapshot = crate::store::path(&config.store.snapshot_path);
    // Before anything is read or bound: a second instance on the same file
    // stops here, with the file and the setting named.
    let snapshot_owner = snapshot.as_deref().map(crate::store::own).transpose()?;
    if let Some(path) = &snapshot {
        restore(&engine, path, &metrics).await;
        // Both results exist from the start, so that an alert on
        // `increase(...{result="error"})` sees the first failure too.
        for result in ["ok", "error"] {
            metrics
                .counter("swarmgate_snapshot_writes_total", &[("result", result)])
                .increment(0);
        }
    }
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Joined before any listener binds, so the first answer has the full swarms.
    let cluster = if clustered {
        let settings = ClusterSettings {
            redis: config.cluster.redis.clone(),
            namespace: config.cluster.namespace.clone(),
            flush_interval: config.cluster.flush_interval,
            timeout: config.cluster.timeout,
            key_ttl: config.announce.peer_lifetime
                + config.cluster.expiry_step
                + Duration::from_secs(60),
            access: redis_access(&config.cluster)?,
            sentinel_master: Some(config.cluster.sentinel_master.clone())
                .filter(|name| !name.is_empty()),
        };
        let mut cluster = Cluster::new(engine.clone(), settings, &metrics)?;
        let joined = cluster.join().await;
        let status = cluster.status();
        tasks.spawn(cluster.run(joined, stopped.clone()));
        Some(status)
    } else {
        None
    };
    let engine_service = TrackerService::new(engine.clone());
    let live = Live {
        config: tokio::sync::Mutex::new(config.clone()),
        http: Arc::new(ArcSwap::from_pointee(HttpSettings::from_config(&config))),
        udp: Arc::new(ArcSwap::from_pointee(UdpSettings::from_config(&config))),
        gateway: Arc::new(ArcSwapOption::empty()),
        refresher: std::sync::Mutex::new(None),
        stopped: stopped.clone(),
    };
    if config.auth.mode == AuthMode::Jwt {
        let gateway = build_gateway(&config.auth)
            .map_err(StartError::Keys)?
            .with_metrics(GatewayMetrics::new(&metrics));
        live.install_gateway(Some(Arc::new(gateway)), config.auth.jwks_refresh);
    }
    // Always layered, so that a reload can turn tokens on or off; in open
    // mode the layer is one empty-slot check.
    let service: BoxedTracker = BoxCloneSyncService::new(
        GatewayLayer::swappable(live.gateway.clone()).layer(engine_service),
    );

    let mut udp_threads = Vec::new();
    let udp_addr = if config.udp.enabled {
        let frontend = UdpFrontend {
            service: service.clone(),
            settings: live.udp.clone(),
            ids: Arc::new(connection_ids(&config)),
            clock: Arc::new(unix_now),
            metrics: Arc::new(RequestMetrics::new(&metrics, Protocol::Udp)),
        };
        Some(start_udp(
            &config,
            frontend,
            &mut udp_threads,
            &mut tasks,
            &stopped,
        )?)
    } else {
        None
    };

    let http_addr = if config.http.enabled {
        let socket = bind_dual_stack("http", config.http.listen, socket2::Type::STREAM)?;
        let bind_error = |source| StartError::Bind {
            what: "http",
            addr: config.http.listen,
            source,
        };
        socket.set_nonblocking(true).map_err(bind_error)?;
        let listener = TcpListener::from_std(socket.into()).map_err(bind_error)?;
        let addr = local_addr("http", config.http.listen, &listener)?;
        let router = http::app(HttpState::new(
            service,
            live.http.clone(),
            Arc::new(RequestMetrics::new(&metrics, Protocol::Http)),
        ));
        tasks.spawn(crate::frontend::http_listener::serve(
            listener,
            router,
            live.http.clone(),
            config.http.max_connections,
            metrics.counter(
                "swarmgate_limit_hits_total",
                &[("limit", "http_connections")],
            ),
            stopped.clone(),
        ));
        Some(addr)
    } else {
        None
    };

    let admin_listener = bind("admin", config.admin.listen).await?;
    let admin_addr = local_addr("admin", config.admin.listen, &admin_listener)?;
    let mut admin_stopped = stopped.clone();
    let readiness = Readiness {
        gateway: live.gateway.clone(),
        engine: engine.clone(),
        metrics: metrics.clone(),
        cluster,
    };
    tasks.spawn(async move {
        let served = axum::serve(admin_listener, admin::app(readiness))
            .with_graceful_shutdown(async move {
                let _ = admin_stopped.wait_for(|stop| *stop).await;
            })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "admin listener failed");
        }
    });

    // Latency samples wait in the exporter until folded into buckets; fold
    // them often, whether or not anybody scrapes /metrics.
    let upkeep_metrics = metrics.clone();
    let mut upkeep_stopped = stopped.clone();
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(METRICS_UPKEEP);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => upkeep_metrics.run_upkeep(),
                _ = upkeep_stopped.wait_for(|stop| *stop) => break,
            }
        }
    });

    if let Some(path) = snapshot.clone() {
        let (engine, metrics) = (engine.clone(), metrics.clone());
        let period = config.store.snapshot_interval;
        let mut snapshot_stopped = stopped.clone();
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = snapshot_stopped.wait_for(|stop| *stop) => break,
                }
                save(&engine, &path, &metrics).await;
            }
        });
    }

    let sweeper = engine.clone();
    let sweep_metrics = metrics.clone();
    let period = config.announce.cleanup_interval;
    let mut sweep_stopped = stopped;
    tasks.spawn(async move {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    let began = Instant::now();
                    let stats = sweeper.purge_expired(began);
                    let took = began.elapsed();
                    sweep_metrics.record_sweep(&stats, took);
                    tracing::debug!(?stats, ?took, "expired peers swept");
                }
                _ = sweep_stopped.wait_for(|stop| *stop) => break,
            }
        }
    });

    Ok(Server {
        http_addr,
        udp_addr,
        admin_addr,
        engine,
        metrics,
        live,
        stop,
        tasks,
        udp_threads,
        snapshot,
        _snapshot_owner: snapshot_owner,
    })
}

/// Lists the swarms of the snapshot at `path` again (off the runtime's
/// threads) and says what it found.
async fn restore(engine: &Arc<Engine>, path: &std::path::Path, metrics: &Metrics) {
    let (engine, owned) = (engine.clone(), path.to_owned());
    let loaded = tokio::task::spawn_blocking(move || {
        crate::store::load(&engine, &owned, Instant::now(), unix_now())
    })
    .await;
    let file = path.display();
    let result = match loaded {
        Ok(crate::store::Loaded::Missing) => {
            tracing::info!(%file, "no snapshot yet: starting with no swarms");
            "missing"
        }
        Ok(crate::store::Loaded::Restored {
            swarms,
            peers,
            expired,
            age,
        }) => {
            tracing::info!(%file, swarms, peers, expired, age_seconds = age.as_secs(),
                "swarms restored from the snapshot (peers whose lifetime ran out meanwhile dropped)");
            "restored"
        }
        Ok(crate::store::Loaded::SetAside { cause, moved_to }) => {
            tracing::error!(%file, %moved_to,
                "the snapshot cannot be used ({cause}); moved aside, starting with no swarms");
            "set_aside"
        }
        Err(error) => {
            tracing::error!(%file, "the snapshot load failed: {error}; starting with no swarms");
            "set_aside"
        }
    };
    metrics
        .counter("swarmgate_snapshot_loads_total", &[("result", result)])
        .increment(1);
}

/// Writes a snapshot (off the runtime's threads), logging and counting it.
async fn save(engine: &Arc<Engine>, path: &std::path::Path, metrics: &Metrics) {
    let (engine, owned) = (engine.clone(), path.to_owned());
    let written = tokio::task::spawn_blocking(move || {
        crate::store::write(&engine, &owned, Instant::now(), unix_now())
    })
    .await;
    match written {
        Ok(Ok(written)) => {
            tracing::debug!(?written, "snapshot written");
            metrics
                .counter("swarmgate_snapshot_writes_total", &[("result", "ok")])
                .increment(1);
            metrics
                .gauge("swarmgate_snapshot_peers", &[])
                .set(written.peers as f64);
            metrics
                .gauge("swarmgate_snapshot_bytes", &[])
                .set(written.bytes as f64);
            metrics
                .gauge("swarmgate_snapshot_duration_seconds", &[])
                .set(written.took.as_secs_f64());
            metrics
                .gauge("swarmgate_snapshot_last_success_timestamp_seconds", &[])
                .set(unix_now() as f64);
        }
        Ok(Err(error)) => {
            tracing::error!("{error}; the previous snapshot stays");
            metrics
                .counter("swarmgate_snapshot_writes_total", &[("result", "error")])
                .increment(1);
        }
        Err(error) => {
            tracing::error!("the snapshot write failed: {error}");
            metrics
                .counter("swarmgate_snapshot_writes_total", &[("result", "error")])
                .increment(1);
        }
    }
}

impl Live {
    /// Puts `gateway` in force (none: open mode) and starts its JWKS
    /// refresher, stopping the previous one.
    fn install_gateway(&self, gateway: Option<Arc<Gateway>>, refresh: Duration) {
        let previous = self.gateway.swap(gateway.clone());
        let mut refresher = self
            .refresher
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(stop) = refresher.take() {
            let _ = stop.send(true);
        }
        drop(previous);
        let Some(gateway) = gateway else { return };
        let (stop, mut own_stop) = watch::channel(false);
        let mut server_stopped = self.stopped.clone();
        tokio::spawn(async move {
            let stopped = async move {
                tokio::select! {
                    _ = own_stop.wait_for(|stop| *stop) => {}
                    _ = server_stopped.wait_for(|stop| *stop) => {}
                }
            };
            gateway.keep_fresh(refresh, stopped).await;
        });
        *refresher = Some(stop);
    }
}

impl Server {
    /// The gateway in force (none in `open` mode).
    pub fn gateway(&self) -> Option<Arc<Gateway>> {
        self.live.gateway.load_full()
    }

    /// Puts a new configuration in force without dropping swarms or
    /// listeners: intervals and limits, trusted proxies, `udp.allow_ip_override`,
    /// `[locality]`, `[offload]`, and `[auth]` (a new gateway, whose key set is loaded
    /// before it replaces the old one). The keys in
    /// [`crate::config::RESTART_ONLY_KEYS`] need a restart; a change to them
    /// is logged and ignored. On error nothing changes.
    pub async fn reload(&self, new: Config) -> Result<(), ReloadError> {
        let mut current = self.live.config.lock().await;
        let locality = locality_settings(&new.locality, &new.offload)?;
        let gateway = if new.auth == current.auth {
            None
        } else {
            Some(self.prepare_gateway(&new).await?)
        };
        for key in current.restart_only_changes(&new) {
            tracing::warn!(
                key,
                "changed in the file, but takes effect only after a restart"
            );
        }
        self.engine.set_locality(locality);
        self.engine.set_limits(new.limits.storage());
        self.live
            .http
            .store(Arc::new(HttpSettings::from_config(&new)));
        self.live
            .udp
            .store(Arc::new(UdpSettings::from_config(&new)));
        if let Some(gateway) = gateway {
            self.live.install_gateway(gateway, new.auth.jwks_refresh);
            tracing::info!(mode = ?new.auth.mode, "auth settings replaced");
        }
        *current = new;
        Ok(())
    }

    /// Builds the gateway for `new.auth` and loads its key set, so it
    /// accepts tokens from its first request; `None` for open mode.
    async fn prepare_gateway(&self, new: &Config) -> Result<Option<Arc<Gateway>>, ReloadError> {
        if new.auth.mode == AuthMode::Open {
            return Ok(None);
        }
        let gateway = build_gateway(&new.auth)
            .map_err(ReloadError::Auth)?
            .with_metrics(GatewayMetrics::new(&self.metrics));
        if let Err(error) = gateway.refresh().await {
            return Err(ReloadError::Auth(format!(
                "cannot load the JWKS from {}: {error}",
                new.auth.jwks_url
            )));
        }
        Ok(Some(Arc::new(gateway)))
    }

    /// Stops accepting, lets in-flight requests finish, and waits for every task.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let threads = std::mem::take(&mut self.udp_threads);
        // UDP threads notice the flag within their 100 ms receive timeout.
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
        while self.tasks.join_next().await.is_some() {}
        // Last, so the snapshot holds every announce that was answered.
        if let Some(path) = &self.snapshot {
            save(&self.engine, path, &self.metrics).await;
            tracing::info!(file = %path.display(), "swarms saved for the next start");
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// `[::]` taking IPv4 too (IPv4-mapped), whatever `net.ipv6.bindv6only`
/// says; a host without IPv6 gets `0.0.0.0` instead, with a warning.
/// Any other address is bound as given.
fn bind_dual_stack(
    what: &'static str,
    addr: SocketAddr,
    kind: socket2::Type,
) -> Result<socket2::Socket, StartError> {
    use socket2::{Domain, Protocol, Socket};
    let error = |source| StartError::Bind { what, addr, source };
    let protocol = if kind == socket2::Type::STREAM {
        Protocol::TCP
    } else {
        Protocol::UDP
    };
    let open = |at: SocketAddr, dual: bool| -> std::io::Result<Socket> {
        let socket = Socket::new(Domain::for_address(at), kind, Some(protocol))?;
        if dual {
            socket.set_only_v6(false)?;
        }
        if kind == socket2::Type::STREAM {
            socket.set_reuse_address(true)?;
        }
        socket.bind(&at.into())?;
        if kind == socket2::Type::STREAM {
            socket.listen(1024)?;
        }
        Ok(socket)
    };
    if addr.ip() != std::net::IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        return open(addr, false).map_err(error);
    }
    match open(addr, true) {
        Ok(socket) => Ok(socket),
        // No IPv6 on this host (disabled, or no such family).
        Err(source)
            if matches!(
                source.raw_os_error(),
                Some(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL)
            ) =>
        {
            let v4 = SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, addr.port()));
            tracing::warn!(
                "{what}: this host has no IPv6 ({source}): listening on {v4} instead of {addr}, IPv4 only"
            );
            open(v4, false).map_err(error)
        }
        Err(source) => Err(error(source)),
    }
}

fn local_addr(
    what: &'static str,
    addr: SocketAddr,
    listener: &TcpListener,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// The gateway for `[auth]`: policy, keys from `keys_dir`, and the JWKS fetcher.
fn build_gateway(auth: &AuthConfig) -> Result<Gateway, String> {
    let algorithms = auth
        .algorithms
        .iter()
        .map(|name| {
            name.parse::<Algorithm>()
                .map_err(|_| format!("auth.algorithms: unknown algorithm {name}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = TokenPolicy {
        issuer: auth.issuer.clone(),
        audience: (!auth.audience.is_empty()).then(|| auth.audience.clone()),
        algorithms,
        leeway_secs: auth.leeway.as_secs(),
        require_exp: auth.require_exp,
        max_token_bytes: auth.max_token_bytes,
    };
    let static_keys = if auth.keys_dir.is_empty() {
        Vec::new()
    } else {
        let loaded = keys::load_dir(std::path::Path::new(&auth.keys_dir))
            .map_err(|e| format!("auth.keys_dir: {e}"))?;
        for skipped in &loaded.skipped {
            tracing::warn!(keys_dir = %auth.keys_dir, "skipped a key: {skipped}");
        }
        loaded.keys
    };
    let fetcher = if auth.jwks_url.is_empty() {
        None
    } else {
        Some(
            JwksFetcher::new(auth.jwks_url.clone(), auth.jwks_timeout)
                .map_err(|e| format!("auth.jwks_url: {e}"))?,
        )
    };
    if static_keys.is_empty() && fetcher.is_none() {
        return Err(format!(
            "auth.keys_dir {:?} holds no usable public keys and auth.jwks_url is not set",
            auth.keys_dir
        ));
    }
    let sources = KeySources {
        static_keys,
        fetcher,
        refetch: crate::gateway::RefetchPolicy {
            min_interval: auth.jwks_min_refetch,
            max_waiting: auth.jwks_max_waiting,
        },
    };
    Ok(Gateway::new(policy, sources, auth.token_cache))
}

/// Connection ids from `udp.secret`, or a random secret when it is empty.
fn connection_ids(config: &Config) -> ConnectionIds {
    let skew = config.udp.connection_id_skew;
    if config.udp.secret.is_empty() {
        ConnectionIds::random(skew)
    } else {
        ConnectionIds::new(config.udp.secret.as_bytes(), skew)
    }
}

/// Binds the UDP socket and starts `udp.workers` workers on it: batched
/// `recvmmsg`/`sendmmsg` threads on Linux, tokio tasks elsewhere.
#[cfg_attr(target_os = "linux", allow(unused_variables))]
fn start_udp(
    config: &Config,
    frontend: UdpFrontend,
    threads: &mut Vec<std::thread::JoinHandle<()>>,
    tasks: &mut JoinSet<()>,
    stopped: &watch::Receiver<bool>,
) -> Result<SocketAddr, StartError> {
    let listen = config.udp.listen;
    let bind_error = |source| StartError::Bind {
        what: "udp",
        addr: listen,
        source,
    };
    let socket: std::net::UdpSocket = bind_dual_stack("udp", listen, socket2::Type::DGRAM)?.into();
    let addr = socket.local_addr().map_err(bind_error)?;
    let workers = match config.udp.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    #[cfg(target_os = "linux")]
    {
        let socket = Arc::new(socket);
        let runtime = tokio::runtime::Handle::current();
        for worker in 0..workers {
            let thread = udp_batch::spawn_worker(
                format!("swarmgate-udp-{worker}"),
                frontend.clone(),
                socket.clone(),
                runtime.clone(),
                stopped.clone(),
            )
            .map_err(bind_error)?;
            threads.push(thread);
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        socket.set_nonblocking(true).map_err(bind_error)?;
        let socket = Arc::new(tokio::net::UdpSocket::from_std(socket).map_err(bind_error)?);
        for _ in 0..workers {
            tasks.spawn(frontend.clone().serve(socket.clone(), stopped.clone()));
        }
    }
    Ok(addr)
}

/// The engine's view of `[locality]`: topology and handout policy.
pub fn locality_settings(
    config: &LocalityConfig,
    offload: &OffloadConfig,
) -> Result<LocalitySettings, TopologyError> {
    let sites: Vec<SiteSpec> = config
        .sites
        .iter()
        .map(|site| SiteSpec {
            network: site.cidr.network(),
            prefix_len: site.cidr.prefix_len(),
            zone: site.zone.clone(),
            region: site.region.clone(),
        })
        .collect();
    Ok(LocalitySettings {
        topology: Topology::new(config.ipv4_prefix, config.ipv6_prefix, &sites)?,
        policy: HandoutPolicy {
            tiers: config.tiers,
            seeder_guard: usize::from(config.seeder_guard),
            spill_percent: config.spill_percent,
            bridgeheads: usize::from(config.bridgeheads),
            bridgehead_every: usize::from(config.bridgehead_every),
        },
        origins: offload.origins(),
    })
}
