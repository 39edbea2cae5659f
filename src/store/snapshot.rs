//! The snapshot file format: every swarm's peers with their remaining
//! lifetimes, so a restarted tracker answers with the swarms it had. Pure
//! (bytes in, bytes out), so it is fuzzed and property-tested.
//!
//! Layout, little-endian throughout:
//!
//! ```text
//! header  magic "SGSNAP\r\n" | version u32 | reserved u32 | written_at u64 (Unix s)
//!         | swarms u64 | peers u64                                        40 bytes
//! swarm   infohash [20] | downloaded u32 | v4 peers u32 | v6 peers u32     32 bytes
//! v4 peer id [20] | ip [4]  | port u16 | flags u8 | remaining u32 | join_seq   32+ bytes
//! v6 peer id [20] | ip [16] | port u16 | flags u8 | remaining u32 | join_seq   44+ bytes
//! trailer SHA-256 of everything before it                                 32 bytes
//! ```
//!
//! `remaining` is the peer's lifetime left, in seconds, when the file was
//! written; wall-clock time, so a loader subtracts the time the process was
//! down. `join_seq` is the peer's place in its swarm's join sequence, which
//! ranks a region's leechers for the bridgehead guard: a LEB128 varint, one
//! byte below 128 (a swarm numbers its joiners from 1), five at most, and
//! never longer than it needs (so what decodes re-encodes to the same bytes). Version 1 files
//! (without it) still load: their peers are numbered as they are restored,
//! in file order, which is the order a version 1 writer kept. The magic's `\r\n` catches a file mangled by a text transfer, the
//! version a file from a newer swarmgate, the checksum everything else.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use aws_lc_rs::digest;

use crate::bittorrent::{InfoHash, PeerId, StoredPeer, StoredSwarm};

/// The first bytes of every snapshot.
pub const MAGIC: &[u8; 8] = b"SGSNAP\r\n";
/// The format this build writes and the newest it reads.
pub const VERSION: u32 = 2;
/// The oldest format this build reads (no join sequence numbers).
const VERSION_WITHOUT_JOINED: u32 = 1;
const HEADER: usize = 40;
const SWARM: usize = 32;
/// A v4 peer's record with a one-byte join sequence number.
const V4_PEER: usize = 32;
/// A v6 peer's record with a one-byte join sequence number.
const V6_PEER: usize = 44;
/// What a peer's join sequence number adds to its record from version 2 on,
/// at the least.
const JOINED: usize = 1;
const TRAILER: usize = 32;

const SEEDER: u8 = 1;
const COMPLETED: u8 = 2;

/// Why bytes are not a usable snapshot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Shorter than a header and a trailer.
    #[error("truncated: {0} bytes, less than an empty snapshot")]
    Truncated(usize),
    /// Not a swarmgate snapshot at all.
    #[error("not a swarmgate snapshot (wrong magic bytes)")]
    Foreign,
    /// Written by a newer swarmgate.
    #[error(
        "format version {0} is newer than this swarmgate reads ({VERSION}); upgrade, or move the file away"
    )]
    TooNew(u32),
    /// The bytes do not hash to the trailer.
    #[error("checksum mismatch: the file is corrupt or was cut short")]
    Checksum,
    /// The checksum holds but the contents do not add up (a writer bug).
    #[error("inconsistent contents: {0}")]
    Inconsistent(&'static str),
}

/// A decoded snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// When it was written (Unix seconds).
    pub written_at: u64,
    /// The swarms, with each peer's lifetime left at `written_at`.
    pub swarms: Vec<StoredSwarm>,
}

/// Bytes of a snapshot of `swarms` holding `v4` and `v6` peers in all,
/// when every join sequence number is below 128 (a size hint otherwise).
pub fn encoded_len(swarms: usize, v4: usize, v6: usize) -> usize {
    HEADER + swarms * SWARM + v4 * V4_PEER + v6 * V6_PEER + TRAILER
}

/// Encodes swarms as they come (one shard's at a time, say), then the trailer.
pub struct Encoder {
    bytes: Vec<u8>,
    swarms: u64,
    peers: u64,
}

