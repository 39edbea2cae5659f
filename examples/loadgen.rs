//! A bounded load generator for swarmgate, for benchmarks only.
//!
//! - `loadgen udp`: BEP 15. Each socket (bound to its own 127.0.x.y source
//!   address) connects, then keeps `--window` requests in flight, reusing its
//!   connection id like a real client (and reconnecting per `--connect-share`).
//! - `loadgen http`: `--connections` keep-alive connections (each from its own
//!   127.0.x.y source address), one request in flight on each, as `wrk` does.
//! - `loadgen noop-udp` / `noop-http`: responders that do no work, answering
//!   every request with a reply of the same size as the tracker's. Loaded by
//!   `udp`/`http`, they show the generator's own ceiling and the kernel's
//!   (or hyper's) cost floor under the tracker.
//!
//! Workload: `--torrents` with Zipf-skewed popularity (`--skew`, 0 =
//! uniform), `--peers` distinct peers per torrent of which `--seeders` are
//! seeders, `--numwant`, a request mix (`--scrape-share`, and for UDP
//! `--connect-share`), and `--rate` to offer a fixed load instead of as much
//! as the tracker takes. With `--mint-key`, one token per torrent is minted up
//! front (the token cache then behaves as with a real fleet); with `--cold N`
//! as well, N distinct tokens are minted instead and each is sent once, so
//! every request costs a full signature check.
//!
//! Runs stop after `--seconds` (at most 120) and print responses/s, latency
//! percentiles, errors, the CPU time per response of the process `--pid`
//! (read from /proc), and one `summary:` line.
//!
//! ```sh
//! cargo build --release --example loadgen
//! taskset -c 0 target/release/swarmgate serve --config open.toml &
//! taskset -c 1 target/release/examples/loadgen udp --seconds 20 --pid $!
//! ```

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

#[derive(Parser)]
#[command(about = "Bounded load generator for swarmgate (benchmarks only)")]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Subcommand)]
pub enum Mode {
    /// BEP 15 load: connect, then announces (and scrapes) reusing the connection id.
    Udp(Load),
    /// HTTP announces (and scrapes) over keep-alive connections.
    Http(Load),
    /// A UDP responder doing no work (recvmmsg/sendmmsg batches, as the tracker's workers).
    NoopUdp(Noop),
    /// An HTTP responder doing no work (axum/hyper, as the tracker's HTTP frontend).
    NoopHttp(Noop),
}

#[derive(Args)]
pub struct Noop {
    /// Where to listen (loopback only).
    #[arg(long, default_value = "127.0.0.1:7969")]
    listen: SocketAddr,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    seconds: u64,
}

