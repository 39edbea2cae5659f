//! What operators scrape from `/metrics`: one Prometheus registry per
//! server, and pre-registered handles for the hot paths.
//!
//! The registry is not installed as the process-wide `metrics` recorder:
//! each [`Metrics`] is its own, so several servers in one process (tests,
//! embedders) never mix their numbers. Hot paths hold [`metrics::Counter`]
//! and [`metrics::Histogram`] handles registered once at startup, so
//! counting a request is an atomic add, not a lookup by name.

use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};

use crate::bittorrent::Tier;
use crate::swarm::{Engine, Limit, PurgeStats};

/// Request latency buckets (seconds): 25 µs to 1 s, since a tracker answers
/// in microseconds unless something is wrong (a JWKS refetch, a stall).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
    0.25, 1.0,
];

/// Bridge torrent build duration buckets (seconds): a layer takes from
/// milliseconds (small, local registry) to minutes (gigabytes, remote).
const BUILD_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Cleanup (expiry sweep) duration buckets (seconds).
/// Replication lag buckets: flushes every 50 ms by default, so most of the
/// mass sits below 0.1 s; the tail shows a struggling link.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
];

const SWEEP_BUCKETS: &[f64] = &[0.000_1, 0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// What a described metric is, so its help text is filed under the right type.
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One server's metrics registry.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// An empty registry with swarmgate's histogram buckets and metric help texts.
    pub fn new() -> Self {
        // Both bucket lists are fixed and non-empty, and the builder refuses
        // only empty ones; the fallback (summaries instead) is unreachable.
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("swarmgate_request_duration_seconds".into()),
                LATENCY_BUCKETS,
            )
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("swarmgate_cleanup_duration_seconds".into()),
                    SWEEP_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("swarmgate_bridge_build_duration_seconds".into()),
                    BUILD_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("swarmgate_agent_pull_duration_seconds".into()),
                    BUILD_BUCKETS,
                )
            })
            .and_then(|builder| {
                builder.set_buckets_for_metric(
                    Matcher::Full("swarmgate_cluster_replication_lag_seconds".into()),
                    LAG_BUCKETS,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        let metrics = Self { recorder, handle };
        metrics.describe();
        metrics
    }

    fn describe(&self) {
        let help: &[(Kind, &str, Option<Unit>, &str)] = &[
            (
                Kind::Counter,
                "swarmgate_requests_total",
                None,
                "Requests answered, by protocol, kind and result (ok, rejected: refused by policy, error: malformed)",
            ),
            (
                Kind::Gauge,
                "swarmgate_cluster_link_up",
                None,
                "1 while the link to Redis is up and resynchronised; 0 while this instance answers alone",
            ),
            (
                Kind::Counter,
                "swarmgate_cluster_changes_total",
                None,
                "Peer changes sent to Redis, applied from other instances, or dropped (feed full, link down)",
            ),
            (
                Kind::Counter,
                "swarmgate_cluster_write_refusals_total",
                None,
                "Batches Redis refused in part (a key of another type, out of memory, an ACL); the rest was written",
            ),
            (
                Kind::Counter,
                "swarmgate_cluster_resyncs_total",
                None,
                "Connections to Redis with a full resynchronisation, by result",
            ),
            (
                Kind::Gauge,
                "swarmgate_cluster_resync_peers",
                None,
                "Peers the last resynchronisation pulled from Redis and pushed to it",
            ),
            (
                Kind::Counter,
                "swarmgate_cluster_corrupt_total",
                None,
                "Unreadable batches on the channel and values in Redis, ignored",
            ),
            (
                Kind::Histogram,
                "swarmgate_cluster_replication_lag_seconds",
                Some(Unit::Seconds),
                "From another instance publishing a batch to this one applying it (clocks of two hosts)",
            ),
            (
                Kind::Counter,
                "swarmgate_snapshot_writes_total",
                None,
                "Snapshot writes (store.snapshot_path), by result; on error the previous file stays",
            ),
            (
                Kind::Counter,
                "swarmgate_snapshot_loads_total",
                None,
                "Snapshot loads at start, by result (missing, restored, set_aside: unusable, moved aside)",
            ),
            (
                Kind::Gauge,
                "swarmgate_snapshot_peers",
                None,
                "Peers in the last snapshot written",
            ),
            (
                Kind::Gauge,
                "swarmgate_snapshot_bytes",
                Some(Unit::Bytes),
                "Size of the last snapshot written",
            ),
            (
                Kind::Gauge,
                "swarmgate_snapshot_duration_seconds",
                Some(Unit::Seconds),
                "Time the last snapshot write took (copy, encode, durable write)",
            ),
            (
                Kind::Gauge,
                "swarmgate_snapshot_last_success_timestamp_seconds",
                Some(Unit::Seconds),
                "Unix time of the last snapshot written; alert when it falls behind a few intervals",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_torrents_total",
                None,
                "Bridge: torrent requests, by result (ok, refused: the registry said 401/403/404, bad_request, too_large, upstream_error, digest_mismatch, interrupted)",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_cache_lookups_total",
                None,
                "Bridge: torrent cache lookups, by result (hit, miss, corrupt: a file that did not read back, deleted)",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_builds_total",
                None,
                "Bridge: torrents built by streaming a blob, by result",
            ),
            (
                Kind::Histogram,
                "swarmgate_bridge_build_duration_seconds",
                Some(Unit::Seconds),
                "Bridge: time to stream and hash one blob",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_build_bytes_total",
                Some(Unit::Bytes),
                "Bridge: blob bytes hashed into torrents",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_upstream_errors_total",
                None,
                "Bridge: registry answers other than success, by status (401, 403, 404, 416, 4xx, 5xx, timeout, unreachable)",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_seed_requests_total",
                None,
                "Bridge: web seed requests, by result",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_seed_bytes_total",
                Some(Unit::Bytes),
                "Bridge: bytes the web seed sent",
            ),
            (
                Kind::Counter,
                "swarmgate_bridge_rotations_total",
                None,
                "Bridge: key rotations started, by result (refused: one was already pending)",
            ),
            (
                Kind::Gauge,
                "swarmgate_bridge_cache_bytes",
                Some(Unit::Bytes),
                "Bridge: bytes in the torrent cache directory",
            ),
            (
                Kind::Gauge,
                "swarmgate_bridge_cache_entries",
                None,
                "Bridge: torrents in the cache",
            ),
            (
                Kind::Gauge,
                "swarmgate_bridge_builds_in_flight",
                None,
                "Bridge: blobs being streamed and hashed now",
            ),
            (
                Kind::Gauge,
                "swarmgate_bridge_published_keys",
                None,
                "Bridge: public keys in the JWKS",
            ),
            (
                Kind::Histogram,
                "swarmgate_request_duration_seconds",
                Some(Unit::Seconds),
                "Time from a request's arrival to its reply being written, by protocol",
            ),
            (
                Kind::Counter,
                "swarmgate_auth_rejections_total",
                None,
                "Requests the gateway refused, by reason",
            ),
            (
                Kind::Counter,
                "swarmgate_token_cache_hits_total",
                None,
                "Tokens found verified in the cache",
            ),
            (
                Kind::Counter,
                "swarmgate_token_cache_misses_total",
                None,
                "Tokens not in the cache (verified or refused in full)",
            ),
            (
                Kind::Gauge,
                "swarmgate_token_cache_size",
                None,
                "Verified tokens cached",
            ),
            (
                Kind::Gauge,
                "swarmgate_jwks_keys",
                None,
                "Keys in the current key set (JWKS plus keys_dir)",
            ),
            (
                Kind::Counter,
                "swarmgate_jwks_refresh_total",
                None,
                "JWKS fetches, by result",
            ),
            (
                Kind::Gauge,
                "swarmgate_jwks_last_success_timestamp_seconds",
                Some(Unit::Seconds),
                "Unix time of the last successful JWKS fetch",
            ),
            (
                Kind::Gauge,
                "swarmgate_swarms",
                None,
                "Swarms held, as of the last cleanup",
            ),
            (
                Kind::Gauge,
                "swarmgate_peers",
                None,
                "Peers held, by role, as of the last cleanup (a dual-stack peer counts per family)",
            ),
            (
                Kind::Counter,
                "swarmgate_reported_bytes_total",
                None,
                "Bytes peers reported in announces, as increases per peer: downloaded (by any peer), uploaded by peers, uploaded by origins ([offload] origins). Offload = uploaded{by=\"peer\"} / the larger of downloaded and all uploaded (docs/offload.md)",
            ),
            (
                Kind::Counter,
                "swarmgate_reported_anomalies_total",
                None,
                "Reported totals that went down (reset: a client restart, counted from zero) or grew past 1 TiB in one announce (implausible: not counted)",
            ),
            (
                Kind::Counter,
                "swarmgate_peers_returned_total",
                None,
                "Peers handed out, by locality tier",
            ),
            (
                Kind::Counter,
                "swarmgate_peers_expired_total",
                None,
                "Peers dropped because they stopped announcing",
            ),
            (
                Kind::Histogram,
                "swarmgate_cleanup_duration_seconds",
                Some(Unit::Seconds),
                "Time one expiry sweep over every swarm took",
            ),
            (
                Kind::Gauge,
                "swarmgate_ready",
                None,
                "1 while /readyz answers ready (a key set loaded in jwt mode), else 0; sampled at each scrape",
            ),
            (
                Kind::Histogram,
                "swarmgate_agent_pull_duration_seconds",
                Some(Unit::Seconds),
                "Agent: time from a blob's first request to its verified last byte, for pulls that verified",
            ),
            (
                Kind::Counter,
                "swarmgate_config_reloads_total",
                None,
                "Configuration reloads (SIGHUP), by result",
            ),
        ];
        for (kind, name, unit, text) in help {
            let (name, text) = ((*name).into(), (*text).into());
            match kind {
                Kind::Counter => self.recorder.describe_counter(name, *unit, text),
                Kind::Gauge => self.recorder.describe_gauge(name, *unit, text),
                Kind::Histogram => self.recorder.describe_histogram(name, *unit, text),
            }
        }
    }

    /// A counter handle for `name` with `labels`.
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.recorder
            .register_counter(&key(name, labels), &metadata())
    }

    /// A gauge handle for `name` with `labels`.
    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.recorder
            .register_gauge(&key(name, labels), &metadata())
    }

    /// A histogram handle for `name` with `labels`.
    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        self.recorder
            .register_histogram(&key(name, labels), &metadata())
    }

    /// Folds the latency samples recorded since the last call into their
    /// buckets. The exporter keeps each sample (8 bytes) until then, so
    /// without a periodic call an unscraped tracker grows by 8 bytes per
    /// request for ever (measured: 10 MiB per 600,000 UDP announces).
    pub fn run_upkeep(&self) {
        self.handle.run_upkeep();
    }

    /// Sets label-less gauges to values read at scrape time (cache sizes,
    /// work in flight), then renders every series: the `/metrics` body of
    /// the bridge and the agent.
    pub fn scrape(&self, gauges: &[(&'static str, f64)]) -> String {
        for (name, value) in gauges {
            self.gauge(name, &[]).set(*value);
        }
        self.render()
    }

    /// Everything in the Prometheus text format.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }

    /// Records one expiry sweep: what went and how long it took.
    pub fn record_sweep(&self, stats: &PurgeStats, took: Duration) {
        self.counter("swarmgate_peers_expired_total", &[])
            .increment(stats.removed_peers as u64);
        self.histogram("swarmgate_cleanup_duration_seconds", &[])
            .record(took.as_secs_f64());
    }

    /// Copies the engine's running totals in: swarms, peers by role, and
    /// handouts per tier (all counted inside the engine's shard locks, where
    /// they cost nothing extra; read at scrape time, so always current).
    pub fn record_engine(&self, engine: &Engine) {
        let totals = engine.totals();
        let census = totals.census;
        self.gauge("swarmgate_swarms", &[])
            .set(census.swarms as f64);
        self.gauge("swarmgate_peers", &[("role", "seeder")])
            .set(census.seeders as f64);
        self.gauge("swarmgate_peers", &[("role", "leecher")])
            .set(census.leechers as f64);
        let counts = &totals.tiers;
        for tier in Tier::ALL {
            self.counter("swarmgate_peers_returned_total", &[("tier", tier.label())])
                .absolute(counts.get(tier));
        }
        let hits = &totals.limit_hits;
        for limit in Limit::ALL {
            self.counter("swarmgate_limit_hits_total", &[("limit", limit.label())])
                .absolute(hits.get(limit));
        }
        let transfer = &totals.transfer;
        for (direction, by, bytes) in [
            ("downloaded", "peer", transfer.downloaded),
            ("uploaded", "peer", transfer.uploaded_by_peers),
            ("uploaded", "origin", transfer.uploaded_by_origins),
        ] {
            self.counter(
                "swarmgate_reported_bytes_total",
                &[("direction", direction), ("by", by)],
            )
            .absolute(bytes);
        }
        for (kind, count) in [
            ("reset", transfer.resets),
            ("implausible", transfer.implausible),
        ] {
            self.counter("swarmgate_reported_anomalies_total", &[("kind", kind)])
                .absolute(count);
        }
    }
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(key, value)| Label::from_static_parts(key, value))
        .collect();
    Key::from_parts(name, labels)
}

