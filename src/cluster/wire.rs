//! What the cluster writes to Redis and to its channel, byte for byte: pure,
//! no I/O, fuzzed.
//!
//! - **Keys.** One hash per swarm, `<namespace>:{<infohash hex>}:p`. The
//!   braces are a Redis Cluster hash tag, so a swarm's key lives on one node
//!   and swarms spread over nodes by infohash.
//! - **Fields.** A peer is keyed by its id and address family (a dual-stack
//!   client is listed once per family, as in the engine): 21 bytes.
//! - **Values.** Flags, address, the absolute expiry in Unix seconds (the
//!   instances' clocks agree on wall time, not on their process epochs) and
//!   the peer's join sequence number (flagged [`JOINED`]): 15 bytes for
//!   IPv4, 27 for IPv6. The number is copied, never recomputed, so every
//!   instance ranks a region's leechers alike. A value without the flag
//!   (written by a swarmgate before it) reads as number 0, not known: the
//!   instance that lists the peer numbers it as a newcomer.
//! - **Batches** on the channel: a header (magic, sender, send time) and the
//!   changes, each a swarm, a field and a value. Expiries are never sent:
//!   every instance expires a peer itself at the expiry it was given.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::bittorrent::{ChangeKind, InfoHash, PeerChange, PeerId, StoredPeer};

/// The first bytes of every batch: format version 1.
pub const BATCH_MAGIC: [u8; 4] = *b"SGc1";

/// Header: magic, sender id, send time (Unix microseconds), change count.
pub const BATCH_HEADER_LEN: usize = 4 + 8 + 8 + 4;

/// Value flag: the peer seeds.
const SEEDER: u8 = 1;
/// Value flag: its completed download was counted.
const COMPLETED: u8 = 1 << 1;
/// Value flag: the address is IPv6.
const V6: u8 = 1 << 2;
/// Batch entry flag: the peer stopped (no value follows the field's flags).
const STOPPED: u8 = 1 << 3;
/// Value flag: the join sequence number follows the expiry.
const JOINED: u8 = 1 << 4;

/// A hash field: the peer id and its address family.
pub type Field = [u8; 21];

/// Why a batch or a stored value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not a batch of this format (another program on the channel, or a newer swarmgate).
    #[error("not a swarmgate cluster batch (magic {0:02x?})")]
    Foreign([u8; 4]),
    /// Shorter than what it says it holds.
    #[error("truncated at byte {0}")]
    Truncated(usize),
    /// Bytes after the last change.
    #[error("{0} trailing bytes")]
    Trailing(usize),
    /// Flags this version does not define.
    #[error("unknown flags {0:#04x}")]
    Flags(u8),
    /// A hash field or value of the wrong length.
    #[error("a stored field or value of {0} bytes")]
    Length(usize),
    /// A field that names one address family over a value of the other.
    #[error("a stored peer whose field and address disagree on the address family")]
    Family,
}

/// The Redis key of a swarm's hash.
pub fn swarm_key(namespace: &str, info_hash: &InfoHash) -> String {
    format!("{namespace}:{{{}}}:p", info_hash.to_hex())
}

/// The `SCAN MATCH` pattern every swarm key of `namespace` matches.
pub fn swarm_key_pattern(namespace: &str) -> String {
    // Glob metacharacters in the namespace are escaped, so `a*` matches only `a*`.
    let mut pattern = String::with_capacity(namespace.len() + 8);
    for c in namespace.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str(":{*}:p");
    pattern
}

/// The infohash a swarm key names, if it is one.
pub fn info_hash_of_key(namespace: &str, key: &[u8]) -> Option<InfoHash> {
    let rest = key.strip_prefix(namespace.as_bytes())?;
    let hex = rest.strip_prefix(b":{")?.strip_suffix(b"}:p")?;
    InfoHash::from_hex(std::str::from_utf8(hex).ok()?).ok()
}

/// The Redis Cluster slot of a key (CRC16/XMODEM of its hash tag, mod 16384).
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let inner = &key[open + 1..];
            let close = inner.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &inner[..close])
        })
        .unwrap_or(key);
    crc16_xmodem(tagged) % 16384
}

fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The hash field of a peer.
pub fn field(peer: &StoredPeer) -> Field {
    let mut field = [0; 21];
    field[..20].copy_from_slice(&peer.id.0);
    field[20] = if peer.addr.is_ipv6() { b'6' } else { b'4' };
    field
}

