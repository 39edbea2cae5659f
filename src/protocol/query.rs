//! Parsing `GET /announce` and `GET /scrape` query strings.
//!
//! Values are percent-decoded into raw bytes: `info_hash` and `peer_id` are
//! binary, and clients escape them differently (libtorrent leaves `!()*` bare
//! and writes lowercase hex, aria2 and rtorrent write uppercase; aria2's `key`
//! is raw bytes). `+` is taken literally, never as a space, because these are
//! bytes, not form text. Parameters this module does not know (such as `jwt`)
//! are never rejected; [`param`] finds them for later stages.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use percent_encoding::percent_decode;

use crate::bittorrent::Event;

/// Why a query cannot be served. Every variant can be answered with a
/// `failure reason`; the message says what the client must fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A parameter the protocol requires is absent.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A parameter is present but its value is unusable.
    #[error("invalid {param}: {expected}")]
    Invalid {
        /// The parameter's name.
        param: &'static str,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A scrape named no torrent; listing every torrent is not offered.
    #[error("full scrape is not supported: name one or more info_hash values")]
    FullScrape,
    /// A scrape named more torrents than the tracker answers at once.
    #[error("too many info_hash values in one scrape (at most {max})")]
    TooManyInfoHashes {
        /// The configured limit.
        max: usize,
    },
}

/// A parsed announce query. Borrowed from the raw query where possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceQuery<'a> {
    /// The torrent's 20-byte infohash.
    pub info_hash: [u8; 20],
    /// The client's 20-byte peer id.
    pub peer_id: [u8; 20],
    /// The client's listening port, 1..=65535.
    pub port: u16,
    /// Bytes uploaded so far.
    pub uploaded: u64,
    /// Bytes downloaded so far.
    pub downloaded: u64,
    /// Bytes still needed.
    pub left: u64,
    /// What happened.
    pub event: Event,
    /// Peers wanted; `None` when absent or negative (use the default).
    pub numwant: Option<u32>,
    /// Compact peer lists (BEP 23); true unless `compact=0`.
    pub compact: bool,
    /// Leave `peer id` out of non-compact peer dictionaries.
    pub no_peer_id: bool,
    /// Opaque per-client key, raw bytes.
    pub key: Option<Cow<'a, [u8]>>,
    /// Tracker id echoed back by the client.
    pub trackerid: Option<Cow<'a, [u8]>>,
    /// `ip`: an address the client claims (only trusted from proxies).
    pub ip: Option<IpAddr>,
    /// `ipv4` (BEP 7).
    pub ipv4: Option<Ipv4Addr>,
    /// `ipv6` (BEP 7).
    pub ipv6: Option<Ipv6Addr>,
    /// The first `jwt` parameter, still percent-encoded (see [`token_text`]):
    /// found in the same pass, so the token costs no second scan of the query.
    pub jwt: Option<&'a [u8]>,
}

/// A parsed scrape query: the infohashes asked about, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScrapeQuery {
    /// Every `info_hash` value, repeated parameters included.
    pub info_hashes: Vec<[u8; 20]>,
}

/// Splits a query into raw `(name, value)` pairs, still percent-encoded.
pub fn pairs(query: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.iter().position(|&b| b == b'=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, &pair[pair.len()..]),
        })
}

/// The decoded value of the first parameter called `name`, if any.
pub fn param<'a>(query: &'a [u8], name: &str) -> Option<Cow<'a, [u8]>> {
    pairs(query)
        .find(|(key, _)| *key == name.as_bytes())
        .map(|(_, value)| decoded(value))
}

/// The `jwt` parameter as text. Bytes that are not UTF-8 are replaced rather
/// than dropped, so a garbled token is refused as malformed, not as missing.
pub fn jwt(query: &[u8]) -> Option<String> {
    pairs(query)
        .find(|(key, _)| *key == b"jwt")
        .map(|(_, value)| token_text(value))
}

/// A raw (percent-encoded) `jwt` value as text, decoded as [`jwt`] does.
pub fn token_text(raw: &[u8]) -> String {
    let value = decoded(raw);
    match std::str::from_utf8(&value) {
        Ok(text) => text.to_owned(),
        Err(_) => String::from_utf8_lossy(&value).into_owned(),
    }
}

