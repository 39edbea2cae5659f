//! HTTP connection hygiene on the real binary: thousands of connections
//! trickling header bytes (slowloris) are cut off by the header timeout
//! while legitimate announces are answered, file descriptors and memory stay
//! bounded, and past `http.max_connections` connections are closed on accept.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");

/// A running binary, killed when dropped.
struct Tracker {
    child: Child,
    http: SocketAddr,
    admin: SocketAddr,
    /// Its configuration file, deleted with it.
    config: std::path::PathBuf,
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

impl Tracker {
    fn start(name: &str, http_section: &str) -> Self {
        let path = std::env::temp_dir().join(format!(
            "swarmgate-hygiene-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(
            &path,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n{http_section}\n[udp]\nenabled = false\n\
                 [admin]\nlisten = \"127.0.0.1:0\"\n[auth]\nmode = \"open\"\n"
            ),
        )
        .expect("write config");
        let mut child = Command::new(BIN)
            .env("SWARMGATE_STORE__SNAPSHOT_PATH", "")
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&path)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let lines = stderr_lines(&mut child);
        // Killed on drop from here on, whatever fails below.
        let mut tracker = Self {
            child,
            http: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: SocketAddr::from(([0, 0, 0, 0], 0)),
            config: path,
        };
        (tracker.http, tracker.admin) = wait_for(&lines, "naming the listeners", |line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("JSON log line");
            let fields = &value["fields"];
            Some((
                fields["http"].as_str()?.parse().ok()?,
                fields["admin"].as_str()?.parse().ok()?,
            ))
        });
        tracker
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("/proc/PID/fd")
            .count()
    }

    fn rss_kib(&self) -> u64 {
        rss_kib(&self.child.id().to_string())
    }
}

