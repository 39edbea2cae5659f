//! The tracker's vocabulary: identifiers, requests and responses in the terms
//! of BitTorrent, with no wire format and no storage in them. Frontends build
//! these from bytes, the gateway checks them, the engine answers them, the
//! store keeps them; so they live here, apart from all four.

use std::fmt;
use std::net::SocketAddr;

/// How near a handed-out peer is to the announcer, nearest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    /// Same subnet (rack).
    Subnet = 0,
    /// Same zone, another subnet.
    Zone = 1,
    /// Same region, another zone.
    Region = 2,
    /// Anywhere else, or no site known.
    Other = 3,
}

impl Tier {
    /// All tiers, nearest first.
    pub const ALL: [Tier; 4] = [Tier::Subnet, Tier::Zone, Tier::Region, Tier::Other];

    /// The metric label: `subnet`, `zone`, `region` or `other`.
    pub fn label(self) -> &'static str {
        match self {
            Tier::Subnet => "subnet",
            Tier::Zone => "zone",
            Tier::Region => "region",
            Tier::Other => "other",
        }
    }
}

/// A torrent's v1 infohash: the SHA-1 of its bencoded `info` dictionary.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 20]);

/// Why a string is not a hex infohash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an infohash is 40 hexadecimal characters")]
pub struct InfoHashParseError;

impl InfoHash {
    /// Parses 40 hex digits, upper or lower case.
    pub fn from_hex(hex_digits: &str) -> Result<Self, InfoHashParseError> {
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(hex_digits, &mut bytes).map_err(|_| InfoHashParseError)?;
        Ok(Self(bytes))
    }

    /// Lowercase hex, the form registries put in tokens and operators read in logs.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

/// The 20-byte id a client picks for itself; unique per client session.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Peer ids start with a printable client tag (`-lt2080-`); show that part.
        write!(f, "PeerId(\"{}\")", self.0.escape_ascii())
    }
}

/// What the announcer says just happened (BEP 3, plus `paused` from BEP 21).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Event {
    /// A regular re-announce.
    #[default]
    None,
    /// The first announce of a download.
    Started,
    /// The download finished; counted once per peer in `downloaded`.
    Completed,
    /// The client is leaving the swarm; the peer is removed.
    Stopped,
    /// BEP 21 partial seed: uploads, will not download more, so needs no seeders.
    Paused,
}

/// An announce, already parsed and authorised, in the terms the engine needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The announcing client.
    pub peer_id: PeerId,
    /// Where other peers reach the announcer (its address as the tracker resolved it).
    pub addr: SocketAddr,
    /// What happened.
    pub event: Event,
    /// Bytes the announcer still needs; 0 makes it a seeder.
    pub left: u64,
    /// Bytes the announcer says it sent since it started (BEP 3 `uploaded`).
    pub uploaded: u64,
    /// Bytes the announcer says it received since it started (BEP 3 `downloaded`).
    pub downloaded: u64,
    /// How many peers to hand out (already clamped by the caller's limits).
    pub numwant: usize,
    /// Whether the reply needs peer ids (BEP 3 dictionaries without
    /// `no_peer_id`); compact and UDP replies do not, and skip reading them.
    pub peer_ids: bool,
}

impl AnnounceRequest {
    /// Whether this announcer needs no seeders: it has everything, or (BEP 21) wants nothing more.
    pub fn is_seeder(&self) -> bool {
        self.left == 0 || self.event == Event::Paused
    }
}

/// One peer handed to an announcer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandoutPeer {
    /// The peer's id, when the request asked for ids.
    pub id: Option<PeerId>,
    /// Where to connect.
    pub addr: SocketAddr,
    /// How near the peer is to the announcer.
    pub tier: Tier,
}

/// Counts for one swarm, as announce and scrape replies carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SwarmStats {
    /// Seeders (`complete`).
    pub complete: u32,
    /// Leechers (`incomplete`).
    pub incomplete: u32,
    /// Completed downloads counted since the swarm appeared (`downloaded`): a
    /// `completed` event, or a listed leecher reporting nothing left. Kept
    /// until the swarm has been empty for a peer lifetime.
    pub downloaded: u32,
}

