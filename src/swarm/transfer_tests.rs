//! The engine's transfer accounting end to end: reports through announces
//! and stops, in both layouts and across their conversions, dual-stack
//! clients, restarts, restored peers and the busiest-swarms table.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

use super::engine::{Engine, EngineConfig, LocalitySettings};
use super::transfer::{Origins, TransferTotals};
use crate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};

const TORRENT: InfoHash = InfoHash([9; 20]);
const ORIGIN: u32 = 250;

fn engine(full_only: bool) -> Engine {
    let engine = Engine::with_locality(
        EngineConfig {
            peer_lifetime: Duration::from_secs(1000),
            shards: 4,
            ..EngineConfig::default()
        },
        LocalitySettings {
            origins: Origins::new(vec!["10.0.0.250/32".parse().expect("literal")]),
            ..LocalitySettings::default()
        },
    );
    if full_only {
        engine.full_layout_only()
    } else {
        engine
    }
}

fn peer_id(n: u32) -> PeerId {
    let mut id = [b'-'; 20];
    id[16..].copy_from_slice(&n.to_be_bytes());
    PeerId(id)
}

fn addr(n: u32, v6: bool) -> SocketAddr {
    let ip: IpAddr = if v6 {
        format!("fd00::{n:x}").parse().expect("an IPv6 address")
    } else {
        format!("10.0.{}.{}", n >> 8, n & 255)
            .parse()
            .expect("an IPv4 address")
    };
    SocketAddr::new(ip, 6881)
}

struct Report {
    peer: u32,
    v6: bool,
    event: Event,
    left: u64,
    uploaded: u64,
    downloaded: u64,
}

fn send(engine: &Engine, at: Instant, report: Report) {
    send_to(engine, TORRENT, at, report);
}

fn send_to(engine: &Engine, torrent: InfoHash, at: Instant, report: Report) {
    let request = AnnounceRequest {
        info_hash: torrent,
        peer_id: peer_id(report.peer),
        addr: addr(report.peer, report.v6),
        event: report.event,
        left: report.left,
        uploaded: report.uploaded,
        downloaded: report.downloaded,
        numwant: 5,
        peer_ids: false,
    };
    engine.announce(&request, at, &mut SmallRng::seed_from_u64(1));
}

fn report(peer: u32, event: Event, left: u64, uploaded: u64, downloaded: u64) -> Report {
    Report {
        peer,
        v6: false,
        event,
        left,
        uploaded,
        downloaded,
    }
}

const MIB: u64 = 1 << 20;

/// An origin seeds a 100 MiB layer; leecher 1 takes all of it from the
/// origin, leecher 2 takes 60 MiB from leecher 1 and 40 from the origin.
fn pull(engine: &Engine, now: Instant) {
    send(engine, now, report(ORIGIN, Event::Started, 0, 0, 0));
    send(engine, now, report(1, Event::Started, 100 * MIB, 0, 0));
    send(engine, now, report(2, Event::Started, 100 * MIB, 0, 0));
    send(engine, now, report(1, Event::Completed, 0, 0, 100 * MIB));
    send(engine, now, report(2, Event::Completed, 0, 0, 100 * MIB));
    send(
        engine,
        now,
        report(1, Event::Stopped, 0, 60 * MIB, 100 * MIB),
    );
    send(engine, now, report(ORIGIN, Event::None, 0, 140 * MIB, 0));
}

#[test]
fn the_offload_is_what_peers_sent_each_other_over_what_they_received() {
    for full_only in [false, true] {
        let engine = engine(full_only);
        pull(&engine, engine.epoch());
        let totals = engine.transfer_totals();
        assert_eq!(
            totals,
            TransferTotals {
                downloaded: 200 * MIB,
                uploaded_by_peers: 60 * MIB,
                uploaded_by_origins: 140 * MIB,
                resets: 0,
                implausible: 0,
            },
            "full layout only: {full_only}"
        );
        assert_eq!(totals.offload(), Some(0.3));
        let busiest = engine.busiest_swarms(10);
        assert_eq!(busiest.len(), 1);
        let (swarm, stats) = busiest[0];
        assert_eq!(
            (swarm.info_hash, swarm.totals, swarm.error_bytes),
            (TORRENT, totals, 0)
        );
        assert_eq!((stats.complete, stats.incomplete), (2, 0));
    }
}

