//! The offload as operators see it: peers' `uploaded`/`downloaded` reports
//! over real HTTP and UDP sockets become `swarmgate_reported_bytes_total` on
//! `/metrics` and per-swarm figures on the admin listener's `/swarms`;
//! origins count apart, a reload moves them, and lying or malformed reports
//! are counted or refused while the next request is served.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::net::UdpSocket;

const TORRENT: u8 = 0x4c;
const MIB: u64 = 1 << 20;
const ORIGIN_IP: &str = "10.9.0.1";

/// An HTTP announce from `ip` (the tracker trusts loopback's X-Forwarded-For).
async fn announce(
    http: SocketAddr,
    ip: &str,
    peer: u8,
    left: u64,
    uploaded: &str,
    downloaded: &str,
    event: &str,
) -> (u16, Vec<u8>) {
    let mut peer_id = *b"-SG0001-000000000000";
    peer_id[19] = peer;
    let query = format!(
        "info_hash={}&peer_id={}&port=7000&uploaded={uploaded}&downloaded={downloaded}&left={left}&compact=1{event}",
        escape(&[TORRENT; 20]),
        escape(&peer_id)
    );
    get_with(
        http,
        &format!("/announce?{query}"),
        &[("X-Forwarded-For", ip)],
    )
    .await
}

async fn ok(http: SocketAddr, ip: &str, peer: u8, left: u64, up: u64, down: u64, event: &str) {
    let (status, body) = announce(
        http,
        ip,
        peer,
        left,
        &up.to_string(),
        &down.to_string(),
        event,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(failure(&body), None);
}

/// A UDP connect and announce (BEP 15) reporting these totals.
async fn udp_announce(tracker: SocketAddr, peer: u8, left: u64, uploaded: u64, downloaded: u64) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut buf = [0u8; 512];
    let mut connect = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 7]);
    socket.send_to(&connect, tracker).await.expect("send");
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("connect reply in time")
        .expect("recv");
    assert_eq!(len, 16);
    let mut packet = buf[8..16].to_vec();
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.extend_from_slice(&8u32.to_be_bytes());
    packet.extend_from_slice(&[TORRENT; 20]);
    let mut peer_id = *b"-SG0001-000000000000";
    peer_id[19] = peer;
    packet.extend_from_slice(&peer_id);
    packet.extend_from_slice(&downloaded.to_be_bytes());
    packet.extend_from_slice(&left.to_be_bytes());
    packet.extend_from_slice(&uploaded.to_be_bytes());
    packet.extend_from_slice(&0u32.to_be_bytes()); // event
    packet.extend_from_slice(&[0; 8]); // ip, key
    packet.extend_from_slice(&5i32.to_be_bytes());
    packet.extend_from_slice(&7001u16.to_be_bytes());
    socket.send_to(&packet, tracker).await.expect("send");
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("announce reply in time")
        .expect("recv");
    assert!(
        len >= 20 && buf[..4] == 1u32.to_be_bytes(),
        "{:?}",
        &buf[..len]
    );
}

fn reported(metrics: &std::collections::HashMap<String, f64>, direction: &str, by: &str) -> f64 {
    sample(
        metrics,
        &format!("swarmgate_reported_bytes_total{{direction=\"{direction}\",by=\"{by}\"}}"),
    )
}

async fn swarms(admin: SocketAddr, limit: usize) -> serde_json::Value {
    let (status, body) = get(admin, &format!("/swarms?limit={limit}")).await;
    assert_eq!(status, 200);
    serde_json::from_slice(&body).expect("JSON")
}

