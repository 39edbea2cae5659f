//! Several instances answering as one tracker, through Redis.
//!
//! Each instance keeps its whole engine in memory and answers from it, as a
//! single instance does; Redis is where the instances meet, never between a
//! request and its reply.
//!
//! - **Out.** The engine's change feed (new peers, changed ones, stops,
//!   expiries; a re-announce only when its rounded expiry moved) is drained
//!   every `flush_interval`. The changes are written to one hash per swarm
//!   (one pipeline per Redis node) and then published on the namespace's
//!   channel as one batch.
//! - **In.** Other instances' batches are applied to the local engine:
//!   listed peers are restored with the expiry they were given, stopped ones
//!   removed; expiries need no message, every instance drops a peer itself.
//! - **Joining and reconnecting.** Subscribe first, then read every swarm
//!   hash on every node into the engine, then write back (and publish) what
//!   this instance holds that Redis lacks: after a Redis restart that is
//!   everything, after a join usually nothing.
//! - **While Redis is unreachable** the instance answers from what it holds.
//!   The feed is discarded (the resync that follows the reconnect covers
//!   it), the link is reported down (metric, `/readyz` text) and reconnects
//!   back off from 100 ms to 5 s.
//! - **Liveness.** Each instance publishes at least once a second and must
//!   hear its own batches back; a channel silent for longer than a few
//!   timeouts counts as a lost link even if no socket said so.

pub mod link;
pub mod wire;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge, Histogram};
use redis::aio::PubSubStream;
use tokio::sync::watch;

use crate::bittorrent::{ChangeKind, InfoHash, PeerChange, StoredPeer, StoredSwarm};
use crate::metrics::Metrics;
use crate::swarm::Engine;
use link::{Access, Link, LinkError};

/// What the cluster link needs from the configuration.
#[derive(Clone)]
pub struct ClusterSettings {
    /// Redis URL(s), comma-separated seeds of one cluster.
    pub redis: String,
    /// Prefix of every key and the channel's name.
    pub namespace: String,
    /// How often the feed is written out.
    pub flush_interval: Duration,
    /// Connect and command deadline.
    pub timeout: Duration,
    /// How long a swarm hash outlives its last write (a peer's longest listing, plus margin).
    pub key_ttl: Duration,
    /// Credentials and TLS material beyond the URLs.
    pub access: Access,
    /// With Sentinel: the primary's name, and `redis` lists the sentinels.
    pub sentinel_master: Option<String>,
}

/// The link's state, for `/readyz` and tests.
#[derive(Debug, Default)]
pub struct ClusterStatus {
    up: AtomicBool,
    /// Why the last connect failed, while the link is down.
    last_error: parking_lot::Mutex<Option<String>>,
}

