//! The BitTorrent engine behind a narrow seam: librqbit (a maintained Rust
//! BitTorrent client) downloads a blob's torrent from other agents, streams
//! its verified pieces in order, and seeds what the cache keeps. Everything
//! else in the agent sees [`Engine`] and [`Transfer`] only, so the engine
//! can be swapped without touching the mirror.
//!
//! What librqbit 9 does not do, and the agent does around it: BEP 19 web
//! seeds (the agent's origin fetch covers what peers lack), announces to
//! any tracker but a private torrent's first, and `completed`/`stopped`
//! events (a stopped agent stays listed until the tracker's peer lifetime).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use librqbit::{
    AddTorrent, AddTorrentOptions, ConnectionOptions, ListenerMode, ListenerOptions,
    PeerConnectionOptions, Session, SessionOptions,
};

use crate::bittorrent::InfoHash;

/// What the engine could not do.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The session (listener, folders) could not start.
    #[error("cannot start the BitTorrent engine on {listen}: {reason}")]
    Start {
        /// The configured peer listener.
        listen: SocketAddr,
        /// librqbit's reason.
        reason: String,
    },
    /// A torrent was refused or failed.
    #[error("BitTorrent engine: {0}")]
    Torrent(String),
    /// The tracker did not answer an announce, or refused it.
    #[error("the tracker's announce failed: {0}")]
    Tracker(String),
}

/// `torrent` with `numwant=<n>` in its announce URLs, which librqbit keeps
/// and adds its own parameters to; `None` if it is not a torrent. Only the
/// outer dictionary changes: the info dictionary is written back in its
/// canonical form, as the infohash is computed on.
fn with_numwant(torrent: &[u8], numwant: u32) -> Option<Bytes> {
    use serde_bencode::value::Value;
    let Value::Dict(mut top) = serde_bencode::from_bytes::<Value>(torrent).ok()? else {
        return None;
    };
    let add = |value: &mut Value| {
        if let Value::Bytes(url) = value {
            let separator = if url.contains(&b'?') { '&' } else { '?' };
            url.extend_from_slice(format!("{separator}numwant={numwant}").as_bytes());
        }
    };
    if let Some(announce) = top.get_mut(&b"announce"[..]) {
        add(announce);
    }
    if let Some(Value::List(tiers)) = top.get_mut(&b"announce-list"[..]) {
        for tier in tiers {
            if let Value::List(urls) = tier {
                urls.iter_mut().for_each(add);
            }
        }
    }
    serde_bencode::to_bytes(&Value::Dict(top))
        .ok()
        .map(Bytes::from)
}

/// A torrent's first announce URL, if HTTP (librqbit and the agent announce
/// to no other), and its length.
fn http_announce(torrent: &[u8]) -> Option<(String, u64)> {
    let meta = serde_bencode::from_bytes::<crate::torrent::MetaInfo>(torrent).ok()?;
    let url = meta.announce;
    (url.starts_with("http://") || url.starts_with("https://")).then_some((url, meta.info.length))
}

/// One librqbit session for the whole agent.
pub struct Engine {
    session: Arc<Session>,
    folder: PathBuf,
    /// The session's peer id, chosen here so the agent can announce
    /// `stopped` itself (librqbit never does).
    peer_id: [u8; 20],
    announce_port: u16,
    /// Peers asked of the tracker, written into each torrent's announce
    /// URLs (librqbit sends no `numwant`).
    numwant: u32,
    /// Each torrent's first announce URL (with its token) and length, by
    /// infohash: kept from the first announce until `stopped` is sent, also
    /// while the torrent is out of librqbit (a node fetching from the
    /// origin stays listed, so others wait for it instead of going there).
    announce_urls: parking_lot::Mutex<std::collections::HashMap<[u8; 20], (String, u64)>>,
    http: reqwest::Client,
}

/// How many peers a torrent knows of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounts {
    /// Learned from the tracker (or from incoming connections), ever.
    pub seen: u32,
    /// Connected now.
    pub live: u32,
    /// Connected now, and holding the whole torrent.
    pub seeders: u32,
}

