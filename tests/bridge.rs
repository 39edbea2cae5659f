//! `swarmgate bridge` against a real registry: Debian's `docker-registry`
//! (CNCF Distribution 2.8) with htpasswd (bcrypt) auth and filesystem storage
//! in a temp dir, images pushed for real with `skopeo copy`, a real tracker
//! trusting only the bridge's JWKS, and real libtorrent and aria2 leechers.
//!
//! Needs `docker-registry`, `skopeo` and `htpasswd` (apache2-utils), which
//! `scripts/test` installs with the BitTorrent clients;
//! `SWARMGATE_SKIP_INTEROP=1` skips every test that needs them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use swarmgate::config::{AuthMode, Config};
use swarmgate::torrent::{self, MetaInfo};

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");
const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/transfer.py");
use common::registry::{PASSWORD, Registry, USER, free_port, sha256_hex, with_registry};

/// A bridge configuration on loopback port 0 with its state in `dir`,
/// reading `upstream` anonymously.
fn stand_alone_config(dir: &Path, upstream: String) -> Config {
    let mut config = Config::default();
    let bridge = &mut config.bridge;
    bridge.listen = "127.0.0.1:0".parse().expect("addr");
    bridge.admin_listen = "127.0.0.1:0".parse().expect("addr");
    bridge.upstream = upstream;
    bridge.cache_dir = dir.join("cache").display().to_string();
    bridge.keys_dir = dir.join("keys").display().to_string();
    config
}

/// A bridge configuration in `dir` for `registry` with the test account,
/// announcing to `trackers`.
fn bridge_config(dir: &Path, registry: &Registry, trackers: Vec<String>) -> Config {
    let mut config = stand_alone_config(dir, registry.url());
    let bridge = &mut config.bridge;
    bridge.upstream_username = USER.into();
    bridge.upstream_password = PASSWORD.into();
    bridge.upstream_timeout = Duration::from_secs(5);
    bridge.trackers = trackers;
    config
}

async fn get_torrent(
    bridge: SocketAddr,
    path: &str,
    credentials: Option<(&str, &str)>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new().get(format!("http://{bridge}/c1/torrent/{path}"));
    if let Some((user, password)) = credentials {
        request = request.basic_auth(user, Some(password));
    }
    request.send().await.expect("bridge answers")
}

