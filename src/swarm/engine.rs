//! The in-memory store of swarms and the announce/scrape/expiry operations on it.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use foldhash::fast::RandomState;
use parking_lot::Mutex;
use rand::Rng;

use super::compact::{COMPACT_MAX, CompactSet, Upsert};
use super::limits::{Limit, LimitHits, LiveLimits, StorageLimits};
use super::locality::{HandoutPolicy, Locality, TierCounts, Topology};
use super::peers::{Announcer, Candidates, PeerSet, Removed, Slot, hand_out, saturating_u32};
use super::transfer::{BusiestSwarms, BusySwarm, Increase, Origins, Reported, TransferTotals};
use crate::bittorrent::{
    AnnounceRequest, AnnounceResponse, ChangeKind, Event, HandoutPeer, InfoHash, PeerChange,
    PeerId, ScrapeRequest, ScrapeResponse, StoredPeer, StoredSwarm, SwarmStats,
};

/// Settings the engine needs; the rest of the configuration stays outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long a peer stays listed after its last announce.
    pub peer_lifetime: Duration,
    /// How many independently locked shards the swarms are spread over.
    pub shards: usize,
    /// What may be stored at most (changed later with [`Engine::set_limits`]).
    pub limits: StorageLimits,
    /// Expiries are rounded up to a multiple of this (zero: exact), so that a
    /// re-announce moves a peer's expiry only once per step and the change
    /// feed can skip the others. A silent peer stays listed up to one step
    /// longer than `peer_lifetime`.
    pub expiry_step: Duration,
    /// How many changes the feed holds between two drains, over all shards
    /// (zero: no feed). Past it changes are dropped and counted.
    pub change_feed: usize,
    /// A leecher's download counts as stalled (the bridgehead guard then
    /// lets it reach other regions) only when it stood still over at least
    /// this long: a client that re-announces every second (the agent does
    /// while it looks for peers) must not read as stuck between two pieces.
    /// The server sets `announce.min_interval`.
    pub stall_window: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            peer_lifetime: Duration::from_secs(150),
            shards: 128,
            limits: StorageLimits::UNLIMITED,
            expiry_step: Duration::ZERO,
            change_feed: 0,
            stall_window: Duration::ZERO,
        }
    }
}

/// What one expiry pass removed and what remains, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeStats {
    /// Peers dropped because they stopped announcing.
    pub removed_peers: usize,
    /// Swarms dropped because they became empty.
    pub removed_swarms: usize,
    /// Swarms left.
    pub swarms: usize,
    /// Seeders left (a dual-stack peer counts once per address family).
    pub seeders: usize,
    /// Leechers left (likewise).
    pub leechers: usize,
}

/// The topology, handout policy and origins in force; swapped whole on reload.
#[derive(Debug, Clone, Default)]
pub struct LocalitySettings {
    /// Where addresses sit.
    pub topology: Topology,
    /// How handouts use it.
    pub policy: HandoutPolicy,
    /// Which addresses are the registry's own seeders (their uploads are
    /// counted apart). Here rather than in a switch of their own so that an
    /// announce loads one set of settings.
    pub origins: Origins,
}

/// All swarms, sharded by infohash so that announces to different torrents rarely contend.
///
/// Every operation locks one shard for a bounded amount of work: a hash
/// lookup, an insert or removal in dense vectors and their locality index,
/// and O(numwant) sampling.
pub struct Engine {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
    peer_lifetime_secs: u32,
    /// See [`EngineConfig::stall_window`].
    stall_window_secs: u32,
    locality: ArcSwap<LocalitySettings>,
    limits: LiveLimits,
    /// Peers listed in all swarms, kept by the same changes as the shards'
    /// totals, so the peer limit costs one relaxed load per announce.
    peers: AtomicUsize,
    /// Swarms held, likewise.
    swarms: AtomicUsize,
    /// Whether small swarms use the compact layout (always, except in the
    /// test that checks both layouts answer alike).
    compact: bool,
    /// See [`EngineConfig::expiry_step`], in seconds.
    expiry_step_secs: u32,
    /// How many changes the feed may hold, over all shards.
    feed: FeedBudget,
}

type FastMap<K, V> = HashMap<K, V, RandomState>;

#[derive(Default)]
struct Shard {
    swarms: FastMap<InfoHash, Swarm>,
    /// Peers handed out per tier by announces to this shard.
    tiers: TierCounts,
    /// Storage limits hit by announces to this shard.
    limit_hits: LimitHits,
    /// Seeders and leechers in this shard's swarms, kept current by every
    /// announce (from the swarm's counts before and after) so that a metrics
    /// scrape reads totals without walking the swarms.
    seeders: usize,
    leechers: usize,
    /// The change feed's part in this shard, appended under the lock the
    /// announce already holds, so the feed costs no synchronisation of its own.
    feed: ShardFeed,
    /// Transfer totals reported by announces to this shard.
    transfer: TransferTotals,
    /// This shard's busiest swarms by reported bytes.
    busiest: BusiestSwarms,
}

/// One shard's recorded changes, and what did not fit.
#[derive(Default)]
struct ShardFeed {
    changes: Vec<Recorded>,
    /// Changes not recorded because the feed was full.
    dropped: u64,
}

impl ShardFeed {
    /// Appends a change if the feed has room, else counts the drop.
    fn record(&mut self, budget: &FeedBudget, change: Recorded) {
        if budget.admit() {
            self.changes.push(change);
        } else {
            self.dropped += 1;
        }
    }
}

/// The feed's bound, shared by the shards: one hot swarm (a layer a whole
/// fleet pulls at once) lives in one shard, so a per-shard bound would drop
/// its changes while the other shards' room sat unused.
struct FeedBudget {
    capacity: usize,
    /// Changes recorded and not drained yet.
    pending: AtomicUsize,
}

impl FeedBudget {
    /// Takes room for one change; false when the feed is full (or absent).
    fn admit(&self) -> bool {
        if self.pending.fetch_add(1, Ordering::Relaxed) < self.capacity {
            true
        } else {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            false
        }
    }

    /// Gives back the room of `drained` changes.
    fn release(&self, drained: usize) {
        self.pending.fetch_sub(drained, Ordering::Relaxed);
    }
}

/// A change as the shard records it (expiry in engine seconds).
#[derive(Debug, Clone, Copy)]
struct Recorded {
    info_hash: InfoHash,
    id: PeerId,
    listed: Listed,
    kind: ChangeKind,
}

/// One listed peer's state, as the change feed compares it before and after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Listed {
    addr: SocketAddr,
    seeder: bool,
    completed: bool,
    expires_at: u32,
    /// Its place in the swarm's join sequence.
    join_seq: u32,
}

impl Shard {
    /// Moves the shard's totals, and the engine's peer count, by a swarm's
    /// change from `before` to `after`.
    fn count(&mut self, peers: &AtomicUsize, before: SwarmStats, after: SwarmStats) {
        self.seeders =
            (self.seeders + after.complete as usize).saturating_sub(before.complete as usize);
        self.leechers =
            (self.leechers + after.incomplete as usize).saturating_sub(before.incomplete as usize);
        move_count(peers, before.peers(), after.peers());
    }
}

/// Moves `counter` from `before` to `after` (most announces change nothing
/// and skip the atomic).
fn move_count(counter: &AtomicUsize, before: usize, after: usize) {
    if after > before {
        counter.fetch_add(after - before, Ordering::Relaxed);
    } else if before > after {
        counter.fetch_sub(before - after, Ordering::Relaxed);
    }
}

/// How many swarms and peers the engine holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Census {
    /// Swarms (torrents with peers, or recently emptied).
    pub swarms: usize,
    /// Seeders (a dual-stack peer counts once per address family).
    pub seeders: usize,
    /// Leechers (likewise).
    pub leechers: usize,
}

/// Everything `/metrics` reads from the engine, gathered in one pass that
/// takes each shard's lock once.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Swarms and peers now.
    pub census: Census,
    /// Peers handed out so far, per tier.
    pub tiers: TierCounts,
    /// Storage limits hit so far.
    pub limit_hits: LimitHits,
    /// Transfer totals reported so far.
    pub transfer: TransferTotals,
}

/// One torrent's peers and counters.
struct Swarm {
    peers: Peers,
    downloaded: u32,
    /// Engine seconds of the last announce, to retire swarms that stay empty.
    last_announce: u32,
}

/// A swarm's peers: compact while small and IPv4-only (most swarms; 16 bytes
/// here plus 36 per peer), full sets once either stops being true, and back
/// to compact when a sweep finds a full swarm small again.
enum Peers {
    Compact(CompactSet),
    Full(Box<FullSets>),
}

impl Default for Peers {
    fn default() -> Self {
        Peers::Compact(CompactSet::default())
    }
}

/// IPv4 and IPv6 are kept apart: a peer is keyed by its id within one address
/// family, and a client announcing over both families (libtorrent announces
/// once per interface) is listed in both.
#[derive(Default)]
struct FullSets {
    v4: PeerSet<SocketAddrV4>,
    v6: PeerSet<SocketAddrV6>,
}

