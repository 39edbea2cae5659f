//! The README's five-minute walk-through, run exactly as written, with a
//! real Prometheus watching it.
//!
//! Every `sh` block between the README's walk-through markers runs in one
//! bash, with this build's `swarmgate` first on the `PATH` (the block before
//! the markers builds it, which the suite has done already). So the README
//! cannot drift from what works: a renamed key, a changed default or a
//! missing step fails here.
//!
//! Meanwhile a real Prometheus (Debian's `prometheus` package) scrapes the
//! tracker, the bridge and both agents every second, with
//! `deploy/prometheus/alerts.yml` loaded. After the pulls, every panel of
//! `deploy/grafana/dashboards/swarmgate.json` is evaluated through its query
//! API: each expression must be accepted and at least 90% of the panels must
//! return data. Every rule must evaluate cleanly, and `promtool` checks and
//! unit-tests the rules first.
//!
//! The walk-through uses the default ports on 127.0.0.1 (5000, 6969, 6970,
//! 6980, 6981, 6990, 6991, 7990, 7991, 7881 and 6881); the test says which
//! one is taken if another program holds it. `SWARMGATE_SKIP_INTEROP=1`
//! skips it.

mod common;

use std::io::Read;
use std::net::{TcpListener, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const START: &str = "<!-- walkthrough: ";
const END: &str = "<!-- end of walkthrough -->";
/// The admin listeners the walk-through starts: tracker, bridge, node 1, node 2.
const TARGETS: [&str; 4] = [
    "127.0.0.1:6970",
    "127.0.0.1:6981",
    "127.0.0.1:6991",
    "127.0.0.1:7991",
];

/// Every `sh` block between the markers, in order, as one script.
fn walkthrough_script(readme: &str) -> String {
    let start = readme
        .find(START)
        .expect("the README's walk-through start marker");
    let end = readme
        .find(END)
        .expect("the README's walk-through end marker");
    assert!(start < end, "walk-through markers out of order");
    let mut script = String::new();
    let mut rest = &readme[start..end];
    while let Some(open) = rest.find("```sh\n") {
        let body = &rest[open + 6..];
        let close = body.find("\n```").expect("a closed sh block");
        script.push_str(&body[..=close]);
        rest = &body[close + 4..];
    }
    assert!(
        script.lines().count() > 20,
        "the walk-through has its blocks"
    );
    script
}

/// Fails, naming the port, when something else listens where the
/// walk-through will.
fn assert_ports_free() {
    for port in [5000, 6969, 6970, 6980, 6981, 6990, 6991, 7990, 7991, 7881] {
        TcpListener::bind(("127.0.0.1", port)).unwrap_or_else(|error| {
            panic!("127.0.0.1:{port} is taken ({error}); the README's walk-through needs it")
        });
    }
    TcpListener::bind(("0.0.0.0", 6881))
        .unwrap_or_else(|error| panic!("port 6881 is taken ({error}); node 1's agent needs it"));
    UdpSocket::bind(("127.0.0.1", 6969))
        .unwrap_or_else(|error| panic!("UDP 127.0.0.1:6969 is taken ({error})"));
}

/// Kills a process group on drop, so nothing the walk-through started
/// outlives the test, pass or fail.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        let pid = self.0.id() as i32;
        // SAFETY: kill(2) on a process group this test created.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            // SAFETY: as above; signal 0 only asks whether the group lives.
            if unsafe { libc::kill(-pid, 0) } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

fn run_ok(command: &mut Command, what: &str) {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what}: {error} (scripts/test installs prometheus)"));
    assert!(
        output.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A Prometheus scraping the walk-through's admin listeners every second,
/// with swarmgate's rules, in its own process group.
fn start_prometheus(dir: &Path) -> (Group, String) {
    let port = common::registry::free_port();
    let targets = TARGETS.map(|t| format!("\"{t}\"")).join(", ");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {REPO}/deploy/prometheus/alerts.yml\n\
             scrape_configs:\n  - job_name: swarmgate\n    static_configs:\n      - targets: [{targets}]\n"
        ),
    )
    .expect("prometheus.yml");
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("prometheus runs (scripts/test installs it)");
    (Group(child), format!("http://127.0.0.1:{port}"))
}