fn metadata() -> Metadata<'static> {
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()))
}

/// Which frontend a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// BEP 3 over HTTP.
    Http,
    /// BEP 15 over UDP.
    Udp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Udp => "udp",
        }
    }
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// An announce.
    Announce,
    /// A scrape.
    Scrape,
    /// A UDP connect.
    Connect,
    /// A packet too malformed to tell.
    Unknown,
}

impl RequestKind {
    const ALL: [RequestKind; 4] = [
        RequestKind::Announce,
        RequestKind::Scrape,
        RequestKind::Connect,
        RequestKind::Unknown,
    ];

    fn label(self) -> &'static str {
        match self {
            RequestKind::Announce => "announce",
            RequestKind::Scrape => "scrape",
            RequestKind::Connect => "connect",
            RequestKind::Unknown => "unknown",
        }
    }
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Well formed but refused: token, connection id, limits.
    Rejected,
    /// Malformed, or the tracker failed.
    Error,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Rejected, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Rejected => "rejected",
            Outcome::Error => "error",
        }
    }
}

/// One frontend's request counters and latency histogram, registered once.
pub struct RequestMetrics {
    counts: [[Counter; 3]; 4],
    latency: Histogram,
}

impl RequestMetrics {
    /// Handles for `protocol`'s requests in `metrics`.
    pub fn new(metrics: &Metrics, protocol: Protocol) -> Self {
        let counts = RequestKind::ALL.map(|kind| {
            Outcome::ALL.map(|outcome| {
                if !can_happen(protocol, kind, outcome) {
                    // No series for what cannot happen (an HTTP connect, say),
                    // so dashboards list only real combinations.
                    return Counter::noop();
                }
                metrics.counter(
                    "swarmgate_requests_total",
                    &[
                        ("protocol", protocol.label()),
                        ("kind", kind.label()),
                        ("result", outcome.label()),
                    ],
                )
            })
        });
        let protocol = protocol.label();
        Self {
            counts,
            latency: metrics.histogram(
                "swarmgate_request_duration_seconds",
                &[("protocol", protocol)],
            ),
        }
    }

