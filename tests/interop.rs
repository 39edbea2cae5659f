//! Interop with real BitTorrent clients: a libtorrent seeder and an aria2 (or
//! libtorrent) leecher on 127.0.0.1 find each other only through swarmgate and
//! transfer a file whose hash is verified.
//!
//! The tracker runs in `jwt` mode with the development keys, so the announce
//! URL inside the torrent carries a token minted (with `swarmgate mint`) for
//! that torrent's infohash, exactly as the registry would sign it.
//!
//! Over UDP (BEP 15), the token travels as BEP 41 URL data.
//!
//! Needs Debian's `python3-libtorrent` and `aria2` (`.ci/run` installs them).
//! Set `SWARMGATE_SKIP_INTEROP=1` to skip on a machine without them; without
//! that, a missing client is a failure, never a silent pass.

mod common;

use std::process::Command;

use common::*;
use swarmgate::bittorrent::{InfoHash, ScrapeRequest};
use swarmgate::server::Server;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/transfer.py");

/// Runs the driver against `announce`, minting with the development key `kid`;
/// returns its "interop ok" line.
async fn transfer(announce: &str, leecher: &str, kid: &str) -> String {
    let key = format!("{}/keys/{kid}.pem", env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new("/usr/bin/python3");
    command
        .args([
            DRIVER,
            "--announce",
            announce,
            "--leecher",
            leecher,
            "--size-mib",
            "20",
        ])
        .args([
            "--mint",
            env!("CARGO_BIN_EXE_swarmgate"),
            "mint",
            "--key",
            &key,
            "--kid",
            kid,
        ])
        .args(["--issuer", "dev-registry"]);
    run_interop_driver(command).await
}

/// The `downloaded` count the engine holds for the transfer's torrent.
fn downloads_of(server: &Server, summary: &str) -> u32 {
    let hex = summary
        .rsplit("infohash ")
        .next()
        .expect("infohash in summary")
        .trim();
    let info_hash = InfoHash::from_hex(hex).expect("hex infohash");
    server
        .engine
        .scrape(&ScrapeRequest {
            info_hashes: vec![info_hash],
        })
        .files[0]
        .1
        .downloaded
}

async fn run(leecher: &str, kid: &str, scheme: &str) {
    if skip_interop() {
        eprintln!("SWARMGATE_SKIP_INTEROP=1: skipped");
        return;
    }
    let server = start(dev_config()).await; // jwt mode, development keys
    let http = server.http_addr.expect("http");

    // Without the token, the same tracker refuses the torrent outright.
    let (_, refused) = get(
        http,
        &format!("/announce?{}", announce_query(1, 1, 6881, 0, "")),
    )
    .await;
    assert!(failure(&refused).is_some_and(|r| r.starts_with("unapproved request: missing jwt")));

    let tracker = match scheme {
        "udp" => server.udp_addr.expect("udp"),
        _ => http,
    };
    let line = transfer(&format!("{scheme}://{tracker}/announce"), leecher, kid).await;
    assert!(
        line.starts_with(&format!("interop ok: {leecher} leecher downloaded 20 MiB")),
        "{line}"
    );
    assert!(line.contains("(signed announce URL)"), "{line}");
    assert_eq!(
        downloads_of(&server, &line),
        1,
        "the leecher's completion reached the tracker"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeder_to_aria2_leecher_over_http_with_an_es256_token() {
    run("aria2", "dev-es256", "http").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeder_to_libtorrent_leecher_over_http_with_an_rs256_token() {
    run("libtorrent", "dev-rs256", "http").await;
}

/// Over UDP the token rides in BEP 41 URL data, which only libtorrent sends,
/// in one option of at most 255 bytes: an ES256 or EdDSA token fits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeder_to_libtorrent_leecher_over_udp_with_an_eddsa_token() {
    run("libtorrent", "dev-eddsa", "udp").await;
}
