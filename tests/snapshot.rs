//! Swarms across restarts, with the real binary: a SIGTERM and a restart
//! keep the peers and their counts; a `kill -9` loses at most what came after
//! the last snapshot; an unusable snapshot is moved aside and the tracker
//! starts and serves. Every wait is on a state (a log line, a metric), never
//! a window of time.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// The tracker binary in open mode with its snapshot at `snapshot`.
struct Tracker;

impl Tracker {
    fn start(dir: &Path, snapshot: &Path, interval: &str) -> TrackerProcess {
        TrackerProcess::start(
            dir,
            "swarmgate",
            &format!(
                "[store]\nsnapshot_path = \"{}\"\nsnapshot_interval = \"{interval}\"\n",
                snapshot.display()
            ),
        )
    }
}

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join("state").join("swarmgate-snapshot.bin")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_after_sigterm_answers_with_the_old_peers_and_counts() {
    let dir = temp_dir("snapshot-restart");
    std::fs::create_dir_all(dir.join("state")).expect("dir");
    let snapshot = snapshot_path(&dir);
    let tracker = Tracker::start(&dir, &snapshot, "1h");
    tracker.logged("no snapshot yet");
    tracker.announce(1, 1, 0).await;
    tracker.announce(1, 2, 0).await;
    tracker.announce(1, 3, 500).await;
    tracker.announce(2, 4, 500).await;
    let status = tracker.stop();
    assert!(status.success(), "{status}");
    assert!(snapshot.exists(), "written at SIGTERM");

    let tracker = Tracker::start(&dir, &snapshot, "1h");
    let restored = tracker.logged("restored");
    let fields = &restored["fields"];
    assert_eq!(
        (fields["swarms"].as_u64(), fields["peers"].as_u64()),
        (Some(2), Some(4))
    );
    // A new leecher's first announce: the three old peers, the right counts.
    let (complete, incomplete, peers) = tracker.announce(1, 9, 500).await;
    assert_eq!((complete, incomplete), (2, 2));
    let mut ports: Vec<u16> = peers.iter().map(|p| p.port()).collect();
    ports.sort_unstable();
    assert_eq!(ports, [7001, 7002, 7003]);
    let (complete, incomplete, peers) = tracker.announce(2, 10, 500).await;
    assert_eq!((complete, incomplete, peers.len()), (0, 2, 1));
    assert!(tracker.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_at_most_what_came_after_the_last_snapshot() {
    let dir = temp_dir("snapshot-kill");
    std::fs::create_dir_all(dir.join("state")).expect("dir");
    let snapshot = snapshot_path(&dir);
    let tracker = Tracker::start(&dir, &snapshot, "200ms");
    // Both results are exported from the start, so that an alert on
    // `increase(...{result="error"})` sees a first failure.
    let metrics = scrape_metrics(tracker.admin).await;
    assert_eq!(
        metrics.get("swarmgate_snapshot_writes_total{result=\"error\"}"),
        Some(&0.0)
    );
    assert!(metrics.contains_key("swarmgate_snapshot_writes_total{result=\"ok\"}"));
    for peer in 1..=5 {
        tracker.announce(3, peer, u64::from(peer % 2)).await;
    }
    // Wait for a snapshot that holds all five: the state, not a time.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = scrape_metrics(tracker.admin).await;
        if metrics.get("swarmgate_snapshot_peers").copied() == Some(5.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshot with five peers");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracker.signal(libc::SIGKILL);
    drop(tracker);

    let tracker = Tracker::start(&dir, &snapshot, "200ms");
    let (complete, incomplete, peers) = tracker.announce(3, 20, 500).await;
    // Peers 2 and 4 seed; 1, 3 and 5 leech, as does the newcomer.
    assert_eq!((complete, incomplete, peers.len()), (2, 4, 5));
    drop(tracker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_snapshot_is_moved_aside_and_the_tracker_serves() {
    let dir = temp_dir("snapshot-corrupt");
    std::fs::create_dir_all(dir.join("state")).expect("dir");
    let snapshot = snapshot_path(&dir);
    for (case, bytes) in [
        ("truncated", b"SGSNAP\r\n\x01\x00".to_vec()),
        (
            "foreign",
            b"<html>not a snapshot, somebody's web page</html>".repeat(3),
        ),
        ("newer", {
            let mut newer = b"SGSNAP\r\n".to_vec();
            newer.extend_from_slice(&9u32.to_le_bytes());
            newer.extend_from_slice(&[0; 100]);
            newer
        }),
        ("corrupt", {
            let mut corrupt = b"SGSNAP\r\n".to_vec();
            corrupt.extend_from_slice(&1u32.to_le_bytes());
            corrupt.extend_from_slice(&[0x5a; 100]);
            corrupt
        }),
    ] {
        std::fs::write(&snapshot, &bytes).expect("write");
        let tracker = Tracker::start(&dir, &snapshot, "1h");
        let logged = tracker.logged("cannot be used");
        let text = |value: &serde_json::Value| value.as_str().unwrap_or("").to_owned();
        let (level, file, moved_to) = (
            text(&logged["level"]),
            text(&logged["fields"]["file"]),
            text(&logged["fields"]["moved_to"]),
        );
        assert_eq!(level, "ERROR", "{case}");
        assert_eq!(file, snapshot.display().to_string(), "{case}");
        assert_eq!(
            std::fs::read(&moved_to).expect("kept aside"),
            bytes,
            "{case}"
        );
        std::fs::remove_file(&moved_to).expect("clean");
        // It serves, and the next snapshot is a good one.
        let (complete, _, _) = tracker.announce(4, 1, 0).await;
        assert_eq!(complete, 1, "{case}");
        let metrics = scrape_metrics(tracker.admin).await;
        assert_eq!(
            sample(
                &metrics,
                "swarmgate_snapshot_loads_total{result=\"set_aside\"}"
            ),
            1.0
        );
        assert!(tracker.stop().success(), "{case}");
        let written = std::fs::read(&snapshot).expect("written at SIGTERM");
        assert!(
            swarmgate::store::snapshot::decode(&written).is_ok(),
            "{case}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One snapshot file, one owner: a second instance on the same file refuses
/// to start, naming the file and the setting, while the first runs; once the
/// first is gone, by SIGTERM or by `kill -9` (the kernel drops the lock with
/// the process, so no stale lock file blocks a restart), the next starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_instance_on_the_same_snapshot_refuses_to_start() {
    let dir = temp_dir("snapshot-owner");
    std::fs::create_dir_all(dir.join("state")).expect("dir");
    let snapshot = snapshot_path(&dir);
    let first = Tracker::start(&dir, &snapshot, "1h");
    first.announce(1, 1, 0).await;

    let config = dir.join("second.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [auth]\nmode = \"open\"\n[store]\nsnapshot_path = \"{}\"\n",
            snapshot.display()
        ),
    )
    .expect("config");
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_swarmgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    // It should stop at once; one that serves instead is killed (the bound
    // only matters when the test fails).
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = second.try_wait().expect("waits") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut said = String::new();
    use std::io::Read as _;
    if let Some(mut stderr) = second.stderr.take() {
        let _ = stderr.read_to_string(&mut said);
    }
    assert!(
        status.is_some_and(|status| !status.success()),
        "the second instance started: {said}"
    );
    assert!(
        said.contains("store.snapshot_path") && said.contains("swarmgate-snapshot.bin"),
        "{said}"
    );
    // The first was not disturbed: it answers, and its peer is still there.
    let (complete, _, _) = first.announce(1, 2, 500).await;
    assert_eq!(complete, 1);

    // Gone by SIGTERM: the next instance takes the file (and its peers).
    assert!(first.stop().success());
    let next = Tracker::start(&dir, &snapshot, "1h");
    next.logged("restored");
    // Gone by kill -9: the same.
    next.signal(libc::SIGKILL);
    drop(next);
    let last = Tracker::start(&dir, &snapshot, "1h");
    let (complete, _, _) = last.announce(1, 3, 500).await;
    assert_eq!(complete, 1, "the snapshot written at SIGTERM, read again");
    assert!(last.stop().success());
    let _ = std::fs::remove_dir_all(&dir);
}