    /// Handles that record nowhere (for tests and tools that need no metrics).
    pub fn noop() -> Arc<Self> {
        Arc::new(Self {
            counts: RequestKind::ALL.map(|_| Outcome::ALL.map(|_| Counter::noop())),
            latency: Histogram::noop(),
        })
    }

    /// Counts one request and its latency.
    pub fn record(&self, kind: RequestKind, outcome: Outcome, took: Duration) {
        self.counts[kind as usize][outcome as usize].increment(1);
        self.latency.record(took.as_secs_f64());
    }
}

/// Whether the frontends ever count `kind` with `outcome` over `protocol`:
/// connects are UDP only and never refused, and a packet too malformed to
/// classify is always an error.
fn can_happen(protocol: Protocol, kind: RequestKind, outcome: Outcome) -> bool {
    match (protocol, kind) {
        (_, RequestKind::Announce | RequestKind::Scrape) => true,
        (Protocol::Udp, RequestKind::Connect) => outcome == Outcome::Ok,
        (Protocol::Udp, RequestKind::Unknown) => outcome == Outcome::Error,
        (Protocol::Http, RequestKind::Connect | RequestKind::Unknown) => false,
    }
}

/// The gateway's counters: token cache, rejections, key set refreshes.
#[derive(Clone)]
pub struct GatewayMetrics {
    /// Cache hits.
    pub cache_hits: Counter,
    /// Cache misses.
    pub cache_misses: Counter,
    /// Successful JWKS fetches.
    pub jwks_ok: Counter,
    /// Failed JWKS fetches.
    pub jwks_failed: Counter,
    /// Unix time of the last good fetch.
    pub jwks_last_success: Gauge,
    /// Keys in the key set.
    pub keys: Gauge,
    /// Where per-reason rejection counters are registered; none for no-op handles.
    registry: Option<Arc<Metrics>>,
}

