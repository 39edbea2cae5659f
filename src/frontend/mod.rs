//! Frontends: sockets in, [`TrackerRequest`](crate::tracker::TrackerRequest)s
//! to the tracker service, bytes out. They parse and write with
//! [`protocol`](crate::protocol) and decide nothing about swarms or tokens.
//!
//! - [`http`]: the axum router for `/announce` and `/scrape`.
//! - [`http_listener`]: accepting HTTP connections: a cap, header and idle timeouts.
//! - [`udp`]: BEP 15 request handling, stateless connection ids, tokio socket workers.
//! - [`udp_batch`]: Linux socket workers batching with `recvmmsg`/`sendmmsg`.
//! - [`client_ip`]: who the client really is, behind trusted proxies.

pub mod client_ip;
pub mod http;
pub mod http_listener;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod udp_batch;

use crate::config::AnnounceConfig;

/// The `[announce]` settings every frontend applies to every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceLimits {
    /// `interval` in replies, seconds.
    pub interval: u32,
    /// `min interval` in replies (HTTP only), seconds.
    pub min_interval: u32,
    /// Peers handed out when the client names no `numwant` (or -1).
    pub default_numwant: u32,
    /// Upper bound on `numwant`.
    pub max_numwant: u32,
    /// Upper bound on infohashes per scrape.
    pub max_scrape_infohashes: usize,
}

impl AnnounceLimits {
    /// Takes the limits from `[announce]`.
    pub fn from_config(announce: &AnnounceConfig) -> Self {
        let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
        Self {
            interval: secs(announce.interval),
            min_interval: secs(announce.min_interval),
            default_numwant: announce.default_numwant,
            max_numwant: announce.max_numwant,
            max_scrape_infohashes: announce.max_scrape_infohashes as usize,
        }
    }

    /// The peers to hand out for a client that asked for `asked`.
    pub fn numwant(&self, asked: Option<u32>) -> usize {
        asked.unwrap_or(self.default_numwant).min(self.max_numwant) as usize
    }
}
