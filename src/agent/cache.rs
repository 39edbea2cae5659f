//! The agent's disk cache of verified blobs, bounded in bytes, least
//! recently used out. Each blob is `sha256-<hex>` in one folder (the name its
//! torrent gives it, so the engine seeds the very file served), with
//! `sha256-<hex>.torrent` (to seed it again after a restart) and
//! `sha256-<hex>.verified`, written only after the whole file's sha256
//! matched. A file without its mark is a pull that never finished (a crash,
//! `kill -9`): it is deleted at start, never served. Marked files are
//! hashed again at start too, so a file damaged on disk is dropped, not
//! served or seeded.
//!
//! The index is in memory; eviction hands back what to stop seeding, and
//! the caller deletes the files after the engine let go of them.

use std::collections::HashMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::bittorrent::InfoHash;
use crate::bridge::reference::Digest;

/// Why a blob is not cached: it streams from the origin instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// Larger than the whole cache.
    TooLarge,
    /// Everything that could be evicted is being pulled: no room now.
    Busy,
    /// The disk holding the cache has less free space than the blob.
    DiskFull,
}

impl Bypass {
    /// A bounded label for metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            Bypass::TooLarge => "too_large",
            Bypass::Busy => "busy",
            Bypass::DiskFull => "disk_full",
        }
    }
}

/// A blob pushed out to make room: stop seeding it, then [`BlobCache::delete`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// The blob.
    pub digest: Digest,
    /// Its torrent, when it was seeded.
    pub info_hash: Option<InfoHash>,
}

/// A verified blob found at start, to be seeded again.
#[derive(Debug)]
pub struct Recovered {
    /// The blob.
    pub digest: Digest,
    /// Its torrent as the bridge signed it, when one was kept.
    pub torrent: Option<Vec<u8>>,
}

#[derive(Debug)]
struct Entry {
    size: u64,
    last_used: u64,
    verified: bool,
    info_hash: Option<InfoHash>,
}

#[derive(Debug, Default)]
struct Index {
    entries: HashMap<Digest, Entry>,
    /// Bytes of verified entries plus reservations.
    used: u64,
    clock: u64,
}

/// Figures for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheSize {
    /// Verified blobs held.
    pub blobs: usize,
    /// Their bytes plus the bytes reserved by pulls under way.
    pub bytes: u64,
}

/// The cache.
pub struct BlobCache {
    dir: PathBuf,
    max_bytes: u64,
    index: Mutex<Index>,
}

