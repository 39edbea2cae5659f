//! What a snapshot costs: `cargo run --release --example snapshot_bench -- [PEERS] [TORRENTS] [RUNS]`.
//!
//! Fills an engine with PEERS peers over TORRENTS swarms (defaults 1,000,000
//! over 200,000, one in five a seeder, as `peer_memory`), then RUNS times:
//! writes the snapshot to a temp file (as the server does: shard by shard,
//! then one durable write) while another thread re-announces existing
//! peers with numwant 50 as fast as it can; loads the file into a fresh
//! engine. Prints the write and load times, the file's bytes per peer, and
//! the announcing thread's latencies while the snapshot was taken against
//! the same thread's latencies with no snapshot running.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use swarmgate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
use swarmgate::swarm::{Engine, EngineConfig};

// The binary's allocator and settings (src/main.rs).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn request(n: u32, torrents: u32, numwant: usize) -> AnnounceRequest {
    let torrent = n % torrents;
    let mut info_hash = [0u8; 20];
    info_hash[..4].copy_from_slice(&torrent.wrapping_mul(2_654_435_761).to_le_bytes());
    info_hash[4..8].copy_from_slice(&torrent.to_le_bytes());
    let mut peer_id = [b'-'; 20];
    peer_id[16..].copy_from_slice(&n.to_be_bytes());
    AnnounceRequest {
        info_hash: InfoHash(info_hash),
        peer_id: PeerId(peer_id),
        addr: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881)),
        event: Event::None,
        left: u64::from(!n.is_multiple_of(5)),
        uploaded: 0,
        downloaded: 0,
        numwant,
        peer_ids: false,
    }
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p).round() as usize];
    format!(
        "{} announces: p50 {:?}, p99 {:?}, p99.9 {:?}, max {:?}",
        samples.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0)
    )
}

/// Re-announces existing peers until `stop`; returns each announce's latency.
fn announce_until(
    engine: &Engine,
    peers: u32,
    torrents: u32,
    stop: &AtomicBool,
    seed: u64,
) -> Vec<Duration> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut samples = Vec::new();
    let mut n = seed as u32;
    while !stop.load(Ordering::Relaxed) {
        n = n.wrapping_mul(1_664_525).wrapping_add(1_013_904_223) % peers;
        let request = request(n, torrents, 50);
        let started = Instant::now();
        let reply = engine.announce(&request, Instant::now(), &mut rng);
        samples.push(started.elapsed());
        std::hint::black_box(reply);
    }
    samples
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u32>().expect("a number"));
    let peers = args.next().unwrap_or(1_000_000);
    let torrents = args.next().unwrap_or(200_000).max(1);
    let runs = args.next().unwrap_or(3);
    let engine = Arc::new(Engine::new(EngineConfig::default()));
    let mut rng = SmallRng::seed_from_u64(1);
    for n in 0..peers {
        engine.announce(&request(n, torrents, 0), Instant::now(), &mut rng);
    }
    let path = std::env::temp_dir().join(format!(
        "swarmgate-snapshot-bench-{}.bin",
        std::process::id()
    ));
    println!(
        "{peers} peers over {torrents} torrents; snapshot at {}",
        path.display()
    );
    for run in 1..=runs {
        // The same announcing thread, first alone, then during the write.
        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        let alone =
            std::thread::spawn(move || announce_until(&e, peers, torrents, &s, u64::from(run)));
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let alone = alone.join().expect("announcer");

        let stop = Arc::new(AtomicBool::new(false));
        let (e, s) = (engine.clone(), stop.clone());
        let during = std::thread::spawn(move || {
            announce_until(&e, peers, torrents, &s, u64::from(run) + 100)
        });
        std::thread::sleep(Duration::from_millis(20));
        let written = swarmgate::store::write(&engine, &path, Instant::now(), 1_800_000_000)
            .expect("written");
        stop.store(true, Ordering::Relaxed);
        let during = during.join().expect("announcer");

        let fresh = Engine::new(EngineConfig::default());
        let started = Instant::now();
        let loaded = swarmgate::store::load(&fresh, &path, Instant::now(), 1_800_000_000);
        let load_took = started.elapsed();
        println!(
            "run {run}: write {:.3} s ({:.3} s copying under shard locks), {} bytes = {:.1} B/peer; load {:.3} s ({loaded:?})",
            written.took.as_secs_f64(),
            written.copying.as_secs_f64(),
            written.bytes,
            written.bytes as f64 / f64::from(peers.max(1)),
            load_took.as_secs_f64(),
        );
        println!("  no snapshot:     {}", percentiles(alone));
        println!("  during snapshot: {}", percentiles(during));
    }
    let _ = std::fs::remove_file(&path);
}
