//! The configuration tree: one [`Config`] with defaults, read from TOML.
//!
//! Unknown keys are errors (`deny_unknown_fields`), so a typo never silently
//! falls back to a default. `swarmgate config` prints [`DEFAULT_CONFIG_TOML`],
//! which a unit test keeps identical to [`Config::default`], key for key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP tracker frontend.
    pub http: HttpConfig,
    /// The UDP tracker frontend.
    pub udp: UdpConfig,
    /// The operators' listener (health, readiness, metrics).
    pub admin: AdminConfig,
    /// Log format and level.
    pub log: LogConfig,
    /// Announce intervals, peer lifetime and reply limits.
    pub announce: AnnounceConfig,
    /// Who may announce, and the keys tokens are checked with.
    pub auth: AuthConfig,
    /// Network topology for locality-aware peer handout.
    pub locality: LocalityConfig,
    /// What one client can make the tracker store.
    pub limits: LimitsConfig,
    /// Who the registry's own seeders are, for the offload figures.
    pub offload: OffloadConfig,
    /// Keeping swarms across restarts.
    pub store: StoreConfig,
    /// Several instances answering as one, through Redis.
    pub cluster: ClusterConfig,
    /// `swarmgate bridge`, the registry side beside an OCI registry (`serve` ignores it).
    pub bridge: BridgeConfig,
    /// `swarmgate agent`, the node side: a containerd mirror pulling layers over BitTorrent.
    pub agent: AgentConfig,
}

/// `[store]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// The snapshot file (relative to the working directory); empty = none.
    pub snapshot_path: String,
    /// How often the snapshot is written (and at SIGTERM/SIGINT).
    #[serde(with = "humantime_serde")]
    pub snapshot_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            snapshot_path: "swarmgate-snapshot.bin".into(),
            snapshot_interval: Duration::from_secs(30),
        }
    }
}

/// `[cluster]`
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Redis URL(s), comma-separated seeds of one Redis Cluster; empty = a single instance.
    pub redis: String,
    /// Prefix of every key and of the channel; instances that share it are one tracker.
    pub namespace: String,
    /// How often changes are written to Redis and published.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Peer expiries are rounded up to this, so most re-announces replicate nothing.
    #[serde(with = "humantime_serde")]
    pub expiry_step: Duration,
    /// Changes held between two flushes; past it they are dropped and counted.
    pub max_pending: usize,
    /// Connect and command deadline.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// ACL user for URLs that name none (with `password`).
    pub username: String,
    /// Password for URLs that carry none; best set as SWARMGATE_CLUSTER__PASSWORD.
    pub password: String,
    /// PEM CA certificates trusted for `rediss://` instead of the system's.
    pub tls_ca_file: String,
    /// PEM client certificate for mutual TLS (with `tls_key_file`).
    pub tls_cert_file: String,
    /// PEM private key of `tls_cert_file`.
    pub tls_key_file: String,
    /// Sentinel: the monitored primary's name; `redis` then lists sentinels.
    pub sentinel_master: String,
}

impl std::fmt::Debug for ClusterConfig {
    /// The password never reaches a log; a URL's own password is redacted too.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field(
                "redis",
                &self
                    .redis
                    .split(',')
                    .map(crate::cluster::link::redacted)
                    .collect::<Vec<_>>()
                    .join(","),
            )
            .field("namespace", &self.namespace)
            .field("flush_interval", &self.flush_interval)
            .field("expiry_step", &self.expiry_step)
            .field("max_pending", &self.max_pending)
            .field("timeout", &self.timeout)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("tls_ca_file", &self.tls_ca_file)
            .field("tls_cert_file", &self.tls_cert_file)
            .field("tls_key_file", &self.tls_key_file)
            .field("sentinel_master", &self.sentinel_master)
            .finish()
    }
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: String::new(),
            namespace: "swarmgate".into(),
            flush_interval: Duration::from_millis(50),
            expiry_step: Duration::from_secs(120),
            max_pending: 262_144,
            timeout: Duration::from_secs(2),
            username: String::new(),
            password: String::new(),
            tls_ca_file: String::new(),
            tls_cert_file: String::new(),
            tls_key_file: String::new(),
            sentinel_master: String::new(),
        }
    }
}

/// `[bridge]`: read by `swarmgate bridge` only (with `[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BridgeConfig {
    /// The public listener: torrents, the web seed, the JWKS.
    pub listen: SocketAddr,
    /// The operators' listener: `/healthz`, `/readyz`, `/metrics`, `POST /admin/rotate`.
    pub admin_listen: SocketAddr,
    /// The OCI Distribution registry the bridge stands beside.
    pub upstream: String,
    /// The bridge's own registry account (web seed reads); empty = anonymous.
    pub upstream_username: String,
    /// Its password or token.
    pub upstream_password: String,
    /// Limit on the upstream's answer, and on any pause while a blob streams.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// The bridge's base URL as clients reach it (web seed URLs); empty = the bound address.
    pub public_url: String,
    /// Announce URLs written in every torrent, each with a token.
    pub trackers: Vec<String>,
    /// Bytes per piece, e.g. `512KiB`; part of every infohash.
    pub piece_length: String,
    /// Largest blob a torrent is built for, in bytes.
    pub max_blob_bytes: u64,
    /// Where built torrents are kept across restarts.
    pub cache_dir: String,
    /// Most bytes the cache holds; least recently used entries go first.
    pub cache_max_bytes: u64,
    /// Signing keys (`KID.pem`) and the rotation schedule.
    pub keys_dir: String,
    /// The `iss` claim (the tracker's `auth.issuer`).
    pub issuer: String,
    /// The `aud` claim; empty = none.
    pub audience: String,
    /// The JWKS is served at `/keys/services/<service>/keys`.
    pub service: String,
    /// Algorithm of the keys the bridge generates itself.
    pub key_algorithm: String,
    /// A new key is published at once and signs after this delay.
    #[serde(with = "humantime_serde")]
    pub rotation_delay: Duration,
    /// A retired key stays published this long after its successor starts signing.
    #[serde(with = "humantime_serde")]
    pub retired_overlap: Duration,
    /// Token lifetime (`exp`); zero = no `exp`.
    #[serde(with = "humantime_serde")]
    pub token_ttl: Duration,
}

impl Default for BridgeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 6980)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 6981)),
            upstream: "http://127.0.0.1:5000".into(),
            upstream_username: String::new(),
            upstream_password: String::new(),
            upstream_timeout: Duration::from_secs(30),
            public_url: String::new(),
            trackers: vec!["http://127.0.0.1:6969/announce".into()],
            piece_length: "512KiB".into(),
            max_blob_bytes: 16 << 30,
            cache_dir: "bridge-cache".into(),
            cache_max_bytes: 256 << 20,
            keys_dir: "bridge-keys".into(),
            issuer: "swarmgate-bridge".into(),
            audience: String::new(),
            service: "swarmgate".into(),
            key_algorithm: "ES256".into(),
            rotation_delay: Duration::from_secs(300),
            retired_overlap: Duration::from_secs(24 * 3600),
            token_ttl: Duration::ZERO,
        }
    }
}

