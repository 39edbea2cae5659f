//! The tracker binary as a child process: started from a TOML file in a
//! test's directory, its listeners read from its log, stopped by signal.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");

/// The tracker binary with HTTP and admin on free loopback ports, UDP off,
/// open mode, and whatever else `extra` says (TOML sections).
pub struct TrackerProcess {
    child: Child,
    /// The HTTP frontend.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// What it logged before it served.
    early: Vec<String>,
    /// Kept so its stderr stays drained (a closed pipe would fail its writes).
    _lines: std::sync::mpsc::Receiver<String>,
}

impl TrackerProcess {
    /// Writes `DIR/NAME.toml` and starts the binary on it; returns once it serves.
    pub fn start(dir: &Path, name: &str, extra: &str) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
                 [auth]\nmode = \"open\"\n{extra}"
            ),
        )
        .expect("config");
        let mut child = Command::new(BIN)
            .args(["serve", "--log-format", "json", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let lines = stderr_lines(&mut child);
        let early = std::cell::RefCell::new(Vec::new());
        let (http, admin) = wait_for(&lines, "naming the listeners", |line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &value["fields"];
            let listeners = (|| {
                Some((
                    fields["http"].as_str()?.parse().ok()?,
                    fields["admin"].as_str()?.parse().ok()?,
                ))
            })();
            if listeners.is_none() {
                early.borrow_mut().push(line.to_owned());
            }
            listeners
        });
        Self {
            child,
            http,
            admin,
            early: early.into_inner(),
            _lines: lines,
        }
    }

    /// The first line logged before serving whose message contains `text`, parsed.
    pub fn logged(&self, text: &str) -> serde_json::Value {
        self.early
            .iter()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|value| {
                value["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(text))
            })
            .unwrap_or_else(|| panic!("no log line with {text:?} in {:?}", self.early))
    }

    /// Announces peer `peer` of torrent `torrent`; returns (complete, incomplete, peers).
    pub async fn announce(&self, torrent: u8, peer: u8, left: u64) -> (i64, i64, Vec<SocketAddr>) {
        let query = announce_query(torrent, peer, 7000 + u16::from(peer), left, "&compact=1");
        let (status, body) = get(self.http, &format!("/announce?{query}")).await;
        assert_eq!(status, 200);
        let reply = dict(&body);
        (
            int(&reply, "complete"),
            int(&reply, "incomplete"),
            compact_peers(&reply),
        )
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().expect("exits")
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
