//! Built torrents on disk: one file per blob and piece length holding the
//! bencoded `info` dictionary (the part that costs a full read of the blob to
//! make). Announce URLs and tokens are not cached: they are signed afresh for
//! every caller, so a key rotation never leaves a stale torrent behind.
//!
//! Bounded in bytes; the least recently used entries go first. Use is
//! recorded in each file's modification time, so the order survives a
//! restart. A file that does not read back as the torrent its name promises
//! is deleted and rebuilt, never served.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;

use super::reference::Digest;
use crate::bittorrent::InfoHash;
use crate::files::write_atomically;
use crate::torrent::Info;

/// What the cache holds, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheSize {
    /// Entries.
    pub entries: usize,
    /// Bytes on disk.
    pub bytes: u64,
}

struct Entry {
    bytes: u64,
    /// The `info`'s infohash, once this process has stored or read it, so
    /// a web seed request learns it without reading the file.
    info_hash: Option<InfoHash>,
    /// Larger is more recent.
    used: u64,
}

struct Index {
    entries: HashMap<(Digest, u64), Entry>,
    bytes: u64,
    clock: u64,
}

/// The on-disk torrent cache.
pub struct DiskCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

/// Why a cached file was refused (it is then deleted).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}; deleted, the torrent will be rebuilt")]
pub struct CorruptEntry {
    path: String,
    reason: String,
}

impl DiskCache {
    /// Opens (creating) `dir`, indexes what is there and trims it to `max_bytes`.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)?.flatten() {
            let path = entry.path();
            let Some(key) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(parse_file_name)
            else {
                continue;
            };
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            let modified = metadata.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            found.push((modified, key, metadata.len()));
        }
        found.sort_by_key(|(modified, _, _)| *modified);
        let mut index = Index {
            entries: HashMap::new(),
            bytes: 0,
            clock: 0,
        };
        for (_, key, bytes) in found {
            index.clock += 1;
            index.bytes += bytes;
            index.entries.insert(
                key,
                Entry {
                    bytes,
                    info_hash: None,
                    used: index.clock,
                },
            );
        }
        let cache = Self {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(index),
        };
        cache.evict(None);
        Ok(cache)
    }

    fn path(&self, digest: &Digest, piece_length: u64) -> PathBuf {
        self.dir
            .join(format!("{}.{piece_length}.info", digest.file_name()))
    }

    /// The infohash of the cached `info` of `digest`, when this process has
    /// stored or read it: no file is read.
    pub fn info_hash(&self, digest: &Digest, piece_length: u64) -> Option<InfoHash> {
        let index = self.index.lock();
        index
            .entries
            .get(&(*digest, piece_length))
            .and_then(|entry| entry.info_hash)
    }

    /// The cached `info` of `digest` at `piece_length` with its infohash, if
    /// present and sound.
    pub fn get(
        &self,
        digest: &Digest,
        piece_length: u64,
    ) -> Result<Option<(Info, InfoHash)>, CorruptEntry> {
        let key = (*digest, piece_length);
        let Some(known) = self.index.lock().entries.get(&key).map(|e| e.info_hash) else {
            return Ok(None);
        };
        let path = self.path(digest, piece_length);
        let read = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| {
                serde_bencode::from_bytes::<Info>(&bytes).map_err(|e| format!("not bencode: {e}"))
            })
            .and_then(|info| check(&info, digest, piece_length).map(|()| info));
        match read {
            Ok(info) => {
                // Hashed once per entry and process, then remembered.
                let info_hash = known.unwrap_or_else(|| info.info_hash());
                let mut index = self.index.lock();
                index.clock += 1;
                let clock = index.clock;
                if let Some(entry) = index.entries.get_mut(&key) {
                    entry.used = clock;
                    entry.info_hash = Some(info_hash);
                }
                drop(index);
                // Best effort: the order across restarts.
                if let Ok(file) = std::fs::File::options().append(true).open(&path) {
                    let _ = file.set_modified(SystemTime::now());
                }
                Ok(Some((info, info_hash)))
            }
            Err(reason) => {
                self.remove(&key);
                let _ = std::fs::remove_file(&path);
                Err(CorruptEntry {
                    path: path.display().to_string(),
                    reason,
                })
            }
        }
    }

    /// Stores `info`, then trims the cache to its bound (never evicting the
    /// entry just stored). An entry larger than the whole bound is not kept.
    pub fn put(&self, digest: &Digest, info: &Info, info_hash: InfoHash) -> std::io::Result<()> {
        let bytes = serde_bencode::to_bytes(info).unwrap_or_default();
        if bytes.len() as u64 > self.max_bytes {
            return Ok(());
        }
        let key = (*digest, info.piece_length);
        write_atomically(&self.path(digest, info.piece_length), &bytes)?;
        {
            let mut index = self.index.lock();
            index.clock += 1;
            let used = index.clock;
            if let Some(old) = index.entries.insert(
                key,
                Entry {
                    bytes: bytes.len() as u64,
                    info_hash: Some(info_hash),
                    used,
                },
            ) {
                index.bytes -= old.bytes;
            }
            index.bytes += bytes.len() as u64;
        }
        self.evict(Some(key));
        Ok(())
    }

    /// Entries and bytes held now.
    pub fn size(&self) -> CacheSize {
        let index = self.index.lock();
        CacheSize {
            entries: index.entries.len(),
            bytes: index.bytes,
        }
    }

    fn remove(&self, key: &(Digest, u64)) {
        let mut index = self.index.lock();
        if let Some(old) = index.entries.remove(key) {
            index.bytes -= old.bytes;
        }
    }

    /// Deletes least recently used entries until the bound holds; returns how many went.
    fn evict(&self, keep: Option<(Digest, u64)>) -> usize {
        let mut doomed = Vec::new();
        {
            let mut index = self.index.lock();
            while index.bytes > self.max_bytes {
                let Some(oldest) = index
                    .entries
                    .iter()
                    .filter(|(key, _)| Some(**key) != keep)
                    .min_by_key(|(_, entry)| entry.used)
                    .map(|(key, _)| *key)
                else {
                    break;
                };
                if let Some(entry) = index.entries.remove(&oldest) {
                    index.bytes -= entry.bytes;
                }
                doomed.push(oldest);
            }
        }
        for (digest, piece_length) in &doomed {
            let _ = std::fs::remove_file(self.path(digest, *piece_length));
        }
        doomed.len()
    }
}

