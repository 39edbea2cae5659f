//! The in-memory store of swarms and the announce/scrape/expiry operations on it.

use std::collections::HashMap;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use rand::Rng;

use super::sample::sample_indices;
use super::types::{
    AnnounceRequest, AnnounceResponse, Event, HandoutPeer, InfoHash, PeerId, ScrapeRequest,
    ScrapeResponse, SwarmStats,
};

/// Settings the engine needs; the rest of the configuration stays outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// How long a peer stays listed after its last announce.
    pub peer_lifetime: Duration,
    /// How many independently locked shards the swarms are spread over.
    pub shards: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            peer_lifetime: Duration::from_secs(150),
            shards: 128,
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

/// All swarms, sharded by infohash so that announces to different torrents rarely contend.
///
/// Every operation locks one shard for a bounded amount of work: a hash
/// lookup, an insert or removal in dense vectors, and O(numwant) sampling.
pub struct Engine {
    shards: Box<[Mutex<Shard>]>,
    epoch: Instant,
    peer_lifetime_secs: u32,
}

type FastMap<K, V> = HashMap<K, V, RandomState>;

#[derive(Default)]
struct Shard {
    swarms: FastMap<InfoHash, Swarm>,
}

/// One torrent's peers. IPv4 and IPv6 are kept apart: a peer is keyed by its
/// id within one address family, and a client announcing over both families
/// (libtorrent announces once per interface) is listed in both.
#[derive(Default)]
struct Swarm {
    v4: PeerSet<SocketAddrV4>,
    v6: PeerSet<SocketAddrV6>,
    downloaded: u32,
    /// Engine seconds of the last announce, to retire swarms that stay empty.
    last_announce: u32,
}

/// Peers of one family, stored densely so that a random index is a random peer.
///
/// Seeders and leechers live in separate vectors, so "leechers only" (for a
/// seeder) and "anyone" (for a leecher) are both contiguous index ranges.
struct PeerSet<A> {
    slots: FastMap<PeerId, Slot>,
    seeders: Vec<Entry<A>>,
    leechers: Vec<Entry<A>>,
}

impl<A> Default for PeerSet<A> {
    fn default() -> Self {
        Self {
            slots: FastMap::default(),
            seeders: Vec::new(),
            leechers: Vec::new(),
        }
    }
}

/// Where a peer's entry is: which vector, which index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    seeder: bool,
    index: u32,
}

struct Entry<A> {
    id: PeerId,
    addr: A,
    /// Engine seconds (since `Engine::epoch`) at which the peer is dropped.
    expires_at: u32,
    /// Whether this peer's `completed` event was already counted.
    completed: bool,
}

impl Engine {
    /// An empty engine. Its clock starts now; see [`Engine::epoch`].
    pub fn new(config: EngineConfig) -> Self {
        let shards = (0..config.shards.max(1))
            .map(|_| Mutex::new(Shard::default()))
            .collect();
        Self {
            shards,
            epoch: Instant::now(),
            peer_lifetime_secs: u32::try_from(config.peer_lifetime.as_secs()).unwrap_or(u32::MAX),
        }
    }

    /// The instant engine time counts from; tests build their `now` values from it.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    /// Records an announce and returns the swarm's counts and peers for the announcer.
    pub fn announce<R: Rng + ?Sized>(
        &self,
        request: &AnnounceRequest,
        now: Instant,
        rng: &mut R,
    ) -> AnnounceResponse {
        let now_secs = self.secs(now);
        let mut shard = self.shard(&request.info_hash).lock();

        if request.event == Event::Stopped {
            let Some(swarm) = shard.swarms.get_mut(&request.info_hash) else {
                return AnnounceResponse::default();
            };
            swarm.stop(request);
            swarm.last_announce = now_secs;
            return AnnounceResponse {
                stats: swarm.stats(),
                peers: Vec::new(),
            };
        }

        let swarm = shard.swarms.entry(request.info_hash).or_default();
        swarm.last_announce = now_secs;
        let expires_at = now_secs.saturating_add(self.peer_lifetime_secs);
        let mut peers = Vec::with_capacity(request.numwant.min(swarm.len()));
        swarm.announce(request, expires_at, rng, &mut peers);
        AnnounceResponse {
            stats: swarm.stats(),
            peers,
        }
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
            shard.swarms.retain(|_, swarm| {
                stats.removed_peers += swarm.v4.purge(now_secs) + swarm.v6.purge(now_secs);
                if swarm.is_empty() && swarm.last_announce <= quiet_since {
                    stats.removed_swarms += 1;
                    return false;
                }
                stats.seeders += swarm.v4.seeders.len() + swarm.v6.seeders.len();
                stats.leechers += swarm.v4.leechers.len() + swarm.v6.leechers.len();
                true
            });
            stats.swarms += shard.swarms.len();
        }
        stats
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

impl Swarm {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn stats(&self) -> SwarmStats {
        SwarmStats {
            complete: saturating_u32(self.v4.seeders.len() + self.v6.seeders.len()),
            incomplete: saturating_u32(self.v4.leechers.len() + self.v6.leechers.len()),
            downloaded: self.downloaded,
        }
    }