#[test]
fn a_dual_stack_client_is_counted_once() {
    let engine = engine(false);
    let now = engine.epoch();
    for (step, v6) in [false, true, true, false, true, false, false]
        .into_iter()
        .enumerate()
    {
        let total = step as u64 * 10 * MIB;
        send(
            &engine,
            now,
            Report {
                v6,
                ..report(1, Event::None, 5, total, total)
            },
        );
    }
    // The v4 and v6 entries each saw part of the run; together, all of it once.
    assert_eq!(engine.transfer_totals().downloaded, 60 * MIB);
    send(
        &engine,
        now,
        Report {
            v6: true,
            ..report(1, Event::Stopped, 5, 70 * MIB, 70 * MIB)
        },
    );
    send(
        &engine,
        now,
        report(1, Event::Stopped, 5, 70 * MIB, 70 * MIB),
    );
    assert_eq!(engine.transfer_totals().uploaded_by_peers, 70 * MIB);
}

#[test]
fn a_restart_counts_from_zero_and_a_liar_adds_nothing() {
    let engine = engine(false);
    let now = engine.epoch();
    send(&engine, now, report(1, Event::Started, 5, 0, 0));
    send(&engine, now, report(1, Event::None, 5, 0, 30 * MIB));
    // The client restarted under the same id: its totals begin again.
    send(&engine, now, report(1, Event::Started, 5, 0, 2 * MIB));
    send(&engine, now, report(1, Event::None, 5, u64::MAX, 3 * MIB));
    let totals = engine.transfer_totals();
    assert_eq!(totals.downloaded, 33 * MIB);
    assert_eq!(totals.uploaded_by_peers, 0);
    assert_eq!((totals.resets, totals.implausible), (1, 1));
    // The next honest increase counts again.
    send(&engine, now, report(1, Event::None, 5, u64::MAX, 4 * MIB));
    assert_eq!(engine.transfer_totals().downloaded, 34 * MIB);
}

#[test]
fn role_changes_and_layout_moves_keep_each_peers_baseline() {
    for full_only in [false, true] {
        let engine = engine(full_only);
        let now = engine.epoch();
        for peer in 1..=10 {
            send(&engine, now, report(peer, Event::Started, 9, 0, 5 * MIB));
        }
        // Half finish (moving to the seeders), then 20 more peers join: the
        // compact swarm moves to full sets on the way.
        for peer in 1..=5 {
            send(
                &engine,
                now,
                report(peer, Event::Completed, 0, MIB, 6 * MIB),
            );
        }
        for peer in 11..=30 {
            send(&engine, now, report(peer, Event::Started, 9, 0, 0));
        }
        for peer in 1..=10 {
            send(&engine, now, report(peer, Event::None, 0, 2 * MIB, 8 * MIB));
        }
        let totals = engine.transfer_totals();
        assert_eq!(
            totals.downloaded,
            10 * 3 * MIB,
            "full layout only: {full_only}"
        );
        assert_eq!(totals.uploaded_by_peers, 10 * 2 * MIB);
        // Expiry of the newcomers demotes the swarm to compact again (at a
        // sweep) and the baselines survive that too.
        for peer in 1..=10 {
            send(
                &engine,
                now + Duration::from_secs(600),
                report(peer, Event::None, 0, 2 * MIB, 8 * MIB),
            );
        }
        engine.purge_expired(now + Duration::from_secs(1200));
        for peer in 1..=10 {
            send(
                &engine,
                now + Duration::from_secs(1200),
                report(peer, Event::None, 0, 3 * MIB, 8 * MIB),
            );
        }
        assert_eq!(engine.transfer_totals().uploaded_by_peers, 10 * 3 * MIB);
    }
}

