//! Bounded memory against a hostile token holder: one client with one valid
//! token announces a million distinct peer ids from one address over real
//! UDP, while other addresses keep announcing to the same swarm.
//!
//! `SWARMGATE_FLOOD_ANNOUNCES` sets the flood's size (default 1,000,000).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use swarmgate::bittorrent::{InfoHash, ScrapeRequest};
use tokio::net::UdpSocket;

const TORRENT: [u8; 20] = [5; 20];
/// Honest peers' ids start here, apart from the flooder's 0, 1, 2, ...
const HONEST_IDS: u64 = 1 << 40;

/// An announce packet for peer `peer` with the token in BEP 41 URL data.
fn announce_packet(
    connection_id: u64,
    transaction_id: u32,
    peer: u64,
    port: u16,
    url: &[u8],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(98 + url.len() + 3);
    p.extend_from_slice(&connection_id.to_be_bytes());
    p.extend_from_slice(&1u32.to_be_bytes());
    p.extend_from_slice(&transaction_id.to_be_bytes());
    p.extend_from_slice(&TORRENT);
    let mut peer_id = *b"-FL0001-000000000000";
    peer_id[12..].copy_from_slice(&peer.to_be_bytes());
    p.extend_from_slice(&peer_id);
    p.extend_from_slice(&0u64.to_be_bytes()); // downloaded
    p.extend_from_slice(&1000u64.to_be_bytes()); // left
    p.extend_from_slice(&0u64.to_be_bytes()); // uploaded
    p.extend_from_slice(&2u32.to_be_bytes()); // started
    p.extend_from_slice(&0u32.to_be_bytes()); // ip
    p.extend_from_slice(&0u32.to_be_bytes()); // key
    p.extend_from_slice(&50i32.to_be_bytes()); // numwant
    p.extend_from_slice(&port.to_be_bytes());
    p.extend_from_slice(&[2, url.len() as u8]);
    p.extend_from_slice(url);
    p.push(0);
    p
}

async fn connect(socket: &UdpSocket, tracker: SocketAddr) -> u64 {
    let mut packet = 0x0417_2710_1980u64.to_be_bytes().to_vec();
    packet.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
    socket.send_to(&packet, tracker).await.expect("send");
    let mut buf = [0u8; 64];
    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
        .await
        .expect("connect reply in time")
        .expect("recv");
    assert_eq!(len, 16);
    u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_peer_ids_from_one_address_stay_at_the_limit_and_others_are_served() {
    let flood: u64 = std::env::var("SWARMGATE_FLOOD_ANNOUNCES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let server = start(dev_config()).await;
    let tracker = server.udp_addr.expect("udp");
    let per_address = swarmgate::config::Config::default()
        .limits
        .peers_per_address;
    let token = mint_dev("dev-eddsa", TORRENT, None);
    let url = format!("/announce?jwt={token}");
    assert!(url.len() <= 255, "the token fits one BEP 41 option");

    // Warm up (first allocations of the runtime and the swarm), then measure.
    let flooder = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let id = connect(&flooder, tracker).await;
    let rss_before = rss_kib("self");

    // Honest peers on other addresses announce throughout the flood.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let honest = tokio::spawn({
        let url = url.clone();
        async move {
            let mut latencies = Vec::new();
            let mut sockets = Vec::new();
            for host in 2..=9u8 {
                let socket = UdpSocket::bind((std::net::Ipv4Addr::new(127, 0, 0, host), 0))
                    .await
                    .expect("bind");
                let id = connect(&socket, tracker).await;
                sockets.push((socket, id));
            }
            let mut buf = [0u8; 2048];
            for round in 0u32.. {
                if *stopped.borrow() && round > 0 {
                    break;
                }
                for (n, (socket, id)) in sockets.iter().enumerate() {
                    let packet = announce_packet(
                        *id,
                        round,
                        HONEST_IDS + n as u64,
                        7000 + n as u16,
                        url.as_bytes(),
                    );
                    let began = Instant::now();
                    socket.send_to(&packet, tracker).await.expect("send");
                    let len = tokio::time::timeout(Duration::from_secs(10), socket.recv(&mut buf))
                        .await
                        .expect("an honest announce is answered during the flood")
                        .expect("recv");
                    latencies.push(began.elapsed());
                    assert_eq!(
                        &buf[..4],
                        &1u32.to_be_bytes(),
                        "an announce reply: {:?}",
                        &buf[..len]
                    );
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            latencies
        }
    });

    // The flood: windows of 64 announces, each a new peer id, one address.
    let began = Instant::now();
    let mut answered = 0u64;
    let mut buf = [0u8; 2048];
    let window = 64;
    let mut sent = 0u64;
    while sent < flood {
        let batch = window.min(flood - sent);
        for k in 0..batch {
            let packet = announce_packet(id, k as u32, sent + k, 6881, url.as_bytes());
            flooder.send_to(&packet, tracker).await.expect("send");
        }
        sent += batch;
        for _ in 0..batch {
            match tokio::time::timeout(Duration::from_millis(500), flooder.recv(&mut buf)).await {
                Ok(Ok(_)) => answered += 1,
                _ => break, // a lost datagram: the next window goes on
            }
        }
    }
    let flood_took = began.elapsed();
    stop.send(true).expect("honest peers running");
    let mut latencies = honest.await.expect("honest peers");
    let rss_after = rss_kib("self");

    let stats = server.engine.scrape(&ScrapeRequest {
        info_hashes: vec![InfoHash(TORRENT)],
    });
    let listed = stats.files[0].1.peers();
    let m = scrape_metrics(server.admin_addr).await;
    let hits = sample(
        &m,
        r#"swarmgate_limit_hits_total{limit="peers_per_address"}"#,
    );
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "flood: {sent} announces with distinct peer ids from 127.0.0.1 in {flood_took:?} ({answered} answered); \
         listed in the swarm: {listed} ({per_address} from the flooder + 8 honest); limit hits {hits}; \
         RSS {} KiB -> {} KiB (+{} KiB); honest announces: {} answered, p50 {:?}, p99 {:?}, max {:?}",
        rss_before,
        rss_after,
        rss_after.saturating_sub(rss_before),
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0),
    );
    assert_eq!(listed, per_address + 8, "the flooder stays at its limit");
    assert!(
        answered > flood / 2,
        "the flood was served: {answered} of {flood}"
    );
    assert!(
        hits >= (answered - per_address as u64) as f64,
        "{hits} hits"
    );
    assert!(
        latencies.len() >= 8,
        "honest peers announced during the flood"
    );
    // A million stored peers would take well over 50 MiB (48.7 B each in the
    // compact layout, ~170 B in the full one).
    assert!(
        rss_after.saturating_sub(rss_before) < 32 * 1024,
        "RSS grew {} KiB",
        rss_after - rss_before
    );
    server.shutdown().await;
}
