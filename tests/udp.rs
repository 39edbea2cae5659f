//! The UDP tracker over real sockets on loopback: BEP 15 connect, announce and
//! scrape, connection ids, BEP 41 tokens, IPv6, and malformed packets.

mod common;
#[path = "common/jwks.rs"]
mod jwks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use swarmgate::config::AuthMode;
use swarmgate::frontend::udp::{ConnectionIds, UdpFrontend, UdpSettings};
use swarmgate::swarm::{Engine, EngineConfig};
use swarmgate::tracker::TrackerService;
use tokio::net::UdpSocket;

const PROTOCOL_ID: u64 = 0x0417_2710_1980;

/// The 16 bytes every BEP 15 request starts with.
fn header(connection_id: u64, action: u32, transaction_id: u32) -> Vec<u8> {
    [
        &connection_id.to_be_bytes()[..],
        &action.to_be_bytes(),
        &transaction_id.to_be_bytes(),
    ]
    .concat()
}

/// A BEP 15 client on its own socket.
struct Client {
    socket: UdpSocket,
    tracker: SocketAddr,
}

enum Reply {
    Announce {
        interval: u32,
        leechers: u32,
        seeders: u32,
        peers: Vec<SocketAddr>,
    },
    Scrape(Vec<(u32, u32, u32)>),
    Error(String),
}

impl Client {
    async fn new(tracker: SocketAddr) -> Self {
        let bind = if tracker.is_ipv6() {
            "[::1]:0"
        } else {
            "127.0.0.1:0"
        };
        Self {
            socket: UdpSocket::bind(bind).await.expect("bind"),
            tracker,
        }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().expect("addr").port()
    }

    /// Sends `packet` and waits for a reply: up to 10 s, since an answer
    /// may wait on a JWKS fetch and a loaded machine is slow; only the one
    /// test that expects silence pays for the wait.
    async fn exchange(&self, packet: &[u8]) -> Option<Vec<u8>> {
        self.exchange_within(packet, Duration::from_secs(10)).await
    }

    async fn exchange_within(&self, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
        self.socket
            .send_to(packet, self.tracker)
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(wait, self.socket.recv(&mut buf)).await {
            Ok(Ok(len)) => Some(buf[..len].to_vec()),
            _ => None,
        }
    }

    async fn connect(&self) -> u64 {
        let packet = header(PROTOCOL_ID, 0, 42);
        let reply = self.exchange(&packet).await.expect("connect reply");
        assert_eq!(reply.len(), 16);
        assert_eq!(&reply[..8], &[0, 0, 0, 0, 0, 0, 0, 42]);
        u64::from_be_bytes(reply[8..16].try_into().expect("8 bytes"))
    }

