//! Measures `swarmgate agent` on loopback, all in one run:
//!
//! 1. agent A pulls a blob cold with no peer (the bridge's web seed serves);
//! 2. agent A serves it from its cache, three times (GB/s);
//! 3. agent B pulls it cold from agent A alone: time to first byte, MB/s,
//!    and B's resident memory over its idle figure, sampled every 50 ms;
//! 4. a libtorrent leecher (python3-libtorrent) pulls the same torrent from
//!    agent A, for comparison; steps 3 and 4 alternate, twice each.
//!
//! The registry is a stand-in here (one blob served from a file, with
//! ranges, no auth): what is measured is the agent, not the registry.
//!
//! ```sh
//! cargo build --release && cargo run --release --example agent_bench -- [MiB, default 1024]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

const LEECHER: &str = r#"
import sys, time, libtorrent as lt
torrent, save = sys.argv[1], sys.argv[2]
s = lt.session({"listen_interfaces": "127.0.0.1:0", "enable_dht": False, "enable_lsd": False,
                "enable_upnp": False, "enable_natpmp": False, "enable_outgoing_utp": False,
                "enable_incoming_utp": False, "allow_multiple_connections_per_ip": True}, 0)
h = s.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})
start = time.time()
while not h.status().is_seeding:
    s.pop_alerts()
    if time.time() - start > 600:
        sys.exit("libtorrent: no finish in 600 s")
    time.sleep(0.01)
print(time.time() - start)
"#;

struct Blob {
    path: PathBuf,
    digest: String,
    size: u64,
}

