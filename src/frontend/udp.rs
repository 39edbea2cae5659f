//! The UDP frontend (BEP 15, with the token in BEP 41 URL data): socket
//! workers that parse with [`protocol::udp`](crate::protocol::udp), call the
//! same tracker service as HTTP, and write one reply packet per request.
//!
//! Connection ids are stateless (a keyed MAC, see [`ConnectionIds`]), so
//! nothing is stored per client. Only a connect reply, or an error no longer
//! than the request, goes to an address that has not proven it owns its
//! source address with a valid connection id: the tracker cannot be used to
//! amplify traffic toward a forged source.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use siphasher::sip::SipHasher24;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tower::ServiceExt;

use super::AnnounceLimits;
use crate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId, ScrapeRequest};
use crate::config::Config;
use crate::metrics::{self, Outcome, RequestMetrics};
use crate::protocol::query;
use crate::protocol::udp::{self, UdpAnnounceReply, UdpEvent, UdpRequest, UdpScrapeCounts};
use crate::tracker::{BoxedTracker, Rejection, RequestKind, TrackerRequest, TrackerResponse};

/// The largest reply payload per family: a 1500-byte MTU less IP and UDP headers.
const MAX_PAYLOAD_V4: usize = 1500 - 20 - 8;
const MAX_PAYLOAD_V6: usize = 1500 - 40 - 8;
/// Peers that fit an announce reply (20-byte header, then 6 or 18 bytes each).
const MAX_PEERS_V4: usize = (MAX_PAYLOAD_V4 - 20) / 6;
const MAX_PEERS_V6: usize = (MAX_PAYLOAD_V6 - 20) / 18;
/// Connection ids are minted per window of this many seconds.
const WINDOW_SECS: u64 = 15;
/// BEP 15: a connection id is good for two minutes.
const LIFETIME_SECS: u64 = 120;

/// Issues and checks connection ids: 16 bits of time window, then a 48-bit
/// SipHash-2-4 MAC of (window, client IP, client port) under a secret key.
#[derive(Clone)]
pub struct ConnectionIds {
    key: [u8; 16],
    max_age_windows: u64,
}

impl ConnectionIds {
    /// Ids keyed by `secret` (the same secret on every instance behind one
    /// address keeps ids valid across them and across restarts), valid for two
    /// minutes plus `skew`.
    pub fn new(secret: &[u8], skew: Duration) -> Self {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret);
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest.as_ref()[..16]);
        Self {
            key,
            max_age_windows: (LIFETIME_SECS + skew.as_secs()).div_ceil(WINDOW_SECS),
        }
    }

    /// Ids keyed by a random secret: valid only for this process.
    pub fn random(skew: Duration) -> Self {
        let mut secret = [0u8; 32];
        rand::fill(&mut secret);
        Self::new(&secret, skew)
    }

    fn mac(&self, window: u64, addr: &SocketAddr) -> u64 {
        let mut hasher = SipHasher24::new_with_key(&self.key);
        hasher.write_u64(window);
        let ip = match addr.ip().to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            IpAddr::V6(v6) => v6,
        };
        hasher.write(&ip.octets());
        hasher.write_u16(addr.port());
        hasher.finish() & 0xFFFF_FFFF_FFFF
    }

    /// A connection id for `addr` at `now` (Unix seconds).
    pub fn issue(&self, now: u64, addr: &SocketAddr) -> u64 {
        let window = now / WINDOW_SECS;
        ((window & 0xFFFF) << 48) | self.mac(window, addr)
    }

    /// Whether `id` was issued to `addr` and is still young enough at `now`.
    pub fn verify(&self, id: u64, now: u64, addr: &SocketAddr) -> bool {
        let now_window = now / WINDOW_SECS;
        let age = (now_window & 0xFFFF).wrapping_sub(id >> 48) & 0xFFFF;
        if age > self.max_age_windows || age > now_window {
            return false;
        }
        self.mac(now_window - age, addr) == id & 0xFFFF_FFFF_FFFF
    }
}

/// Where the UDP frontend reads the time (Unix seconds); tests inject their own.
pub type UnixClock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The parts of the configuration the UDP frontend reads per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpSettings {
    /// Intervals and numwant/scrape limits.
    pub limits: AnnounceLimits,
    /// Believe the announce's `ip` field.
    pub allow_ip_override: bool,
}

impl UdpSettings {
    /// Takes the UDP frontend's settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            limits: AnnounceLimits::from_config(&config.announce),
            allow_ip_override: config.udp.allow_ip_override,
        }
    }
}

/// Everything a UDP worker needs; cheap to clone into each worker.
#[derive(Clone)]
pub struct UdpFrontend {
    /// The tracker service (behind the gateway in jwt mode).
    pub service: BoxedTracker,
    /// Per-request settings (swapped whole by a configuration reload).
    pub settings: Arc<ArcSwap<UdpSettings>>,
    /// Connection id issuer.
    pub ids: Arc<ConnectionIds>,
    /// The time source.
    pub clock: UnixClock,
    /// Where requests are counted.
    pub metrics: Arc<RequestMetrics>,
}

