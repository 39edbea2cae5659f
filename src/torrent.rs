//! The registry's side of torrents: a v1 single-file torrent for one blob
//! (a layer), with announce URLs that carry a token for the torrent's own
//! infohash. Used by `swarmgate torrent`, the example registry and the tests.
//!
//! The layout is Quay's: one file, 512 KiB pieces by default, `private: 1`
//! (so clients find peers only through the tracker, never DHT or PEX), and
//! optionally the blob's own URL as a BEP 19 web seed. Pure apart from the
//! [`Read`] the blob is hashed from.

use std::io::Read;

use aws_lc_rs::digest;
use serde::{Deserialize, Serialize};
use serde_bencode::value::Value;

use crate::bittorrent::InfoHash;

/// The piece length used when none is given: Quay's.
pub const DEFAULT_PIECE_LENGTH: u64 = 512 * 1024;
/// The smallest piece length BitTorrent clients accept (one request block).
pub const MIN_PIECE_LENGTH: u64 = 16 * 1024;
/// The largest piece length swarmgate writes (libtorrent's ceiling is 128 MiB;
/// larger pieces only make swarms slower to start).
pub const MAX_PIECE_LENGTH: u64 = 64 * 1024 * 1024;

/// Why a torrent could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum TorrentError {
    /// The piece length is not a power of two in the accepted range.
    #[error(
        "piece length {0} is not a power of two between 16 KiB and 64 MiB (e.g. 256KiB, 512KiB, 4MiB)"
    )]
    PieceLength(String),
    /// The blob could not be read.
    #[error("cannot read the data: {0}")]
    Read(#[from] std::io::Error),
    /// The name is empty or contains a path separator.
    #[error("torrent name {0:?} must be a plain file name")]
    Name(String),
    /// The bytes are not a torrent.
    #[error("not a torrent: {0}")]
    NotATorrent(String),
}

/// The `info` dictionary of a single-file v1 torrent; its bencoding's SHA-1 is the infohash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The file's length in bytes.
    pub length: u64,
    /// The file name a client saves the data under.
    pub name: String,
    /// Bytes per piece (the last piece may be shorter).
    #[serde(rename = "piece length")]
    pub piece_length: u64,
    /// The SHA-1 of every piece, concatenated (20 bytes each).
    #[serde(with = "serde_bytes")]
    pub pieces: Vec<u8>,
    /// 1: peers come from the tracker only (BEP 27).
    pub private: u8,
}

impl Info {
    /// Hashes `data` into pieces of `piece_length` bytes.
    pub fn from_reader(
        name: &str,
        piece_length: u64,
        mut data: impl Read,
    ) -> Result<Self, TorrentError> {
        let mut hasher = PieceHasher::new(piece_length)?;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match data.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => hasher.update(&buffer[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        hasher.finish(name)
    }

    /// The v1 infohash: SHA-1 of the bencoded dictionary.
    pub fn info_hash(&self) -> InfoHash {
        // Serializing a struct of strings, integers and bytes cannot fail.
        let bytes = serde_bencode::to_bytes(self).unwrap_or_default();
        sha1(&bytes)
    }
}

/// Hashes a blob into pieces as its bytes arrive, in any chunk sizes, holding
/// no more than the running SHA-1 state: a blob streamed from a registry is
/// never buffered whole (nor even a whole piece).
pub struct PieceHasher {
    piece_length: u64,
    /// Bytes of the current piece hashed so far.
    in_piece: u64,
    current: digest::Context,
    pieces: Vec<u8>,
    length: u64,
}

impl PieceHasher {
    /// A hasher for pieces of `piece_length` bytes (a power of two, 16 KiB to 64 MiB).
    pub fn new(piece_length: u64) -> Result<Self, TorrentError> {
        check_piece_length(piece_length)?;
        Ok(Self {
            piece_length,
            in_piece: 0,
            current: digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY),
            pieces: Vec::new(),
            length: 0,
        })
    }

    /// Feeds the next bytes of the blob.
    pub fn update(&mut self, mut bytes: &[u8]) {
        self.length += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = (self.piece_length - self.in_piece) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.current.update(now);
            self.in_piece += now.len() as u64;
            bytes = rest;
            if self.in_piece == self.piece_length {
                let done = std::mem::replace(
                    &mut self.current,
                    digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY),
                );
                self.pieces.extend_from_slice(done.finish().as_ref());
                self.in_piece = 0;
            }
        }
    }

    /// Bytes fed so far.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The `info` dictionary of everything fed, saved by clients as `name`.
    pub fn finish(mut self, name: &str) -> Result<Info, TorrentError> {
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(TorrentError::Name(name.to_owned()));
        }
        if self.in_piece > 0 {
            self.pieces
                .extend_from_slice(self.current.finish().as_ref());
        }
        Ok(Info {
            length: self.length,
            name: name.to_owned(),
            piece_length: self.piece_length,
            pieces: self.pieces,
            private: 1,
        })
    }
}