/// `sha256-<hex>.<piece length>.info` → its key.
fn parse_file_name(name: &str) -> Option<(Digest, u64)> {
    let rest = name.strip_prefix("sha256-")?.strip_suffix(".info")?;
    let (hex_digits, piece_length) = rest.split_once('.')?;
    let digest = Digest::parse(&format!("sha256:{hex_digits}")).ok()?;
    Some((digest, piece_length.parse().ok()?))
}

/// Whether `info` is what the cache file's name promises.
fn check(info: &Info, digest: &Digest, piece_length: u64) -> Result<(), String> {
    let pieces = info.length.div_ceil(piece_length.max(1));
    if info.name != digest.file_name()
        || info.piece_length != piece_length
        || info.pieces.len() as u64 != pieces * 20
        || info.private != 1
    {
        return Err("does not describe the blob its name says".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::PieceHasher;

    fn info_for(n: u8) -> (Digest, Info) {
        let digest = Digest([n; 32]);
        let mut hasher = PieceHasher::new(16 * 1024).expect("piece length");
        hasher.update(&vec![n; 100_000]);
        (digest, hasher.finish(&digest.file_name()).expect("info"))
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("swarmgate-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn entries_survive_reopening_and_the_least_recently_used_go_first() {
        let dir = temp("lru");
        let (a, info_a) = info_for(1);
        let (b, info_b) = info_for(2);
        let (c, info_c) = info_for(3);
        let one = serde_bencode::to_bytes(&info_a).expect("bencode").len() as u64;
        let cache = DiskCache::open(&dir, 2 * one + one / 2).expect("opens");
        cache.put(&a, &info_a, info_a.info_hash()).expect("put");
        cache.put(&b, &info_b, info_b.info_hash()).expect("put");
        // Using a makes b the oldest.
        assert_eq!(
            cache.get(&a, 16384).expect("sound"),
            Some((info_a.clone(), info_a.info_hash()))
        );
        cache.put(&c, &info_c, info_c.info_hash()).expect("put");
        assert_eq!(cache.size().entries, 2);
        assert!(cache.size().bytes <= 2 * one + one / 2);
        assert_eq!(cache.get(&b, 16384).expect("sound"), None);
        assert!(!cache.path(&b, 16384).exists(), "evicted file deleted");
        drop(cache);
        let reopened = DiskCache::open(&dir, 10 * one).expect("opens");
        assert_eq!(reopened.size().entries, 2);
        // The infohash is known once the entry has been read in this process.
        assert_eq!(reopened.info_hash(&c, 16384), None);
        let hash_c = info_c.info_hash();
        assert_eq!(
            reopened.get(&c, 16384).expect("sound"),
            Some((info_c, hash_c))
        );
        assert_eq!(reopened.info_hash(&c, 16384), Some(hash_c));
        assert_eq!(
            reopened
                .get(&a, 16384)
                .expect("sound")
                .map(|(info, _)| info),
            Some(info_a)
        );
        // A smaller bound at start trims to it.
        drop(reopened);
        assert_eq!(DiskCache::open(&dir, one).expect("opens").size().entries, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_file_is_deleted_not_served() {
        let dir = temp("corrupt");
        let (a, info_a) = info_for(1);
        let cache = DiskCache::open(&dir, 1 << 20).expect("opens");
        cache.put(&a, &info_a, info_a.info_hash()).expect("put");
        std::fs::write(cache.path(&a, 16384), b"d4:infoi1ee").expect("corrupt it");
        assert!(cache.get(&a, 16384).is_err());
        assert_eq!(cache.get(&a, 16384).expect("gone"), None);
        assert!(!cache.path(&a, 16384).exists());
        // A well-formed info that is not this blob's is refused too.
        let (_, info_b) = info_for(2);
        cache.put(&a, &info_b, info_b.info_hash()).expect("put");
        assert!(cache.get(&a, 16384).is_err());
        assert_eq!(cache.size(), CacheSize::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