/// The hash value of a peer listed until `expires_unix`.
pub fn value(peer: &StoredPeer, expires_unix: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(27);
    put_value(&mut out, peer, expires_unix);
    out
}

fn put_value(out: &mut Vec<u8>, peer: &StoredPeer, expires_unix: u32) {
    let mut flags = JOINED;
    if peer.seeder {
        flags |= SEEDER;
    }
    if peer.completed {
        flags |= COMPLETED;
    }
    if peer.addr.is_ipv6() {
        flags |= V6;
    }
    out.push(flags);
    match peer.addr.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&peer.addr.port().to_be_bytes());
    out.extend_from_slice(&expires_unix.to_be_bytes());
    out.extend_from_slice(&peer.join_seq.to_be_bytes());
}

/// A stored peer read back: its lifetime left at `unix_now` (zero: expired).
pub fn decode_peer(field: &[u8], value: &[u8], unix_now: u64) -> Result<StoredPeer, WireError> {
    let field: &Field = field
        .try_into()
        .map_err(|_| WireError::Length(field.len()))?;
    if let Some(&flags) = value.first()
        && flags & STOPPED != 0
    {
        // Only batches carry stops; a stored peer is listed.
        return Err(WireError::Flags(flags));
    }
    let mut reader = Reader {
        bytes: value,
        at: 0,
    };
    let peer = reader.peer(field, unix_now)?;
    if reader.at != value.len() {
        return Err(WireError::Length(value.len()));
    }
    if (field[20] == b'6') != peer.addr.is_ipv6() {
        return Err(WireError::Family);
    }
    Ok(peer)
}

/// Lifetime left at `unix_now` of a peer listed until `expires_unix`.
fn remaining(expires_unix: u32, unix_now: u64) -> u32 {
    u32::try_from(u64::from(expires_unix).saturating_sub(unix_now)).unwrap_or(0)
}

/// The absolute expiry of a peer with `remaining_secs` left at `unix_now`.
pub fn expires_unix(remaining_secs: u32, unix_now: u64) -> u32 {
    u32::try_from(unix_now.saturating_add(u64::from(remaining_secs))).unwrap_or(u32::MAX)
}

/// Builds one batch for the channel.
pub struct BatchEncoder {
    bytes: Vec<u8>,
    count: u32,
}

impl BatchEncoder {
    /// An empty batch from `sender`, sent at `sent_micros` (Unix).
    pub fn new(sender: u64, sent_micros: u64) -> Self {
        let mut bytes = Vec::with_capacity(1024);
        bytes.extend_from_slice(&BATCH_MAGIC);
        bytes.extend_from_slice(&sender.to_be_bytes());
        bytes.extend_from_slice(&sent_micros.to_be_bytes());
        bytes.extend_from_slice(&0u32.to_be_bytes());
        Self { bytes, count: 0 }
    }

    /// Adds a listed or stopped peer (expiries are not sent).
    pub fn push(&mut self, change: &PeerChange, unix_now: u64) {
        if change.kind == ChangeKind::Expired {
            return;
        }
        self.bytes.extend_from_slice(&change.info_hash.0);
        self.bytes.extend_from_slice(&change.peer.id.0);
        let at = self.bytes.len();
        put_value(
            &mut self.bytes,
            &change.peer,
            expires_unix(change.peer.remaining_secs, unix_now),
        );
        if change.kind == ChangeKind::Stopped {
            self.bytes[at] |= STOPPED;
        }
        self.count += 1;
    }

    /// Changes added so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The finished batch.
    pub fn finish(mut self) -> Vec<u8> {
        self.bytes[20..24].copy_from_slice(&self.count.to_be_bytes());
        self.bytes
    }
}

/// A batch's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The instance that sent it.
    pub sender: u64,
    /// When (Unix microseconds, by the sender's clock).
    pub sent_micros: u64,
    /// Changes it holds.
    pub count: u32,
}

