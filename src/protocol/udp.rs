//! BEP 15 UDP tracker packets, with BEP 41 options after the announce.
//!
//! Parsing never panics on any input; a [`PacketError`] says whether the
//! packet carried enough to answer with an error packet (a transaction id),
//! so the frontend never has to guess.

use std::net::{Ipv4Addr, SocketAddr};

/// The magic constant of a connect request.
pub const PROTOCOL_ID: u64 = 0x0417_2710_1980;

const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_SCRAPE: u32 = 2;
const ACTION_ERROR: u32 = 3;

/// Bytes of an announce request before any BEP 41 option.
pub const ANNOUNCE_LEN: usize = 98;
/// The most infohashes one scrape may carry (BEP 15: the reply must fit a packet).
pub const MAX_SCRAPE_HASHES: usize = 74;

/// A parsed request packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UdpRequest<'a> {
    /// Asks for a connection id.
    Connect {
        /// Echoed in the reply.
        transaction_id: u32,
    },
    /// An announce, with the BEP 41 URL data that followed it.
    Announce(UdpAnnounce<'a>),
    /// A scrape of one or more infohashes.
    Scrape {
        /// Must be one this tracker issued to this address.
        connection_id: u64,
        /// Echoed in the reply.
        transaction_id: u32,
        /// The raw infohashes (20 bytes each), borrowed from the packet.
        info_hashes: &'a [[u8; 20]],
    },
}

/// The BEP 15 announce event field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpEvent {
    /// 0: a regular announce.
    None,
    /// 1
    Completed,
    /// 2
    Started,
    /// 3
    Stopped,
}

/// An announce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpAnnounce<'a> {
    /// Must be one this tracker issued to this address.
    pub connection_id: u64,
    /// Echoed in the reply.
    pub transaction_id: u32,
    /// The torrent.
    pub info_hash: [u8; 20],
    /// The client.
    pub peer_id: [u8; 20],
    /// Bytes downloaded.
    pub downloaded: u64,
    /// Bytes left.
    pub left: u64,
    /// Bytes uploaded.
    pub uploaded: u64,
    /// What happened.
    pub event: UdpEvent,
    /// The IPv4 address the client claims (0 = use the sender's).
    pub ip: Ipv4Addr,
    /// The client's key.
    pub key: u32,
    /// Peers wanted; `None` for -1 (the default) or any negative value.
    pub numwant: Option<u32>,
    /// The client's listening port.
    pub port: u16,
    /// BEP 41 URL data, concatenated across options (e.g. `/announce?jwt=...`).
    pub url_data: UrlData<'a>,
}

/// BEP 41 URL data: usually one borrowed slice; owned only when split over several options.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum UrlData<'a> {
    /// No URL data option.
    #[default]
    None,
    /// One option's data.
    One(&'a [u8]),
    /// Several options' data, joined.
    Joined(Vec<u8>),
}

impl UrlData<'_> {
    /// The path and query as bytes (empty if none).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            UrlData::None => &[],
            UrlData::One(data) => data,
            UrlData::Joined(data) => data,
        }
    }

    /// The query part (after `?`), where the token is.
    pub fn query(&self) -> &[u8] {
        let bytes = self.as_bytes();
        match bytes.iter().position(|&b| b == b'?') {
            Some(at) => &bytes[at + 1..],
            None => &[],
        }
    }
}

/// Why a packet cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PacketError {
    /// The transaction id, if the packet was long enough to carry one; only
    /// then may an error packet be sent back.
    pub transaction_id: Option<u32>,
    /// What is wrong, short enough for an error packet.
    pub message: &'static str,
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
}

fn array_at<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at + N)?.try_into().ok()
}