/// `[agent]`: read by `swarmgate agent` only (with `[log]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// The mirror listener containerd pulls through (`/v2/`).
    pub listen: SocketAddr,
    /// The operators' listener: `/healthz`, `/readyz`, `/metrics`.
    pub admin_listen: SocketAddr,
    /// The registries mirrored, by the name containerd gives them (`?ns=`); the first is the default.
    pub registries: Vec<AgentRegistry>,
    /// A Docker `config.json` whose `auths` are used when a caller sends no credentials; empty = none.
    pub docker_config: String,
    /// Limit on the registry's and the bridge's answers, and on any pause while a blob streams.
    #[serde(with = "humantime_serde")]
    pub upstream_timeout: Duration,
    /// Where verified blobs are kept (and seeded from).
    pub cache_dir: String,
    /// Most bytes of blobs the cache holds; least recently used go first.
    pub cache_max_bytes: u64,
    /// The BitTorrent listener other agents connect to.
    pub peer_listen: SocketAddr,
    /// The port announced to the tracker; 0 = `peer_listen`'s port.
    pub announce_port: u16,
    /// A pull switches to the origin when peers sent no byte for this long, for this blob or any other.
    #[serde(with = "humantime_serde")]
    pub peer_deadline: Duration,
    /// Blobs smaller than this are fetched from the registry directly (configs, tiny layers).
    pub p2p_min_bytes: u64,
    /// Peers asked of the tracker per announce (librqbit asks for none).
    pub numwant: u32,
}

/// One registry an agent mirrors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistry {
    /// The registry's host as image references name it (`host[:port]`, containerd's `?ns=`).
    pub name: String,
    /// Its base URL (`https://host`).
    pub url: String,
    /// The `swarmgate bridge` beside it; empty = layers from the registry only.
    #[serde(default)]
    pub bridge: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6990)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 6991)),
            registries: vec![AgentRegistry {
                name: "127.0.0.1:5000".into(),
                url: "http://127.0.0.1:5000".into(),
                bridge: "http://127.0.0.1:6980".into(),
            }],
            docker_config: String::new(),
            upstream_timeout: Duration::from_secs(30),
            cache_dir: "agent-cache".into(),
            cache_max_bytes: 20 << 30,
            peer_listen: SocketAddr::from(([0, 0, 0, 0], 6881)),
            announce_port: 0,
            peer_deadline: Duration::from_secs(5),
            p2p_min_bytes: 1 << 20,
            numwant: 8,
        }
    }
}

/// `[http]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Serve HTTP announces and scrapes.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: SocketAddr,
    /// Reverse proxies whose `X-Forwarded-For` (and `ip`/`ipv4`/`ipv6` parameters) are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Time a client has to send a request's headers once it has started.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// How long a connection may sit without a request (before the first
    /// byte of the next one), or a response without a byte written, before
    /// it is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Most HTTP connections open at once; more are closed on accept.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 6969)),
            trusted_proxies: Vec::new(),
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            max_connections: 10_000,
        }
    }
}

/// `[udp]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UdpConfig {
    /// Serve BEP 15 UDP announces.
    pub enabled: bool,
    /// Address and port to listen on; `[::]:PORT` serves IPv4 and IPv6 on a dual-stack host.
    pub listen: SocketAddr,
    /// Secret for connection ids; empty means random at every start.
    pub secret: String,
    /// How long past two minutes a connection id is still accepted.
    #[serde(with = "humantime_serde")]
    pub connection_id_skew: Duration,
    /// Believe the `ip` field of announces (only behind a trusted relay).
    pub allow_ip_override: bool,
    /// Socket worker tasks; 0 means one per CPU core.
    pub workers: usize,
}

impl Default for UdpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 6969)),
            secret: String::new(),
            connection_id_skew: Duration::from_secs(30),
            allow_ip_override: false,
            workers: 0,
        }
    }
}

/// `[admin]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the operators' listener (`/healthz`); keep it off the public network.
    pub listen: SocketAddr,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 6970)),
        }
    }
}

/// `[announce]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnnounceConfig {
    /// How often clients are told to re-announce.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The shortest re-announce interval clients are told to respect.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// How long a peer stays listed after its last announce; longer than `interval`.
    #[serde(with = "humantime_serde")]
    pub peer_lifetime: Duration,
    /// How often expired peers and empty swarms are swept out.
    #[serde(with = "humantime_serde")]
    pub cleanup_interval: Duration,
    /// Peers handed out when a client does not say how many it wants.
    pub default_numwant: u32,
    /// The most peers handed out in one reply, whatever the client asks.
    pub max_numwant: u32,
    /// The most infohashes answered in one scrape.
    pub max_scrape_infohashes: u32,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            min_interval: Duration::from_secs(30),
            peer_lifetime: Duration::from_secs(150),
            cleanup_interval: Duration::from_secs(30),
            default_numwant: 50,
            max_numwant: 200,
            max_scrape_infohashes: 50,
        }
    }
}

/// How announces are authorised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Only infohashes approved by a registry-signed JWT.
    #[default]
    Jwt,
    /// Anyone may announce any infohash: a public tracker.
    Open,
}

/// `[auth]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `"jwt"` or `"open"`.
    pub mode: AuthMode,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required member of the `aud` claim; empty means `aud` is not checked.
    pub audience: String,
    /// Accepted signature algorithms; `none` and HMAC are refused.
    pub algorithms: Vec<String>,
    /// Clock skew allowed when checking `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens without `exp` (Quay's tokens have none).
    pub require_exp: bool,
    /// The registry's JWKS URL; empty for none.
    pub jwks_url: String,
    /// How often the JWKS is refetched.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Time limit of one JWKS fetch.
    #[serde(with = "humantime_serde")]
    pub jwks_timeout: Duration,
    /// Least time between the starts of two JWKS fetches (pacing).
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// Most requests waiting at once for a JWKS fetch because their kid is unknown.
    pub jwks_max_waiting: usize,
    /// A directory of public keys (`*.json` JWKS, public `*.pem`); empty for none.
    pub keys_dir: String,
    /// How many verified tokens are remembered.
    pub token_cache: usize,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Jwt,
            issuer: "dev-registry".into(),
            audience: String::new(),
            algorithms: ["RS256", "PS256", "ES256", "EdDSA"]
                .map(String::from)
                .to_vec(),
            leeway: Duration::from_secs(60),
            require_exp: false,
            jwks_url: String::new(),
            jwks_refresh: Duration::from_secs(300),
            jwks_timeout: Duration::from_secs(5),
            jwks_min_refetch: Duration::from_secs(1),
            jwks_max_waiting: 1024,
            keys_dir: "keys".into(),
            token_cache: 100_000,
            max_token_bytes: 4096,
        }
    }
}

/// Signature algorithms `auth.algorithms` may name.
pub const SIGNATURE_ALGORITHMS: [&str; 9] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

