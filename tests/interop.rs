//! Interop with real BitTorrent clients: a libtorrent seeder and an aria2 (or
//! libtorrent) leecher on 127.0.0.1 find each other only through swarmgate and
//! transfer a file whose hash is verified.
//!
//! Needs Debian's `python3-libtorrent` and `aria2` (`.ci/run` installs them).
//! Set `SWARMGATE_SKIP_INTEROP=1` to skip on a machine without them; without
//! that, a missing client is a failure, never a silent pass.

mod common;

use std::process::Command;

use common::*;
use serde_bencode::value::Value;

const DRIVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/transfer.py");

fn skip() -> bool {
    std::env::var_os("SWARMGATE_SKIP_INTEROP").is_some_and(|v| v == "1")
}

/// Runs the driver against `announce`; returns its "interop ok" line.
async fn transfer(announce: &str, leecher: &str) -> String {
    let announce = announce.to_owned();
    let leecher = leecher.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("/usr/bin/python3")
            .args([DRIVER, "--announce", &announce, "--leecher", &leecher, "--size-mib", "20"])
            .output()
    })
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

/// The `downloaded` count the tracker reports for the transfer's torrent.
async fn downloads_of(http: std::net::SocketAddr, summary: &str) -> i64 {
    let hex = summary
        .rsplit("infohash ")
        .next()
        .expect("infohash in summary")
        .trim();
    let mut hash = [0u8; 20];
    for (i, byte) in hash.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex infohash");
    }
    let (_, body) = get(http, &format!("/scrape?info_hash={}", escape(&hash))).await;
    let reply = dict(&body);
    let Some(Value::Dict(files)) = reply.get(&b"files"[..]) else {
        panic!("files")
    };
    let Some(Value::Dict(counts)) = files.get(&hash[..]) else {
        panic!("the torrent's counts")
    };
    int(counts, "downloaded")
}

async fn run(leecher: &str) {
    if skip() {
        eprintln!("SWARMGATE_SKIP_INTEROP=1: skipped");
        return;
    }
    let server = start(loopback_config()).await;
    let http = server.http_addr.expect("http");
    let line = transfer(&format!("http://{http}/announce"), leecher).await;
    assert!(
        line.starts_with(&format!("interop ok: {leecher} leecher downloaded 20 MiB")),
        "{line}"
    );
    assert_eq!(
        downloads_of(http, &line).await,
        1,
        "the leecher's completion reached the tracker"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeder_to_aria2_leecher_over_http() {
    run("aria2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn libtorrent_seeder_to_libtorrent_leecher_over_http() {
    run("libtorrent").await;
}
