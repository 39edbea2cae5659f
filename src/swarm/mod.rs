//! The swarm engine: every torrent's peers, kept in memory, and the policy that
//! decides which of them an announcer is handed.
//!
//! Pure on purpose: no sockets, no runtime, no clock. Callers pass the time
//! (`now`) and a random number generator, so every behaviour here is
//! deterministic under test. Frontends translate their wire formats into
//! the requests of [`crate::bittorrent`] and back; the engine answers them.
//!
//! Inside: `engine` (shards of swarms; announce, scrape, expiry), `compact`
//! (the 36-bytes-a-peer layout of small IPv4 swarms), `peers` (the full
//! layout, its locality index, and the handout over either layout),
//! `locality` (where an address sits), `sample` (random walks without repeats),
//! `limits` (what one client can make the engine store), `transfer` (what
//! peers report they sent and received: the offload).

mod compact;
mod engine;
pub mod limits;
mod locality;
mod peers;
mod sample;
mod transfer;

pub use engine::{Census, Engine, EngineConfig, LocalitySettings, PurgeStats};
pub use limits::{Limit, LimitHits, StorageLimits};
pub use locality::{HandoutPolicy, Locality, SiteSpec, TierCounts, Topology, TopologyError};
pub use sample::{Walk, sample_indices};
pub use transfer::{BusySwarm, IMPLAUSIBLE, Origins, TransferTotals};

#[cfg(test)]
mod locality_tests;
#[cfg(test)]
mod transfer_tests;
