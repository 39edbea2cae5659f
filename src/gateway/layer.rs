//! The tower layer that puts the gateway in front of the tracker service, so
//! the HTTP and UDP frontends get exactly the same checks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use tower::{Layer, Service};

use super::Gateway;
use super::error::AuthError;
use super::token::Approval;
use crate::tracker::{Rejection, RequestKind, TrackerRequest, TrackerResponse};

/// Wraps a tracker service so that only approved requests reach it.
///
/// The gateway sits in a swappable slot: a configuration reload installs a
/// new one (or none, for `auth.mode = "open"`) under running listeners.
#[derive(Clone)]
pub struct GatewayLayer {
    gateway: Arc<ArcSwapOption<Gateway>>,
}

impl GatewayLayer {
    /// A layer checking tokens with `gateway`.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self::swappable(Arc::new(ArcSwapOption::from(Some(gateway))))
    }

    /// A layer checking tokens with whatever gateway `slot` holds at each
    /// request; an empty slot lets every request through.
    pub fn swappable(slot: Arc<ArcSwapOption<Gateway>>) -> Self {
        Self { gateway: slot }
    }
}

impl<S> Layer<S> for GatewayLayer {
    type Service = GatewayService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GatewayService {
            inner,
            gateway: self.gateway.clone(),
        }
    }
}

/// The tracker service behind the gateway.
#[derive(Clone)]
pub struct GatewayService<S> {
    inner: S,
    gateway: Arc<ArcSwapOption<Gateway>>,
}

impl<S> Service<TrackerRequest> for GatewayService<S>
where
    S: Service<TrackerRequest, Response = TrackerResponse, Error = Rejection>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = TrackerResponse;
    type Error = Rejection;
    type Future = Pin<Box<dyn Future<Output = Result<TrackerResponse, Rejection>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Rejection>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: TrackerRequest) -> Self::Future {
        // The clone is not ready yet; keep the ready one for this call (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(gateway) = self.gateway.load_full() else {
            return Box::pin(inner.call(request));
        };
        Box::pin(async move {
            let checked = gateway.check(request.token.as_deref(), unix_now()).await;
            let request = checked.and_then(|approval| narrow(request, &approval));
            match request {
                Ok(request) => inner.call(request).await,
                Err(error) => {
                    tracing::debug!(cause = error.cause(), %error, "request refused by the gateway");
                    gateway.count_rejection(&error);
                    Err(error.into())
                }
            }
        })
    }
}

/// Lets through what the token approves: an announce for its torrent, or the
/// part of a scrape about its torrent (everything else is left out).
fn narrow(mut request: TrackerRequest, approval: &Approval) -> Result<TrackerRequest, AuthError> {
    match &mut request.kind {
        RequestKind::Announce(announce) => approval.check_info_hash(&announce.info_hash)?,
        RequestKind::Scrape(scrape) => scrape
            .info_hashes
            .retain(|hash| *hash == approval.info_hash),
    }
    Ok(request)
}

/// Seconds since the Unix epoch, as token claims count time.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
