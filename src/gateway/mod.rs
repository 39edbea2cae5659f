//! The announce gateway: only requests carrying a registry-signed token that
//! approves their infohash reach the swarm engine.
//!
//! - [`token`]: pure checks of one token (header, signature, claims).
//! - [`keys`]: the public keys, from a JWKS document or files.
//! - [`cache`]: verified tokens, so a re-announce skips the signature.
//! - [`fetch`]: the registry's JWKS over HTTP.
//! - [`refetch`]: when an unknown `kid` makes a request wait for a new fetch.
//! - [`layer`]: the tower layer both frontends call through.
//! - [`mint`]: the registry's side — key generation and token minting.
//!
//! [`Gateway`] ties them together: it holds the current [`KeySet`] (swapped
//! atomically), refreshes it from the JWKS URL, has a request whose token
//! names an unknown `kid` wait for a fetch that starts after it arrived
//! (single flight, paced, bounded), and purges cached approvals of keys that
//! left the set.

pub mod cache;
pub mod error;
pub mod fetch;
pub mod keys;
pub mod layer;
pub mod mint;
pub mod refetch;
pub mod token;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

pub use cache::TokenCache;
pub use error::AuthError;
pub use fetch::{FetchError, JwksFetcher};
pub use keys::{KeySet, VerifyingKey};
pub use layer::GatewayLayer;
pub use refetch::RefetchPolicy;
pub use token::{Approval, TokenPolicy};

use crate::metrics::GatewayMetrics;
use error::printable;

/// How keys reach the gateway, from `[auth]`.
pub struct KeySources {
    /// Keys from `auth.keys_dir`, fixed for the process's life.
    pub static_keys: Vec<VerifyingKey>,
    /// The registry's JWKS, if `auth.jwks_url` is set.
    pub fetcher: Option<JwksFetcher>,
    /// Pacing and bounds of fetches that unknown kids wait for.
    pub refetch: RefetchPolicy,
}

/// The gateway's shared state.
pub struct Gateway {
    policy: TokenPolicy,
    keys: ArcSwap<KeySet>,
    /// Whether a key set has ever been installed (readiness).
    loaded: AtomicBool,
    static_keys: Vec<VerifyingKey>,
    fetcher: Option<JwksFetcher>,
    /// Every fetch goes through this line: single flight, paced.
    refetch: refetch::Refetcher,
    cache: TokenCache,
    metrics: GatewayMetrics,
}

/// The outcome of the synchronous part of a check.
enum Quick {
    Done(Result<Approval, AuthError>),
    /// The token names a key we do not have (or none, and no key without a
    /// kid fits); worth a refetch.
    UnknownKid(Option<String>),
}

impl Gateway {
    /// A gateway with `policy`, keys from `sources`, and a cache of `cache_capacity` tokens.
    /// Static keys are installed at once; fetched ones arrive with [`Gateway::refresh`].
    pub fn new(policy: TokenPolicy, sources: KeySources, cache_capacity: usize) -> Self {
        let gateway = Self {
            policy,
            keys: ArcSwap::from_pointee(KeySet::default()),
            loaded: AtomicBool::new(false),
            static_keys: sources.static_keys,
            fetcher: sources.fetcher,
            refetch: refetch::Refetcher::new(sources.refetch),
            cache: TokenCache::new(cache_capacity),
            metrics: GatewayMetrics::noop(),
        };
        if !gateway.static_keys.is_empty() {
            gateway.install(KeySet::new(gateway.static_keys.clone()));
        }
        gateway
    }

    /// Counts cache hits, refusals and key set refreshes into `metrics`.
    pub fn with_metrics(mut self, metrics: GatewayMetrics) -> Self {
        metrics.keys.set(self.keys.load().len() as f64);
        self.metrics = metrics;
        self
    }

    /// Counts one refused request by its cause.
    pub fn count_rejection(&self, error: &AuthError) {
        self.metrics.rejected(error.cause());
    }

    /// Whether a key set has been loaded, so tokens can be checked at all.
    pub fn keys_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// Replaces the key set and forgets approvals by keys no longer in it.
    pub fn install(&self, keys: KeySet) {
        let keys = Arc::new(keys);
        self.metrics.keys.set(keys.len() as f64);
        self.keys.store(keys.clone());
        self.loaded.store(true, Ordering::Release);
        let purged = self.cache.retain_keys(&keys);
        if purged > 0 {
            tracing::info!(
                purged,
                "forgot cached tokens signed by keys that left the key set"
            );
        }
    }

    /// Fetches the JWKS (once the pacing interval allows) and installs it
    /// with the static keys. On failure the current key set stays.
    pub async fn refresh(&self) -> Result<usize, FetchError> {
        self.refetch
            .fetch_now(|| async {
                let result = self.fetch_and_install().await;
                let ok = result.is_ok();
                (result, ok)
            })
            .await
    }

    async fn fetch_and_install(&self) -> Result<usize, FetchError> {
        let Some(fetcher) = &self.fetcher else {
            return Ok(self.keys.load().len());
        };
        let fetched = match fetcher.fetch().await {
            Ok(fetched) => {
                self.metrics.jwks_ok.increment(1);
                self.metrics.jwks_last_success.set(layer::unix_now() as f64);
                fetched
            }
            Err(error) => {
                self.metrics.jwks_failed.increment(1);
                return Err(error);
            }
        };
        for skipped in &fetched.skipped {
            tracing::warn!(url = fetcher.url(), "skipped a JWK: {skipped}");
        }
        let keys = KeySet::new(self.static_keys.iter().cloned().chain(fetched.keys));
        let count = keys.len();
        self.install(keys);
        Ok(count)
    }

