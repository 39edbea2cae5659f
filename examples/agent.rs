//! A deploy agent's view of swarmgate: fetch a layer's torrent from the
//! registry, announce it over HTTP, and print the peers the tracker hands out,
//! each with its locality tier when the tracker's configuration is given.
//!
//! ```sh
//! cargo run --example agent -- http://127.0.0.1:5000/c1/torrent/ns/repo/blobs/sha256:<hex>
//! cargo run --example agent -- --bind 127.0.2.7 --config swarmgate.toml --seeder URL
//! ```
//!
//! `--bind` picks the agent's source address (any 127.0.0.0/8 address works
//! on loopback), which is what swarmgate's locality goes by. With `--config`,
//! the agent applies the same `[locality]` table to label each peer subnet,
//! zone, region or other, as the tracker ranked it.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use serde_bencode::value::Value;
use swarmgate::config::Config;
use swarmgate::swarm::{Locality, Topology};
use swarmgate::torrent::{self, MetaInfo};

/// Command line.
#[derive(Debug, Parser)]
#[command(about = "Fetch a layer torrent, announce it, print the peers")]
pub struct Args {
    /// The torrent's URL at the registry (/c1/torrent/<ns>/<repo>/blobs/<digest>).
    pub torrent_url: String,
    /// Source address of the announce (the agent's address as the tracker sees it).
    #[arg(long)]
    pub bind: Option<IpAddr>,
    /// The port the agent says it accepts peers on.
    #[arg(long, default_value_t = 6881)]
    pub port: u16,
    /// Announce as a seeder (left=0) instead of a fresh leecher.
    #[arg(long)]
    pub seeder: bool,
    /// How many peers to ask for.
    #[arg(long, default_value_t = 50)]
    pub numwant: u32,
    /// The tracker's configuration file, to label peers with their locality tier.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// One peer in the reply, with its tier when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `subnet`, `zone`, `region` or `other` relative to the agent.
    pub tier: Option<&'static str>,
}

/// What one announce returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The torrent's infohash, as hex.
    pub info_hash: String,
    /// Seeders and leechers in the swarm.
    pub complete: i64,
    /// Leechers.
    pub incomplete: i64,
    /// Peers handed out, in the tracker's order (nearest first).
    pub peers: Vec<Peer>,
}

/// Fetches the torrent, announces it once and returns the tracker's answer.
pub async fn run(args: &Args) -> Result<Announced, String> {
    let topology = match &args.config {
        Some(path) => {
            let config = Config::load(Some(path), std::iter::empty::<(String, String)>())
                .map_err(|e| e.to_string())?;
            let settings = swarmgate::server::locality_settings(&config.locality, &config.offload)
                .map_err(|e| e.to_string())?;
            Some(settings.topology)
        }
        None => None,
    };
    let mut builder = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10));
    if let Some(ip) = args.bind {
        builder = builder.local_address(ip);
    }
    let client = builder.build().map_err(|e| e.to_string())?;
    let bytes = client
        .get(&args.torrent_url)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("fetching the torrent: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("fetching the torrent: {e}"))?;
    let info_hash = torrent::info_hash_of(&bytes).map_err(|e| e.to_string())?;
    let meta: MetaInfo = serde_bencode::from_bytes(&bytes).map_err(|e| e.to_string())?;
    // This agent speaks HTTP; pick the first HTTP tracker in the torrent.
    let announce = std::iter::once(&meta.announce)
        .chain(meta.announce_list.iter().flatten())
        .find(|url| url.starts_with("http://") || url.starts_with("https://"))
        .ok_or("the torrent names no HTTP tracker")?;
    let escaped: String = info_hash.0.iter().map(|b| format!("%{b:02X}")).collect();
    let peer_id: String = format!("-AG0001-{:012}", std::process::id());
    let left = if args.seeder { 0 } else { meta.info.length };
    let separator = if announce.contains('?') { '&' } else { '?' };
    let url = format!(
        "{announce}{separator}info_hash={escaped}&peer_id={peer_id}&port={}&uploaded=0&downloaded=0&left={left}&compact=1&numwant={}&event=started",
        args.port, args.numwant
    );
    let body = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("announcing: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("announcing: {e}"))?;
    let Ok(Value::Dict(reply)) = serde_bencode::from_bytes::<Value>(&body) else {
        return Err("the tracker's reply is not a bencoded dictionary".into());
    };
    if let Some(Value::Bytes(reason)) = reply.get(&b"failure reason"[..]) {
        return Err(format!(
            "the tracker refused: {}",
            String::from_utf8_lossy(reason)
        ));
    }
    let count = |key: &str| match reply.get(key.as_bytes()) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    };
    let own = args.bind.map(|ip| (ip, topology.as_ref()));
    let mut peers = Vec::new();
    for (key, size) in [("peers", 6), ("peers6", 18)] {
        let Some(Value::Bytes(entries)) = reply.get(key.as_bytes()) else {
            continue;
        };
        for entry in entries.chunks_exact(size) {
            let ip: IpAddr = match size {
                6 => IpAddr::from([entry[0], entry[1], entry[2], entry[3]]),
                _ => {
                    let mut octets = [0u8; 16];
                    octets.copy_from_slice(&entry[..16]);
                    IpAddr::from(octets)
                }
            };
            let port = u16::from_be_bytes([entry[size - 2], entry[size - 1]]);
            let tier = match own {
                Some((own_ip, Some(topology))) => Some(tier(topology, own_ip, ip)),
                _ => None,
            };
            peers.push(Peer {
                addr: SocketAddr::new(ip, port),
                tier,
            });
        }
    }
    Ok(Announced {
        info_hash: info_hash.to_string(),
        complete: count("complete"),
        incomplete: count("incomplete"),
        peers,
    })
}

fn tier(topology: &Topology, own: IpAddr, peer: IpAddr) -> &'static str {
    let own: Locality = topology.locate(own);
    own.tier_of(&topology.locate(peer)).label()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(announced) => {
            println!(
                "infohash {}: {} seeders, {} leechers, {} peers handed out",
                announced.info_hash,
                announced.complete,
                announced.incomplete,
                announced.peers.len()
            );
            for peer in &announced.peers {
                match peer.tier {
                    Some(tier) => println!("peer {} ({tier})", peer.addr),
                    None => println!("peer {}", peer.addr),
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("agent: {error}");
            ExitCode::FAILURE
        }
    }
}
