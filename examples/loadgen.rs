//! A bounded UDP load generator for swarmgate (BEP 15), for benchmarks only.
//!
//! Each socket (bound to its own 127.0.0.x source address) connects, then
//! keeps `--window` requests in flight: announces for random torrents among
//! `--torrents` (and connects, per `--connect-share`), reusing its connection
//! id like a real client. It stops after `--seconds` (at most 120) and prints
//! responses/s, latency percentiles, errors, and, given `--pid`, the tracker
//! process's CPU time per response read from /proc.
//!
//! With `--mint-key PEM --kid KID --issuer ISS`, one token per torrent is
//! minted up front and sent as BEP 41 URL data, so the tracker's token cache
//! behaves as with a real fleet (use an ES256 or EdDSA key: the token must fit
//! one 255-byte option).
//!
//! ```sh
//! cargo build --release --example loadgen
//! taskset -c 0 target/release/swarmgate serve --config open.toml &
//! taskset -c 1 target/release/examples/loadgen --target 127.0.0.1:6969 --seconds 20 --pid $!
//! ```

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::net::UdpSocket;

struct Options {
    target: SocketAddr,
    seconds: u64,
    sockets: usize,
    window: usize,
    torrents: u32,
    numwant: i32,
    connect_share: f64,
    pid: Option<u32>,
    /// BEP 41 options per torrent, when minting.
    tokens: Vec<Vec<u8>>,
}

fn mint_tokens(flags: &HashMap<String, String>, torrents: u32) -> Result<Vec<Vec<u8>>, String> {
    let Some(key_path) = flags.get("mint-key") else {
        return Ok(Vec::new());
    };
    let kid = flags.get("kid").ok_or("--mint-key needs --kid")?;
    let issuer = flags.get("issuer").ok_or("--mint-key needs --issuer")?;
    let pem = std::fs::read(key_path).map_err(|e| format!("{key_path}: {e}"))?;
    let (key, alg) =
        swarmgate::gateway::mint::signing_key(&pem, None).map_err(|e| e.to_string())?;
    let now = swarmgate::gateway::layer::unix_now();
    (0..torrents)
        .map(|torrent| {
            let spec = swarmgate::gateway::mint::TokenSpec {
                kid: kid.clone(),
                issuer: issuer.clone(),
                audience: None,
                info_hash: swarmgate::swarm::InfoHash(info_hash(torrent)),
                ttl: None,
            };
            let token =
                swarmgate::gateway::mint::mint(&key, alg, &spec, now).map_err(|e| e.to_string())?;
            let url = format!("/announce?jwt={token}");
            let len = u8::try_from(url.len())
                .map_err(|_| format!("token too long for one BEP 41 option ({})", url.len()))?;
            Ok([&[2, len][..], url.as_bytes()].concat())
        })
        .collect()
}

fn info_hash(torrent: u32) -> [u8; 20] {
    let mut hash = [0u8; 20];
    hash[..4].copy_from_slice(&torrent.to_be_bytes());
    hash
}

fn parse() -> Result<Options, String> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or(format!("unexpected {flag}"))?
            .to_owned();
        flags.insert(name, args.next().ok_or(format!("{flag} needs a value"))?);
    }
    fn get<T: std::str::FromStr>(
        flags: &HashMap<String, String>,
        name: &str,
        default: T,
    ) -> Result<T, String> {
        flags.get(name).map_or(Ok(default), |v| {
            v.parse().map_err(|_| format!("bad --{name} {v}"))
        })
    }
    let target: SocketAddr = get(&flags, "target", SocketAddr::from(([127, 0, 0, 1], 6969)))?;
    if !target.ip().is_loopback() {
        return Err("loadgen only targets loopback addresses".into());
    }
    let torrents = get(&flags, "torrents", 10_000u32)?.max(1);
    let mut tokens = mint_tokens(&flags, torrents)?;
    // --pad N: BEP 41 URL data of N bytes with no token, to measure what packet size alone costs.
    let pad: usize = get(&flags, "pad", 0usize)?.min(240);
    if tokens.is_empty() && pad > 0 {
        let url = format!("/announce?x={}", "a".repeat(pad.saturating_sub(12)));
        tokens = vec![[&[2, url.len() as u8][..], url.as_bytes()].concat(); torrents as usize];
    }
    Ok(Options {
        tokens,
        target,
        seconds: get(&flags, "seconds", 10u64)?.min(120),
        sockets: get(&flags, "sockets", 16usize)?.clamp(1, 1024),
        window: get(&flags, "window", 16usize)?.clamp(1, 256),
        torrents,
        numwant: get(&flags, "numwant", 30i32)?,
        connect_share: get(&flags, "connect-share", 0.5f64)?.clamp(0.0, 1.0),
        pid: flags
            .get("pid")
            .map(|p| p.parse().map_err(|_| format!("bad --pid {p}")))
            .transpose()?,
    })
}

#[derive(Default)]
struct Tally {
    responses: u64,
    errors: u64,
    timeouts: u64,
    latencies_us: Vec<u32>,
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn connect_packet(transaction: u32) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&0x0417_2710_1980u64.to_be_bytes());
    p[12..].copy_from_slice(&transaction.to_be_bytes());
    p
}