/// Parses one request packet.
pub fn parse_request(packet: &[u8]) -> Result<UdpRequest<'_>, PacketError> {
    let (Some(connection_id), Some(action), Some(transaction_id)) =
        (u64_at(packet, 0), u32_at(packet, 8), u32_at(packet, 12))
    else {
        return Err(PacketError {
            transaction_id: None,
            message: "packet too short",
        });
    };
    let fail = |message| PacketError {
        transaction_id: Some(transaction_id),
        message,
    };
    match action {
        ACTION_CONNECT if connection_id == PROTOCOL_ID => {
            Ok(UdpRequest::Connect { transaction_id })
        }
        ACTION_CONNECT => Err(fail("bad protocol id")),
        ACTION_ANNOUNCE => {
            let field = |at| u64_at(packet, at).ok_or_else(|| fail("announce too short"));
            let info_hash = array_at(packet, 16).ok_or_else(|| fail("announce too short"))?;
            let peer_id = array_at(packet, 36).ok_or_else(|| fail("announce too short"))?;
            let (downloaded, left, uploaded) = (field(56)?, field(64)?, field(72)?);
            let event = match u32_at(packet, 80) {
                Some(0) => UdpEvent::None,
                Some(1) => UdpEvent::Completed,
                Some(2) => UdpEvent::Started,
                Some(3) => UdpEvent::Stopped,
                Some(_) => return Err(fail("bad event")),
                None => return Err(fail("announce too short")),
            };
            let short = || fail("announce too short");
            let ip = Ipv4Addr::from(u32_at(packet, 84).ok_or_else(short)?);
            let key = u32_at(packet, 88).ok_or_else(short)?;
            let numwant = i32::from_be_bytes(u32_at(packet, 92).ok_or_else(short)?.to_be_bytes());
            let port = packet
                .get(96..98)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(short)?;
            let url_data = parse_options(&packet[ANNOUNCE_LEN..]).map_err(fail)?;
            Ok(UdpRequest::Announce(UdpAnnounce {
                connection_id,
                transaction_id,
                info_hash,
                peer_id,
                downloaded,
                left,
                uploaded,
                event,
                ip,
                key,
                numwant: u32::try_from(numwant).ok(),
                port,
                url_data,
            }))
        }
        ACTION_SCRAPE => {
            let body = &packet[16..];
            if body.is_empty() || !body.len().is_multiple_of(20) {
                return Err(fail("scrape needs whole 20-byte infohashes"));
            }
            let (info_hashes, _) = body.as_chunks::<20>();
            if info_hashes.len() > MAX_SCRAPE_HASHES {
                return Err(fail("too many infohashes"));
            }
            Ok(UdpRequest::Scrape {
                connection_id,
                transaction_id,
                info_hashes,
            })
        }
        _ => Err(fail("unknown action")),
    }
}

/// Reads BEP 41 options: 0 ends them, 1 is padding, 2 carries URL data
/// (length byte, then bytes) and repeats concatenate; any other type has a
/// length byte and is skipped.
fn parse_options(mut options: &[u8]) -> Result<UrlData<'_>, &'static str> {
    let mut url = UrlData::None;
    while let Some((&kind, rest)) = options.split_first() {
        match kind {
            0 => break,
            1 => options = rest,
            _ => {
                let Some((&len, rest)) = rest.split_first() else {
                    return Err("malformed BEP 41 option");
                };
                let Some(data) = rest.get(..len as usize) else {
                    return Err("malformed BEP 41 option");
                };
                if kind == 2 {
                    url = match url {
                        UrlData::None => UrlData::One(data),
                        UrlData::One(first) => UrlData::Joined([first, data].concat()),
                        UrlData::Joined(mut joined) => {
                            joined.extend_from_slice(data);
                            UrlData::Joined(joined)
                        }
                    };
                }
                options = &rest[len as usize..];
            }
        }
    }
    Ok(url)
}

/// Writes a connect reply.
pub fn write_connect(out: &mut Vec<u8>, transaction_id: u32, connection_id: u64) {
    out.extend_from_slice(&ACTION_CONNECT.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    out.extend_from_slice(&connection_id.to_be_bytes());
}

/// The counts of an announce reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpAnnounceReply {
    /// Echoed from the request.
    pub transaction_id: u32,
    /// Seconds until the next announce.
    pub interval: u32,
    /// Leechers.
    pub leechers: u32,
    /// Seeders.
    pub seeders: u32,
}

