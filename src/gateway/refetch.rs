//! When to fetch the JWKS again because a token named a key we do not have.
//!
//! The rule that keeps key rotation from ever refusing a good token: a request
//! whose `kid` is unknown waits for a fetch that *started after it arrived*,
//! and is refused only if that fetch did not bring the key. Everything else
//! here bounds what a hostile token holder can make that rule cost:
//!
//! - **single flight**: one fetch at a time; every request waiting when it
//!   starts is answered by it;
//! - **pacing, not a budget**: fetch starts are at least `min_interval` apart,
//!   so a flood of made-up kids costs the registry one fetch per interval and
//!   delays a genuine new key by at most one interval plus one fetch (a budget
//!   that a bogus kid can spend would instead lock the new key out until the
//!   next periodic refresh);
//! - **bounded waiting**: past `max_waiting` requests in line, a request with
//!   an unknown kid is refused at once;
//! - **absent kids remembered**: a kid that a fetch just showed missing is
//!   refused at once for `min_interval`, so one bogus kid repeated does not make
//!   every request wait.
//!
//! Periodic refreshes and reloads go through the same line: they are paced
//! too, always run a fetch of their own, and answer whoever is waiting.

use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// How many absent kids are remembered at most; past it the memory starts over.
const ABSENT_KIDS_MAX: usize = 4096;

/// The refetch limits, from `[auth]`.
#[derive(Debug, Clone, Copy)]
pub struct RefetchPolicy {
    /// Least time between the starts of two fetches.
    pub min_interval: Duration,
    /// Most requests waiting for a fetch at once.
    pub max_waiting: usize,
}

/// Where a fetch attempt stands; held in the single-flight lock.
struct Flight {
    /// When the last fetch started, for pacing (tokio's clock, so tests can drive it).
    last_start: Option<tokio::time::Instant>,
    /// The sequence number of the last fetch that finished, and whether it succeeded.
    finished: u64,
    finished_ok: bool,
}

/// A request's place in line: fetches started before it arrived do not count.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Why a request did not get a fetch to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWait {
    /// A fetch moments ago showed this kid absent.
    RecentlyAbsent,
    /// `max_waiting` requests are already waiting.
    Busy,
}

/// The refetch line of one gateway.
pub struct Refetcher {
    policy: RefetchPolicy,
    /// Fetches started so far; a fetch's sequence number is this after its start.
    started: AtomicU64,
    waiting: AtomicUsize,
    flight: tokio::sync::Mutex<Flight>,
    /// Absent kids by a keyed hash (a kid may be kilobytes long; its hash is
    /// 8 bytes), with when a fetch showed them missing.
    absent: Mutex<HashMap<u64, Instant>>,
    kid_hasher: foldhash::fast::RandomState,
}

/// Holds one waiting place; gives it back when dropped (also when the request is cancelled).
struct Place<'a>(&'a AtomicUsize);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Refetcher {
    /// An idle line with `policy`.
    pub fn new(policy: RefetchPolicy) -> Self {
        Self {
            policy,
            started: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            flight: tokio::sync::Mutex::new(Flight {
                last_start: None,
                finished: 0,
                finished_ok: false,
            }),
            absent: Mutex::new(HashMap::new()),
            kid_hasher: foldhash::fast::RandomState::default(),
        }
    }