#[derive(Args, Clone)]
pub struct Load {
    /// The tracker (loopback only). Defaults to port 6969 on 127.0.0.1.
    #[arg(long)]
    target: Option<SocketAddr>,
    /// How long to run, at most 120 s.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=120))]
    seconds: u64,
    /// UDP sockets or HTTP connections, each from its own 127.0.x.y address.
    #[arg(long)]
    connections: Option<usize>,
    /// UDP requests in flight per socket.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Torrents announced to.
    #[arg(long, default_value_t = 10_000)]
    torrents: u32,
    /// Zipf exponent of torrent popularity: 0 = uniform, 1 = classic Zipf.
    #[arg(long, default_value_t = 0.0)]
    skew: f64,
    /// Distinct peers per torrent (swarms settle at this size).
    #[arg(long, default_value_t = 100)]
    peers: u32,
    /// Share of each torrent's peers that are seeders.
    #[arg(long, default_value_t = 0.2)]
    seeders: f64,
    /// Peers asked for per announce.
    #[arg(long, default_value_t = 30)]
    numwant: i32,
    /// UDP: share of requests that are connects.
    #[arg(long, default_value_t = 0.5)]
    connect_share: f64,
    /// Share of (non-connect) requests that are scrapes of one torrent.
    #[arg(long, default_value_t = 0.0)]
    scrape_share: f64,
    /// Offered load in requests/s over all connections; 0 = as fast as answered.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Tracker process whose CPU time per response is reported.
    #[arg(long)]
    pid: Option<u32>,
    /// Mint tokens with this private key (PEM); ES256 or EdDSA fit one BEP 41 option.
    #[arg(long, requires_all = ["kid", "issuer"])]
    mint_key: Option<PathBuf>,
    /// The key's kid.
    #[arg(long)]
    kid: Option<String>,
    /// The issuer the tracker trusts.
    #[arg(long)]
    issuer: Option<String>,
    /// Cold tokens: mint this many distinct tokens, each sent once.
    #[arg(long, requires = "mint_key")]
    cold: Option<usize>,
    /// UDP: BEP 41 URL data of this many bytes without a token, to cost packet size alone.
    #[arg(long, default_value_t = 0)]
    pad: usize,
    /// Churn (soak runs): every this many seconds the torrents are replaced
    /// by fresh ones (old swarms empty and expire, new ones are created), and
    /// announces carry events: 40% started, 20% completed, 20% stopped, 20%
    /// none. 0 = off.
    #[arg(long, default_value_t = 0)]
    churn: u64,
    /// Each peer always announces from the same socket (one source address),
    /// as a real client does; otherwise any socket announces any peer.
    #[arg(long)]
    stable_peers: bool,
    /// Infohash layout: `spread` (like SHA-1 digests, every engine shard)
    /// or `shard0` (the generator's layout before, all in one shard).
    #[arg(long, default_value = "spread", value_parser = ["spread", "shard0"])]
    infohashes: String,
}

/// What every request draws from: torrents by popularity, peers, tokens.
struct Workload {
    /// When the run began (churn generations count from here).
    created: Instant,
    load: Load,
    target: SocketAddr,
    /// UDP sockets or HTTP connections (the flag, or 16 for UDP and 128 for HTTP).
    connections: usize,
    /// Cumulative popularity, scaled to u64::MAX; empty = uniform.
    popularity: Vec<u64>,
    /// One token per torrent (warm), or distinct (torrent, token) pairs used
    /// once (cold), each already encoded as the request carries it.
    tokens: Vec<Vec<u8>>,
    cold: Vec<(u32, Vec<u8>)>,
    next_cold: AtomicUsize,
    /// UDP: the BEP 41 option sent without a token (`--pad`), built once.
    padding: Vec<u8>,
}

/// One request's content.
struct Draw<'w> {
    torrent: u32,
    peer: u32,
    scrape: bool,
    /// BEP 15 event code: 0 none, 1 completed, 2 started, 3 stopped.
    event: u32,
    /// The token as the request carries it (see [`encode_token`]).
    token: Option<&'w [u8]>,
}