    /// Waits for a JWKS fetch that starts after this call, because a token
    /// named `kid`, unless the refetch line says not to wait.
    async fn refetch_for(&self, kid: Option<&str>) -> Result<(), AuthError> {
        let ticket = self.refetch.ticket();
        let refused = |why| match why {
            refetch::NoWait::RecentlyAbsent => unknown_key(kid),
            refetch::NoWait::Busy => AuthError::RefetchBusy,
        };
        self.refetch.admit(kid, Instant::now()).map_err(refused)?;
        let fetched_ok = self
            .refetch
            .wait_for_fetch(ticket, || async {
                match self.fetch_and_install().await {
                    Ok(count) => {
                        tracing::info!(keys = count, "refetched the JWKS for an unknown kid");
                        true
                    }
                    Err(error) => {
                        tracing::warn!(%error, "refetching the JWKS for an unknown kid failed");
                        false
                    }
                }
            })
            .await
            .map_err(refused)?;
        if let Some(kid) = kid
            && fetched_ok
            && !self.keys.load().contains(kid)
        {
            self.refetch.remember_absent(kid, Instant::now());
        }
        Ok(())
    }

    /// Checks a token at `now` (Unix seconds): cached approval, or full
    /// verification; a token naming an unknown kid waits for a fresh key set.
    pub async fn check(&self, token: Option<&str>, now: u64) -> Result<Approval, AuthError> {
        match self.quick_check(token, now) {
            Quick::Done(result) => result,
            Quick::UnknownKid(kid) => {
                if self.fetcher.is_some() {
                    self.refetch_for(kid.as_deref()).await?;
                }
                match self.quick_check(token, now) {
                    Quick::Done(result) => result,
                    Quick::UnknownKid(_) if !self.keys_loaded() => Err(AuthError::NoKeys),
                    Quick::UnknownKid(_) => Err(unknown_key(kid.as_deref())),
                }
            }
        }
    }

    fn quick_check(&self, token: Option<&str>, now: u64) -> Quick {
        let token = match token {
            Some(token) if !token.is_empty() => token,
            _ => return Quick::Done(Err(AuthError::Missing)),
        };
        // Before hashing: a 64 KiB token must cost nothing.
        if let Err(error) = self.policy.check_size(token) {
            return Quick::Done(Err(error));
        }
        let digest = cache::token_digest(token);
        if let Some(approval) = self.cache.get(&digest) {
            self.metrics.cache_hits.increment(1);
            return Quick::Done(
                approval
                    .check_time(now, self.policy.leeway_secs)
                    .map(|()| approval),
            );
        }
        self.metrics.cache_misses.increment(1);
        let header = match token::read_header(token, &self.policy) {
            Ok(header) => header,
            Err(error) => return Quick::Done(Err(error)),
        };
        let keys = self.keys.load();
        let result = match header.kid.as_deref() {
            Some(kid) => match keys.get(kid) {
                Some(key) => token::verify(token, &header, key, &self.policy, now),
                None => return Quick::UnknownKid(header.kid),
            },
            None => {
                let mut candidates = keys
                    .anonymous()
                    .iter()
                    .filter(|key| key.accepts(header.alg))
                    .peekable();
                if candidates.peek().is_none() {
                    return Quick::UnknownKid(None);
                }
                // Without a kid, any key of the right type may have signed it.
                let mut last = Err(AuthError::BadSignature);
                for key in candidates {
                    last = token::verify(token, &header, key, &self.policy, now);
                    if !matches!(last, Err(AuthError::BadSignature)) {
                        break;
                    }
                }
                last
            }
        };
        if let Ok(approval) = &result {
            self.cache.insert(digest, approval.clone());
        }
        Quick::Done(result)
    }

    /// How many requests are waiting for a JWKS fetch.
    pub fn waiting_for_keys(&self) -> usize {
        self.refetch.waiting()
    }

    /// Keeps the key set fresh until `stopped` resolves: every `refresh`
    /// after a success, and after a failure again with backoff (from 500 ms,
    /// doubling up to `refresh`).
    pub async fn keep_fresh(self: Arc<Self>, refresh: Duration, stopped: impl Future<Output = ()>) {
        let Some(fetcher) = &self.fetcher else { return };
        let url = fetcher.url().to_owned();
        let mut backoff = Duration::from_millis(500);
        tokio::pin!(stopped);
        loop {
            let wait = match self.refresh().await {
                Ok(count) => {
                    tracing::info!(%url, keys = count, kids = ?self.keys().kids(), "JWKS loaded");
                    backoff = Duration::from_millis(500);
                    refresh
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "JWKS refresh failed; keeping the last good key set");
                    let wait = backoff;
                    backoff = (backoff * 2).min(refresh);
                    wait
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut stopped => return,
            }
        }
    }
}

/// The refusal for a kid no key set holds.
fn unknown_key(kid: Option<&str>) -> AuthError {
    AuthError::UnknownKey(kid.map(printable).unwrap_or_else(|| "none".into()))
}
