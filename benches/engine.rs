//! Engine cost per announce at several swarm sizes: `cargo bench --bench engine`.
//!
//! A re-announce by a leecher already in the swarm, wanting 50 peers, in a
//! swarm that is one fifth seeders: the steady state of a deploy fleet.
//! `engine_announce` has no sites (subnet tier only, addresses spread over
//! /24s); `engine_announce_locality` places peers in 3 regions × 3 zones × 8
//! racks with a sites map, so every tier and both guards are exercised.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use swarmgate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
use swarmgate::swarm::{Engine, EngineConfig, HandoutPolicy, LocalitySettings, SiteSpec, Topology};

fn request(n: u32, addr: SocketAddr, left: u64) -> AnnounceRequest {
    let mut id = [b'-'; 20];
    id[16..].copy_from_slice(&n.to_be_bytes());
    AnnounceRequest {
        info_hash: InfoHash([9; 20]),
        peer_id: PeerId(id),
        addr,
        event: Event::None,
        left,
        uploaded: 0,
        downloaded: 0,
        numwant: 50,
        peer_ids: false,
    }
}

fn spread(n: u32) -> SocketAddr {
    SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881))
}

/// Region, zone, rack round-robin; hosts and ports make each peer distinct.
fn placed(n: u32) -> SocketAddr {
    let (region, zone, rack) = (n % 3, (n / 3) % 3, (n / 9) % 8);
    let slot = n / 72;
    let ip = Ipv4Addr::new(
        10,
        region as u8,
        (zone * 8 + rack) as u8,
        (slot % 250) as u8 + 1,
    );
    SocketAddr::new(IpAddr::V4(ip), 6881 + (slot / 250) as u16)
}

fn sites() -> LocalitySettings {
    let mut sites = Vec::new();
    for region in 0..3u8 {
        for zone in 0..3u8 {
            sites.push(SiteSpec {
                network: IpAddr::V4(Ipv4Addr::new(10, region, zone * 8, 0)),
                prefix_len: 21,
                zone: format!("z{zone}"),
                region: format!("r{region}"),
            });
        }
    }
    LocalitySettings {
        topology: Topology::new(24, 64, &sites).expect("topology"),
        policy: HandoutPolicy::default(),
        ..LocalitySettings::default()
    }
}

fn run(
    c: &mut Criterion,
    name: &str,
    sizes: &[u32],
    locality: fn() -> LocalitySettings,
    addr: fn(u32) -> SocketAddr,
    config: EngineConfig,
    reports: bool,
) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    for &size in sizes {
        let engine = Engine::with_locality(config, locality());
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        for n in 0..size {
            let left = if n.is_multiple_of(5) { 0 } else { 1 };
            engine.announce(&request(n, addr(n), left), now, &mut rng);
        }
        let mut next = 0u32;
        let mut total = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                // Leechers only (n % 5 != 0): the tiered path with the seeder guard.
                next = (next + 1) % size;
                if next.is_multiple_of(5) {
                    next = (next + 1) % size;
                }
                let mut request = request(next, addr(next), 1);
                if reports {
                    // Totals that grow at every announce: each one is counted.
                    total += 1 << 14;
                    request.uploaded = total;
                    request.downloaded = total;
                }
                black_box(engine.announce(&request, now, &mut rng))
            })
        });
    }
    group.finish();
}

fn announce(c: &mut Criterion) {
    run(
        c,
        "engine_announce",
        &[10, 100, 1_000, 100_000],
        LocalitySettings::default,
        spread,
        EngineConfig::default(),
        false,
    );
    // Every announce reports more bytes than the last: the transfer
    // accounting's whole path (the increase, the shard's totals, the
    // busiest-swarms table).
    run(
        c,
        "engine_announce_reporting",
        &[10, 100_000],
        LocalitySettings::default,
        spread,
        EngineConfig::default(),
        true,
    );
    // Cluster mode: the change feed on. A re-announce within its expiry
    // step records nothing, but looks the peer up before and after.
    run(
        c,
        "engine_announce_fed",
        &[10, 100_000],
        LocalitySettings::default,
        spread,
        EngineConfig {
            expiry_step: std::time::Duration::from_secs(120),
            change_feed: 262_144,
            ..EngineConfig::default()
        },
        false,
    );
    run(
        c,
        "engine_announce_random",
        &[100, 100_000],
        || LocalitySettings {
            policy: HandoutPolicy::RANDOM,
            ..LocalitySettings::default()
        },
        spread,
        EngineConfig::default(),
        false,
    );
    run(
        c,
        "engine_announce_locality",
        &[10, 100, 1_000, 100_000],
        sites,
        placed,
        EngineConfig::default(),
        false,
    );
}

criterion_group!(benches, announce);
criterion_main!(benches);