impl ClusterStatus {
    /// Whether the link to Redis is up and the engine resynchronised.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Why the link is down, as the last connect said; `None` while up.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// How long a reconnect waits at first, and at most. The cap is short so
/// that writes flow again soon after a Redis Cluster failover (a few
/// seconds); an attempt costs one connection per node.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// A batch carries at most this many changes (about 0.5 MB).
const MAX_BATCH: usize = 8192;
/// Changes per write when a resync pushes what Redis lacks.
const PUSH_SLICE: usize = 16_384;
/// An instance publishes at least this often, so that it can tell a silent channel.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// The metric handles the link counts into.
#[derive(Clone)]
struct ClusterMetrics {
    link_up: Gauge,
    sent: Counter,
    dropped: Counter,
    applied: Counter,
    corrupt_batches: Counter,
    corrupt_values: Counter,
    refusals: Counter,
    resyncs_ok: Counter,
    resyncs_failed: Counter,
    resync_pulled: Gauge,
    resync_pushed: Gauge,
    lag: Histogram,
}

impl ClusterMetrics {
    fn new(metrics: &Metrics) -> Self {
        Self {
            link_up: metrics.gauge("swarmgate_cluster_link_up", &[]),
            sent: metrics.counter("swarmgate_cluster_changes_total", &[("result", "sent")]),
            dropped: metrics.counter("swarmgate_cluster_changes_total", &[("result", "dropped")]),
            applied: metrics.counter("swarmgate_cluster_changes_total", &[("result", "applied")]),
            corrupt_batches: metrics
                .counter("swarmgate_cluster_corrupt_total", &[("source", "channel")]),
            corrupt_values: metrics
                .counter("swarmgate_cluster_corrupt_total", &[("source", "redis")]),
            refusals: metrics.counter("swarmgate_cluster_write_refusals_total", &[]),
            resyncs_ok: metrics.counter("swarmgate_cluster_resyncs_total", &[("result", "ok")]),
            resyncs_failed: metrics
                .counter("swarmgate_cluster_resyncs_total", &[("result", "error")]),
            resync_pulled: metrics.gauge("swarmgate_cluster_resync_peers", &[("way", "pulled")]),
            resync_pushed: metrics.gauge("swarmgate_cluster_resync_peers", &[("way", "pushed")]),
            lag: metrics.histogram("swarmgate_cluster_replication_lag_seconds", &[]),
        }
    }
}

/// The running link: the engine, the settings, who this instance is.
pub struct Cluster {
    engine: Arc<Engine>,
    settings: ClusterSettings,
    seeds: Vec<redis::ConnectionInfo>,
    /// Every node the last slot map named: a reconnect tries them after the
    /// seeds, so an instance whose only seed died finds the cluster again.
    learned: Vec<redis::ConnectionInfo>,
    /// With Sentinel: how to reach the primary the sentinels name (the
    /// first sentinel's scheme and TLS, `[cluster]`'s credentials).
    primary: Option<redis::ConnectionInfo>,
    status: Arc<ClusterStatus>,
    metrics: ClusterMetrics,
    instance: u64,
    channel: String,
    /// Reused between flushes.
    changes: Vec<PeerChange>,
}

/// A connected, resynchronised link and its subscription.
struct Session {
    link: Link,
    messages: PubSubStream,
    /// When this instance last heard its own batch back.
    heard_self: Instant,
    /// When it last published.
    published: Instant,
}

impl Cluster {
    /// Checks the settings; connects nothing yet.
    pub fn new(
        engine: Arc<Engine>,
        settings: ClusterSettings,
        metrics: &Metrics,
    ) -> Result<Self, LinkError> {
        // Sentinels get only the credentials their URLs carry; the
        // primary gets `[cluster]`'s.
        let seed_access = match settings.sentinel_master {
            Some(_) => Access {
                username: None,
                password: None,
                ..settings.access.clone()
            },
            None => settings.access.clone(),
        };
        let seeds = link::seeds(&settings.redis, &seed_access)?;
        if seeds.is_empty() {
            return Err(LinkError::Unreachable("cluster.redis names no node".into()));
        }
        let primary = settings.sentinel_master.as_ref().map(|_| {
            let bare = seeds[0]
                .clone()
                .set_redis_settings(redis::RedisConnectionInfo::default());
            link::with_credentials(bare, &settings.access)
        });
        let channel = format!("{}:changes", settings.namespace);
        Ok(Self {
            engine,
            seeds,
            learned: Vec::new(),
            primary,
            status: Arc::new(ClusterStatus::default()),
            metrics: ClusterMetrics::new(metrics),
            instance: rand::random(),
            channel,
            settings,
            changes: Vec::new(),
        })
    }

    /// The link's state, shared.
    pub fn status(&self) -> Arc<ClusterStatus> {
        self.status.clone()
    }

    /// Connects and resynchronises once, for the start: an instance that
    /// manages it serves full swarms from its first answer; one that does
    /// not starts anyway and keeps trying in [`Cluster::run`].
    pub async fn join(&mut self) -> Option<JoinedSession> {
        match self.connect().await {
            Ok(session) => Some(JoinedSession(session)),
            Err(error) => {
                tracing::warn!(%error, "cluster: Redis unreachable at start; serving what this instance holds and retrying");
                None
            }
        }
    }

