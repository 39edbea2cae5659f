//! A custom deploy agent's announce: sends the token as `Authorization:
//! Bearer`, announces one torrent over HTTP, and prints the peers it gets.
//!
//! ```sh
//! TOKEN=$(cargo run -q -- mint --key keys/dev-es256.pem --kid dev-es256 --issuer dev-registry --infohash <hex>)
//! cargo run --example announce -- http://127.0.0.1:6969/announce <hex> "$TOKEN"
//! ```

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;

use serde_bencode::value::Value;
use swarmgate::bittorrent::InfoHash;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [announce, hex, token] = args.as_slice() else {
        eprintln!("usage: announce ANNOUNCE_URL INFOHASH_HEX TOKEN");
        return ExitCode::FAILURE;
    };
    let Ok(info_hash) = InfoHash::from_hex(hex) else {
        eprintln!("INFOHASH_HEX must be 40 hex characters");
        return ExitCode::FAILURE;
    };
    let escaped: String = info_hash.0.iter().map(|b| format!("%{b:02X}")).collect();
    let url = format!(
        "{announce}?info_hash={escaped}&peer_id=-EX0001-000000000001&port=6881&uploaded=0&downloaded=0&left=1&compact=1"
    );
    let body = match reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(response) => match response.bytes().await {
            Ok(body) => body,
            Err(error) => return fail(&error.to_string()),
        },
        Err(error) => return fail(&error.to_string()),
    };
    let Ok(Value::Dict(reply)) = serde_bencode::from_bytes::<Value>(&body) else {
        return fail("the reply is not a bencoded dictionary");
    };
    if let Some(Value::Bytes(reason)) = reply.get(&b"failure reason"[..]) {
        return fail(&String::from_utf8_lossy(reason));
    }
    let count = |key: &str| match reply.get(key.as_bytes()) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    };
    println!(
        "seeders {}, leechers {}, re-announce in {} s",
        count("complete"),
        count("incomplete"),
        count("interval")
    );
    for (key, size) in [("peers", 6), ("peers6", 18)] {
        let Some(Value::Bytes(peers)) = reply.get(key.as_bytes()) else {
            continue;
        };
        for entry in peers.chunks_exact(size) {
            let port = u16::from_be_bytes([entry[size - 2], entry[size - 1]]);
            let ip: std::net::IpAddr = match size {
                6 => Ipv4Addr::new(entry[0], entry[1], entry[2], entry[3]).into(),
                _ => Ipv6Addr::from(<[u8; 16]>::try_from(&entry[..16]).unwrap_or_default()).into(),
            };
            println!("peer {}", SocketAddr::new(ip, port));
        }
    }
    ExitCode::SUCCESS
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("announce failed: {reason}");
    ExitCode::FAILURE
}
