//! Wire-format cost: parsing an HTTP announce query (as libtorrent escapes
//! it) and a BEP 15 announce packet with BEP 41 URL data, and writing the
//! replies (bencoded compact and dictionary peers, UDP 6-byte peers).
//! `cargo bench --bench protocol`.

use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use swarmgate::protocol::{query, reply, udp};

/// A libtorrent-style announce query: lowercase escapes, bare unreserved bytes.
fn libtorrent_query() -> Vec<u8> {
    let escape = |bytes: &[u8]| -> String {
        bytes
            .iter()
            .map(|&b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02x}"),
            })
            .collect()
    };
    let info_hash: Vec<u8> = (0..20u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    format!(
        "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=1048576&corrupt=0&key=3f2a11b0\
         &event=started&numwant=50&compact=1&no_peer_id=1&supportcrypto=1&redundant=0&jwt={}",
        escape(&info_hash),
        escape(b"-LT2080-a1b2c3d4e5f6"),
        "e".repeat(234)
    )
    .into_bytes()
}

/// A BEP 15 announce with a 234-character token as one BEP 41 option, as libtorrent sends it.
fn udp_announce() -> Vec<u8> {
    let mut packet = Vec::with_capacity(98 + 256);
    packet.extend_from_slice(&0x1234_5678_9abc_def0u64.to_be_bytes());
    packet.extend_from_slice(&1u32.to_be_bytes());
    packet.extend_from_slice(&7u32.to_be_bytes());
    packet.extend_from_slice(&[0xab; 20]);
    packet.extend_from_slice(b"-LT2080-a1b2c3d4e5f6");
    packet.extend_from_slice(&0u64.to_be_bytes());
    packet.extend_from_slice(&1_048_576u64.to_be_bytes());
    packet.extend_from_slice(&0u64.to_be_bytes());
    packet.extend_from_slice(&2u32.to_be_bytes());
    packet.extend_from_slice(&0u32.to_be_bytes());
    packet.extend_from_slice(&0x3f2a_11b0u32.to_be_bytes());
    packet.extend_from_slice(&(-1i32).to_be_bytes());
    packet.extend_from_slice(&6881u16.to_be_bytes());
    let url = format!("/announce?jwt={}", "e".repeat(234));
    packet.extend_from_slice(&[2, url.len() as u8]);
    packet.extend_from_slice(url.as_bytes());
    packet
}

fn peers(n: usize) -> Vec<(Option<[u8; 20]>, SocketAddr)> {
    (0..n)
        .map(|i| {
            let mut id = *b"-LT2080-000000000000";
            id[16..].copy_from_slice(&(i as u32).to_be_bytes());
            (
                Some(id),
                SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 6881)),
            )
        })
        .collect()
}

fn parsing(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    let http = libtorrent_query();
    group.throughput(Throughput::Bytes(http.len() as u64));
    group.bench_function("http_announce_query", |b| {
        b.iter(|| {
            let parsed = query::parse_announce(black_box(&http)).expect("parses");
            black_box(parsed);
            black_box(query::jwt(black_box(&http)));
        })
    });
    let packet = udp_announce();
    group.throughput(Throughput::Bytes(packet.len() as u64));
    group.bench_function("udp_announce_bep41", |b| {
        b.iter(|| {
            let parsed = udp::parse_request(black_box(&packet)).expect("parses");
            black_box(parsed);
        })
    });
    group.finish();
}

fn writing(c: &mut Criterion) {
    let mut group = c.benchmark_group("write");
    let counts = reply::AnnounceReply {
        interval: 60,
        min_interval: 30,
        complete: 10,
        incomplete: 40,
        format: reply::PeerFormat::Compact,
    };
    for n in [0usize, 50, 200] {
        let list = peers(n);
        group.bench_with_input(BenchmarkId::new("http_compact", n), &list, |b, list| {
            b.iter(|| black_box(reply::announce(&counts, list.iter().copied())))
        });
        let dictionaries = reply::AnnounceReply {
            format: reply::PeerFormat::Dictionaries {
                with_peer_ids: true,
            },
            ..counts
        };
        group.bench_with_input(
            BenchmarkId::new("http_dictionaries", n),
            &list,
            |b, list| b.iter(|| black_box(reply::announce(&dictionaries, list.iter().copied()))),
        );
        let udp_reply = udp::UdpAnnounceReply {
            transaction_id: 7,
            interval: 60,
            leechers: 40,
            seeders: 10,
        };
        let mut out = Vec::with_capacity(1500);
        group.bench_with_input(BenchmarkId::new("udp", n), &list, |b, list| {
            b.iter(|| {
                out.clear();
                udp::write_announce(&mut out, &udp_reply, false, 200, list.iter().map(|p| p.1));
                black_box(out.len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, parsing, writing);
criterion_main!(benches);