#[test]
fn restored_peers_start_from_a_baseline() {
    let source = engine(false);
    let now = source.epoch();
    send(&source, now, report(1, Event::Started, 5, 0, 0));
    send(&source, now, report(1, Event::None, 5, 0, 40 * MIB));
    let mut stored = Vec::new();
    for shard in 0..source.shard_count() {
        source.export_shard(shard, now, &mut stored);
    }
    let restarted = engine(false);
    let later = restarted.epoch();
    for swarm in &stored {
        restarted.restore(swarm, later);
    }
    // Counted before the restart: not again.
    send(&restarted, later, report(1, Event::None, 5, 0, 45 * MIB));
    assert_eq!(restarted.transfer_totals().downloaded, 0);
    send(&restarted, later, report(1, Event::None, 5, 0, 47 * MIB));
    assert_eq!(restarted.transfer_totals().downloaded, 2 * MIB);
}

#[test]
fn busiest_swarms_come_heaviest_first_and_stay_bounded() {
    let engine = engine(false);
    let now = engine.epoch();
    for torrent in 0..200u32 {
        let mut hash = [0u8; 20];
        hash[..4].copy_from_slice(&torrent.to_le_bytes());
        let peer = 1000 + torrent;
        send_to(
            &engine,
            InfoHash(hash),
            now,
            report(peer, Event::Started, 5, 0, 0),
        );
        send_to(
            &engine,
            InfoHash(hash),
            now,
            report(peer, Event::None, 5, 0, u64::from(torrent + 1) * MIB),
        );
    }
    let busiest = engine.busiest_swarms(usize::MAX);
    // Four shards of 16.
    assert_eq!(busiest.len(), 64);
    let weights: Vec<u64> = busiest.iter().map(|(swarm, _)| swarm.weight).collect();
    assert!(weights.windows(2).all(|pair| pair[0] >= pair[1]));
    // The heaviest swarm carries more than 1/16 of its shard: always listed, exact.
    let (top, _) = busiest[0];
    assert_eq!(top.info_hash.0[..4], 199u32.to_le_bytes());
    assert_eq!(top.totals.downloaded, 200 * MIB);
    assert_eq!(engine.busiest_swarms(3).len(), 3);
}

proptest! {
    /// However a client's announces fall over families, layouts and other
    /// peers' comings and goings, while it stays listed what is counted is
    /// exactly its last report minus its first. Steps below 17 over at most
    /// 59 announces keep every total below 1,024, where codes are exact by
    /// construction, so no rounding enters (with steps up to 40 a total
    /// could reach 2,301, past 2,047, the last exact code).
    #[test]
    fn a_listed_client_is_counted_exactly(
        steps in proptest::collection::vec((0u64..17, any::<bool>(), 0u32..40, any::<bool>()), 1..60),
        full_only in any::<bool>(),
    ) {
        let engine = engine(full_only);
        let now = engine.epoch();
        let mut total = 0;
        send(&engine, now, report(1, Event::Started, 5, 0, 0));
        for (step, v6, other, leaves) in steps {
            total += step;
            send(&engine, now, Report { v6, ..report(1, Event::None, 5, total, total) });
            // Others come and go (their reports stay zero), moving the swarm
            // between layouts.
            let event = if leaves { Event::Stopped } else { Event::Started };
            send(&engine, now, report(100 + other, event, 5, 0, 0));
        }
        let totals = engine.transfer_totals();
        prop_assert_eq!(totals.downloaded, total);
        prop_assert_eq!(totals.uploaded_by_peers, total);
        prop_assert_eq!(totals.resets, 0);
    }
}
