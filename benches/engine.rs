//! Engine cost per announce at several swarm sizes: `cargo bench --bench engine`.
//!
//! A re-announce by a leecher already in the swarm, wanting 50 peers, in a
//! swarm that is one fifth seeders: the steady state of a deploy fleet.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use swarmgate::swarm::{AnnounceRequest, Engine, EngineConfig, Event, InfoHash, PeerId};

fn request(n: u32, left: u64) -> AnnounceRequest {
    let mut id = [b'-'; 20];
    id[16..].copy_from_slice(&n.to_be_bytes());
    AnnounceRequest {
        info_hash: InfoHash([9; 20]),
        peer_id: PeerId(id),
        addr: SocketAddr::from(([10, (n >> 16) as u8, (n >> 8) as u8, n as u8], 6881)),
        event: Event::None,
        left,
        numwant: 50,
    }
}

fn announce(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_announce");
    group.throughput(Throughput::Elements(1));
    for size in [10u32, 1_000, 100_000] {
        let engine = Engine::new(EngineConfig::default());
        let now = Instant::now();
        let mut rng = SmallRng::seed_from_u64(1);
        for n in 0..size {
            let left = if n.is_multiple_of(5) { 0 } else { 1 };
            engine.announce(&request(n, left), now, &mut rng);
        }
        let mut next = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            b.iter(|| {
                next = (next + 1) % size;
                let left = if next.is_multiple_of(5) { 0 } else { 1 };
                black_box(engine.announce(&request(next, left), now, &mut rng))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, announce);
criterion_main!(benches);