/// Reads a batch: its header and its changes, each peer's lifetime counted
/// from `unix_now`. Nothing is trusted: counts are checked against the
/// length before anything is allocated.
pub fn decode_batch(
    bytes: &[u8],
    unix_now: u64,
) -> Result<(BatchHeader, Vec<PeerChange>), WireError> {
    let mut reader = Reader { bytes, at: 0 };
    let magic: [u8; 4] = reader.array()?;
    if magic != BATCH_MAGIC {
        return Err(WireError::Foreign(magic));
    }
    let header = BatchHeader {
        sender: u64::from_be_bytes(reader.array()?),
        sent_micros: u64::from_be_bytes(reader.array()?),
        count: u32::from_be_bytes(reader.array()?),
    };
    // The smallest change is 20 + 20 + 11 bytes.
    let room = (bytes.len() - BATCH_HEADER_LEN) / 51;
    let mut changes = Vec::with_capacity((header.count as usize).min(room));
    for _ in 0..header.count {
        let info_hash = InfoHash(reader.array()?);
        let mut field = [0; 21];
        field[..20].copy_from_slice(&reader.array::<20>()?);
        let stopped = reader
            .bytes
            .get(reader.at)
            .is_some_and(|f| f & STOPPED != 0);
        let peer = reader.peer(&field, unix_now)?;
        changes.push(PeerChange {
            info_hash,
            peer,
            kind: if stopped {
                ChangeKind::Stopped
            } else {
                ChangeKind::Listed
            },
        });
    }
    if reader.at != bytes.len() {
        return Err(WireError::Trailing(bytes.len() - reader.at));
    }
    Ok((header, changes))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let end = self.at + N;
        let slice = self
            .bytes
            .get(self.at..end)
            .ok_or(WireError::Truncated(self.bytes.len()))?;
        self.at = end;
        slice.try_into().map_err(|_| WireError::Truncated(self.at))
    }

    /// A value (flags, address, expiry, join sequence) for the peer named by
    /// `field` (`STOPPED` is allowed here; batches give it meaning).
    fn peer(&mut self, field: &Field, unix_now: u64) -> Result<StoredPeer, WireError> {
        let [flags] = self.array()?;
        if flags & !(SEEDER | COMPLETED | V6 | STOPPED | JOINED) != 0 {
            return Err(WireError::Flags(flags));
        }
        let ip = if flags & V6 != 0 {
            IpAddr::V6(Ipv6Addr::from(self.array::<16>()?))
        } else {
            IpAddr::V4(Ipv4Addr::from(self.array::<4>()?))
        };
        let port = u16::from_be_bytes(self.array()?);
        let expires = u32::from_be_bytes(self.array()?);
        let join_seq = if flags & JOINED != 0 {
            u32::from_be_bytes(self.array()?)
        } else {
            0
        };
        let mut id = [0; 20];
        id.copy_from_slice(&field[..20]);
        Ok(StoredPeer {
            id: PeerId(id),
            addr: SocketAddr::new(ip, port),
            seeder: flags & SEEDER != 0,
            completed: flags & COMPLETED != 0,
            remaining_secs: remaining(expires, unix_now),
            join_seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31c3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        let info_hash = InfoHash([0xab; 20]);
        let key = swarm_key("sg", &info_hash);
        assert_eq!(
            key_slot(key.as_bytes()),
            key_slot(info_hash.to_hex().as_bytes())
        );
        assert_eq!(info_hash_of_key("sg", key.as_bytes()), Some(info_hash));
        assert_eq!(info_hash_of_key("sg2", key.as_bytes()), None);
        assert_eq!(info_hash_of_key("sg", b"sg:{zz}:p"), None);
        assert_eq!(swarm_key_pattern("a*b"), "a\\*b:{*}:p");
    }

    fn peer_strategy() -> impl Strategy<Value = StoredPeer> {
        (
            any::<[u8; 20]>(),
            any::<bool>(),
            any::<[u8; 16]>(),
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
            0u32..100_000,
            any::<u32>(),
        )
            .prop_map(
                |(id, v6, ip, port, seeder, completed, remaining_secs, join_seq)| {
                    let ip = if v6 {
                        IpAddr::V6(Ipv6Addr::from(ip))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]))
                    };
                    StoredPeer {
                        id: PeerId(id),
                        addr: SocketAddr::new(ip, port),
                        seeder,
                        completed,
                        remaining_secs,
                        join_seq,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn stored_peers_round_trip(peer in peer_strategy(), now in 1_700_000_000u64..1_900_000_000) {
            let value = value(&peer, expires_unix(peer.remaining_secs, now));
            prop_assert_eq!(value.len(), if peer.addr.is_ipv6() { 27 } else { 15 });
            prop_assert_eq!(decode_peer(&field(&peer), &value, now), Ok(peer));
            // Later, the same peer has less left.
            let later = decode_peer(&field(&peer), &value, now + 10).map(|p| p.remaining_secs);
            prop_assert_eq!(later, Ok(peer.remaining_secs.saturating_sub(10)));
        }

        #[test]
        fn batches_round_trip_without_expiries(
            peers in proptest::collection::vec((any::<[u8; 20]>(), peer_strategy(), 0u8..3), 0..40),
            sender in any::<u64>(),
        ) {
            let now = 1_800_000_000;
            let changes: Vec<PeerChange> = peers
                .into_iter()
                .map(|(hash, peer, kind)| PeerChange {
                    info_hash: InfoHash(hash),
                    peer,
                    kind: [ChangeKind::Listed, ChangeKind::Stopped, ChangeKind::Expired][kind as usize],
                })
                .collect();
            let mut batch = BatchEncoder::new(sender, 42);
            for change in &changes {
                batch.push(change, now);
            }
            let sent: Vec<PeerChange> = changes.into_iter().filter(|c| c.kind != ChangeKind::Expired).collect();
            prop_assert_eq!(batch.len(), sent.len());
            let bytes = batch.finish();
            let (header, decoded) = decode_batch(&bytes, now).expect("own batch decodes");
            prop_assert_eq!(header, BatchHeader { sender, sent_micros: 42, count: sent.len() as u32 });
            prop_assert_eq!(decoded, sent);
            // Every cut short is an error, never a panic.
            for cut in 0..bytes.len() {
                prop_assert!(decode_batch(&bytes[..cut], now).is_err());
            }
        }

        #[test]
        fn any_bytes_decode_or_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_batch(&bytes, 0);
            let mut with_magic = BATCH_MAGIC.to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = decode_batch(&with_magic, 0);
            let _ = decode_peer(&bytes[..bytes.len().min(21)], &bytes, 0);
        }
    }

    /// A value written before join sequences were carried (no `JOINED`
    /// flag, 11 bytes) still reads, with the number not known (0).
    #[test]
    fn values_without_a_join_sequence_still_read() {
        let peer = StoredPeer {
            id: PeerId([7; 20]),
            addr: "10.0.0.7:6881".parse().expect("address"),
            seeder: true,
            completed: true,
            remaining_secs: 30,
            join_seq: 41,
        };
        let mut old = value(&peer, 1_800_000_030);
        old[0] &= !JOINED;
        old.truncate(11);
        let read = decode_peer(&field(&peer), &old, 1_800_000_000).expect("old value reads");
        assert_eq!(read.join_seq, 0);
        assert_eq!(
            read,
            StoredPeer {
                join_seq: read.join_seq,
                ..peer
            }
        );
        // The flag without the four bytes is a damaged value.
        old[0] |= JOINED;
        assert_eq!(
            decode_peer(&field(&peer), &old, 0),
            Err(WireError::Truncated(11))
        );
    }

    #[test]
    fn damaged_values_are_refused() {
        let peer = StoredPeer {
            id: PeerId([1; 20]),
            addr: "10.0.0.1:6881".parse().expect("address"),
            seeder: false,
            completed: false,
            remaining_secs: 10,
            join_seq: 3,
        };
        let mut stored = value(&peer, 100);
        assert_eq!(
            decode_peer(&field(&peer), &stored[..10], 0),
            Err(WireError::Truncated(10))
        );
        let mut v6_field = field(&peer);
        v6_field[20] = b'6';
        assert_eq!(decode_peer(&v6_field, &stored, 0), Err(WireError::Family));
        stored[0] = 0x80;
        assert_eq!(
            decode_peer(&field(&peer), &stored, 0),
            Err(WireError::Flags(0x80))
        );
        stored[0] = STOPPED;
        assert_eq!(
            decode_peer(&field(&peer), &stored, 0),
            Err(WireError::Flags(STOPPED))
        );
        assert_eq!(decode_peer(&[0; 5], &stored, 0), Err(WireError::Length(5)));
        assert_eq!(
            decode_batch(b"SGx1aaaaaaaaaaaaaaaaaaaa", 0),
            Err(WireError::Foreign(*b"SGx1"))
        );
    }
}