impl BlobCache {
    /// Opens `dir` (creating it), deletes every unfinished or damaged file,
    /// and returns the cache with the blobs that verified again. Reads
    /// every kept byte: call it off the async threads.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<(Self, Vec<Recovered>)> {
        std::fs::create_dir_all(dir)?;
        let mut index = Index::default();
        let mut recovered = Vec::new();
        let mut names: Vec<String> = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        let cache = Self {
            dir: dir.to_owned(),
            max_bytes,
            index: Mutex::new(Index::default()),
        };
        // Least recently used first: each use stamps the blob's mark.
        let mut marked: Vec<(std::time::SystemTime, Digest)> = names
            .iter()
            .filter_map(|name| {
                let digest = name
                    .strip_suffix(".verified")
                    .and_then(|stem| stem.strip_prefix("sha256-"))
                    .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())?;
                let used = std::fs::metadata(dir.join(name))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some((used, digest))
            })
            .collect();
        marked.sort_by_key(|(used, _)| *used);
        for (_, digest) in marked {
            match verify_file(&cache.data_path(&digest), &digest) {
                Ok(size) => {
                    let torrent = std::fs::read(cache.torrent_path(&digest)).ok();
                    let info_hash = torrent
                        .as_deref()
                        .and_then(|bytes| crate::torrent::info_hash_of(bytes).ok());
                    index.clock += 1;
                    index.used += size;
                    index.entries.insert(
                        digest,
                        Entry {
                            size,
                            last_used: index.clock,
                            verified: true,
                            info_hash,
                        },
                    );
                    recovered.push(Recovered { digest, torrent });
                }
                Err(reason) => {
                    tracing::warn!(blob = %digest, "agent cache: dropping a kept blob that no longer verifies: {reason}");
                }
            }
        }
        // Everything not indexed now is an unfinished pull or a damaged blob.
        for name in &names {
            let kept = name
                .strip_prefix("sha256-")
                .map(|rest| rest.split('.').next().unwrap_or(rest))
                .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
                .is_some_and(|digest| index.entries.contains_key(&digest));
            if !kept {
                let path = dir.join(name);
                let removed = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                if let Err(error) = removed {
                    tracing::warn!(path = %path.display(), "agent cache: cannot delete an unfinished file: {error}");
                }
            }
        }
        *cache.index.lock() = index;
        Ok((cache, recovered))
    }

    /// Where a blob's bytes live (the name its torrent gives the file).
    pub fn data_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.file_name())
    }

    fn torrent_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.torrent", digest.file_name()))
    }

    fn mark_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(format!("{}.verified", digest.file_name()))
    }

    /// The folder the engine downloads into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The size of a verified blob, marking it used now (in memory, and on
    /// its mark's modification time, so the order survives a restart).
    pub fn get(&self, digest: &Digest) -> Option<u64> {
        let size = {
            let mut index = self.index.lock();
            index.clock += 1;
            let now = index.clock;
            let entry = index.entries.get_mut(digest).filter(|e| e.verified)?;
            entry.last_used = now;
            entry.size
        };
        let stamped = std::fs::File::options()
            .write(true)
            .open(self.mark_path(digest))
            .and_then(|mark| mark.set_modified(std::time::SystemTime::now()));
        if let Err(error) = stamped {
            tracing::debug!(blob = %digest, "agent cache: cannot stamp a use: {error}");
        }
        Some(size)
    }

    /// Makes room for a pull of `size` bytes: returns what to evict (least
    /// recently used first), or why the blob cannot be cached.
    pub fn reserve(&self, digest: Digest, size: u64) -> Result<Vec<Evicted>, Bypass> {
        if size > self.max_bytes {
            return Err(Bypass::TooLarge);
        }
        let mut index = self.index.lock();
        // The least recently used verified blobs that must go for `size` to fit.
        let mut victims: Vec<(u64, Digest, u64)> = Vec::new();
        if index.used + size > self.max_bytes {
            let mut candidates: Vec<(u64, Digest, u64)> = index
                .entries
                .iter()
                .filter(|(_, e)| e.verified)
                .map(|(d, e)| (e.last_used, *d, e.size))
                .collect();
            candidates.sort_unstable_by_key(|(last_used, _, _)| *last_used);
            let mut after = index.used;
            for candidate in candidates {
                if after + size <= self.max_bytes {
                    break;
                }
                after -= candidate.2;
                victims.push(candidate);
            }
            if after + size > self.max_bytes {
                return Err(Bypass::Busy);
            }
        }
        // The disk may hold other things than the cache: what is free there,
        // plus what eviction frees, must take the blob.
        let freed: u64 = victims.iter().map(|(_, _, s)| s).sum();
        if let Some(available) = available_bytes(&self.dir)
            && available.saturating_add(freed) < size
        {
            return Err(Bypass::DiskFull);
        }
        let mut evicted = Vec::with_capacity(victims.len());
        for (_, victim, victim_size) in victims {
            if let Some(entry) = index.entries.remove(&victim) {
                index.used -= victim_size;
                evicted.push(Evicted {
                    digest: victim,
                    info_hash: entry.info_hash,
                });
            }
        }
        index.used += size;
        index.clock += 1;
        let now = index.clock;
        index.entries.insert(
            digest,
            Entry {
                size,
                last_used: now,
                verified: false,
                info_hash: None,
            },
        );
        Ok(evicted)
    }

    /// Records a pulled blob as verified: its torrent (to seed it after a
    /// restart), then its mark, each written durably.
    pub fn commit(&self, digest: &Digest, torrent: Option<&[u8]>) -> std::io::Result<()> {
        let info_hash = match torrent {
            Some(bytes) => {
                crate::files::write_atomically(&self.torrent_path(digest), bytes)?;
                crate::torrent::info_hash_of(bytes).ok()
            }
            None => None,
        };
        std::fs::File::open(self.data_path(digest))?.sync_all()?;
        crate::files::write_atomically(&self.mark_path(digest), b"sha256 verified\n")?;
        let mut index = self.index.lock();
        if let Some(entry) = index.entries.get_mut(digest) {
            entry.verified = true;
            entry.info_hash = info_hash;
        }
        Ok(())
    }

    /// Gives up a reservation whose pull failed, and deletes its files.
    pub fn abandon(&self, digest: &Digest) {
        {
            let mut index = self.index.lock();
            if let Some(entry) = index.entries.remove(digest) {
                index.used -= entry.size;
            }
        }
        self.delete(digest);
    }

    /// Deletes a blob's files (after [`reserve`](Self::reserve) evicted it
    /// and the engine stopped seeding it); the mark goes first, so a crash
    /// part-way leaves nothing that looks verified.
    pub fn delete(&self, digest: &Digest) {
        for path in [
            self.mark_path(digest),
            self.data_path(digest),
            self.torrent_path(digest),
        ] {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::warn!(path = %path.display(), "agent cache: cannot delete: {error}")
                }
            }
        }
    }

    /// Blobs and bytes held.
    pub fn size(&self) -> CacheSize {
        let index = self.index.lock();
        CacheSize {
            blobs: index.entries.values().filter(|e| e.verified).count(),
            bytes: index.used,
        }
    }
}

