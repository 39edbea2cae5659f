//! What a leecher leaving and joining costs in one region of a swarm, for
//! callgrind (instruction counts repeat on a noisy machine) and as a timing:
//!
//! ```text
//! cargo build --release --example churn_cost
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/churn_cost SIZE N
//! target/release/examples/churn_cost SIZE N    # prints ns per round
//! ```
//!
//! Fills one swarm with SIZE leechers, all in one region (one site), then N
//! times picks a leecher at random: it stops (leaving from anywhere in its
//! region's join order) and announces again (joining at the end). numwant
//! is 0, so no handout runs: a round is one leave and one join. Swarms of
//! 192 peers or more keep a region's leechers in join order in their
//! locality index, so a leave shifts the later ones up. Run it with two
//! values of N: the difference in instructions over the difference in N is
//! the cost of one round, the set-up cancelled.
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use swarmgate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
use swarmgate::swarm::{Engine, EngineConfig, LocalitySettings, SiteSpec, Topology};

fn request(n: u32, event: Event) -> AnnounceRequest {
    let mut id = [b'-'; 20];
    id[16..].copy_from_slice(&n.to_be_bytes());
    AnnounceRequest {
        info_hash: InfoHash([9; 20]),
        peer_id: PeerId(id),
        addr: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881)),
        event,
        left: 1,
        uploaded: 0,
        downloaded: 0,
        numwant: 0,
        peer_ids: false,
    }
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u32>().expect("SIZE N: two numbers"));
    let (Some(size), Some(rounds)) = (args.next(), args.next()) else {
        eprintln!("usage: churn_cost SIZE N");
        std::process::exit(2);
    };
    let region = SiteSpec {
        network: IpAddr::from([10, 0, 0, 0]),
        prefix_len: 8,
        zone: "z".into(),
        region: "r".into(),
    };
    let engine = Engine::with_locality(
        EngineConfig::default(),
        LocalitySettings {
            topology: Topology::new(24, 64, &[region]).expect("topology"),
            ..LocalitySettings::default()
        },
    );
    let now = Instant::now();
    let mut rng = SmallRng::seed_from_u64(1);
    for n in 0..size.max(1) {
        engine.announce(&request(n, Event::Started), now, &mut rng);
    }
    let started = Instant::now();
    for _ in 0..rounds {
        let n = rng.random_range(0..size.max(1));
        std::hint::black_box(engine.announce(&request(n, Event::Stopped), now, &mut rng));
        std::hint::black_box(engine.announce(&request(n, Event::Started), now, &mut rng));
    }
    let elapsed = started.elapsed();
    println!(
        "{size} leechers, {rounds} rounds: {:.0} ns per leave and join",
        elapsed.as_nanos() as f64 / f64::from(rounds.max(1))
    );
}