/// `[locality]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalityConfig {
    /// IPv4 peers sharing this many leading bits are in one subnet (rack).
    pub ipv4_prefix: u8,
    /// IPv6 peers sharing this many leading bits are in one subnet.
    pub ipv6_prefix: u8,
    /// Hand out peers nearest first (subnet, zone, region, other); `false` = uniformly random.
    pub tiers: bool,
    /// Every reply to a leecher holds at least this many seeders when the swarm has any (0 to 8).
    pub seeder_guard: u8,
    /// Percentage of each reply's slots given to the next farther tiers so groups stay connected.
    pub spill_percent: u8,
    /// Leechers per region, first come, that take links to other regions; stalled leechers too (0 = every leecher).
    pub bridgeheads: u16,
    /// Past the first `bridgeheads`, one leecher in this many per region links regions too (0 = none).
    pub bridgehead_every: u16,
    /// Operator-written topology; the longest matching prefix wins.
    pub sites: Vec<Site>,
}

impl Default for LocalityConfig {
    fn default() -> Self {
        Self {
            ipv4_prefix: 24,
            ipv6_prefix: 64,
            tiers: true,
            seeder_guard: 2,
            spill_percent: 15,
            bridgeheads: 1,
            bridgehead_every: 0,
            sites: Vec::new(),
        }
    }
}

/// `[limits]`: what one client (one token holder, or anyone in open mode)
/// can make the tracker store. Past a limit a newcomer is still answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Peers one IP address may list in one swarm; a new peer id from an
    /// address at the limit replaces that address's oldest entry.
    pub peers_per_address: usize,
    /// Peers one swarm may list; past it a newcomer gets peers but is not stored.
    pub peers_per_swarm: usize,
    /// Peers all swarms together may list; likewise.
    pub peers: usize,
    /// Swarms held at once; past it an announce for a new torrent gets an empty answer.
    pub swarms: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            peers_per_address: 32,
            peers_per_swarm: 200_000,
            peers: 10_000_000,
            swarms: 2_000_000,
        }
    }
}

impl LimitsConfig {
    /// The engine's view of these limits.
    pub fn storage(&self) -> crate::swarm::StorageLimits {
        crate::swarm::StorageLimits {
            peers_per_address: self.peers_per_address,
            peers_per_swarm: self.peers_per_swarm,
            peers: self.peers,
            swarms: self.swarms,
        }
    }
}

/// `[offload]`: what peers report they sent and received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OffloadConfig {
    /// Networks of the registry's own seeders (origins), whose uploads are
    /// counted apart from the swarm's.
    pub origins: Vec<IpNet>,
}

impl OffloadConfig {
    /// The engine's view of the origins.
    pub fn origins(&self) -> crate::swarm::Origins {
        crate::swarm::Origins::new(self.origins.clone())
    }
}

