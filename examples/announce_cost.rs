//! Instructions per announce, for callgrind (whose counts repeat exactly on
//! a noisy machine, where timings wander by 10-20%):
//!
//! ```text
//! cargo build --release --example announce_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/announce_cost SIZE N REPORTS [REGIONS]
//! ```
//!
//! Fills one swarm with SIZE peers (a fifth seeders), then re-announces its
//! leechers N times with numwant 50, as `benches/engine.rs` does. With
//! REPORTS=1 every announce reports 16 KiB more in both directions, so the
//! transfer accounting runs in full. With REGIONS > 0, peers sit in that
//! many regions (one site each, round robin), so the locality tiers and the
//! bridgehead guard have regions to work with. Run it with two values of N: the
//! difference in instructions over the difference in N is the cost of one
//! announce, the set-up cancelled.
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use swarmgate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
use swarmgate::swarm::{Engine, EngineConfig, LocalitySettings, SiteSpec, Topology};

fn request(n: u32, total: u64, regions: u32) -> AnnounceRequest {
    let mut id = [b'-'; 20];
    id[16..].copy_from_slice(&n.to_be_bytes());
    // With regions, the second octet is the region (sizes up to 65,536).
    let second = if regions > 0 { n % regions } else { n >> 16 };
    AnnounceRequest {
        info_hash: InfoHash([9; 20]),
        peer_id: PeerId(id),
        addr: SocketAddr::from(([10, second as u8, (n >> 8) as u8, n as u8], 6881)),
        event: Event::None,
        left: u64::from(!n.is_multiple_of(5)),
        uploaded: total,
        downloaded: total,
        numwant: 50,
        peer_ids: false,
    }
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (size, count, reports) = (args[0] as u32, args[1], args[2] == 1);
    let regions = args.get(3).copied().unwrap_or(0) as u32;
    let sites: Vec<SiteSpec> = (0..regions)
        .map(|r| SiteSpec {
            network: IpAddr::from([10, r as u8, 0, 0]),
            prefix_len: 16,
            zone: format!("z{r}"),
            region: format!("r{r}"),
        })
        .collect();
    let engine = Engine::with_locality(
        EngineConfig::default(),
        LocalitySettings {
            topology: Topology::new(24, 64, &sites).unwrap(),
            ..LocalitySettings::default()
        },
    );
    let now = Instant::now();
    let mut rng = SmallRng::seed_from_u64(1);
    for n in 0..size {
        engine.announce(&request(n, 0, regions), now, &mut rng);
    }
    let mut next = 0u32;
    let mut total = 0u64;
    for _ in 0..count {
        next = (next + 1) % size;
        if next.is_multiple_of(5) {
            next = (next + 1) % size;
        }
        if reports {
            total += 1 << 14;
        }
        std::hint::black_box(engine.announce(&request(next, total, regions), now, &mut rng));
    }
}