#[tokio::test]
async fn peers_reports_become_the_offload_on_metrics_and_swarms() {
    let mut config = loopback_config();
    config.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    config.offload.origins = vec![format!("{ORIGIN_IP}/32").parse().expect("net")];
    let server = start(config.clone()).await;
    let http = server.http_addr.expect("http");
    let udp = server.udp_addr.expect("udp");
    let admin = server.admin_addr;

    // The origin seeds; peer 1 (HTTP) pulls all 100 MiB from it; peer 2
    // (UDP, from 127.0.0.1) pulls 60 MiB from peer 1 and 40 from the origin.
    ok(http, ORIGIN_IP, 200, 0, 0, 0, "&event=started").await;
    ok(http, "10.1.0.1", 1, 100 * MIB, 0, 0, "&event=started").await;
    udp_announce(udp, 2, 100 * MIB, 0, 0).await;
    ok(http, "10.1.0.1", 1, 0, 0, 100 * MIB, "&event=completed").await;
    udp_announce(udp, 2, 0, 0, 100 * MIB).await;
    ok(
        http,
        "10.1.0.1",
        1,
        0,
        60 * MIB,
        100 * MIB,
        "&event=stopped",
    )
    .await;
    ok(http, ORIGIN_IP, 200, 0, 140 * MIB, 0, "").await;

    let metrics = scrape_metrics(admin).await;
    assert_eq!(reported(&metrics, "downloaded", "peer"), (200 * MIB) as f64);
    assert_eq!(reported(&metrics, "uploaded", "peer"), (60 * MIB) as f64);
    assert_eq!(reported(&metrics, "uploaded", "origin"), (140 * MIB) as f64);

    let listed = swarms(admin, 5).await;
    assert_eq!(listed["total"]["offload"], 0.3);
    let swarm = &listed["swarms"][0];
    assert_eq!(swarm["info_hash"], hex::encode([TORRENT; 20]));
    assert_eq!(swarm["downloaded_bytes"], 200 * MIB);
    assert_eq!(swarm["uploaded_by_origins_bytes"], 140 * MIB);
    assert_eq!(
        (swarm["seeders"].as_u64(), swarm["leechers"].as_u64()),
        (Some(2), Some(0))
    );
    assert_eq!(swarm["error_bytes"], 0);

    // A reload that names no origin: the origin's next upload is the swarm's.
    let mut reloaded = config.clone();
    reloaded.offload.origins.clear();
    server.reload(reloaded).await.expect("reload");
    ok(http, ORIGIN_IP, 200, 0, 150 * MIB, 0, "").await;
    let metrics = scrape_metrics(admin).await;
    assert_eq!(reported(&metrics, "uploaded", "peer"), (70 * MIB) as f64);
    assert_eq!(reported(&metrics, "uploaded", "origin"), (140 * MIB) as f64);
}

#[tokio::test]
async fn lying_and_malformed_reports_are_counted_or_refused_and_serving_goes_on() {
    let mut config = loopback_config();
    config.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    let server = start(config).await;
    let http = server.http_addr.expect("http");
    let admin = server.admin_addr;

    ok(http, "10.1.0.5", 5, 10, 0, 0, "&event=started").await;
    // Past u64: refused as malformed, with a reason.
    let (status, body) =
        announce(http, "10.1.0.5", 5, 10, "99999999999999999999999", "0", "").await;
    assert!(status == 400 || failure(&body).is_some(), "{status}");
    // The largest total there is: counted as implausible, adds nothing.
    ok(http, "10.1.0.5", 5, 10, u64::MAX, 0, "").await;
    // A total that goes down: a client restart, counted from zero.
    ok(http, "10.1.0.5", 5, 10, 0, 3 * MIB, "").await;
    ok(http, "10.1.0.5", 5, 10, 0, 5 * MIB, "").await;

    let metrics = scrape_metrics(admin).await;
    let anomaly = |kind| {
        sample(
            &metrics,
            &format!("swarmgate_reported_anomalies_total{{kind=\"{kind}\"}}"),
        )
    };
    assert_eq!(anomaly("implausible"), 1.0);
    assert_eq!(anomaly("reset"), 1.0);
    assert_eq!(reported(&metrics, "uploaded", "peer"), 0.0);
    assert_eq!(reported(&metrics, "downloaded", "peer"), (5 * MIB) as f64);

    // Bad `/swarms` queries get an answer, not a crash; limits are clamped.
    let (status, _) = get(admin, "/swarms?limit=banana").await;
    assert_eq!(status, 400);
    let listed = swarms(admin, usize::MAX).await;
    assert_eq!(listed["swarms"].as_array().map(Vec::len), Some(1));
    ok(http, "10.1.0.6", 6, 10, 0, 0, "").await;
}