fn announce_packet(
    connection: u64,
    transaction: u32,
    torrent: u32,
    peer: u32,
    numwant: i32,
    port: u16,
    options: &[u8],
) -> Vec<u8> {
    let mut p = vec![0u8; 98];
    p[..8].copy_from_slice(&connection.to_be_bytes());
    p[8..12].copy_from_slice(&1u32.to_be_bytes());
    p[12..16].copy_from_slice(&transaction.to_be_bytes());
    p[16..36].copy_from_slice(&info_hash(torrent));
    p[36..40].copy_from_slice(&peer.to_be_bytes());
    p[64..72].copy_from_slice(&u64::from(peer % 2).to_be_bytes()); // left: half seeders
    p[92..96].copy_from_slice(&numwant.to_be_bytes());
    p[96..98].copy_from_slice(&port.to_be_bytes());
    p.extend_from_slice(options);
    p
}

async fn drive(index: usize, options: std::sync::Arc<Options>, deadline: Instant) -> Tally {
    let source = SocketAddr::from((
        Ipv4Addr::new(127, 0, 1 + (index / 250) as u8, 1 + (index % 250) as u8),
        0,
    ));
    let Ok(socket) = UdpSocket::bind(source).await else {
        return Tally::default();
    };
    let port = socket.local_addr().map(|a| a.port()).unwrap_or(1);
    let mut rng = SmallRng::seed_from_u64(index as u64);
    let mut tally = Tally::default();
    let mut buf = [0u8; 2048];
    // Get a first connection id.
    let mut connection = 0u64;
    while connection == 0 && Instant::now() < deadline {
        let _ = socket
            .send_to(&connect_packet(u32::MAX), options.target)
            .await;
        if let Ok(Ok(len)) =
            tokio::time::timeout(Duration::from_secs(1), socket.recv(&mut buf)).await
            && len >= 16
        {
            connection = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
        }
    }
    let mut sent_at = vec![Instant::now(); options.window];
    let mut next = 0u32;
    let send = |next: u32, rng: &mut SmallRng, connection: u64| {
        if rng.random_bool(options.connect_share) {
            connect_packet(next).to_vec()
        } else {
            let torrent = rng.random_range(0..options.torrents);
            let peer = rng.random_range(0..u32::MAX);
            let token = options
                .tokens
                .get(torrent as usize)
                .map(Vec::as_slice)
                .unwrap_or_default();
            announce_packet(
                connection,
                next,
                torrent,
                peer,
                options.numwant,
                port,
                token,
            )
        }
    };
    for _ in 0..options.window {
        let packet = send(next, &mut rng, connection);
        sent_at[next as usize % options.window] = Instant::now();
        let _ = socket.send_to(&packet, options.target).await;
        next += 1;
    }
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await {
            Ok(Ok(len)) if len >= 8 => {
                let action = u32::from_be_bytes(buf[0..4].try_into().unwrap_or_default());
                let transaction = u32::from_be_bytes(buf[4..8].try_into().unwrap_or_default());
                if action == 3 {
                    tally.errors += 1;
                } else {
                    tally.responses += 1;
                }
                if action == 0 && len >= 16 {
                    connection = u64::from_be_bytes(buf[8..16].try_into().unwrap_or_default());
                }
                let elapsed = sent_at[transaction as usize % options.window].elapsed();
                tally
                    .latencies_us
                    .push(u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX));
            }
            Ok(_) => continue,
            Err(_) => tally.timeouts += 1, // lost packets: refill the window
        }
        let packet = send(next, &mut rng, connection);
        sent_at[next as usize % options.window] = Instant::now();
        let _ = socket.send_to(&packet, options.target).await;
        next = next.wrapping_add(1);
    }
    tally
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let options = match parse() {
        Ok(options) => std::sync::Arc::new(options),
        Err(error) => {
            eprintln!("loadgen: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let began = Instant::now();
    let deadline = began + Duration::from_secs(options.seconds);
    let cpu_before = options.pid.and_then(cpu_ticks);
    let tasks: Vec<_> = (0..options.sockets)
        .map(|i| tokio::spawn(drive(i, options.clone(), deadline)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(tally) = task.await {
            total.responses += tally.responses;
            total.errors += tally.errors;
            total.timeouts += tally.timeouts;
            total.latencies_us.extend(tally.latencies_us);
        }
    }
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
    let rate = total.responses as f64 / elapsed;
    println!(
        "responses {} in {elapsed:.1} s: {rate:.0}/s; errors {}; timeouts {}",
        total.responses, total.errors, total.timeouts
    );
    println!(
        "latency p50 {} µs, p99 {} µs, p999 {} µs",
        pct(0.5),
        pct(0.99),
        pct(0.999)
    );
    let cpu = match (options.pid, cpu_before, options.pid.and_then(cpu_ticks)) {
        (Some(_), Some(before), Some(after)) if total.responses > 0 => {
            // Linux reports process CPU time in clock ticks of 10 ms (USER_HZ = 100).
            let seconds = (after - before) as f64 / 100.0;
            Some(seconds * 1e6 / total.responses as f64)
        }
        _ => None,
    };
    match cpu {
        Some(us) => println!(
            "summary: udp {rate:.0} responses/s, p99 {} µs, tracker CPU {us:.2} µs/response",
            pct(0.99)
        ),
        None => println!("summary: udp {rate:.0} responses/s, p99 {} µs", pct(0.99)),
    }
    std::process::ExitCode::SUCCESS
}