/// Parses an announce query.
pub fn parse_announce(query: &[u8]) -> Result<AnnounceQuery<'_>, QueryError> {
    let mut info_hash = None;
    let mut peer_id = None;
    let mut port = None;
    let mut uploaded = None;
    let mut downloaded = None;
    let mut left = None;
    let mut parsed = AnnounceQuery {
        info_hash: [0; 20],
        peer_id: [0; 20],
        port: 0,
        uploaded: 0,
        downloaded: 0,
        left: 0,
        event: Event::None,
        numwant: None,
        compact: true,
        no_peer_id: false,
        key: None,
        trackerid: None,
        ip: None,
        ipv4: None,
        ipv6: None,
        jwt: None,
    };
    // The first occurrence of a parameter wins, as in most trackers.
    for (name, value) in pairs(query) {
        match name {
            b"info_hash" if info_hash.is_none() => info_hash = Some(decode_20(value, "info_hash")?),
            b"peer_id" if peer_id.is_none() => peer_id = Some(decode_20(value, "peer_id")?),
            b"port" if port.is_none() => port = Some(parse_port(value)?),
            b"uploaded" if uploaded.is_none() => uploaded = Some(parse_u64(value, "uploaded")?),
            b"downloaded" if downloaded.is_none() => {
                downloaded = Some(parse_u64(value, "downloaded")?)
            }
            b"left" if left.is_none() => left = Some(parse_u64(value, "left")?),
            b"event" => parsed.event = parse_event(value)?,
            b"numwant" => parsed.numwant = parse_numwant(value)?,
            b"compact" => parsed.compact = decoded(value).as_ref() != b"0",
            b"no_peer_id" => parsed.no_peer_id = decoded(value).as_ref() == b"1",
            b"key" => parsed.key = Some(decoded(value)),
            b"trackerid" => parsed.trackerid = Some(decoded(value)),
            // A client may name its address by host name (BEP 3); without DNS
            // resolution on the hot path, anything but a literal IP is ignored.
            b"ip" => parsed.ip = parse_ip(value),
            b"ipv4" => parsed.ipv4 = parse_ip(value),
            b"ipv6" => parsed.ipv6 = parse_ip(value),
            b"jwt" if parsed.jwt.is_none() => parsed.jwt = Some(value),
            _ => {}
        }
    }
    parsed.info_hash = info_hash.ok_or(QueryError::Missing("info_hash"))?;
    parsed.peer_id = peer_id.ok_or(QueryError::Missing("peer_id"))?;
    parsed.port = port.ok_or(QueryError::Missing("port"))?;
    parsed.uploaded = uploaded.ok_or(QueryError::Missing("uploaded"))?;
    parsed.downloaded = downloaded.ok_or(QueryError::Missing("downloaded"))?;
    parsed.left = left.ok_or(QueryError::Missing("left"))?;
    Ok(parsed)
}

/// Parses a scrape query, refusing a full scrape and more than `max` infohashes.
pub fn parse_scrape(query: &[u8], max: usize) -> Result<ScrapeQuery, QueryError> {
    let mut info_hashes = Vec::new();
    for (name, value) in pairs(query) {
        if name == b"info_hash" {
            if info_hashes.len() == max {
                return Err(QueryError::TooManyInfoHashes { max });
            }
            info_hashes.push(decode_20(value, "info_hash")?);
        }
    }
    if info_hashes.is_empty() {
        return Err(QueryError::FullScrape);
    }
    Ok(ScrapeQuery { info_hashes })
}

fn decoded(value: &[u8]) -> Cow<'_, [u8]> {
    // Tokens and numbers rarely contain escapes; a memchr is cheaper than decoding.
    if value.contains(&b'%') {
        percent_decode(value).into()
    } else {
        Cow::Borrowed(value)
    }
}

/// Decodes exactly 20 bytes without allocating.
fn decode_20(value: &[u8], param: &'static str) -> Result<[u8; 20], QueryError> {
    let invalid = QueryError::Invalid {
        param,
        expected: "exactly 20 bytes, percent-encoded",
    };
    let mut bytes = [0u8; 20];
    let mut decoder = percent_decode(value);
    for byte in &mut bytes {
        *byte = decoder.next().ok_or_else(|| invalid.clone())?;
    }
    match decoder.next() {
        Some(_) => Err(invalid),
        None => Ok(bytes),
    }
}

fn parse_u64(value: &[u8], param: &'static str) -> Result<u64, QueryError> {
    std::str::from_utf8(&decoded(value))
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(QueryError::Invalid {
            param,
            expected: "a whole number of bytes",
        })
}

fn parse_port(value: &[u8]) -> Result<u16, QueryError> {
    std::str::from_utf8(&decoded(value))
        .ok()
        .and_then(|text| text.parse::<u16>().ok())
        .filter(|&port| port != 0)
        .ok_or(QueryError::Invalid {
            param: "port",
            expected: "a number from 1 to 65535",
        })
}

