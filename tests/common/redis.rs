//! Real Redis servers for the cluster tests: Debian's `redis-server` on free
//! loopback ports, no persistence, files in the test's directory; a Redis
//! Cluster of three primaries (and replicas if asked) joined with
//! `redis-cli --cluster create`; TLS-only servers with certificates made by
//! `openssl` for the test ([`Pki`]).
//! Every wait is on a state (a PONG, `cluster_state:ok`), bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One `redis-server` process.
pub struct RedisProcess {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

/// `redis-server` on loopback with no persistence, its files in `dir`.
fn server_command(dir: &Path) -> Command {
    let mut command = Command::new("redis-server");
    command
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--logfile", "redis.log"]);
    command
}

/// A free port whose cluster bus port (+10000) is free too.
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
    panic!("no free port pair");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate it
/// signed, and a second CA that signed nothing here: PEM files in a directory.
pub struct Pki {
    /// The directory.
    pub dir: PathBuf,
}

impl Pki {
    /// Makes them with `openssl` (EC P-256, valid two days).
    pub fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        for ca in ["ca", "rogue-ca"] {
            openssl(
                &[
                    &["req", "-x509"][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{ca}.key"),
                        "-out",
                        &format!("{ca}.pem"),
                        "-days",
                        "2",
                        "-subj",
                        &format!("/CN={ca}"),
                    ],
                ]
                .concat(),
            );
        }
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1
",
        )
        .expect("ext");
        std::fs::write(
            dir.join("client.ext"),
            "extendedKeyUsage=clientAuth
",
        )
        .expect("ext");
        for (name, cn) in [("server", "127.0.0.1"), ("client", "swarmgate")] {
            openssl(
                &[
                    &["req"][..],
                    &ec,
                    &[
                        "-keyout",
                        &format!("{name}.key"),
                        "-out",
                        &format!("{name}.csr"),
                        "-subj",
                        &format!("/CN={cn}"),
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Self { dir }
    }

    /// A file of it, as a string for a configuration.
    pub fn file(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `redis-cli` over TLS to 127.0.0.1:`port`, with this CA and the
    /// client certificate.
    pub fn redis_cli(&self, port: u16) -> Command {
        let mut command = Command::new("redis-cli");
        command
            .args(["--tls", "--cacert", &self.file("ca.pem")])
            .args(["--cert", &self.file("client.pem")])
            .args(["--key", &self.file("client.key")])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "--no-auth-warning",
            ]);
        command
    }
}

impl RedisProcess {
    /// A TLS-only server (`--port 0 --tls-port P`) with the [`Pki`]'s
    /// server certificate, and `extra` arguments (`--requirepass`, `--user`,
    /// `--tls-auth-clients`). Ready once `redis-cli` over TLS, with the
    /// client certificate and `auth` (`-a PASSWORD` or `--user U --pass P`),
    /// gets a PONG.
    pub fn start_tls(dir: &Path, pki: &Pki, extra: &[&str], auth: &[&str]) -> Self {
        let port = free_port_pair();
        let dir = dir.join(format!("redis-tls-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut command = server_command(&dir);
        command
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &pki.file("server.pem")])
            .args(["--tls-key-file", &pki.file("server.key")])
            .args(["--tls-ca-cert-file", &pki.file("ca.pem")])
            .args(extra);
        let mut server = Self::spawn(command, port, dir);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let pong = pki
                .redis_cli(port)
                .args(auth)
                .arg("PING")
                .output()
                .is_ok_and(|output| String::from_utf8_lossy(&output.stdout).contains("PONG"));
            if pong {
                return server;
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!(
                    "TLS redis-server exited ({status}): {}",
                    std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "TLS redis on {port} never answered"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts `command` (its output discarded) as the server on `port`.
    /// [`RedisProcess::spawn`], then waits until it answers `PING` (plain TCP).
    fn spawn_answering(command: Command, port: u16, dir: PathBuf) -> Self {
        let mut server = Self::spawn(command, port, dir);
        server.wait_until(
            |reply| reply.starts_with("+PONG"),
            &["PING"],
            "answers PING",
        );
        server
    }

    fn spawn(mut command: Command, port: u16, dir: PathBuf) -> Self {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "redis-server runs (apt-get install redis-server redis-tools; ./scripts/test does)",
            );
        Self {
            child: Some(child),
            port,
            dir,
        }
    }

    /// A replica of the server on `primary`, returned once its link is up.
    pub fn start_replica_of(dir: &Path, primary: u16) -> Self {
        let mut replica = Self::start(dir, false);
        let port = primary.to_string();
        replica.wait_until(
            |reply| reply.starts_with("+OK"),
            &["REPLICAOF", "127.0.0.1", &port],
            "accepted REPLICAOF",
        );
        replica.wait_until(
            |reply| reply.contains("master_link_status:up"),
            &["INFO", "replication"],
            "linked to its primary",
        );
        replica
    }

    /// A sentinel (`redis-server CONF --sentinel`) watching the primary on
    /// `primary` as `master`, with quorum 2 and a 1 s down-after.
    pub fn start_sentinel(dir: &Path, master: &str, primary: u16) -> Self {
        let port = free_port_pair();
        let dir = dir.join(format!("sentinel-{port}"));
        std::fs::create_dir_all(&dir).expect("sentinel dir");
        // The sentinel rewrites its file as it learns: one each, writable.
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nlogfile redis.log\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 5000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir.display()
            ),
        )
        .expect("sentinel.conf");
        let mut command = Command::new("redis-server");
        command.arg(&conf).arg("--sentinel");
        Self::spawn_answering(command, port, dir)
    }

    /// `redis-cli` with `args` against this server, its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// `redis-cli` over TLS (the [`Pki`]'s CA and client certificate) with
    /// `args` against this server, its stdout.
    pub fn cli_tls(&self, pki: &Pki, args: &[&str]) -> String {
        let output = pki
            .redis_cli(self.port)
            .args(args)
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts a server on a free port (a cluster-enabled node if `cluster`).
    pub fn start(dir: &Path, cluster: bool) -> Self {
        let port = free_port_pair();
        Self::start_on(dir, port, cluster)
    }

    /// Starts a server on `port` (again, after [`RedisProcess::kill`]).
    pub fn start_on(dir: &Path, port: u16, cluster: bool) -> Self {
        let dir = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut command = server_command(&dir);
        command.args(["--port", &port.to_string()]);
        if cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        Self::spawn_answering(command, port, dir)
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Sends one command (RESP) and returns the raw reply.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).ok()?;
        let mut reply = Vec::new();
        let mut buffer = [0u8; 65536];
        // Enough for the small replies tests read (INFO, DBSIZE, CLUSTER INFO).
        loop {
            let n = stream.read(&mut buffer).ok()?;
            reply.extend_from_slice(&buffer[..n]);
            if n == 0 || complete(&reply) {
                break;
            }
        }
        Some(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Keys held.
    pub fn dbsize(&self) -> u64 {
        self.command(&["DBSIZE"])
            .and_then(|reply| reply.trim().strip_prefix(':')?.parse().ok())
            .unwrap_or(0)
    }

    fn wait_until(&mut self, done: impl Fn(&str) -> bool, args: &[&str], what: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if self.command(args).is_some_and(|reply| done(&reply)) {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "redis-server on {} exited ({status}) before it {what}: {}",
                    self.port,
                    std::fs::read_to_string(self.dir.join("redis.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "redis on {} never {what}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`: gone at once, data and all (it keeps none).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends `signal` (SIGSTOP freezes it with its sockets open: a network
    /// split as the instances see it; SIGCONT thaws it).
    pub fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as i32, signal);
            }
        }
    }
}

/// Whether a RESP reply is complete (simple cases: one line, or a bulk string).
fn complete(reply: &[u8]) -> bool {
    let text = String::from_utf8_lossy(reply);
    match text.chars().next() {
        Some('$') => text
            .split_once("\r\n")
            .and_then(|(len, rest)| Some(rest.len() >= len[1..].parse::<usize>().ok()? + 2))
            .unwrap_or(false),
        Some(_) => text.ends_with("\r\n"),
        None => false,
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three TLS-only cluster nodes (`tls-cluster yes`: the bus speaks TLS too),
/// joined into one Redis Cluster of three primaries.
pub fn tls_cluster(dir: &Path, pki: &Pki) -> Vec<RedisProcess> {
    let nodes: Vec<RedisProcess> = (0..3)
        .map(|_| {
            RedisProcess::start_tls(
                dir,
                pki,
                &[
                    "--tls-auth-clients",
                    "no",
                    "--tls-cluster",
                    "yes",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ],
                &[],
            )
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|node| format!("127.0.0.1:{}", node.port))
        .collect();
    let output = Command::new("redis-cli")
        .args(["--tls", "--cacert", &pki.file("ca.pem")])
        .args([
            "--cert",
            &pki.file("client.pem"),
            "--key",
            &pki.file("client.key"),
        ])
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()
        .expect("redis-cli runs");
    assert!(
        output.status.success(),
        "redis-cli --cluster create over TLS failed: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        while !node
            .cli_tls(pki, &["CLUSTER", "INFO"])
            .contains("cluster_state:ok")
        {
            assert!(Instant::now() < deadline, "the TLS cluster never formed");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

/// Three cluster-enabled primaries that own every slot between them, and
/// their replicas.
pub struct RedisCluster {
    /// The nodes.
    pub nodes: Vec<RedisProcess>,
}

impl RedisCluster {
    /// Starts three nodes and joins them with `redis-cli --cluster create`.
    pub fn start(dir: &Path) -> Self {
        Self::start_with_replicas(dir, 0)
    }

    /// Three primaries with `replicas` replicas each; returns once every
    /// replica's link to its primary is up.
    pub fn start_with_replicas(dir: &Path, replicas: usize) -> Self {
        let count = 3 * (1 + replicas);
        let nodes: Vec<RedisProcess> = (0..count).map(|_| RedisProcess::start(dir, true)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs (apt-get install redis-tools)");
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let mut cluster = Self { nodes };
        let known = format!("cluster_known_nodes:{count}");
        for node in &mut cluster.nodes {
            node.wait_until(
                |reply| reply.contains("cluster_state:ok") && reply.contains(&known),
                &["CLUSTER", "INFO"],
                "joined the cluster",
            );
        }
        for node in &mut cluster.nodes {
            node.wait_until(
                |reply| reply.contains("role:master") || reply.contains("master_link_status:up"),
                &["INFO", "replication"],
                "linked to its primary",
            );
        }
        cluster
    }

    /// Indexes of the nodes that are primaries now.
    pub fn primaries(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i]
                    .command(&["INFO", "replication"])
                    .is_some_and(|reply| reply.contains("role:master"))
            })
            .collect()
    }

    /// Seed URLs for `cluster.redis` (the first node is enough; all are given).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RedisProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