impl Encoder {
    /// Starts a snapshot written at `written_at`; `capacity` is a size hint.
    pub fn new(written_at: u64, capacity: usize) -> Self {
        let mut bytes = Vec::with_capacity(capacity.max(HEADER + TRAILER));
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&written_at.to_le_bytes());
        bytes.extend_from_slice(&[0u8; 16]); // counts, filled in by finish()
        Self {
            bytes,
            swarms: 0,
            peers: 0,
        }
    }

    /// Appends one swarm (an empty one is skipped: it has nothing to restore).
    pub fn swarm(&mut self, swarm: &StoredSwarm) {
        if swarm.peers.is_empty() {
            return;
        }
        let v4 = swarm.peers.iter().filter(|p| p.addr.is_ipv4()).count();
        let v6 = swarm.peers.len() - v4;
        self.bytes.extend_from_slice(&swarm.info_hash.0);
        self.bytes
            .extend_from_slice(&swarm.downloaded.to_le_bytes());
        self.bytes.extend_from_slice(&(v4 as u32).to_le_bytes());
        self.bytes.extend_from_slice(&(v6 as u32).to_le_bytes());
        for want_v4 in [true, false] {
            for peer in swarm.peers.iter().filter(|p| p.addr.is_ipv4() == want_v4) {
                self.bytes.extend_from_slice(&peer.id.0);
                match peer.addr {
                    SocketAddr::V4(addr) => self.bytes.extend_from_slice(&addr.ip().octets()),
                    SocketAddr::V6(addr) => self.bytes.extend_from_slice(&addr.ip().octets()),
                }
                self.bytes
                    .extend_from_slice(&peer.addr.port().to_le_bytes());
                let flags = if peer.seeder { SEEDER } else { 0 }
                    | if peer.completed { COMPLETED } else { 0 };
                self.bytes.push(flags);
                self.bytes
                    .extend_from_slice(&peer.remaining_secs.to_le_bytes());
                put_varint(&mut self.bytes, peer.join_seq);
            }
        }
        self.swarms += 1;
        self.peers += swarm.peers.len() as u64;
    }

    /// Peers appended so far.
    pub fn peers(&self) -> u64 {
        self.peers
    }

    /// The finished file.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[24..32].copy_from_slice(&self.swarms.to_le_bytes());
        self.bytes[32..40].copy_from_slice(&self.peers.to_le_bytes());
        let sum = digest::digest(&digest::SHA256, &self.bytes);
        self.bytes.extend_from_slice(sum.as_ref());
        self.bytes
    }
}

/// Reads fixed-size fields from a checked buffer.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.bytes.len() < n {
            return Err(SnapshotError::Inconsistent("a record runs past the end"));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, SnapshotError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// A LEB128 varint of at most five bytes, in its shortest form.
    fn varint(&mut self) -> Result<u32, SnapshotError> {
        let mut value = 0u32;
        for at in 0..5 {
            let [byte] = self.array()?;
            let bits = u32::from(byte & 0x7f);
            if at == 4 && bits > 0x0f {
                return Err(SnapshotError::Inconsistent("a join sequence past 32 bits"));
            }
            value |= bits << (7 * at);
            if byte & 0x80 == 0 {
                if at > 0 && byte == 0 {
                    return Err(SnapshotError::Inconsistent(
                        "a join sequence longer than it needs",
                    ));
                }
                return Ok(value);
            }
        }
        Err(SnapshotError::Inconsistent(
            "a join sequence past five bytes",
        ))
    }
}

