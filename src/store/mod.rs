//! Swarms that outlive the process: the engine's peers written to a
//! snapshot file on a timer and at shutdown, and listed again at start.
//!
//! The store hangs off the engine; it never sits between a request and its
//! reply. A snapshot is taken one engine shard at a time (a shard is locked
//! only while its swarms are copied out), encoded and written off the
//! runtime's threads. Peers keep their remaining lifetime in wall-clock
//! seconds, so those whose lifetime ran out while the tracker was down are
//! dropped at load. A file that cannot be used (corrupt, truncated, foreign,
//! too new) is moved aside with one error log, never overwritten before
//! that, and the tracker starts empty and serves.

pub mod snapshot;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::swarm::Engine;

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the snapshot {path}: {source}")]
pub struct WriteError {
    /// The snapshot file.
    pub path: String,
    /// The OS error.
    pub source: std::io::Error,
}

/// What one snapshot write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Swarms written.
    pub swarms: usize,
    /// Peers written.
    pub peers: u64,
    /// File size.
    pub bytes: usize,
    /// Time spent copying out of the engine (shard locks held one at a time).
    pub copying: Duration,
    /// Whole time, encoding and the durable write included.
    pub took: Duration,
}

/// Writes every swarm of `engine` to `path`, atomically. `now` is engine
/// time, `unix_now` the wall clock the file records.
pub fn write(
    engine: &Engine,
    path: &Path,
    now: Instant,
    unix_now: u64,
) -> Result<Written, WriteError> {
    let started = Instant::now();
    let census = engine.census();
    let peers_hint = census.seeders + census.leechers;
    let mut encoder = snapshot::Encoder::new(
        unix_now,
        snapshot::encoded_len(census.swarms, peers_hint, 0),
    );
    let mut batch = Vec::new();
    let mut swarms = 0;
    let mut copying = Duration::ZERO;
    for shard in 0..engine.shard_count() {
        let copy_started = Instant::now();
        engine.export_shard(shard, now, &mut batch);
        copying += copy_started.elapsed();
        swarms += batch.len();
        for swarm in batch.drain(..) {
            encoder.swarm(&swarm);
        }
    }
    let peers = encoder.peers();
    let bytes = encoder.finish();
    crate::files::write_atomically(path, &bytes).map_err(|source| WriteError {
        path: path.display().to_string(),
        source,
    })?;
    Ok(Written {
        swarms,
        peers,
        bytes: bytes.len(),
        copying,
        took: started.elapsed(),
    })
}

/// What a start found in the snapshot file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loaded {
    /// No file: a first start.
    Missing,
    /// Swarms listed again.
    Restored {
        /// Swarms with at least one peer left.
        swarms: usize,
        /// Peers listed again.
        peers: usize,
        /// Peers whose lifetime ran out while the tracker was down.
        expired: usize,
        /// How old the file was.
        age: Duration,
    },
    /// The file could not be used; it was moved aside (or could not be).
    SetAside {
        /// What was wrong with it.
        cause: String,
        /// Where it went, or why it could not be moved.
        moved_to: String,
    },
}

/// Lists the swarms of the snapshot at `path` in `engine` again, each peer
/// for the lifetime it had left minus the time since the file was written.
pub fn load(engine: &Engine, path: &Path, now: Instant, unix_now: u64) -> Loaded {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Loaded::Missing,
        Err(error) => return set_aside(path, format!("cannot read it: {error}"), unix_now),
    };
    let decoded = match snapshot::decode(&bytes) {
        Ok(decoded) => decoded,
        Err(error) => return set_aside(path, error.to_string(), unix_now),
    };
    // A clock that went backwards counts as no time passed.
    let age = unix_now.saturating_sub(decoded.written_at);
    let age_secs = u32::try_from(age).unwrap_or(u32::MAX);
    let (mut swarms, mut peers, mut expired) = (0, 0, 0);
    for mut swarm in decoded.swarms {
        let before = swarm.peers.len();
        swarm.peers.retain_mut(|peer| {
            peer.remaining_secs = peer.remaining_secs.saturating_sub(age_secs);
            peer.remaining_secs > 0
        });
        expired += before - swarm.peers.len();
        if swarm.peers.is_empty() {
            continue;
        }
        swarms += 1;
        peers += engine.restore(&swarm, now);
    }
    Loaded::Restored {
        swarms,
        peers,
        expired,
        age: Duration::from_secs(age),
    }
}