/// A full swarm this small (and IPv4-only) goes back to compact at a sweep;
/// half the compact limit, so a swarm at the limit does not flip every sweep.
const DEMOTE_AT: usize = COMPACT_MAX / 2;

impl Engine {
    /// An empty engine with no sites and the default handout policy. Its clock
    /// starts now; see [`Engine::epoch`].
    pub fn new(config: EngineConfig) -> Self {
        Self::with_locality(config, LocalitySettings::default())
    }

    /// An empty engine with a topology and handout policy.
    pub fn with_locality(config: EngineConfig, locality: LocalitySettings) -> Self {
        let shards = (0..config.shards.max(1))
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Self {
            shards,
            epoch: Instant::now(),
            peer_lifetime_secs: u32::try_from(config.peer_lifetime.as_secs()).unwrap_or(u32::MAX),
            stall_window_secs: u32::try_from(config.stall_window.as_secs()).unwrap_or(u32::MAX),
            locality: ArcSwap::from_pointee(locality),
            limits: LiveLimits::new(config.limits),
            peers: AtomicUsize::new(0),
            swarms: AtomicUsize::new(0),
            compact: true,
            expiry_step_secs: u32::try_from(config.expiry_step.as_secs()).unwrap_or(u32::MAX),
            feed: FeedBudget {
                capacity: config.change_feed,
                pending: AtomicUsize::new(0),
            },
        }
    }

    /// Transfer totals reported so far, summed over the shards.
    pub fn transfer_totals(&self) -> TransferTotals {
        let mut total = TransferTotals::default();
        for shard in self.shards.iter() {
            total.merge(&shard.lock().transfer);
        }
        total
    }