/// A swarm's counts as the tracker gave them, this node included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwarmCounts {
    /// Peers holding the whole blob.
    pub seeders: u64,
    /// Peers still downloading it.
    pub leechers: u64,
}

/// The part of a tracker's announce reply the agent reads.
#[derive(serde::Deserialize)]
struct AnnounceReply {
    #[serde(default)]
    complete: u64,
    #[serde(default)]
    incomplete: u64,
    #[serde(rename = "failure reason")]
    failure: Option<String>,
}

/// A torrent the engine holds, downloading or seeding.
pub struct Transfer {
    handle: Arc<librqbit::ManagedTorrent>,
}

impl Engine {
    /// Starts a session writing into `folder`, listening for peers on
    /// `listen` (TCP only: no uTP, whose first tries cost seconds against
    /// TCP-only peers), announcing `announce_port`. No DHT, no local
    /// discovery, no persistence: peers come from the tracker alone, and the
    /// cache, not the engine, remembers blobs across restarts.
    pub async fn start(
        folder: &Path,
        listen: SocketAddr,
        announce_port: Option<u16>,
        numwant: u32,
        timeout: std::time::Duration,
    ) -> Result<Self, EngineError> {
        let peer_opts = PeerConnectionOptions {
            connect_timeout: Some(timeout.min(std::time::Duration::from_secs(10))),
            read_write_timeout: Some(timeout),
            // 32 chunks of 16 KiB: one 512 KiB piece in flight per peer. The
            // default (128) ties four pieces to the first peer, however slow
            // (a far region over a shared link), while near peers that have
            // the blob find "no pieces to request" until librqbit steals them
            // back seconds later (seen in the testbed's traces).
            max_request_window: Some(32),
            ..Default::default()
        };
        // librqbit announces no port for a loopback listener (peers then
        // dial 4240), and cannot announce a port 0 before binding it: pick
        // the port here, and announce it unless told otherwise.
        let mut listen = listen;
        if listen.port() == 0 {
            let probe = std::net::TcpListener::bind(listen).map_err(|e| EngineError::Start {
                listen,
                reason: e.to_string(),
            })?;
            let port = probe.local_addr().map(|a| a.port()).unwrap_or(0);
            listen.set_port(port);
        }
        let announce_port = announce_port.unwrap_or(listen.port());
        // Azureus style, as trackers and peers expect: -SG0100-<12 random>.
        let mut peer_id = *b"-SG0100-000000000000";
        for byte in &mut peer_id[8..] {
            *byte = b"0123456789abcdefghijklmnopqrstuvwxyz"[rand::random_range(0..36)];
        }
        let options = SessionOptions {
            peer_id: Some(librqbit::dht::Id20::new(peer_id)),
            dht: None,
            persistence: None,
            fastresume: false,
            disable_local_service_discovery: true,
            listen: Some(ListenerOptions {
                mode: ListenerMode::TcpOnly,
                listen_addr: listen,
                announce_port: Some(announce_port),
                ipv4_only: listen.is_ipv4(),
                ..Default::default()
            }),
            connect: Some(ConnectionOptions {
                peer_opts: Some(peer_opts),
                ..Default::default()
            }),
            client_name_and_version: Some(
                concat!("swarmgate-agent/", env!("CARGO_PKG_VERSION")).into(),
            ),
            ..Default::default()
        };
        let session = Session::new_with_opts(folder.to_owned(), options)
            .await
            .map_err(|e| EngineError::Start {
                listen,
                reason: format!("{e:#}"),
            })?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(2))
            .build()
            .map_err(|e| EngineError::Start {
                listen,
                reason: e.to_string(),
            })?;
        Ok(Self {
            session,
            folder: folder.to_owned(),
            peer_id,
            announce_port,
            numwant,
            announce_urls: parking_lot::Mutex::new(std::collections::HashMap::new()),
            http,
        })
    }

    /// The address peers reach this engine on, as bound.
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.session.listen_addr()
    }

    /// Adds `torrent` (its bytes, as the bridge signed them): downloads what
    /// the file in the engine's folder lacks, then seeds. A file already
    /// complete on disk is checked piece by piece and seeded.
    pub async fn add(&self, torrent: Bytes) -> Result<Transfer, EngineError> {
        self.add_with(torrent, None).await
    }

    /// [`add`](Self::add) for a download: it re-announces every
    /// `announce_every` instead of the tracker's interval, so peers that
    /// start seeding after its first announce (a node that went to the
    /// origin and finished) are found within seconds, not an interval.
    pub async fn download(
        &self,
        torrent: Bytes,
        announce_every: std::time::Duration,
    ) -> Result<Transfer, EngineError> {
        self.add_with(torrent, Some(announce_every)).await
    }

    /// Seeds a blob now whole on disk at the tracker's own interval: a
    /// download's fast re-announce is dropped (the torrent is let go without
    /// `stopped` and added again, which checks the file once).
    pub async fn seed(&self, torrent: Bytes) -> Result<Transfer, EngineError> {
        if let Ok(info_hash) = crate::torrent::info_hash_of(&torrent) {
            let _ = self.let_go(info_hash, false).await;
        }
        self.add_with(torrent, None).await
    }

    async fn add_with(
        &self,
        torrent: Bytes,
        announce_every: Option<std::time::Duration>,
    ) -> Result<Transfer, EngineError> {
        let announce = http_announce(&torrent);
        let options = AddTorrentOptions {
            overwrite: true,
            force_tracker_interval: announce_every,
            output_folder: Some(self.folder.to_string_lossy().into_owned()),
            ..Default::default()
        };
        let torrent = with_numwant(&torrent, self.numwant).unwrap_or(torrent);
        let added = self
            .session
            .add_torrent(AddTorrent::from_bytes(torrent), Some(options))
            .await
            .map_err(|e| EngineError::Torrent(format!("{e:#}")))?;
        let handle = added
            .into_handle()
            .ok_or_else(|| EngineError::Torrent("the torrent was only listed".into()))?;
        if let Some(announce) = announce {
            self.announce_urls
                .lock()
                .insert(handle.info_hash().0, announce);
        }
        Ok(Transfer { handle })
    }

    /// Announces `torrent` (`event=started`, nothing held, no peers asked
    /// for) before librqbit does, and returns the swarm's counts, this node
    /// included: a node that finds no seeder and no other leecher is the
    /// first, and goes to the origin at once instead of waiting for peers.
    /// The tracker lists it from now on, so the nodes after it wait for it.
    pub async fn enlist(&self, torrent: &Bytes) -> Result<SwarmCounts, EngineError> {
        let info_hash = crate::torrent::info_hash_of(torrent)
            .map_err(|e| EngineError::Torrent(e.to_string()))?;
        let (url, length) = http_announce(torrent)
            .ok_or_else(|| EngineError::Torrent("the torrent names no HTTP tracker".into()))?;
        let query = self.announce_query(&info_hash.0, 0, 0, length, "started");
        let separator = if url.contains('?') { '&' } else { '?' };
        let reply = self
            .http
            .get(format!("{url}{separator}{query}&numwant=0"))
            .send()
            .await
            .and_then(|response| response.error_for_status())
            .map_err(|e| EngineError::Tracker(e.to_string()))?
            .bytes()
            .await
            .map_err(|e| EngineError::Tracker(e.to_string()))?;
        let reply: AnnounceReply = serde_bencode::from_bytes(&reply)
            .map_err(|e| EngineError::Tracker(format!("not an announce reply: {e}")))?;
        if let Some(failure) = reply.failure {
            return Err(EngineError::Tracker(failure));
        }
        self.announce_urls.lock().insert(info_hash.0, (url, length));
        Ok(SwarmCounts {
            seeders: reply.complete,
            leechers: reply.incomplete,
        })
    }

    /// The query of an announce from this node (after the URL's own).
    fn announce_query(
        &self,
        info_hash: &[u8; 20],
        uploaded: u64,
        downloaded: u64,
        left: u64,
        event: &str,
    ) -> String {
        let escape = |bytes: &[u8]| {
            percent_encoding::percent_encode(bytes, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "info_hash={}&peer_id={}&port={}&uploaded={uploaded}&downloaded={downloaded}&left={left}&event={event}&compact=1",
            escape(info_hash),
            escape(&self.peer_id),
            self.announce_port,
        )
    }

    /// Stops downloading or seeding `info_hash` and keeps its file; tells
    /// the tracker (`event=stopped`, in the background, so a pull turning
    /// to the origin does not wait for it), so other agents stop trying
    /// this one. Also for a torrent only [enlisted](Self::enlist).
    pub async fn forget(&self, info_hash: InfoHash) {
        if let Some(announce) = self.let_go(info_hash, true).await {
            tokio::spawn(announce);
        }
    }

    /// Takes `info_hash` out of librqbit without telling the tracker: the
    /// node goes on to the origin for the rest and seeds the blob once
    /// whole, so it stays listed and the nodes after it wait for it. A pull
    /// that fails afterwards [forgets](Self::forget) it.
    pub async fn step_aside(&self, info_hash: InfoHash) {
        let id = librqbit::dht::Id20::new(info_hash.0);
        if self.session.get(id.into()).is_some()
            && let Err(error) = self.session.delete(id.into(), false).await
        {
            tracing::warn!(info_hash = %hex::encode(info_hash.0), "engine: cannot stop a torrent: {error:#}");
        }
    }

    /// Stops the torrent, if librqbit holds it; returns its `stopped`
    /// announce, to be sent, when `tell` (and the torrent has an HTTP
    /// tracker).
    async fn let_go(
        &self,
        info_hash: InfoHash,
        tell: bool,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let id = librqbit::dht::Id20::new(info_hash.0);
        let stats = match self.session.get(id.into()) {
            Some(handle) => {
                let stats = handle.stats();
                if let Err(error) = self.session.delete(id.into(), false).await {
                    tracing::warn!(info_hash = %hex::encode(info_hash.0), "engine: cannot stop a torrent: {error:#}");
                }
                Some(stats)
            }
            None => None,
        };
        let (url, length) = self.announce_urls.lock().remove(&info_hash.0)?;
        if !tell {
            return None;
        }
        // Out of librqbit (stepped aside, or only enlisted): what it held
        // is unknown, so it reports nothing held (never `left=0`, which
        // would read as a finished download).
        let (uploaded, held) = stats
            .map(|stats| (stats.uploaded_bytes, stats.progress_bytes))
            .unwrap_or((0, 0));
        let left = length.saturating_sub(held);
        let query = self.announce_query(&info_hash.0, uploaded, held, left, "stopped");
        let separator = if url.contains('?') { '&' } else { '?' };
        let request = self.http.get(format!("{url}{separator}{query}")).send();
        Some(async move {
            if let Err(error) = request.await {
                tracing::debug!(info_hash = %hex::encode(info_hash.0), "engine: the stopped announce failed: {error}");
            }
        })
    }

    /// Bytes uploaded to peers by every torrent held now.
    pub fn uploaded_bytes(&self) -> u64 {
        self.session.with_torrents(|torrents| {
            torrents
                .map(|(_, handle)| handle.stats().uploaded_bytes)
                .sum()
        })
    }

    /// Torrents held (downloading or seeding).
    pub fn torrents(&self) -> usize {
        self.session.with_torrents(|torrents| torrents.count())
    }

    /// Torrents whole and serving peers: past librqbit's check of the file
    /// (seconds for a large blob, during which peers are not served).
    pub fn seeding(&self) -> usize {
        self.session.with_torrents(|torrents| {
            torrents
                .filter(|(_, handle)| {
                    let stats = handle.stats();
                    stats.finished && matches!(stats.state, librqbit::TorrentStatsState::Live)
                })
                .count()
        })
    }

    /// Stops every torrent (announcing `stopped` for each) and the listener.
    pub async fn stop(&self) {
        let held: Vec<[u8; 20]> = self
            .session
            .with_torrents(|torrents| torrents.map(|(_, handle)| handle.info_hash().0).collect());
        // At shutdown the announces are waited for (2 s at most each).
        let mut announces = Vec::new();
        for hash in held {
            announces.extend(self.let_go(InfoHash(hash), true).await);
        }
        futures_util::future::join_all(announces).await;
        self.session.stop().await;
    }
}