    /// Removes a stopping peer. A leecher that stops with nothing left finished
    /// its download without saying `completed` (aria2 does this), so it counts.
    fn stop(&mut self, request: &AnnounceRequest) {
        let id = &request.peer_id;
        let finished = request.left == 0;
        let first_completion = match request.addr {
            SocketAddr::V4(_) => self.v4.remove(id, finished) && !self.v6.has_completed(id),
            SocketAddr::V6(_) => self.v6.remove(id, finished) && !self.v4.has_completed(id),
        };
        if first_completion {
            self.downloaded = self.downloaded.saturating_add(1);
        }
    }

    fn announce<R: Rng + ?Sized>(
        &mut self,
        request: &AnnounceRequest,
        expires_at: u32,
        rng: &mut R,
        out: &mut Vec<HandoutPeer>,
    ) {
        let seeder = request.is_seeder();
        let completing = request.event == Event::Completed;
        let id = &request.peer_id;
        match request.addr {
            SocketAddr::V4(addr) => {
                let counted_elsewhere = self.v6.has_completed(id);
                if self.v4.upsert(*id, addr, seeder, expires_at, completing) && !counted_elsewhere {
                    self.downloaded = self.downloaded.saturating_add(1);
                }
                hand_out_dual(&self.v4, &self.v6, id, seeder, request.numwant, rng, out);
            }
            SocketAddr::V6(addr) => {
                let counted_elsewhere = self.v4.has_completed(id);
                if self.v6.upsert(*id, addr, seeder, expires_at, completing) && !counted_elsewhere {
                    self.downloaded = self.downloaded.saturating_add(1);
                }
                hand_out_dual(&self.v6, &self.v4, id, seeder, request.numwant, rng, out);
            }
        }
    }
}

/// Fills `out` from the announcer's own family and, when the same peer id is
/// also listed in the other family (a dual-stack client), from both: half each,
/// with either family making up what the other lacks.
fn hand_out_dual<A, B, R>(
    own: &PeerSet<A>,
    other: &PeerSet<B>,
    id: &PeerId,
    to_seeder: bool,
    numwant: usize,
    rng: &mut R,
    out: &mut Vec<HandoutPeer>,
) where
    A: Copy + Into<SocketAddr>,
    B: Copy + Into<SocketAddr>,
    R: Rng + ?Sized,
{
    let from_other = if other.slots.contains_key(id) {
        let other_available = other.available(id, to_seeder);
        let own_shortfall = numwant.saturating_sub(own.available(id, to_seeder));
        (numwant / 2).max(own_shortfall).min(other_available)
    } else {
        0
    };
    own.hand_out(id, to_seeder, numwant - from_other, rng, out);
    other.hand_out(id, to_seeder, from_other, rng, out);
}

impl<A: Copy + Into<SocketAddr>> PeerSet<A> {
    fn len(&self) -> usize {
        self.slots.len()
    }

    fn has_completed(&self, id: &PeerId) -> bool {
        self.slots
            .get(id)
            .is_some_and(|slot| self.entry(*slot).completed)
    }

    fn entry(&self, slot: Slot) -> &Entry<A> {
        let list = if slot.seeder {
            &self.seeders
        } else {
            &self.leechers
        };
        &list[slot.index as usize]
    }