/// One `[[locality.sites]]` entry: the addresses of one zone in one region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    /// Addresses of the site, e.g. `"10.1.0.0/16"`.
    pub cidr: IpNet,
    /// Zone name (e.g. an availability zone).
    pub zone: String,
    /// Region name.
    pub region: String,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `human` (default) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `swarmgate=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable text.
    Human,
    /// One JSON object per line.
    Json,
}

/// Environment variables that override configuration keys start with this:
/// `SWARMGATE_AUTH__JWKS_URL` sets `auth.jwks_url` (`__` separates levels).
pub const ENV_PREFIX: &str = "SWARMGATE_";

/// The configuration `swarmgate config` prints: every key, its default, and what it does.
pub const DEFAULT_CONFIG_TOML: &str = r#"# swarmgate configuration. Every key is optional; shown here with its default.
# Durations are written like "90s", "5m", "1h".

[http]
# Serve HTTP announces (/announce) and scrapes (/scrape).
enabled = true
# Address and port to listen on. "[::]" takes IPv4 and IPv6 (IPv4 clients
# stay IPv4 peers); where the host has no IPv6 it falls back to 0.0.0.0,
# with a warning. "127.0.0.1:6969" keeps it on this machine.
listen = "[::]:6969"
# Reverse proxies (CIDRs) whose X-Forwarded-For header, and whose clients'
# ip/ipv4/ipv6 parameters, are believed. The client is the rightmost
# X-Forwarded-For address that is not itself a trusted proxy.
# Example: trusted_proxies = ["10.0.0.0/8", "127.0.0.1/32"]
trusted_proxies = []
# Time a client has, once it starts a request, to send all of its headers
# (slow-header clients are cut off here).
header_read_timeout = "5s"
# How long a keep-alive connection may wait for its next request, and a
# response may go without a byte written (a client that stops reading is cut
# off; one reading a long response as it comes never is).
idle_timeout = "30s"
# Most HTTP connections open at once; past it new ones are closed at once
# (counted as swarmgate_limit_hits_total{limit="http_connections"}). Keep the
# process's open-file limit above it.
max_connections = 10000

[udp]
# Serve BEP 15 UDP announces; the token travels in BEP 41 URL data
# (udp://HOST:6969/announce?jwt=...), which only libtorrent sends.
enabled = true
# Address and port to listen on; "[::]" as for http.listen.
listen = "[::]:6969"
# Secret for connection ids. "" = random at every start; set the same value on
# every instance behind one address to keep ids valid across them and restarts.
secret = ""
# How long past two minutes a connection id is still accepted (some clients
# reuse ids a little late).
connection_id_skew = "30s"
# Believe the ip field of announces. Leave off unless a trusted relay sends them.
allow_ip_override = false
# Socket worker tasks; 0 = one per CPU core.
workers = 0

[admin]
# The operators' listener (GET /healthz, /readyz, /metrics). Keep it off the public network.
listen = "127.0.0.1:6970"

[log]
# "human" or "json" (one object per line); --log-format overrides it.
format = "human"
# A tracing filter such as "info" or "swarmgate=debug"; RUST_LOG overrides it.
level = "info"

[announce]
# How often clients are told to re-announce.
interval = "60s"
# The shortest re-announce interval clients are told to respect.
min_interval = "30s"
# How long a peer stays listed after its last announce. Must exceed interval.
peer_lifetime = "150s"
# How often expired peers and empty swarms are swept out.
cleanup_interval = "30s"
# Peers handed out when a client does not say how many it wants.
default_numwant = 50
# The most peers handed out in one reply, whatever the client asks.
max_numwant = 200
# The most infohashes answered in one scrape.
max_scrape_infohashes = 50

[auth]
# "jwt": only infohashes approved by a registry-signed token (?jwt=... in the
# announce URL, or an Authorization: Bearer header). "open": anyone may
# announce any infohash (a public tracker).
mode = "jwt"
# The required iss claim. Quay signs with "quay".
issuer = "dev-registry"
# A value the aud claim (string or array) must contain; "" leaves aud unchecked.
# Quay puts the announce URL without its jwt parameter there.
audience = ""
# Accepted signature algorithms (RS256 RS384 RS512 PS256 PS384 PS512 ES256
# ES384 EdDSA). "none" and HMAC (HS256...) are always refused.
algorithms = ["RS256", "PS256", "ES256", "EdDSA"]
# Clock skew allowed when checking exp and nbf.
leeway = "60s"
# Refuse tokens without an exp claim (Quay's tokens have none).
require_exp = false
# The registry's JWKS, e.g. "https://registry.example/keys/services/quay/keys".
# Fetched at start, every jwks_refresh, and at once for an unknown kid. "" = none.
jwks_url = ""
# How often the JWKS is refetched.
jwks_refresh = "5m"
# Time limit of one JWKS fetch.
jwks_timeout = "5s"
# A token naming an unknown kid waits for a JWKS fetch that starts after it
# arrived (one fetch answers every waiting request), so a key the registry
# has just published is accepted on first use. Fetch starts, periodic ones
# included, are at least this far apart; a kid such a fetch showed missing is
# refused at once for this long.
jwks_min_refetch = "1s"
# Most requests waiting at once for such a fetch; more are refused at once
# (reason refetch_busy), so made-up kids cannot pile up requests.
jwks_max_waiting = 1024
# A directory of public keys: *.json (a JWKS or one JWK) and public-key *.pem
# files (kid = file name without extension). "" = none. The default, "keys",
# holds the repository's DEVELOPMENT keys, whose private halves are public:
# set keys_dir = "" and jwks_url for production.
keys_dir = "keys"
# How many verified tokens are remembered (a hit skips the signature check).
token_cache = 100000
# Longest token accepted, in bytes; longer ones are refused unread.
max_token_bytes = 4096

[locality]
# IPv4 peers sharing this many leading address bits are in one subnet (rack).
ipv4_prefix = 24
# IPv6 peers sharing this many leading address bits are in one subnet.
ipv6_prefix = 64
# Hand out peers nearest first: same subnet, then same zone, then same region,
# then anywhere (random within each tier). false = uniformly random handout.
tiers = true
# Starvation guard 1: every reply to a leecher holds at least this many
# seeders (nearest first) when the swarm has any, even if nearer tiers are
# full of leechers. 0 to 8; 0 disables.
seeder_guard = 2
# Starvation guard 2: this percentage of each reply's slots goes to the next
# farther tiers, so racks and zones stay connected. 0 disables.
spill_percent = 15
# Bridgeheads, against the opposite waste: of each region's leechers (in a
# swarm, in the order they joined), only the first this many take links to
# other regions; the rest are handed no peer of another region and are handed
# to no announcer of another region, so a remote region pulls a layer across
# its slow link about once and spreads it inside. A region that holds a
# seeder takes no far links at all: it serves itself. When a bridgehead
# finishes or leaves, another leecher takes its place at its next announce,
# and a leecher whose reported download stood still over
# announce.min_interval or longer is handed far peers anyway, so a region
# whose bridgeheads are stuck heals within an announce interval (a client
# re-announcing faster is not judged on the gap between two pieces). Only for
# peers a site places in a region. 0 disables (every leecher may link
# regions).
bridgeheads = 1
# Past the first bridgeheads, one leecher in this many of a region links
# regions too; 0 = none. Entry points in proportion (4: a region of 480 that
# starts at once gets 120) help clients that fetch the rarest pieces first
# (libtorrent); clients that fetch in order, as swarmgate agent does, pull
# the same pieces across once more per extra bridgehead.
bridgehead_every = 0
# The operator's topology, one [[locality.sites]] table per site; the longest
# matching prefix wins. Example:
#   [[locality.sites]]
#   cidr = "10.1.0.0/16"
#   zone = "us-east-1a"
#   region = "us-east-1"
sites = []

# What one client (a token holder, or anyone in open mode) can make the
# tracker store. Past a limit the announcer is still answered with peers; each
# hit counts in swarmgate_limit_hits_total{limit}.
[limits]
# Peers one IP address may list in one swarm (per address family). A new
# peer id from an address at the limit replaces its oldest entry, so a client
# that restarts with a new id is never locked out.
peers_per_address = 32
# Peers one swarm may list (a dual-stack peer counts once per family); a
# newcomer to a full swarm gets peers but is not stored.
peers_per_swarm = 200000
# Peers all swarms together may list; likewise.
peers = 10000000
# Swarms held at once; an announce for a new torrent past it gets no peers.
swarms = 2000000

# What peers report they sent and received (the uploaded and downloaded of
# every announce), as increases per peer: swarmgate_reported_bytes_total on
# /metrics, and the busiest swarms at the admin listener's /swarms. The
# offload, the share of what peers received that other peers sent, is what
# the swarm took off the registry. See docs/offload.md.
[offload]
# Networks of the registry's own seeders (origins), e.g. ["10.0.0.5/32"]:
# their uploads count apart from the swarm's. Web seeds need no entry:
# they never announce, so their bytes show only as peers' downloads.
origins = []

[store]
# Where the swarms are saved so that a restart (an upgrade, a crash) keeps
# them: written every snapshot_interval and at SIGTERM/SIGINT, read at
# start; peers whose lifetime ran out meanwhile are dropped. A file that
# cannot be read is moved aside (NAME.corrupt-TIME) and the tracker starts
# empty. Relative to the working directory. "" = keep nothing. An instance
# holds NAME.lock beside it while it runs: a second instance given the same
# path refuses to start (each needs its own).
snapshot_path = "swarmgate-snapshot.bin"
# How often the snapshot is written: a kill -9 loses at most this much.
snapshot_interval = "30s"

# Several instances behind one address (a load balancer, a DNS name, a list
# of announce URLs) answering as one tracker. Each keeps every swarm in
# memory and answers from it; changes meet in Redis (one hash per swarm,
# hash-tagged by infohash for Redis Cluster) and reach the other instances
# through a channel. If Redis goes away, instances keep answering from what
# they hold and resynchronise when it returns. See docs/cluster.md.
[cluster]
# Redis URL, e.g. "redis://10.0.0.5:6379", "rediss://…" for TLS, with
# "user:password@" for an ACL user or ":password@" for requirepass; for a
# Redis Cluster, one or more seed nodes separated by commas (every node the
# cluster names is learned, so one live seed is enough). "" = a single
# instance (no Redis). Logs show it with the password as ***.
redis = ""
# Prefix of every key and of the channel: instances sharing it are one tracker.
namespace = "swarmgate"
# How often changes are written to Redis and published: the bulk of the time
# a peer takes to appear on the other instances.
flush_interval = "50ms"
# Peer expiries are rounded up to a multiple of this, so a re-announce
# replicates only when its expiry crosses a step (announce.interval / step of
# them). A peer that goes silent stays listed up to this much longer.
expiry_step = "120s"
# Changes held between two flushes; past it they are dropped and counted
# (swarmgate_cluster_changes_total{result="dropped"}).
max_pending = 262144
# Deadline for connecting to Redis and for each command.
timeout = "2s"
# ACL user for URLs that name none, used with password.
username = ""
# Password for URLs that carry none. Keep it out of the file: set
# SWARMGATE_CLUSTER__PASSWORD in the environment.
password = ""
# PEM CA certificates trusted for rediss:// instead of the system's roots.
tls_ca_file = ""
# PEM client certificate, for Redis that asks for one (tls-auth-clients).
tls_cert_file = ""
# PEM private key of tls_cert_file.
tls_key_file = ""
# Redis Sentinel: the name of the primary the sentinels monitor. redis then
# lists the sentinels ("redis://s1:26379,redis://s2:26379"; their URLs'
# credentials are the sentinels' own, username/password the primary's), and
# the instance follows the primary through failovers. "" = no Sentinel.
sentinel_master = ""

# `swarmgate bridge`: the registry side, beside an OCI registry you already
# run. It serves each blob's torrent (to callers the registry authorises),
# a web seed, and the JWKS trackers check tokens with. `serve` ignores this
# section; the bridge reads it and [log]. Every key is read at start; SIGHUP
# rotates the signing key.
[bridge]
# Public listener: GET /c1/torrent/NAME/blobs/DIGEST, /seed/..., /keys/....
listen = "0.0.0.0:6980"
# Operators' listener: /healthz, /readyz, /metrics, POST /admin/rotate.
admin_listen = "127.0.0.1:6981"
# The OCI Distribution registry (v2 API) the bridge stands beside.
upstream = "http://127.0.0.1:5000"
# The bridge's own registry account, with read access to what it serves: the
# web seed streams blobs with it. "" = anonymous.
upstream_username = ""
# Its password (or token); SWARMGATE_BRIDGE__UPSTREAM_PASSWORD keeps it out of files.
upstream_password = ""
# Time limit for the registry's answer, and for any pause while a blob streams.
upstream_timeout = "30s"
# The bridge's base URL as clients reach it; web seed URLs start with it.
# "" = http://LISTEN-ADDRESS (only right when clients can reach that address).
public_url = ""
# Announce URLs written in every torrent (the first is announce; all of them
# go in announce-list), each carrying a token for the torrent's infohash.
trackers = ["http://127.0.0.1:6969/announce"]
# Bytes per piece (power of two, 16KiB to 64MiB). Part of every infohash:
# changing it gives every blob a new torrent.
piece_length = "512KiB"
# Largest blob, in bytes, a torrent is built for; larger ones get 413.
max_blob_bytes = 17179869184
# Directory of built torrents (one small file per blob), kept across restarts.
cache_dir = "bridge-cache"
# Most bytes the cache directory holds; the least recently used go first.
cache_max_bytes = 268435456
# Signing keys (KID.pem, e.g. from swarmgate keygen) and rotation.json, the
# schedule. Empty at first start: the bridge generates a key.
keys_dir = "bridge-keys"
# The iss claim of every token: the trackers' auth.issuer.
issuer = "swarmgate-bridge"
# The aud claim; "" = none.
audience = ""
# The JWKS is served at /keys/services/SERVICE/keys (Quay's path): the
# trackers' auth.jwks_url.
service = "swarmgate"
# Algorithm of the keys the bridge generates: ES256 or EdDSA (tokens short
# enough for UDP announces), or RS256.
key_algorithm = "ES256"
# On rotation the new key is published at once and signs only after this
# delay, so trackers have fetched it first (a tracker that has not also
# fetches an unknown kid at once).
rotation_delay = "5m"
# A retired key stays published this long after its successor starts
# signing, so torrents already handed out keep working; then it is deleted.
retired_overlap = "24h"
# Lifetime of tokens (sets exp); "0s" = no exp, as Quay's.
token_ttl = "0s"

# `swarmgate agent`: the node side, one per node. A pull-through mirror that
# containerd (or CRI-O) uses for the registries below: manifests go to the
# registry, layers come from other agents over BitTorrent (torrents from the
# bridge, peers from the tracker), with the registry as the fallback. Every
# blob and manifest is served only after the registry authorised the caller.
# `serve` and `bridge` ignore this section. Every key is read at start.
[agent]
# The mirror: containerd's hosts.toml names http://LISTEN (see
# `swarmgate agent hosts`). Keep it on loopback unless the node's other
# runtimes need it.
listen = "127.0.0.1:6990"
# Operators' listener: /healthz, /readyz, /metrics.
admin_listen = "127.0.0.1:6991"
# The registries mirrored: name is the host as image references (and
# containerd's ?ns=) give it, url how to reach it, bridge the swarmgate
# bridge beside it ("" = layers from the registry only). The first one
# answers requests that name no registry.
registries = [{ name = "127.0.0.1:5000", url = "http://127.0.0.1:5000", bridge = "http://127.0.0.1:6980" }]
# A Docker config.json (its "auths"), used for callers that send no
# credentials: the supported path under Kubernetes, where CRI gives mirrors
# no pull secrets. "" = none: such callers get the registry's 401.
docker_config = ""
# Time limit for the registry's and the bridge's answers, and for any pause
# while a blob streams from them.
upstream_timeout = "30s"
# Directory of verified blobs, seeded while they are kept.
cache_dir = "agent-cache"
# Most bytes of blobs the cache holds; the least recently used go first
# (seeding stops, then the file is deleted). A blob that does not fit
# streams from the origin uncached.
cache_max_bytes = 21474836480
# BitTorrent listener for other agents (TCP).
peer_listen = "0.0.0.0:6881"
# Port announced to the tracker; 0 = peer_listen's. The address is the one
# the tracker sees, so locality applies unchanged.
announce_port = 0
# A pull goes to the origin (the bridge's web seed, else the registry) for
# what is missing when peers sent no byte for this long: none for this blob
# (verified in any order, or in flight) and none verified for any other blob
# this node pulls (a link its other pulls fill is no failure of peers);
# after a quarter of it already when the tracker named no peer. The first
# node of a swarm (the tracker lists no seeder and no other leecher) goes at
# once and stays listed; the nodes after it wait for it.
peer_deadline = "5s"
# Blobs smaller than this come from the registry directly (configs, tiny
# layers): a torrent costs more than it saves there.
p2p_min_bytes = 1048576
# Peers asked of the tracker per announce, 1 to 200. librqbit asks for none,
# and would get the tracker's announce.default_numwant (50): every peer far
# away too, each with a piece in flight over the slow link. A few peers,
# nearest first, keep a region's pull inside it.
numwant = 8
"#;

/// Keys read only at start: SIGHUP logs a change to them and keeps the
/// running value (listeners stay bound, swarms keep their lifetime).
pub const RESTART_ONLY_KEYS: &[&str] = &[
    "http.enabled",
    "http.listen",
    "http.max_connections",
    "udp.enabled",
    "udp.listen",
    "udp.secret",
    "udp.connection_id_skew",
    "udp.workers",
    "admin.listen",
    "log.format",
    "log.level",
    "announce.peer_lifetime",
    "announce.cleanup_interval",
    "store.snapshot_path",
    "store.snapshot_interval",
    "cluster.redis",
    "cluster.namespace",
    "cluster.flush_interval",
    "cluster.expiry_step",
    "cluster.max_pending",
    "cluster.timeout",
    "cluster.username",
    "cluster.password",
    "cluster.tls_ca_file",
    "cluster.tls_cert_file",
    "cluster.tls_key_file",
    "cluster.sentinel_master",
];

impl Config {
    /// The restart-only keys whose values differ between `self` and `other`.
    pub fn restart_only_changes(&self, other: &Config) -> Vec<&'static str> {
        let (Ok(ours), Ok(theirs)) = (toml::Table::try_from(self), toml::Table::try_from(other))
        else {
            return Vec::new();
        };
        let at = |table: &toml::Table, key: &str| {
            let (section, name) = key.split_once('.')?;
            table.get(section)?.get(name).cloned()
        };
        RESTART_ONLY_KEYS
            .iter()
            .copied()
            .filter(|key| at(&ours, key) != at(&theirs, key))
            .collect()
    }
}

/// The configuration reference as a Markdown table, generated from the
/// comments of [`DEFAULT_CONFIG_TOML`] (`swarmgate config --markdown`; the
/// docs/configuration.md embeds it, and a test keeps the two identical).
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "| key | default | environment variable | on SIGHUP | meaning |\n|---|---|---|---|---|\n",
    );
    let mut section = "";
    let mut comment: Vec<String> = Vec::new();
    for line in DEFAULT_CONFIG_TOML.lines() {
        let line = line.trim_end();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name;
            comment.clear();
        } else if let Some(text) = line.strip_prefix('#') {
            // Indented comment lines are examples: shown as code.
            match text.strip_prefix("   ") {
                Some(example) => comment.push(format!("`{}`", example.trim())),
                None => comment.push(text.trim().to_owned()),
            }
        } else if let Some((key, default)) = line.split_once(" = ") {
            if !section.is_empty() {
                let variable = format!(
                    "{ENV_PREFIX}{}__{}",
                    section.to_uppercase(),
                    key.to_uppercase()
                );
                let meaning = comment.join(" ").replace('|', "\\|").replace('*', "\\*");
                let name = format!("{section}.{key}");
                let reload = if section == "bridge" {
                    "restart (bridge)"
                } else if section == "agent" {
                    "restart (agent)"
                } else if RESTART_ONLY_KEYS.contains(&name.as_str()) {
                    "restart"
                } else {
                    "applied"
                };
                out.push_str(&format!(
                    "| `{name}` | `{default}` | `{variable}` | {reload} | {meaning} |\n"
                ));
            }
            comment.clear();
        } else {
            comment.clear();
        }
    }
    out
}

/// Sets the key a `SWARMGATE_A__B` variable names in `table`. The value is
/// taken as the type the key has by default: text for string keys, TOML
/// otherwise (`8`, `true`, `["10.0.0.0/8"]`, `[{cidr = "...", ...}]`).
fn apply_env(
    table: &mut toml::Table,
    defaults: &toml::Table,
    name: &str,
    value: &str,
) -> Result<(), String> {
    let path: Vec<String> = name[ENV_PREFIX.len()..]
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    let Some((leaf, sections)) = path.split_last() else {
        return Err(format!("{name}: names no key"));
    };
    let mut default = defaults;
    let mut target = table;
    for section in sections {
        default = match default.get(section) {
            Some(toml::Value::Table(inner)) => inner,
            _ => return Err(format!("{name}: there is no [{section}] section")),
        };
        let entry = target
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        target = match entry {
            toml::Value::Table(inner) => inner,
            _ => return Err(format!("{name}: {section} is not a section")),
        };
    }
    // Durations and addresses are strings by default too, so "90s" and
    // "0.0.0.0:6969" need no quotes in the environment.
    let parsed = match default.get(leaf) {
        Some(toml::Value::String(_)) => toml::Value::String(value.to_owned()),
        Some(_) => parse_value(name, value)?,
        None => return Err(format!("{name}: no such key (see `swarmgate config`)")),
    };
    target.insert(leaf.clone(), parsed);
    Ok(())
}

fn parse_value(name: &str, value: &str) -> Result<toml::Value, String> {
    let wrapped: toml::Table = toml::from_str(&format!("value = {value}"))
        .map_err(|error| format!("{name}: not a TOML value: {}", error.message()))?;
    wrapped
        .get("value")
        .cloned()
        .ok_or_else(|| format!("{name}: not a TOML value"))
}

/// Why a configuration cannot be used. The message names the file, key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is well-formed but unusable.
    #[error("invalid config file {path}: {key}{line}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The dotted key, e.g. `announce.min_interval`.
        key: &'static str,
        /// ` (line N)` when the key was found in the file, else empty.
        line: String,
        /// What is wrong and what would be right.
        reason: String,
    },
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Self::load(Some(path), std::iter::empty())
    }

    /// Reads `path` (or the built-in defaults when `None`), then applies
    /// `SWARMGATE_*` variables from `env`, then validates.
    pub fn load<I>(path: Option<&Path>, env: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let (text, origin) = match path {
            Some(path) => {
                let display = path.display().to_string();
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: display.clone(),
                    source,
                })?;
                (text, display)
            }
            None => (String::new(), "built-in defaults".to_owned()),
        };
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .collect();
        if overrides.is_empty() {
            return Self::from_toml(&text, &origin);
        }
        let mut table: toml::Table = toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: origin.clone(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        let defaults = toml::Table::try_from(Config::default()).unwrap_or_default();
        for (name, value) in &overrides {
            apply_env(&mut table, &defaults, name, value).map_err(|message| {
                ConfigError::Parse {
                    path: format!("{origin} + environment"),
                    message,
                }
            })?;
        }
        let merged = toml::to_string(&table).map_err(|error| ConfigError::Parse {
            path: format!("{origin} + environment"),
            message: error.to_string(),
        })?;
        Self::from_toml(&merged, &format!("{origin} + environment"))
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: origin.to_owned(),
            message: error.to_string().trim_end().to_owned(),
        })?;
        config
            .validate()
            .map_err(|(key, reason)| ConfigError::Invalid {
                path: origin.to_owned(),
                key,
                line: line_of(text, key)
                    .map(|n| format!(" (line {n})"))
                    .unwrap_or_default(),
                reason,
            })?;
        Ok(config)
    }

    /// Checks relations between values that types alone cannot express.
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.cluster.tls_cert_file.is_empty() != self.cluster.tls_key_file.is_empty() {
            return Err((
                "cluster.tls_cert_file",
                "a client certificate needs its key: set both cluster.tls_cert_file and cluster.tls_key_file, or neither".into(),
            ));
        }
        let http = &self.http;
        if http.header_read_timeout.is_zero() || http.idle_timeout.is_zero() {
            return Err((
                "http.header_read_timeout",
                "HTTP timeouts must be more than zero".into(),
            ));
        }
        if http.max_connections == 0 {
            return Err(("http.max_connections", "must be at least 1".into()));
        }
        let limits = &self.limits;
        for (key, value) in [
            ("limits.peers_per_address", limits.peers_per_address),
            ("limits.peers_per_swarm", limits.peers_per_swarm),
            ("limits.peers", limits.peers),
            ("limits.swarms", limits.swarms),
        ] {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        let announce = &self.announce;
        if announce.interval.is_zero() {
            return Err(("announce.interval", "must be more than zero".into()));
        }
        if announce.min_interval > announce.interval {
            return Err((
                "announce.min_interval",
                "must not exceed announce.interval".into(),
            ));
        }
        if announce.peer_lifetime <= announce.interval {
            return Err((
                "announce.peer_lifetime",
                "must exceed announce.interval, or peers vanish between their announces".into(),
            ));
        }
        if announce.cleanup_interval.is_zero() {
            return Err(("announce.cleanup_interval", "must be more than zero".into()));
        }
        if announce.default_numwant > announce.max_numwant {
            return Err((
                "announce.default_numwant",
                "must not exceed announce.max_numwant".into(),
            ));
        }
        if announce.max_scrape_infohashes == 0 {
            return Err((
                "announce.max_scrape_infohashes",
                "must be at least 1".into(),
            ));
        }
        self.validate_auth()?;
        self.validate_bridge()?;
        self.validate_agent()?;
        let cluster = &self.cluster;
        if cluster.flush_interval.is_zero() || cluster.timeout.is_zero() {
            return Err((
                "cluster.flush_interval",
                "cluster.flush_interval and cluster.timeout must be more than zero".into(),
            ));
        }
        if cluster.max_pending == 0 {
            return Err(("cluster.max_pending", "must be at least 1".into()));
        }
        if cluster.namespace.is_empty() || cluster.namespace.contains(['{', '}']) {
            return Err((
                "cluster.namespace",
                "must be non-empty and without braces (they are Redis Cluster hash tags)".into(),
            ));
        }
        if self.store.snapshot_interval.is_zero() {
            return Err(("store.snapshot_interval", "must be more than zero".into()));
        }
        if self.locality.ipv4_prefix > 32 {
            return Err(("locality.ipv4_prefix", "must be 0 to 32".into()));
        }
        if self.locality.ipv6_prefix > 128 {
            return Err(("locality.ipv6_prefix", "must be 0 to 128".into()));
        }
        if self.locality.seeder_guard > 8 {
            return Err(("locality.seeder_guard", "must be 0 to 8".into()));
        }
        if self.locality.spill_percent > 100 {
            return Err(("locality.spill_percent", "must be 0 to 100".into()));
        }
        Ok(())
    }
}

impl Config {
    fn validate_auth(&self) -> Result<(), (&'static str, String)> {
        let auth = &self.auth;
        for name in &auth.algorithms {
            if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") {
                return Err((
                    "auth.algorithms",
                    format!("{name} is never allowed: tokens must carry a public-key signature"),
                ));
            }
            if !SIGNATURE_ALGORITHMS.contains(&name.as_str()) {
                return Err((
                    "auth.algorithms",
                    format!(
                        "unknown algorithm {name}; choose from {}",
                        SIGNATURE_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if auth.mode == AuthMode::Open {
            return Ok(());
        }
        if auth.algorithms.is_empty() {
            return Err(("auth.algorithms", "name at least one algorithm".into()));
        }
        if auth.issuer.is_empty() {
            return Err(("auth.issuer", "must be set in jwt mode".into()));
        }
        if auth.jwks_url.is_empty() && auth.keys_dir.is_empty() {
            return Err((
                "auth.keys_dir",
                "jwt mode needs keys: set auth.keys_dir or auth.jwks_url".into(),
            ));
        }
        let http = auth.jwks_url.starts_with("http://") || auth.jwks_url.starts_with("https://");
        if !auth.jwks_url.is_empty() && !http {
            return Err(("auth.jwks_url", "must be an http:// or https:// URL".into()));
        }
        if auth.jwks_refresh.is_zero() || auth.jwks_timeout.is_zero() {
            return Err((
                "auth.jwks_refresh",
                "JWKS durations must be more than zero".into(),
            ));
        }
        if auth.max_token_bytes == 0 {
            return Err(("auth.max_token_bytes", "must be at least 1".into()));
        }
        if auth.jwks_max_waiting == 0 {
            return Err(("auth.jwks_max_waiting", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl Config {
    fn validate_agent(&self) -> Result<(), (&'static str, String)> {
        let agent = &self.agent;
        let is_http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if agent.registries.is_empty() {
            return Err(("agent.registries", "name at least one registry".into()));
        }
        for registry in &agent.registries {
            if registry.name.is_empty() || registry.name.contains(['/', ' ']) {
                return Err((
                    "agent.registries",
                    format!(
                        "name {:?} must be a host[:port], as image references give it",
                        registry.name
                    ),
                ));
            }
            if !is_http(&registry.url) {
                return Err((
                    "agent.registries",
                    format!(
                        "{}: url {:?} must be an http:// or https:// URL",
                        registry.name, registry.url
                    ),
                ));
            }
            if !registry.bridge.is_empty() && !is_http(&registry.bridge) {
                return Err((
                    "agent.registries",
                    format!(
                        "{}: bridge {:?} must be an http:// or https:// URL, or empty",
                        registry.name, registry.bridge
                    ),
                ));
            }
        }
        if agent.upstream_timeout.is_zero() {
            return Err(("agent.upstream_timeout", "must be more than zero".into()));
        }
        if agent.peer_deadline.is_zero() {
            return Err(("agent.peer_deadline", "must be more than zero".into()));
        }
        if !(1..=200).contains(&agent.numwant) {
            return Err(("agent.numwant", "must be 1 to 200".into()));
        }
        if agent.cache_dir.is_empty() {
            return Err(("agent.cache_dir", "must be set".into()));
        }
        Ok(())
    }

    fn validate_bridge(&self) -> Result<(), (&'static str, String)> {
        let bridge = &self.bridge;
        let is_http = |url: &str| url.starts_with("http://") || url.starts_with("https://");
        if !is_http(&bridge.upstream) {
            return Err((
                "bridge.upstream",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if !bridge.public_url.is_empty() && !is_http(&bridge.public_url) {
            return Err((
                "bridge.public_url",
                "must be an http:// or https:// URL, or empty".into(),
            ));
        }
        if bridge.trackers.is_empty() {
            return Err(("bridge.trackers", "name at least one announce URL".into()));
        }
        if let Some(bad) = bridge
            .trackers
            .iter()
            .find(|url| !(is_http(url) || url.starts_with("udp://")))
        {
            return Err((
                "bridge.trackers",
                format!("{bad:?} is not an http://, https:// or udp:// announce URL"),
            ));
        }
        if let Err(error) = crate::torrent::parse_piece_length(&bridge.piece_length) {
            return Err(("bridge.piece_length", error.to_string()));
        }
        if crate::bridge::keys::parse_algorithm(&bridge.key_algorithm).is_none() {
            return Err((
                "bridge.key_algorithm",
                format!("{:?}: choose ES256, EdDSA or RS256", bridge.key_algorithm),
            ));
        }
        if bridge.upstream_timeout.is_zero() {
            return Err(("bridge.upstream_timeout", "must be more than zero".into()));
        }
        if bridge.max_blob_bytes == 0 {
            return Err(("bridge.max_blob_bytes", "must be at least 1".into()));
        }
        if bridge.issuer.is_empty() {
            return Err(("bridge.issuer", "must be set".into()));
        }
        if bridge.service.is_empty() || bridge.service.contains('/') {
            return Err(("bridge.service", "must be one path segment".into()));
        }
        if bridge.cache_dir.is_empty() || bridge.keys_dir.is_empty() {
            return Err((
                "bridge.keys_dir",
                "bridge.keys_dir and bridge.cache_dir must name directories".into(),
            ));
        }
        Ok(())
    }
}

/// The 1-based line on which `section.key` is set, if it can be found.
fn line_of(text: &str, dotted_key: &str) -> Option<usize> {
    let (section, key) = dotted_key.rsplit_once('.')?;
    let mut current = "";
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = header.trim_matches(['[', ']']).trim();
        } else if current == section
            && line
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        {
            return Some(number + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn key_paths(value: &toml::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let toml::Value::Table(table) = value {
            for (key, child) in table {
                let path = format!("{prefix}{key}");
                key_paths(child, &format!("{path}."), out);
                out.insert(path);
            }
        }
    }

    #[test]
    fn printed_default_is_the_real_default_key_for_key() {
        let parsed = Config::from_toml(DEFAULT_CONFIG_TOML, "default").expect("default parses");
        assert_eq!(parsed, Config::default());

        let mut printed = BTreeSet::new();
        key_paths(
            &toml::from_str(DEFAULT_CONFIG_TOML).expect("toml"),
            "",
            &mut printed,
        );
        let mut real = BTreeSet::new();
        key_paths(
            &toml::Value::try_from(Config::default()).expect("serialises"),
            "",
            &mut real,
        );
        assert_eq!(printed, real, "the printed default must list every key");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn environment_variables_override_keys_by_their_default_type() {
        let config = Config::load(
            None,
            env(&[
                ("SWARMGATE_AUTH__JWKS_URL", "http://registry:5000/keys"),
                ("SWARMGATE_ANNOUNCE__INTERVAL", "90s"),
                ("SWARMGATE_ANNOUNCE__MAX_NUMWANT", "80"),
                ("SWARMGATE_UDP__SECRET", "12345"),
                ("SWARMGATE_LOG__FORMAT", "json"),
                ("SWARMGATE_HTTP__TRUSTED_PROXIES", r#"["10.0.0.0/8"]"#),
                (
                    "SWARMGATE_LOCALITY__SITES",
                    r#"[{cidr = "10.1.0.0/16", zone = "a", region = "eu"}]"#,
                ),
                ("PATH", "/usr/bin"),
            ]),
        )
        .expect("loads");
        assert_eq!(config.auth.jwks_url, "http://registry:5000/keys");
        assert_eq!(config.announce.interval, Duration::from_secs(90));
        assert_eq!(config.announce.max_numwant, 80);
        assert_eq!(
            config.udp.secret, "12345",
            "string keys take the text as is"
        );
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(config.http.trusted_proxies.len(), 1);
        assert_eq!(config.locality.sites[0].zone, "a");
    }

    #[test]
    fn environment_overrides_the_file_and_bad_variables_are_named() {
        let dir = std::env::temp_dir().join(format!("swarmgate-env-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("swarmgate.toml");
        std::fs::write(
            &file,
            "[announce]\ninterval = \"30s\"\nmin_interval = \"10s\"\n",
        )
        .expect("write");
        let config = Config::load(Some(&file), env(&[("SWARMGATE_ANNOUNCE__INTERVAL", "45s")]))
            .expect("loads");
        assert_eq!(config.announce.interval, Duration::from_secs(45));
        assert_eq!(config.announce.min_interval, Duration::from_secs(10));

        for (name, value, expect) in [
            (
                "SWARMGATE_ANNOUNCE__NO_SUCH",
                "1",
                "SWARMGATE_ANNOUNCE__NO_SUCH: no such key",
            ),
            ("SWARMGATE_NOPE__KEY", "1", "there is no [nope] section"),
            (
                "SWARMGATE_ANNOUNCE__MAX_NUMWANT",
                "many",
                "not a TOML value",
            ),
            ("SWARMGATE_ANNOUNCE__INTERVAL", "0s", "announce.interval"),
        ] {
            let error = Config::load(Some(&file), env(&[(name, value)]))
                .expect_err(name)
                .to_string();
            assert!(error.contains(expect), "{name}: {error}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_printed_key_has_a_comment_above_it() {
        let lines: Vec<&str> = DEFAULT_CONFIG_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.contains(" = ") && !line.starts_with('#') {
                assert!(
                    i > 0 && lines[i - 1].starts_with('#'),
                    "no comment above `{line}`"
                );
            }
        }
    }

    #[test]
    fn empty_file_means_defaults_and_sites_parse() {
        assert_eq!(
            Config::from_toml("", "x").expect("empty ok"),
            Config::default()
        );
        let text = r#"
[http]
trusted_proxies = ["10.0.0.0/8", "::1/128"]
[[locality.sites]]
cidr = "10.1.0.0/16"
zone = "a"
region = "r"
"#;
        let config = Config::from_toml(text, "x").expect("valid");
        assert_eq!(config.http.trusted_proxies.len(), 2);
        assert_eq!(config.locality.sites[0].zone, "a");
    }

    #[test]
    fn insecure_or_unknown_algorithms_are_refused() {
        for (text, needle) in [
            ("[auth]\nalgorithms = [\"none\"]\n", "none is never allowed"),
            (
                "[auth]\nalgorithms = [\"ES256\", \"HS256\"]\n",
                "HS256 is never allowed",
            ),
            ("[auth]\nalgorithms = [\"XX1\"]\n", "unknown algorithm XX1"),
            ("[auth]\nkeys_dir = \"\"\n", "jwt mode needs keys"),
            ("[auth]\njwks_url = \"ftp://x\"\n", "http:// or https://"),
        ] {
            let error = Config::from_toml(text, "f.toml")
                .expect_err(text)
                .to_string();
            assert!(
                error.contains(needle) && error.contains("line 2"),
                "{error}"
            );
        }
        let open = "[auth]\nmode = \"open\"\nkeys_dir = \"\"\n";
        assert!(
            Config::from_toml(open, "f.toml").is_ok(),
            "open mode needs no keys"
        );
    }

    #[test]
    fn errors_name_key_and_line() {
        let unknown = Config::from_toml(
            "[announce]\ninterval = \"60s\"\nintervall = \"5s\"\n",
            "f.toml",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(
            unknown.contains("f.toml")
                && unknown.contains("line 3")
                && unknown.contains("intervall"),
            "{unknown}"
        );

        let bad_duration = Config::from_toml("[announce]\ninterval = \"soon\"\n", "f.toml")
            .expect_err("bad duration")
            .to_string();
        assert!(
            bad_duration.contains("line 2") && bad_duration.contains("interval"),
            "{bad_duration}"
        );

        let relation = Config::from_toml(
            "[announce]\ninterval = \"60s\"\nmin_interval = \"2m\"\n",
            "f.toml",
        )
        .expect_err("min > interval")
        .to_string();
        assert_eq!(
            relation,
            "invalid config file f.toml: announce.min_interval (line 3): must not exceed announce.interval"
        );

        let bad_cidr = Config::from_toml("[http]\ntrusted_proxies = [\"10.0.0.0/99\"]\n", "f.toml")
            .expect_err("bad cidr")
            .to_string();
        assert!(bad_cidr.contains("line 2"), "{bad_cidr}");
    }

    #[test]
    fn restart_only_changes_name_exactly_the_keys_that_changed() {
        let current = Config::default();
        let mut new = current.clone();
        new.http.listen = "127.0.0.1:7000".parse().expect("addr");
        new.log.level = "debug".into();
        new.announce.interval = Duration::from_secs(90);
        new.auth.issuer = "quay".into();
        assert_eq!(
            current.restart_only_changes(&new),
            ["http.listen", "log.level"]
        );
        assert!(current.restart_only_changes(&current).is_empty());
        // Every restart-only key is a real key, marked so in the reference.
        let reference = reference_markdown();
        for key in RESTART_ONLY_KEYS {
            assert!(reference.contains(&format!("| `{key}` |")), "{key}");
        }
        assert_eq!(
            reference.matches("| restart |").count(),
            RESTART_ONLY_KEYS.len()
        );
    }
}
