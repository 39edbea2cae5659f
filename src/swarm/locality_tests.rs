//! Properties of locality-aware handouts over random topologies, through the engine.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::*;
use crate::bittorrent::*;

const TORRENT: InfoHash = InfoHash([3; 20]);

/// A peer of a generated topology: region, zone, rack (subnet), host; region
/// `None` puts it outside every site.
#[derive(Debug, Clone, Copy)]
struct Place {
    region: Option<u8>,
    zone: u8,
    rack: u8,
    host: u8,
}

impl Place {
    fn ip(&self) -> IpAddr {
        match self.region {
            Some(region) => IpAddr::V4(Ipv4Addr::new(
                10,
                region,
                self.zone * 16 + self.rack,
                self.host,
            )),
            None => IpAddr::V4(Ipv4Addr::new(192, 168, self.rack, self.host)),
        }
    }
}

fn place() -> impl Strategy<Value = Place> {
    (
        prop_oneof![4 => (0u8..3).prop_map(Some), 1 => Just(None)],
        0u8..3,
        0u8..4,
        1u8..=254,
    )
        .prop_map(|(region, zone, rack, host)| Place {
            region,
            zone,
            rack,
            host,
        })
}

/// Sites: one /20 per (region, zone), named so that zone names repeat across regions.
fn topology() -> Topology {
    let mut sites = Vec::new();
    for region in 0..3u8 {
        for zone in 0..3u8 {
            sites.push(SiteSpec {
                network: IpAddr::V4(Ipv4Addr::new(10, region, zone * 16, 0)),
                prefix_len: 20,
                zone: format!("z{zone}"),
                region: format!("r{region}"),
            });
        }
    }
    Topology::new(24, 64, &sites).expect("topology")
}

fn engine(policy: HandoutPolicy) -> Engine {
    Engine::with_locality(
        EngineConfig {
            peer_lifetime: Duration::from_secs(100),
            shards: 2,
            ..EngineConfig::default()
        },
        LocalitySettings {
            topology: topology(),
            policy,
            ..LocalitySettings::default()
        },
    )
}

fn peer_id(n: usize) -> PeerId {
    let mut id = [b'-'; 20];
    id[12..].copy_from_slice(&(n as u64).to_be_bytes());
    PeerId(id)
}

fn request(n: usize, place: &Place, seeder: bool, numwant: usize) -> AnnounceRequest {
    AnnounceRequest {
        info_hash: TORRENT,
        peer_id: peer_id(n),
        addr: SocketAddr::new(place.ip(), 6881 + (n % 1000) as u16),
        event: Event::None,
        left: u64::from(!seeder),
        uploaded: 0,
        downloaded: 0,
        numwant,
        peer_ids: false,
    }
}

