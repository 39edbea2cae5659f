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

/// The digest a token is cached under.
pub type TokenDigest = [u8; 32];

/// Digests a token for the cache.
pub fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

type Shard = Mutex<LruCache<TokenDigest, Approval>>;

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

    /// The approval cached for this token, if any.
    pub fn get(&self, key: &TokenDigest) -> Option<Approval> {
        self.shard(key)?.lock().get(key).cloned()
    }

    /// Remembers a verified token.
    pub fn insert(&self, key: TokenDigest, approval: Approval) {
        if let Some(shard) = self.shard(&key) {
            shard.lock().put(key, approval);
        }
    }

    /// Drops every approval signed by a key that is not in `keys`.
    pub fn retain_keys(&self, keys: &KeySet) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter().flat_map(|s| s.iter()) {
            let mut shard = shard.lock();
            let stale: Vec<TokenDigest> = shard
                .iter()
                .filter(|(_, approval)| {
                    approval
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
            );
        }
        assert!(cache.len() <= 32, "bounded: {}", cache.len());
        assert_eq!(cache.get(&token_digest("99")), Some(approval("odd")));
        assert_eq!(cache.get(&token_digest("nope")), None);

        let only_even = KeySet::default();
        let removed = cache.retain_keys(&only_even);
        assert!(removed > 0);
        assert!(cache.is_empty(), "no key is left, so no approval is");
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert(token_digest("a"), approval("k"));
        assert_eq!(cache.get(&token_digest("a")), None);
    }
}
