//! Frontends: sockets in, [`TrackerRequest`](crate::tracker::TrackerRequest)s
//! to the tracker service, bytes out. They parse and write with
//! [`protocol`](crate::protocol) and decide nothing about swarms or tokens.
//!
//! - [`http`]: the axum router for `/announce` and `/scrape`.
//! - [`udp`]: BEP 15 request handling, stateless connection ids, tokio socket workers.
//! - [`udp_batch`]: Linux socket workers batching with `recvmmsg`/`sendmmsg`.
//! - [`client_ip`]: who the client really is, behind trusted proxies.

pub mod client_ip;
pub mod http;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod udp_batch;
