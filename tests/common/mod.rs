//! Helpers shared by the integration tests: a real server on loopback port 0,
//! announce URLs, and bencode decoding.
#![allow(dead_code)]

pub mod process;
#[allow(unused_imports)]
pub use process::TrackerProcess;
pub mod redis;
pub mod registry;

use std::collections::HashMap;
use std::net::SocketAddr;

use serde_bencode::value::Value;
use swarmgate::config::Config;
use swarmgate::server::{self, Server};

/// An open-mode configuration that binds every listener to 127.0.0.1 on a free port.
pub fn loopback_config() -> Config {
    let mut config = Config::default();
    config.auth.mode = swarmgate::config::AuthMode::Open;
    config.http.listen = "127.0.0.1:0".parse().expect("addr");
    config.udp.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    // Tests share a working directory: no snapshot unless a test asks.
    config.store.snapshot_path = String::new();
    config
}

/// A jwt-mode configuration trusting the development keys in keys/, on loopback.
pub fn dev_config() -> Config {
    let mut config = loopback_config();
    config.auth = Config::default().auth;
    config
}

/// A token for `info_hash` signed by the development key `kid` (e.g. `dev-es256`).
pub fn mint_dev(kid: &str, info_hash: [u8; 20], ttl: Option<std::time::Duration>) -> String {
    use swarmgate::gateway::mint;
    let pem =
        std::fs::read(format!("{}/keys/{kid}.pem", env!("CARGO_MANIFEST_DIR"))).expect("dev key");
    let (key, alg) = mint::signing_key(&pem, None).expect("signing key");
    let spec = mint::TokenSpec {
        kid: kid.into(),
        issuer: "dev-registry".into(),
        audience: None,
        info_hash: swarmgate::bittorrent::InfoHash(info_hash),
        ttl,
    };
    mint::mint(&key, alg, &spec, swarmgate::gateway::layer::unix_now()).expect("mint")
}

/// Whether to skip the tests that drive programs outside Rust (real
/// BitTorrent clients, a real registry): `SWARMGATE_SKIP_INTEROP=1`.
pub fn skip_interop() -> bool {
    std::env::var_os("SWARMGATE_SKIP_INTEROP").is_some_and(|v| v == "1")
}

/// A fresh, empty directory for this test process.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("swarmgate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// `len` bytes that differ per `seed` (xorshift): test blobs, cheap to make.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Starts a real server.
pub async fn start(config: Config) -> Server {
    server::start(config).await.expect("server starts")
}

/// Percent-encodes every byte, as the most cautious clients do.
pub fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// An announce query for peer `peer` (a 20-byte id built from it) of torrent `torrent`.
pub fn announce_query(torrent: u8, peer: u8, port: u16, left: u64, extra: &str) -> String {
    let mut peer_id = *b"-SG0001-000000000000";
    peer_id[19] = peer;
    format!(
        "info_hash={}&peer_id={}&port={port}&uploaded=0&downloaded=0&left={left}{extra}",
        escape(&[torrent; 20]),
        escape(&peer_id)
    )
}

/// GETs `http://addr{path_and_query}` and returns status and body.
pub async fn get(addr: SocketAddr, path_and_query: &str) -> (u16, Vec<u8>) {
    get_with(addr, path_and_query, &[]).await
}

/// GET with extra headers.
pub async fn get_with(
    addr: SocketAddr,
    path_and_query: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<u8>) {
    let client = reqwest::Client::new();
    let mut request = client.get(format!("http://{addr}{path_and_query}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.bytes().await.expect("body").to_vec())
}

/// Decodes a bencoded dictionary.
pub fn dict(body: &[u8]) -> HashMap<Vec<u8>, Value> {
    match serde_bencode::from_bytes::<Value>(body) {
        Ok(Value::Dict(d)) => d,
        other => panic!(
            "not a bencoded dict: {other:?} from {}",
            body.escape_ascii()
        ),
    }
}

/// An integer field of a dictionary.
pub fn int(d: &HashMap<Vec<u8>, Value>, key: &str) -> i64 {
    match d.get(key.as_bytes()) {
        Some(Value::Int(n)) => *n,
        other => panic!("{key} is not an int: {other:?}"),
    }
}

/// A byte-string field of a dictionary.
pub fn bytes<'a>(d: &'a HashMap<Vec<u8>, Value>, key: &str) -> &'a [u8] {
    match d.get(key.as_bytes()) {
        Some(Value::Bytes(b)) => b,
        other => panic!("{key} is not a byte string: {other:?}"),
    }
}

/// The `failure reason` of a reply, if it is a failure.
pub fn failure(body: &[u8]) -> Option<String> {
    match dict(body).get(&b"failure reason"[..]) {
        Some(Value::Bytes(b)) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// Compact IPv4 peers as socket addresses.
pub fn compact_peers(d: &HashMap<Vec<u8>, Value>) -> Vec<SocketAddr> {
    bytes(d, "peers")
        .chunks_exact(6)
        .map(|c| SocketAddr::from(([c[0], c[1], c[2], c[3]], u16::from_be_bytes([c[4], c[5]]))))
        .collect()
}

/// `/metrics` parsed: `name{labels}` → value, exactly as printed.
pub async fn scrape_metrics(admin: SocketAddr) -> HashMap<String, f64> {
    let (status, body) = get(admin, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).expect("utf-8");
    let mut samples = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value` lines");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        samples.insert(series.to_owned(), value);
    }
    samples
}

pub fn sample(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("{series} missing from /metrics"))
}

/// Runs `tests/interop/transfer.py` (a prepared `/usr/bin/python3` command)
/// off the async runtime; asserts it succeeded and returns its "interop ok" line.
pub async fn run_interop_driver(mut command: std::process::Command) -> String {
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("join")
        .expect("/usr/bin/python3 runs (install python3-libtorrent and aria2, or set SWARMGATE_SKIP_INTEROP=1)");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "interop driver failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("interop ok:"))
        .expect("summary line")
        .to_owned();
    println!("{line}");
    line
}

/// The binary's stderr, line by line, from a background thread.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stderr = child.stderr.take().expect("stderr");
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// The first line within 15 s for which `pick` returns something. A panic
/// shows the last lines seen, and says whether the process had exited.
pub fn wait_for<T>(
    lines: &std::sync::mpsc::Receiver<String>,
    what: &str,
    pick: impl Fn(&str) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut seen: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    let mut ended = false;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                if let Some(found) = pick(&line) {
                    return found;
                }
                if seen.len() == 20 {
                    seen.pop_front();
                }
                seen.push_back(line);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                ended = true;
                break;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => break,
        }
    }
    let how = if ended {
        "before the process closed its stderr"
    } else {
        "within 15 s"
    };
    panic!(
        "no log line {what} {how}; last lines:\n{}",
        Vec::from(seen).join("\n")
    );
}

/// The resident set of a process (`"self"` or a pid), in KiB, from /proc.
pub fn rss_kib(process: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{process}/status"))
        .expect("/proc/PROCESS/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS")
}