fn policy() -> impl Strategy<Value = HandoutPolicy> {
    prop_oneof![
        2 => Just(HandoutPolicy::default()),
        1 => Just(HandoutPolicy {
            bridgehead_every: 4,
            ..HandoutPolicy::default()
        }),
        1 => (0usize..5, 0u8..40).prop_map(|(seeder_guard, spill_percent)| HandoutPolicy {
            tiers: true,
            seeder_guard,
            spill_percent,
            bridgeheads: 0,
            bridgehead_every: 0,
        }),
        1 => Just(HandoutPolicy::STRICT),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(120))]

    /// Over random topologies and swarms on both sides of the index threshold:
    /// never self, never seeder to seeder, no duplicates, as many as possible,
    /// the seeder guard honoured, and tiers in order except for the guard and
    /// spill slots.
    #[test]
    fn tiered_handouts_keep_their_promises(
        peers in proptest::collection::vec((place(), any::<bool>()), 0..320),
        announcer in (place(), any::<bool>()),
        numwant in 0usize..90,
        policy in policy(),
        seed: u64,
    ) {
        let engine = engine(policy);
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(seed);
        for (n, (place, seeder)) in peers.iter().enumerate() {
            engine.announce(&request(n, place, *seeder, 0), now, rng);
        }
        let me = peers.len();
        let (my_place, i_seed) = announcer;
        // Ids are read from a column of their own, only when asked for.
        let with_ids = seed % 2 == 0;
        let response = engine.announce(
            &AnnounceRequest { peer_ids: with_ids, ..request(me, &my_place, i_seed, numwant) },
            now,
            rng,
        );

        let mine = engine.locate(my_place.ip());
        let by_addr: HashMap<SocketAddr, (usize, bool)> = peers
            .iter()
            .enumerate()
            .map(|(n, (place, seeder))| (request(n, place, *seeder, 0).addr, (n, *seeder)))
            .collect();
        // The bridgehead guard: a leecher's rank is how many leechers of its
        // region announced before it; far links only between bridgeheads.
        let every = policy.bridgehead_every;
        let is_bridgehead =
            |rank: usize| rank < policy.bridgeheads || (every > 0 && rank.is_multiple_of(every));
        let guarded = policy.tiers && policy.bridgeheads > 0;
        // A region holding a seeder serves itself: none of its leechers
        // links regions.
        let seeded: HashSet<u8> = peers
            .iter()
            .filter(|(_, seeder)| *seeder)
            .filter_map(|(place, _)| place.region)
            .collect();
        let mut ranks = HashMap::new();
        let mut seen = [0usize; 256];
        for (n, (place, seeder)) in peers.iter().enumerate() {
            if let (false, Some(region)) = (*seeder, place.region) {
                ranks.insert(n, seen[usize::from(region)]);
                seen[usize::from(region)] += 1;
            }
        }
        let far_closed = guarded
            && !i_seed
            && my_place.region.is_some_and(|region| {
                !is_bridgehead(seen[usize::from(region)]) || seeded.contains(&region)
            });
        let hidden_from_afar = |n: usize| {
            guarded
                && ranks.get(&n).is_some_and(|&rank| {
                    !is_bridgehead(rank) || peers[n].0.region.is_some_and(|r| seeded.contains(&r))
                })
        };
        let eligible: HashMap<usize, Tier> = peers
            .iter()
            .enumerate()
            .filter(|(_, (_, seeder))| !(i_seed && *seeder))
            .map(|(n, (place, _))| (n, mine.tier_of(&engine.locate(place.ip()))))
            .filter(|&(n, tier)| tier != Tier::Other || !(far_closed || hidden_from_afar(n)))
            .collect();

        let mut handed = HashSet::new();
        let mut seeders_handed = 0;
        let mut last_tier = Tier::Subnet;
        for peer in &response.peers {
            let &(n, seeder) = by_addr.get(&peer.addr).expect("handed a peer that never announced");
            prop_assert!(n != me, "handed itself");
            prop_assert_eq!(peer.id, with_ids.then(|| peer_id(n)), "id does not match the address");
            prop_assert!(handed.insert(n), "duplicate {}", n);
            prop_assert!(!(i_seed && seeder), "a seeder got a seeder");
            prop_assert_eq!(peer.tier, eligible[&n], "wrong tier label");
            prop_assert!(peer.tier >= last_tier, "reply not ordered by tier");
            last_tier = peer.tier;
            seeders_handed += usize::from(seeder);
        }
        prop_assert_eq!(handed.len(), numwant.min(eligible.len()));

        let seeders_available = eligible.keys().filter(|&&n| peers[n].1).count();
        let guard = if i_seed { 0 } else { policy.seeder_guard.min(numwant) };
        prop_assert!(
            seeders_handed >= guard.min(seeders_available),
            "{} seeders handed, guard wants {}", seeders_handed, guard.min(seeders_available)
        );

        let nearest_left_out = eligible
            .iter()
            .filter(|(n, _)| !handed.contains(*n))
            .map(|(_, tier)| *tier)
            .min();
        if let Some(nearest_left_out) = nearest_left_out {
            let jumped = response.peers.iter().filter(|p| p.tier > nearest_left_out).count();
            let spill = numwant * usize::from(policy.spill_percent) / 100;
            prop_assert!(
                jumped <= guard + spill,
                "{} peers handed from tiers beyond a left-out {:?} peer; guard {} + spill {}",
                jumped, nearest_left_out, guard, spill
            );
        }
    }

    /// Joins, leaves, role changes, moves, expiry and peers another
    /// instance numbered (anywhere in the join order, or lower than listed),
    /// across the index threshold both ways, keep the locality index exact
    /// and every set's leechers in join order.
    #[test]
    fn the_locality_index_stays_exact(
        ops in proptest::collection::vec(
            (0usize..260, place(), 0u8..7, prop_oneof![0u32..400, 65_530u32..65_545]),
            0..900,
        ),
        seed: u64,
    ) {
        let engine = engine(HandoutPolicy::default());
        let start = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(seed);
        for (step, (n, place, op, join_seq)) in ops.iter().enumerate() {
            let now = start + Duration::from_secs(step as u64 / 10);
            let mut announce = request(*n, place, *op % 2 == 0, 5);
            match op {
                4 => announce.event = Event::Stopped,
                5 => {
                    engine.purge_expired(now);
                    continue;
                }
                6 => {
                    let mirrored = PeerChange {
                        info_hash: TORRENT,
                        peer: StoredPeer {
                            id: announce.peer_id,
                            addr: announce.addr,
                            seeder: false,
                            completed: false,
                            remaining_secs: 100,
                            join_seq: *join_seq,
                        },
                        kind: ChangeKind::Listed,
                    };
                    engine.apply(&[mirrored], now);
                    engine.check_indexes();
                    continue;
                }
                _ => {}
            }
            engine.announce(&announce, now, rng);
            engine.check_indexes();
        }
        engine.purge_expired(start + Duration::from_secs(10_000));
        engine.check_indexes();
    }
}