    /// Keeps the link up until `stopped`, flushing the feed and applying
    /// other instances' changes; a last flush happens on the way out.
    pub async fn run(mut self, joined: Option<JoinedSession>, mut stopped: watch::Receiver<bool>) {
        let mut session = joined.map(|joined| joined.0);
        let mut backoff = BACKOFF.0;
        loop {
            let Some(live) = session.as_mut() else {
                self.set_up(false);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    () = until_stopped(&mut stopped) => return,
                }
                self.discard_feed();
                match self.connect().await {
                    Ok(connected) => {
                        tracing::info!(
                            nodes = connected.link.node_count(),
                            "cluster: Redis link restored and resynchronised"
                        );
                        session = Some(connected);
                        backoff = BACKOFF.0;
                    }
                    Err(error) => {
                        tracing::warn!(%error, retry_in = ?backoff, "cluster: Redis still unreachable");
                        backoff = (backoff * 2).min(BACKOFF.1);
                    }
                }
                continue;
            };
            self.set_up(true);
            match self.serve(live, &mut stopped).await {
                Ok(()) => {
                    if let Err(error) = self.flush(live).await {
                        tracing::warn!(%error, "cluster: last flush failed");
                    }
                    return;
                }
                Err(error) => {
                    tracing::error!(%error, "cluster: Redis link lost; answering from what this instance holds until it returns");
                    session = None;
                }
            }
        }
    }

    fn set_up(&self, up: bool) {
        self.status.up.store(up, Ordering::Relaxed);
        self.metrics.link_up.set(if up { 1.0 } else { 0.0 });
    }