impl Workload {
    fn new(load: Load, udp: bool) -> Result<Self, String> {
        let default_connections = if udp { 16 } else { 128 };
        let target = load
            .target
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 6969)));
        if !target.ip().is_loopback() {
            return Err("loadgen only targets loopback addresses".into());
        }
        let connections = load
            .connections
            .unwrap_or(default_connections)
            .clamp(1, 4096);
        let mut load = load;
        load.window = load.window.clamp(1, 256);
        load.torrents = load.torrents.max(1);
        load.peers = load.peers.max(1);
        let popularity = if load.skew > 0.0 {
            let weights: Vec<f64> = (1..=load.torrents)
                .map(|rank| f64::from(rank).powf(-load.skew))
                .collect();
            let total: f64 = weights.iter().sum();
            let mut sum = 0.0;
            weights
                .iter()
                .map(|w| {
                    sum += w / total;
                    (sum.min(1.0) * u64::MAX as f64) as u64
                })
                .collect()
        } else {
            Vec::new()
        };
        let (tokens, cold) = mint(&load, udp)?;
        let padding = match load.pad.min(255) {
            0 => Vec::new(),
            len => [&[2, len as u8][..], &vec![b'a'; len]].concat(),
        };
        Ok(Self {
            created: Instant::now(),
            load,
            target,
            connections,
            popularity,
            tokens,
            cold,
            next_cold: AtomicUsize::new(0),
            padding,
        })
    }

    /// The next request's content; `None` once the cold token pool is used up.
    fn draw(&self, rng: &mut SmallRng, connection: usize) -> Option<Draw<'_>> {
        let scrape = rng.random_bool(self.load.scrape_share.clamp(0.0, 1.0));
        let mut peer = rng.random_range(0..self.load.peers);
        if !self.cold.is_empty() {
            let (torrent, token) = self
                .cold
                .get(self.next_cold.fetch_add(1, Ordering::Relaxed))?;
            return Some(Draw {
                torrent: *torrent,
                peer,
                scrape,
                event: 0,
                token: Some(token),
            });
        }
        let mut torrent = self.pick_torrent(rng);
        if self.load.stable_peers {
            // Peer p of torrent t announces only from connection (t + p) mod
            // connections; a torrent with no peer here is drawn again.
            let connections = self.connections as u32;
            let connection = connection as u32 % connections;
            for _ in 0..1000 {
                let first = (connection + connections - torrent % connections) % connections;
                if first < self.load.peers {
                    let owned = (self.load.peers - first).div_ceil(connections);
                    peer = first + connections * rng.random_range(0..owned);
                    break;
                }
                torrent = self.pick_torrent(rng);
            }
        }
        let token = self.tokens.get(torrent as usize).map(Vec::as_slice);
        let (torrent, event) = match self.load.churn {
            0 => (torrent, 0),
            period => {
                let generation = (self.created.elapsed().as_secs() / period) as u32;
                let event = match rng.random_range(0..10u32) {
                    0..=3 => 2,
                    4 | 5 => 1,
                    6 | 7 => 3,
                    _ => 0,
                };
                let shifted = torrent.wrapping_add(generation.wrapping_mul(self.load.torrents));
                (shifted, event)
            }
        };
        Some(Draw {
            torrent,
            peer,
            scrape,
            event,
            token,
        })
    }

    fn pick_torrent(&self, rng: &mut SmallRng) -> u32 {
        if self.popularity.is_empty() {
            rng.random_range(0..self.load.torrents)
        } else {
            let x: u64 = rng.random();
            self.popularity
                .partition_point(|&c| c < x)
                .min(self.popularity.len() - 1) as u32
        }
    }

    /// Bytes left: 1 for leechers (the peers past the seeders' share), 0 for
    /// seeders and for a `completed` announce.
    fn left(&self, draw: &Draw) -> u64 {
        let leecher = f64::from(draw.peer) >= self.load.seeders * f64::from(self.load.peers);
        u64::from(leecher && draw.event != 1)
    }

    /// When the `n`th request of one connection is due under `--rate`
    /// (connections offset evenly, so the offered load is smooth).
    fn due(&self, began: Instant, connection: usize, n: u64) -> Instant {
        if self.load.rate == 0 {
            return began;
        }
        let per_connection = self.load.rate as f64 / self.connections as f64;
        let offset = connection as f64 / self.connections as f64;
        began + Duration::from_secs_f64((n as f64 + offset) / per_connection)
    }

    /// Waits until `due`. Spins (yielding to the other connections) rather
    /// than sleeping: tokio's timer has millisecond ticks, which would send in
    /// bursts and measure the bursts' queueing instead of the tracker. The
    /// load generator has a core of its own.
    async fn wait_until(due: Instant) {
        while Instant::now() < due {
            tokio::task::yield_now().await;
        }
    }
}

/// Pre-minted tokens, encoded: one per torrent (warm), or (torrent, token) pairs each sent once (cold).
type Minted = (Vec<Vec<u8>>, Vec<(u32, Vec<u8>)>);

/// A token as a request carries it: over UDP a whole BEP 41 URL-data option
/// (which must fit its 255 bytes), over HTTP the `&jwt=` parameter.
fn encode_token(token: &str, udp: bool) -> Result<Vec<u8>, String> {
    if !udp {
        return Ok([b"&jwt=", token.as_bytes()].concat());
    }
    let url = format!("/announce?jwt={token}");
    let len = u8::try_from(url.len()).map_err(|_| {
        format!(
            "a {}-character token does not fit one BEP 41 option (255 bytes with /announce?jwt=)",
            token.len()
        )
    })?;
    Ok([&[2, len][..], url.as_bytes()].concat())
}

