//! The registry side end to end: `swarmgate torrent`, and the example
//! registry (`examples/registry.rs`) with swarmgate trusting only its JWKS,
//! real libtorrent seeders and leechers pulling blobs through the torrents it
//! signs, a key rotation with an overlap window, and the example agent.
//!
//! Needs Debian's `python3-libtorrent` (`.ci/run` installs it);
//! `SWARMGATE_SKIP_INTEROP=1` skips the real-client part.

mod common;

#[path = "../examples/registry.rs"]
#[allow(dead_code)]
mod registry;

#[path = "../examples/agent.rs"]
#[allow(dead_code)]
mod agent;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use swarmgate::torrent::{self, MetaInfo};

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/transfer.py");

/// Announces `torrent`'s infohash to the first HTTP announce URL in it (the
/// URL as signed, token included); returns the failure reason, if refused.
async fn announce_torrent(torrent: &[u8], peer: u8) -> Option<String> {
    let meta: MetaInfo = serde_bencode::from_bytes(torrent).expect("a torrent");
    let info_hash = torrent::info_hash_of(torrent).expect("infohash");
    let url = std::iter::once(&meta.announce)
        .chain(meta.announce_list.iter().flatten())
        .find(|u| u.starts_with("http://"))
        .expect("an HTTP tracker");
    let mut peer_id = *b"-RT0001-000000000000";
    peer_id[19] = peer;
    let full = format!(
        "{url}&info_hash={}&peer_id={}&port=7000&uploaded=0&downloaded=0&left=0&compact=1",
        escape(&info_hash.0),
        escape(&peer_id)
    );
    let body = reqwest::get(&full)
        .await
        .expect("announce sent")
        .bytes()
        .await
        .expect("body");
    failure(&body)
}

#[tokio::test]
async fn torrent_subcommand_writes_a_private_torrent_whose_signed_url_the_tracker_accepts() {
    let server = start(dev_config()).await;
    let http = server.http_addr.expect("http");
    let dir = temp_dir("torrent-cli");
    let blob = dir.join("layer.tar");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&blob, &data).expect("write blob");
    let out = dir.join("layer.torrent");
    let key = format!("{}/keys/dev-eddsa.pem", env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(BIN)
        .arg("torrent")
        .arg(&blob)
        .args(["--announce", &format!("http://{http}/announce")])
        .args(["--announce", "udp://127.0.0.1:1/announce"])
        .args([
            "--key",
            &key,
            "--kid",
            "dev-eddsa",
            "--issuer",
            "dev-registry",
        ])
        .args(["--webseed", "http://127.0.0.1:1/v2/ns/repo/blobs/sha256:00"])
        .args(["--piece-length", "256KiB", "-o"])
        .arg(&out)
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let bytes = std::fs::read(&out).expect("torrent written");
    let meta: MetaInfo = serde_bencode::from_bytes(&bytes).expect("parses");
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert_eq!(
        printed,
        torrent::info_hash_of(&bytes).expect("hash").to_string()
    );
    assert_eq!(meta.info.name, "layer.tar");
    assert_eq!(meta.info.length, data.len() as u64);
    assert_eq!(meta.info.piece_length, 256 * 1024);
    assert_eq!(meta.info.pieces.len(), 6 * 20);
    assert_eq!(meta.info.private, 1);
    assert_eq!(meta.announce_list.len(), 2);
    assert!(meta.announce_list[1][0].starts_with("udp://127.0.0.1:1/announce?jwt=ey"));
    assert_eq!(
        meta.url_list,
        ["http://127.0.0.1:1/v2/ns/repo/blobs/sha256:00"]
    );
    assert_eq!(
        announce_torrent(&bytes, 1).await,
        None,
        "the signed URL is accepted"
    );

    // Signed for another file, the same URL is refused.
    let mut other = meta.clone();
    other.info.length += 1;
    assert_eq!(
        announce_torrent(&other.to_bytes(), 2).await.as_deref(),
        Some("unapproved request: invalid jwt: infohash not approved")
    );
    let bad = Command::new(BIN)
        .arg("torrent")
        .arg(&blob)
        .args([
            "--announce",
            "http://x/announce",
            "--key",
            &key,
            "--kid",
            "k",
        ])
        .args(["--issuer", "i", "--piece-length", "300KiB", "-o"])
        .arg(dir.join("bad.torrent"))
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is not a power of two"));
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs the libtorrent driver on a registry-made torrent; returns its "interop ok" line.
async fn pull(torrent: &Path, payload: &Path, webseed_only: bool) -> String {
    let mut command = Command::new("/usr/bin/python3");
    command
        .args([
            DRIVER,
            "--leecher",
            "libtorrent",
            "--timeout",
            "90",
            "--torrent",
        ])
        .arg(torrent)
        .arg("--payload")
        .arg(payload);
    if webseed_only {
        command.arg("--webseed-only");
    }
    run_interop_driver(command).await
}

/// Writes `torrent` and its `payload` into `dir` as NAME.torrent and
/// NAME.blob, pulls through a libtorrent seeder, and checks that every byte
/// came from the seeder; returns the two paths.
async fn seeded_pull(dir: &Path, name: &str, torrent: &[u8], payload: &[u8]) -> (PathBuf, PathBuf) {
    let torrent_path = dir.join(format!("{name}.torrent"));
    let payload_path = dir.join(format!("{name}.blob"));
    std::fs::write(&torrent_path, torrent).expect("write");
    std::fs::write(&payload_path, payload).expect("write");
    let line = pull(&torrent_path, &payload_path, false).await;
    assert!(
        number_after(&line, "seeder uploaded") >= payload.len() as u64,
        "{line}"
    );
    (torrent_path, payload_path)
}

/// The number after `label ` in a driver summary.
fn number_after(line: &str, label: &str) -> u64 {
    line.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number after {label:?} in {line}"))
}

/// Stores `data` in the registry under `ns/app`; returns its digest.
async fn push(client: &reqwest::Client, registry: SocketAddr, data: &[u8]) -> String {
    let digest = format!(
        "sha256:{}",
        hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data))
    );
    let response = client
        .put(format!("http://{registry}/v2/ns/app/blobs/{digest}"))
        .body(data.to_vec())
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 201);
    digest
}