    /// Up to `limit` of the busiest swarms by reported bytes, busiest first,
    /// each with its seeders and leechers now. Each shard keeps its 16
    /// busiest (see [`BusySwarm::error_bytes`] for how sure each figure is).
    pub fn busiest_swarms(&self, limit: usize) -> Vec<(BusySwarm, SwarmStats)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            for entry in shard.busiest.entries() {
                let stats = shard
                    .swarms
                    .get(&entry.info_hash)
                    .map(Swarm::stats)
                    .unwrap_or_default();
                all.push((*entry, stats));
            }
        }
        all.sort_unstable_by_key(|(swarm, _)| std::cmp::Reverse(swarm.weight));
        all.truncate(limit);
        all
    }

    /// Replaces the topology and policy. Listed peers keep the locality they
    /// announced with until their next announce re-files them.
    pub fn set_locality(&self, locality: LocalitySettings) {
        self.locality.store(Arc::new(locality));
    }

    /// Replaces the storage limits. Peers already stored stay; the limits
    /// apply to what arrives next.
    pub fn set_limits(&self, limits: StorageLimits) {
        self.limits.set(limits);
    }

    /// How often each storage limit was hit so far.
    pub fn limit_hits(&self) -> LimitHits {
        let mut total = LimitHits::default();
        for shard in self.shards.iter() {
            total.add(&shard.lock().limit_hits);
        }
        total
    }

    /// Where the engine places `addr` (for tools and tests).
    pub fn locate(&self, addr: std::net::IpAddr) -> Locality {
        self.locality.load().topology.locate(addr)
    }

    /// The instant engine time counts from; tests build their `now` values from it.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Records an announce and returns the swarm's counts and peers for the
    /// announcer, nearest tier first.
    pub fn announce<R: Rng + ?Sized>(
        &self,
        request: &AnnounceRequest,
        now: Instant,
        rng: &mut R,
    ) -> AnnounceResponse {
        let now_secs = self.secs(now);
        let settings = self.locality.load();
        let locality = settings.topology.locate(request.addr.ip());
        let mut shard = self.shard(&request.info_hash).lock();
        let shard = &mut *shard;

        if request.event == Event::Stopped {
            let Some(swarm) = shard.swarms.get_mut(&request.info_hash) else {
                return AnnounceResponse::default();
            };
            let before = swarm.stats();
            let listed = self.feeds().then(|| swarm.listed(request)).flatten();
            let reported = Reported::new(request.uploaded, request.downloaded);
            let prior = swarm.stop(request, reported);
            swarm.last_announce = now_secs;
            let stats = swarm.stats();
            shard.count(&self.peers, before, stats);
            if let Some(prior) = prior {
                self.count_transfer(shard, request, reported, prior, &settings.origins, now_secs);
            }
            if let Some(listed) = listed {
                let change = Recorded {
                    info_hash: request.info_hash,
                    id: request.peer_id,
                    listed,
                    kind: ChangeKind::Stopped,
                };
                shard.feed.record(&self.feed, change);
            }
            return AnnounceResponse {
                stats,
                peers: Vec::new(),
            };
        }

        let limits = self.limits.get();
        let swarm = match shard.swarms.entry(request.info_hash) {
            Entry::Occupied(listed) => listed.into_mut(),
            Entry::Vacant(_) if self.swarms.load(Ordering::Relaxed) >= limits.swarms => {
                shard.limit_hits.hit(Limit::Swarms);
                return AnnounceResponse::default();
            }
            Entry::Vacant(slot) => {
                self.swarms.fetch_add(1, Ordering::Relaxed);
                slot.insert(Swarm::new(self.compact))
            }
        };
        let before = swarm.stats();
        swarm.last_announce = now_secs;
        let mut expires_at = self.expiry(now_secs);
        // With a feed, an expiry never moves back (another instance may have
        // listed the peer for longer), and the state before is compared below.
        let prior = if self.feeds() {
            let prior = swarm.listed(request);
            if let Some(prior) = prior {
                expires_at = expires_at.max(prior.expires_at);
            }
            Some(prior)
        } else {
            None
        };
        let mut peers = Vec::with_capacity(request.numwant.min(swarm.len()));
        let admission = Admission {
            limits,
            peers_now: self.peers.load(Ordering::Relaxed),
            stall_window_secs: self.stall_window_secs,
        };
        let reported = Reported::new(request.uploaded, request.downloaded);
        let (hit, last_report) = swarm.announce(
            request, locality, expires_at,
            // A newcomer here is numbered next in its swarm's join sequence.
            0, reported, &settings, &admission, rng, &mut peers,
        );
        if let Some(limit) = hit {
            shard.limit_hits.hit(limit);
        }
        // Guard and spill picks join their tier: nearest first on the wire.
        if settings.policy.tiers {
            sort_by_tier(&mut peers);
        }
        // Only what others cannot derive is fed: a re-announce whose rounded
        // expiry did not move changes nothing they hold.
        let change = prior
            .and_then(|prior| Some(prior).zip(swarm.listed(request)))
            .filter(|(prior, listed)| *prior != Some(*listed))
            .map(|(_, listed)| Recorded {
                info_hash: request.info_hash,
                id: request.peer_id,
                listed,
                kind: ChangeKind::Listed,
            });
        let stats = swarm.stats();
        if let Some(change) = change {
            shard.feed.record(&self.feed, change);
        }
        shard.count(&self.peers, before, stats);
        if let Some(last_report) = last_report {
            self.count_transfer(
                shard,
                request,
                reported,
                last_report,
                &settings.origins,
                now_secs,
            );
        }
        for peer in &peers {
            shard.tiers.0[peer.tier as usize] += 1;
        }
        AnnounceResponse { stats, peers }
    }

    /// Peers handed out so far, per tier (the locality hit ratio's numerator and denominator).
    pub fn tier_counts(&self) -> TierCounts {
        let mut total = TierCounts::default();
        for shard in self.shards.iter() {
            total.add(&shard.lock().tiers);
        }
        total
    }
    /// Census, tier counts, limit hits and transfer totals at once: one
    /// lock per shard, held for a few additions, where reading them one by
    /// one took four (a scrape then competes with announces for each shard
    /// four times).
    pub fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            totals.census.swarms += shard.swarms.len();
            totals.census.seeders += shard.seeders;
            totals.census.leechers += shard.leechers;
            totals.tiers.add(&shard.tiers);
            totals.limit_hits.add(&shard.limit_hits);
            totals.transfer.merge(&shard.transfer);
        }
        totals
    }

    /// Swarms, seeders and leechers now, summed over the shards' running totals.
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for shard in self.shards.iter() {
            let shard = shard.lock();
            census.swarms += shard.swarms.len();
            census.seeders += shard.seeders;
            census.leechers += shard.leechers;
        }
        census
    }

    /// Counts for each distinct infohash asked about; unknown torrents count zero.
    pub fn scrape(&self, request: &ScrapeRequest) -> ScrapeResponse {
        let mut files: Vec<(InfoHash, SwarmStats)> = Vec::with_capacity(request.info_hashes.len());
        for info_hash in &request.info_hashes {
            if files.iter().any(|(seen, _)| seen == info_hash) {
                continue;
            }
            let stats = self
                .shard(info_hash)
                .lock()
                .swarms
                .get(info_hash)
                .map(Swarm::stats)
                .unwrap_or_default();
            files.push((*info_hash, stats));
        }
        ScrapeResponse { files }
    }

    /// Drops peers that have not announced within the peer lifetime, and swarms
    /// that have been empty that long (so `downloaded` outlives a brief lull).
    ///
    /// Locks one shard at a time, so announces to other shards proceed meanwhile.
    pub fn purge_expired(&self, now: Instant) -> PurgeStats {
        let now_secs = self.secs(now);
        let quiet_since = now_secs.saturating_sub(self.peer_lifetime_secs);
        let mut stats = PurgeStats::default();
        for shard in self.shards.iter() {
            let mut shard = shard.lock();
            let shard = &mut *shard;
            let (mut seeders, mut leechers) = (0, 0);
            let (feeds, budget, feed) = (self.feeds(), &self.feed, &mut shard.feed);
            shard.swarms.retain(|info_hash, swarm| {
                if feeds {
                    swarm.for_each_peer(|id, listed| {
                        if listed.expires_at <= now_secs {
                            let change = Recorded {
                                info_hash: *info_hash,
                                id: *id,
                                listed,
                                kind: ChangeKind::Expired,
                            };
                            feed.record(budget, change);
                        }
                    });
                }
                stats.removed_peers += swarm.purge(now_secs, self.compact);
                if swarm.is_empty() && swarm.last_announce <= quiet_since {
                    stats.removed_swarms += 1;
                    return false;
                }
                let counts = swarm.stats();
                seeders += counts.complete as usize;
                leechers += counts.incomplete as usize;
                true
            });
            // A table left mostly empty by a spike gives its memory back (with
            // room to spare, so a steady load does not shrink and regrow it).
            let held = shard.swarms.len();
            if shard.swarms.capacity() > 4 * held.max(16) {
                shard.swarms.shrink_to(2 * held);
            }
            // The sweep saw every swarm, so its sums replace the running totals.
            move_count(
                &self.peers,
                shard.seeders + shard.leechers,
                seeders + leechers,
            );
            (shard.seeders, shard.leechers) = (seeders, leechers);
            stats.seeders += seeders;
            stats.leechers += leechers;
            stats.swarms += shard.swarms.len();
        }
        self.swarms
            .fetch_sub(stats.removed_swarms, Ordering::Relaxed);
        stats
    }

    /// How many shards [`Engine::export_shard`] takes.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Appends shard `index`'s swarms to `out`, each peer with the lifetime it
    /// has left at `now` (expired peers are skipped, as are swarms left
    /// empty). Locks that one shard while it copies, so a snapshot taken
    /// shard by shard holds up announces for one shard's copy at a time.
    pub fn export_shard(&self, index: usize, now: Instant, out: &mut Vec<StoredSwarm>) {
        let Some(shard) = self.shards.get(index) else {
            return;
        };
        let now_secs = self.secs(now);
        let shard = shard.lock();
        out.extend(
            shard
                .swarms
                .iter()
                .filter_map(|(info_hash, swarm)| swarm.stored(info_hash, now_secs)),
        );
    }

    /// Lists a stored swarm's peers again, each for the lifetime it had left
    /// (capped at the peer lifetime plus one expiry step), as of `now`, or
    /// longer if already listed for longer; keeps the larger of the stored
    /// and the current `downloaded`. Storage limits apply as to announces.
    /// Nothing restored enters the change feed (it came from a mirror),
    /// except a listed peer whose join sequence number it lowered.
    /// Returns how many peers are newly listed.
    pub fn restore(&self, stored: &StoredSwarm, now: Instant) -> usize {
        let now_secs = self.secs(now);
        let settings = self.locality.load();
        let limits = self.limits.get();
        let mut shard = self.shard(&stored.info_hash).lock();
        let shard = &mut *shard;
        let swarm = match shard.swarms.entry(stored.info_hash) {
            Entry::Occupied(listed) => listed.into_mut(),
            Entry::Vacant(_) if self.swarms.load(Ordering::Relaxed) >= limits.swarms => {
                shard.limit_hits.hit(Limit::Swarms);
                return 0;
            }
            Entry::Vacant(slot) => {
                self.swarms.fetch_add(1, Ordering::Relaxed);
                slot.insert(Swarm::new(self.compact))
            }
        };
        let before = swarm.stats();
        swarm.last_announce = now_secs;
        let mut none = Vec::new();
        let mut lowered = Vec::new();
        // numwant 0: nothing is handed out, so the generator is never asked.
        let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(0);
        for peer in &stored.peers {
            let request = AnnounceRequest {
                info_hash: stored.info_hash,
                peer_id: peer.id,
                addr: peer.addr,
                event: if peer.completed {
                    Event::Completed
                } else {
                    Event::None
                },
                left: u64::from(!peer.seeder),
                uploaded: 0,
                downloaded: 0,
                numwant: 0,
                peer_ids: false,
            };
            let lifetime = peer.remaining_secs.min(
                self.peer_lifetime_secs
                    .saturating_add(self.expiry_step_secs),
            );
            let prior = swarm.listed(&request);
            let expires_at = prior
                .map_or(0, |listed| listed.expires_at)
                .max(now_secs.saturating_add(lifetime));
            let admission = Admission {
                limits,
                // The engine count moves only after the loop: add what
                // this restore has listed so far.
                peers_now: self.peers.load(Ordering::Relaxed)
                    + swarm.stats().peers().saturating_sub(before.peers()),
                stall_window_secs: self.stall_window_secs,
            };
            // What a peer reported elsewhere was counted there: its next
            // announce here is a baseline.
            let (hit, _) = swarm.announce(
                &request,
                settings.topology.locate(peer.addr.ip()),
                expires_at,
                peer.join_seq,
                Reported::UNKNOWN,
                &settings,
                &admission,
                &mut rng,
                &mut none,
            );
            if let Some(limit) = hit {
                shard.limit_hits.hit(limit);
            }
            // A peer two instances each numbered as a newcomer keeps the
            // lower number, and the instance that lowers its own writes the
            // lower one back (once: the other already holds it), so Redis,
            // and every instance that joins later, settles on it too.
            if self.feeds()
                && prior.is_some_and(|prior| peer.join_seq != 0 && peer.join_seq < prior.join_seq)
                && let Some(listed) = swarm.listed(&request)
            {
                lowered.push(Recorded {
                    info_hash: stored.info_hash,
                    id: peer.id,
                    listed,
                    kind: ChangeKind::Listed,
                });
            }
        }
        for change in lowered {
            shard.feed.record(&self.feed, change);
        }
        swarm.downloaded = swarm.downloaded.max(stored.downloaded);
        let after = swarm.stats();
        shard.count(&self.peers, before, after);
        after.peers() - before.peers().min(after.peers())
    }

    /// Applies changes another instance fed: listed peers are restored (see
    /// [`Engine::restore`]), stopped ones removed, expiries ignored (every
    /// engine drops a peer itself when its lifetime runs out). Returns how
    /// many changes were applied: every listed peer, and every stop of a
    /// peer this engine held.
    pub fn apply(&self, changes: &[PeerChange], now: Instant) -> usize {
        let mut applied = 0;
        let mut listed = StoredSwarm {
            info_hash: InfoHash([0; 20]),
            downloaded: 0,
            peers: Vec::with_capacity(1),
        };
        for change in changes {
            match change.kind {
                ChangeKind::Listed => {
                    listed.info_hash = change.info_hash;
                    listed.peers.clear();
                    listed.peers.push(change.peer);
                    self.restore(&listed, now);
                    applied += 1;
                }
                ChangeKind::Stopped => {
                    applied += usize::from(self.remove(&change.info_hash, &change.peer, now));
                }
                ChangeKind::Expired => {}
            }
        }
        applied
    }

    /// One swarm as [`Engine::export_shard`] copies it, if it lists anyone.
    pub fn export_swarm(&self, info_hash: &InfoHash, now: Instant) -> Option<StoredSwarm> {
        let now_secs = self.secs(now);
        let shard = self.shard(info_hash).lock();
        shard.swarms.get(info_hash)?.stored(info_hash, now_secs)
    }

    /// Removes a peer another instance saw stop (nothing enters the feed);
    /// returns whether it was listed.
    pub fn remove(&self, info_hash: &InfoHash, peer: &StoredPeer, now: Instant) -> bool {
        let mut shard = self.shard(info_hash).lock();
        let shard = &mut *shard;
        let Some(swarm) = shard.swarms.get_mut(info_hash) else {
            return false;
        };
        let request = AnnounceRequest {
            info_hash: *info_hash,
            peer_id: peer.id,
            addr: peer.addr,
            event: Event::Stopped,
            left: u64::from(!peer.seeder),
            uploaded: 0,
            downloaded: 0,
            numwant: 0,
            peer_ids: false,
        };
        if !swarm.lists(&request) {
            return false;
        }
        let before = swarm.stats();
        swarm.stop(&request, Reported::UNKNOWN);
        swarm.last_announce = self.secs(now);
        let after = swarm.stats();
        shard.count(&self.peers, before, after);
        true
    }

    /// Moves shard `index`'s recorded changes into `out`, each peer's
    /// lifetime counted from `now`; returns how many changes that shard
    /// dropped since the last drain because its feed was full.
    pub fn drain_changes(&self, index: usize, now: Instant, out: &mut Vec<PeerChange>) -> u64 {
        let Some(shard) = self.shards.get(index) else {
            return 0;
        };
        let now_secs = self.secs(now);
        let mut shard = shard.lock();
        self.feed.release(shard.feed.changes.len());
        out.extend(shard.feed.changes.drain(..).map(|recorded| PeerChange {
            info_hash: recorded.info_hash,
            peer: recorded.listed.stored(recorded.id, now_secs),
            kind: recorded.kind,
        }));
        std::mem::take(&mut shard.feed.dropped)
    }

    /// Whether announces record changes.
    fn feeds(&self) -> bool {
        self.feed.capacity > 0
    }

    /// Counts what the announcer's totals (`reported`) added to its `prior` report.
    fn count_transfer(
        &self,
        shard: &mut Shard,
        request: &AnnounceRequest,
        reported: Reported,
        prior: Reported,
        origins: &Origins,
        now_secs: u32,
    ) {
        // The common case: an idle seeder, or a peer between two pieces.
        if reported == prior {
            return;
        }
        let increase: Increase = reported.since(prior);
        if increase.is_empty() {
            return;
        }
        let origin = increase.uploaded > 0 && origins.contains(request.addr.ip());
        shard.transfer.add(&increase, origin);
        shard
            .busiest
            .add(&request.info_hash, &increase, origin, now_secs);
    }

    /// The expiry of a peer announcing at `now_secs`: one lifetime later,
    /// rounded up to the expiry step.
    fn expiry(&self, now_secs: u32) -> u32 {
        let exact = now_secs.saturating_add(self.peer_lifetime_secs);
        match self.expiry_step_secs {
            0 => exact,
            step => exact.div_ceil(step).saturating_mul(step),
        }
    }

    fn secs(&self, now: Instant) -> u32 {
        u32::try_from(now.saturating_duration_since(self.epoch).as_secs()).unwrap_or(u32::MAX)
    }

    fn shard(&self, info_hash: &InfoHash) -> &Mutex<Shard> {
        // Infohashes are SHA-1 output, so their leading bytes are already uniform.
        let key = u32::from_le_bytes([
            info_hash.0[0],
            info_hash.0[1],
            info_hash.0[2],
            info_hash.0[3],
        ]);
        &self.shards[key as usize % self.shards.len()]
    }
}