    fn announce_packet(
        &self,
        connection_id: u64,
        torrent: u8,
        peer: u8,
        left: u64,
        options: &[u8],
    ) -> Vec<u8> {
        let mut p = header(connection_id, 1, 7);
        p.extend_from_slice(&[torrent; 20]);
        let mut peer_id = *b"-SG0001-000000000000";
        peer_id[19] = peer;
        p.extend_from_slice(&peer_id);
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&left.to_be_bytes());
        p.extend_from_slice(&0u64.to_be_bytes());
        p.extend_from_slice(&2u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&self.port().to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    async fn announce(
        &self,
        connection_id: u64,
        torrent: u8,
        peer: u8,
        left: u64,
        options: &[u8],
    ) -> Reply {
        let packet = self.announce_packet(connection_id, torrent, peer, left, options);
        parse_reply(
            &self.exchange(&packet).await.expect("announce reply"),
            self.tracker.is_ipv6(),
        )
    }

    async fn scrape(&self, connection_id: u64, torrents: &[u8]) -> Reply {
        let mut p = header(connection_id, 2, 8);
        for &t in torrents {
            p.extend_from_slice(&[t; 20]);
        }
        parse_reply(&self.exchange(&p).await.expect("scrape reply"), false)
    }
}

fn parse_reply(reply: &[u8], ipv6: bool) -> Reply {
    let word = |at: usize| u32::from_be_bytes(reply[at..at + 4].try_into().expect("4 bytes"));
    match word(0) {
        1 => {
            let size = if ipv6 { 18 } else { 6 };
            let body = &reply[20..];
            assert_eq!(
                body.len() % size,
                0,
                "peer list of whole {size}-byte entries"
            );
            let peers = body
                .chunks_exact(size)
                .map(|c| {
                    let port = u16::from_be_bytes([c[size - 2], c[size - 1]]);
                    if ipv6 {
                        let octets: [u8; 16] = c[..16].try_into().expect("16");
                        SocketAddr::from((octets, port))
                    } else {
                        SocketAddr::from(([c[0], c[1], c[2], c[3]], port))
                    }
                })
                .collect();
            Reply::Announce {
                interval: word(8),
                leechers: word(12),
                seeders: word(16),
                peers,
            }
        }
        2 => Reply::Scrape(
            reply[8..]
                .chunks_exact(12)
                .map(|c| {
                    let w = |i: usize| u32::from_be_bytes(c[i..i + 4].try_into().expect("4"));
                    (w(0), w(4), w(8))
                })
                .collect(),
        ),
        3 => Reply::Error(String::from_utf8_lossy(&reply[8..]).into_owned()),
        other => panic!("unknown action {other}"),
    }
}

fn error_of(reply: Reply) -> String {
    match reply {
        Reply::Error(message) => message,
        _ => panic!("expected an error packet"),
    }
}

#[tokio::test]
async fn connect_announce_scrape_in_open_mode() {
    let server = start(loopback_config()).await;
    let tracker = server.udp_addr.expect("udp enabled");
    let seeder = Client::new(tracker).await;
    let leecher = Client::new(tracker).await;

    let id = seeder.connect().await;
    let Reply::Announce {
        interval,
        seeders,
        leechers,
        peers,
    } = seeder.announce(id, 1, 1, 0, &[]).await
    else {
        panic!("announce")
    };
    assert_eq!((interval, seeders, leechers, peers.len()), (60, 1, 0, 0));

    let id2 = leecher.connect().await;
    let Reply::Announce {
        seeders,
        leechers,
        peers,
        ..
    } = leecher.announce(id2, 1, 2, 100, &[]).await
    else {
        panic!("announce")
    };
    assert_eq!((seeders, leechers), (1, 1));
    assert_eq!(
        peers,
        vec![SocketAddr::from(([127, 0, 0, 1], seeder.port()))]
    );

    let Reply::Scrape(counts) = leecher.scrape(id2, &[1, 9]).await else {
        panic!("scrape")
    };
    assert_eq!(counts, vec![(1, 0, 1), (0, 0, 0)]);
    server.shutdown().await;
}

#[tokio::test]
async fn bad_ids_and_malformed_packets_get_errors_or_silence_and_serving_goes_on() {
    let server = start(loopback_config()).await;
    let tracker = server.udp_addr.expect("udp");
    let client = Client::new(tracker).await;
    let id = client.connect().await;

    assert_eq!(
        error_of(client.announce(id ^ 0xff, 1, 1, 0, &[]).await),
        "bad or expired connection id"
    );
    // An id issued to another port of the same host is no good either.
    let other = Client::new(tracker).await;
    assert_eq!(
        error_of(other.announce(id, 1, 1, 0, &[]).await),
        "bad or expired connection id"
    );

    // Too short for a transaction id: no reply at all.
    assert_eq!(
        client
            .exchange_within(&[1, 2, 3], Duration::from_millis(500))
            .await,
        None
    );
    // Truncated announce, bad BEP 41 option, unknown action, wrong magic: error packets,
    // never longer than the request.
    let full = client.announce_packet(id, 1, 1, 0, &[]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (full[..50].to_vec(), "announce too short"),
        (
            client.announce_packet(id, 1, 1, 0, &[2, 200, b'x']),
            "malformed BEP 41 option",
        ),
        (header(id, 9, 5), "unknown action"),
        (header(1, 0, 5), "bad protocol id"),
    ];
    for (packet, expected) in cases {
        let reply = client.exchange(&packet).await.expect("an error packet");
        assert!(
            reply.len() <= packet.len(),
            "{expected}: reply {} > request {}",
            reply.len(),
            packet.len()
        );
        // The message, cut only as far as the request's length requires.
        let room = (packet.len() - 8).min(expected.len());
        assert_eq!(error_of(parse_reply(&reply, false)), expected[..room]);
    }
    assert!(
        matches!(
            client.announce(id, 1, 1, 0, &[]).await,
            Reply::Announce { .. }
        ),
        "served normally afterwards"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn connection_ids_expire_after_two_minutes_plus_skew() {
    let now = Arc::new(AtomicU64::new(1_800_000_000));
    let clock_now = now.clone();
    let config = loopback_config();
    let engine = Arc::new(Engine::new(EngineConfig::default()));
    let frontend = UdpFrontend {
        service: TrackerService::new(engine).boxed(),
        settings: Arc::new(arc_swap::ArcSwap::from_pointee(UdpSettings::from_config(
            &config,
        ))),
        ids: Arc::new(ConnectionIds::new(b"test", Duration::from_secs(30))),
        clock: Arc::new(move || clock_now.load(Ordering::SeqCst)),
        metrics: swarmgate::metrics::RequestMetrics::noop(),
    };
    let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
    let tracker = socket.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(frontend.serve(socket, stopped));

    let client = Client::new(tracker).await;
    let id = client.connect().await;
    now.fetch_add(140, Ordering::SeqCst);
    assert!(
        matches!(
            client.announce(id, 1, 1, 0, &[]).await,
            Reply::Announce { .. }
        ),
        "still valid at 140 s"
    );
    now.fetch_add(60, Ordering::SeqCst);
    assert_eq!(
        error_of(client.announce(id, 1, 1, 0, &[]).await),
        "bad or expired connection id"
    );
    let fresh = client.connect().await;
    assert!(matches!(
        client.announce(fresh, 1, 1, 0, &[]).await,
        Reply::Announce { .. }
    ));
    stop.send(true).expect("stop");
    worker.await.expect("worker ends");
}

fn url_data(path_and_query: &[u8], pieces: usize) -> Vec<u8> {
    // BEP 41 URL data split into `pieces` options, with a NOP between, then end.
    let mut options = Vec::new();
    let chunk = path_and_query.len().div_ceil(pieces);
    for part in path_and_query.chunks(chunk) {
        options.extend_from_slice(&[2, part.len() as u8]);
        options.extend_from_slice(part);
        options.push(1);
    }
    options.push(0);
    options
}

#[tokio::test]
async fn tokens_arrive_in_bep41_url_data() {
    let server = start(dev_config()).await;
    let tracker = server.udp_addr.expect("udp");
    let client = Client::new(tracker).await;
    let id = client.connect().await;

    let token = mint_dev("dev-eddsa", [3; 20], None);
    let url = format!("/announce?jwt={token}");
    assert!(
        url.len() <= 255,
        "fits libtorrent's single option ({})",
        url.len()
    );
    for pieces in [1, 3] {
        let reply = client
            .announce(id, 3, 1, 0, &url_data(url.as_bytes(), pieces))
            .await;
        assert!(
            matches!(reply, Reply::Announce { seeders: 1, .. }),
            "token in {pieces} option(s)"
        );
    }

    assert_eq!(
        error_of(client.announce(id, 3, 1, 0, &[]).await)
            .split(" (")
            .next(),
        Some("unapproved request: missing jwt")
    );
    assert_eq!(
        error_of(
            client
                .announce(id, 4, 1, 0, &url_data(url.as_bytes(), 1))
                .await
        ),
        "unapproved request: invalid jwt: infohash not approved"
    );
    // An RS256 token cut at 255 bytes, as libtorrent sends it.
    let long = format!("/announce?jwt={}", mint_dev("dev-rs256", [3; 20], None));
    let cut = &long.as_bytes()[..255];
    let reason = error_of(client.announce(id, 3, 1, 0, &url_data(cut, 1)).await);
    assert!(
        reason.starts_with("unapproved request: invalid jwt: "),
        "{reason}"
    );
    // UDP scrapes carry no token, so jwt mode refuses them.
    assert!(error_of(client.scrape(id, &[3]).await).starts_with("unapproved request: missing jwt"));
    server.shutdown().await;
}

#[tokio::test]
async fn ipv6_clients_get_18_byte_peers_and_dual_stack_serves_ipv4_too() {
    let mut config = loopback_config();
    config.udp.listen = "[::]:0".parse().expect("addr");
    config.auth.mode = AuthMode::Open;
    let server = start(config).await;
    let port = server.udp_addr.expect("udp").port();
    let v6_tracker = SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port));
    let v4_tracker = SocketAddr::from(([127, 0, 0, 1], port));

    let seeder6 = Client::new(v6_tracker).await;
    let id = seeder6.connect().await;
    seeder6.announce(id, 5, 1, 0, &[]).await;
    let leecher6 = Client::new(v6_tracker).await;
    let id = leecher6.connect().await;
    let Reply::Announce { peers, .. } = leecher6.announce(id, 5, 2, 10, &[]).await else {
        panic!("announce")
    };
    assert_eq!(
        peers,
        vec![SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], seeder6.port()))]
    );

    // An IPv4 client on the same dual-stack socket: 6-byte peers, IPv4 only.
    let seeder4 = Client::new(v4_tracker).await;
    let id = seeder4.connect().await;
    seeder4.announce(id, 5, 3, 0, &[]).await;
    let leecher4 = Client::new(v4_tracker).await;
    let id = leecher4.connect().await;
    let Reply::Announce { peers, seeders, .. } = leecher4.announce(id, 5, 4, 10, &[]).await else {
        panic!("announce")
    };
    assert_eq!(
        peers,
        vec![SocketAddr::from(([127, 0, 0, 1], seeder4.port()))]
    );
    assert_eq!(seeders, 2, "counts cover both families");
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_whose_key_must_first_be_fetched_is_answered_after_the_refetch() {
    // The batched UDP worker answers most requests in place; one that waits on a
    // JWKS refetch (unknown kid) finishes on the runtime and still gets its reply.
    use swarmgate::gateway::mint::{self, KeyAlg};
    let early = mint::generate(KeyAlg::Es256, "early").expect("keygen");
    let jwks_doc =
        |keys: &[&jsonwebtoken::jwk::Jwk]| serde_json::json!({ "keys": keys }).to_string();
    let jwks = jwks::JwksServer::start(jwks_doc(&[&early.public_jwk])).await;
    let mut config = loopback_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.keys_dir = String::new();
    config.auth.jwks_url = jwks.url.clone();
    config.auth.jwks_refresh = Duration::from_secs(3600);
    let server = start(config).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !server.gateway().expect("jwt").keys_loaded() {
        assert!(std::time::Instant::now() < deadline, "keys never loaded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let late = mint::generate(KeyAlg::EdDsa, "late").expect("keygen");
    jwks.publish(jwks_doc(&[&early.public_jwk, &late.public_jwk]));
    let (key, alg) = mint::signing_key(late.private_pem.as_bytes(), None).expect("key");
    let spec = mint::TokenSpec {
        kid: "late".into(),
        issuer: "dev-registry".into(),
        audience: None,
        info_hash: swarmgate::bittorrent::InfoHash([6; 20]),
        ttl: None,
    };
    let token = mint::mint(&key, alg, &spec, swarmgate::gateway::layer::unix_now()).expect("mint");
    let client = Client::new(server.udp_addr.expect("udp")).await;
    let id = client.connect().await;
    let fetches = jwks.fetches();
    let url = format!("/announce?jwt={token}");
    let reply = client
        .announce(id, 6, 1, 0, &url_data(url.as_bytes(), 1))
        .await;
    assert!(
        matches!(reply, Reply::Announce { seeders: 1, .. }),
        "answered after the refetch"
    );
    assert_eq!(jwks.fetches(), fetches + 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_start_that_fails_half_way_leaves_no_udp_worker_behind() {
    // The admin port is taken, so start() fails after the UDP workers are running.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let udp_port = std::net::UdpSocket::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = loopback_config();
    config.admin.listen = taken.local_addr().expect("addr");
    config.udp.listen = SocketAddr::from(([127, 0, 0, 1], udp_port));
    let error = match swarmgate::server::start(config).await {
        Ok(_) => panic!("start should fail on a taken admin port"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("(admin)"), "{error}");
    // The workers notice within their 100 ms poll and release the socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while std::net::UdpSocket::bind(("127.0.0.1", udp_port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "UDP workers still hold the socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn instances_sharing_a_secret_accept_each_others_connection_ids() {
    // Several instances behind one address (DNS, a load balancer, a list of
    // announce URLs): a client may connect to one and announce to another.
    let shared = |secret: &str| {
        let mut config = loopback_config();
        config.udp.secret = secret.into();
        config
    };
    let first = start(shared("fleet-secret")).await;
    let second = start(shared("fleet-secret")).await;
    let stranger = start(shared("another-secret")).await;
    let at_first = Client::new(first.udp_addr.expect("udp")).await;
    let id = at_first.connect().await;
    // The same socket, now talking to the second instance with the first's id.
    let at_second = Client {
        tracker: second.udp_addr.expect("udp"),
        ..at_first
    };
    assert!(matches!(
        at_second.announce(id, 9, 1, 0, &[]).await,
        Reply::Announce { .. }
    ));
    let at_stranger = Client {
        tracker: stranger.udp_addr.expect("udp"),
        ..at_second
    };
    let refused = error_of(at_stranger.announce(id, 9, 1, 0, &[]).await);
    assert!(refused.contains("connection id"), "{refused}");
}

/// The default listeners are `[::]` and take IPv4 too: over one dual-stack
/// socket, IPv4 clients are answered in the IPv4 format and listed as IPv4
/// peers (not as IPv4-mapped IPv6 ones), IPv6 clients as IPv6 peers; the
/// HTTP listener likewise.
#[tokio::test]
async fn dual_stack_listeners_keep_each_clients_family() {
    let mut config = loopback_config();
    let defaults = swarmgate::config::Config::default();
    assert_eq!(defaults.udp.listen.ip(), std::net::Ipv6Addr::UNSPECIFIED);
    assert_eq!(defaults.http.listen.ip(), std::net::Ipv6Addr::UNSPECIFIED);
    config.udp.listen = "[::]:0".parse().expect("addr");
    config.http.listen = "[::]:0".parse().expect("addr");
    let server = start(config).await;
    let port = server.udp_addr.expect("udp enabled").port();
    let over_v4 = SocketAddr::from(([127, 0, 0, 1], port));
    let over_v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port));

    let seeder = Client::new(over_v4).await;
    let id = seeder.connect().await;
    let Reply::Announce { seeders, .. } = seeder.announce(id, 1, 1, 0, &[]).await else {
        panic!("announce")
    };
    assert_eq!(seeders, 1);
    let leecher = Client::new(over_v4).await;
    let id = leecher.connect().await;
    let Reply::Announce { peers, .. } = leecher.announce(id, 1, 2, 100, &[]).await else {
        panic!("announce")
    };
    assert_eq!(
        peers,
        vec![SocketAddr::from(([127, 0, 0, 1], seeder.port()))],
        "an IPv4 client is an IPv4 peer"
    );
    let six = Client::new(over_v6).await;
    let id = six.connect().await;
    let Reply::Announce {
        seeders, leechers, ..
    } = six.announce(id, 1, 3, 100, &[]).await
    else {
        panic!("announce")
    };
    assert_eq!(
        (seeders, leechers),
        (1, 2),
        "IPv6 clients reach the same swarm"
    );

    // HTTP on the same kind of listener: an IPv4 client listed as IPv4.
    let http = server.http_addr.expect("http enabled").port();
    let query = announce_query(2, 1, 7001, 0, "&compact=1");
    let (status, _) = get(
        SocketAddr::from(([127, 0, 0, 1], http)),
        &format!("/announce?{query}"),
    )
    .await;
    assert_eq!(status, 200);
    let query = announce_query(2, 2, 7002, 100, "&compact=1");
    let (status, body) = get(
        SocketAddr::from(([127, 0, 0, 1], http)),
        &format!("/announce?{query}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        compact_peers(&dict(&body)),
        vec![SocketAddr::from(([127, 0, 0, 1], 7001))],
        "the IPv4 seeder, in the IPv4 list"
    );
    let query = announce_query(2, 3, 7003, 100, "&compact=1");
    let (status, _) = get(
        SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, http)),
        &format!("/announce?{query}"),
    )
    .await;
    assert_eq!(status, 200, "IPv6 clients are served on the same listener");
    server.shutdown().await;
}
