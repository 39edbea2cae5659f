//! Frontends: sockets in, [`TrackerRequest`](crate::tracker::TrackerRequest)s
//! to the tracker service, bytes out. They parse and write with
//! [`protocol`](crate::protocol) and decide nothing about swarms or tokens.
//!
//! - [`http`]: the axum router for `/announce` and `/scrape`.
//! - [`udp`]: BEP 15 socket workers and stateless connection ids.
//! - [`client_ip`]: who the client really is, behind trusted proxies.

pub mod client_ip;
pub mod http;
pub mod udp;