impl Listed {
    /// As stored or fed: the lifetime left at `now_secs`.
    fn stored(&self, id: PeerId, now_secs: u32) -> StoredPeer {
        StoredPeer {
            id,
            addr: self.addr,
            seeder: self.seeder,
            completed: self.completed,
            remaining_secs: self.expires_at.saturating_sub(now_secs),
            join_seq: self.join_seq,
        }
    }
}

impl Swarm {
    /// The swarm as stored or exported: its peers still listed at
    /// `now_secs`, each with the lifetime it has left; `None` if none is.
    fn stored(&self, info_hash: &InfoHash, now_secs: u32) -> Option<StoredSwarm> {
        let mut peers = Vec::with_capacity(self.len());
        self.for_each_peer(|id, listed| {
            if listed.expires_at > now_secs {
                peers.push(listed.stored(*id, now_secs));
            }
        });
        (!peers.is_empty()).then_some(StoredSwarm {
            info_hash: *info_hash,
            downloaded: self.downloaded,
            peers,
        })
    }

    fn new(compact: bool) -> Self {
        Self {
            peers: if compact {
                Peers::default()
            } else {
                Peers::Full(Box::default())
            },
            downloaded: 0,
            last_announce: 0,
        }
    }

    fn len(&self) -> usize {
        match &self.peers {
            Peers::Compact(set) => set.len(),
            Peers::Full(sets) => sets.v4.len() + sets.v6.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stats(&self) -> SwarmStats {
        let (seeders, leechers) = match &self.peers {
            Peers::Compact(set) => (set.seeders(), set.leechers()),
            Peers::Full(sets) => (
                sets.v4.seeders() + sets.v6.seeders(),
                sets.v4.leechers() + sets.v6.leechers(),
            ),
        };
        SwarmStats {
            complete: saturating_u32(seeders),
            incomplete: saturating_u32(leechers),
            downloaded: self.downloaded,
        }
    }

    /// Removes expired peers (returns how many); a full swarm left small and
    /// IPv4-only goes back to the compact layout.
    fn purge(&mut self, now_secs: u32, compact: bool) -> usize {
        match &mut self.peers {
            Peers::Compact(set) => set.purge(now_secs),
            Peers::Full(sets) => {
                let removed = sets.v4.purge(now_secs) + sets.v6.purge(now_secs);
                if compact
                    && sets.v6.len() == 0
                    && sets.v4.len() <= DEMOTE_AT
                    && let Some(compact) = CompactSet::from_full(&sets.v4)
                {
                    self.peers = Peers::Compact(compact);
                }
                removed
            }
        }
    }

    /// Removes a stopping peer; returns its last report before this one (the
    /// later of both families' for a dual-stack client), if it was listed. A
    /// leecher that stops with nothing left finished its download without
    /// saying `completed` (aria2 does this), so it counts.
    fn stop(&mut self, request: &AnnounceRequest, reported: Reported) -> Option<Reported> {
        let id = &request.peer_id;
        let finished = request.left == 0;
        let (removed, twin) = match (&mut self.peers, request.addr) {
            (Peers::Compact(set), SocketAddr::V4(_)) => (set.remove(id, finished)?, None),
            (Peers::Compact(_), SocketAddr::V6(_)) => return None,
            (Peers::Full(sets), SocketAddr::V4(_)) => (
                sets.v4.remove(id, finished)?,
                sets.v6.update_twin(id, reported),
            ),
            (Peers::Full(sets), SocketAddr::V6(_)) => (
                sets.v6.remove(id, finished)?,
                sets.v4.update_twin(id, reported),
            ),
        };
        let Removed {
            first_completion,
            reported,
        } = removed;
        if first_completion && !twin.is_some_and(|(completed, _)| completed) {
            self.downloaded = self.downloaded.saturating_add(1);
        }
        Some(twin.map_or(reported, |(_, theirs)| reported.latest(theirs)))
    }

    /// The announcer's entry in its address family, if listed.
    fn listed(&self, request: &AnnounceRequest) -> Option<Listed> {
        let id = &request.peer_id;
        let (addr, seeder, completed, expires_at, join_seq) = match (&self.peers, request.addr) {
            (Peers::Compact(set), SocketAddr::V4(_)) => {
                let (addr, seeder, completed, expires_at, join_seq) = set.get(id)?;
                (addr.into(), seeder, completed, expires_at, join_seq)
            }
            (Peers::Compact(_), SocketAddr::V6(_)) => return None,
            (Peers::Full(sets), SocketAddr::V4(_)) => {
                let (addr, seeder, completed, expires_at, join_seq) = sets.v4.get(id)?;
                (addr.into(), seeder, completed, expires_at, join_seq)
            }
            (Peers::Full(sets), SocketAddr::V6(_)) => {
                let (addr, seeder, completed, expires_at, join_seq) = sets.v6.get(id)?;
                (addr.into(), seeder, completed, expires_at, join_seq)
            }
        };
        Some(Listed {
            addr,
            seeder,
            completed,
            expires_at,
            join_seq,
        })
    }

    /// Calls `f` with every listed peer, both address families.
    fn for_each_peer(&self, mut f: impl FnMut(&PeerId, Listed)) {
        let mut each = |seeder, addr: SocketAddr, id: &PeerId, expires_at, completed, join_seq| {
            f(
                id,
                Listed {
                    addr,
                    seeder,
                    completed,
                    expires_at,
                    join_seq,
                },
            )
        };
        match &self.peers {
            Peers::Compact(set) => {
                set.for_each(|seeder, addr, id, expires_at, completed, join_seq| {
                    each(seeder, addr.into(), id, expires_at, completed, join_seq)
                })
            }
            Peers::Full(sets) => {
                sets.v4
                    .for_each(|seeder, addr, _, id, expires_at, completed, join_seq| {
                        each(seeder, addr.into(), id, expires_at, completed, join_seq)
                    });
                sets.v6
                    .for_each(|seeder, addr, _, id, expires_at, completed, join_seq| {
                        each(seeder, addr.into(), id, expires_at, completed, join_seq)
                    });
            }
        }
    }

    /// Whether the announcer's id is listed in its address family.
    fn lists(&self, request: &AnnounceRequest) -> bool {
        let id = &request.peer_id;
        match (&self.peers, request.addr) {
            (Peers::Compact(set), SocketAddr::V4(_)) => set.contains(id),
            (Peers::Compact(_), SocketAddr::V6(_)) => false,
            (Peers::Full(sets), SocketAddr::V4(_)) => sets.v4.contains(id),
            (Peers::Full(sets), SocketAddr::V6(_)) => sets.v6.contains(id),
        }
    }

    /// Makes room for a new peer id from an address at the per-address
    /// limit by dropping that address's oldest entry; returns whether it did.
    fn evict_oldest_of(&mut self, addr: SocketAddr, subnet: u32, limit: usize) -> bool {
        match (&mut self.peers, addr) {
            (Peers::Compact(set), SocketAddr::V4(addr)) => set.evict_oldest_of(*addr.ip(), limit),
            (Peers::Compact(_), SocketAddr::V6(_)) => false,
            (Peers::Full(sets), SocketAddr::V4(_)) => {
                sets.v4.evict_oldest_of(addr.ip(), subnet, limit)
            }
            (Peers::Full(sets), SocketAddr::V6(_)) => {
                sets.v6.evict_oldest_of(addr.ip(), subnet, limit)
            }
        }
    }

    /// Answers an announcer that a limit keeps out: peers of its own
    /// family, as if it were listed, but nothing stored.
    fn answer_unlisted<R: Rng + ?Sized>(
        &self,
        request: &AnnounceRequest,
        who: &Announcer<'_>,
        settings: &LocalitySettings,
        rng: &mut R,
        out: &mut Vec<HandoutPeer>,
    ) {
        let (numwant, policy) = (request.numwant, &settings.policy);
        match (&self.peers, request.addr) {
            (Peers::Compact(set), SocketAddr::V4(_)) => {
                let candidates = set.candidates(&settings.topology);
                hand_out(&candidates, who, None, numwant, policy, rng, out);
            }
            (Peers::Compact(_), SocketAddr::V6(_)) => {}
            (Peers::Full(sets), SocketAddr::V4(_)) => {
                hand_out(&sets.v4, who, None, numwant, policy, rng, out)
            }
            (Peers::Full(sets), SocketAddr::V6(_)) => {
                hand_out(&sets.v6, who, None, numwant, policy, rng, out)
            }
        }
    }

    /// Records the announce (within the storage limits) and hands out peers;
    /// returns the limit the announce ran into, if any.
    #[allow(clippy::too_many_arguments)]
    fn announce<R: Rng + ?Sized>(
        &mut self,
        request: &AnnounceRequest,
        locality: Locality,
        expires_at: u32,
        join_seq: u32,
        reported: Reported,
        settings: &LocalitySettings,
        admission: &Admission,
        rng: &mut R,
        out: &mut Vec<HandoutPeer>,
    ) -> (Option<Limit>, Option<Reported>) {
        let seeder = request.is_seeder();
        let completing = request.event == Event::Completed;
        let id = &request.peer_id;
        let mut who = Announcer {
            id,
            locality,
            to_seeder: seeder,
            with_ids: request.peer_ids,
            stalled: false,
        };
        let numwant = request.numwant;
        // Whether the leecher stood still since its previous announce, given
        // that announce's report and expiry (one rule for every layout).
        let stalled_since = |prior, prior_expires_at| {
            stalled(
                seeder,
                reported,
                prior,
                expires_at,
                prior_expires_at,
                admission,
            )
        };
        let policy = &settings.policy;
        let limits = &admission.limits;
        let mut hit = None;
        if !self.lists(request) {
            if self.evict_oldest_of(request.addr, locality.subnet, limits.peers_per_address) {
                hit = Some(Limit::PeersPerAddress);
            } else {
                let full = if self.len() >= limits.peers_per_swarm {
                    Some(Limit::PeersPerSwarm)
                } else if admission.peers_now >= limits.peers {
                    Some(Limit::Peers)
                } else {
                    None
                };
                if full.is_some() {
                    self.answer_unlisted(request, &who, settings, rng, out);
                    return (full, None);
                }
            }
        }
        if let Peers::Compact(set) = &mut self.peers {
            if let SocketAddr::V4(addr) = request.addr
                && let Upsert::Done {
                    first,
                    position,
                    prior_expires_at,
                } = set.upsert(
                    *id,
                    addr,
                    locality.zone,
                    seeder,
                    expires_at,
                    completing,
                    join_seq,
                )
            {
                if first {
                    self.downloaded = self.downloaded.saturating_add(1);
                }
                let prior = set.exchange_reported(position, reported);
                who.stalled = stalled_since(prior, prior_expires_at);
                let candidates = set.candidates(&settings.topology);
                let own = Some(candidates.slot(position));
                hand_out(&candidates, &who, own, numwant, policy, rng, out);
                return (hit, Some(prior));
            }
            // Outgrown, or an IPv6 peer: move to full sets and go on there.
            let v4 = set.to_full(&settings.topology);
            self.peers = Peers::Full(Box::new(FullSets {
                v4,
                v6: PeerSet::default(),
            }));
        }
        let Peers::Full(sets) = &mut self.peers else {
            return (hit, None);
        };
        // A dual-stack client's twin in the other family: its completion
        // counts once, and its reports are the same running totals.
        let (first, prior, twin) = match request.addr {
            SocketAddr::V4(addr) => {
                let (first, own, prior_expires_at) = sets.v4.upsert(
                    *id, addr, locality, seeder, expires_at, completing, join_seq,
                );
                let prior = sets.v4.exchange_reported(own, reported);
                who.stalled = stalled_since(prior, prior_expires_at);
                let twin = sets.v6.update_twin(id, reported);
                hand_out_dual(&sets.v4, own, &sets.v6, &who, numwant, policy, rng, out);
                (first, prior, twin)
            }
            SocketAddr::V6(addr) => {
                let (first, own, prior_expires_at) = sets.v6.upsert(
                    *id, addr, locality, seeder, expires_at, completing, join_seq,
                );
                let prior = sets.v6.exchange_reported(own, reported);
                who.stalled = stalled_since(prior, prior_expires_at);
                let twin = sets.v4.update_twin(id, reported);
                hand_out_dual(&sets.v6, own, &sets.v4, &who, numwant, policy, rng, out);
                (first, prior, twin)
            }
        };
        if first && !twin.is_some_and(|(completed, _)| completed) {
            self.downloaded = self.downloaded.saturating_add(1);
        }
        let prior = twin.map_or(prior, |(_, theirs)| prior.latest(theirs));
        (hit, Some(prior))
    }
}

/// What an announce may store: the limits, and the engine's peers now.
struct Admission {
    limits: StorageLimits,
    peers_now: usize,
    stall_window_secs: u32,
}

/// Whether a leecher's download stood still since its previous announce,
/// and that announce is at least the stall window old. Expiries stand in
/// for announce times (each is the announce's time plus the same lifetime,
/// rounded up alike), so no time is stored per peer; an expiry held back by
/// another instance's longer one reads as recent, never as stalled.
fn stalled(
    seeder: bool,
    reported: Reported,
    prior: Reported,
    expires_at: u32,
    prior_expires_at: u32,
    admission: &Admission,
) -> bool {
    !seeder
        && reported.stalled_since(prior)
        && expires_at.saturating_sub(prior_expires_at) >= admission.stall_window_secs
}

/// Orders a reply nearest tier first. Replies come out of the handout nearly
/// sorted (only guard and spill picks are out of place), so an insertion sort
/// costs O(n + displaced picks), less than a general sort of 50 peers.
fn sort_by_tier(peers: &mut [HandoutPeer]) {
    for i in 1..peers.len() {
        let mut j = i;
        while j > 0 && peers[j - 1].tier > peers[j].tier {
            peers.swap(j - 1, j);
            j -= 1;
        }
    }
}

/// Fills `out` from the announcer's own family and, when the same peer id is
/// also listed in the other family (a dual-stack client), from both: half each,
/// with either family making up what the other lacks.
#[allow(clippy::too_many_arguments)]
fn hand_out_dual<A, B, R>(
    own: &A,
    own_slot: Slot,
    other: &B,
    who: &Announcer<'_>,
    numwant: usize,
    policy: &HandoutPolicy,
    rng: &mut R,
    out: &mut Vec<HandoutPeer>,
) where
    A: Candidates,
    B: Candidates,
    R: Rng + ?Sized,
{
    let other_slot = other.find(who.id);
    let from_other = if other_slot.is_some() {
        let other_available = other.available(who, other_slot);
        let own_shortfall = numwant.saturating_sub(own.available(who, Some(own_slot)));
        (numwant / 2).max(own_shortfall).min(other_available)
    } else {
        0
    };
    hand_out(
        own,
        who,
        Some(own_slot),
        numwant - from_other,
        policy,
        rng,
        out,
    );
    hand_out(other, who, other_slot, from_other, policy, rng, out);
}

#[cfg(test)]
impl Engine {
    /// The same engine keeping every swarm in full sets (the compact layout off).
    pub(super) fn full_layout_only(self) -> Self {
        Self {
            compact: false,
            ..self
        }
    }

    /// Checks every locality index against its entries, and every set's
    /// leechers' join order; returns how many sets are indexed.
    pub(super) fn check_indexes(&self) -> usize {
        let mut indexed = 0;
        for shard in self.shards.iter() {
            for swarm in shard.lock().swarms.values() {
                match &swarm.peers {
                    Peers::Full(sets) => {
                        sets.v4.check_index();
                        sets.v6.check_index();
                        indexed +=
                            usize::from(sets.v4.is_indexed()) + usize::from(sets.v6.is_indexed());
                    }
                    Peers::Compact(set) => set.check_order(),
                }
            }
        }
        indexed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bittorrent::PeerId;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;
    use std::collections::HashSet;

    const TORRENT: InfoHash = InfoHash([7; 20]);

    fn peer_id(n: u32) -> PeerId {
        let mut id = [b'-'; 20];
        id[16..].copy_from_slice(&n.to_be_bytes());
        PeerId(id)
    }

    fn v4(n: u32) -> SocketAddr {
        SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881))
    }

    fn announce(n: u32, left: u64, event: Event, numwant: usize) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: TORRENT,
            peer_id: peer_id(n),
            addr: v4(n),
            event,
            left,
            uploaded: 0,
            downloaded: 0,
            numwant,
            peer_ids: true,
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(100),
            shards: 4,
            ..EngineConfig::default()
        })
    }

    fn stats(engine: &Engine) -> SwarmStats {
        engine
            .scrape(&ScrapeRequest {
                info_hashes: vec![TORRENT],
            })
            .files[0]
            .1
    }

    fn limited(limits: StorageLimits) -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(1000),
            shards: 4,
            limits,
            ..EngineConfig::default()
        })
    }

    fn from(addr: SocketAddr, n: u32, torrent: u8) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: InfoHash([torrent; 20]),
            addr,
            ..announce(n, 10, Event::Started, 50)
        }
    }

    fn peers_of(engine: &Engine, torrent: u8) -> usize {
        engine
            .scrape(&ScrapeRequest {
                info_hashes: vec![InfoHash([torrent; 20])],
            })
            .files[0]
            .1
            .peers()
    }

    #[test]
    fn an_address_keeps_at_most_its_limit_and_its_newest_ids_in_both_layouts() {
        for others in [0u32, 300] {
            let engine = limited(StorageLimits {
                peers_per_address: 4,
                ..StorageLimits::UNLIMITED
            });
            let start = engine.epoch();
            let rng = &mut SmallRng::seed_from_u64(3);
            // Honest neighbours first (300 make the set full and indexed).
            for n in 0..others {
                engine.announce(&from(v4(n), n, 7), start, rng);
            }
            let flooder = SocketAddr::from(([10, 0, 1, 200], 7000)); // shares a /24 with honest peers
            for k in 0..100u32 {
                let now = start + Duration::from_secs(u64::from(k));
                let response = engine.announce(&from(flooder, 10_000 + k, 7), now, rng);
                assert!(response.stats.peers() <= others as usize + 4);
            }
            assert_eq!(peers_of(&engine, 7), others as usize + 4, "{others} others");
            assert_eq!(engine.limit_hits().get(Limit::PeersPerAddress), 96);
            // The newest id is listed (a restarted client is never locked
            // out); the oldest made room.
            let late = start + Duration::from_secs(200);
            let mut stop = from(flooder, 10_000, 7);
            stop.event = Event::Stopped;
            engine.announce(&stop, late, rng);
            assert_eq!(peers_of(&engine, 7), others as usize + 4);
            stop.peer_id = peer_id(10_099);
            engine.announce(&stop, late, rng);
            assert_eq!(peers_of(&engine, 7), others as usize + 3);
            // Re-announces of listed ids are never limited.
            let hits = engine.limit_hits();
            engine.announce(&from(flooder, 10_098, 7), late, rng);
            assert_eq!(engine.limit_hits(), hits);
        }
    }

    #[test]
    fn a_full_swarm_answers_newcomers_without_storing_them() {
        let engine = limited(StorageLimits {
            peers_per_swarm: 10,
            ..StorageLimits::UNLIMITED
        });
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(4);
        for n in 0..20 {
            let response = engine.announce(&from(v4(n), n, 7), now, rng);
            if n >= 10 {
                assert_eq!(response.stats.peers(), 10);
                assert_eq!(response.peers.len(), 10, "answered with peers");
            }
        }
        assert_eq!(peers_of(&engine, 7), 10);
        assert_eq!(engine.limit_hits().get(Limit::PeersPerSwarm), 10);
        // A listed peer's re-announce and role change go through.
        engine.announce(&from(v4(3), 3, 7), now, rng);
        assert_eq!(engine.limit_hits().get(Limit::PeersPerSwarm), 10);
    }

    #[test]
    fn the_engine_wide_peer_and_swarm_limits_hold_and_free_up_after_expiry() {
        let engine = limited(StorageLimits {
            peers: 15,
            swarms: 3,
            ..StorageLimits::UNLIMITED
        });
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(5);
        for torrent in 1..=5u8 {
            for n in 0..8 {
                engine.announce(&from(v4(n), n, torrent), now, rng);
            }
        }
        let census = engine.census();
        assert_eq!(census.swarms, 3);
        assert_eq!(census.seeders + census.leechers, 15);
        let hits = engine.limit_hits();
        assert_eq!(hits.get(Limit::Peers), 9);
        assert_eq!(hits.get(Limit::Swarms), 16);
        assert_eq!(peers_of(&engine, 5), 0);

        // Once everything expired, the counters are back to zero: room again.
        let later = now + Duration::from_secs(5000);
        engine.purge_expired(later);
        engine.purge_expired(later + Duration::from_secs(5000));
        assert_eq!(engine.census(), Census::default());
        for torrent in 4..=5u8 {
            engine.announce(&from(v4(1), 1, torrent), later, rng);
        }
        assert_eq!(peers_of(&engine, 5), 1);
        assert_eq!(engine.census().swarms, 2);
    }

    #[test]
    fn counts_follow_roles_and_completed_counts_once() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(1);
        engine.announce(&announce(1, 0, Event::Started, 0), now, rng);
        engine.announce(&announce(2, 10, Event::Started, 0), now, rng);
        engine.announce(&announce(3, 10, Event::Started, 0), now, rng);
        assert_eq!(
            stats(&engine),
            SwarmStats {
                complete: 1,
                incomplete: 2,
                downloaded: 0
            }
        );

        let response = engine.announce(&announce(2, 0, Event::Completed, 0), now, rng);
        assert_eq!(
            response.stats,
            SwarmStats {
                complete: 2,
                incomplete: 1,
                downloaded: 1
            }
        );
        // A repeated `completed` from the same peer is not another download.
        engine.announce(&announce(2, 0, Event::Completed, 0), now, rng);
        assert_eq!(stats(&engine).downloaded, 1);

        let response = engine.announce(&announce(3, 10, Event::Stopped, 50), now, rng);
        assert!(
            response.peers.is_empty(),
            "a stopping peer is handed nobody"
        );
        assert_eq!(
            response.stats,
            SwarmStats {
                complete: 2,
                incomplete: 0,
                downloaded: 1
            }
        );
    }

    #[test]
    fn finishing_without_a_completed_event_counts_once() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(8);
        // Re-announcing with nothing left, then completed, then stopped: one download.
        engine.announce(&announce(1, 10, Event::Started, 0), now, rng);
        engine.announce(&announce(1, 0, Event::None, 0), now, rng);
        engine.announce(&announce(1, 0, Event::Completed, 0), now, rng);
        engine.announce(&announce(1, 0, Event::Stopped, 0), now, rng);
        assert_eq!(stats(&engine).downloaded, 1);
        // aria2 with --seed-time=0: started as a leecher, stopped with left=0.
        engine.announce(&announce(2, 10, Event::Started, 0), now, rng);
        engine.announce(&announce(2, 0, Event::Stopped, 0), now, rng);
        assert_eq!(stats(&engine).downloaded, 2);
        // A leecher giving up, and a seeder that never downloaded, do not count.
        engine.announce(&announce(3, 10, Event::Started, 0), now, rng);
        engine.announce(&announce(3, 10, Event::Stopped, 0), now, rng);
        engine.announce(&announce(4, 0, Event::Started, 0), now, rng);
        engine.announce(&announce(4, 0, Event::Stopped, 0), now, rng);
        assert_eq!(stats(&engine).downloaded, 2);
    }

    #[test]
    fn an_emptied_swarm_keeps_its_counts_for_a_peer_lifetime() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(2);
        engine.announce(&announce(9, 0, Event::Stopped, 50), now, rng);
        assert_eq!(
            engine.purge_expired(now).swarms,
            0,
            "an unknown peer stopping creates nothing"
        );

        engine.announce(&announce(1, 5, Event::Started, 50), now, rng);
        engine.announce(&announce(1, 0, Event::Completed, 50), now, rng);
        let later = now + Duration::from_secs(40);
        engine.announce(&announce(1, 0, Event::Stopped, 50), later, rng);
        assert_eq!(
            stats(&engine),
            SwarmStats {
                complete: 0,
                incomplete: 0,
                downloaded: 1
            }
        );
        assert_eq!(
            engine.purge_expired(later + Duration::from_secs(99)).swarms,
            1
        );
        assert_eq!(
            stats(&engine).downloaded,
            1,
            "still counted while recently active"
        );
        let gone = engine.purge_expired(later + Duration::from_secs(100));
        assert_eq!((gone.swarms, gone.removed_swarms), (0, 1));
        assert_eq!(stats(&engine), SwarmStats::default());
    }

    #[test]
    fn peers_expire_after_their_lifetime_with_an_injected_clock() {
        let engine = engine();
        let start = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(3);
        engine.announce(&announce(1, 0, Event::Started, 0), start, rng);
        engine.announce(
            &announce(2, 5, Event::Started, 0),
            start + Duration::from_secs(60),
            rng,
        );

        let early = engine.purge_expired(start + Duration::from_secs(99));
        assert_eq!(
            (early.removed_peers, early.seeders, early.leechers),
            (0, 1, 1)
        );

        let later = engine.purge_expired(start + Duration::from_secs(100));
        assert_eq!(
            (later.removed_peers, later.seeders, later.leechers),
            (1, 0, 1)
        );
        assert_eq!(
            stats(&engine),
            SwarmStats {
                complete: 0,
                incomplete: 1,
                downloaded: 0
            }
        );

        // Re-announcing keeps a peer alive.
        engine.announce(
            &announce(2, 5, Event::None, 0),
            start + Duration::from_secs(150),
            rng,
        );
        assert_eq!(
            engine
                .purge_expired(start + Duration::from_secs(200))
                .removed_peers,
            0
        );

        let last = engine.purge_expired(start + Duration::from_secs(250));
        // The last peer expiring means the swarm saw no announce for a lifetime: it goes too.
        assert_eq!(
            (last.removed_peers, last.removed_swarms, last.swarms),
            (1, 1, 0)
        );
    }

    #[test]
    fn seeders_get_only_leechers_and_numwant_zero_gets_none() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(4);
        for n in 0..5 {
            engine.announce(&announce(n, 0, Event::Started, 0), now, rng);
        }
        for n in 5..8 {
            engine.announce(&announce(n, 9, Event::Started, 0), now, rng);
        }
        let response = engine.announce(&announce(0, 0, Event::None, 50), now, rng);
        let mut got: Vec<SocketAddr> = response.peers.iter().map(|p| p.addr).collect();
        got.sort();
        assert_eq!(got, vec![v4(5), v4(6), v4(7)]);

        let response = engine.announce(&announce(5, 9, Event::None, 50), now, rng);
        assert_eq!(response.peers.len(), 7, "a leecher gets every other peer");
        assert!(
            engine
                .announce(&announce(5, 9, Event::None, 0), now, rng)
                .peers
                .is_empty()
        );
    }

    #[test]
    fn seeders_are_handed_out_evenly() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(5);
        let seeders = 10u32;
        for n in 0..seeders {
            engine.announce(&announce(n, 0, Event::Started, 0), now, rng);
        }
        let mut hits = vec![0u32; seeders as usize];
        let rounds = 20_000;
        for round in 0..rounds {
            let leecher = 1_000 + round % 50;
            for peer in engine
                .announce(&announce(leecher, 9, Event::None, 3), now, rng)
                .peers
            {
                if let Some(n) = (0..seeders).find(|&n| v4(n) == peer.addr) {
                    hits[n as usize] += 1;
                }
            }
        }
        let total: u32 = hits.iter().sum();
        let mean = f64::from(total) / f64::from(seeders);
        for (n, &count) in hits.iter().enumerate() {
            let deviation = (f64::from(count) - mean).abs() / mean;
            assert!(
                deviation < 0.1,
                "seeder {n} handed out {count} times, mean {mean}"
            );
        }
    }

    #[test]
    fn dual_stack_peers_get_both_families_and_never_themselves() {
        let engine = engine();
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(6);
        for n in 0..10 {
            engine.announce(&announce(n, 0, Event::Started, 0), now, rng);
            let mut over_v6 = announce(n, 0, Event::Started, 0);
            over_v6.addr = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16 + 1], 6881));
            engine.announce(&over_v6, now, rng);
        }
        let me = 99;
        engine.announce(&announce(me, 5, Event::Started, 0), now, rng);
        let only_v4 = engine.announce(&announce(me, 5, Event::None, 8), now, rng);
        assert!(only_v4.peers.iter().all(|p| p.addr.is_ipv4()));

        let mut over_v6 = announce(me, 5, Event::None, 8);
        over_v6.addr = "[2001:db8::ff]:6881".parse().expect("addr");
        let dual = engine.announce(&over_v6, now, rng);
        let v6_count = dual.peers.iter().filter(|p| p.addr.is_ipv6()).count();
        assert_eq!((dual.peers.len(), v6_count), (8, 4));
        assert!(
            dual.peers
                .iter()
                .all(|p| p.id.is_some_and(|id| id != peer_id(me)))
        );

        // When one family is short, the other makes up the difference.
        let wide = engine.announce(
            &AnnounceRequest {
                numwant: 15,
                ..over_v6
            },
            now,
            rng,
        );
        assert_eq!(wide.peers.len(), 15);
        assert!(
            wide.peers
                .iter()
                .all(|p| p.id.is_some_and(|id| id != peer_id(me)))
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn handout_properties(
            roles in proptest::collection::vec(any::<bool>(), 0..60),
            announcer in 0u32..70,
            announcer_seeds: bool,
            numwant in 0usize..80,
            seed: u64,
        ) {
            let engine = engine();
            let now = engine.epoch();
            let rng = &mut SmallRng::seed_from_u64(seed);
            for (n, &is_seeder) in roles.iter().enumerate() {
                let left = if is_seeder { 0 } else { 1 };
                engine.announce(&announce(n as u32, left, Event::Started, 0), now, rng);
            }
            let left = if announcer_seeds { 0 } else { 1 };
            let response = engine.announce(&announce(announcer, left, Event::None, numwant), now, rng);

            // The announcer's own earlier entry was replaced, not duplicated.
            let mut roles = roles.clone();
            if let Some(role) = roles.get_mut(announcer as usize) {
                *role = announcer_seeds;
            }
            let eligible: HashSet<SocketAddr> = roles.iter().enumerate()
                .filter(|&(n, &is_seeder)| n != announcer as usize && !(announcer_seeds && is_seeder))
                .map(|(n, _)| v4(n as u32))
                .collect();
            let handed: Vec<SocketAddr> = response.peers.iter().map(|p| p.addr).collect();
            let distinct: HashSet<SocketAddr> = handed.iter().copied().collect();
            prop_assert_eq!(distinct.len(), handed.len(), "duplicates");
            prop_assert!(!distinct.contains(&v4(announcer)), "handed itself");
            prop_assert!(distinct.is_subset(&eligible), "a seeder got a seeder, or an unknown peer");
            prop_assert_eq!(handed.len(), numwant.min(eligible.len()));
        }

        /// The compact layout answers exactly as full sets do: the same counts
        /// and, asked for everyone, the same peers, through joins past the
        /// compact limit, role changes, stops, IPv6 arrivals and sweeps that
        /// move swarms back.
        #[test]
        fn compact_and_full_swarms_answer_alike(
            ops in proptest::collection::vec((0u8..2, 0u32..24, any::<bool>(), 0u8..4, 0u8..20, 0u64..90), 0..160),
        ) {
            let compact = engine();
            // One epoch for both: a second engine's own would lag by a few
            // microseconds, and an expiry landing on a sweep's exact second
            // would then differ (a saved regression case does exactly that).
            let full = Engine {
                epoch: compact.epoch(),
                ..engine().full_layout_only()
            };
            let rng = &mut SmallRng::seed_from_u64(1);
            let mut clock = compact.epoch();
            let torrents = [InfoHash([3; 20]), InfoHash([200; 20])];
            for (torrent, n, seeds, event, family, wait) in ops {
                clock += Duration::from_secs(wait);
                if wait > 60 {
                    prop_assert_eq!(compact.purge_expired(clock), full.purge_expired(clock));
                }
                let event = [Event::None, Event::Started, Event::Completed, Event::Stopped][event as usize];
                let mut request = announce(n, u64::from(!seeds), event, 200);
                request.info_hash = torrents[torrent as usize];
                if family == 0 {
                    request.addr = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16 + 1], 6881));
                }
                let mut a = compact.announce(&request, clock, rng);
                let mut b = full.announce(&request, clock, rng);
                a.peers.sort_by_key(|p| p.addr);
                b.peers.sort_by_key(|p| p.addr);
                prop_assert_eq!(a, b);
                let scrape = ScrapeRequest { info_hashes: torrents.to_vec() };
                prop_assert_eq!(compact.scrape(&scrape), full.scrape(&scrape));
            }
        }

        /// The running totals a metrics scrape reads always equal what the
        /// swarms hold, through starts, completions, stops, both families and expiry.
        #[test]
        fn the_census_matches_the_swarms(
            ops in proptest::collection::vec((0u8..3, 0u32..6, any::<bool>(), 0u8..4, any::<bool>(), 0u64..80), 0..80),
        ) {
            let engine = engine();
            let rng = &mut SmallRng::seed_from_u64(1);
            let mut clock = engine.epoch();
            let torrents: Vec<InfoHash> = (0..3u8).map(|t| InfoHash([t * 85 + 1; 20])).collect();
            for (torrent, n, seeds, event, over_v6, wait) in ops {
                clock += Duration::from_secs(wait);
                if wait > 60 {
                    engine.purge_expired(clock);
                }
                let mut request = announce(n, if seeds { 0 } else { 1 }, [Event::None, Event::Started, Event::Completed, Event::Stopped][event as usize], 5);
                request.info_hash = torrents[torrent as usize];
                if over_v6 {
                    request.addr = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16 + 1], 6881));
                }
                engine.announce(&request, clock, rng);
                let scraped = engine.scrape(&ScrapeRequest { info_hashes: torrents.clone() });
                let census = engine.census();
                let seeders: u32 = scraped.files.iter().map(|(_, s)| s.complete).sum();
                let leechers: u32 = scraped.files.iter().map(|(_, s)| s.incomplete).sum();
                prop_assert_eq!((census.seeders, census.leechers), (seeders as usize, leechers as usize));
                // The one-pass read /metrics uses agrees with the four separate ones.
                let totals = engine.totals();
                prop_assert_eq!(totals.census, census);
                prop_assert_eq!(totals.tiers, engine.tier_counts());
                prop_assert_eq!(totals.limit_hits, engine.limit_hits());
                prop_assert_eq!(totals.transfer, engine.transfer_totals());
            }
            let swept = engine.purge_expired(clock + Duration::from_secs(1000));
            let census = engine.census();
            prop_assert_eq!((census.swarms, census.seeders, census.leechers), (swept.swarms, 0, 0));
        }
    }

    fn fed(step: u64, capacity: usize) -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(100),
            shards: 4,
            expiry_step: Duration::from_secs(step),
            change_feed: capacity,
            ..EngineConfig::default()
        })
    }

    fn drain(engine: &Engine, now: Instant) -> (Vec<PeerChange>, u64) {
        let mut out = Vec::new();
        let mut dropped = 0;
        for index in 0..engine.shard_count() {
            dropped += engine.drain_changes(index, now, &mut out);
        }
        (out, dropped)
    }

    fn kinds(changes: &[PeerChange]) -> Vec<ChangeKind> {
        changes.iter().map(|change| change.kind).collect()
    }

    #[test]
    fn the_feed_carries_what_a_mirror_cannot_derive_and_nothing_else() {
        let engine = fed(60, 1000);
        let rng = &mut SmallRng::seed_from_u64(1);
        let t0 = engine.epoch();
        let at = |secs| t0 + Duration::from_secs(secs);
        engine.announce(&announce(1, 10, Event::Started, 5), at(0), rng);
        let (changes, _) = drain(&engine, at(0));
        assert_eq!(kinds(&changes), [ChangeKind::Listed]);
        // 0 + 100 rounds up to 120; announces until 20 s land on 120 too.
        assert_eq!(changes[0].peer.remaining_secs, 120);
        assert!(!changes[0].peer.seeder);
        for secs in [1, 10, 20] {
            engine.announce(&announce(1, 10, Event::None, 5), at(secs), rng);
        }
        assert_eq!(drain(&engine, at(20)).0, []);
        // 21 + 100 rounds up to 180: the expiry moved, so it is fed.
        engine.announce(&announce(1, 10, Event::None, 5), at(21), rng);
        let (changes, _) = drain(&engine, at(21));
        assert_eq!(kinds(&changes), [ChangeKind::Listed]);
        assert_eq!(changes[0].peer.remaining_secs, 180 - 21);
        // A role change is fed at once.
        engine.announce(&announce(1, 0, Event::Completed, 5), at(22), rng);
        let (changes, _) = drain(&engine, at(22));
        assert_eq!(kinds(&changes), [ChangeKind::Listed]);
        assert!(changes[0].peer.seeder && changes[0].peer.completed);
        // So is a new address.
        let mut moved = announce(1, 0, Event::None, 5);
        moved.addr = SocketAddr::from(([10, 9, 9, 9], 7000));
        engine.announce(&moved, at(23), rng);
        let (changes, _) = drain(&engine, at(23));
        assert_eq!(changes[0].peer.addr, moved.addr);
        // Stopping is fed; stopping again (not listed) is not.
        engine.announce(&announce(1, 0, Event::Stopped, 5), at(24), rng);
        engine.announce(&announce(1, 0, Event::Stopped, 5), at(25), rng);
        assert_eq!(kinds(&drain(&engine, at(25)).0), [ChangeKind::Stopped]);
        // Expiry is fed by the sweep that drops the peer.
        engine.announce(&announce(2, 10, Event::Started, 5), at(30), rng);
        drain(&engine, at(30));
        engine.purge_expired(at(179));
        assert_eq!(drain(&engine, at(179)).0, []);
        engine.purge_expired(at(180));
        let (changes, _) = drain(&engine, at(180));
        assert_eq!(kinds(&changes), [ChangeKind::Expired]);
        assert_eq!(changes[0].peer.id, peer_id(2));
    }

    #[test]
    fn a_full_feed_drops_and_counts_and_no_feed_records_nothing() {
        let engine = fed(0, 4);
        let rng = &mut SmallRng::seed_from_u64(1);
        let now = engine.epoch();
        for n in 0..10 {
            engine.announce(&announce(n, 10, Event::Started, 5), now, rng);
        }
        // One torrent, one shard: it may use the whole feed.
        let (changes, dropped) = drain(&engine, now);
        assert_eq!((changes.len(), dropped), (4, 6));
        assert_eq!(drain(&engine, now), (Vec::new(), 0));
        // Draining gave the room back.
        for n in 10..14 {
            engine.announce(&announce(n, 10, Event::Started, 5), now, rng);
        }
        assert_eq!(drain(&engine, now).0.len(), 4);

        let quiet = engine_with_lifetime(100);
        quiet.announce(&announce(1, 10, Event::Started, 5), now, rng);
        quiet.announce(&announce(1, 10, Event::Stopped, 5), now, rng);
        assert_eq!(drain(&quiet, now), (Vec::new(), 0));
    }

    fn engine_with_lifetime(secs: u64) -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(secs),
            shards: 4,
            ..EngineConfig::default()
        })
    }

    fn listing(engine: &Engine, now: Instant) -> Vec<(InfoHash, Vec<StoredPeer>)> {
        let mut out = Vec::new();
        for index in 0..engine.shard_count() {
            engine.export_shard(index, now, &mut out);
        }
        let mut listing: Vec<_> = out
            .into_iter()
            .map(|mut swarm| {
                swarm
                    .peers
                    .sort_by_key(|peer| (peer.id.0, peer.addr.is_ipv6()));
                (swarm.info_hash, swarm.peers)
            })
            .collect();
        listing.sort_by_key(|(info_hash, _)| info_hash.0);
        listing
    }

    #[test]
    fn restoring_never_shortens_a_listing() {
        let engine = fed(0, 100);
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(1);
        engine.announce(&announce(1, 10, Event::Started, 5), now, rng);
        let mut swarm = StoredSwarm {
            info_hash: TORRENT,
            downloaded: 0,
            peers: vec![listing(&engine, now)[0].1[0]],
        };
        swarm.peers[0].remaining_secs = 5;
        assert_eq!(engine.restore(&swarm, now), 0);
        assert_eq!(listing(&engine, now)[0].1[0].remaining_secs, 100);
        // Nor does it enter the feed (only the first announce did).
        assert_eq!(drain(&engine, now).0.len(), 1);
    }

    proptest! {
        /// A mirror that applies the feed lists exactly what the source
        /// lists, with the same expiries, whatever the announces.
        #[test]
        fn a_mirror_fed_by_the_changes_lists_what_the_source_lists(
            step in prop_oneof![Just(0u64), Just(30), Just(120)],
            ops in proptest::collection::vec((0u8..2, 0u32..24, 0u8..3, 0u8..4, any::<bool>(), 0u64..70), 0..120),
        ) {
            let source = fed(step, 10_000);
            let mut mirror = fed(step, 10_000);
            mirror.epoch = source.epoch;
            let rng = &mut SmallRng::seed_from_u64(3);
            let mut clock = source.epoch();
            let torrents = [InfoHash([1; 20]), InfoHash([200; 20])];
            for (torrent, n, role, event, over_v6, wait) in ops {
                clock += Duration::from_secs(wait);
                if wait > 50 {
                    source.purge_expired(clock);
                    mirror.purge_expired(clock);
                }
                let mut request = announce(n % 20, [0, 1, 5][role as usize], [Event::None, Event::Started, Event::Completed, Event::Stopped][event as usize], 5);
                request.info_hash = torrents[torrent as usize];
                if over_v6 {
                    request.addr = SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, n as u16 + 1], 6881));
                } else if n >= 20 {
                    // The same id from a new address.
                    request.addr = SocketAddr::from(([10, 1, 1, n as u8], 7000));
                }
                source.announce(&request, clock, rng);
                let (changes, dropped) = drain(&source, clock);
                prop_assert_eq!(dropped, 0);
                mirror.apply(&changes, clock);
                // Nothing applied echoes back (its own sweeps feed expiries).
                let echoed = drain(&mirror, clock).0;
                prop_assert!(echoed.iter().all(|change| change.kind == ChangeKind::Expired));
                prop_assert_eq!(listing(&mirror, clock), listing(&source, clock));
            }
        }
    }
}