fn set_aside(path: &Path, cause: String, unix_now: u64) -> Loaded {
    let moved_to = match crate::files::set_aside(path, unix_now) {
        Ok(aside) => aside.display().to_string(),
        Err(error) => format!("(could not be moved: {error})"),
    };
    Loaded::SetAside { cause, moved_to }
}

/// The snapshot file named in the configuration, if any.
pub fn path(configured: &str) -> Option<PathBuf> {
    (!configured.is_empty()).then(|| PathBuf::from(configured))
}

/// Why the snapshot file cannot be this instance's.
#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    /// Another live process holds it.
    #[error(
        "store.snapshot_path {path:?} belongs to another running instance (it holds {lock:?}): \
         two instances writing one file overwrite each other and restart with each other's peers; \
         give each its own store.snapshot_path, or \"\" for none"
    )]
    InUse {
        /// The snapshot file.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
    },
    /// The lock file could not be opened or locked.
    #[error("store.snapshot_path {path:?}: cannot open or lock {lock:?}: {source}")]
    Io {
        /// The snapshot file.
        path: PathBuf,
        /// The lock file beside it.
        lock: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// An exclusive hold on a snapshot file, released when dropped (or when the
/// process dies, however it dies: the kernel drops the lock).
#[derive(Debug)]
pub struct Owner {
    _lock: std::fs::File,
}

/// Takes the snapshot file at `path` for this process. The lock is on
/// `PATH.lock`, beside it, because each save replaces the snapshot by a
/// rename: a lock on the snapshot itself would stay with the old file.
pub fn own(path: &Path) -> Result<Owner, OwnerError> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let io = |source| OwnerError::Io {
        path: path.to_owned(),
        lock: lock.clone(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(Owner { _lock: file }),
        Err(std::fs::TryLockError::WouldBlock) => Err(OwnerError::InUse {
            path: path.to_owned(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(io(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bittorrent::{AnnounceRequest, Event, InfoHash, PeerId};
    use crate::swarm::EngineConfig;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    /// Peer `peer` of torrent `torrent` announces `event` with `left` bytes to go.
    fn announce_event(
        engine: &Engine,
        (torrent, peer, v6): (u8, u8, bool),
        left: u64,
        event: Event,
        now: Instant,
    ) {
        let addr = if v6 {
            format!("[fd77::{peer}]:6881")
        } else {
            format!("10.0.{torrent}.{peer}:6881")
        };
        let request = AnnounceRequest {
            info_hash: InfoHash([torrent; 20]),
            peer_id: PeerId([peer; 20]),
            addr: addr.parse().expect("addr"),
            event,
            left,
            uploaded: 0,
            downloaded: 0,
            numwant: 50,
            peer_ids: false,
        };
        engine.announce(&request, now, &mut SmallRng::seed_from_u64(1));
    }

    fn announce(engine: &Engine, torrent: u8, peer: u8, v6: bool, left: u64, now: Instant) {
        announce_event(engine, (torrent, peer, v6), left, Event::Started, now);
    }

    fn engine() -> Engine {
        Engine::new(EngineConfig {
            peer_lifetime: Duration::from_secs(150),
            shards: 4,
            ..EngineConfig::default()
        })
    }

    /// A directory of the test's own, deleted when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn snapshot(&self) -> PathBuf {
            self.0.join("snapshot.bin")
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("swarmgate-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        Scratch(dir)
    }

    #[test]
    fn a_restart_restores_counts_and_drops_what_expired_meanwhile() {
        let scratch = temp("restore");
        let path = scratch.snapshot();
        let old = engine();
        let t0 = old.epoch();
        // Torrent 1: two seeders and a leecher, one of them over IPv6; torrent
        // 2: a leecher that announced 100 s before the snapshot.
        announce(&old, 2, 9, false, 5, t0);
        let later = t0 + Duration::from_secs(100);
        announce(&old, 1, 1, false, 0, later);
        announce(&old, 1, 2, true, 0, later);
        announce(&old, 1, 3, false, 7, later);
        let written = write(&old, &path, later, 1_000_100).expect("written");
        assert_eq!((written.swarms, written.peers), (2, 4));
        assert_eq!(written.bytes, snapshot::encoded_len(2, 3, 1));

        // Down for 60 s: torrent 2's leecher (50 s left) is gone, torrent 1 stays.
        let new = engine();
        let loaded = load(&new, &path, new.epoch(), 1_000_160);
        assert_eq!(
            loaded,
            Loaded::Restored {
                swarms: 1,
                peers: 3,
                expired: 1,
                age: Duration::from_secs(60)
            }
        );
        let census = new.census();
        assert_eq!((census.swarms, census.seeders, census.leechers), (1, 2, 1));
        // They expire when they would have: 150 - 60 = 90 s from now.
        let purged = new.purge_expired(new.epoch() + Duration::from_secs(89));
        assert_eq!(purged.removed_peers, 0);
        let purged = new.purge_expired(new.epoch() + Duration::from_secs(91));
        assert_eq!(purged.removed_peers, 3);
    }

    proptest::proptest! {
        /// Whatever was announced (both families, seeders, leechers,
        /// completions, swarms past the compact layout), a snapshot restored
        /// into a fresh engine scrapes the same: same swarms, same counts.
        #[test]
        fn a_restored_engine_scrapes_the_same(
            announces in proptest::collection::vec(
                (0u8..4, 0u8..80, proptest::prelude::any::<bool>(), 0u64..3, proptest::prelude::any::<bool>()),
                1..300,
            ),
        ) {
            let old = engine();
            let now = old.epoch() + Duration::from_secs(10);
            for (torrent, peer, v6, left, complete) in announces {
                let event = if complete { Event::Completed } else { Event::None };
                announce_event(&old, (torrent, peer, v6), left, event, now);
            }
            let mut encoder = snapshot::Encoder::new(0, 0);
            let mut batch = Vec::new();
            for shard in 0..old.shard_count() {
                old.export_shard(shard, now, &mut batch);
                for swarm in batch.drain(..) {
                    encoder.swarm(&swarm);
                }
            }
            let decoded = snapshot::decode(&encoder.finish()).expect("decodes");
            let new = engine();
            for swarm in &decoded.swarms {
                new.restore(swarm, new.epoch());
            }
            proptest::prop_assert_eq!(new.census(), old.census());
            let everything = crate::bittorrent::ScrapeRequest {
                info_hashes: (0u8..4).map(|t| InfoHash([t; 20])).collect(),
            };
            proptest::prop_assert_eq!(new.scrape(&everything), old.scrape(&everything));
        }
    }

    #[test]
    fn damaged_files_are_moved_aside_and_a_missing_one_is_a_first_start() {
        let scratch = temp("damaged");
        let path = scratch.snapshot();
        let new = engine();
        assert_eq!(load(&new, &path, new.epoch(), 5), Loaded::Missing);
        let mut damaged = snapshot::MAGIC.to_vec();
        damaged.extend_from_slice(&snapshot::VERSION.to_le_bytes());
        damaged.extend_from_slice(&[0x5a; 100]);
        std::fs::write(&path, damaged).expect("write");
        match load(&new, &path, new.epoch(), 77) {
            Loaded::SetAside { cause, moved_to } => {
                assert!(cause.contains("checksum"), "{cause}");
                assert!(moved_to.ends_with("snapshot.bin.corrupt-77"), "{moved_to}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!path.exists(), "never left in place to be overwritten");
        assert_eq!(new.census().swarms, 0);
    }
}
