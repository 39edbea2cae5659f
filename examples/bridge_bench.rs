//! The bridge's costs: `cargo run --release --example bridge_bench -- [MIB] [RUNS]`.
//!
//! 1. Building: streams a MIB-sized blob (default 1024) from a local
//!    upstream (an HTTP server on loopback in its own thread, serving the
//!    blob from memory, so it costs the builder nothing but the socket) and
//!    hashes it as `swarmgate bridge` does: SHA-1 per piece and SHA-256 of
//!    the whole, in one pass. Prints MB/s per core (blob bytes over the
//!    building thread's CPU time), MB/s of wall time, and the peak of bytes
//!    allocated while building (every allocation in the process is counted,
//!    the upstream's included, so it is an upper bound).
//! 2. Serving a cached torrent: a real bridge (`bridge::start`) in front of
//!    the same upstream; times 2,000 torrent requests after the first build,
//!    and 2,000 bare upstream `HEAD`s, which every torrent request makes
//!    first. Prints p50 and p99 of both; likewise 2,000 web seed reads of
//!    16 KiB ranges against the same ranges read from the upstream directly.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use axum::body::Bytes;
use swarmgate::bridge::BridgeMetrics;
use swarmgate::bridge::build::Builder;
use swarmgate::bridge::cache::DiskCache;
use swarmgate::bridge::reference::BlobRef;
use swarmgate::bridge::upstream::{Credentials, Upstream};

