//! The cluster's costs, measured: tracker CPU per announce with one instance
//! and with two on Redis, Redis CPU per announce, Redis memory per peer,
//! and convergence (a peer announced to instance A, until instance B counts
//! it) while the load runs. A benchmark, not a test: it prints numbers.
//!
//! It starts its own `redis-server` (no persistence, a temp dir), the
//! release tracker binary once or twice (UDP with one worker, open mode)
//! and the release load generator against instance A, all on loopback.
//! CPU is each process's utime + stime from /proc over the load generator's
//! run; announces are instance A's own count.
//!
//! ```sh
//! cargo build --release --examples && cargo build --release
//! target/release/examples/cluster_bench --instances 1 --seconds 20 --rate 20000
//! target/release/examples/cluster_bench --instances 2 --seconds 20 --rate 20000
//! target/release/examples/cluster_bench --instances 2 --seconds 20 --rate 20000 --tls
//! ```
//!
//! `--tls` has the instances reach Redis over `rediss://` (a CA and a server
//! certificate made with `openssl` in the temp dir; Redis also keeps a
//! plain port on loopback for this program's own INFO queries).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Cluster costs: tracker and Redis CPU per announce, Redis memory, convergence")]
struct Cli {
    /// 1: a single instance (the baseline); 2: two instances on one Redis.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    instances: u8,
    /// Load duration, at most 120 s.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=120))]
    seconds: u64,
    /// Requests/s offered to instance A.
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Torrents.
    #[arg(long, default_value_t = 10_000)]
    torrents: u64,
    /// Distinct peers per torrent.
    #[arg(long, default_value_t = 10)]
    peers: u64,
    /// `cluster.expiry_step`.
    #[arg(long, default_value = "120s")]
    expiry_step: String,
    /// Share of UDP requests that are connects.
    #[arg(long, default_value_t = 0.1)]
    connect_share: f64,
    /// The instances reach Redis through TLS.
    #[arg(long)]
    tls: bool,
}

/// How the instances reach Redis: its port, `expiry_step`, and for TLS the CA file.
#[derive(Clone, Copy)]
struct RedisAt<'a> {
    port: u16,
    step: &'a str,
    tls_ca: Option<&'a Path>,
}

