//! The real binary: printed config, config errors, serving, and graceful shutdown.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");

/// A configuration file in the temp dir, deleted when the test ends.
struct TempConfig(std::path::PathBuf);

impl std::ops::Deref for TempConfig {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempConfig {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp_config(name: &str, text: &str) -> TempConfig {
    let path =
        std::env::temp_dir().join(format!("swarmgate-test-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).expect("write config");
    TempConfig(path)
}

#[test]
fn printed_config_is_a_valid_config_file() {
    let output = Command::new(BIN).arg("config").output().expect("runs");
    assert!(output.status.success());
    let path = temp_config("printed", &String::from_utf8_lossy(&output.stdout));
    let parsed = swarmgate::config::Config::from_file(&path).expect("printed config parses");
    assert_eq!(parsed, swarmgate::config::Config::default());
}

#[test]
fn a_bad_config_file_is_one_clear_error_and_a_failing_exit() {
    let path = temp_config(
        "bad",
        "[announce]\ninterval = \"60s\"\nmax_numwant = \"many\"\n",
    );
    let output = Command::new(BIN)
        .env("SWARMGATE_STORE__SNAPSHOT_PATH", "")
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 3") && stderr.contains("max_numwant"),
        "{stderr}"
    );
    assert!(
        stderr.starts_with("swarmgate: invalid config file"),
        "{stderr}"
    );

    let missing = Command::new(BIN)
        .env("SWARMGATE_STORE__SNAPSHOT_PATH", "")
        .args(["serve", "--config", "/nonexistent/swarmgate.toml"])
        .output()
        .expect("runs");
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr)
            .contains("cannot read config file /nonexistent/swarmgate.toml")
    );
}

#[test]
fn serves_then_stops_cleanly_on_sigterm() {
    let path = temp_config(
        "serve",
        "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
    );
    // From the repository root, the default auth trusts the development keys in keys/.
    let mut child = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("SWARMGATE_STORE__SNAPSHOT_PATH", "")
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let announce_url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            line.split("announce at ")
                .nth(1)
                .map(|rest| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .expect("startup line names the announce URL");
    let mint_hint = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.split("mint a token: ").nth(1).map(str::to_owned))
        .expect("startup log says how to mint a token");
    assert!(
        mint_hint.starts_with(
            "swarmgate mint --key keys/dev-es256.pem --kid dev-es256 --issuer dev-registry"
        ),
        "{mint_hint}"
    );

    // Follow the hint: mint a token with the binary itself.
    let minted = Command::new(BIN)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "mint",
            "--key",
            "keys/dev-es256.pem",
            "--kid",
            "dev-es256",
            "--issuer",
            "dev-registry",
        ])
        .args(["--infohash", &"61".repeat(20)])
        .output()
        .expect("mint runs");
    assert!(
        minted.status.success(),
        "{}",
        String::from_utf8_lossy(&minted.stderr)
    );
    let token = String::from_utf8_lossy(&minted.stdout).trim().to_owned();
    assert!(
        String::from_utf8_lossy(&minted.stderr)
            .contains(&format!("ES256 token, {} characters", token.len()))
    );

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let body = runtime.block_on(async {
        reqwest::get(format!("{announce_url}?info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&uploaded=0&downloaded=0&left=0&jwt={token}"))
            .await
            .expect("request")
            .bytes()
            .await
            .expect("body")
    });
    assert!(
        body.starts_with(b"d8:completei1e"),
        "{}",
        body.escape_ascii()
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit after SIGTERM: {status}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        lines
            .map_while(Result::ok)
            .any(|line| line.contains("shutting down"))
    );
}