/// The system allocator, counting bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: as the caller promised for `layout`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as the caller promised for `ptr` and `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Serves `blob` at every `/v2/...` path from its own thread and runtime.
fn upstream_server(blob: Bytes) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            // One byte range (`bytes=A-B`), as a web seed asks, or the whole blob.
            let app = axum::Router::new().route(
                "/v2/{*path}",
                axum::routing::get(move |headers: axum::http::HeaderMap| {
                    let blob = blob.clone();
                    async move {
                        use axum::response::IntoResponse;
                        let range = headers
                            .get("range")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|r| r.strip_prefix("bytes="))
                            .and_then(|r| r.split_once('-'))
                            .and_then(|(a, b)| {
                                Some((a.parse::<usize>().ok()?, b.parse::<usize>().ok()?))
                            });
                        match range {
                            Some((start, end)) => (
                                axum::http::StatusCode::PARTIAL_CONTENT,
                                [(
                                    "content-range",
                                    format!("bytes {start}-{end}/{}", blob.len()),
                                )],
                                blob.slice(start..=end),
                            )
                                .into_response(),
                            None => blob.into_response(),
                        }
                    }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    });
    addr
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(1024, |a| a.parse().expect("MIB"));
    let runs: usize = args.next().map_or(3, |a| a.parse().expect("RUNS"));
    let mut bytes = vec![0u8; mib << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in bytes.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    let hex_digest = hex::encode(digest::digest(&digest::SHA256, &bytes));
    let blob = BlobRef::parse(&format!("bench/layer/blobs/sha256:{hex_digest}")).expect("ref");
    let upstream_addr = upstream_server(Bytes::from(bytes));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache_dir = std::env::temp_dir().join(format!("swarmgate-bench-{}", std::process::id()));

    println!(
        "building: {mib} MiB blob, 512 KiB pieces, upstream http://{upstream_addr} (loopback)"
    );
    for run in 1..=runs {
        let upstream = Arc::new(
            Upstream::new(
                &format!("http://{upstream_addr}"),
                "",
                "",
                Duration::from_secs(30),
            )
            .expect("client"),
        );
        // A zero bound keeps nothing, so every run builds.
        let cache = DiskCache::open(&cache_dir, 0).expect("cache");
        let builder = Builder::new(
            upstream,
            cache,
            512 * 1024,
            u64::MAX,
            Arc::new(BridgeMetrics::detached()),
        );
        let baseline = IN_USE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let (cpu, wall) = (thread_cpu(), Instant::now());
        let info = runtime
            .block_on(builder.info(&blob, Credentials::Own))
            .expect("built")
            .info;
        let (cpu, wall) = (thread_cpu() - cpu, wall.elapsed());
        let peak = PEAK.load(Ordering::Relaxed) - baseline;
        let megabytes = info.length as f64 / 1e6;
        println!(
            "  run {run}: {:.0} MB/s per core ({:.3} s CPU), {:.0} MB/s wall, peak {:.2} MiB allocated while building",
            megabytes / cpu.as_secs_f64(),
            cpu.as_secs_f64(),
            megabytes / wall.as_secs_f64(),
            peak as f64 / (1 << 20) as f64
        );
    }

    // A cached torrent through a real bridge, against the bare HEAD.
    let keys_dir = cache_dir.join("keys");
    runtime.block_on(async {
        let mut config = swarmgate::config::Config::default();
        config.bridge.listen = "127.0.0.1:0".parse().expect("addr");
        config.bridge.admin_listen = "127.0.0.1:0".parse().expect("addr");
        config.bridge.upstream = format!("http://{upstream_addr}");
        config.bridge.cache_dir = cache_dir.join("served").display().to_string();
        config.bridge.keys_dir = keys_dir.display().to_string();
        let bridge = swarmgate::bridge::start(&config).await.expect("bridge");
        let client = reqwest::Client::new();
        let torrent_url = format!("http://{}/c1/torrent/{}", bridge.addr, blob.path());
        let head_url = format!("http://{upstream_addr}/v2/{}", blob.path());
        let first = client.get(&torrent_url).send().await.expect("torrent");
        assert_eq!(first.status(), 200);
        let mut served = Vec::new();
        let mut heads = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            let response = client.get(&torrent_url).send().await.expect("torrent");
            assert_eq!(response.headers()["x-swarmgate-cache"], "hit");
            response.bytes().await.expect("body");
            served.push(t.elapsed());
            let t = Instant::now();
            client.head(&head_url).send().await.expect("head");
            heads.push(t.elapsed());
        }
        served.sort();
        heads.sort();
        // Web seed reads: 16 KiB ranges, as clients ask for blocks, against
        // the same range read straight from the upstream.
        let meta: swarmgate::torrent::MetaInfo =
            serde_bencode::from_bytes(&first.bytes().await.expect("torrent")).expect("a torrent");
        let seed_url = &meta.url_list[0];
        let blob_url = format!("http://{upstream_addr}/v2/{}", blob.path());
        let (mut seeded, mut direct) = (Vec::new(), Vec::new());
        let blocks = ((mib as u64) << 20) / 16_384;
        for n in 0..2000u64 {
            let start = (n * 7919 % blocks) * 16_384;
            let range = format!("bytes={start}-{}", start + 16_383);
            let t = Instant::now();
            let response = client.get(seed_url).header("range", &range).send().await.expect("seed");
            assert_eq!(response.status(), 206);
            response.bytes().await.expect("body");
            seeded.push(t.elapsed());
            let t = Instant::now();
            let response = client.get(&blob_url).header("range", &range).send().await.expect("range");
            response.bytes().await.expect("body");
            direct.push(t.elapsed());
        }
        seeded.sort();
        direct.sort();
        println!(
            "web seed, 16 KiB ranges: p50 {:?}, p99 {:?} per request; the same range from the upstream alone: p50 {:?}, p99 {:?}",
            percentile(&seeded, 0.5),
            percentile(&seeded, 0.99),
            percentile(&direct, 0.5),
            percentile(&direct, 0.99)
        );
        println!(
            "cached torrent ({} pieces): p50 {:?}, p99 {:?} per request; the upstream HEAD alone: p50 {:?}, p99 {:?}",
            (mib << 20) / (512 * 1024),
            percentile(&served, 0.5),
            percentile(&served, 0.99),
            percentile(&heads, 0.5),
            percentile(&heads, 0.99)
        );
        bridge.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&cache_dir);
}