fn sha1(bytes: &[u8]) -> InfoHash {
    let hash = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, bytes);
    let mut out = [0u8; 20];
    out.copy_from_slice(hash.as_ref());
    InfoHash(out)
}

fn check_piece_length(piece_length: u64) -> Result<(), TorrentError> {
    if piece_length.is_power_of_two()
        && (MIN_PIECE_LENGTH..=MAX_PIECE_LENGTH).contains(&piece_length)
    {
        Ok(())
    } else {
        Err(TorrentError::PieceLength(piece_length.to_string()))
    }
}

/// Parses a piece length such as `524288`, `512KiB`, `512k`, `4MiB` or `4M`
/// (binary units) and checks it is a usable power of two.
pub fn parse_piece_length(text: &str) -> Result<u64, TorrentError> {
    let invalid = || TorrentError::PieceLength(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1024,
        "m" | "mib" => 1024 * 1024,
        _ => return Err(invalid()),
    };
    let bytes = number.checked_mul(scale).ok_or_else(invalid)?;
    check_piece_length(bytes).map_err(|_| invalid())?;
    Ok(bytes)
}

/// A whole `.torrent` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaInfo {
    /// The first tracker's announce URL (with the token).
    pub announce: String,
    /// BEP 12 tiers, one tracker per tier in the order given; only with more than one tracker.
    #[serde(
        rename = "announce-list",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub announce_list: Vec<Vec<String>>,
    /// BEP 19 web seeds: URLs serving the file itself over HTTP.
    #[serde(rename = "url-list", default, skip_serializing_if = "Vec::is_empty")]
    pub url_list: Vec<String>,
    /// Which program wrote the torrent.
    #[serde(rename = "created by")]
    pub created_by: String,
    /// Unix seconds.
    #[serde(rename = "creation date")]
    pub creation_date: i64,
    /// What is shared.
    pub info: Info,
}

impl MetaInfo {
    /// A torrent of `info` announcing to `trackers` (at least one; each gets
    /// `token` appended as `jwt`, when given) with `webseeds` as BEP 19 URLs.
    pub fn new(
        info: Info,
        trackers: &[String],
        token: Option<&str>,
        webseeds: Vec<String>,
        creation_date: i64,
    ) -> Self {
        let signed: Vec<String> = trackers
            .iter()
            .map(|url| match token {
                Some(token) => with_token(url, token),
                None => url.clone(),
            })
            .collect();
        let announce = signed.first().cloned().unwrap_or_default();
        let announce_list = if signed.len() > 1 {
            signed.into_iter().map(|url| vec![url]).collect()
        } else {
            Vec::new()
        };
        Self {
            announce,
            announce_list,
            url_list: webseeds,
            created_by: concat!("swarmgate ", env!("CARGO_PKG_VERSION")).to_owned(),
            creation_date,
            info,
        }
    }

    /// The bencoded file.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Only strings, integers, bytes and lists of them: serializing cannot fail.
        serde_bencode::to_bytes(self).unwrap_or_default()
    }
}

/// `url` with `jwt=<token>` added to its query.
pub fn with_token(url: &str, token: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}jwt={token}")
}