async fn torrent_bytes(bridge: SocketAddr, path: &str) -> (Vec<u8>, String) {
    let response = get_torrent(bridge, path, Some((USER, PASSWORD))).await;
    let status = response.status();
    let cache = response
        .headers()
        .get("x-swarmgate-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.bytes().await.expect("body").to_vec();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    (body, cache)
}

fn cache_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("cache"))
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".info"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_decides_who_gets_a_torrent_and_the_infohash_is_the_bytes() {
    let Some((dir, registry)) = with_registry("bridge-authz") else {
        return;
    };
    let layer = common::random_bytes(3 << 20, 1);
    let digest = registry.push("team/app/base", &layer);
    let same = registry.push("other/copy", &layer);
    assert_eq!(digest, same, "one layer, one digest in both repositories");
    let trackers = vec![
        "http://127.0.0.1:6969/announce".to_owned(),
        "udp://127.0.0.1:6969/announce".to_owned(),
    ];
    // skopeo compressed the tar on the way: the layer is what the registry holds.
    let layer = registry.blob("team/app/base", &digest).await;
    let bridge = swarmgate::bridge::start(&bridge_config(&dir, &registry, trackers.clone()))
        .await
        .expect("bridge starts");
    let path = format!("team/app/base/blobs/{digest}");
    let ready = reqwest::get(format!("http://{}/readyz", bridge.admin_addr))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 200, "a key, and the registry answers");

    // No credentials: the registry's 401 and its challenge, unchanged.
    let anonymous = get_torrent(bridge.addr, &path, None).await;
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        r#"Basic realm="swarmgate-test""#
    );
    // Wrong credentials, an unknown blob: 401, 404.
    let wrong = get_torrent(bridge.addr, &path, Some((USER, "wrong"))).await;
    assert_eq!(wrong.status(), 401);
    let missing = format!("team/app/base/blobs/sha256:{}", "0".repeat(64));
    assert_eq!(
        get_torrent(bridge.addr, &missing, Some((USER, PASSWORD)))
            .await
            .status(),
        404
    );
    // Malformed requests never reach the registry.
    for (bad, why) in [
        (
            format!("Team/App/blobs/{digest}"),
            "invalid repository name",
        ),
        ("team/app/blobs/sha256:abc".to_owned(), "invalid digest"),
        (
            format!("team/app/blobs/sha512:{}", "a".repeat(128)),
            "unsupported digest algorithm",
        ),
        (
            "team/app/manifests/latest".to_owned(),
            "expected NAME/blobs/DIGEST",
        ),
    ] {
        let response = get_torrent(bridge.addr, &bad, Some((USER, PASSWORD))).await;
        assert_eq!(response.status(), 400, "{bad}");
        let text = response.text().await.expect("text");
        assert!(text.contains(why), "{bad}: {text}");
    }
    assert!(cache_files(&dir).is_empty(), "nothing cached for refusals");

    // Authorised: a private v1 torrent of the blob.
    let (first, cache) = torrent_bytes(bridge.addr, &path).await;
    assert_eq!(cache, "miss");
    let meta: MetaInfo = serde_bencode::from_bytes(&first).expect("a torrent");
    let hex_digest = digest.trim_start_matches("sha256:");
    assert_eq!(meta.info.name, format!("sha256-{hex_digest}"));
    assert_eq!(meta.info.private, 1);
    assert_eq!(meta.info.piece_length, 512 * 1024);
    assert_eq!(meta.info.length, layer.len() as u64);
    let expected =
        torrent::Info::from_reader(&meta.info.name, 512 * 1024, &layer[..]).expect("info");
    assert_eq!(
        meta.info, expected,
        "pieces are the SHA-1s of the layer's bytes"
    );
    assert!(
        meta.announce
            .starts_with("http://127.0.0.1:6969/announce?jwt=")
    );
    assert_eq!(meta.announce_list.len(), 2);
    assert!(meta.announce_list[1][0].starts_with("udp://127.0.0.1:6969/announce?jwt="));
    assert_eq!(meta.url_list.len(), 1);
    let web_seed = meta.url_list[0].clone();
    assert!(
        web_seed.starts_with(&format!("http://{}/seed/{path}?jwt=", bridge.addr)),
        "{web_seed}"
    );
    // Stable: again, and from the other repository (each time from the cache,
    // each time asking the registry first).
    let info_hash = torrent::info_hash_of(&first).expect("infohash");
    let (again, cache) = torrent_bytes(bridge.addr, &path).await;
    assert_eq!(cache, "hit");
    assert_eq!(torrent::info_hash_of(&again).expect("infohash"), info_hash);
    let (other, _) = torrent_bytes(bridge.addr, &format!("other/copy/blobs/{digest}")).await;
    assert_eq!(torrent::info_hash_of(&other).expect("infohash"), info_hash);
    assert_eq!(cache_files(&dir).len(), 1);
    // A cached torrent still needs the registry's yes.
    assert_eq!(get_torrent(bridge.addr, &path, None).await.status(), 401);

    // The web seed: the token from the torrent, one range, the right bytes.
    let client = reqwest::Client::new();
    let ranged = client
        .get(&web_seed)
        .header("range", "bytes=1000-1999")
        .send()
        .await
        .expect("seed");
    assert_eq!(ranged.status(), 206);
    assert_eq!(
        ranged.headers()["content-range"],
        format!("bytes 1000-1999/{}", layer.len()).as_str()
    );
    assert_eq!(&ranged.bytes().await.expect("body")[..], &layer[1000..2000]);
    let whole = client.get(&web_seed).send().await.expect("seed");
    assert_eq!(whole.status(), 200);
    assert_eq!(sha256_hex(&whole.bytes().await.expect("body")), hex_digest);
    // No token, a forged one, or one for another blob: nothing.
    let seed_base = format!("http://{}/seed/{path}", bridge.addr);
    assert_eq!(
        client.get(&seed_base).send().await.expect("seed").status(),
        401
    );
    let token = web_seed.split_once("?jwt=").expect("token").1;
    let mut forged = token.to_owned();
    forged.truncate(forged.len() - 4);
    forged.push_str("AAAA");
    assert_eq!(
        client
            .get(format!("{seed_base}?jwt={forged}"))
            .send()
            .await
            .expect("seed")
            .status(),
        401
    );
    let other_layer = registry.push("team/app/other", &common::random_bytes(1 << 20, 2));
    let elsewhere = format!(
        "http://{}/seed/team/app/other/blobs/{other_layer}?jwt={token}",
        bridge.addr
    );
    assert_eq!(
        client.get(&elsewhere).send().await.expect("seed").status(),
        403
    );

    // The JWKS names the key the tokens are signed with.
    let jwks: serde_json::Value = client
        .get(format!(
            "http://{}/keys/services/swarmgate/keys",
            bridge.addr
        ))
        .send()
        .await
        .expect("jwks")
        .json()
        .await
        .expect("json");
    let header = jsonwebtoken::decode_header(token).expect("a JWT");
    assert_eq!(jwks["keys"][0]["kid"], header.kid.expect("kid").as_str());

    // A bridge whose own account the registry refuses still hands torrents
    // to authorised callers (their credentials build them), but its web
    // seed says what is wrong instead of passing the registry's challenge on.
    let mut misconfigured = bridge_config(&dir.join("misconfigured"), &registry, trackers.clone());
    misconfigured.bridge.upstream_password = "not-the-password".into();
    let misconfigured = swarmgate::bridge::start(&misconfigured)
        .await
        .expect("bridge starts");
    // Its readiness says so first, naming both settings.
    let ready = reqwest::get(format!("http://{}/readyz", misconfigured.admin_addr))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    let said = ready.text().await.expect("text");
    assert!(
        said.contains("bridge.upstream_username") && said.contains("bridge.upstream_password"),
        "{said}"
    );
    let (file, _) = torrent_bytes(misconfigured.addr, &path).await;
    let meta: MetaInfo = serde_bencode::from_bytes(&file).expect("a torrent");
    let seeded = client.get(&meta.url_list[0]).send().await.expect("seed");
    assert_eq!(seeded.status(), 502);
    assert!(seeded.headers().get("www-authenticate").is_none());
    let document: serde_json::Value = seeded.json().await.expect("an OCI error document");
    assert_eq!(document["errors"][0]["code"], "UNAVAILABLE");
    let message = document["errors"][0]["message"].as_str().expect("message");
    assert!(
        message.contains("bridge.upstream_username")
            && message.contains("bridge.upstream_password"),
        "{message}"
    );
    misconfigured.shutdown().await;

    let metrics = common::scrape_metrics(bridge.admin_addr).await;
    assert_eq!(
        common::sample(&metrics, "swarmgate_bridge_builds_total{result=\"ok\"}"),
        2.0
    );
    assert_eq!(
        common::sample(
            &metrics,
            "swarmgate_bridge_upstream_errors_total{status=\"401\"}"
        ),
        3.0
    );
    assert_eq!(
        common::sample(
            &metrics,
            "swarmgate_bridge_upstream_errors_total{status=\"404\"}"
        ),
        1.0
    );
    assert!(
        common::sample(&metrics, "swarmgate_bridge_seed_bytes_total")
            >= (layer.len() + 1000) as f64
    );
    bridge.shutdown().await;
    drop(registry);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_blob_is_a_502_and_nothing_is_cached() {
    let Some((dir, registry)) = with_registry("bridge-corrupt") else {
        return;
    };
    let digest = registry.push("team/corrupt", &common::random_bytes(1 << 20, 3));
    let file = registry.blob_file(&digest);
    let mut bytes = std::fs::read(&file).expect("stored blob");
    bytes[12345] ^= 0xff;
    std::fs::write(&file, bytes).expect("corrupt it");
    let bridge = swarmgate::bridge::start(&bridge_config(
        &dir,
        &registry,
        vec!["http://127.0.0.1:6969/announce".into()],
    ))
    .await
    .expect("bridge starts");
    let path = format!("team/corrupt/blobs/{digest}");
    for _ in 0..2 {
        let response = get_torrent(bridge.addr, &path, Some((USER, PASSWORD))).await;
        assert_eq!(response.status(), 502);
        let text = response.text().await.expect("text");
        assert!(text.contains("the stored blob is corrupt"), "{text}");
    }
    assert!(cache_files(&dir).is_empty());
    let metrics = common::scrape_metrics(bridge.admin_addr).await;
    assert_eq!(
        common::sample(
            &metrics,
            "swarmgate_bridge_builds_total{result=\"digest_mismatch\"}"
        ),
        2.0,
        "built again, never served from a cache"
    );
    bridge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded_and_survives_a_restart() {
    let Some((dir, registry)) = with_registry("bridge-cache") else {
        return;
    };
    let digests: Vec<String> = (0..3u8)
        .map(|n| {
            registry.push(
                &format!("cache/n{n}"),
                &common::random_bytes(1 << 20, 10 + u64::from(n)),
            )
        })
        .collect();
    let trackers = vec!["http://127.0.0.1:6969/announce".to_owned()];
    // Measure one entry, then allow two and a half.
    let mut config = bridge_config(&dir, &registry, trackers);
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    torrent_bytes(bridge.addr, &format!("cache/n0/blobs/{}", digests[0])).await;
    bridge.shutdown().await;
    let one = std::fs::read_dir(dir.join("cache"))
        .expect("cache")
        .flatten()
        .map(|e| e.metadata().expect("metadata").len())
        .sum::<u64>();
    assert!(one > 0);
    config.bridge.cache_max_bytes = one * 5 / 2;
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let paths: Vec<String> = (0..3)
        .map(|n| format!("cache/n{n}/blobs/{}", digests[n]))
        .collect();
    assert_eq!(torrent_bytes(bridge.addr, &paths[0]).await.1, "hit");
    assert_eq!(torrent_bytes(bridge.addr, &paths[1]).await.1, "miss");
    assert_eq!(torrent_bytes(bridge.addr, &paths[0]).await.1, "hit");
    // The third pushes out the least recently used: n1.
    assert_eq!(torrent_bytes(bridge.addr, &paths[2]).await.1, "miss");
    let files = cache_files(&dir);
    assert_eq!(files.len(), 2, "{files:?}");
    let held: u64 = std::fs::read_dir(dir.join("cache"))
        .expect("cache")
        .flatten()
        .map(|e| e.metadata().expect("metadata").len())
        .sum();
    assert!(held <= config.bridge.cache_max_bytes, "{held} bytes held");
    let metrics = common::scrape_metrics(bridge.admin_addr).await;
    assert_eq!(
        common::sample(&metrics, "swarmgate_bridge_cache_entries"),
        2.0
    );
    bridge.shutdown().await;
    // After a restart: n0 and n2 are still there, n1 was evicted.
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge restarts");
    assert_eq!(torrent_bytes(bridge.addr, &paths[0]).await.1, "hit");
    assert_eq!(torrent_bytes(bridge.addr, &paths[2]).await.1, "hit");
    assert_eq!(torrent_bytes(bridge.addr, &paths[1]).await.1, "miss");
    bridge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Accepts connections and never answers: an upstream that hangs.
async fn silent_upstream() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_blobs_and_a_hanging_registry_get_clear_errors() {
    let Some((dir, registry)) = with_registry("bridge-limits") else {
        return;
    };
    let digest = registry.push("team/big", &common::random_bytes(2 << 20, 4));
    let mut config = bridge_config(
        &dir,
        &registry,
        vec!["http://127.0.0.1:6969/announce".into()],
    );
    config.bridge.max_blob_bytes = 1 << 20;
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let response = get_torrent(
        bridge.addr,
        &format!("team/big/blobs/{digest}"),
        Some((USER, PASSWORD)),
    )
    .await;
    assert_eq!(response.status(), 413);
    assert!(
        response
            .text()
            .await
            .expect("text")
            .contains("bridge.max_blob_bytes")
    );
    bridge.shutdown().await;

    let (silent, task) = silent_upstream().await;
    config.bridge.upstream = format!("http://{silent}");
    config.bridge.upstream_timeout = Duration::from_millis(500);
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let response = get_torrent(
        bridge.addr,
        &format!("team/big/blobs/{digest}"),
        Some((USER, PASSWORD)),
    )
    .await;
    assert_eq!(response.status(), 504);
    let ready = reqwest::get(format!("http://{}/readyz", bridge.admin_addr))
        .await
        .expect("readyz");
    assert_eq!(ready.status(), 503);
    // Served normally afterwards: a malformed request is still a 400, in
    // the Distribution API's error format like every bridge error.
    let bad = get_torrent(bridge.addr, "x/blobs/nope", None).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        bad.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    let document: serde_json::Value = bad.json().await.expect("an OCI error document");
    assert_eq!(document["errors"][0]["code"], "DIGEST_INVALID");
    assert!(cache_files(&dir).is_empty());
    bridge.shutdown().await;
    task.abort();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tracker in jwt mode that trusts only the bridge's JWKS (at `bridge_port`,
/// which may not be listening yet: an unknown kid is fetched on first use).
async fn tracker_for(bridge_port: u16) -> swarmgate::server::Server {
    let mut config = common::loopback_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.issuer = "swarmgate-bridge".into();
    config.auth.keys_dir = String::new();
    config.auth.jwks_url = format!("http://127.0.0.1:{bridge_port}/keys/services/swarmgate/keys");
    config.auth.jwks_min_refetch = Duration::from_millis(200);
    config.announce.interval = Duration::from_secs(2);
    config.announce.min_interval = Duration::from_secs(1);
    common::start(config).await
}

/// Announces to the torrent's first HTTP tracker URL, token as signed;
/// returns the failure reason, if refused.
async fn announce_with(torrent_file: &[u8]) -> Option<String> {
    let meta: MetaInfo = serde_bencode::from_bytes(torrent_file).expect("a torrent");
    let info_hash = torrent::info_hash_of(torrent_file).expect("infohash");
    let url = format!(
        "{}&info_hash={}&peer_id=-SG0001-bridgetest01&port=7001&uploaded=0&downloaded=0&left=0&compact=1",
        meta.announce,
        common::escape(&info_hash.0)
    );
    let body = reqwest::get(&url)
        .await
        .expect("announce")
        .bytes()
        .await
        .expect("body");
    common::failure(&body)
}

fn interop_command(torrent_file: &Path, payload: &Path, leecher: &str, extra: &[&str]) -> Command {
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(DRIVER)
        .arg("--torrent")
        .arg(torrent_file)
        .arg("--payload")
        .arg(payload)
        .args(["--leecher", leecher, "--timeout", "120"])
        .args(extra);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_and_aria2_pull_a_pushed_layer_from_a_seeder_and_from_the_web_seed() {
    let Some((dir, registry)) = with_registry("bridge-pull") else {
        return;
    };
    let digest = registry.push("team/app/base", &common::random_bytes(8 << 20, 5));
    let payload = registry.blob("team/app/base", &digest).await;
    assert_eq!(format!("sha256:{}", sha256_hex(&payload)), digest);
    let payload_file = dir.join("payload");
    std::fs::write(&payload_file, &payload).expect("payload");

    let bridge_port = free_port();
    let tracker = tracker_for(bridge_port).await;
    let http = tracker.http_addr.expect("http");
    let mut config = bridge_config(&dir, &registry, vec![format!("http://{http}/announce")]);
    config.bridge.listen = format!("127.0.0.1:{bridge_port}").parse().expect("addr");
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let (torrent_file, _) =
        torrent_bytes(bridge.addr, &format!("team/app/base/blobs/{digest}")).await;
    let torrent_path = dir.join("layer.torrent");
    std::fs::write(&torrent_path, &torrent_file).expect("torrent");

    // Through swarmgate from a libtorrent seeder.
    for (leecher, extra) in [("libtorrent", &[][..]), ("aria2", &["--strip-webseed"][..])] {
        let line = common::run_interop_driver(interop_command(
            &torrent_path,
            &payload_file,
            leecher,
            extra,
        ))
        .await;
        let uploaded: u64 = line
            .split("seeder uploaded ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("uploaded bytes");
        assert!(uploaded >= payload.len() as u64, "{leecher}: {line}");
    }
    // From the web seed alone.
    for leecher in ["libtorrent", "aria2"] {
        let before = common::sample(
            &common::scrape_metrics(bridge.admin_addr).await,
            "swarmgate_bridge_seed_bytes_total",
        );
        let line = common::run_interop_driver(interop_command(
            &torrent_path,
            &payload_file,
            leecher,
            &["--webseed-only"],
        ))
        .await;
        assert!(line.contains("from the web seed"), "{line}");
        let after = common::sample(
            &common::scrape_metrics(bridge.admin_addr).await,
            "swarmgate_bridge_seed_bytes_total",
        );
        assert!(
            after - before >= payload.len() as f64,
            "{leecher}: the web seed sent {} bytes",
            after - before
        );
    }
    bridge.shutdown().await;
    tracker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bridge binary, with its stderr lines.
fn spawn_bridge(config_file: &Path) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["bridge", "--config"])
        .arg(config_file)
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("swarmgate bridge runs");
    let lines = common::stderr_lines(&mut child);
    common::wait_for(&lines, "saying the bridge is serving", |line| {
        line.contains("swarmgate bridge is serving").then_some(())
    });
    (child, lines)
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("exits");
    assert!(status.success(), "exit status {status}");
}

async fn kid_of(bridge: SocketAddr, path: &str) -> (Vec<u8>, String) {
    let (file, _) = torrent_bytes(bridge, path).await;
    let meta: MetaInfo = serde_bencode::from_bytes(&file).expect("a torrent");
    let token = meta
        .announce
        .split_once("?jwt=")
        .expect("token")
        .1
        .to_owned();
    let kid = jsonwebtoken::decode_header(&token)
        .expect("jwt")
        .kid
        .expect("kid");
    (file, kid)
}

async fn published_kids(bridge: SocketAddr) -> Vec<String> {
    let jwks: serde_json::Value =
        reqwest::get(format!("http://{bridge}/keys/services/swarmgate/keys"))
            .await
            .expect("jwks")
            .json()
            .await
            .expect("json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_during_pulls_refuses_no_one_and_survives_a_restart() {
    let Some((dir, registry)) = with_registry("bridge-rotate") else {
        return;
    };
    let digest = registry.push("team/app/base", &common::random_bytes(24 << 20, 6));
    let payload = registry.blob("team/app/base", &digest).await;
    let payload_file = dir.join("payload");
    std::fs::write(&payload_file, &payload).expect("payload");
    let bridge_port = free_port();
    let admin_port = free_port();
    let tracker = tracker_for(bridge_port).await;
    let http = tracker.http_addr.expect("http");
    let bridge: SocketAddr = format!("127.0.0.1:{bridge_port}").parse().expect("addr");
    let config_file = dir.join("bridge.toml");
    std::fs::write(
        &config_file,
        format!(
            "[bridge]\nlisten = \"{bridge}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nupstream = \"{}\"\n\
             upstream_username = \"{USER}\"\nupstream_password = \"{PASSWORD}\"\ntrackers = [\"http://{http}/announce\"]\n\
             cache_dir = \"{}\"\nkeys_dir = \"{}\"\nrotation_delay = \"2s\"\nretired_overlap = \"1h\"\n",
            registry.url(),
            dir.join("cache").display(),
            dir.join("keys").display()
        ),
    )
    .expect("config");
    let (child, _lines) = spawn_bridge(&config_file);
    let path = format!("team/app/base/blobs/{digest}");
    let (old_torrent, old_kid) = kid_of(bridge, &path).await;
    assert_eq!(
        announce_with(&old_torrent).await,
        None,
        "the tracker fetched the first key on use"
    );
    let old_path = dir.join("old.torrent");
    std::fs::write(&old_path, &old_torrent).expect("torrent");

    // A pull through the tracker with the old torrent, rotated under it.
    let pull = tokio::spawn(common::run_interop_driver(interop_command(
        &old_path,
        &payload_file,
        "aria2",
        &["--strip-webseed"],
    )));
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    // Published at once, beside the old key; a second rotation is refused while pending.
    let deadline = Instant::now() + Duration::from_secs(20);
    while published_kids(bridge).await.len() < 2 {
        assert!(Instant::now() < deadline, "the new key was not published");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let admin = reqwest::Client::new();
    let refused = admin
        .post(format!("http://127.0.0.1:{admin_port}/admin/rotate"))
        .send()
        .await
        .expect("admin");
    assert_eq!(refused.status(), 409);
    // After the delay, new torrents carry the new key; the tracker, which has
    // not refreshed its JWKS, fetches it on first use and accepts.
    let new_kid = loop {
        let (file, kid) = kid_of(bridge, &path).await;
        if kid != old_kid {
            assert_eq!(
                announce_with(&file).await,
                None,
                "a token of the new key is accepted"
            );
            break kid;
        }
        assert!(
            Instant::now() < deadline,
            "the new key never started signing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        announce_with(&old_torrent).await,
        None,
        "old torrents keep working in the overlap"
    );
    let line = pull.await.expect("pull");
    assert!(line.contains("aria2 leecher downloaded"), "{line}");
    assert_eq!(
        published_kids(bridge).await,
        [old_kid.clone(), new_kid.clone()]
    );

    // A restart resumes the schedule: both published, the new one signing.
    stop(child);
    let (child, _lines) = spawn_bridge(&config_file);
    assert_eq!(published_kids(bridge).await, [old_kid, new_kid.clone()]);
    assert_eq!(kid_of(bridge, &path).await.1, new_kid);
    // The admin call rotates too.
    let rotated: serde_json::Value = admin
        .post(format!("http://127.0.0.1:{admin_port}/admin/rotate"))
        .send()
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(published_kids(bridge).await.len(), 3, "{rotated}");
    stop(child);
    tracker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_blob_share_one_build() {
    // A registry stand-in that counts blob reads and holds each one until
    // released, so every request is provably waiting at once.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let blob = common::random_bytes(1 << 20, 9);
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let reads = Arc::new(AtomicUsize::new(0));
    let (release, released) = tokio::sync::watch::channel(false);
    let app = {
        let (blob, reads) = (axum::body::Bytes::from(blob.clone()), reads.clone());
        axum::Router::new().route(
            "/v2/{*path}",
            axum::routing::get(move |method: axum::http::Method| {
                let (blob, reads, mut released) = (blob.clone(), reads.clone(), released.clone());
                async move {
                    if method == axum::http::Method::GET {
                        reads.fetch_add(1, Ordering::SeqCst);
                        let _ = released.wait_for(|go| *go).await;
                    }
                    blob
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = common::temp_dir("bridge-flight");
    let config = stand_alone_config(&dir, format!("http://{upstream}"));
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let path = format!("team/app/blobs/{digest}");
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let (addr, path) = (bridge.addr, path.clone());
            tokio::spawn(async move { get_torrent(addr, &path, None).await })
        })
        .collect();
    // All eight have missed the cache, and so joined the one build.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = common::scrape_metrics(bridge.admin_addr).await;
        let missed = metrics
            .get("swarmgate_bridge_cache_lookups_total{result=\"miss\"}")
            .copied()
            .unwrap_or(0.0);
        if missed == 8.0 {
            assert_eq!(
                common::sample(&metrics, "swarmgate_bridge_builds_in_flight"),
                1.0
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missed} requests reached the builder"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = release.send(true);
    let mut hashes = std::collections::BTreeSet::new();
    for request in requests {
        let response = request.await.expect("join");
        assert_eq!(response.status(), 200);
        hashes.insert(
            torrent::info_hash_of(&response.bytes().await.expect("body")).expect("infohash"),
        );
    }
    assert_eq!(hashes.len(), 1);
    assert_eq!(
        reads.load(Ordering::SeqCst),
        1,
        "the blob was streamed once"
    );
    let metrics = common::scrape_metrics(bridge.admin_addr).await;
    assert_eq!(
        common::sample(&metrics, "swarmgate_bridge_builds_total{result=\"ok\"}"),
        1.0
    );
    bridge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// What the stand-in registry and its storage saw.
#[derive(Default)]
struct StandInLog {
    /// `Authorization` headers of blob requests, in order.
    blob_authorizations: Vec<Option<String>>,
    /// Token requests: their `Authorization` and query.
    token_requests: Vec<(Option<String>, String)>,
    /// Storage requests: their `Authorization` and `Range`.
    storage_requests: Vec<(Option<String>, Option<String>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_service_registry_and_redirects_to_storage() {
    // A stand-in for a registry with a token service (as Harbor and the cloud
    // registries have) that redirects blob reads to storage, which
    // Debian's Distribution with filesystem storage does not do.
    use axum::http::{HeaderMap, Method, StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::{Arc, Mutex};
    let blob = axum::body::Bytes::from(common::random_bytes(300_000, 11));
    let digest = format!("sha256:{}", sha256_hex(&blob));
    let log = Arc::new(Mutex::new(StandInLog::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let registry = listener.local_addr().expect("addr");
    let storage_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let storage = storage_listener.local_addr().expect("addr");
    let header_text = |headers: &HeaderMap, name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let registry_app = {
        let log = log.clone();
        let token_log = log.clone();
        axum::Router::new()
            .route(
                "/token",
                axum::routing::get(move |headers: HeaderMap, query: axum::extract::RawQuery| {
                    let log = token_log.clone();
                    async move {
                        let authorization = header_text(&headers, header::AUTHORIZATION);
                        let basic = format!(
                            "Basic {}",
                            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "bridge:bridge-pass")
                        );
                        let ok = authorization.as_deref() == Some(basic.as_str());
                        log.lock().expect("log").token_requests.push((authorization, query.0.unwrap_or_default()));
                        if ok {
                            axum::Json(serde_json::json!({"token": "bridge-token", "expires_in": 300})).into_response()
                        } else {
                            StatusCode::UNAUTHORIZED.into_response()
                        }
                    }
                }),
            )
            .route(
                "/v2/{*path}",
                axum::routing::get(move |method: Method, headers: HeaderMap| {
                    let log = log.clone();
                    async move {
                        let authorization = header_text(&headers, header::AUTHORIZATION);
                        log.lock().expect("log").blob_authorizations.push(authorization.clone());
                        let allowed = matches!(
                            authorization.as_deref(),
                            Some("Bearer caller-token" | "Bearer bridge-token")
                        );
                        if !allowed {
                            let challenge = format!(
                                r#"Bearer realm="http://{registry}/token",service="stand-in",scope="repository:team/app:pull""#
                            );
                            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, challenge)]).into_response();
                        }
                        if method == Method::HEAD {
                            return (StatusCode::OK, [(header::CONTENT_LENGTH, "300000")]).into_response();
                        }
                        // Reads go to storage, with a signed URL.
                        (
                            StatusCode::TEMPORARY_REDIRECT,
                            [(header::LOCATION, format!("http://{storage}/blobs/data?signature=abc"))],
                        )
                            .into_response()
                    }
                }),
            )
    };
    let storage_app = {
        let (log, blob) = (log.clone(), blob.clone());
        axum::Router::new().route(
            "/blobs/data",
            axum::routing::get(move |headers: HeaderMap| {
                let (log, blob) = (log.clone(), blob.clone());
                async move {
                    let range = header_text(&headers, header::RANGE);
                    log.lock()
                        .expect("log")
                        .storage_requests
                        .push((header_text(&headers, header::AUTHORIZATION), range.clone()));
                    match range
                        .as_deref()
                        .and_then(|r| r.strip_prefix("bytes="))
                        .and_then(|r| r.split_once('-'))
                    {
                        Some((start, end)) => {
                            let (start, end): (usize, usize) =
                                (start.parse().expect("start"), end.parse().expect("end"));
                            (
                                StatusCode::PARTIAL_CONTENT,
                                [(
                                    header::CONTENT_RANGE,
                                    format!("bytes {start}-{end}/{}", blob.len()),
                                )],
                                blob.slice(start..=end),
                            )
                                .into_response()
                        }
                        None => blob.into_response(),
                    }
                }
            }),
        )
    };
    tokio::spawn(async move { axum::serve(listener, registry_app).await });
    tokio::spawn(async move { axum::serve(storage_listener, storage_app).await });

    let dir = common::temp_dir("bridge-token-service");
    let mut config = stand_alone_config(&dir, format!("http://{registry}"));
    config.bridge.upstream_username = "bridge".into();
    config.bridge.upstream_password = "bridge-pass".into();
    let bridge = swarmgate::bridge::start(&config)
        .await
        .expect("bridge starts");
    let client = reqwest::Client::new();
    let url = format!("http://{}/c1/torrent/team/app/blobs/{digest}", bridge.addr);

    // A caller without a token gets the registry's Bearer challenge, as is.
    let challenged = client.get(&url).send().await.expect("torrent");
    assert_eq!(challenged.status(), 401);
    assert!(
        challenged.headers()["www-authenticate"]
            .to_str()
            .expect("text")
            .starts_with(&format!(r#"Bearer realm="http://{registry}/token""#))
    );
    // With the token it got from the registry's token service: a torrent,
    // built from storage through the redirect.
    let response = client
        .get(&url)
        .bearer_auth("caller-token")
        .send()
        .await
        .expect("torrent");
    assert_eq!(response.status(), 200);
    let meta: MetaInfo =
        serde_bencode::from_bytes(&response.bytes().await.expect("body")).expect("torrent");
    assert_eq!(meta.info.length, 300_000);

    // The web seed reads with the bridge's own account: challenged, it gets
    // a token from the realm with its Basic credentials, then follows the
    // redirect with the range.
    let seeded = client
        .get(&meta.url_list[0])
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("seed");
    assert_eq!(seeded.status(), 206);
    assert_eq!(&seeded.bytes().await.expect("body")[..], &blob[100..200]);
    let again = client.get(&meta.url_list[0]).send().await.expect("seed");
    assert_eq!(
        sha256_hex(&again.bytes().await.expect("body")),
        digest.trim_start_matches("sha256:")
    );

    let log = std::mem::take(&mut *log.lock().expect("log"));
    assert_eq!(
        log.token_requests.len(),
        1,
        "the token is remembered: {:?}",
        log.token_requests
    );
    assert!(
        log.token_requests[0]
            .1
            .contains("scope=repository%3Ateam%2Fapp%3Apull"),
        "{:?}",
        log.token_requests
    );
    assert!(log.token_requests[0].1.contains("service=stand-in"));
    assert!(
        log.storage_requests
            .iter()
            .all(|(authorization, _)| authorization.is_none()),
        "credentials never follow a redirect to storage: {:?}",
        log.storage_requests
    );
    assert!(
        log.storage_requests
            .iter()
            .any(|(_, range)| range.as_deref() == Some("bytes=100-199"))
    );
    assert!(
        log.blob_authorizations
            .contains(&Some("Bearer bridge-token".into()))
    );
    bridge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