    /// Inserts or refreshes a peer; returns whether this announce is the peer's
    /// first completed download: a `completed` event, or a listed leecher
    /// turning seeder (clients that finish and re-announce with `left=0`).
    fn upsert(
        &mut self,
        id: PeerId,
        addr: A,
        seeder: bool,
        expires_at: u32,
        completing: bool,
    ) -> bool {
        let mut counted_before = false;
        let mut finished = completing;
        if let Some(slot) = self.slots.get(&id).copied() {
            if slot.seeder == seeder {
                let list = if seeder {
                    &mut self.seeders
                } else {
                    &mut self.leechers
                };
                let entry = &mut list[slot.index as usize];
                entry.addr = addr;
                entry.expires_at = expires_at;
                let first = completing && !entry.completed;
                entry.completed |= completing;
                return first;
            }
            // Role changed (leecher finished, or a seeder lost data): move lists.
            counted_before = self.remove_slot(slot).completed;
            finished |= seeder;
        }
        let list = if seeder {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        let index = saturating_u32(list.len());
        list.push(Entry {
            id,
            addr,
            expires_at,
            completed: counted_before || finished,
        });
        self.slots.insert(id, Slot { seeder, index });
        finished && !counted_before
    }

    /// Removes a peer; returns whether it was an uncounted leecher that has
    /// `finished` (so its download counts now).
    fn remove(&mut self, id: &PeerId, finished: bool) -> bool {
        match self.slots.get(id).copied() {
            Some(slot) => {
                let entry = self.remove_slot(slot);
                finished && !slot.seeder && !entry.completed
            }
            None => false,
        }
    }

    /// Removes the entry at `slot` by swapping the last entry into its place.
    fn remove_slot(&mut self, slot: Slot) -> Entry<A> {
        let list = if slot.seeder {
            &mut self.seeders
        } else {
            &mut self.leechers
        };
        let removed = list.swap_remove(slot.index as usize);
        if let Some(moved) = list.get(slot.index as usize) {
            self.slots.insert(moved.id, slot);
        }
        self.slots.remove(&removed.id);
        removed
    }

    /// Removes expired peers; returns how many.
    fn purge(&mut self, now_secs: u32) -> usize {
        let mut removed = 0;
        for seeder in [true, false] {
            let mut index = 0;
            loop {
                let list = if seeder {
                    &self.seeders
                } else {
                    &self.leechers
                };
                let Some(entry) = list.get(index) else { break };
                if entry.expires_at <= now_secs {
                    self.remove_slot(Slot {
                        seeder,
                        index: saturating_u32(index),
                    });
                    removed += 1;
                } else {
                    index += 1;
                }
            }
        }
        removed
    }

    /// How many peers `hand_out` could offer this announcer at most.
    fn available(&self, exclude: &PeerId, to_seeder: bool) -> usize {
        let (candidates, own_position) = self.candidates(exclude, to_seeder);
        candidates - usize::from(own_position.is_some())
    }

    /// The size of the candidate range for this announcer, and its own position in it.
    ///
    /// Candidates are seeders then leechers for a leecher, leechers only for a seeder.
    fn candidates(&self, exclude: &PeerId, to_seeder: bool) -> (usize, Option<usize>) {
        let seeders = if to_seeder { 0 } else { self.seeders.len() };
        let own_position = self.slots.get(exclude).and_then(|slot| match slot.seeder {
            true if to_seeder => None,
            true => Some(slot.index as usize),
            false => Some(seeders + slot.index as usize),
        });
        (seeders + self.leechers.len(), own_position)
    }

    /// Appends up to `wanted` random peers other than `exclude`; returns how many.
    ///
    /// A seeder is offered leechers only; a leecher is offered seeders and leechers.
    fn hand_out<R: Rng + ?Sized>(
        &self,
        exclude: &PeerId,
        to_seeder: bool,
        wanted: usize,
        rng: &mut R,
        out: &mut Vec<HandoutPeer>,
    ) -> usize {
        if wanted == 0 {
            return 0;
        }
        let seeders = if to_seeder { 0 } else { self.seeders.len() };
        let (candidates, own_position) = self.candidates(exclude, to_seeder);
        let mut added = 0;
        for position in sample_indices(
            candidates,
            wanted + usize::from(own_position.is_some()),
            rng,
        ) {
            if Some(position) == own_position {
                continue;
            }
            let entry = if position < seeders {
                &self.seeders[position]
            } else {
                &self.leechers[position - seeders]
            };
            out.push(HandoutPeer {
                id: entry.id,
                addr: entry.addr.into(),
            });
            added += 1;
            if added == wanted {
                break;
            }
        }
        added
    }
}

fn saturating_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            numwant,
        }
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(100),
            shards: 4,
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
        assert!(dual.peers.iter().all(|p| p.id != peer_id(me)));

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
        assert!(wide.peers.iter().all(|p| p.id != peer_id(me)));
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
    }
}
