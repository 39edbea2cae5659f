//! The HTTP tracker over real sockets: a server on 127.0.0.1 port 0, real HTTP requests.

mod common;

use common::*;
use serde_bencode::value::Value;
use std::net::SocketAddr;

#[tokio::test]
async fn seeder_and_leecher_find_each_other() {
    let server = start(loopback_config()).await;
    let http = server.http_addr.expect("http enabled");

    let (status, body) = get(
        http,
        &format!(
            "/announce?{}",
            announce_query(1, 1, 7001, 0, "&event=started")
        ),
    )
    .await;
    assert_eq!(status, 200);
    let seeder_reply = dict(&body);
    assert_eq!(
        (
            int(&seeder_reply, "complete"),
            int(&seeder_reply, "incomplete")
        ),
        (1, 0)
    );
    assert_eq!(int(&seeder_reply, "interval"), 60);
    assert_eq!(int(&seeder_reply, "min interval"), 30);
    assert!(
        compact_peers(&seeder_reply).is_empty(),
        "alone in the swarm"
    );

    let (_, body) = get(
        http,
        &format!(
            "/announce?{}",
            announce_query(1, 2, 7002, 500, "&event=started")
        ),
    )
    .await;
    let leecher_reply = dict(&body);
    assert_eq!(
        (
            int(&leecher_reply, "complete"),
            int(&leecher_reply, "incomplete")
        ),
        (1, 1)
    );
    assert_eq!(
        compact_peers(&leecher_reply),
        vec!["127.0.0.1:7001".parse::<SocketAddr>().expect("addr")]
    );

    let (_, body) = get(
        http,
        &format!("/announce?{}", announce_query(1, 1, 7001, 0, "")),
    )
    .await;
    assert_eq!(
        compact_peers(&dict(&body)),
        vec!["127.0.0.1:7002".parse::<SocketAddr>().expect("addr")]
    );

    // A leecher that finishes counts one download; a stop leaves the swarm.
    get(
        http,
        &format!(
            "/announce?{}",
            announce_query(1, 2, 7002, 0, "&event=completed")
        ),
    )
    .await;
    let (_, body) = get(http, &format!("/scrape?info_hash={}", escape(&[1; 20]))).await;
    let files = dict(&body);
    let Some(Value::Dict(files)) = files.get(&b"files"[..]) else {
        panic!("files dict")
    };
    let Some(Value::Dict(counts)) = files.get(&[1u8; 20][..]) else {
        panic!("entry for the torrent")
    };
    assert_eq!(
        (
            int(counts, "complete"),
            int(counts, "incomplete"),
            int(counts, "downloaded")
        ),
        (2, 0, 1)
    );

    let (_, body) = get(
        http,
        &format!(
            "/announce?{}",
            announce_query(1, 2, 7002, 0, "&event=stopped")
        ),
    )
    .await;
    assert_eq!(int(&dict(&body), "complete"), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn non_compact_replies_carry_peer_ids_unless_told_not_to() {
    let server = start(loopback_config()).await;
    let http = server.http_addr.expect("http enabled");
    get(
        http,
        &format!("/announce?{}", announce_query(2, 1, 7001, 0, "")),
    )
    .await;

    for (extra, want_id) in [("&compact=0", true), ("&compact=0&no_peer_id=1", false)] {
        let (_, body) = get(
            http,
            &format!("/announce?{}", announce_query(2, 9, 7009, 10, extra)),
        )
        .await;
        let reply = dict(&body);
        let Some(Value::List(peers)) = reply.get(&b"peers"[..]) else {
            panic!("a peer list for {extra}")
        };
        assert_eq!(peers.len(), 1);
        let Value::Dict(peer) = &peers[0] else {
            panic!("peer dict")
        };
        assert_eq!(bytes(peer, "ip"), b"127.0.0.1");
        assert_eq!(int(peer, "port"), 7001);
        assert_eq!(peer.contains_key(&b"peer id"[..]), want_id, "{extra}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_a_failure_reason_and_the_next_one_is_served() {
    let server = start(loopback_config()).await;
    let http = server.http_addr.expect("http enabled");
    let good = announce_query(3, 1, 7001, 0, "");
    let long = "a".repeat(4000);
    let cases = [
        ("/announce".to_owned(), "missing info_hash"),
        (
            "/announce?info_hash=%ZZ".to_owned(),
            "invalid info_hash: exactly 20 bytes, percent-encoded",
        ),
        (
            format!("/announce?{}", good.replace("port=7001", "port=0")),
            "invalid port: a number from 1 to 65535",
        ),
        (
            format!("/announce?{}", good.replace("left=0", "left=-5")),
            "invalid left: a whole number of bytes",
        ),
        (
            format!("/announce?{good}&event=bogus"),
            "invalid event: started, completed, stopped, paused or empty",
        ),
        (
            format!("/announce?{good}&numwant={long}"),
            "invalid numwant: a whole number",
        ),
        (
            "/scrape".to_owned(),
            "full scrape is not supported: name one or more info_hash values",
        ),
        (
            format!(
                "/scrape?{}",
                vec![format!("info_hash={}", escape(&[4; 20])); 51].join("&")
            ),
            "too many info_hash values in one scrape (at most 50)",
        ),
    ];
    for (path, reason) in cases {
        let (status, body) = get(http, &path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(failure(&body).as_deref(), Some(reason), "{path}");
        let (status, body) = get(http, &format!("/announce?{good}")).await;
        assert_eq!(
            (status, failure(&body)),
            (200, None),
            "served normally after {path}"
        );
    }
    server.shutdown().await;
}

#[tokio::test]
async fn scrape_answers_repeated_and_unknown_infohashes() {
    let server = start(loopback_config()).await;
    let http = server.http_addr.expect("http enabled");
    get(
        http,
        &format!("/announce?{}", announce_query(5, 1, 7001, 0, "")),
    )
    .await;
    let query = format!(
        "info_hash={}&info_hash={}&info_hash={}",
        escape(&[5; 20]),
        escape(&[6; 20]),
        escape(&[5; 20])
    );
    let (_, body) = get(http, &format!("/scrape?{query}")).await;
    let reply = dict(&body);
    let Some(Value::Dict(files)) = reply.get(&b"files"[..]) else {
        panic!("files")
    };
    assert_eq!(files.len(), 2);
    let Some(Value::Dict(known)) = files.get(&[5u8; 20][..]) else {
        panic!("known")
    };
    let Some(Value::Dict(unknown)) = files.get(&[6u8; 20][..]) else {
        panic!("unknown")
    };
    assert_eq!(int(known, "complete"), 1);
    assert_eq!(
        (int(unknown, "complete"), int(unknown, "incomplete")),
        (0, 0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn forwarded_for_is_believed_only_from_trusted_proxies() {
    let mut config = loopback_config();
    config.http.trusted_proxies = vec!["127.0.0.1/32".parse().expect("net")];
    let trusting = start(config).await;
    let untrusting = start(loopback_config()).await;

    for (server, expected) in [
        (&trusting, "203.0.113.5:7001"),
        (&untrusting, "127.0.0.1:7001"),
    ] {
        let http = server.http_addr.expect("http");
        let headers = [
            ("x-forwarded-for", "198.51.100.66, 203.0.113.5"),
            ("x-forwarded-for", "127.0.0.1"),
        ];
        get_with(
            http,
            &format!("/announce?{}", announce_query(7, 1, 7001, 0, "")),
            &headers,
        )
        .await;
        let (_, body) = get(
            http,
            &format!("/announce?{}", announce_query(7, 2, 7002, 9, "")),
        )
        .await;
        assert_eq!(
            compact_peers(&dict(&body)),
            vec![expected.parse::<SocketAddr>().expect("addr")]
        );
    }
    trusting.shutdown().await;
    untrusting.shutdown().await;
}

#[tokio::test]
async fn health_endpoint_answers() {
    let server = start(loopback_config()).await;
    let (status, body) = get(server.admin_addr, "/healthz").await;
    assert_eq!((status, body.as_slice()), (200, &b"ok\n"[..]));
    server.shutdown().await;
}