impl Transfer {
    /// The blob's verified bytes in order, each piece as soon as its SHA-1
    /// matched: reading waits for the pieces peers have not delivered yet.
    pub async fn stream(&self) -> Result<impl tokio::io::AsyncRead + Unpin + use<>, EngineError> {
        self.handle
            .clone()
            .stream(0)
            .await
            .map_err(|e| EngineError::Torrent(format!("{e:#}")))
    }

    /// The torrent's infohash.
    pub fn info_hash(&self) -> InfoHash {
        InfoHash(self.handle.info_hash().0)
    }

    /// Bytes of the torrent held verified (in any order) and bytes peers
    /// sent so far, verified or not: both move while peers deliver.
    pub fn progress(&self) -> (u64, u64) {
        let stats = self.handle.stats();
        let fetched = stats
            .live
            .map(|live| live.snapshot.fetched_bytes)
            .unwrap_or(0);
        (stats.progress_bytes, fetched)
    }

    /// Bytes peers sent that did not (yet) verify: pieces whose SHA-1 failed
    /// (librqbit drops the peer that sent one) and pieces cut off mid-way.
    pub fn unverified_bytes(&self) -> u64 {
        self.handle
            .stats()
            .live
            .map(|live| {
                live.snapshot
                    .fetched_bytes
                    .saturating_sub(live.snapshot.downloaded_and_checked_bytes)
            })
            .unwrap_or(0)
    }