/// Big (indexed) swarm: the seeders of one tier are each handed out about
/// equally often, whether picked by the guard or the tier fill.
#[test]
fn seeders_of_a_tier_share_the_load_in_a_big_swarm() {
    let engine = engine(HandoutPolicy::default());
    let now = engine.epoch();
    let rng = &mut SmallRng::seed_from_u64(11);
    let mut n = 0;
    let mut add = |place: Place, seeder: bool| {
        engine.announce(&request(n, &place, seeder, 0), now, rng);
        n += 1;
        n - 1
    };
    // The announcers' zone (region 0, zone 0) holds leechers only; region 0's
    // zone 1 holds 12 seeders; 500 leechers elsewhere.
    let seeders: Vec<usize> = (0..12)
        .map(|host| {
            add(
                Place {
                    region: Some(0),
                    zone: 1,
                    rack: host % 3,
                    host: host + 1,
                },
                true,
            )
        })
        .collect();
    for host in 0..500usize {
        let region = Some(1 + (host % 2) as u8);
        add(
            Place {
                region,
                zone: (host % 3) as u8,
                rack: (host % 4) as u8,
                host: (host % 250) as u8 + 1,
            },
            false,
        );
    }
    let leechers: Vec<usize> = (0..30)
        .map(|host| {
            add(
                Place {
                    region: Some(0),
                    zone: 0,
                    rack: host % 2,
                    host: host + 1,
                },
                false,
            )
        })
        .collect();

    assert_eq!(engine.check_indexes(), 1, "a swarm this big is indexed");
    let seeder_addr: HashMap<SocketAddr, usize> = seeders
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            (
                request(
                    s,
                    &Place {
                        region: Some(0),
                        zone: 1,
                        rack: i as u8 % 3,
                        host: i as u8 + 1,
                    },
                    true,
                    0,
                )
                .addr,
                i,
            )
        })
        .collect();
    let mut hits = vec![0u32; seeders.len()];
    let rng = &mut SmallRng::seed_from_u64(12);
    for round in 0..6_000 {
        let who = leechers[round % leechers.len()];
        let place = Place {
            region: Some(0),
            zone: 0,
            rack: (who - 512) as u8 % 2,
            host: (who - 512) as u8 + 1,
        };
        for peer in engine
            .announce(&request(who, &place, false, 40), now, rng)
            .peers
        {
            if let Some(&i) = seeder_addr.get(&peer.addr) {
                hits[i] += 1;
            }
        }
    }
    let total: u32 = hits.iter().sum();
    let mean = f64::from(total) / hits.len() as f64;
    assert!(mean > 100.0, "seeders were handed out: {hits:?}");
    for (i, &count) in hits.iter().enumerate() {
        let deviation = (f64::from(count) - mean).abs() / mean;
        assert!(
            deviation < 0.15,
            "seeder {i}: {count} handouts, mean {mean:.0}: {hits:?}"
        );
    }
}