/// Free bytes for an unprivileged writer on the file system holding `dir`.
fn available_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt as _;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid C string and `stat` a valid out-pointer.
    let result = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (result == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The file's size when its sha256 is `digest`.
fn verify_file(path: &Path, digest: &Digest) -> Result<u64, String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
        size += n as u64;
    }
    let actual = context.finish();
    if actual.as_ref() != digest.0 {
        return Err(format!(
            "{} bytes hash to sha256:{}",
            size,
            hex::encode(actual.as_ref())
        ));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(bytes: &[u8]) -> Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref());
        Digest(out)
    }

    fn put(cache: &BlobCache, bytes: &[u8]) -> Digest {
        let digest = digest_of(bytes);
        cache.reserve(digest, bytes.len() as u64).expect("room");
        std::fs::write(cache.data_path(&digest), bytes).expect("write");
        cache.commit(&digest, None).expect("commit");
        digest
    }

    #[test]
    fn least_recently_used_blobs_make_room_and_pulls_under_way_are_kept() {
        let dir = tempdir();
        let (cache, recovered) = BlobCache::open(&dir, 300).expect("open");
        assert!(recovered.is_empty());
        let a = put(&cache, &[1u8; 100]);
        let b = put(&cache, &[2u8; 100]);
        assert_eq!(cache.get(&a), Some(100)); // a is now newer than b
        let pending = digest_of(b"pending");
        assert!(cache.reserve(pending, 100).expect("fits").is_empty());
        // Full: the next 100 bytes push out b, the least recently used.
        let c = digest_of(&[3u8; 100]);
        let evicted = cache.reserve(c, 100).expect("room made");
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].digest, b);
        cache.delete(&b);
        assert_eq!(cache.get(&b), None);
        assert!(!cache.data_path(&b).exists());
        // 250 bytes cannot fit beside two pulls under way.
        assert_eq!(cache.reserve(digest_of(b"x"), 250), Err(Bypass::Busy));
        assert_eq!(cache.reserve(digest_of(b"y"), 301), Err(Bypass::TooLarge));
        cache.abandon(&pending);
        assert_eq!(cache.size().bytes, 200);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn the_order_of_use_survives_a_restart() {
        let dir = tempdir();
        let (cache, _) = BlobCache::open(&dir, 200).expect("open");
        let a = put(&cache, &[1u8; 100]);
        let b = put(&cache, &[2u8; 100]);
        // Stamps one second apart at least: file times may be coarse.
        let mark = |digest: &Digest, secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(cache.mark_path(digest))
                .and_then(|f| {
                    f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
                })
                .expect("stamp");
        };
        mark(&b, 1_000);
        mark(&a, 2_000); // a used after b
        drop(cache);
        let (cache, _) = BlobCache::open(&dir, 200).expect("reopen");
        let evicted = cache.reserve(digest_of(b"new"), 100).expect("room");
        assert_eq!(evicted.len(), 1);
        assert_eq!(
            evicted[0].digest, b,
            "the least recently used before the restart"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn a_restart_keeps_verified_blobs_and_deletes_unfinished_and_damaged_ones() {
        let dir = tempdir();
        let (cache, _) = BlobCache::open(&dir, 1 << 20).expect("open");
        let good = put(&cache, b"good blob");
        let damaged = put(&cache, b"damaged blob");
        std::fs::write(cache.data_path(&damaged), b"damaged blub").expect("damage");
        // A pull killed part-way: data, no mark.
        let unfinished = digest_of(b"unfinished");
        std::fs::write(cache.data_path(&unfinished), b"unfin").expect("partial");
        drop(cache);
        let (cache, recovered) = BlobCache::open(&dir, 1 << 20).expect("reopen");
        let kept: Vec<_> = recovered.iter().map(|r| r.digest).collect();
        assert_eq!(kept, vec![good]);
        assert_eq!(cache.get(&good), Some(9));
        assert_eq!(cache.get(&damaged), None);
        assert!(!cache.data_path(&damaged).exists());
        assert!(!cache.data_path(&unfinished).exists());
        assert_eq!(cache.size(), CacheSize { blobs: 1, bytes: 9 });
        std::fs::remove_dir_all(dir).ok();
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "swarmgate-agent-cache-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("mkdir");
        dir
    }
}