/// Opens a connection and sends the start of a request, then one more byte
/// every 100 ms; returns how long the server kept it open (None: still open
/// after `give_up`).
async fn trickle(http: SocketAddr, give_up: Duration) -> Option<Duration> {
    let began = Instant::now();
    let mut stream = TcpStream::connect(http).await.ok()?;
    let mut buf = [0u8; 256];
    if stream.write_all(b"GET /announce?info_hash=").await.is_err() {
        return Some(began.elapsed());
    }
    while began.elapsed() < give_up {
        tokio::select! {
            read = stream.read(&mut buf) => {
                // EOF, a reset or an error reply: the server is done with us.
                let _ = read;
                return Some(began.elapsed());
            }
            () = tokio::time::sleep(Duration::from_millis(100)) => {
                if stream.write_all(b"a").await.is_err() {
                    return Some(began.elapsed());
                }
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_clients_are_cut_off_while_announces_are_answered() {
    let tracker = Tracker::start(
        "slowloris",
        "header_read_timeout = \"1s\"\nidle_timeout = \"2s\"",
    );
    let (http, admin) = (tracker.http, tracker.admin);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    let fds_before = tracker.open_fds();
    let rss_before = tracker.rss_kib();

    // 3,000 slow clients, each trickling for at most 10 s.
    let attackers = 3000;
    let attack: Vec<_> = (0..attackers)
        .map(|_| tokio::spawn(trickle(http, Duration::from_secs(10))))
        .collect();

    // Meanwhile: announces on fresh connections, and the server's fds and memory.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let (mut latencies, mut peak_fds, mut peak_rss) = (Vec::new(), 0, 0);
    for peer in 0..40u8 {
        let began = Instant::now();
        let response = client
            .get(format!(
                "http://{http}/announce?{}",
                announce_query(1, peer, 6881, 10, "")
            ))
            .send()
            .await
            .expect("an announce is answered during the attack");
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.expect("body");
        assert!(failure(&body).is_none());
        latencies.push(began.elapsed());
        peak_fds = peak_fds.max(tracker.open_fds());
        peak_rss = peak_rss.max(tracker.rss_kib());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let mut held = Vec::new();
    for attacker in attack {
        held.push(
            attacker
                .await
                .expect("join")
                .expect("the server cut the slow client off within 10 s"),
        );
    }
    held.sort();
    latencies.sort();
    // Every slow connection is gone, and the descriptors with them.
    let deadline = Instant::now() + Duration::from_secs(10);
    while tracker.open_fds() > fds_before + 8 {
        assert!(
            Instant::now() < deadline,
            "{} fds open after the attack, {fds_before} before",
            tracker.open_fds()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "slowloris: {attackers} trickling connections held {:?} median, {:?} longest; \
         40 announces during the attack: p50 {:?}, max {:?}; server fds {fds_before} before, \
         {peak_fds} at peak, {} after; RSS {rss_before} KiB before, {peak_rss} KiB at peak",
        held[held.len() / 2],
        held[held.len() - 1],
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        tracker.open_fds(),
    );
    assert!(
        peak_fds <= fds_before + attackers + 64,
        "{peak_fds} fds for {attackers} connections"
    );
    assert!(
        peak_rss < rss_before + 64 * 1024,
        "RSS {rss_before} -> {peak_rss} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_connections_are_closed_and_counted() {
    let tracker = Tracker::start(
        "cap",
        "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\nmax_connections = 100",
    );
    let (http, admin) = (tracker.http, tracker.admin);
    let fds_before = tracker.open_fds();
    // 400 connections that never send a byte.
    let mut silent = Vec::new();
    for _ in 0..400 {
        silent.push(TcpStream::connect(http).await.expect("connect"));
    }
    // The server holds at most 100 of them; it closed the rest on accept.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape_metrics(admin).await;
        let refused = m
            .get(r#"swarmgate_limit_hits_total{limit="http_connections"}"#)
            .copied()
            .unwrap_or(0.0);
        if refused >= 300.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{refused} refused of 300 expected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fds = tracker.open_fds();
    assert!(
        fds <= fds_before + 100 + 8,
        "{fds} fds, {fds_before} before"
    );
    // The held ones reach the header timeout; then announces get through again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        let answered = client
            .get(format!(
                "http://{http}/announce?{}",
                announce_query(1, 1, 6881, 10, "")
            ))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if answered {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no announce answered within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
}

/// Sends one keep-alive announce on `stream` and reads its whole reply.
async fn announce_on(stream: &mut TcpStream, peer: u8) {
    let request = format!(
        "GET /announce?{} HTTP/1.1\r\nHost: tracker\r\n\r\n",
        announce_query(1, peer, 6881, 10, "")
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 1024];
    // The reply is small: read until its body (a bencoded dict) has ended.
    while !(reply.ends_with(b"e") && reply.windows(4).any(|w| w == b"\r\n\r\n")) {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before the reply: {}", reply.escape_ascii());
        reply.extend_from_slice(&buf[..n]);
    }
    assert!(
        reply.starts_with(b"HTTP/1.1 200"),
        "{}",
        reply.escape_ascii()
    );
}

#[tokio::test]
async fn keep_alive_waits_the_idle_timeout_not_the_header_timeout() {
    // Idle 30 s, headers 1 s: a connection idle for longer than the header
    // timeout still takes its next request.
    let tracker = Tracker::start(
        "idle-long",
        "header_read_timeout = \"1s\"\nidle_timeout = \"30s\"",
    );
    let mut stream = TcpStream::connect(tracker.http).await.expect("connect");
    announce_on(&mut stream, 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    announce_on(&mut stream, 2).await;

    // Idle 1 s: the server closes the connection after its reply.
    let tracker = Tracker::start(
        "idle-short",
        "header_read_timeout = \"30s\"\nidle_timeout = \"1s\"",
    );
    let mut stream = TcpStream::connect(tracker.http).await.expect("connect");
    announce_on(&mut stream, 1).await;
    let began = Instant::now();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
        .await
        .expect("closed by the idle timeout, long before 20 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(
        began.elapsed() >= Duration::from_millis(900),
        "{:?}",
        began.elapsed()
    );
}