/// A rack full of leechers, seeders only in another region: the guard still
/// hands every leecher two of them, the spill share is dealt over the farther
/// tiers (the empty zone tier is skipped, so region and other alternate), and
/// the strict policy does neither.
#[test]
fn guards_reach_past_a_crowded_rack() {
    let spill = 40 * 15 / 100;
    for (policy, want_far, want_region) in [
        (HandoutPolicy::default(), 2 + spill / 2, spill / 2),
        (HandoutPolicy::STRICT, 0, 0),
    ] {
        let engine = engine(policy);
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(21);
        let rack = |host| Place {
            region: Some(0),
            zone: 0,
            rack: 0,
            host,
        };
        for host in 1..=80u8 {
            engine.announce(&request(usize::from(host), &rack(host), false, 0), now, rng);
        }
        for host in 1..=20u8 {
            let elsewhere = Place {
                region: Some(0),
                zone: 1,
                rack: 0,
                host,
            };
            engine.announce(
                &request(100 + usize::from(host), &elsewhere, false, 0),
                now,
                rng,
            );
            let far = Place {
                region: Some(2),
                zone: 2,
                rack: 3,
                host,
            };
            engine.announce(&request(200 + usize::from(host), &far, true, 0), now, rng);
        }
        for round in 0..50u8 {
            let me = 1 + round;
            let response =
                engine.announce(&request(usize::from(me), &rack(me), false, 40), now, rng);
            assert_eq!(response.peers.len(), 40);
            let count = |tier| response.peers.iter().filter(|p| p.tier == tier).count();
            // Only the far region's peers are tier Other, and they are all seeders.
            assert_eq!(count(Tier::Other), want_far, "{policy:?}");
            assert_eq!(count(Tier::Region), want_region, "{policy:?}");
            assert_eq!(count(Tier::Zone), 0);
        }
    }
}

/// The origin's region (0) for the bridgehead tests.
fn origin(host: u8) -> Place {
    Place {
        region: Some(0),
        zone: 0,
        rack: 0,
        host,
    }
}

/// Remote leecher `n` of the bridgehead tests: region 1, over two racks,
/// having reported `downloaded`.
fn remote_leecher(n: usize, downloaded: u64) -> AnnounceRequest {
    let place = Place {
        region: Some(1),
        zone: 1,
        rack: (n % 2) as u8,
        host: 10 + n as u8,
    };
    AnnounceRequest {
        downloaded,
        ..request(1000 + n, &place, false, 50)
    }
}

/// `count` seeders in the origin's region, announced at `now`.
fn origin_seeders(engine: &Engine, count: u8, now: std::time::Instant, rng: &mut SmallRng) {
    for host in 1..=count {
        engine.announce(
            &request(usize::from(host), &origin(host), true, 0),
            now,
            rng,
        );
    }
}

/// Whether a reply holds a peer of another region.
fn reaches_far(response: &AnnounceResponse) -> bool {
    response.peers.iter().any(|p| p.tier == Tier::Other)
}

/// The bridgehead policy with one leecher in four past the first.
fn every_fourth() -> HandoutPolicy {
    HandoutPolicy {
        bridgehead_every: 4,
        ..HandoutPolicy::default()
    }
}

/// By default only a region's first leecher links regions, in the compact
/// layout, a full set and an indexed one.
#[test]
fn by_default_only_the_first_leecher_of_a_region_links_regions() {
    for seeders in [4u8, 24, 204] {
        let engine = engine(HandoutPolicy::default());
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(17);
        origin_seeders(&engine, seeders, now, rng);
        for n in 0..9 {
            let response = engine.announce(&remote_leecher(n, 0), now, rng);
            assert_eq!(reaches_far(&response), n == 0, "{seeders}: leecher {n}");
        }
        let seeder = engine.announce(&request(1, &origin(1), true, 50), now, rng);
        assert_eq!(seeder.peers.len(), 1, "{seeders}: rank 0 only");
    }
}