fn mint(load: &Load, udp: bool) -> Result<Minted, String> {
    let (Some(key_path), Some(kid), Some(issuer)) = (&load.mint_key, &load.kid, &load.issuer)
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let pem = std::fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let (key, alg) =
        swarmgate::gateway::mint::signing_key(&pem, None).map_err(|e| e.to_string())?;
    let now = swarmgate::gateway::layer::unix_now();
    let sign = |torrent: u32, age: Option<u64>| {
        let spec = swarmgate::gateway::mint::TokenSpec {
            kid: kid.clone(),
            issuer: issuer.clone(),
            audience: None,
            info_hash: swarmgate::bittorrent::InfoHash(info_hash(torrent)),
            // Warm tokens carry no `exp`, as Quay's; cold ones need one to be
            // distinct (a different issue time gives a different `exp`).
            ttl: age.map(|_| Duration::from_secs(86_400)),
        };
        let token = swarmgate::gateway::mint::mint(&key, alg, &spec, now - age.unwrap_or(0))
            .map_err(|e| e.to_string())?;
        encode_token(&token, udp)
    };
    let started = Instant::now();
    let minted = match load.cold {
        None => (
            (0..load.torrents)
                .map(|t| sign(t, None))
                .collect::<Result<_, _>>()?,
            Vec::new(),
        ),
        Some(count) => (
            Vec::new(),
            (0..count)
                .map(|i| {
                    let torrent = i as u32 % load.torrents;
                    let age = (i / load.torrents as usize) as u64;
                    Ok((torrent, sign(torrent, Some(age))?))
                })
                .collect::<Result<_, String>>()?,
        ),
    };
    eprintln!(
        "minted {} tokens in {:.1} s",
        minted.0.len() + minted.1.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(minted)
}

/// Whether infohashes take the old layout (`--infohashes shard0`: the
/// torrent number in the first four bytes, big-endian, which puts every
/// torrent below 2^24 in the engine's shard 0), for comparisons only.
static SHARD0: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Torrent `torrent`'s infohash. By default its bytes are spread like a
/// SHA-1 digest's (splitmix64 of the number, a bijection, so distinct
/// torrents get distinct infohashes): the engine picks a shard from the
/// leading bytes, and real infohashes land on every shard.
fn info_hash(torrent: u32) -> [u8; 20] {
    let mut hash = [0u8; 20];
    if SHARD0.load(std::sync::atomic::Ordering::Relaxed) {
        hash[..4].copy_from_slice(&torrent.to_be_bytes());
        return hash;
    }
    let mut state = u64::from(torrent);
    for chunk in hash.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    hash
}

fn peer_id(torrent: u32, peer: u32) -> [u8; 20] {
    let mut id = *b"-LG0001-000000000000";
    id[8..12].copy_from_slice(&torrent.to_be_bytes());
    id[12..16].copy_from_slice(&peer.to_be_bytes());
    id
}

/// The source address of connection `index`: 127.0.1.1, 127.0.1.2, ...
fn source(index: usize) -> SocketAddr {
    SocketAddr::from((
        Ipv4Addr::new(127, 0, 1 + (index / 250) as u8, 1 + (index % 250) as u8),
        0,
    ))
}

#[derive(Default)]
struct Tally {
    responses: u64,
    errors: u64,
    timeouts: u64,
    latencies_us: Vec<u32>,
}

impl Tally {
    fn record(&mut self, sent: Instant, error: bool) {
        if error {
            self.errors += 1;
        } else {
            self.responses += 1;
        }
        self.latencies_us
            .push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
    }

    fn add(&mut self, other: Tally) {
        self.responses += other.responses;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.latencies_us.extend(other.latencies_us);
    }
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

const CONNECT_MAGIC: u64 = 0x0417_2710_1980;

fn connect_packet(out: &mut Vec<u8>, transaction: u32) {
    out.extend_from_slice(&CONNECT_MAGIC.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.extend_from_slice(&transaction.to_be_bytes());
}

fn udp_request(
    out: &mut Vec<u8>,
    workload: &Workload,
    draw: &Draw,
    connection: u64,
    transaction: u32,
    port: u16,
) {
    out.extend_from_slice(&connection.to_be_bytes());
    if draw.scrape {
        out.extend_from_slice(&2u32.to_be_bytes());
        out.extend_from_slice(&transaction.to_be_bytes());
        out.extend_from_slice(&info_hash(draw.torrent));
        return;
    }
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&info_hash(draw.torrent));
    out.extend_from_slice(&peer_id(draw.torrent, draw.peer));
    out.extend_from_slice(&[0; 8]); // downloaded
    out.extend_from_slice(&workload.left(draw).to_be_bytes());
    out.extend_from_slice(&[0; 8]); // uploaded
    out.extend_from_slice(&draw.event.to_be_bytes());
    out.extend_from_slice(&[0; 4]); // ip: the source
    out.extend_from_slice(&draw.peer.to_be_bytes()); // key
    out.extend_from_slice(&workload.load.numwant.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(draw.token.unwrap_or(&workload.padding));
}

async fn drive_udp(index: usize, workload: Arc<Workload>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let Ok(socket) = UdpSocket::bind(source(index)).await else {
        return tally;
    };
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(1);
    let target = workload.target;
    let window = workload.load.window;
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let mut buf = [0u8; 2048];
    let mut packet = Vec::with_capacity(512);
    let mut connection = 0u64;
    while connection == 0 && Instant::now() < deadline {
        packet.clear();
        connect_packet(&mut packet, u32::MAX);
        let _ = socket.send_to(&packet, target).await;
        if let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
            && len >= 16
        {
            connection = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
        }
    }
    let began = Instant::now();
    let paced = workload.load.rate > 0;
    let mut sent_at = vec![began; window];
    let mut sent = 0u64;
    let mut in_flight = 0usize;
    let mut last_reply = Instant::now();
    while Instant::now() < deadline {
        // Send what is due while the window has room.
        while in_flight < window && workload.due(began, index, sent) <= Instant::now() {
            packet.clear();
            let transaction = sent as u32;
            if rng.random_bool(workload.load.connect_share.clamp(0.0, 1.0)) {
                connect_packet(&mut packet, transaction);
            } else {
                let Some(draw) = workload.draw(&mut rng, index) else {
                    return tally;
                };
                udp_request(&mut packet, &workload, &draw, connection, transaction, port);
            }
            sent_at[transaction as usize % window] = Instant::now();
            let _ = socket.send_to(&packet, target).await;
            sent += 1;
            in_flight += 1;
        }
        // Then one reply: polled when paced (so a reply is read as soon as it
        // lands, not after the next send falls due), awaited otherwise.
        let received = if paced {
            match socket.try_recv(&mut buf) {
                Ok(len) => Some(len),
                Err(_) => {
                    tokio::task::yield_now().await;
                    None
                }
            }
        } else {
            match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
                Ok(Ok(len)) => Some(len),
                _ => None,
            }
        };
        match received {
            Some(len) if len >= 8 => {
                let action = u32::from_be_bytes(buf[0..4].try_into().unwrap_or_default());
                let transaction = u32::from_be_bytes(buf[4..8].try_into().unwrap_or_default());
                if action == 0 && len >= 16 {
                    connection = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                }
                tally.record(sent_at[transaction as usize % window], action == 3);
                in_flight = in_flight.saturating_sub(1);
                last_reply = Instant::now();
            }
            _ if in_flight > 0 && last_reply.elapsed() > Duration::from_millis(200) => {
                // Lost packets: refill the window.
                tally.timeouts += 1;
                in_flight = 0;
                last_reply = Instant::now();
            }
            _ => {}
        }
    }
    tally
}

fn push_percent_encoded(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
    }
}

fn http_request(out: &mut Vec<u8>, workload: &Workload, draw: &Draw, port: u16) {
    out.extend_from_slice(if draw.scrape {
        b"GET /scrape?info_hash="
    } else {
        b"GET /announce?info_hash="
    });
    push_percent_encoded(out, &info_hash(draw.torrent));
    if !draw.scrape {
        out.extend_from_slice(b"&peer_id=");
        push_percent_encoded(out, &peer_id(draw.torrent, draw.peer));
        let event = match draw.event {
            1 => "&event=completed",
            2 => "&event=started",
            3 => "&event=stopped",
            _ => "",
        };
        let rest = format!(
            "&port={port}&uploaded=0&downloaded=0&left={}&compact=1&numwant={}{event}",
            workload.left(draw),
            workload.load.numwant
        );
        out.extend_from_slice(rest.as_bytes());
    }
    out.extend_from_slice(draw.token.unwrap_or_default());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
}

/// Reads one HTTP/1.1 response; `Ok(true)` when it is a 200 without a `failure reason`.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let (head_end, body_len) = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let body_len = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, body_len);
        }
    };
    while buf.len() < head_end + body_len {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let ok_status = buf.starts_with(b"HTTP/1.1 200");
    let failed = buf[head_end..].windows(14).any(|w| w == b"failure reason");
    Ok(ok_status && !failed)
}