/// A CA and a server certificate for 127.0.0.1 in `dir` (EC P-256), for `--tls`.
fn make_certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        let ok = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        assert!(ok, "openssl {args:?} failed");
    };
    let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let run = |line: String| openssl(&line.split(' ').collect::<Vec<_>>());
    run(format!(
        "req -x509 {ec} -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca"
    ));
    run(format!(
        "req {ec} -keyout server.key -out server.csr -subj /CN=127.0.0.1"
    ));
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run("x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext".into());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// One RESP command to Redis; the raw reply.
fn redis(port: u16, args: &[&str]) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut request = format!("*{}\r\n", args.len());
    for arg in args {
        request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    let _ = stream.write_all(request.as_bytes());
    let mut reply = Vec::new();
    let mut buffer = [0u8; 65536];
    while let Ok(n) = stream.read(&mut buffer) {
        reply.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&reply);
        let done = match text.split_once("\r\n") {
            Some((head, rest)) if head.starts_with('$') => {
                rest.len() >= head[1..].parse::<usize>().unwrap_or(0) + 2
            }
            Some(_) => true,
            None => false,
        };
        if n == 0 || done {
            break;
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

fn info(port: u16, section: &str, field: &str) -> f64 {
    redis(port, &["INFO", section])
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// A plain HTTP/1.1 GET on loopback; the body.
fn get(addr: SocketAddr, path: &str) -> Vec<u8> {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return Vec::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    );
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    match reply.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(at) => reply[at + 4..].to_vec(),
        None => Vec::new(),
    }
}

fn metrics(admin: SocketAddr) -> HashMap<String, f64> {
    String::from_utf8_lossy(&get(admin, "/metrics"))
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One series of a scrape; 0 when absent.
fn sample(metrics: &HashMap<String, f64>, series: &str) -> f64 {
    metrics.get(series).copied().unwrap_or(0.0)
}

fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

/// `incomplete` of the probe torrent, from a scrape of `http`.
fn probe_count(http: SocketAddr, probe: &[u8; 20]) -> Option<u64> {
    let body = get(http, &format!("/scrape?info_hash={}", escape(probe)));
    let text = String::from_utf8_lossy(&body);
    let at = text.find("10:incompletei")? + "10:incompletei".len();
    text[at..].split('e').next()?.parse().ok()
}

struct Tracker {
    child: Child,
    http: SocketAddr,
    udp: SocketAddr,
    admin: SocketAddr,
}

impl Tracker {
    fn start(dir: &Path, name: &str, binary: &Path, cluster: Option<RedisAt>) -> Self {
        let (http, udp, admin) = (free_port(), free_port(), free_port());
        let mut config = format!(
            "[http]\nlisten = \"127.0.0.1:{http}\"\n[udp]\nlisten = \"127.0.0.1:{udp}\"\nworkers = 1\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[auth]\nmode = \"open\"\n[store]\nsnapshot_path = \"\"\n\
             [announce]\ncleanup_interval = \"1s\"\n"
        );
        if let Some(RedisAt { port, step, tls_ca }) = cluster {
            let scheme = if tls_ca.is_some() { "rediss" } else { "redis" };
            config.push_str(&format!(
                "[cluster]\nredis = \"{scheme}://127.0.0.1:{port}\"\nnamespace = \"bench\"\nexpiry_step = \"{step}\"\n"
            ));
            if let Some(ca) = tls_ca {
                config.push_str(&format!("tls_ca_file = \"{}\"\n", ca.display()));
            }
        }
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, config).expect("config");
        let child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the release tracker (cargo build --release)");
        let tracker = Self {
            child,
            http: SocketAddr::from(([127, 0, 0, 1], http)),
            udp: SocketAddr::from(([127, 0, 0, 1], udp)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin)),
        };
        // A joiner reads all of Redis before it binds: give it time.
        let deadline = Instant::now() + Duration::from_secs(60);
        while get(tracker.admin, "/healthz") != b"ok\n" {
            assert!(Instant::now() < deadline, "{name} never served");
            std::thread::sleep(Duration::from_millis(20));
        }
        tracker
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    let cli = Cli::parse();
    let here = std::env::current_exe().expect("own path");
    let examples = here.parent().expect("examples dir").to_path_buf();
    let binary: PathBuf = examples.parent().expect("target dir").join("swarmgate");
    let loadgen = examples.join("loadgen");
    let dir = std::env::temp_dir().join(format!("swarmgate-cluster-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let redis_port = free_port();
    let tls_port = free_port();
    if cli.tls {
        make_certificates(&dir);
    }
    let mut redis_child = (cli.instances == 2).then(|| {
        let mut command = Command::new("redis-server");
        if cli.tls {
            command
                .args([
                    "--tls-port",
                    &tls_port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(dir.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(dir.join("ca.pem"));
        }
        let child = command
            .args(["--port", &redis_port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis(redis_port, &["PING"]).starts_with("+PONG") {
            assert!(Instant::now() < deadline, "redis never answered");
            std::thread::sleep(Duration::from_millis(20));
        }
        child
    });
    let ca = dir.join("ca.pem");
    let cluster = redis_child.as_ref().map(|_| RedisAt {
        port: if cli.tls { tls_port } else { redis_port },
        step: cli.expiry_step.as_str(),
        tls_ca: cli.tls.then_some(ca.as_path()),
    });
    let a = Tracker::start(&dir, "a", &binary, cluster);
    let b = (cli.instances == 2).then(|| Tracker::start(&dir, "b", &binary, cluster));
    let memory_before = info(redis_port, "memory", "used_memory");
    let _ = redis(redis_port, &["CONFIG", "RESETSTAT"]);

    let announces = |m: &HashMap<String, f64>| {
        sample(
            m,
            r#"swarmgate_requests_total{protocol="udp",kind="announce",result="ok"}"#,
        )
    };
    let before_a = announces(&metrics(a.admin));
    let pids: Vec<u32> = [
        Some(a.child.id()),
        b.as_ref().map(|b| b.child.id()),
        redis_child.as_ref().map(Child::id),
    ]
    .into_iter()
    .flatten()
    .collect();
    let cpu_before: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let began = Instant::now();
    let mut load = Command::new(&loadgen)
        .args(["udp", "--target", &a.udp.to_string()])
        .args([
            "--seconds",
            &cli.seconds.to_string(),
            "--rate",
            &cli.rate.to_string(),
        ])
        .args([
            "--torrents",
            &cli.torrents.to_string(),
            "--peers",
            &cli.peers.to_string(),
        ])
        .args([
            "--connect-share",
            &cli.connect_share.to_string(),
            "--numwant",
            "30",
        ])
        .arg("--stable-peers")
        .stdout(Stdio::piped())
        .spawn()
        .expect("target/release/examples/loadgen (cargo build --release --examples)");

    // Convergence probes while the load runs: a new peer announced to A,
    // then B scraped until it counts it.
    let mut lags = Vec::new();
    let mut missed = 0;
    if let Some(b) = &b {
        let mut next = 0u32;
        std::thread::sleep(Duration::from_secs(1));
        while began.elapsed() + Duration::from_secs(3) < Duration::from_secs(cli.seconds)
            && lags.len() < 400
        {
            // A torrent of its own per probe, so no per-address limit interferes.
            next += 1;
            let mut probe = [0xEEu8; 20];
            probe[16..].copy_from_slice(&next.to_be_bytes());
            let sent = Instant::now();
            let answer = get(
                a.http,
                &format!(
                    "/announce?info_hash={}&peer_id=-PROBE-0000000000000&port=9999&uploaded=0&downloaded=0&left=1&numwant=0",
                    escape(&probe),
                ),
            );
            loop {
                if probe_count(b.http, &probe).unwrap_or(0) > 0 {
                    lags.push(sent.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if sent.elapsed() > Duration::from_secs(2) {
                    missed += 1;
                    eprintln!(
                        "probe {next} not seen within 2 s: A answered {:?}",
                        String::from_utf8_lossy(&answer)
                    );
                    break;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            // A random pause, so probes do not lock onto the flush timer's phase.
            std::thread::sleep(Duration::from_millis(20 + rand::random::<u64>() % 60));
        }
    }
    let mut output = String::new();
    if let Some(stdout) = load.stdout.as_mut() {
        let _ = stdout.read_to_string(&mut output);
    }
    let _ = load.wait();
    let cpu_after: Vec<f64> = pids.iter().map(|&pid| cpu_seconds(pid)).collect();
    let metrics_a = metrics(a.admin);
    let served = announces(&metrics_a) - before_a;
    let cpu: Vec<f64> = cpu_after
        .iter()
        .zip(&cpu_before)
        .map(|(after, before)| after - before)
        .collect();
    let per = |seconds: f64| seconds / served * 1e6;
    println!(
        "load: {}",
        output
            .lines()
            .find(|l| l.starts_with("summary:"))
            .unwrap_or("(no summary)")
    );
    println!(
        "announces answered by A: {served:.0} ({:.0}/s)",
        served / cli.seconds as f64
    );
    println!("tracker A CPU: {:.2} us/announce", per(cpu[0]));
    if let Some(b) = &b {
        let metrics_b = metrics(b.admin);
        let sent = sample(
            &metrics_a,
            r#"swarmgate_cluster_changes_total{result="sent"}"#,
        );
        let applied = sample(
            &metrics_b,
            r#"swarmgate_cluster_changes_total{result="applied"}"#,
        );
        let dropped = sample(
            &metrics_a,
            r#"swarmgate_cluster_changes_total{result="dropped"}"#,
        );
        println!(
            "tracker B CPU: {:.2} us/announce (applying A's changes)",
            per(cpu[1])
        );
        println!("trackers A+B CPU: {:.2} us/announce", per(cpu[0] + cpu[1]));
        println!(
            "redis CPU: {:.2} us/announce (process utime+stime)",
            per(cpu[2])
        );
        let commands_usec: f64 = redis(redis_port, &["INFO", "commandstats"])
            .lines()
            .filter_map(|line| {
                let usec = line.split("usec=").nth(1)?.split(',').next()?;
                usec.parse::<f64>().ok()
            })
            .sum();
        println!(
            "redis command time: {:.2} us/announce (INFO commandstats)",
            commands_usec / served
        );
        println!(
            "changes: {sent:.0} sent by A ({:.1}% of announces), {applied:.0} applied by B, {dropped:.0} dropped",
            sent / served * 100.0
        );
        let peers = sample(&metrics_b, r#"swarmgate_peers{role="seeder"}"#)
            + sample(&metrics_b, r#"swarmgate_peers{role="leecher"}"#);
        let memory = info(redis_port, "memory", "used_memory") - memory_before;
        println!(
            "redis memory: {:.1} B/peer ({memory:.0} B for {peers:.0} peers held by B)",
            memory / peers.max(1.0)
        );
        if std::env::var_os("CLUSTER_BENCH_LAG").is_some() {
            for (name, value) in &metrics_b {
                if name.starts_with("swarmgate_cluster_replication_lag_seconds") {
                    println!("B {name} {value}");
                }
            }
        }
        lags.sort_by(f64::total_cmp);
        println!(
            "convergence A -> B: {} probes, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {missed} not seen within 2 s",
            lags.len(),
            percentile(&lags, 0.5),
            percentile(&lags, 0.99),
            lags.last().copied().unwrap_or(f64::NAN)
        );
    }
    // A third instance joins: it reads every swarm from Redis before it binds.
    if b.is_some() {
        let joined = Instant::now();
        let c = Tracker::start(&dir, "c", &binary, cluster);
        let ready = joined.elapsed();
        let held = metrics(c.admin);
        let peers = sample(&held, r#"swarmgate_cluster_resync_peers{way="pulled"}"#);
        println!(
            "join: a new instance served {:.2} s after it started, having pulled {peers:.0} peers from Redis",
            ready.as_secs_f64()
        );
        drop(c);
    }
    drop((a, b));
    if let Some(child) = redis_child.as_mut() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&dir);
}