async fn fetch_torrent(client: &reqwest::Client, registry: SocketAddr, digest: &str) -> Vec<u8> {
    let response = client
        .get(format!(
            "http://{registry}/c1/torrent/ns/app/blobs/{digest}"
        ))
        .send()
        .await
        .expect("get torrent");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-bittorrent"
    );
    response.bytes().await.expect("body").to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_torrents_pull_through_swarmgate_across_a_key_rotation() {
    if skip_interop() {
        eprintln!("SWARMGATE_SKIP_INTEROP=1: skipped");
        return;
    }
    // swarmgate first (its addresses go into the registry's torrents) ...
    let server = start(dev_config()).await;
    let http = server.http_addr.expect("http");
    let udp = server.udp_addr.expect("udp");

    // ... then the registry, signing with a fresh ES256 key and keeping a
    // retired key published until the test retires it explicitly ...
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registry_addr = listener.local_addr().expect("addr");
    let registry = registry::Registry::new(registry::Settings {
        listen: registry_addr,
        public_url: None,
        trackers: vec![
            format!("http://{http}/announce"),
            format!("udp://{udp}/announce"),
        ],
        issuer: "example-registry".into(),
        audience: None,
        service: "quay".into(),
        alg: swarmgate::gateway::mint::KeyAlg::Es256,
        overlap: Duration::from_secs(3600),
        token_ttl: None,
        piece_length: 256 * 1024,
    })
    .expect("registry");
    tokio::spawn(registry::serve(registry.clone(), listener));

    // ... and the operator points swarmgate at the registry's JWKS (SIGHUP's path).
    let mut config = dev_config();
    config.auth.keys_dir = String::new();
    config.auth.jwks_url = registry.jwks_url();
    config.auth.issuer = "example-registry".into();
    config.auth.jwks_refresh = Duration::from_secs(1);
    server.reload(config.clone()).await.expect("reload");
    let dev_token = mint_dev("dev-es256", [7; 20], None);
    let (_, body) = get(
        http,
        &format!(
            "/announce?jwt={dev_token}&{}",
            announce_query(7, 1, 6881, 0, "")
        ),
    )
    .await;
    assert_eq!(
        failure(&body).as_deref(),
        Some("unapproved request: invalid jwt: unknown signing key (kid dev-es256)"),
        "the development keys are no longer trusted"
    );

    let client = reqwest::Client::new();
    let dir = temp_dir("registry-e2e");

    // A blob whose body does not match its digest is refused.
    let wrong = client
        .put(format!(
            "http://{registry_addr}/v2/ns/app/blobs/sha256:{}",
            "0".repeat(64)
        ))
        .body("not that")
        .send()
        .await
        .expect("put");
    assert_eq!(wrong.status(), 400);

    // First pull: seeder and leecher through the registry's torrent.
    let layer_one = random_bytes(6 << 20, 1);
    let digest_one = push(&client, registry_addr, &layer_one).await;
    let torrent_one = fetch_torrent(&client, registry_addr, &digest_one).await;
    let meta_one: MetaInfo = serde_bencode::from_bytes(&torrent_one).expect("torrent");
    assert_eq!(meta_one.info.private, 1);
    assert_eq!(
        meta_one.url_list,
        [format!(
            "http://{registry_addr}/v2/ns/app/blobs/{digest_one}"
        )]
    );
    let token_one = meta_one.announce.split("jwt=").nth(1).expect("token");
    assert!(
        token_one.len() <= swarmgate::gateway::mint::UDP_TOKEN_LIMIT,
        "the ES256 token fits libtorrent's UDP limit: {} characters",
        token_one.len()
    );
    let (torrent_path, payload_path) = seeded_pull(&dir, "one", &torrent_one, &layer_one).await;

    // The web seed alone (no seeder): the registry serves the pieces by range.
    let line = pull(&torrent_path, &payload_path, true).await;
    assert!(line.contains("from the web seed"), "{line}");

    // The agent's view, from another loopback address, with locality labels.
    let topology_file = dir.join("swarmgate.toml");
    std::fs::write(&topology_file, "[locality]\nipv4_prefix = 24\n").expect("write");
    let announced = agent::run(&agent::Args {
        torrent_url: format!("http://{registry_addr}/c1/torrent/ns/app/blobs/{digest_one}"),
        bind: Some("127.0.0.9".parse().expect("ip")),
        port: 7001,
        seeder: false,
        numwant: 50,
        config: Some(topology_file),
    })
    .await
    .expect("agent announces");
    assert_eq!(
        announced.info_hash,
        torrent::info_hash_of(&torrent_one)
            .expect("hash")
            .to_string()
    );
    assert!(announced.complete >= 1, "{announced:?}");
    assert!(!announced.peers.is_empty(), "{announced:?}");
    assert!(
        announced.peers.iter().all(|p| p.tier == Some("subnet")),
        "loopback peers share 127.0.0.0/24: {announced:?}"
    );

    // Rotation: a new key signs from now on; the old one stays published.
    let rotated: serde_json::Value = client
        .post(format!("http://{registry_addr}/admin/rotate-key"))
        .send()
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    assert_eq!(rotated["kid"], "reg-2");
    assert_eq!(rotated["retired"], "reg-1");
    let jwks: serde_json::Value = client
        .get(registry.jwks_url())
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    assert_eq!(jwks["keys"].as_array().map(Vec::len), Some(2));

    // Second pull, through a torrent signed with the new key (swarmgate
    // fetches the JWKS again on first sight of the new kid).
    let layer_two = random_bytes(5 << 20, 2);
    let digest_two = push(&client, registry_addr, &layer_two).await;
    let torrent_two = fetch_torrent(&client, registry_addr, &digest_two).await;
    seeded_pull(&dir, "two", &torrent_two, &layer_two).await;

    // During the overlap the first torrent's announces keep working.
    assert_eq!(announce_torrent(&torrent_one, 11).await, None);

    // The operator ends the overlap; at swarmgate's next refresh (run here
    // as an explicit step rather than waited for) the old key is gone,
    // cached tokens included, and the first torrent is refused.
    let retired: serde_json::Value = client
        .post(format!("http://{registry_addr}/admin/retire-keys"))
        .send()
        .await
        .expect("retire")
        .json()
        .await
        .expect("json");
    assert_eq!(retired["retired"], 1);
    let gateway = server.gateway().expect("jwt mode");
    assert_eq!(gateway.refresh().await.expect("refresh"), 1, "only reg-2");
    assert_eq!(
        announce_torrent(&torrent_one, 12).await.as_deref(),
        Some("unapproved request: invalid jwt: unknown signing key (kid reg-1)")
    );
    assert_eq!(announce_torrent(&torrent_two, 13).await, None);

    // What an operator sees on /metrics after all that.
    let (_, text) = get(server.admin_addr, "/metrics").await;
    let text = String::from_utf8(text).expect("utf-8");
    println!("---- /metrics after the end-to-end run ----\n{text}");
    let m = scrape_metrics(server.admin_addr).await;
    let http_ok = sample(
        &m,
        r#"swarmgate_requests_total{protocol="http",kind="announce",result="ok"}"#,
    );
    // At least the test's own: the agent's announce and the two accepted
    // announce_torrent calls (libtorrent adds more, as many as its timing gives).
    assert!(http_ok >= 3.0, "{http_ok}");
    assert!(
        sample(
            &m,
            r#"swarmgate_auth_rejections_total{reason="unknown_kid"}"#
        ) >= 2.0
    );
    assert!(sample(&m, r#"swarmgate_jwks_refresh_total{result="ok"}"#) >= 3.0);
    assert_eq!(sample(&m, "swarmgate_jwks_keys"), 1.0, "only reg-2 left");
    assert!(sample(&m, r#"swarmgate_peers_returned_total{tier="subnet"}"#) >= 1.0);
    assert!(sample(&m, "swarmgate_token_cache_hits_total") >= 1.0);
    // Current, not as of a sweep: both layers' swarms, and this test's seeders.
    assert!(sample(&m, "swarmgate_swarms") >= 2.0);
    assert!(sample(&m, r#"swarmgate_peers{role="seeder"}"#) >= 2.0);
    assert!(
        !m.keys()
            .any(|k| k.contains(r#"protocol="http",kind="connect""#))
    );
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