async fn drive_http(index: usize, workload: Arc<Workload>, deadline: Instant) -> Tally {
    let mut tally = Tally::default();
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket.bind(source(index))?;
        socket.connect(workload.target).await
    };
    let Ok(mut stream) = connect.await else {
        tally.errors += 1;
        return tally;
    };
    let _ = stream.set_nodelay(true);
    let port = 10_000 + index as u16;
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let mut request = Vec::with_capacity(1024);
    let mut response = Vec::with_capacity(4096);
    let began = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline {
        Workload::wait_until(workload.due(began, index, n)).await;
        n += 1;
        let Some(draw) = workload.draw(&mut rng, index) else {
            break;
        };
        request.clear();
        http_request(&mut request, &workload, &draw, port);
        let sent = Instant::now();
        if stream.write_all(&request).await.is_err() {
            tally.errors += 1;
            break;
        }
        match tokio::time::timeout(
            Duration::from_secs(2),
            read_response(&mut stream, &mut response),
        )
        .await
        {
            Ok(Ok(ok)) => tally.record(sent, !ok),
            Ok(Err(_)) => {
                tally.errors += 1;
                break;
            }
            Err(_) => {
                tally.timeouts += 1;
                break;
            }
        }
    }
    tally
}

/// What one load run measured.
pub struct Report {
    protocol: &'static str,
    /// Answers that were not errors.
    pub responses: u64,
    /// Error answers (UDP action 3, HTTP `failure reason` or a status other than 200).
    pub errors: u64,
    /// Requests given up on after 200 ms (UDP) or 2 s (HTTP).
    pub timeouts: u64,
    elapsed: f64,
    /// Latency percentiles p50, p99, p999 in microseconds.
    pub latency_us: [u32; 3],
    /// The `--pid` process's CPU time per answer (µs) and its share of one core.
    pub cpu: Option<(f64, f64)>,
}