/// A tracker that trusts public keys only (here the development JWKS, as a
/// registry would publish it) gives no mint hint it could not follow: it
/// holds no private key, and says where tokens come from instead.
#[test]
fn a_tracker_with_public_keys_only_gives_no_mint_hint() {
    let dir = std::env::temp_dir().join(format!("swarmgate-public-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/keys/jwks.json"),
        dir.join("jwks.json"),
    )
    .expect("copies the public keys");
    let path = temp_config(
        "public-keys",
        &format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [store]\nsnapshot_path = \"\"\n[auth]\nkeys_dir = \"{}\"\n",
            dir.display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let stderr = child.stderr.take().expect("stderr");
    let mut said = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let done = line.contains("no private key of a trusted kid is on this host");
        said.push(line);
        if done {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let said = said.join("\n");
    assert!(said.contains("no private key of a trusted kid"), "{said}");
    assert!(!said.contains("mint a token"), "{said}");
}

#[test]
fn keygen_writes_a_key_the_tracker_trusts_and_mint_warns_about_long_tokens() {
    let dir = std::env::temp_dir().join(format!("swarmgate-keygen-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Spelled as auth.algorithms and JWT headers spell them, or in lowercase.
    for (alg, kid) in [("RS256", "big"), ("EdDSA", "small"), ("es256", "mid")] {
        let status = Command::new(BIN)
            .args(["keygen", "--alg", alg, "--kid", kid, "--out"])
            .arg(&dir)
            .status()
            .expect("runs");
        assert!(status.success());
    }
    let loaded = swarmgate::gateway::keys::load_dir(&dir).expect("dir loads");
    let mut kids: Vec<_> = loaded
        .keys
        .iter()
        .filter_map(|k| k.kid.as_deref().map(str::to_owned))
        .collect();
    kids.sort();
    assert_eq!(
        kids,
        vec!["big", "mid", "small"],
        "private PEMs skipped, JWKS read: {:?}",
        loaded.skipped
    );

    let mint = |infohash: &str| {
        Command::new(BIN)
            .args([
                "mint",
                "--kid",
                "big",
                "--issuer",
                "r",
                "--infohash",
                infohash,
                "--key",
            ])
            .arg(dir.join("big.pem"))
            .output()
            .expect("runs")
    };
    let minted = mint(&"ab".repeat(20));
    assert!(minted.status.success());
    let stderr = String::from_utf8_lossy(&minted.stderr);
    assert!(
        stderr.contains("RS256 token") && stderr.contains("warning: longer than 241 characters"),
        "{stderr}"
    );
    let bad = mint("xyz");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--infohash: an infohash is 40 hexadecimal characters")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_configuration_reference_in_docs_is_what_config_markdown_prints() {
    let output = Command::new(BIN)
        .args(["config", "--markdown"])
        .output()
        .expect("runs");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).expect("utf-8");
    let reference = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md");
    let start = reference
        .find("<!-- config reference: generated by `swarmgate config --markdown` -->\n")
        .expect("start marker");
    let block = &reference[start..];
    let block = &block[block.find('\n').expect("line") + 1..];
    let end = block
        .find("<!-- end of config reference -->")
        .expect("end marker");
    assert_eq!(
        &block[..end],
        generated,
        "docs/configuration.md is stale: paste `swarmgate config --markdown` between the markers"
    );
    // One row per key of the default configuration.
    let keys: usize = toml::Table::try_from(swarmgate::config::Config::default())
        .expect("table")
        .values()
        .filter_map(|section| section.as_table().map(|t| t.len()))
        .sum();
    assert_eq!(generated.lines().count() - 2, keys);
}

#[test]
fn a_one_shot_command_whose_reader_goes_away_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // `swarmgate simulate | true`: the pipe's reader is gone before the table is printed.
    let mut child = std::process::Command::new(BIN)
        .arg("simulate")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("swarmgate runs");
    drop(child.stdout.take());
    let output = child.wait_with_output().expect("exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGPIPE),
        "ended by SIGPIPE as a Unix filter is: {:?}",
        output.status
    );
}

#[test]
fn a_closed_log_pipe_does_not_stop_the_tracker() {
    // A log shipper that dies closes the tracker's stderr. Log lines are then
    // lost, but the tracker serves on and still stops cleanly.
    let path = temp_config(
        "closed-log",
        "[http]\nlisten = \"127.0.0.1:0\"\n[udp]\nenabled = false\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [auth]\nmode = \"open\"\n[store]\nsnapshot_path = \"\"\n",
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--log-format", "json", "--config"])
        .arg(&path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let (http, admin): (std::net::SocketAddr, std::net::SocketAddr) = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(&line).ok()?;
            let fields = &value["fields"];
            Some((
                fields["http"].as_str()?.parse().ok()?,
                fields["admin"].as_str()?.parse().ok()?,
            ))
        })
        .expect("the listeners line");
    drop(lines);
    let get = |addr: std::net::SocketAddr, target: &str| {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            stream,
            "GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .expect("send");
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        reply
    };
    let announce = "/announce?info_hash=%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA%AA\
                    &peer_id=-XX0001-000000000000&port=6881&uploaded=0&downloaded=0&left=0";
    assert!(get(http, announce).starts_with("HTTP/1.1 200"));
    // SIGHUP makes it log (the reload) into the closed pipe; the reload
    // counter moves only after that log line was attempted.
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while !get(admin, "/metrics").contains("swarmgate_config_reloads_total{result=\"ok\"} 1") {
        assert!(child.try_wait().expect("status").is_none(), "it died");
        assert!(Instant::now() < deadline, "the reload was never counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        get(http, announce).starts_with("HTTP/1.1 200"),
        "still serving"
    );
    // SAFETY: as above.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().expect("exits");
    assert!(status.success(), "exit status {status}");
}
