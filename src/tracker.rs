//! The tracker service: the one protocol-agnostic request shape every frontend
//! builds, and the tower [`Service`] that answers it from the swarm engine.
//!
//! Frontends hold a [`BoxedTracker`]: the engine service alone in open mode,
//! or the same service wrapped in the gateway's layer. Either way a frontend
//! parses bytes into a [`TrackerRequest`], awaits a [`TrackerResponse`] or a
//! [`Rejection`], and writes bytes back; it never talks to the engine itself.

use std::cell::RefCell;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::SmallRng;
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::bittorrent::{AnnounceRequest, AnnounceResponse, ScrapeRequest, ScrapeResponse};
use crate::swarm::Engine;

/// A request as every frontend hands it on, whatever its wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerRequest {
    /// What is asked.
    pub kind: RequestKind,
    /// The bearer token the client presented (`jwt` parameter or `Authorization`), if any.
    pub token: Option<String>,
}

/// Announce or scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// Join or refresh a swarm and get peers.
    Announce(AnnounceRequest),
    /// Ask for swarm counts.
    Scrape(ScrapeRequest),
}

/// The answer to a [`TrackerRequest`], of the same kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackerResponse {
    /// Counts and peers.
    Announce(AnnounceResponse),
    /// Counts per torrent.
    Scrape(ScrapeResponse),
}

/// A refused request. `reason` is what the client reads as `failure reason`;
/// `cause` is a short fixed label for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Rejection {
    /// The client-facing message.
    pub reason: String,
    /// A stable, low-cardinality label, e.g. `expired`.
    pub cause: &'static str,
}

/// The type-erased service a frontend calls, with or without the gateway in front.
pub type BoxedTracker = BoxCloneSyncService<TrackerRequest, TrackerResponse, Rejection>;

/// Answers requests from the engine, supplying the wall clock and a per-thread RNG.
#[derive(Clone)]
pub struct TrackerService {
    engine: Arc<Engine>,
}

impl TrackerService {
    /// A service over `engine`.
    pub fn new(engine: Arc<Engine>) -> Self {
        Self { engine }
    }

    /// Answers a request synchronously; the engine never waits.
    pub fn answer(&self, request: &TrackerRequest) -> TrackerResponse {
        match &request.kind {
            RequestKind::Announce(announce) => TrackerResponse::Announce(
                RNG.with_borrow_mut(|rng| self.engine.announce(announce, Instant::now(), rng)),
            ),
            RequestKind::Scrape(scrape) => TrackerResponse::Scrape(self.engine.scrape(scrape)),
        }
    }

    /// This service, boxed for frontends.
    pub fn boxed(self) -> BoxedTracker {
        BoxCloneSyncService::new(self)
    }
}

thread_local! {
    // Peer sampling needs speed, not unpredictability to an attacker: seeded
    // once per thread from the OS generator, then a cheap SmallRng.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_rng(&mut rand::rng()));
}

impl Service<TrackerRequest> for TrackerService {
    type Response = TrackerResponse;
    type Error = Rejection;
    type Future = Ready<Result<TrackerResponse, Rejection>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: TrackerRequest) -> Self::Future {
        ready(Ok(self.answer(&request)))
    }
}
