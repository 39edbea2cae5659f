//! How much one token holder (or, in open mode, anyone) can make the engine
//! store: peers per address per swarm, peers per swarm, peers in all, and
//! swarms in all.
//!
//! Each limit refuses *storing*, never answering: a newcomer past a limit is
//! still handed peers, so a legitimate client in an oversized swarm still
//! downloads. The per-address limit instead makes room: a new peer id from an
//! address already at the limit replaces that address's oldest entry, so a
//! client that restarts with a fresh id (most do) never locks itself out.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The storage limits, as configured (`[limits]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageLimits {
    /// Peers one IP address may list in one swarm (per address family).
    pub peers_per_address: usize,
    /// Peers one swarm may list (a dual-stack peer counts once per family).
    pub peers_per_swarm: usize,
    /// Peers all swarms together may list.
    pub peers: usize,
    /// Swarms the engine may hold.
    pub swarms: usize,
}

impl StorageLimits {
    /// No limits (tests and tools).
    pub const UNLIMITED: Self = Self {
        peers_per_address: usize::MAX,
        peers_per_swarm: usize::MAX,
        peers: usize::MAX,
        swarms: usize::MAX,
    };
}

impl Default for StorageLimits {
    fn default() -> Self {
        Self::UNLIMITED
    }
}

/// The limits in force, each in its own atomic so a reload changes them
/// without a lock and an announce reads them for a relaxed load apiece.
#[derive(Debug, Default)]
pub(super) struct LiveLimits {
    peers_per_address: AtomicUsize,
    peers_per_swarm: AtomicUsize,
    peers: AtomicUsize,
    swarms: AtomicUsize,
}

impl LiveLimits {
    pub(super) fn new(limits: StorageLimits) -> Self {
        let live = Self::default();
        live.set(limits);
        live
    }

    pub(super) fn set(&self, limits: StorageLimits) {
        self.peers_per_address
            .store(limits.peers_per_address.max(1), Ordering::Relaxed);
        self.peers_per_swarm
            .store(limits.peers_per_swarm, Ordering::Relaxed);
        self.peers.store(limits.peers, Ordering::Relaxed);
        self.swarms.store(limits.swarms, Ordering::Relaxed);
    }

    pub(super) fn get(&self) -> StorageLimits {
        StorageLimits {
            peers_per_address: self.peers_per_address.load(Ordering::Relaxed),
            peers_per_swarm: self.peers_per_swarm.load(Ordering::Relaxed),
            peers: self.peers.load(Ordering::Relaxed),
            swarms: self.swarms.load(Ordering::Relaxed),
        }
    }
}

/// Which limit an announce ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The address already listed `peers_per_address` peers; its oldest made room.
    PeersPerAddress,
    /// The swarm was full; the newcomer was answered but not stored.
    PeersPerSwarm,
    /// The engine was full; the newcomer was answered but not stored.
    Peers,
    /// The engine held `swarms` swarms; a new torrent's announce got an empty answer.
    Swarms,
}

impl Limit {
    /// Every limit, in label order.
    pub const ALL: [Limit; 4] = [
        Limit::PeersPerAddress,
        Limit::PeersPerSwarm,
        Limit::Peers,
        Limit::Swarms,
    ];

    /// The `limit` label of `swarmgate_limit_hits_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::PeersPerAddress => "peers_per_address",
            Limit::PeersPerSwarm => "peers_per_swarm",
            Limit::Peers => "peers",
            Limit::Swarms => "swarms",
        }
    }
}

/// How often each limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LimitHits([u64; 4]);

impl LimitHits {
    /// Counts one hit.
    pub fn hit(&mut self, limit: Limit) {
        self.0[limit as usize] += 1;
    }

    /// Hits of `limit`.
    pub fn get(&self, limit: Limit) -> u64 {
        self.0[limit as usize]
    }

    /// Adds another tally.
    pub fn add(&mut self, other: &LimitHits) {
        for (total, more) in self.0.iter_mut().zip(other.0) {
            *total += more;
        }
    }
}