impl Report {
    fn print(&self) {
        let Report {
            protocol,
            responses,
            errors,
            timeouts,
            elapsed,
            latency_us: [p50, p99, p999],
            cpu,
        } = self;
        let rate = *responses as f64 / elapsed;
        println!(
            "{protocol}: {responses} responses in {elapsed:.1} s: {rate:.0}/s; errors {errors}; timeouts {timeouts}"
        );
        println!("latency p50 {p50} µs, p99 {p99} µs, p999 {p999} µs");
        let cpu = cpu.map_or(String::new(), |(per_answer, share)| {
            format!(", tracker CPU {per_answer:.2} µs/response ({share:.0}% of a core)")
        });
        println!(
            "summary: {protocol} {rate:.0} responses/s, errors {errors}, p50 {p50} µs, p99 {p99} µs, p999 {p999} µs{cpu}"
        );
    }
}

async fn run_load(udp: bool, load: Load) -> Result<Report, String> {
    let workload = Arc::new(Workload::new(load, udp)?);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(workload.load.seconds);
    let pid = workload.load.pid;
    let cpu_before = pid.and_then(cpu_ticks);
    let tasks: Vec<_> = (0..workload.connections)
        .map(|i| {
            if udp {
                tokio::spawn(drive_udp(i, workload.clone(), deadline))
            } else {
                tokio::spawn(drive_http(i, workload.clone(), deadline))
            }
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.add(tally);
        }
    }
    let cpu_after = pid.and_then(cpu_ticks);
    let elapsed = began.elapsed().as_secs_f64();
    total.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let n = total.latencies_us.len();
        if n == 0 {
            0
        } else {
            total.latencies_us[((n as f64 * p) as usize).min(n - 1)]
        }
    };
    let answered = total.responses + total.errors;
    let cpu = match (cpu_before, cpu_after) {
        // Linux reports process CPU time in clock ticks of 10 ms (USER_HZ = 100).
        (Some(before), Some(after)) if answered > 0 => {
            let seconds = (after - before) as f64 / 100.0;
            Some((seconds * 1e6 / answered as f64, seconds * 100.0 / elapsed))
        }
        _ => None,
    };
    Ok(Report {
        protocol: if udp { "udp" } else { "http" },
        responses: total.responses,
        errors: total.errors,
        timeouts: total.timeouts,
        elapsed,
        latency_us: [pct(0.5), pct(0.99), pct(0.999)],
        cpu,
    })
}