/// The bridgehead guard (one in four past the first), in the compact layout, a full set and an indexed
/// one: of a remote region's leechers, the first and one in four after it
/// are handed the far region's seeders and the others are not; a far seeder
/// asking for every leecher is handed only those; when a bridgehead leaves,
/// another leecher of its region takes its place; a leecher whose reported
/// download stood still since its last announce reaches far peers anyway.
#[test]
fn only_bridgeheads_link_regions() {
    for seeders in [4u8, 24, 204] {
        let engine = engine(every_fourth());
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(5);
        origin_seeders(&engine, seeders, now, rng);
        for n in 0..9 {
            let response = engine.announce(&remote_leecher(n, 0), now, rng);
            assert_eq!(reaches_far(&response), n % 4 == 0, "{seeders}: leecher {n}");
            assert!(response.peers.len() >= n.min(50), "its own region in full");
        }
        let seeder = engine.announce(&request(1, &origin(1), true, 50), now, rng);
        assert_eq!(seeder.peers.len(), 3, "{seeders}: ranks 0, 4 and 8 only");

        let stop = AnnounceRequest {
            event: Event::Stopped,
            ..remote_leecher(0, 0)
        };
        engine.announce(&stop, now, rng);
        // Each re-announces having downloaded more (not stalled), then the
        // same again (stalled), then more again.
        let mut linked = |downloaded| {
            (1..9)
                .filter(|&n| {
                    reaches_far(&engine.announce(&remote_leecher(n, downloaded), now, rng))
                })
                .count()
        };
        assert_eq!(
            linked(1 << 20),
            2,
            "{seeders}: eight leechers, two bridgeheads"
        );
        assert_eq!(
            linked(1 << 20),
            8,
            "{seeders}: no progress, every one reaches far"
        );
        assert_eq!(
            linked(2 << 20),
            2,
            "{seeders}: progress again, bridgeheads only"
        );
        let seeder = engine.announce(&request(1, &origin(1), true, 50), now, rng);
        assert_eq!(seeder.peers.len(), 2, "{seeders}");
    }
}

/// A remote region that holds a seeder pulls across no more: its first
/// leecher after that is a bridgehead by rank but is handed only its own
/// region (the seeder among them), in the compact layout, a full set and an
/// indexed one; one whose download stood still still reaches far.
#[test]
fn a_region_holding_a_seeder_takes_no_far_peers() {
    for seeders in [4u8, 24, 204] {
        let engine = engine(every_fourth());
        let now = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(13);
        origin_seeders(&engine, seeders, now, rng);
        let first = engine.announce(&remote_leecher(0, 1 << 20), now, rng);
        assert!(
            reaches_far(&first),
            "{seeders}: the region's first leecher links across"
        );
        // It finishes: the region now holds the whole file.
        let done = AnnounceRequest {
            left: 0,
            ..remote_leecher(0, 2 << 20)
        };
        engine.announce(&done, now, rng);
        let next = engine.announce(&remote_leecher(1, 1 << 20), now, rng);
        assert!(
            !reaches_far(&next),
            "{seeders}: rank 0 now, but the region serves itself"
        );
        let own_seeder = remote_leecher(0, 0).addr;
        assert!(
            next.peers.iter().any(|p| p.addr == own_seeder),
            "{seeders}: handed its region's seeder"
        );
        // Leecher 1 re-announces with the same download: stalled, it heals.
        let stuck = engine.announce(&remote_leecher(1, 1 << 20), now, rng);
        assert!(
            reaches_far(&stuck),
            "{seeders}: a stalled leecher reaches far anyway"
        );
    }
}

/// A stall is judged over the stall window, not between two announces a
/// second apart: a non-bridgehead leecher that re-announces quickly with the
/// same download stays in its region, and one that stood still over the
/// window reaches far peers, in the compact layout, a full set and an
/// indexed one.
#[test]
fn a_stall_is_judged_over_the_stall_window() {
    for seeders in [4u8, 24, 204] {
        let engine = Engine::with_locality(
            EngineConfig {
                peer_lifetime: Duration::from_secs(100),
                shards: 2,
                stall_window: Duration::from_secs(30),
                ..EngineConfig::default()
            },
            LocalitySettings {
                topology: topology(),
                policy: HandoutPolicy::default(),
                ..LocalitySettings::default()
            },
        );
        let start = engine.epoch();
        let rng = &mut SmallRng::seed_from_u64(11);
        origin_seeders(&engine, seeders, start, rng);
        for n in 0..3 {
            engine.announce(&remote_leecher(n, 1 << 20), start, rng);
        }
        // Leecher 1 is no bridgehead (rank 1 of 3).
        let soon = start + Duration::from_secs(2);
        let quick = engine.announce(&remote_leecher(1, 1 << 20), soon, rng);
        assert!(
            !reaches_far(&quick),
            "{seeders}: two seconds without a piece is no stall"
        );
        let late = soon + Duration::from_secs(30);
        let stuck = engine.announce(&remote_leecher(1, 1 << 20), late, rng);
        assert!(
            reaches_far(&stuck),
            "{seeders}: thirty seconds without a byte is"
        );
        let moving = engine.announce(
            &remote_leecher(1, 2 << 20),
            late + Duration::from_secs(30),
            rng,
        );
        assert!(
            !reaches_far(&moving),
            "{seeders}: progress again, its region only"
        );
    }
}