    /// Flushes on a timer and applies what arrives, until stopped (Ok) or the link fails.
    async fn serve(
        &mut self,
        session: &mut Session,
        stopped: &mut watch::Receiver<bool>,
    ) -> Result<(), LinkError> {
        let mut ticks = tokio::time::interval(self.settings.flush_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let silent_after = HEARTBEAT + 3 * self.settings.timeout;
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    self.flush(session).await?;
                    if session.heard_self.elapsed() > silent_after {
                        return Err(LinkError::Timeout("channel (own batches not heard back)"));
                    }
                }
                message = link::next_message(&mut session.messages) => {
                    let Some(payload) = message else {
                        return Err(LinkError::Unreachable("the subscription closed".into()));
                    };
                    if self.apply(&payload).await == Some(self.instance) {
                        session.heard_self = Instant::now();
                    }
                }
                () = until_stopped(stopped) => return Ok(()),
            }
        }
    }

    /// Applies one batch from the channel (off the runtime's threads: up to
    /// 8,192 restores); returns its sender. Batches are applied one after
    /// another, in the order they arrived.
    async fn apply(&self, payload: &[u8]) -> Option<u64> {
        let unix_now = unix_secs();
        let (header, changes) = match wire::decode_batch(payload, unix_now) {
            Ok(decoded) => decoded,
            Err(error) => {
                self.metrics.corrupt_batches.increment(1);
                tracing::warn!(%error, bytes = payload.len(), "cluster: a batch on the channel could not be read; ignored");
                return None;
            }
        };
        if header.sender == self.instance {
            return Some(header.sender);
        }
        let lag = unix_micros().saturating_sub(header.sent_micros);
        self.metrics.lag.record(lag as f64 / 1e6);
        let engine = self.engine.clone();
        let applied = tokio::task::spawn_blocking(move || engine.apply(&changes, Instant::now()))
            .await
            .unwrap_or_else(|error| {
                tracing::error!(%error, "cluster: applying a batch failed; it is skipped");
                0
            });
        self.metrics.applied.increment(applied as u64);
        Some(header.sender)
    }

    /// Drains the feed and, if anything is there (or a heartbeat is due),
    /// writes and publishes it.
    async fn flush(&mut self, session: &mut Session) -> Result<(), LinkError> {
        let mut changes = std::mem::take(&mut self.changes);
        changes.clear();
        let now = Instant::now();
        let mut dropped = 0;
        for shard in 0..self.engine.shard_count() {
            dropped += self.engine.drain_changes(shard, now, &mut changes);
        }
        if dropped > 0 {
            self.metrics.dropped.increment(dropped);
            tracing::warn!(
                dropped,
                "cluster: the change feed overflowed; a resync is not needed, but other instances miss these until the peers re-announce"
            );
        }
        let result = if changes.is_empty() && session.published.elapsed() < HEARTBEAT {
            Ok(())
        } else {
            self.send(session, &mut changes).await
        };
        self.changes = changes;
        result
    }

    /// Writes changes to the swarm hashes, then publishes them (in that
    /// order, so that an instance that subscribes and then reads misses nothing).
    async fn send(
        &self,
        session: &mut Session,
        changes: &mut Vec<PeerChange>,
    ) -> Result<(), LinkError> {
        // Last writer wins within a batch: one command per field.
        changes.sort_by_key(|change| (change.info_hash.0, wire::field(&change.peer)));
        changes.reverse();
        changes.dedup_by_key(|change| (change.info_hash, wire::field(&change.peer)));
        changes.reverse();
        let unix_now = unix_secs();
        let link = &session.link;
        let mut pipelines = vec![redis::pipe(); link.node_count()];
        for swarm in changes.chunk_by(|a, b| a.info_hash == b.info_hash) {
            let key = wire::swarm_key(&self.settings.namespace, &swarm[0].info_hash);
            let pipeline = &mut pipelines[link.node_of(key.as_bytes())];
            let (listed, removed): (Vec<&PeerChange>, Vec<&PeerChange>) = swarm
                .iter()
                .partition(|change| change.kind == ChangeKind::Listed);
            if !listed.is_empty() {
                let hset = pipeline.cmd("HSET").arg(&key);
                for change in listed {
                    let expires = wire::expires_unix(change.peer.remaining_secs, unix_now);
                    hset.arg(&wire::field(&change.peer)[..])
                        .arg(wire::value(&change.peer, expires));
                }
                pipeline
                    .cmd("EXPIRE")
                    .arg(&key)
                    .arg(self.settings.key_ttl.as_secs());
            }
            if !removed.is_empty() {
                let hdel = pipeline.cmd("HDEL").arg(&key);
                for change in removed {
                    hdel.arg(&wire::field(&change.peer)[..]);
                }
            }
        }
        match link.run(&pipelines).await {
            Ok(()) => {}
            Err(refused @ LinkError::Refused { .. }) => {
                // The rest of the batch was written; the channel still carries all of it.
                self.metrics.refusals.increment(1);
                tracing::warn!(error = %refused, "cluster: Redis refused part of a batch; the other instances still get it through the channel");
            }
            Err(failure) => return Err(failure),
        }
        // Encoded before anything is awaited; at least one batch (the heartbeat).
        let mut batches = vec![wire::BatchEncoder::new(self.instance, unix_micros())];
        for change in changes.iter().filter(|c| c.kind != ChangeKind::Expired) {
            if batches.last().is_some_and(|batch| batch.len() >= MAX_BATCH) {
                batches.push(wire::BatchEncoder::new(self.instance, unix_micros()));
            }
            if let Some(batch) = batches.last_mut() {
                batch.push(change, unix_now);
            }
        }
        let sent: usize = batches.iter().map(wire::BatchEncoder::len).sum();
        let payloads: Vec<Vec<u8>> = batches
            .into_iter()
            .map(wire::BatchEncoder::finish)
            .collect();
        for payload in &payloads {
            link.publish(&self.channel, payload).await?;
        }
        session.published = Instant::now();
        self.metrics.sent.increment(sent as u64);
        Ok(())
    }

    /// Drops whatever the feed holds (the resync after a reconnect covers it).
    fn discard_feed(&mut self) {
        let mut discarded = Vec::new();
        let now = Instant::now();
        let mut dropped = 0;
        for shard in 0..self.engine.shard_count() {
            dropped += self.engine.drain_changes(shard, now, &mut discarded);
            dropped += discarded.len() as u64;
            discarded.clear();
        }
        self.metrics.dropped.increment(dropped);
    }

    /// Connects, subscribes, and resynchronises both ways.
    async fn connect(&mut self) -> Result<Session, LinkError> {
        let result = self.connect_and_sync().await;
        match &result {
            Ok(_) => {
                self.metrics.resyncs_ok.increment(1);
                *self.status.last_error.lock() = None;
            }
            Err(error) => {
                self.metrics.resyncs_failed.increment(1);
                *self.status.last_error.lock() = Some(error.to_string());
            }
        }
        result
    }

    async fn connect_and_sync(&mut self) -> Result<Session, LinkError> {
        let link = match (&self.settings.sentinel_master, &self.primary) {
            (Some(master), Some(primary)) => {
                Link::via_sentinels(&self.seeds, master, primary, self.settings.timeout).await?
            }
            _ => {
                // The seeds first, then every node learned since; each once.
                let mut candidates = self.seeds.clone();
                for node in &self.learned {
                    if !candidates.iter().any(|seed| seed.addr() == node.addr()) {
                        candidates.push(node.clone());
                    }
                }
                Link::connect(&candidates, self.settings.timeout).await?
            }
        };
        if !link.known_nodes().is_empty() {
            self.learned = link.known_nodes().to_vec();
        }
        let messages = link.subscribe(&self.channel).await?;
        // What the feed holds now is covered by the push below.
        self.discard_feed();
        let namespace: Arc<str> = self.settings.namespace.as_str().into();
        let pattern = wire::swarm_key_pattern(&namespace);
        let now = Instant::now();
        let mut seen: HashSet<InfoHash> = HashSet::new();
        let mut push: Vec<PeerChange> = Vec::new();
        let mut pulled = 0usize;
        for node in 0..link.node_count() {
            let mut cursor = 0;
            loop {
                let (next, page) = link.scan_page(node, cursor, &pattern).await?;
                // Decoding and listing a page is CPU work (a resync may list
                // a million peers): off the runtime's threads, one page at a time.
                let (engine, metrics, namespace) =
                    (self.engine.clone(), self.metrics.clone(), namespace.clone());
                let merged = tokio::task::spawn_blocking(move || {
                    merge_page(&engine, &metrics, &namespace, page, now)
                })
                .await
                .map_err(|error| LinkError::Unreachable(format!("resync task failed: {error}")))?;
                pulled += merged.pulled;
                seen.extend(merged.seen);
                push.extend(merged.push);
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        let engine = self.engine.clone();
        let mut local = Vec::new();
        for shard in 0..engine.shard_count() {
            engine.export_shard(shard, now, &mut local);
            for swarm in local.drain(..) {
                if !seen.contains(&swarm.info_hash) {
                    push.extend(
                        swarm
                            .peers
                            .into_iter()
                            .map(|peer| listed(swarm.info_hash, peer)),
                    );
                }
            }
        }
        let mut session = Session {
            link,
            messages,
            heard_self: Instant::now(),
            published: Instant::now(),
        };
        let pushed = push.len();
        // After a Redis restart this is everything the instance holds: sent
        // in slices, so that each write fits its deadline and no pipeline
        // holds a million commands.
        while !push.is_empty() {
            let mut slice: Vec<PeerChange> = push.drain(..push.len().min(PUSH_SLICE)).collect();
            self.send(&mut session, &mut slice).await?;
        }
        self.metrics.resync_pulled.set(pulled as f64);
        self.metrics.resync_pushed.set(pushed as f64);
        tracing::info!(
            nodes = session.link.node_count(),
            redis_cluster = session.link.is_cluster(),
            pulled,
            pushed,
            "cluster: resynchronised with Redis"
        );
        Ok(session)
    }
}

/// What one page of a resync scan did.
struct Merged {
    /// Peers read from Redis (still listed).
    pulled: usize,
    /// Swarms Redis holds.
    seen: Vec<InfoHash>,
    /// What this instance holds that those hashes lack or hold for less long.
    push: Vec<PeerChange>,
}

/// Lists one page of swarm hashes in the engine and finds what Redis lacks.
fn merge_page(
    engine: &Engine,
    metrics: &ClusterMetrics,
    namespace: &str,
    page: Vec<link::SwarmHash>,
    now: Instant,
) -> Merged {
    let unix_now = unix_secs();
    let mut merged = Merged {
        pulled: 0,
        seen: Vec::with_capacity(page.len()),
        push: Vec::new(),
    };
    for (key, hash) in page {
        let Some(info_hash) = wire::info_hash_of_key(namespace, &key) else {
            continue;
        };
        let mut stored = StoredSwarm {
            info_hash,
            downloaded: 0,
            peers: Vec::with_capacity(hash.len()),
        };
        for (field, value) in &hash {
            match wire::decode_peer(field, value, unix_now) {
                Ok(peer) if peer.remaining_secs > 0 => stored.peers.push(peer),
                Ok(_) => {}
                Err(_) => metrics.corrupt_values.increment(1),
            }
        }
        merged.pulled += stored.peers.len();
        engine.restore(&stored, now);
        merged.seen.push(info_hash);
        // What this instance holds for longer, or that Redis lacks, goes back.
        if let Some(local) = engine.export_swarm(&info_hash, now) {
            for peer in local.peers {
                let in_redis = stored
                    .peers
                    .iter()
                    .find(|p| p.id == peer.id && p.addr.is_ipv6() == peer.addr.is_ipv6());
                if in_redis.is_none_or(|p| !same_listing(p, &peer)) {
                    merged.push.push(listed(info_hash, peer));
                }
            }
        }
    }
    merged
}

/// A session [`Cluster::join`] established, handed to [`Cluster::run`].
pub struct JoinedSession(Session);

fn listed(info_hash: InfoHash, peer: StoredPeer) -> PeerChange {
    PeerChange {
        info_hash,
        peer,
        kind: ChangeKind::Listed,
    }
}

/// Whether Redis already lists `local` as this instance does (expiries
/// within a second: the two sides round separately). A join sequence number
/// that differs (this instance's is lower, or Redis's value predates
/// numbers) is written back, so Redis holds the number every instance
/// settles on.
fn same_listing(redis: &StoredPeer, local: &StoredPeer) -> bool {
    redis.addr == local.addr
        && redis.seeder == local.seeder
        && redis.completed == local.completed
        && redis.join_seq == local.join_seq
        && local.remaining_secs <= redis.remaining_secs.saturating_add(1)
}

/// Resolves once `stopped` turns true (or its sender is gone).
async fn until_stopped(stopped: &mut watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_writes_back_a_lower_or_missing_join_sequence() {
        let local = StoredPeer {
            id: crate::bittorrent::PeerId([1; 20]),
            addr: "10.0.0.1:6881".parse().expect("address"),
            seeder: false,
            completed: false,
            remaining_secs: 100,
            join_seq: 5,
        };
        assert!(same_listing(&local, &local));
        let later = StoredPeer {
            remaining_secs: 101,
            ..local
        };
        assert!(same_listing(&later, &local), "expiries within a second");
        for join_seq in [7, 0] {
            let redis = StoredPeer { join_seq, ..local };
            assert!(!same_listing(&redis, &local), "Redis holds {join_seq}");
        }
    }
}
