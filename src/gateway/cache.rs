//! The verified-token cache: agents re-announce the same token every interval,
//! and verifying a signature each time would dominate the cost of an announce.
//!
//! Keyed by the SHA-256 of the whole token (collision-proof, and 32 bytes
//! instead of ~600), sharded so that announces on different cores rarely
//! share a lock. A hit skips the signature, never the expiry or infohash checks.

use std::num::NonZeroUsize;

use aws_lc_rs::digest::{SHA256, digest};
use lru::LruCache;
use parking_lot::Mutex;

use super::keys::KeySet;
use super::token::Approval;

const SHARDS: usize = 16;

/// A hit moves its entry to the front only if it has not moved there within
/// this many seconds. A full LRU `get` (list surgery on every hit) was 4.4% of
/// the UDP tracker's CPU with cached tokens, and one layer's token is shared by
/// every agent pulling it; pacing keeps eviction least-recently-used to within
/// these seconds, far below any announce interval.
const PROMOTE_AFTER_SECS: u64 = 10;

/// The digest a token is cached under.
pub type TokenDigest = [u8; 32];

/// Digests a token for the cache.
pub fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// A cached approval and when (Unix seconds) its entry last moved to the front.
struct Entry {
    approval: Approval,
    promoted_at: u64,
}

type Shard = Mutex<LruCache<TokenDigest, Entry>>;

/// A bounded LRU of verified tokens.
pub struct TokenCache {
    /// `None` when caching is off.
    shards: Option<Box<[Shard]>>,
}

impl TokenCache {
    /// A cache holding about `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let per_shard = capacity.div_ceil(SHARDS);
        let shards = NonZeroUsize::new(per_shard).map(|per_shard| {
            (0..SHARDS)
                .map(|_| Mutex::new(LruCache::new(per_shard)))
                .collect()
        });
        Self { shards }
    }

    fn shard(&self, key: &TokenDigest) -> Option<&Shard> {
        self.shards
            .as_ref()
            .map(|shards| &shards[key[0] as usize % shards.len()])
    }

    /// The approval cached for this token, if any, at `now` (Unix seconds).
    pub fn get(&self, key: &TokenDigest, now: u64) -> Option<Approval> {
        let mut shard = self.shard(key)?.lock();
        let entry = shard.peek_mut(key)?;
        let approval = entry.approval.clone();
        if now >= entry.promoted_at.saturating_add(PROMOTE_AFTER_SECS) {
            entry.promoted_at = now;
            shard.promote(key);
        }
        Some(approval)
    }

    /// Remembers a verified token at `now` (Unix seconds).
    pub fn insert(&self, key: TokenDigest, approval: Approval, now: u64) {
        if let Some(shard) = self.shard(&key) {
            shard.lock().put(
                key,
                Entry {
                    approval,
                    promoted_at: now,
                },
            );
        }
    }

    /// Drops every approval signed by a key that is not in `keys`.
    pub fn retain_keys(&self, keys: &KeySet) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter().flat_map(|s| s.iter()) {
            let mut shard = shard.lock();
            let stale: Vec<TokenDigest> = shard
                .iter()
                .filter(|(_, entry)| {
                    entry
                        .approval
                        .kid
                        .as_deref()
                        .is_some_and(|kid| !keys.contains(kid))
                })
                .map(|(digest, _)| *digest)
                .collect();
            for digest in stale {
                shard.pop(&digest);
                removed += 1;
            }
        }
        removed
    }

    /// How many tokens are cached.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|shard| shard.lock().len())
            .sum()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::InfoHash;
    use std::sync::Arc;

    fn approval(kid: &str) -> Approval {
        Approval {
            info_hash: InfoHash([1; 20]),
            expires_at: None,
            not_before: None,
            kid: Some(Arc::from(kid)),
        }
    }

    #[test]
    fn holds_evicts_and_purges_by_key() {
        let cache = TokenCache::new(32);
        for n in 0..100u32 {
            cache.insert(
                token_digest(&n.to_string()),
                approval(if n % 2 == 0 { "even" } else { "odd" }),
                0,
            );
        }
        assert!(cache.len() <= 32, "bounded: {}", cache.len());
        assert_eq!(cache.get(&token_digest("99"), 0), Some(approval("odd")));
        assert_eq!(cache.get(&token_digest("nope"), 0), None);

        let removed = cache.retain_keys(&KeySet::default());
        assert!(removed > 0);
        assert!(cache.is_empty(), "no key is left, so no approval is");
    }

    #[test]
    fn tokens_in_use_survive_a_stream_of_one_off_tokens() {
        // 16 shards of 32 entries; one announce a second with the token in use,
        // and a new token every second.
        let cache = TokenCache::new(16 * 32);
        let hot = token_digest("hot");
        cache.insert(hot, approval("k"), 0);
        for now in 0..20_000u64 {
            assert!(
                cache.get(&hot, now).is_some(),
                "the token in use was evicted after {now} inserts"
            );
            cache.insert(token_digest(&format!("cold-{now}")), approval("k"), now);
        }
        // A token nobody uses any more does go.
        assert!(cache.get(&token_digest("cold-0"), 20_000).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert(token_digest("a"), approval("k"), 0);
        assert_eq!(cache.get(&token_digest("a"), 0), None);
    }
}
