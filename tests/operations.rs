//! What operators rely on: `/metrics` counting what really happened, SIGHUP
//! reloads (good files applied, bad ones refused), JSON logs and
//! `SWARMGATE_*` environment overrides, all against real sockets.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    announce_query, dev_config, dict, failure, get, int, mint_dev, sample, scrape_metrics,
    stderr_lines, wait_for,
};
use tokio::net::UdpSocket;

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");

#[tokio::test]
async fn metrics_count_requests_rejections_cache_and_swarms() {
    let mut config = dev_config();
    config.announce.cleanup_interval = Duration::from_millis(100);
    let server = common::start(config).await;
    let http = server.http_addr.expect("http");
    let admin = server.admin_addr;
    let token = mint_dev("dev-es256", [7; 20], None);

    // Two good announces with one token (a miss, then a hit), one without a
    // token, one forged, one malformed, and a scrape.
    for peer in [1, 2] {
        let query = announce_query(7, peer, 6881, 1, &format!("&jwt={token}"));
        let (_, body) = get(http, &format!("/announce?{query}")).await;
        assert_eq!(failure(&body), None);
    }
    let (_, body) = get(
        http,
        &format!("/announce?{}", announce_query(7, 3, 1, 1, "")),
    )
    .await;
    assert!(failure(&body).is_some());
    // One signature character changed: still base64url, no longer the signature.
    let at = token.len() - 10;
    let swapped = if &token[at..=at] == "A" { "B" } else { "A" };
    let forged = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    let query = announce_query(7, 4, 1, 1, &format!("&jwt={forged}"));
    let (_, body) = get(http, &format!("/announce?{query}")).await;
    assert!(failure(&body).is_some());
    let (_, body) = get(http, "/announce?info_hash=short").await;
    assert!(failure(&body).is_some());
    let (_, body) = get(
        http,
        &format!("/scrape?info_hash={}&jwt={token}", common::escape(&[7; 20])),
    )
    .await;
    assert_eq!(failure(&body), None);

    // UDP: a connect, and a packet too short to be anything.
    let udp = server.udp_addr.expect("udp");
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut connect = 0x41727101980u64.to_be_bytes().to_vec();
    connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
    socket.send_to(&connect, udp).await.expect("send");
    let mut reply = [0u8; 64];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), socket.recv_from(&mut reply))
        .await
        .expect("connect reply in time")
        .expect("recv");
    assert_eq!(len, 16);
    socket.send_to(&[1, 2, 3], udp).await.expect("send");

    // Let a sweep run, and the UDP worker count its packets.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = scrape_metrics(admin).await;
    let http_count = |kind: &str, result: &str| {
        sample(
            &m,
            &format!(
                r#"swarmgate_requests_total{{protocol="http",kind="{kind}",result="{result}"}}"#
            ),
        )
    };
    assert_eq!(http_count("announce", "ok"), 2.0);
    assert_eq!(http_count("announce", "rejected"), 2.0);
    assert_eq!(http_count("announce", "error"), 1.0);
    assert_eq!(http_count("scrape", "ok"), 1.0);
    assert_eq!(
        sample(
            &m,
            r#"swarmgate_requests_total{protocol="udp",kind="connect",result="ok"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"swarmgate_requests_total{protocol="udp",kind="unknown",result="error"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"swarmgate_request_duration_seconds_count{protocol="http"}"#
        ),
        6.0
    );
    assert_eq!(
        sample(&m, r#"swarmgate_auth_rejections_total{reason="missing"}"#),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"swarmgate_auth_rejections_total{reason="bad_signature"}"#
        ),
        1.0
    );
    // The first use of the token misses, the announce and scrape after it hit.
    assert_eq!(sample(&m, "swarmgate_token_cache_hits_total"), 2.0);
    assert_eq!(sample(&m, "swarmgate_token_cache_size"), 1.0);
    assert_eq!(
        sample(&m, "swarmgate_jwks_keys"),
        3.0,
        "the three development keys"
    );
    assert_eq!(sample(&m, "swarmgate_swarms"), 1.0);
    assert_eq!(sample(&m, r#"swarmgate_peers{role="leecher"}"#), 2.0);
    assert_eq!(sample(&m, r#"swarmgate_peers{role="seeder"}"#), 0.0);
    // Peer 2 was handed peer 1; both sit in 127.0.0.1's /24.
    assert_eq!(
        sample(&m, r#"swarmgate_peers_returned_total{tier="subnet"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"swarmgate_peers_returned_total{tier="other"}"#),
        0.0
    );
    assert!(sample(&m, "swarmgate_cleanup_duration_seconds_count") >= 1.0);

    let (status, _) = get(admin, "/readyz").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

/// Sends `signal` (e.g. `-HUP`) to the child.
fn send(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[test]
fn sighup_reloads_good_files_refuses_bad_ones_and_logs_json() {
    let dir = std::env::temp_dir().join(format!("swarmgate-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("swarmgate.toml");
    let listeners = "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nlisten = \"127.0.0.1:0\"\n\
                     [admin]\nlisten = \"127.0.0.1:0\"\n";
    let write = |announce: &str, auth: &str| {
        std::fs::write(
            &file,
            format!("{listeners}[announce]\n{announce}\n[auth]\n{auth}\n"),
        )
        .expect("write config");
    };
    write("interval = \"60s\"", "mode = \"open\"");

    let mut child = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWARMGATE_STORE__SNAPSHOT_PATH", "")
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&file)
        .env("SWARMGATE_ANNOUNCE__MIN_INTERVAL", "7s")
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let lines = stderr_lines(&mut child);
    // Every line is one JSON object; the startup line carries the addresses.
    let (http, admin): (SocketAddr, SocketAddr) =
        wait_for(&lines, "naming the listeners", |line| {
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
            let fields = &value["fields"];
            Some((
                fields["http"].as_str()?.parse().ok()?,
                fields["admin"].as_str()?.parse().ok()?,
            ))
        });

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let announce = |peer: u8| {
        runtime.block_on(async {
            let (_, body) = get(
                http,
                &format!("/announce?{}", announce_query(5, peer, 1, 1, "")),
            )
            .await;
            body
        })
    };
    let body = announce(1);
    let reply = dict(&body);
    assert_eq!(int(&reply, "interval"), 60);
    assert_eq!(
        int(&reply, "min interval"),
        7,
        "the environment overrides the file"
    );

    // A good file: the new interval is served, swarms survive.
    write("interval = \"90s\"", "mode = \"open\"");
    send(&child, "-HUP");
    wait_for(&lines, "confirming the reload", |line| {
        line.contains("configuration reloaded").then_some(())
    });
    let reply = dict(&announce(2));
    assert_eq!(int(&reply, "interval"), 90);
    assert_eq!(int(&reply, "incomplete"), 2, "swarm kept across the reload");

    // A bad file (min_interval, from the environment, above interval): refused.
    write("interval = \"5s\"", "mode = \"open\"");
    send(&child, "-HUP");
    let error = wait_for(&lines, "refusing the bad file", |line| {
        line.contains("NOT reloaded").then(|| line.to_owned())
    });
    assert!(error.contains("announce.min_interval"), "{error}");
    assert_eq!(
        int(&dict(&announce(3)), "interval"),
        90,
        "old configuration stays"
    );

    // Auth can be switched on live: announces now need a token.
    write("interval = \"90s\"", "mode = \"jwt\"");
    send(&child, "-HUP");
    wait_for(&lines, "confirming the auth reload", |line| {
        line.contains("configuration reloaded").then_some(())
    });
    let refused = failure(&announce(4)).expect("a token is required now");
    assert!(refused.contains("token"), "{refused}");

    let m = runtime.block_on(scrape_metrics(admin));
    assert_eq!(
        sample(&m, r#"swarmgate_config_reloads_total{result="ok"}"#),
        2.0
    );
    assert_eq!(
        sample(&m, r#"swarmgate_config_reloads_total{result="error"}"#),
        1.0
    );
    assert_eq!(
        sample(&m, r#"swarmgate_auth_rejections_total{reason="missing"}"#),
        1.0
    );

    send(&child, "-TERM");
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The signal handlers are in place before the tracker says it serves: a
/// SIGHUP sent the moment the listeners line appears is a reload, never the
/// default action (which kills the process, or is lost where the parent
/// ignores SIGHUP). Five starts, each signalled with no delay.
#[tokio::test]
async fn a_sighup_right_after_the_serving_line_is_a_reload() {
    let dir = common::temp_dir("sighup-at-start");
    for attempt in 0..5 {
        let tracker = common::TrackerProcess::start(&dir, &format!("at-start-{attempt}"), "");
        tracker.signal(libc::SIGHUP);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let metrics = scrape_metrics(tracker.admin).await;
            // The series exists only once a reload was counted.
            if metrics.get("swarmgate_config_reloads_total{result=\"ok\"}") == Some(&1.0) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "attempt {attempt}: the reload was never counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(tracker.stop().success(), "attempt {attempt}: a clean stop");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
