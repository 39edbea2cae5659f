//! swarmgate: a BitTorrent tracker that serves a container registry's layer
//! torrents to deploy agents.
//!
//! # Map
//!
//! Data flows one way: bytes → [`protocol`] → request → tracker service
//! (behind the [`gateway`] in `jwt` mode) → [`swarm`] → response → [`protocol`] → bytes.
//!
//! - [`bittorrent`]: the shared vocabulary (infohashes, peer ids, announce and
//!   scrape requests and replies, tiers) that frontends, gateway, engine and
//!   store all speak, owned by none of them.
//! - [`protocol`]: pure wire formats (query strings, bencoded replies, BEP 15/41 packets).
//! - [`frontend`]: sockets. The HTTP router and listener (connection cap,
//!   header and idle timeouts), UDP workers (batched on Linux), connection
//!   ids, client-address resolution.
//! - [`tracker`]: the protocol-agnostic [`tracker::TrackerRequest`] and the tower
//!   service that answers it from the engine; the gateway layer wraps it.
//! - [`gateway`]: the JWT check in front of the tracker service (a tower layer);
//!   an unknown kid waits for a paced, shared JWKS refetch.
//! - [`swarm`]: the engine. Swarms, peers, handout, expiry, storage limits,
//!   and the transfer totals peers report (the offload); pure, takes time
//!   and RNG.
//! - [`store`]: swarms across restarts: the engine's peers in a snapshot
//!   file (written on a timer and at shutdown, off the request path; loaded
//!   at start, expired peers dropped, damaged files moved aside).
//! - [`cluster`]: several instances as one tracker through Redis (standalone
//!   or Redis Cluster): the engine's change feed written to one hash per
//!   swarm and published in batches, other instances' batches applied, a
//!   resync on every (re)connect; never on the request path.
//! - [`files`]: durable writes (temporary file, fsync, rename) and moving
//!   damaged files aside, for the store and the bridge.
//! - [`config`]: the TOML configuration with its printed defaults.
//! - [`admin`]: the operators' listener (`/healthz`, `/readyz`, `/metrics`).
//! - [`metrics`]: one Prometheus registry per server; handles the frontends,
//!   gateway and expiry sweep count into (the engine keeps its own tier counts).
//! - [`server`]: startup wiring, configuration reload (swappable settings and
//!   gateway) and graceful shutdown; [`cli`]: the command line (SIGHUP, logs).
//! - [`torrent`]: the registry side's layer torrents (v1, private, signed announce URLs).
//! - [`simulate`]: a seeded deployment model that runs handout policies through the engine.
//! - [`bridge`]: `swarmgate bridge`, the registry side beside an existing OCI
//!   registry: signed layer torrents for callers the registry authorises, a
//!   token-gated web seed, the JWKS, key rotation.
//! - [`agent`]: `swarmgate agent`, the node side: a containerd/CRI-O registry
//!   mirror that pulls layer blobs over BitTorrent (librqbit behind
//!   [`agent::engine`]) from other agents, falls back to the origin, keeps
//!   verified blobs in a bounded cache and seeds them. A client of the
//!   bridge and the tracker over the wire; it never touches [`swarm`].

pub mod admin;
pub mod agent;
pub mod bittorrent;
pub mod bridge;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod files;
pub mod frontend;
pub mod gateway;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod simulate;
pub mod store;
pub mod swarm;
pub mod torrent;
pub mod tracker;
