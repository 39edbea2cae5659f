//! Locality over real sockets: peers announce from different loopback source
//! addresses (127.x.y.z), a sites map splits 127.0.0.0/8 into zones and
//! regions, and replies come nearest tier first.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::*;
use swarmgate::config::Site;

/// Where the test puts each peer, and the tier it is from the announcer's view.
const PEERS: [(&str, u16, usize); 9] = [
    ("127.1.1.2", 7001, 0), // same /24 as the announcer
    ("127.1.1.3", 7002, 0),
    ("127.1.2.2", 7003, 1), // same zone (127.1.0.0/16), another rack
    ("127.1.3.2", 7004, 1),
    ("127.2.1.2", 7005, 2), // zone b, same region "east"
    ("127.2.2.2", 7006, 2),
    ("127.3.1.2", 7007, 3), // region "west"
    ("127.9.9.2", 7008, 3), // no site at all
    ("127.9.9.3", 7009, 3),
];
const ANNOUNCER: &str = "127.1.1.1";

fn site(cidr: &str, zone: &str, region: &str) -> Site {
    Site {
        cidr: cidr.parse().expect("cidr"),
        zone: zone.into(),
        region: region.into(),
    }
}

/// An announce sent from `source`, as a client bound to that address would.
async fn announce_from(
    tracker: SocketAddr,
    source: &str,
    peer: u8,
    port: u16,
    left: u64,
    numwant: usize,
) -> Vec<SocketAddr> {
    let client = reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().expect("ip"))
        .build()
        .expect("client");
    let query = announce_query(
        1,
        peer,
        port,
        left,
        &format!("&compact=1&numwant={numwant}"),
    );
    let body = client
        .get(format!("http://{tracker}/announce?{query}"))
        .send()
        .await
        .expect("sent")
        .bytes()
        .await
        .expect("body");
    assert_eq!(failure(&body), None);
    compact_peers(&dict(&body))
}

fn tier_of(addr: &SocketAddr) -> usize {
    PEERS
        .iter()
        .find(|(ip, port, _)| addr.ip().to_string() == *ip && addr.port() == *port)
        .map(|(_, _, tier)| *tier)
        .unwrap_or_else(|| panic!("{addr} never announced"))
}

#[tokio::test]
async fn replies_are_ordered_by_tier_from_the_announcers_source_address() {
    let mut config = loopback_config();
    config.locality.sites = vec![
        site("127.1.0.0/16", "a", "east"),
        site("127.2.0.0/16", "b", "east"),
        site("127.3.0.0/16", "c", "west"),
    ];
    let server = start(config).await;
    let tracker = server.http_addr.expect("http listener");
    for (n, (ip, port, _)) in PEERS.iter().enumerate() {
        announce_from(tracker, ip, n as u8 + 1, *port, 100, 0).await;
    }

    // Everyone: all nine, nearest tier first.
    let all = announce_from(tracker, ANNOUNCER, 99, 7000, 100, 50).await;
    assert_eq!(all.len(), PEERS.len());
    let tiers: Vec<usize> = all.iter().map(tier_of).collect();
    let mut sorted = tiers.clone();
    sorted.sort();
    assert_eq!(tiers, sorted, "reply {all:?} is not ordered by tier");

    // Fewer slots than peers: the rack first, then the zone (no seeders, and
    // 5 slots leave no spill share, so both guards stay out of the way).
    for _ in 0..20 {
        let five = announce_from(tracker, ANNOUNCER, 99, 7000, 100, 5).await;
        let tiers: Vec<usize> = five.iter().map(tier_of).collect();
        assert_eq!(tiers, vec![0, 0, 1, 1, 2], "{five:?}");
    }

    // A seeder far away is still handed to a leecher whose near tiers are full.
    announce_from(tracker, "127.3.9.9", 50, 7050, 0, 0).await;
    let three = announce_from(tracker, ANNOUNCER, 99, 7000, 100, 3).await;
    assert!(
        three.contains(&"127.3.9.9:7050".parse().expect("addr")),
        "guard seeder missing from {three:?}"
    );
    assert_eq!(
        server.engine.tier_counts().0.iter().sum::<u64>(),
        9 + 20 * 5 + 3,
        "every handed-out peer is counted under its tier"
    );
    server.shutdown().await;
}