/// A region's leechers keep the order they joined in when others expire or
/// stop, in the compact layout and in a full set, so the bridgeheads after
/// either are the first remaining leecher and the one four places on.
#[test]
fn bridgeheads_follow_join_order_through_expiry() {
    for seeders in [4u8, 24] {
        let engine = engine(every_fourth());
        let start = engine.epoch();
        let later = start + Duration::from_secs(60);
        let rng = &mut SmallRng::seed_from_u64(9);
        origin_seeders(&engine, seeders, start, rng);
        for n in 0..9 {
            engine.announce(&remote_leecher(n, 0), start, rng);
        }
        // All but leechers 0 and 2 announce again later; those two expire.
        origin_seeders(&engine, seeders, later, rng);
        let staying = [1, 3, 4, 5, 6, 7, 8];
        for n in staying {
            engine.announce(&remote_leecher(n, 1 << 20), later, rng);
        }
        let gone = engine.purge_expired(start + Duration::from_secs(101));
        assert_eq!(gone.removed_peers, 2, "{seeders}");
        let linked: Vec<usize> = staying
            .into_iter()
            .filter(|&n| reaches_far(&engine.announce(&remote_leecher(n, 2 << 20), later, rng)))
            .collect();
        assert_eq!(linked, [1, 6], "{seeders}: ranks 0 and 4 of what is left");
        // A stop keeps the order too.
        let stop = AnnounceRequest {
            event: Event::Stopped,
            ..remote_leecher(1, 2 << 20)
        };
        engine.announce(&stop, later, rng);
        let linked: Vec<usize> = staying[1..]
            .iter()
            .copied()
            .filter(|&n| reaches_far(&engine.announce(&remote_leecher(n, 3 << 20), later, rng)))
            .collect();
        assert_eq!(linked, [3, 7], "{seeders}: after a stop");
    }
}

/// Two engines with change feeds, as two instances of one cluster.
fn instances(policy: HandoutPolicy) -> [Engine; 2] {
    let config = EngineConfig {
        peer_lifetime: Duration::from_secs(100),
        shards: 2,
        change_feed: 100_000,
        // Every announce here happens at one instant: none reads as stalled.
        stall_window: Duration::from_secs(3600),
        ..EngineConfig::default()
    };
    let settings = LocalitySettings {
        topology: topology(),
        policy,
        ..LocalitySettings::default()
    };
    [
        Engine::with_locality(config, settings.clone()),
        Engine::with_locality(config, settings),
    ]
}

/// Everything `from` fed since the last drain, in an order `rng` shuffles.
fn drained(from: &Engine, now: std::time::Instant, rng: &mut SmallRng) -> Vec<PeerChange> {
    use rand::seq::SliceRandom;
    let mut changes = Vec::new();
    for shard in 0..2 {
        from.drain_changes(shard, now, &mut changes);
    }
    changes.shuffle(rng);
    changes
}

/// The far peers a leecher is handed (every peer it may see: numwant
/// exceeds the swarm), and so whether it is a bridgehead.
fn far_view(
    engine: &Engine,
    n: usize,
    place: &Place,
    now: std::time::Instant,
    rng: &mut SmallRng,
) -> std::collections::BTreeSet<SocketAddr> {
    engine
        .announce(&request(n, place, false, 1000), now, rng)
        .peers
        .iter()
        .filter(|peer| peer.tier == Tier::Other)
        .map(|peer| peer.addr)
        .collect()
}

