//! Wire formats, pure: bytes in, typed values out, and back. No I/O and no
//! runtime types, so every parser here can be fuzzed and property-tested alone.
//!
//! - [`query`]: HTTP announce and scrape query strings (BEP 3, 7, 23, 48).
//! - [`reply`]: the bencoded bodies written back to HTTP clients.
//! - [`udp`]: BEP 15 UDP packets with BEP 41 options.

pub mod query;
pub mod reply;
pub mod udp;