/// The stand-in registry: `/v2/` and one blob, HEAD and GET with ranges.
async fn registry(
    State(blob): State<Arc<Blob>>,
    UrlPath(path): UrlPath<String>,
    headers: HeaderMap,
    method: axum::http::Method,
) -> Response {
    if !path.ends_with(&blob.digest) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let start: u64 = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.trim_end_matches('-').parse().ok())
        .unwrap_or(0);
    let status = if start > 0 {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let length = blob.size - start;
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .header(header::CONTENT_TYPE, "application/octet-stream");
    if start > 0 {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{}", blob.size - 1, blob.size),
        );
    }
    if method == axum::http::Method::HEAD {
        return response.body(axum::body::Body::empty()).unwrap_or_default();
    }
    let mut file = tokio::fs::File::open(&blob.path).await.expect("blob file");
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .expect("seek");
    let stream = tokio_util_stream(file);
    response
        .body(axum::body::Body::from_stream(stream))
        .unwrap_or_default()
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures_util::stream::unfold(file, |mut file| async move {
        let mut buffer = vec![0u8; 1 << 20];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(n) => {
                buffer.truncate(n);
                Some((Ok(bytes::Bytes::from(buffer)), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

struct Agent {
    child: Child,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_agent(
    bin: &Path,
    dir: &Path,
    name: &str,
    registry: SocketAddr,
    bridge: SocketAddr,
) -> Agent {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[log]\nformat = \"json\"\n[agent]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
             peer_listen = \"127.0.0.1:0\"\ncache_dir = \"{}\"\npeer_deadline = \"20s\"\n\
             cache_max_bytes = 68719476736\n\
             registries = [{{ name = \"{registry}\", url = \"http://{registry}\", bridge = \"http://{bridge}\" }}]\n",
            dir.join(format!("{name}-cache")).display()
        ),
    )
    .expect("config");
    let mut child = Command::new(bin)
        .args(["agent", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,swarmgate=info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("the release binary runs (cargo build --release first)");
    use std::io::BufRead;
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let (addr, admin) = loop {
        let line = lines.next().expect("the agent logs").expect("line");
        let value: serde_json::Value = match serde_json::from_str(&line) {
            Ok(value) => value,
            Err(_) => continue,
        };
        let fields = &value["fields"];
        if let (Some(addr), Some(admin)) = (fields["addr"].as_str(), fields["admin_addr"].as_str())
        {
            break (addr.parse().expect("addr"), admin.parse().expect("admin"));
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Agent { child, addr, admin }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// GETs the blob through `agent`, discarding it; returns (time to first byte, total, bytes).
async fn pull(agent: &Agent, registry: SocketAddr, digest: &str) -> (Duration, Duration, u64) {
    let started = Instant::now();
    let mut response = reqwest::get(format!(
        "http://{}/v2/bench/layer/blobs/{digest}?ns={registry}",
        agent.addr
    ))
    .await
    .expect("agent answers");
    assert_eq!(response.status(), 200);
    let mut first = None;
    let mut bytes = 0u64;
    while let Some(chunk) = response.chunk().await.expect("body") {
        first.get_or_insert_with(|| started.elapsed());
        bytes += chunk.len() as u64;
    }
    (first.unwrap_or_default(), started.elapsed(), bytes)
}

async fn metric(agent: &Agent, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{}/metrics", agent.admin))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1024);
    let bin = std::env::current_exe()
        .expect("exe")
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("swarmgate");
    let dir = std::env::temp_dir().join(format!("swarmgate-agent-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");

    // The blob: incompressible bytes, hashed once.
    let path = dir.join("blob");
    let size = mib << 20;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("blob"));
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for word in chunk.chunks_exact_mut(8) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                word.copy_from_slice(&state.to_le_bytes());
            }
            context.update(&chunk);
            file.write_all(&chunk).expect("write");
        }
    }
    let digest = format!("sha256:{}", hex::encode(context.finish()));
    let blob = Arc::new(Blob {
        path,
        digest: digest.clone(),
        size,
    });

    let app = axum::Router::new()
        .route("/v2/", get(|| async { "{}" }))
        .route("/v2/{*path}", get(registry).head(registry))
        .with_state(blob);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registry_addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut tracker_config = swarmgate::config::Config::default();
    tracker_config.auth.mode = swarmgate::config::AuthMode::Open;
    tracker_config.http.listen = "127.0.0.1:0".parse().expect("addr");
    tracker_config.udp.enabled = false;
    tracker_config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    tracker_config.store.snapshot_path = String::new();
    let tracker = swarmgate::server::start(tracker_config)
        .await
        .expect("tracker");
    let tracker_http = tracker.http_addr.expect("http");
    let mut config = swarmgate::config::Config::default();
    config.bridge.listen = "127.0.0.1:0".parse().expect("addr");
    config.bridge.admin_listen = "127.0.0.1:0".parse().expect("addr");
    config.bridge.upstream = format!("http://{registry_addr}");
    config.bridge.trackers = vec![format!("http://{tracker_http}/announce")];
    config.bridge.cache_dir = dir.join("bridge-cache").display().to_string();
    config.bridge.keys_dir = dir.join("bridge-keys").display().to_string();
    config.bridge.max_blob_bytes = 64 << 30;
    let bridge = swarmgate::bridge::start(&config).await.expect("bridge");
    let bridge_addr = bridge.addr;

    println!(
        "blob: {mib} MiB, piece length {}",
        config.bridge.piece_length
    );
    let a = start_agent(&bin, &dir, "a", registry_addr, bridge_addr);
    let (ttfb, took, bytes) = pull(&a, registry_addr, &digest).await;
    assert_eq!(bytes, size);
    println!(
        "agent A, cold, no peer (web seed): {:.2} s, {:.0} MB/s, first byte after {:?}",
        took.as_secs_f64(),
        size as f64 / took.as_secs_f64() / 1e6,
        ttfb
    );
    for run in 1..=3 {
        let (_, took, _) = pull(&a, registry_addr, &digest).await;
        println!(
            "agent A, cached, run {run}: {:.2} GB/s",
            size as f64 / took.as_secs_f64() / 1e9
        );
    }

    // B is measured against a seeder that serves: librqbit checks the file
    // A just pulled before it seeds it (seconds for 1 GiB, on the same
    // cores), which the first B run would otherwise pay for.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while metric(&a, "swarmgate_agent_seeding").await < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "agent A never seeded the blob"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let torrent = reqwest::get(format!(
        "http://{bridge_addr}/c1/torrent/bench/layer/blobs/{digest}"
    ))
    .await
    .expect("torrent")
    .bytes()
    .await
    .expect("bytes");
    let torrent_path = dir.join("layer.torrent");
    std::fs::write(&torrent_path, &torrent).expect("torrent file");
    for run in 1..=2 {
        let b = start_agent(&bin, &dir, &format!("b{run}"), registry_addr, bridge_addr);
        let pid = b.child.id();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = rss_kib(pid);
        let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let peak = Arc::new(std::sync::atomic::AtomicU64::new(idle));
        let sampler = {
            let (sampling, peak) = (sampling.clone(), peak.clone());
            std::thread::spawn(move || {
                while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                    peak.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let (ttfb, took, bytes) = pull(&b, registry_addr, &digest).await;
        sampling.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        assert_eq!(bytes, size);
        let from_peers = metric(&b, "swarmgate_agent_blob_bytes_total{source=\"peers\"}").await;
        let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
        println!(
            "agent B run {run}, cold, from agent A: {:.2} s, {:.0} MB/s, first byte after {:?}, {:.0}% from peers, RSS {} MiB idle, +{} MiB peak",
            took.as_secs_f64(),
            size as f64 / took.as_secs_f64() / 1e6,
            ttfb,
            from_peers / size as f64 * 100.0,
            idle / 1024,
            peak.saturating_sub(idle) / 1024
        );
        drop(b);

        let save = dir.join(format!("libtorrent-{run}"));
        std::fs::create_dir_all(&save).expect("save dir");
        let output = Command::new("/usr/bin/python3")
            .args(["-c", LEECHER])
            .arg(&torrent_path)
            .arg(&save)
            .output()
            .expect("python3-libtorrent");
        let text = String::from_utf8_lossy(&output.stdout);
        match text.trim().parse::<f64>() {
            Ok(seconds) => println!(
                "libtorrent run {run}, cold, from agent A: {seconds:.2} s, {:.0} MB/s",
                size as f64 / seconds / 1e6
            ),
            Err(_) => println!(
                "libtorrent run {run} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        }
        let _ = std::fs::remove_dir_all(&save);
    }
    drop(a);
    bridge.shutdown().await;
    tracker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