/// The infohash of a `.torrent` file's bytes, from its `info` dictionary as
/// written (unknown keys included), as a client computes it.
pub fn info_hash_of(torrent: &[u8]) -> Result<InfoHash, TorrentError> {
    let not_a_torrent = |why: &str| TorrentError::NotATorrent(why.to_owned());
    let Value::Dict(top) =
        serde_bencode::from_bytes::<Value>(torrent).map_err(|e| not_a_torrent(&e.to_string()))?
    else {
        return Err(not_a_torrent("not a bencoded dictionary"));
    };
    let info = top
        .get(&b"info"[..])
        .ok_or_else(|| not_a_torrent("no info dictionary"))?;
    if !matches!(info, Value::Dict(_)) {
        return Err(not_a_torrent("info is not a dictionary"));
    }
    // serde_bencode writes dictionary keys sorted, which is the canonical
    // form every valid torrent's info dictionary is already in.
    let bytes = serde_bencode::to_bytes(info).map_err(|e| not_a_torrent(&e.to_string()))?;
    Ok(sha1(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn pieces_cover_the_data_and_the_last_piece_is_short() {
        let blob = data(40 * 1024 + 5);
        let info = Info::from_reader("layer", 16 * 1024, &blob[..]).expect("info");
        assert_eq!(info.length, blob.len() as u64);
        assert_eq!(info.pieces.len(), 3 * 20);
        let last = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, &blob[32 * 1024..]);
        assert_eq!(&info.pieces[40..], last.as_ref());
        let exact = Info::from_reader("layer", 16 * 1024, &blob[..32 * 1024]).expect("info");
        assert_eq!(exact.pieces.len(), 2 * 20, "no empty trailing piece");
        assert_eq!(exact.pieces[..], info.pieces[..40]);
        let empty = Info::from_reader("layer", 16 * 1024, &[][..]).expect("info");
        assert_eq!((empty.length, empty.pieces.len()), (0, 0));
    }

    #[test]
    fn a_slow_reader_gives_the_same_pieces() {
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1000);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let blob = data(100_000);
        let whole = Info::from_reader("a", 16 * 1024, &blob[..]).expect("info");
        let trickled = Info::from_reader("a", 16 * 1024, Trickle(&blob)).expect("info");
        assert_eq!(whole, trickled);
    }

    proptest::proptest! {
        /// Bytes fed in any chunks hash to the same pieces as one read.
        #[test]
        fn any_chunking_gives_the_same_pieces(
            len in 0usize..70_000,
            cuts in proptest::collection::vec(0usize..70_000, 0..20),
        ) {
            let blob = data(len);
            let whole = Info::from_reader("b", MIN_PIECE_LENGTH, &blob[..]).expect("info");
            let mut cuts: Vec<usize> = cuts.into_iter().filter(|&c| c <= len).collect();
            cuts.sort_unstable();
            let mut hasher = PieceHasher::new(MIN_PIECE_LENGTH).expect("hasher");
            let mut start = 0;
            for cut in cuts.into_iter().chain([len]) {
                hasher.update(&blob[start..cut]);
                start = cut;
            }
            proptest::prop_assert_eq!(hasher.finish("b").expect("info"), whole);
        }
    }

    #[test]
    fn the_file_is_canonical_bencode_and_its_infohash_is_the_info_dictionarys() {
        let info =
            Info::from_reader("layer.tar", DEFAULT_PIECE_LENGTH, &data(1 << 20)[..]).expect("info");
        let trackers = vec![
            "http://t1:6969/announce".to_owned(),
            "udp://t2:6969/announce?x=1".to_owned(),
        ];
        let torrent = MetaInfo::new(
            info.clone(),
            &trackers,
            Some("TOKEN"),
            vec!["http://registry/v2/a/blobs/sha256:00".into()],
            1_700_000_000,
        );
        let bytes = torrent.to_bytes();
        // Keys in sorted order, as BEP 3 requires; private is an integer.
        let text = bytes.escape_ascii().to_string();
        let order = [
            "8:announce",
            "13:announce-list",
            "10:created by",
            "13:creation date",
            "4:info",
            "8:url-list",
        ];
        let positions: Vec<usize> = order
            .iter()
            .map(|key| text.find(key).unwrap_or_else(|| panic!("{key} in {text}")))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        assert!(text.contains("7:privatei1e"), "{text}");
        assert_eq!(torrent.announce, "http://t1:6969/announce?jwt=TOKEN");
        assert_eq!(
            torrent.announce_list,
            vec![
                vec!["http://t1:6969/announce?jwt=TOKEN".to_owned()],
                vec!["udp://t2:6969/announce?x=1&jwt=TOKEN".to_owned()]
            ]
        );
        // The infohash read back from the file matches, and is SHA-1 of the info bytes.
        assert_eq!(info_hash_of(&bytes).expect("parses"), info.info_hash());
        let start = text.find("4:info").expect("info") + "4:info".len();
        let info_bytes = serde_bencode::to_bytes(&info).expect("bencode");
        assert_eq!(&bytes[start..start + info_bytes.len()], &info_bytes[..]);
        let back: MetaInfo = serde_bencode::from_bytes(&bytes).expect("round trip");
        assert_eq!(back, torrent);
    }

    #[test]
    fn one_tracker_means_no_announce_list() {
        let info = Info::from_reader("x", MIN_PIECE_LENGTH, &b"abc"[..]).expect("info");
        let torrent = MetaInfo::new(info, &["http://t/announce".into()], None, vec![], 0);
        assert_eq!(torrent.announce, "http://t/announce");
        let text = torrent.to_bytes().escape_ascii().to_string();
        assert!(
            !text.contains("announce-list") && !text.contains("url-list"),
            "{text}"
        );
    }

    #[test]
    fn piece_lengths() {
        assert_eq!(parse_piece_length("512KiB").expect("ok"), 512 * 1024);
        assert_eq!(parse_piece_length("512k").expect("ok"), 512 * 1024);
        assert_eq!(parse_piece_length("4MiB").expect("ok"), 4 << 20);
        assert_eq!(parse_piece_length("16384").expect("ok"), 16384);
        for bad in [
            "",
            "KiB",
            "500KiB",
            "8KiB",
            "128MiB",
            "1GiB",
            "99999999999999999999k",
            "-1",
        ] {
            assert!(parse_piece_length(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Info::from_reader("a", 1000, &b""[..]).is_err());
    }

    #[test]
    fn names_are_plain_file_names() {
        for bad in ["", "a/b", "..", "a\\b"] {
            assert!(
                Info::from_reader(bad, MIN_PIECE_LENGTH, &b"x"[..]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn garbage_is_not_a_torrent() {
        for bad in [
            &b""[..],
            b"i1e",
            b"d4:infoi1ee",
            b"d3:foo3:bare",
            b"d4:info",
        ] {
            assert!(info_hash_of(bad).is_err(), "{}", bad.escape_ascii());
        }
    }
}
