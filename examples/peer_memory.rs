//! Resident memory per stored peer: `cargo run --release --example peer_memory -- [PEERS] [TORRENTS]`.
//!
//! Announces PEERS distinct peers spread evenly over TORRENTS swarms (numwant
//! 0, one in five a seeder, addresses spread over many /24s) and prints the
//! growth of the process's resident set (from /proc/self/statm) per peer.
//! Defaults: 1,000,000 peers over 200,000 torrents. Linux only. Measured
//! with the allocator the `swarmgate` binary ships with (jemalloc, as in
//! `src/main.rs`), so the figure is the binary's.

use std::net::SocketAddr;
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use swarmgate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
use swarmgate::swarm::{Engine, EngineConfig};

// The binary's allocator and settings (src/main.rs).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:5000,muzzy_decay_ms:0\0";

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (Linux)");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u32>().expect("a number"));
    let peers = args.next().unwrap_or(1_000_000);
    let torrents = args.next().unwrap_or(200_000).max(1);
    let engine = Engine::new(EngineConfig::default());
    let now = Instant::now();
    let mut rng = SmallRng::seed_from_u64(1);
    let before = resident_bytes();
    let started = Instant::now();
    for n in 0..peers {
        let torrent = n % torrents;
        let mut info_hash = [0u8; 20];
        info_hash[..4].copy_from_slice(&torrent.wrapping_mul(2_654_435_761).to_le_bytes());
        info_hash[4..8].copy_from_slice(&torrent.to_le_bytes());
        let mut peer_id = [b'-'; 20];
        peer_id[16..].copy_from_slice(&n.to_be_bytes());
        let request = AnnounceRequest {
            info_hash: InfoHash(info_hash),
            peer_id: PeerId(peer_id),
            addr: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881)),
            event: Event::Started,
            left: u64::from(!n.is_multiple_of(5)),
            uploaded: 0,
            downloaded: 0,
            numwant: 0,
            peer_ids: false,
        };
        engine.announce(&request, now, &mut rng);
    }
    let elapsed = started.elapsed();
    // jemalloc returns the pages its smaller size classes held while the
    // swarms grew (5 s decay); measured right away they would still count.
    std::thread::sleep(std::time::Duration::from_secs(7));
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "peers {peers} torrents {torrents}: resident +{:.1} MiB = {:.1} bytes per peer ({:.0} ns per first announce)",
        grown as f64 / (1024.0 * 1024.0),
        grown as f64 / f64::from(peers.max(1)),
        elapsed.as_nanos() as f64 / f64::from(peers.max(1)),
    );
}
