//! The verified-token cache: agents re-announce the same token every interval,
//! and verifying a signature each time would dominate the cost of an announce.
//!
//! Keyed by the SHA-256 of the whole token (collision-proof, and 32 bytes
//! instead of ~600), sharded so that announces on different cores rarely
//! share a lock. A hit skips the signature, never the expiry or infohash checks.
//!
//! Eviction is generational rather than a linked-list LRU: each shard keeps a
//! current and a previous table; new tokens go into the current one, a hit in
//! the previous one moves the token forward, and when the current table is
//! full the previous one is dropped whole. A token survives as long as it is
//! used once per generation, and a hit is one probe of an open-addressing table
//! holding the digest inline: one cache line, where the `lru` crate's table of
//! pointers to list nodes cost two dependent misses (measured under HTTP load:
//! the node's key compare was 70% of the lookup, 3% of an announce).

use aws_lc_rs::digest::{SHA256, digest};
use hashbrown::HashTable;
use parking_lot::Mutex;

use super::keys::KeySet;
use super::token::Approval;

/// Independently locked parts of the cache.
const SHARDS: usize = 16;

/// The digest a token is cached under.
pub type TokenDigest = [u8; 32];

/// Digests a token for the cache.
pub fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// The table hash of a digest: SHA-256 output is already uniform.
fn table_hash(key: &TokenDigest) -> u64 {
    u64::from_le_bytes([
        key[8], key[9], key[10], key[11], key[12], key[13], key[14], key[15],
    ])
}

type Table = HashTable<(TokenDigest, Approval)>;

/// One shard: the current generation and the one before it.
#[derive(Default)]
struct Generations {
    current: Table,
    previous: Table,
}

impl Generations {
    fn find(table: &Table, key: &TokenDigest) -> Option<Approval> {
        table
            .find(table_hash(key), |(k, _)| k == key)
            .map(|(_, approval)| approval.clone())
    }

    fn take(table: &mut Table, key: &TokenDigest) -> Option<Approval> {
        table
            .find_entry(table_hash(key), |(k, _)| k == key)
            .ok()
            .map(|entry| entry.remove().0.1)
    }

    /// Adds to the current generation, first retiring a full one.
    fn put(&mut self, key: TokenDigest, approval: Approval, generation: usize) {
        if self.current.len() >= generation {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current
            .insert_unique(table_hash(&key), (key, approval), |(k, _)| table_hash(k));
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// A bounded cache of verified tokens.
pub struct TokenCache {
    /// `None` when caching is off.
    shards: Option<Box<[Mutex<Generations>]>>,
    /// Most entries in one generation of one shard (so at most twice this per shard).
    generation: usize,
}

impl TokenCache {
    /// A cache holding at most about `capacity` tokens; 0 disables caching.
    pub fn new(capacity: usize) -> Self {
        let generation = capacity.div_ceil(2 * SHARDS);
        // Tables grow with the tokens in use rather than being sized for the
        // capacity up front: a few thousand live tokens then fit in a few
        // cache-friendly kilobytes instead of being spread over megabytes.
        let shards = (generation > 0).then(|| {
            (0..SHARDS)
                .map(|_| Mutex::new(Generations::default()))
                .collect()
        });
        Self { shards, generation }
    }

    fn shard(&self, key: &TokenDigest) -> Option<&Mutex<Generations>> {
        self.shards
            .as_ref()
            .map(|shards| &shards[key[0] as usize % shards.len()])
    }

    /// The approval cached for this token, if any.
    pub fn get(&self, key: &TokenDigest) -> Option<Approval> {
        let mut shard = self.shard(key)?.lock();
        if let Some(approval) = Generations::find(&shard.current, key) {
            return Some(approval);
        }
        // Still in use: carry it into the current generation.
        let approval = Generations::take(&mut shard.previous, key)?;
        shard.put(*key, approval.clone(), self.generation);
        Some(approval)
    }

    /// Remembers a verified token.
    pub fn insert(&self, key: TokenDigest, approval: Approval) {
        if let Some(shard) = self.shard(&key) {
            let mut shard = shard.lock();
            if let Some((_, cached)) = shard.current.find_mut(table_hash(&key), |(k, _)| *k == key)
            {
                *cached = approval;
                return;
            }
            Generations::take(&mut shard.previous, &key);
            shard.put(key, approval, self.generation);
        }
    }

    /// Drops every approval signed by a key that is not in `keys`; returns how many.
    pub fn retain_keys(&self, keys: &KeySet) -> usize {
        let mut removed = 0;
        for shard in self.shards.iter().flat_map(|s| s.iter()) {
            let mut shard = shard.lock();
            let before = shard.len();
            let keep = |(_, approval): &mut (TokenDigest, Approval)| {
                approval.kid.as_deref().is_none_or(|kid| keys.contains(kid))
            };
            shard.current.retain(keep);
            shard.previous.retain(keep);
            removed += before - shard.len();
        }
        removed
    }

    /// Tokens cached now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .flat_map(|s| s.iter())
            .map(|shard| shard.lock().len())
            .sum()
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bittorrent::InfoHash;
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
        cache.insert(hot, approval("k"));
        for n in 0..20_000u64 {
            assert!(
                cache.get(&hot).is_some(),
                "the token in use was evicted after {n} inserts"
            );
            cache.insert(token_digest(&format!("cold-{n}")), approval("k"));
            assert!(cache.len() <= 16 * 32, "bounded: {}", cache.len());
        }
        // A token nobody uses any more does go.
        assert!(cache.get(&token_digest("cold-0")).is_none());
    }

    #[test]
    fn zero_capacity_disables() {
        let cache = TokenCache::new(0);
        cache.insert(token_digest("a"), approval("k"));
        assert_eq!(cache.get(&token_digest("a")), None);
    }
}