/// Appends `value` as a LEB128 varint: 7 bits a byte, lowest first, the
/// high bit set on every byte but the last.
fn put_varint(out: &mut Vec<u8>, mut value: u32) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Decodes and checks a whole snapshot file.
pub fn decode(bytes: &[u8]) -> Result<Snapshot, SnapshotError> {
    if bytes.len() < HEADER + TRAILER {
        if bytes.len() >= MAGIC.len() && &bytes[..MAGIC.len()] != MAGIC {
            return Err(SnapshotError::Foreign);
        }
        return Err(SnapshotError::Truncated(bytes.len()));
    }
    if &bytes[..MAGIC.len()] != MAGIC {
        return Err(SnapshotError::Foreign);
    }
    let (body, trailer) = bytes.split_at(bytes.len() - TRAILER);
    let mut header = Reader {
        bytes: &body[MAGIC.len()..HEADER],
    };
    let version = header.u32()?;
    if version > VERSION {
        return Err(SnapshotError::TooNew(version));
    }
    if version < VERSION_WITHOUT_JOINED {
        return Err(SnapshotError::Inconsistent("format version 0"));
    }
    let with_joined = version > VERSION_WITHOUT_JOINED;
    if digest::digest(&digest::SHA256, body).as_ref() != trailer {
        return Err(SnapshotError::Checksum);
    }
    if header.u32()? != 0 {
        return Err(SnapshotError::Inconsistent(
            "reserved header bytes are not zero",
        ));
    }
    let written_at = header.u64()?;
    let swarm_count = header.u64()?;
    let peer_count = header.u64()?;
    let mut reader = Reader {
        bytes: &body[HEADER..],
    };
    // Counts are only trusted as far as the bytes present can back them.
    let mut swarms = Vec::with_capacity((swarm_count as usize).min(reader.bytes.len() / SWARM));
    let mut peers_seen = 0u64;
    for _ in 0..swarm_count {
        let info_hash = InfoHash(reader.array()?);
        let downloaded = reader.u32()?;
        let v4 = reader.u32()? as usize;
        let v6 = reader.u32()? as usize;
        if v4 + v6 == 0 {
            return Err(SnapshotError::Inconsistent("an empty swarm"));
        }
        let smallest = if with_joined {
            V4_PEER
        } else {
            V4_PEER - JOINED
        };
        let most = reader.bytes.len() / smallest;
        let mut peers = Vec::with_capacity((v4 + v6).min(most));
        for family_v4 in [true, false] {
            for _ in 0..if family_v4 { v4 } else { v6 } {
                let id = PeerId(reader.array()?);
                let ip: std::net::IpAddr = if family_v4 {
                    Ipv4Addr::from(reader.array::<4>()?).into()
                } else {
                    Ipv6Addr::from(reader.array::<16>()?).into()
                };
                let port = reader.u16()?;
                let flags = reader.array::<1>()?[0];
                if flags & !(SEEDER | COMPLETED) != 0 {
                    return Err(SnapshotError::Inconsistent("unknown peer flags"));
                }
                let remaining_secs = reader.u32()?;
                let join_seq = if with_joined { reader.varint()? } else { 0 };
                let addr = match ip {
                    std::net::IpAddr::V4(ip) => SocketAddr::V4(SocketAddrV4::new(ip, port)),
                    std::net::IpAddr::V6(ip) => SocketAddr::V6(SocketAddrV6::new(ip, port, 0, 0)),
                };
                peers.push(StoredPeer {
                    id,
                    addr,
                    seeder: flags & SEEDER != 0,
                    completed: flags & COMPLETED != 0,
                    remaining_secs,
                    join_seq,
                });
            }
        }
        peers_seen += peers.len() as u64;
        swarms.push(StoredSwarm {
            info_hash,
            downloaded,
            peers,
        });
    }
    if !reader.bytes.is_empty() {
        return Err(SnapshotError::Inconsistent("bytes after the last swarm"));
    }
    if peers_seen != peer_count {
        return Err(SnapshotError::Inconsistent("the peer count does not match"));
    }
    Ok(Snapshot { written_at, swarms })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn peer(n: u8, v6: bool) -> StoredPeer {
        StoredPeer {
            id: PeerId([n; 20]),
            addr: if v6 {
                SocketAddr::new(
                    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, n.into()).into(),
                    6881,
                )
            } else {
                SocketAddr::new(Ipv4Addr::new(10, 0, 0, n).into(), 6881)
            },
            seeder: n.is_multiple_of(3),
            completed: n.is_multiple_of(2),
            remaining_secs: 100 + u32::from(n),
            join_seq: 1 + u32::from(n),
        }
    }

    fn encode(snapshot: &Snapshot) -> Vec<u8> {
        let mut encoder = Encoder::new(snapshot.written_at, 0);
        for swarm in &snapshot.swarms {
            encoder.swarm(swarm);
        }
        encoder.finish()
    }

    fn sample() -> Snapshot {
        Snapshot {
            written_at: 1_800_000_000,
            swarms: vec![
                StoredSwarm {
                    info_hash: InfoHash([1; 20]),
                    downloaded: 7,
                    // IPv4 first, as the encoder writes them.
                    peers: vec![peer(1, false), peer(2, false), peer(3, true)],
                },
                StoredSwarm {
                    info_hash: InfoHash([2; 20]),
                    downloaded: 0,
                    peers: vec![peer(4, true)],
                },
            ],
        }
    }

    #[test]
    fn round_trip_with_both_families_and_the_documented_size() {
        let snapshot = sample();
        let bytes = encode(&snapshot);
        assert_eq!(bytes.len(), encoded_len(2, 2, 2));
        assert_eq!(decode(&bytes), Ok(snapshot));
        assert_eq!(
            decode(&encode(&Snapshot {
                written_at: 5,
                swarms: vec![]
            }))
            .map(|s| s.swarms.len()),
            Ok(0)
        );
    }

    /// A version 1 file (no join sequence numbers) loads, each number
    /// not known (0).
    #[test]
    fn version_1_files_load_without_join_sequences() {
        let snapshot = sample();
        let mut encoder = Encoder::new(snapshot.written_at, 0);
        for swarm in &snapshot.swarms {
            encoder.swarm(swarm);
        }
        let mut body = encoder.finish();
        body.truncate(body.len() - TRAILER);
        // Rewrite it as version 1: every peer record loses its last byte
        // (the sample's join sequence numbers are below 128).
        let mut old = body[..HEADER].to_vec();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let mut at = HEADER;
        for swarm in &snapshot.swarms {
            old.extend_from_slice(&body[at..at + SWARM]);
            at += SWARM;
            for peer in &swarm.peers {
                let len = if peer.addr.is_ipv6() {
                    V6_PEER
                } else {
                    V4_PEER
                };
                old.extend_from_slice(&body[at..at + len - JOINED]);
                at += len;
            }
        }
        let sum = digest::digest(&digest::SHA256, &old);
        old.extend_from_slice(sum.as_ref());
        let mut expected = snapshot.clone();
        for swarm in &mut expected.swarms {
            for peer in &mut swarm.peers {
                peer.join_seq = 0;
            }
        }
        assert_eq!(decode(&old), Ok(expected));
    }

    #[test]
    fn every_kind_of_damage_is_named() {
        let bytes = encode(&sample());
        assert_eq!(decode(&bytes[..20]), Err(SnapshotError::Truncated(20)));
        assert_eq!(
            decode(b"PK\x03\x04 this is a zip file, not a snapshot at all........"),
            Err(SnapshotError::Foreign)
        );
        let mut newer = bytes.clone();
        newer[8] = 3;
        assert_eq!(decode(&newer), Err(SnapshotError::TooNew(3)));
        for cut in [bytes.len() - 1, bytes.len() - 40, HEADER + TRAILER] {
            assert_eq!(
                decode(&bytes[..cut]),
                Err(SnapshotError::Checksum),
                "cut at {cut}"
            );
        }
        // Fields this version does not use must be zero, so that what
        // decodes re-encodes to the same bytes (found by the fuzzer).
        let reseal = |mut damaged: Vec<u8>| {
            let body = damaged.len() - TRAILER;
            let sum = digest::digest(&digest::SHA256, &damaged[..body]);
            damaged[body..].copy_from_slice(sum.as_ref());
            damaged
        };
        let mut reserved = bytes.clone();
        reserved[13] = 0x25;
        assert!(matches!(
            decode(&reseal(reserved)),
            Err(SnapshotError::Inconsistent(_))
        ));
        let mut flags = bytes.clone();
        flags[HEADER + SWARM + 26] |= 0x80;
        assert!(matches!(
            decode(&reseal(flags)),
            Err(SnapshotError::Inconsistent(_))
        ));
        for flip in [HEADER, HEADER + 25, bytes.len() - 1] {
            let mut damaged = bytes.clone();
            damaged[flip] ^= 0x40;
            assert_eq!(
                decode(&damaged),
                Err(SnapshotError::Checksum),
                "byte {flip}"
            );
        }
    }

    #[test]
    fn join_sequences_take_the_fewest_bytes_and_no_more() {
        for (value, len) in [
            (0, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u32::MAX, 5),
        ] {
            let mut bytes = Vec::new();
            put_varint(&mut bytes, value);
            assert_eq!(bytes.len(), len, "{value}");
            let mut reader = Reader { bytes: &bytes };
            assert_eq!(reader.varint(), Ok(value));
            assert!(reader.bytes.is_empty());
        }
        for damaged in [
            &[0x80, 0x00][..],
            &[0xff, 0xff, 0xff, 0xff, 0x1f],
            &[0x80; 6],
            &[0x80],
        ] {
            assert!(Reader { bytes: damaged }.varint().is_err(), "{damaged:?}");
        }
    }

    proptest! {
        /// Whatever the bytes, decoding returns; a valid checksum over
        /// nonsense is an error, never a panic or a huge allocation.
        #[test]
        fn garbage_is_refused_without_panicking(mut bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            if bytes.len() >= HEADER + TRAILER {
                bytes[..8].copy_from_slice(MAGIC);
                // Both formats this build reads.
                let version = 1 + u32::from(bytes[12] & 1);
                bytes[8..12].copy_from_slice(&version.to_le_bytes());
                let body = bytes.len() - TRAILER;
                let sum = digest::digest(&digest::SHA256, &bytes[..body]);
                bytes[body..].copy_from_slice(sum.as_ref());
                let _ = decode(&bytes);
            }
        }

        #[test]
        fn any_swarms_round_trip(
            swarms in proptest::collection::vec(
                (any::<[u8; 20]>(), any::<u32>(), proptest::collection::vec((any::<u8>(), any::<bool>()), 1..6)),
                0..6,
            ),
            written_at in any::<u64>(),
        ) {
            let snapshot = Snapshot {
                written_at,
                swarms: swarms
                    .into_iter()
                    .map(|(hash, downloaded, peers)| {
                        let mut peers: Vec<StoredPeer> = peers
                            .into_iter()
                            .map(|(n, v6)| StoredPeer { join_seq: u32::from(n) << (n % 25), ..peer(n, v6) })
                            .collect();
                        peers.sort_by_key(|p| p.addr.is_ipv6());
                        StoredSwarm { info_hash: InfoHash(hash), downloaded, peers }
                    })
                    .collect(),
            };
            prop_assert_eq!(decode(&encode(&snapshot)), Ok(snapshot));
        }
    }
}