/// Answers connects with a connect reply, announces with 30 (zero) peers,
/// scrapes with zero counts: the tracker's reply sizes, none of its work.
fn noop_udp(noop: &Noop) -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind(noop.listen)?;
    socket.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + Duration::from_secs(noop.seconds);
    swarmgate::frontend::udp_batch::serve_batches(
        &socket,
        || Instant::now() >= deadline,
        |packet, _from, out| {
            if packet.len() < 16 {
                return;
            }
            let action = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
            out.extend_from_slice(&action.min(3).to_be_bytes());
            out.extend_from_slice(&packet[12..16]);
            match action {
                0 => out.extend_from_slice(&packet[..8]),
                1 => out.resize(20 + 30 * 6, 0),
                2 => out.resize(20, 0),
                _ => out.extend_from_slice(b"unknown"),
            }
        },
    );
    Ok(())
}

/// Answers every request with a compact announce reply of 30 peers.
async fn noop_http(noop: &Noop) -> std::io::Result<()> {
    let mut body = b"d8:completei0e10:incompletei0e8:intervali1800e5:peers180:".to_vec();
    body.extend_from_slice(&[0; 180]);
    body.push(b'e');
    let body = axum::body::Bytes::from(body);
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move { ([("content-type", "text/plain")], body) }
    });
    let listener = tokio::net::TcpListener::bind(noop.listen).await?;
    let stop = tokio::time::sleep(Duration::from_secs(noop.seconds));
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
}

/// Runs one mode to the end: a load run's report, or `None` for a responder.
pub fn execute(mode: Mode) -> Result<Option<Report>, String> {
    let runtime = match &mode {
        // The no-work HTTP responder runs like the tracker: a multi-thread runtime.
        Mode::NoopHttp(_) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
    }
    .map_err(|e| e.to_string())?;
    if let Mode::Udp(load) | Mode::Http(load) = &mode {
        SHARD0.store(
            load.infohashes == "shard0",
            std::sync::atomic::Ordering::Relaxed,
        );
    }
    match mode {
        Mode::Udp(load) => runtime.block_on(run_load(true, load)).map(Some),
        Mode::Http(load) => runtime.block_on(run_load(false, load)).map(Some),
        Mode::NoopUdp(noop) => noop_udp(&noop).map(|()| None).map_err(|e| e.to_string()),
        Mode::NoopHttp(noop) => runtime
            .block_on(noop_http(&noop))
            .map(|()| None)
            .map_err(|e| e.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    match execute(Cli::parse().mode) {
        Ok(report) => {
            if let Some(report) = report {
                report.print();
            }
            std::process::ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("loadgen: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