impl GatewayMetrics {
    /// Handles in `metrics`.
    pub fn new(metrics: &Arc<Metrics>) -> Self {
        Self {
            cache_hits: metrics.counter("swarmgate_token_cache_hits_total", &[]),
            cache_misses: metrics.counter("swarmgate_token_cache_misses_total", &[]),
            jwks_ok: metrics.counter("swarmgate_jwks_refresh_total", &[("result", "ok")]),
            jwks_failed: metrics.counter("swarmgate_jwks_refresh_total", &[("result", "error")]),
            jwks_last_success: metrics.gauge("swarmgate_jwks_last_success_timestamp_seconds", &[]),
            keys: metrics.gauge("swarmgate_jwks_keys", &[]),
            registry: Some(metrics.clone()),
        }
    }

    /// Handles that record nowhere.
    pub fn noop() -> Self {
        Self {
            cache_hits: Counter::noop(),
            cache_misses: Counter::noop(),
            jwks_ok: Counter::noop(),
            jwks_failed: Counter::noop(),
            jwks_last_success: Gauge::noop(),
            keys: Gauge::noop(),
            registry: None,
        }
    }

    /// Counts one refusal. Reasons are a small fixed set of static strings,
    /// so the lookup by label is cheap next to the token parsing that found it.
    pub fn rejected(&self, reason: &'static str) {
        if let Some(metrics) = &self.registry {
            metrics
                .counter("swarmgate_auth_rejections_total", &[("reason", reason)])
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_render_in_prometheus_text_format() {
        let metrics = Arc::new(Metrics::new());
        let http = RequestMetrics::new(&metrics, Protocol::Http);
        http.record(
            RequestKind::Announce,
            Outcome::Rejected,
            Duration::from_micros(30),
        );
        http.record(
            RequestKind::Announce,
            Outcome::Ok,
            Duration::from_micros(30),
        );
        http.record(RequestKind::Announce, Outcome::Ok, Duration::from_millis(3));
        GatewayMetrics::new(&metrics).rejected("expired");
        let text = metrics.render();
        assert!(
            text.contains(
                r#"swarmgate_requests_total{protocol="http",kind="announce",result="ok"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"swarmgate_requests_total{protocol="http",kind="announce",result="rejected"} 1"#
        ));
        assert!(text.contains(r#"swarmgate_auth_rejections_total{reason="expired"} 1"#));
        // 30 µs falls in the 50 µs bucket, 3 ms only from the 5 ms bucket on.
        assert!(text.contains(
            r#"swarmgate_request_duration_seconds_bucket{protocol="http",le="0.00005"} 2"#
        ));
        assert!(text.contains(
            r#"swarmgate_request_duration_seconds_bucket{protocol="http",le="0.005"} 3"#
        ));
        assert!(text.contains("# HELP swarmgate_requests_total"));
        assert!(text.contains("# TYPE swarmgate_request_duration_seconds histogram"));
    }
}