fn parse_numwant(value: &[u8]) -> Result<Option<u32>, QueryError> {
    let number = std::str::from_utf8(&decoded(value))
        .ok()
        .and_then(|text| text.parse::<i64>().ok())
        .ok_or(QueryError::Invalid {
            param: "numwant",
            expected: "a whole number",
        })?;
    // Negative means "the default" (as -1 does in BEP 15); huge values are clamped later.
    Ok(u32::try_from(number.max(-1)).ok())
}

fn parse_event(value: &[u8]) -> Result<Event, QueryError> {
    match decoded(value).as_ref() {
        b"" | b"empty" => Ok(Event::None),
        b"started" => Ok(Event::Started),
        b"completed" => Ok(Event::Completed),
        b"stopped" => Ok(Event::Stopped),
        b"paused" => Ok(Event::Paused),
        _ => Err(QueryError::Invalid {
            param: "event",
            expected: "started, completed, stopped, paused or empty",
        }),
    }
}

fn parse_ip<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    std::str::from_utf8(&decoded(value)).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// How one client escapes a byte string: which bytes it leaves bare, and hex case.
    #[derive(Debug, Clone, Copy)]
    enum Style {
        /// libtorrent: unreserved plus `!()*'`, lowercase hex.
        Libtorrent,
        /// aria2 and rtorrent: RFC 3986 unreserved only, uppercase hex.
        Uppercase,
        /// A client that escapes every byte.
        EscapeAll,
    }

    fn escape(bytes: &[u8], style: Style) -> String {
        let mut out = String::new();
        for &b in bytes {
            let unreserved = b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
            let bare = match style {
                Style::Libtorrent => unreserved || b"!()*'".contains(&b),
                Style::Uppercase => unreserved,
                Style::EscapeAll => false,
            };
            if bare {
                out.push(b as char);
            } else if matches!(style, Style::Libtorrent) {
                out.push_str(&format!("%{b:02x}"));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    fn announce_query(info_hash: &[u8], peer_id: &[u8], style: Style) -> String {
        format!(
            "info_hash={}&peer_id={}&port=6881&uploaded=0&downloaded=0&left=100&jwt=abc.def.ghi",
            escape(info_hash, style),
            escape(peer_id, style)
        )
    }

    fn style() -> impl Strategy<Value = Style> {
        prop_oneof![
            Just(Style::Libtorrent),
            Just(Style::Uppercase),
            Just(Style::EscapeAll)
        ]
    }

    proptest! {
        #[test]
        fn any_20_bytes_round_trip_in_every_client_style(
            info_hash in proptest::array::uniform20(any::<u8>()),
            peer_id in proptest::array::uniform20(any::<u8>()),
            style in style(),
        ) {
            let query = announce_query(&info_hash, &peer_id, style);
            let parsed = parse_announce(query.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.info_hash, info_hash);
            prop_assert_eq!(parsed.peer_id, peer_id);
            let scrape = format!("info_hash={}&info_hash={}", escape(&info_hash, style), escape(&peer_id, style));
            let parsed = parse_scrape(scrape.as_bytes(), 10).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed.info_hashes, vec![info_hash, peer_id]);
        }

        #[test]
        fn arbitrary_bytes_never_panic(query in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_announce(&query);
            let _ = parse_scrape(&query, 5);
            let _ = param(&query, "jwt");
        }

        #[test]
        fn mangled_valid_queries_never_panic(cut in 0usize..200, junk in proptest::collection::vec(any::<u8>(), 0..8)) {
            let mut query = announce_query(&[0xff; 20], b"-lt2080-abcdefghijkl", Style::Libtorrent).into_bytes();
            let cut = cut.min(query.len());
            query.truncate(cut);
            query.extend_from_slice(&junk);
            let _ = parse_announce(&query);
        }
    }

    #[test]
    fn parses_every_field() {
        let query = b"info_hash=%aa%BB!()*aaaaaaaaaaaaaa&peer_id=-lt2080-%00%01%02%03%04%05%06%07%08%09%0a%0B&port=51413\
&uploaded=1&downloaded=2&left=3&event=completed&numwant=30&compact=0&no_peer_id=1\
&key=%ff%00&trackerid=x&ip=10.1.2.3&ipv4=10.9.9.9&ipv6=2001%3Adb8%3A%3A1&jwt=tok";
        let parsed = parse_announce(query).expect("valid query");
        assert_eq!(
            &parsed.info_hash[..6],
            &[0xaa, 0xbb, b'!', b'(', b')', b'*']
        );
        assert_eq!(&parsed.peer_id[..8], b"-lt2080-");
        assert_eq!(parsed.port, 51413);
        assert_eq!((parsed.uploaded, parsed.downloaded, parsed.left), (1, 2, 3));
        assert_eq!(parsed.event, Event::Completed);
        assert_eq!(parsed.numwant, Some(30));
        assert!(!parsed.compact);
        assert!(parsed.no_peer_id);
        assert_eq!(parsed.key.as_deref(), Some(&[0xff, 0x00][..]));
        assert_eq!(parsed.ip, Some(IpAddr::from([10, 1, 2, 3])));
        assert_eq!(parsed.ipv4, Some(Ipv4Addr::new(10, 9, 9, 9)));
        assert_eq!(parsed.ipv6, Some("2001:db8::1".parse().expect("v6")));
        assert_eq!(param(query, "jwt").as_deref(), Some(&b"tok"[..]));
        assert_eq!(jwt(query).as_deref(), Some("tok"));
        assert_eq!(parsed.jwt.map(token_text).as_deref(), Some("tok"));
        assert_eq!(jwt(b"jwt=a%2Eb%FF").as_deref(), Some("a.b\u{FFFD}"));
        // The pass that parses the announce keeps the first token, as `jwt` does.
        let twice = [&query[..], b"&jwt=second"].concat();
        let parsed = parse_announce(&twice).expect("parses");
        assert_eq!(parsed.jwt, Some(&b"tok"[..]));
        assert_eq!(param(query, "absent"), None);
    }

    #[test]
    fn defaults_and_lenient_values() {
        let base = announce_query(&[1; 20], &[2; 20], Style::Uppercase);
        let parsed = parse_announce(base.as_bytes()).expect("valid");
        assert_eq!(parsed.event, Event::None);
        assert_eq!(parsed.numwant, None);
        assert!(parsed.compact, "compact is the default");
        assert!(!parsed.no_peer_id);
        for (extra, event) in [
            ("&event=", Event::None),
            ("&event=empty", Event::None),
            ("&event=started", Event::Started),
            ("&event=stopped", Event::Stopped),
            ("&event=paused", Event::Paused),
        ] {
            let query = format!("{base}{extra}");
            let parsed = parse_announce(query.as_bytes()).expect("valid");
            assert_eq!(parsed.event, event, "{extra}");
        }
        let query = format!("{base}&numwant=-1&ip=tracker.example");
        let parsed = parse_announce(query.as_bytes()).expect("valid");
        assert_eq!((parsed.numwant, parsed.ip), (None, None));
        // The first of a repeated parameter wins.
        let query = format!("port=7000&{base}");
        let parsed = parse_announce(query.as_bytes()).expect("valid");
        assert_eq!(parsed.port, 7000);
    }

    #[test]
    fn errors_name_the_parameter() {
        let full = announce_query(&[1; 20], &[2; 20], Style::Uppercase);
        for required in [
            "info_hash",
            "peer_id",
            "port",
            "uploaded",
            "downloaded",
            "left",
        ] {
            let without: Vec<&str> = full
                .split('&')
                .filter(|p| !p.starts_with(&format!("{required}=")))
                .collect();
            let err = parse_announce(without.join("&").as_bytes()).expect_err("missing param");
            assert_eq!(err, QueryError::Missing(required));
            assert_eq!(err.to_string(), format!("missing {required}"));
        }
        let cases = [
            ("port=0", "port"),
            ("port=65536", "port"),
            ("port=x", "port"),
            ("left=-1", "left"),
            ("event=finished", "event"),
            ("numwant=lots", "numwant"),
        ];
        for (bad, param) in cases {
            let err = parse_announce(format!("{bad}&{full}").as_bytes()).expect_err(bad);
            assert!(
                matches!(err, QueryError::Invalid { param: p, .. } if p == param),
                "{bad}: {err:?}"
            );
        }
        let short =
            "info_hash=%01%02&peer_id=aaaaaaaaaaaaaaaaaaaa&port=1&uploaded=0&downloaded=0&left=0";
        assert_eq!(
            parse_announce(short.as_bytes())
                .expect_err("short hash")
                .to_string(),
            "invalid info_hash: exactly 20 bytes, percent-encoded"
        );
    }

    #[test]
    fn scrape_limits() {
        assert_eq!(parse_scrape(b"", 5), Err(QueryError::FullScrape));
        assert_eq!(parse_scrape(b"jwt=x", 5), Err(QueryError::FullScrape));
        let one = "info_hash=aaaaaaaaaaaaaaaaaaaa";
        let three = [one; 3].join("&");
        assert_eq!(
            parse_scrape(three.as_bytes(), 2),
            Err(QueryError::TooManyInfoHashes { max: 2 })
        );
        assert_eq!(
            parse_scrape(three.as_bytes(), 3)
                .expect("ok")
                .info_hashes
                .len(),
            3
        );
    }
}