impl SwarmStats {
    /// Peers listed (seeders and leechers; a dual-stack peer once per family).
    pub fn peers(&self) -> usize {
        self.complete as usize + self.incomplete as usize
    }
}

/// The engine's answer to an announce.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AnnounceResponse {
    /// The swarm's counts after this announce.
    pub stats: SwarmStats,
    /// Peers for the announcer, never the announcer itself.
    pub peers: Vec<HandoutPeer>,
}

/// A scrape: counts for one or more torrents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeRequest {
    /// The torrents asked about, in the order asked.
    pub info_hashes: Vec<InfoHash>,
}

/// The engine's answer to a scrape; unknown torrents get zero counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScrapeResponse {
    /// One entry per distinct infohash asked about, in the order asked.
    pub files: Vec<(InfoHash, SwarmStats)>,
}

/// One listed peer as a snapshot keeps it: enough to list it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredPeer {
    /// Its id.
    pub id: PeerId,
    /// Where it is reached.
    pub addr: SocketAddr,
    /// Whether it seeds.
    pub seeder: bool,
    /// Whether its completed download was already counted in `downloaded`.
    pub completed: bool,
    /// Seconds of its lifetime left when it was stored.
    pub remaining_secs: u32,
    /// Its place in the swarm's join sequence, kept as is wherever the peer
    /// goes: every instance ranks a region's leechers by it (then by id)
    /// for the bridgehead guard, however late it learned of each. 0 when
    /// not known (a record from an older swarmgate): the engine that lists
    /// it numbers it as a newcomer.
    pub join_seq: u32,
}

/// One swarm as a snapshot keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSwarm {
    /// The torrent.
    pub info_hash: InfoHash,
    /// Its completed-downloads counter.
    pub downloaded: u32,
    /// Its listed peers (IPv4 and IPv6 alike).
    pub peers: Vec<StoredPeer>,
}

/// What happened to a listed peer, as the change feed reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// Newly listed, or its address, role, completion or (coarse) expiry changed.
    Listed,
    /// It announced `stopped`.
    Stopped,
    /// It stopped announcing and its lifetime ran out.
    Expired,
}

/// One change to the listed peers, for the instances and the store that
/// mirror this engine (see [`crate::swarm::Engine::drain_changes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerChange {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The peer as it is listed now (for a removal: as it was), its
    /// `remaining_secs` counted from when the feed was drained.
    pub peer: StoredPeer,
    /// What happened.
    pub kind: ChangeKind,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infohash_hex_round_trip_accepts_both_cases() {
        let lower = "0123456789abcdef0123456789abcdef01234567";
        let hash = InfoHash::from_hex(lower).expect("valid hex");
        assert_eq!(hash.to_hex(), lower);
        assert_eq!(hash.to_string(), lower);
        assert_eq!(InfoHash::from_hex(&lower.to_uppercase()), Ok(hash));
        assert_eq!(InfoHash::from_hex("abc"), Err(InfoHashParseError));
        assert_eq!(
            InfoHash::from_hex(&"zz".repeat(20)),
            Err(InfoHashParseError)
        );
    }

    #[test]
    fn paused_and_finished_announcers_are_seeders() {
        let mut req = AnnounceRequest {
            info_hash: InfoHash([0; 20]),
            peer_id: PeerId([0; 20]),
            addr: "127.0.0.1:1".parse().expect("addr"),
            event: Event::None,
            left: 5,
            uploaded: 0,
            downloaded: 0,
            numwant: 0,
            peer_ids: false,
        };
        assert!(!req.is_seeder());
        req.event = Event::Paused;
        assert!(req.is_seeder());
        req.event = Event::Started;
        req.left = 0;
        assert!(req.is_seeder());
    }
}