    /// Bytes each peer sent so far (`address=bytes`, largest first), for
    /// the log line that says where a blob came from.
    pub fn fetched_by_peer(&self) -> String {
        let Some(live) = self.handle.live() else {
            return String::new();
        };
        // Every peer ever connected: librqbit exports the filter's type
        // only through serde (its default is connected peers only).
        let every_peer = serde_json::from_str(r#"{"state":"all"}"#).unwrap_or_default();
        let mut peers: Vec<(String, u64)> = live
            .per_peer_stats_snapshot(every_peer)
            .peers
            .into_iter()
            .map(|(addr, stats)| (addr, stats.counters.fetched_bytes))
            .filter(|(_, bytes)| *bytes > 0)
            .collect();
        peers.sort_by_key(|peer| std::cmp::Reverse(peer.1));
        peers
            .iter()
            .map(|(addr, bytes)| format!("{addr}={bytes}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Peers known and connected now.
    pub fn peers(&self) -> PeerCounts {
        self.handle
            .stats()
            .live
            .map(|live| PeerCounts {
                seen: live.snapshot.peer_stats.seen,
                live: live.snapshot.peer_stats.live,
                seeders: live.snapshot.peer_stats.live_seeders,
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::torrent::{Info, MetaInfo};

    /// The rewrite adds `numwant` to every announce URL and leaves the
    /// infohash (what the token approves) as it was.
    #[test]
    fn numwant_is_added_and_the_infohash_kept() {
        let info = Info::from_reader("sha256-ab", 16 << 10, &[7u8; 40_000][..]).expect("info");
        let trackers = [
            "http://a/announce".to_owned(),
            "http://b/announce?x=1".to_owned(),
        ];
        let torrent = MetaInfo::new(info, &trackers, Some("tok"), vec![], 1).to_bytes();
        let rewritten = with_numwant(&torrent, 8).expect("a torrent");
        assert_eq!(
            crate::torrent::info_hash_of(&rewritten).expect("infohash"),
            crate::torrent::info_hash_of(&torrent).expect("infohash")
        );
        let meta: MetaInfo = serde_bencode::from_bytes(&rewritten).expect("decodes");
        assert_eq!(meta.announce, "http://a/announce?jwt=tok&numwant=8");
        assert_eq!(
            meta.announce_list,
            vec![
                vec!["http://a/announce?jwt=tok&numwant=8".to_owned()],
                vec!["http://b/announce?x=1&jwt=tok&numwant=8".to_owned()]
            ]
        );
        assert!(with_numwant(b"not bencode", 8).is_none());
    }
}