/// Writes an announce reply: 6-byte peers for IPv4, 18-byte peers for IPv6.
/// Peers of the other family are left out; at most `max_peers` are written.
pub fn write_announce<I>(
    out: &mut Vec<u8>,
    reply: &UdpAnnounceReply,
    ipv6: bool,
    max_peers: usize,
    peers: I,
) where
    I: IntoIterator<Item = SocketAddr>,
{
    out.extend_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    out.extend_from_slice(&reply.transaction_id.to_be_bytes());
    out.extend_from_slice(&reply.interval.to_be_bytes());
    out.extend_from_slice(&reply.leechers.to_be_bytes());
    out.extend_from_slice(&reply.seeders.to_be_bytes());
    let same_family = peers.into_iter().filter(|addr| addr.is_ipv6() == ipv6);
    for addr in same_family.take(max_peers) {
        match addr {
            SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
            SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
        }
        out.extend_from_slice(&addr.port().to_be_bytes());
    }
}

/// One torrent's counts in a scrape reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpScrapeCounts {
    /// Seeders.
    pub seeders: u32,
    /// Completed downloads.
    pub completed: u32,
    /// Leechers.
    pub leechers: u32,
}

/// Writes a scrape reply, one entry per requested infohash, in order.
pub fn write_scrape<I>(out: &mut Vec<u8>, transaction_id: u32, counts: I)
where
    I: IntoIterator<Item = UdpScrapeCounts>,
{
    out.extend_from_slice(&ACTION_SCRAPE.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    for entry in counts {
        out.extend_from_slice(&entry.seeders.to_be_bytes());
        out.extend_from_slice(&entry.completed.to_be_bytes());
        out.extend_from_slice(&entry.leechers.to_be_bytes());
    }
}

/// Writes an error reply, cutting the message to at most `max_len` bytes in all
/// (so an error never exceeds the request that caused it).
pub fn write_error(out: &mut Vec<u8>, transaction_id: u32, message: &str, max_len: usize) {
    out.extend_from_slice(&ACTION_ERROR.to_be_bytes());
    out.extend_from_slice(&transaction_id.to_be_bytes());
    let room = max_len.saturating_sub(8);
    let mut cut = message.len().min(room);
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    out.extend_from_slice(&message.as_bytes()[..cut]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn announce_packet(options: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0x1122_3344_5566_7788u64.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&0xdead_beefu32.to_be_bytes());
        p.extend_from_slice(&[0xaa; 20]);
        p.extend_from_slice(b"-lt2080-012345678901");
        p.extend_from_slice(&10u64.to_be_bytes());
        p.extend_from_slice(&20u64.to_be_bytes());
        p.extend_from_slice(&30u64.to_be_bytes());
        p.extend_from_slice(&2u32.to_be_bytes());
        p.extend_from_slice(&0u32.to_be_bytes());
        p.extend_from_slice(&77u32.to_be_bytes());
        p.extend_from_slice(&(-1i32).to_be_bytes());
        p.extend_from_slice(&6881u16.to_be_bytes());
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn connect_announce_scrape() {
        let mut connect = PROTOCOL_ID.to_be_bytes().to_vec();
        connect.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(
            parse_request(&connect),
            Ok(UdpRequest::Connect { transaction_id: 9 })
        );

        let packet = announce_packet(b"\x02\x11/announce?jwt=abc");
        let Ok(UdpRequest::Announce(a)) = parse_request(&packet) else {
            panic!("announce")
        };
        assert_eq!(
            (a.transaction_id, a.info_hash, a.left, a.event),
            (0xdead_beef, [0xaa; 20], 20, UdpEvent::Started)
        );
        assert_eq!((a.numwant, a.port, a.key), (None, 6881, 77));
        assert_eq!(a.url_data.as_bytes(), b"/announce?jwt=abc");
        assert_eq!(a.url_data.query(), b"jwt=abc");

        let mut scrape = 5u64.to_be_bytes().to_vec();
        scrape.extend_from_slice(&2u32.to_be_bytes());
        scrape.extend_from_slice(&3u32.to_be_bytes());
        scrape.extend_from_slice(&[1; 20]);
        scrape.extend_from_slice(&[2; 20]);
        let Ok(UdpRequest::Scrape { info_hashes, .. }) = parse_request(&scrape) else {
            panic!("scrape")
        };
        assert_eq!(info_hashes, &[[1; 20], [2; 20]]);
    }

    #[test]
    fn bep41_options_split_padded_and_ended() {
        let packet =
            announce_packet(b"\x01\x02\x05/anno\x01\x02\x0bunce?jwt=ab\x02\x01c\x00\x02\x03xyz");
        let Ok(UdpRequest::Announce(a)) = parse_request(&packet) else {
            panic!("announce")
        };
        assert_eq!(
            a.url_data.as_bytes(),
            b"/announce?jwt=abc",
            "joined, stopped at end"
        );
        let skipped_unknown = announce_packet(b"\x07\x02zz\x02\x03/a?");
        let Ok(UdpRequest::Announce(a)) = parse_request(&skipped_unknown) else {
            panic!("announce")
        };
        assert_eq!(a.url_data.as_bytes(), b"/a?");
        for bad in [&b"\x02"[..], b"\x02\x05abc", b"\x09"] {
            let error = parse_request(&announce_packet(bad)).expect_err("malformed");
            assert_eq!(
                (error.transaction_id, error.message),
                (Some(0xdead_beef), "malformed BEP 41 option")
            );
        }
    }

    #[test]
    fn errors_know_if_they_can_be_answered() {
        assert_eq!(
            parse_request(&[0; 15]).expect_err("short").transaction_id,
            None
        );
        let mut bad_action = vec![0; 16];
        bad_action[11] = 9;
        bad_action[15] = 4;
        assert_eq!(
            parse_request(&bad_action).expect_err("action"),
            PacketError {
                transaction_id: Some(4),
                message: "unknown action"
            }
        );
        let mut wrong_magic = vec![0; 16];
        wrong_magic[15] = 1;
        assert_eq!(
            parse_request(&wrong_magic).expect_err("magic").message,
            "bad protocol id"
        );
    }

    #[test]
    fn writers() {
        let mut out = Vec::new();
        let reply = UdpAnnounceReply {
            transaction_id: 7,
            interval: 60,
            leechers: 2,
            seeders: 1,
        };
        let peers = [
            "10.0.0.1:1".parse().expect("a"),
            "[::1]:2".parse().expect("a"),
            "10.0.0.2:3".parse().expect("a"),
        ];
        write_announce(&mut out, &reply, false, 10, peers);
        assert_eq!(out.len(), 20 + 2 * 6, "only IPv4 peers to an IPv4 client");
        out.clear();
        write_announce(&mut out, &reply, true, 10, peers);
        assert_eq!(out.len(), 20 + 18);
        out.clear();
        write_announce(&mut out, &reply, false, 1, peers);
        assert_eq!(out.len(), 26, "capped");
        out.clear();
        write_error(&mut out, 7, "unapproved request: missing jwt", 16);
        assert_eq!(out, b"\x00\x00\x00\x03\x00\x00\x00\x07unapprov");
    }

    proptest! {
        #[test]
        fn garbage_never_panics(packet in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_request(&packet);
        }

        #[test]
        fn every_truncation_and_any_options_are_handled(cut in 0usize..98, options in proptest::collection::vec(any::<u8>(), 0..300)) {
            let full = announce_packet(&[]);
            let result = parse_request(&full[..cut]);
            prop_assert!(result.is_err());
            if cut >= 16 {
                prop_assert_eq!(result.expect_err("short").transaction_id, Some(0xdead_beef));
            }
            let _ = parse_request(&announce_packet(&options));
        }
    }
}