/// Leechers announced to two instances, some to both before either heard
/// of the other's, then exchanged in shuffled orders: both instances pick
/// the same bridgeheads, and hand every leecher the same far peers.
fn instances_rank_alike(
    policy: HandoutPolicy,
    peers: &[(Place, u8)],
    seed: u64,
) -> Result<(), TestCaseError> {
    let engines = instances(policy);
    let now = engines[0].epoch();
    let rng = &mut SmallRng::seed_from_u64(seed);
    // A seeder in region 0: its leechers serve themselves.
    let seeder = Place {
        region: Some(0),
        zone: 0,
        rack: 0,
        host: 1,
    };
    engines[0].announce(&request(100_000, &seeder, true, 0), now, rng);
    for (n, (place, to)) in peers.iter().enumerate() {
        // 0: the first instance, 1: the second, 2: both (each numbers it).
        for (i, engine) in engines.iter().enumerate() {
            if usize::from(*to) == i || *to == 2 {
                engine.announce(&request(n, place, false, 0), now, rng);
            }
        }
    }
    let first = drained(&engines[0], now, rng);
    let second = drained(&engines[1], now, rng);
    engines[1].apply(&first, now);
    engines[0].apply(&second, now);
    let (mut bridgeheads, mut views) = ([0; 2], [Vec::new(), Vec::new()]);
    for (n, (place, _)) in peers.iter().enumerate() {
        for (i, engine) in engines.iter().enumerate() {
            let view = far_view(engine, n, place, now, rng);
            bridgeheads[i] += usize::from(!view.is_empty());
            views[i].push(view);
        }
    }
    prop_assert_eq!(&views[0], &views[1], "bridgeheads {:?}", bridgeheads);
    for engine in &engines {
        engine.check_indexes();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn instances_that_learn_peers_in_any_order_rank_them_alike(
        policy in prop_oneof![Just(HandoutPolicy::default()), Just(every_fourth())],
        peers in proptest::collection::vec((place(), 0u8..3), 1..60),
        seed in any::<u64>(),
    ) {
        instances_rank_alike(policy, &peers, seed)?;
    }
}

/// The same with a swarm past the index threshold, where a region's
/// leechers are ranked by their place in the region's group.
#[test]
fn indexed_sets_rank_alike_on_every_instance() {
    let rng = &mut SmallRng::seed_from_u64(5);
    for policy in [HandoutPolicy::default(), every_fourth()] {
        let peers: Vec<(Place, u8)> = (0..260)
            .map(|n| {
                let place = Place {
                    region: Some((n % 3) as u8),
                    zone: (n % 2) as u8,
                    rack: (n % 4) as u8,
                    host: 1 + (n % 250) as u8,
                };
                (place, rng.random_range(0..3u8))
            })
            .collect();
        instances_rank_alike(policy, &peers, 11).expect("ranked alike");
    }
}

/// A peer that two instances each numbered as a newcomer settles on the
/// lower number on both, and the instance that lowered its own feeds the
/// lower number once (so Redis, written from the feeds, ends with it), and
/// nothing more: no echo.
#[test]
fn a_peer_numbered_twice_settles_on_the_lower_number_everywhere() {
    let engines = instances(HandoutPolicy::default());
    let now = engines[0].epoch();
    let rng = &mut SmallRng::seed_from_u64(3);
    let place = Place {
        region: Some(1),
        zone: 0,
        rack: 0,
        host: 7,
    };
    // The second instance already lists peer 1, so it numbers peer 2 as 2;
    // the first, empty, numbers it 1.
    engines[1].announce(&request(1, &place, false, 0), now, rng);
    for engine in &engines {
        engine.announce(&request(2, &place, false, 0), now, rng);
    }
    let first = drained(&engines[0], now, rng);
    let second = drained(&engines[1], now, rng);
    let numbers = |changes: &[PeerChange]| -> Vec<(PeerId, u32)> {
        let mut numbers: Vec<_> = changes
            .iter()
            .map(|change| (change.peer.id, change.peer.join_seq))
            .collect();
        numbers.sort_by_key(|(id, _)| id.0);
        numbers
    };
    assert_eq!(numbers(&first), [(peer_id(2), 1)]);
    assert_eq!(numbers(&second), [(peer_id(1), 1), (peer_id(2), 2)]);
    engines[1].apply(&first, now);
    engines[0].apply(&second, now);
    assert_eq!(
        numbers(&drained(&engines[1], now, rng)),
        [(peer_id(2), 1)],
        "the second instance writes back the lower number"
    );
    assert!(drained(&engines[0], now, rng).is_empty(), "no echo");
    let listing = |engine: &Engine| {
        let mut peers = engine.export_swarm(&TORRENT, now).expect("listed").peers;
        peers.sort_by_key(|peer| peer.id.0);
        peers
            .iter()
            .map(|peer| (peer.id, peer.join_seq))
            .collect::<Vec<_>>()
    };
    assert_eq!(listing(&engines[0]), [(peer_id(1), 1), (peer_id(2), 1)]);
    assert_eq!(listing(&engines[0]), listing(&engines[1]));
}