    /// Takes a place in line now: only fetches started after this moment answer it.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.started.load(Ordering::Acquire))
    }

    /// How many requests are waiting for a fetch.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Whether `kid` should wait for a fetch at all (see [`NoWait`]).
    pub fn admit(&self, kid: Option<&str>, now: Instant) -> Result<(), NoWait> {
        if let Some(kid) = kid {
            let absent = self.absent.lock();
            if absent
                .get(&self.kid_hasher.hash_one(kid))
                .is_some_and(|at| now.duration_since(*at) < self.policy.min_interval)
            {
                return Err(NoWait::RecentlyAbsent);
            }
        }
        Ok(())
    }

    /// Remembers that a fetch finished at `now` did not hold `kid`.
    pub fn remember_absent(&self, kid: &str, now: Instant) {
        if self.policy.min_interval.is_zero() {
            return;
        }
        let mut absent = self.absent.lock();
        if absent.len() >= ABSENT_KIDS_MAX {
            absent.retain(|_, at| now.duration_since(*at) < self.policy.min_interval);
            if absent.len() >= ABSENT_KIDS_MAX {
                absent.clear();
            }
        }
        absent.insert(self.kid_hasher.hash_one(kid), now);
    }

    /// Waits until a fetch that started after `ticket` has finished, running
    /// it here if nobody else is (after the pacing interval). Returns whether
    /// that fetch succeeded, or [`NoWait::Busy`] at once when the line is full.
    pub async fn wait_for_fetch<F, Fut>(&self, ticket: Ticket, fetch: F) -> Result<bool, NoWait>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.policy.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(NoWait::Busy);
        }
        let _place = Place(&self.waiting);
        Ok(self.fetch_after(ticket, fetch).await)
    }

    /// Runs `fetch` in line (after the pacing interval), whoever else is
    /// waiting: for the periodic refresh and reloads, which need their own
    /// outcome and are never turned away.
    pub async fn fetch_now<F, Fut, T>(&self, fetch: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (T, bool)>,
    {
        let mut flight = self.flight.lock().await;
        self.run(&mut flight, fetch).await.0
    }

    /// Waits for a fetch started after `ticket`: one that finished while we
    /// queued for the lock, or one run here now.
    async fn fetch_after<F, Fut>(&self, ticket: Ticket, fetch: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = bool>,
    {
        let mut flight = self.flight.lock().await;
        if flight.finished > ticket.0 {
            // A fetch that started after we arrived finished while we queued.
            return flight.finished_ok;
        }
        self.run(&mut flight, || async { ((), fetch().await) })
            .await
            .1
    }

    /// Waits out the pacing interval, then runs one fetch and records it.
    async fn run<F, Fut, T>(&self, flight: &mut Flight, fetch: F) -> (T, bool)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = (T, bool)>,
    {
        if let Some(last) = flight.last_start {
            tokio::time::sleep_until(last + self.policy.min_interval).await;
        }
        flight.last_start = Some(tokio::time::Instant::now());
        let sequence = self.started.fetch_add(1, Ordering::AcqRel) + 1;
        let (outcome, ok) = fetch().await;
        flight.finished = sequence;
        flight.finished_ok = ok;
        (outcome, ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    fn line(min_interval: Duration, max_waiting: usize) -> Arc<Refetcher> {
        Arc::new(Refetcher::new(RefetchPolicy {
            min_interval,
            max_waiting,
        }))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_waiting_together_share_one_fetch() {
        let line = line(Duration::from_secs(1), 100);
        let fetches = Arc::new(AtomicU32::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        // The first request starts a fetch that blocks until released.
        let first = {
            let (line, fetches, gate) = (line.clone(), fetches.clone(), gate.clone());
            tokio::spawn(async move {
                let ticket = line.ticket();
                line.wait_for_fetch(ticket, || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    gate.notified().await;
                    true
                })
                .await
            })
        };
        while fetches.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // Ten more arrive while it is in flight: it started before them, so
        // they need one more fetch, which all ten share.
        let mut later = Vec::new();
        for _ in 0..10 {
            let (line, fetches) = (line.clone(), fetches.clone());
            let ticket = line.ticket();
            later.push(tokio::spawn(async move {
                line.wait_for_fetch(ticket, || async move {
                    fetches.fetch_add(1, Ordering::SeqCst);
                    true
                })
                .await
            }));
        }
        tokio::task::yield_now().await;
        assert_eq!(line.waiting(), 11);
        gate.notify_one();
        assert_eq!(first.await.expect("join"), Ok(true));
        let before = tokio::time::Instant::now();
        for request in later {
            assert_eq!(request.await.expect("join"), Ok(true));
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "one in flight, one shared"
        );
        assert!(
            tokio::time::Instant::now() - before >= Duration::from_secs(1),
            "the second fetch waited out the pacing interval"
        );
        assert_eq!(line.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_line_refuses_at_once_and_frees_places_on_cancel() {
        let line = line(Duration::from_secs(1), 2);
        let gate = Arc::new(tokio::sync::Notify::new());
        let mut held = Vec::new();
        for _ in 0..2 {
            let (line, gate) = (line.clone(), gate.clone());
            held.push(tokio::spawn(async move {
                let ticket = line.ticket();
                line.wait_for_fetch(ticket, || async move {
                    gate.notified().await;
                    true
                })
                .await
            }));
        }
        while line.waiting() < 2 {
            tokio::task::yield_now().await;
        }
        let ticket = line.ticket();
        assert_eq!(
            line.wait_for_fetch(ticket, || async { true }).await,
            Err(NoWait::Busy)
        );
        for request in &held {
            request.abort();
        }
        for request in held {
            let _ = request.await;
        }
        assert_eq!(line.waiting(), 0, "cancelled waiters give their place back");
    }

    #[tokio::test(start_paused = true)]
    async fn fetch_starts_are_paced_by_the_interval() {
        let line = line(Duration::from_millis(500), 100);
        let mut starts = Vec::new();
        for _ in 0..4 {
            line.fetch_now(|| {
                starts.push(tokio::time::Instant::now());
                async { ((), false) }
            })
            .await;
        }
        for pair in starts.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(500));
        }
    }

    #[test]
    fn absent_kids_are_remembered_for_the_interval_and_bounded() {
        let line = Refetcher::new(RefetchPolicy {
            min_interval: Duration::from_secs(1),
            max_waiting: 1,
        });
        let now = Instant::now();
        assert_eq!(line.admit(Some("bogus"), now), Ok(()));
        line.remember_absent("bogus", now);
        assert_eq!(
            line.admit(Some("bogus"), now + Duration::from_millis(999)),
            Err(NoWait::RecentlyAbsent)
        );
        assert_eq!(
            line.admit(Some("bogus"), now + Duration::from_secs(1)),
            Ok(())
        );
        assert_eq!(line.admit(Some("other"), now), Ok(()));
        for n in 0..3 * ABSENT_KIDS_MAX {
            line.remember_absent(&format!("kid-{n}"), now);
        }
        assert!(line.absent.lock().len() <= ABSENT_KIDS_MAX);
    }
}