/// The outcome of the synchronous part of handling a packet.
// Returned once per packet and matched at once: boxing the request to
// shrink `Done` would cost an allocation per announce.
#[allow(clippy::large_enum_variant)]
pub enum Step {
    /// The reply, if any, is written.
    Done,
    /// The tracker service must answer `request` first; then [`UdpFrontend::finish`] writes the reply.
    Call(TrackerRequest, Pending),
}

/// What writing the reply needs once the tracker service has answered.
pub struct Pending {
    /// Where the reply goes.
    pub from: SocketAddr,
    transaction_id: u32,
    kind: PendingKind,
    started: Instant,
}

enum PendingKind {
    Announce { ipv6: bool, max_peers: usize },
    Scrape { info_hashes: Vec<[u8; 20]> },
}

impl PendingKind {
    fn metric(&self) -> metrics::RequestKind {
        match self {
            PendingKind::Announce { .. } => metrics::RequestKind::Announce,
            PendingKind::Scrape { .. } => metrics::RequestKind::Scrape,
        }
    }
}

impl UdpFrontend {
    /// Serves `socket` until `stopped` turns true. Run several on one socket to use several cores.
    pub async fn serve(self, socket: Arc<UdpSocket>, mut stopped: watch::Receiver<bool>) {
        let mut packet = vec![0u8; 2048];
        let mut reply = Vec::with_capacity(MAX_PAYLOAD_V4);
        loop {
            let (len, from) = tokio::select! {
                received = socket.recv_from(&mut packet) => match received {
                    Ok(received) => received,
                    Err(error) => {
                        // ICMP errors from earlier sends surface here on some systems; keep serving.
                        tracing::debug!(%error, "UDP receive failed");
                        continue;
                    }
                },
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            reply.clear();
            self.handle(&packet[..len], from, &mut reply).await;
            if !reply.is_empty()
                && let Err(error) = socket.send_to(&reply, from).await
            {
                tracing::debug!(%error, %from, "UDP send failed");
            }
        }
    }

    /// Answers one packet from `from` into `out`; leaves `out` empty when no reply may be sent.
    pub async fn handle(&self, packet: &[u8], from: SocketAddr, out: &mut Vec<u8>) {
        if let Step::Call(request, pending) = self.begin(packet, from, out) {
            let result = self.service.clone().oneshot(request).await;
            self.finish(pending, result, out);
        }
    }

    /// Parses and checks a packet; writes what needs no tracker service
    /// (connect replies, errors) into `out`, or returns the request to make.
    pub fn begin(&self, packet: &[u8], from: SocketAddr, out: &mut Vec<u8>) -> Step {
        let started = Instant::now();
        let done = |kind, outcome| {
            self.metrics.record(kind, outcome, started.elapsed());
            Step::Done
        };
        let now = (self.clock)();
        let request = match udp::parse_request(packet) {
            Ok(request) => request,
            Err(error) => {
                tracing::debug!(%from, %error, "malformed UDP packet");
                if let Some(transaction_id) = error.transaction_id {
                    udp::write_error(out, transaction_id, error.message, packet.len());
                }
                return done(metrics::RequestKind::Unknown, Outcome::Error);
            }
        };
        let (connection_id, transaction_id, kind) = match &request {
            UdpRequest::Connect { transaction_id } => {
                udp::write_connect(out, *transaction_id, self.ids.issue(now, &from));
                return done(metrics::RequestKind::Connect, Outcome::Ok);
            }
            UdpRequest::Announce(announce) => (
                announce.connection_id,
                announce.transaction_id,
                metrics::RequestKind::Announce,
            ),
            UdpRequest::Scrape {
                connection_id,
                transaction_id,
                ..
            } => (
                *connection_id,
                *transaction_id,
                metrics::RequestKind::Scrape,
            ),
        };
        if !self.ids.verify(connection_id, now, &from) {
            tracing::debug!(%from, "request with a bad or expired connection id");
            udp::write_error(
                out,
                transaction_id,
                "bad or expired connection id",
                packet.len(),
            );
            return done(kind, Outcome::Rejected);
        }
        match request {
            UdpRequest::Announce(announce) => self.begin_announce(announce, from, started),
            UdpRequest::Scrape { info_hashes, .. }
                if info_hashes.len() > self.settings.load().limits.max_scrape_infohashes =>
            {
                udp::write_error(out, transaction_id, "too many infohashes", MAX_PAYLOAD_V6);
                done(kind, Outcome::Rejected)
            }
            UdpRequest::Scrape { info_hashes, .. } => {
                let request = TrackerRequest {
                    kind: RequestKind::Scrape(ScrapeRequest {
                        info_hashes: info_hashes.iter().copied().map(InfoHash).collect(),
                    }),
                    // BEP 41 options follow announces only, so a UDP scrape carries no token.
                    token: None,
                };
                let kind = PendingKind::Scrape {
                    info_hashes: info_hashes.to_vec(),
                };
                Step::Call(
                    request,
                    Pending {
                        from,
                        transaction_id,
                        kind,
                        started,
                    },
                )
            }
            UdpRequest::Connect { .. } => Step::Done,
        }
    }

    fn begin_announce(
        &self,
        announce: udp::UdpAnnounce<'_>,
        from: SocketAddr,
        started: Instant,
    ) -> Step {
        let settings = self.settings.load();
        let ip = if settings.allow_ip_override && !announce.ip.is_unspecified() {
            IpAddr::V4(announce.ip)
        } else {
            from.ip().to_canonical()
        };
        let ipv6 = ip.is_ipv6();
        let max_peers = if ipv6 { MAX_PEERS_V6 } else { MAX_PEERS_V4 };
        let numwant = settings.limits.numwant(announce.numwant).min(max_peers);
        let token = query::jwt(announce.url_data.query());
        let request = TrackerRequest {
            kind: RequestKind::Announce(AnnounceRequest {
                info_hash: InfoHash(announce.info_hash),
                peer_id: PeerId(announce.peer_id),
                addr: SocketAddr::new(ip, announce.port),
                event: match announce.event {
                    UdpEvent::None => Event::None,
                    UdpEvent::Completed => Event::Completed,
                    UdpEvent::Started => Event::Started,
                    UdpEvent::Stopped => Event::Stopped,
                },
                left: announce.left,
                uploaded: announce.uploaded,
                downloaded: announce.downloaded,
                numwant,
                peer_ids: false,
            }),
            token,
        };
        let pending = Pending {
            from,
            transaction_id: announce.transaction_id,
            kind: PendingKind::Announce { ipv6, max_peers },
            started,
        };
        Step::Call(request, pending)
    }

    /// Writes the reply to a request once the tracker service has answered.
    pub fn finish(
        &self,
        pending: Pending,
        result: Result<TrackerResponse, Rejection>,
        out: &mut Vec<u8>,
    ) {
        let transaction_id = pending.transaction_id;
        let started = pending.started;
        let (kind, outcome) = match (pending.kind, result) {
            (
                PendingKind::Announce { ipv6, max_peers },
                Ok(TrackerResponse::Announce(response)),
            ) => {
                let reply = UdpAnnounceReply {
                    transaction_id,
                    interval: self.settings.load().limits.interval,
                    leechers: response.stats.incomplete,
                    seeders: response.stats.complete,
                };
                udp::write_announce(
                    out,
                    &reply,
                    ipv6,
                    max_peers,
                    response.peers.iter().map(|p| p.addr),
                );
                (metrics::RequestKind::Announce, Outcome::Ok)
            }
            (PendingKind::Scrape { info_hashes }, Ok(TrackerResponse::Scrape(response))) => {
                let counts = info_hashes.iter().map(|hash| {
                    let stats = response
                        .files
                        .iter()
                        .find(|(known, _)| known.0 == *hash)
                        .map(|(_, stats)| *stats)
                        .unwrap_or_default();
                    UdpScrapeCounts {
                        seeders: stats.complete,
                        completed: stats.downloaded,
                        leechers: stats.incomplete,
                    }
                });
                udp::write_scrape(out, transaction_id, counts);
                (metrics::RequestKind::Scrape, Outcome::Ok)
            }
            (kind, Ok(_)) => {
                udp::write_error(out, transaction_id, "internal error", 64);
                (kind.metric(), Outcome::Error)
            }
            (kind, Err(rejection)) => {
                tracing::debug!(from = %pending.from, cause = rejection.cause, "UDP request rejected");
                udp::write_error(out, transaction_id, &rejection.reason, MAX_PAYLOAD_V6);
                (kind.metric(), Outcome::Rejected)
            }
        };
        self.metrics.record(kind, outcome, started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_bound_to_address_and_expire() {
        let ids = ConnectionIds::new(b"secret", Duration::from_secs(30));
        let client: SocketAddr = "198.51.100.7:6881".parse().expect("addr");
        let now = 1_800_000_000;
        let id = ids.issue(now, &client);
        assert!(ids.verify(id, now, &client));
        assert!(
            ids.verify(id, now + 150, &client),
            "two minutes plus the skew allowance"
        );
        assert!(!ids.verify(id, now + 180, &client), "expired");
        assert!(
            !ids.verify(id, now, &"198.51.100.7:6882".parse().expect("addr")),
            "other port"
        );
        assert!(
            !ids.verify(id, now, &"198.51.100.8:6881".parse().expect("addr")),
            "other ip"
        );
        assert!(!ids.verify(id ^ 1, now, &client), "forged");
        assert!(
            ids.verify(
                id,
                now,
                &"[::ffff:198.51.100.7]:6881".parse().expect("addr")
            ),
            "mapped = plain IPv4"
        );
        assert!(
            !ConnectionIds::new(b"other", Duration::ZERO).verify(id, now, &client),
            "other secret"
        );
        assert!(
            ConnectionIds::new(b"secret", Duration::ZERO).verify(id, now + 60, &client),
            "same secret, other instance"
        );
        assert!(!ids.verify(id, now - 3600, &client), "from the future");
    }
}