/// An instant query; the API's whole answer.
async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> serde_json::Value {
    client
        .get(
            reqwest::Url::parse_with_params(
                &format!("{prometheus}/api/v1/query"),
                &[("query", expr)],
            )
            .expect("query URL"),
        )
        .send()
        .await
        .expect("prometheus answers")
        .json()
        .await
        .expect("JSON")
}

/// Polls `expr` until it returns a sample, for at most 60 s.
async fn until_data(client: &reqwest::Client, prometheus: &str, expr: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = query(client, prometheus, expr).await;
        if answer["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned data for {expr}: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The walk-through's stdout lines `swarmgate_agent_blob_bytes_total{source="S"} N`,
/// node 1's three then node 2's three.
fn blob_bytes(stdout: &str) -> Vec<(String, f64)> {
    stdout
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("swarmgate_agent_blob_bytes_total{source=\"")?;
            let (source, value) = rest.split_once("\"} ")?;
            Some((source.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn from(lines: &[(String, f64)], source: &str) -> f64 {
    lines
        .iter()
        .find(|(s, _)| s == source)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {source} line in {lines:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs_as_written_and_prometheus_evaluates_every_panel_and_rule() {
    if common::skip_interop() {
        return;
    }
    let readme = std::fs::read_to_string(format!("{REPO}/README.md")).expect("README");
    let script = walkthrough_script(&readme);
    assert_ports_free();
    let dir: PathBuf = common::temp_dir("walkthrough");

    // The rules first: valid, and each alert's unit tests pass.
    run_ok(
        Command::new("promtool")
            .args(["check", "rules"])
            .arg(format!("{REPO}/deploy/prometheus/alerts.yml")),
        "promtool check rules",
    );
    run_ok(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yml"])
            .current_dir(format!("{REPO}/deploy/prometheus")),
        "promtool test rules",
    );
    let (_prometheus, prometheus) = start_prometheus(&dir);

    // The walk-through, with this build's binary on the PATH and its
    // scratch directory (mktemp -d) under the test's.
    let bin = Path::new(env!("CARGO_BIN_EXE_swarmgate"))
        .parent()
        .expect("bin dir")
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(format!("set -eo pipefail\n{script}"))
        .env("PATH", path)
        .env("TMPDIR", &dir)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut walk = Group(bash.spawn().expect("bash"));
    let (mut stdout, mut stderr) = (
        walk.0.stdout.take().expect("stdout"),
        walk.0.stderr.take().expect("stderr"),
    );
    // Read both pipes as the script runs; the background processes keep
    // them open, so the script's end is its exit, not the pipes' EOF.
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = walk.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the walk-through did not finish within 300 s; logs in {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "the README's walk-through failed ({status}); its logs (registry.log, bridge.log, \
         tracker.log, node1.log, node2.log) are in {}/tmp.*",
        dir.display()
    );

    // What the README says the last step prints, checked by the test on
    // the agents too: node 1 from the bridge, node 2 from node 1.
    let client = reqwest::Client::new();
    let node2 = common::scrape_metrics("127.0.0.1:7991".parse().expect("addr")).await;
    let peers = common::sample(&node2, "swarmgate_agent_blob_bytes_total{source=\"peers\"}");
    assert!(
        peers > 8.0 * 1024.0 * 1024.0,
        "node 2's layer from node 1: {peers}"
    );
    assert_eq!(
        common::sample(
            &node2,
            "swarmgate_agent_blob_bytes_total{source=\"bridge\"}"
        ),
        0.0
    );
    let node1 = common::scrape_metrics("127.0.0.1:6991".parse().expect("addr")).await;
    assert!(
        common::sample(
            &node1,
            "swarmgate_agent_blob_bytes_total{source=\"bridge\"}"
        ) > 8e6,
        "node 1 was first: the web seed served it"
    );

    // The tracker's startup log fits its configuration: it names the JWKS
    // URL and the kid it loaded from the bridge, and gives no hint to mint
    // tokens with a private key it does not have.
    let jwks: serde_json::Value = client
        .get("http://127.0.0.1:6980/keys/services/swarmgate/keys")
        .send()
        .await
        .expect("the bridge's JWKS")
        .json()
        .await
        .expect("JSON");
    let kid = jwks["keys"][0]["kid"].as_str().expect("a kid").to_owned();
    let scratch = std::fs::read_dir(&dir)
        .expect("test dir")
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.join("tracker.log").exists())
        .expect("the walk-through's scratch directory");
    let log = std::fs::read_to_string(scratch.join("tracker.log")).expect("tracker.log");
    let loaded = log
        .lines()
        .find(|line| line.contains("JWKS loaded"))
        .unwrap_or_else(|| panic!("no `JWKS loaded` line in tracker.log:\n{log}"));
    assert!(
        loaded.contains("http://127.0.0.1:6980/keys/services/swarmgate/keys")
            && loaded.contains(&kid),
        "{loaded}"
    );
    assert!(!log.contains("mint a token"), "{log}");

    // Two failures the dashboard has panels for, caused here: a forged
    // token at the tracker and a missing blob at the bridge.
    let forged = client
        .get("http://127.0.0.1:6969/announce?jwt=forged&info_hash=%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA&peer_id=-XX0001-000000000000&port=6881&uploaded=0&downloaded=0&left=0")
        .send()
        .await
        .expect("tracker answers");
    assert!(forged.status().is_success(), "a bencoded failure reason");
    let missing = client
        .get(format!(
            "http://127.0.0.1:6980/c1/torrent/team/app/blobs/sha256:{}",
            "0".repeat(64)
        ))
        .basic_auth("alice", Some("s3cret"))
        .send()
        .await
        .expect("bridge answers");
    assert_eq!(missing.status(), 404);

    // Prometheus has seen all of it (the pulls, the refusal and the 404),
    // twice: a rate needs two samples of a series, and these series were
    // the last to appear.
    for expr in [
        "swarmgate_agent_pull_duration_seconds_count{instance=\"127.0.0.1:7991\"} > 0",
        "rate(swarmgate_auth_rejections_total[1m])",
        "rate(swarmgate_bridge_upstream_errors_total[1m])",
    ] {
        until_data(&client, &prometheus, expr).await;
    }

    // Every panel: each expression accepted, and the share with data.
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/deploy/grafana/dashboards/swarmgate.json"))
            .expect("dashboard"),
    )
    .expect("dashboard JSON");
    let panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .filter(|p| p["type"] != "row")
        .collect();
    let mut without_data = Vec::new();
    for panel in &panels {
        let title = panel["title"].as_str().expect("title");
        let mut data = false;
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$__rate_interval", "1m");
            let answer = query(&client, &prometheus, &expr).await;
            assert_eq!(
                answer["status"], "success",
                "panel {title:?}: Prometheus refused {expr}: {answer}"
            );
            data |= answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
        }
        if !data {
            without_data.push(title);
        }
    }
    let with_data = panels.len() - without_data.len();
    eprintln!(
        "dashboard: {with_data} of {} panels returned data; without: {without_data:?}",
        panels.len()
    );
    assert!(
        with_data * 10 >= panels.len() * 9,
        "only {with_data} of {} panels returned data; without: {without_data:?}",
        panels.len()
    );

    // Every rule evaluated without error, and none fires on this healthy run.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules: serde_json::Value = client
            .get(format!("{prometheus}/api/v1/rules"))
            .send()
            .await
            .expect("rules")
            .json()
            .await
            .expect("JSON");
        let all: Vec<&serde_json::Value> = rules["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .flat_map(|g| g["rules"].as_array().expect("rules").iter())
            .collect();
        assert_eq!(
            all.len(),
            10,
            "alerts.yml's 2 recording and 8 alerting rules"
        );
        for rule in &all {
            assert_ne!(rule["health"], "err", "rule failed to evaluate: {rule}");
        }
        if all.iter().all(|rule| rule["health"] == "ok") {
            let firing: Vec<&&serde_json::Value> = all
                .iter()
                .filter(|rule| rule["state"] == "firing")
                .collect();
            assert!(
                firing.is_empty(),
                "alerts firing on a healthy run: {firing:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "rules never evaluated: {rules}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    drop(walk);
    let stdout = out.join().expect("stdout");
    let _ = err.join();
    // The walk-through's own output, as the README describes it.
    let lines = blob_bytes(&stdout);
    assert_eq!(lines.len(), 6, "three lines per node: {stdout}");
    let (first, second) = lines.split_at(3);
    assert!(from(first, "bridge") > 8e6, "{stdout}");
    assert!(from(second, "peers") > 8e6, "{stdout}");
    assert_eq!(from(second, "bridge"), 0.0, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}
