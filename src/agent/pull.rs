//! One blob's pull, shared by every request for it: the torrent from the
//! bridge, verified pieces from peers through the engine, in order, and
//! the origin for whatever peers did not deliver in time. Readers follow a
//! watermark of bytes in the file, so a response streams while the pull
//! runs, and a resumed one (`Range`) joins at its offset.
//!
//! The last byte of a blob is released only after the whole file's sha256
//! matched its digest: a wrong blob ends in an aborted response, never a
//! complete-looking one, and its file is deleted.

use std::collections::HashMap;
use std::io::SeekFrom;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::HeaderValue;
use bytes::Bytes;
use futures_util::StreamExt as _;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use super::{AgentState, Registry, Source};
use crate::bridge::reference::{BlobRef, Digest};
use crate::bridge::upstream::Credentials;
use crate::torrent::MetaInfo;

/// How far a pull is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// This many bytes from the start are in the file.
    Running(u64),
    /// The whole file is there and its sha256 matched.
    Verified,
    /// The pull failed; its file is gone.
    Failed,
}

/// A pull under way, as its readers see it.
pub struct Pull {
    /// The blob's size.
    pub size: u64,
    progress: watch::Receiver<Progress>,
}

impl Pull {
    /// A watcher of this pull's progress, for one reader.
    pub fn watch(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }
}

/// The pulls under way, one per digest.
#[derive(Default)]
pub struct Pulls {
    running: Mutex<HashMap<Digest, Arc<Pull>>>,
    /// Bytes peers delivered verified, over every pull: a pull whose own
    /// peers are quiet while this moves is behind a link its other pulls
    /// fill, not let down by peers (going to the origin then would only
    /// load the same link more).
    verified_from_peers: std::sync::atomic::AtomicU64,
}

impl Pulls {
    /// Pulls under way now.
    pub fn len(&self) -> usize {
        self.running.lock().len()
    }

    /// Whether none is under way.
    pub fn is_empty(&self) -> bool {
        self.running.lock().is_empty()
    }
}

/// Whose credentials a pull uses upstream (owned: the pull outlives the request).
#[derive(Clone)]
pub enum Caller {
    /// The first requester's `Authorization`, or none.
    Header(Option<HeaderValue>),
    /// The agent's own login for the registry.
    Own,
}

impl Caller {
    /// As the upstream client takes them.
    pub fn credentials(&self) -> Credentials<'_> {
        match self {
            Caller::Header(header) => Credentials::Caller(header.as_ref()),
            Caller::Own => Credentials::Own,
        }
    }
}

/// Joins the pull of `blob` under way, or starts one. `None` when the blob
/// cannot be cached (the caller streams it from the origin instead).
pub async fn join_or_start(
    state: &Arc<AgentState>,
    registry: &Arc<Registry>,
    blob: &BlobRef,
    caller: Caller,
    size: u64,
) -> Option<Arc<Pull>> {
    let (sender, evicted) = {
        let mut running = state.pulls.running.lock();
        if let Some(pull) = running.get(&blob.digest) {
            return Some(pull.clone());
        }
        let evicted = match state.cache.reserve(blob.digest, size) {
            Ok(evicted) => evicted,
            Err(bypass) => {
                state.metrics.bypass(bypass.label());
                tracing::warn!(blob = %blob.digest, size, reason = bypass.label(),
                    "agent: streaming a blob from the origin without caching it (agent.cache_max_bytes, or the disk is full)");
                return None;
            }
        };
        let (sender, receiver) = watch::channel(Progress::Running(0));
        running.insert(
            blob.digest,
            Arc::new(Pull {
                size,
                progress: receiver,
            }),
        );
        (sender, evicted)
    };
    let pull = state.pulls.running.lock().get(&blob.digest).cloned();
    let state = state.clone();
    let registry = registry.clone();
    let blob = blob.clone();
    tokio::spawn(async move {
        // Eviction: stop seeding first, then delete.
        for victim in evicted {
            if let Some(info_hash) = victim.info_hash {
                state.engine.forget(info_hash).await;
            }
            state.cache.delete(&victim.digest);
            state.metrics.evictions.increment(1);
        }
        let started = std::time::Instant::now();
        let outcome = run(&state, &registry, &blob, &caller, size, &sender).await;
        let final_state = match outcome {
            Ok(()) => {
                state.metrics.pull("verified");
                state
                    .metrics
                    .pull_seconds
                    .record(started.elapsed().as_secs_f64());
                Progress::Verified
            }
            Err(failure) => {
                state.metrics.pull(failure.label());
                tracing::error!(blob = %blob.digest, "agent: pull failed: {failure}");
                state.cache.abandon(&blob.digest);
                Progress::Failed
            }
        };
        state.pulls.running.lock().remove(&blob.digest);
        let _ = sender.send(final_state);
    });
    pull
}

/// Why a pull failed (peers failing is not a failure: the origin takes over).
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The bytes did not hash to the digest: the file is deleted.
    #[error(
        "{size} bytes hash to sha256:{actual}, not the digest: dropped (the origin or the bridge serves a damaged blob)"
    )]
    DigestMismatch {
        /// What they hash to.
        actual: String,
        /// How many.
        size: u64,
    },
    /// The origin could not give the rest.
    #[error("the origin failed after {got} of {size} bytes: {reason}")]
    Origin {
        /// Bytes held.
        got: u64,
        /// The blob's size.
        size: u64,
        /// The last error.
        reason: String,
    },
    /// The cache's file could not be written.
    #[error("cannot write the cache file: {0}")]
    Disk(#[from] std::io::Error),
}

impl PullError {
    fn label(&self) -> &'static str {
        match self {
            PullError::DigestMismatch { .. } => "digest_mismatch",
            PullError::Origin { .. } => "origin_failed",
            PullError::Disk(_) => "disk_error",
        }
    }
}

/// Why peers did not deliver the whole blob; logged once per blob.
struct Fallback {
    label: &'static str,
    reason: String,
}

async fn run(
    state: &Arc<AgentState>,
    registry: &Registry,
    blob: &BlobRef,
    caller: &Caller,
    size: u64,
    progress: &watch::Sender<Progress>,
) -> Result<(), PullError> {
    let mut hash = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut held = 0u64;
    let mut torrent: Option<(Bytes, MetaInfo)> = None;

    let fallback = match fetch_torrent(state, registry, blob, caller).await {
        Err(fallback) => Some(fallback),
        Ok((_, meta)) if meta.info.length != size => Some(Fallback {
            label: "bridge",
            reason: format!(
                "the bridge's torrent is for {} bytes, the registry says {size}",
                meta.info.length
            ),
        }),
        Ok((bytes, meta)) => {
            let piece_length = meta.info.piece_length;
            torrent = Some((bytes.clone(), meta));
            from_peers(
                state,
                bytes,
                size,
                piece_length,
                &mut hash,
                &mut held,
                progress,
            )
            .await
        }
    };
    if let Some(fallback) = fallback {
        state.metrics.fallback(fallback.label);
        tracing::warn!(blob = %blob.digest, from_peers = held, size, reason = fallback.label,
            "agent: fetching the rest of the blob from the origin: {}", fallback.reason);
        let web_seed = torrent
            .as_ref()
            .and_then(|(_, meta)| meta.url_list.first().cloned());
        let fetched = from_origin(
            state, registry, blob, caller, web_seed, size, &mut hash, &mut held, progress,
        )
        .await;
        if let Err(failure) = fetched {
            // Listed no longer: nobody should wait for this node.
            if let Some((_, meta)) = &torrent {
                state.engine.forget(meta.info.info_hash()).await;
            }
            return Err(failure);
        }
    }
    let actual = hash.finish();
    let committed = if actual.as_ref() != blob.digest.0 {
        Err(PullError::DigestMismatch {
            actual: hex::encode(actual.as_ref()),
            size: held,
        })
    } else {
        state
            .cache
            .commit(
                &blob.digest,
                torrent.as_ref().map(|(bytes, _)| bytes.as_ref()),
            )
            .map_err(PullError::Disk)
    };
    if let Err(failure) = committed {
        // The file goes: the engine must not seed it any longer.
        if let Some((_, meta)) = &torrent {
            state.engine.forget(meta.info.info_hash()).await;
        }
        return Err(failure);
    }
    // Whole and verified: the engine checks the file and seeds it at the
    // tracker's interval.
    if let Some((bytes, _)) = torrent
        && state.engine.seed(bytes.clone()).await.is_err()
    {
        tracing::warn!(blob = %blob.digest, "agent: the blob is cached but cannot be seeded");
    }
    Ok(())
}

/// The blob's torrent from the registry's bridge, asked with the caller's
/// credentials (the bridge asks the registry in turn).
async fn fetch_torrent(
    state: &AgentState,
    registry: &Registry,
    blob: &BlobRef,
    caller: &Caller,
) -> Result<(Bytes, MetaInfo), Fallback> {
    let Some(bridge) = &registry.bridge else {
        return Err(Fallback {
            label: "no_bridge",
            reason: format!("agent.registries names no bridge for {}", registry.name),
        });
    };
    let failed = |reason: String| Fallback {
        label: "bridge",
        reason,
    };
    let url = format!("{bridge}/c1/torrent/{}", blob.path());
    let mut request = state.http.get(&url);
    if let Some(authorization) = registry
        .upstream
        .authorization(caller.credentials(), &blob.name)
    {
        request = request.header(axum::http::header::AUTHORIZATION, authorization);
    }
    let response = tokio::time::timeout(state.settings.upstream_timeout, request.send())
        .await
        .map_err(|_| {
            failed(format!(
                "{url}: no answer in {:?}",
                state.settings.upstream_timeout
            ))
        })?
        .map_err(|e| failed(format!("{url}: {e}")))?;
    if !response.status().is_success() {
        return Err(failed(format!("{url} answered {}", response.status())));
    }
    let bytes = tokio::time::timeout(state.settings.upstream_timeout, response.bytes())
        .await
        .map_err(|_| failed(format!("{url}: the torrent did not arrive in time")))?
        .map_err(|e| failed(format!("{url}: {e}")))?;
    let meta: MetaInfo = serde_bencode::from_bytes(&bytes)
        .map_err(|e| failed(format!("{url}: not a torrent: {e}")))?;
    Ok((bytes, meta))
}

/// Opens the bridge's web seed (the URL carries its token) from `range`.
async fn open_web_seed(
    state: &AgentState,
    url: &str,
    range: Option<&HeaderValue>,
) -> Result<reqwest::Response, String> {
    let mut request = state.http.get(url);
    if let Some(range) = range {
        request = request.header(axum::http::header::RANGE, range.clone());
    }
    let response = tokio::time::timeout(state.settings.upstream_timeout, request.send())
        .await
        .map_err(|_| format!("no answer in {:?}", state.settings.upstream_timeout))?
        .map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 | 206 => Ok(response),
        status => Err(format!("answered {status}")),
    }
}

/// Reads the engine's verified bytes in order until the blob is whole or
/// peers stall past `agent.peer_deadline`.
async fn from_peers(
    state: &AgentState,
    torrent: Bytes,
    size: u64,
    piece_length: u64,
    hash: &mut aws_lc_rs::digest::Context,
    held: &mut u64,
    progress: &watch::Sender<Progress>,
) -> Option<Fallback> {
    // The first node of a rollout goes to the origin at once, and seeds; the
    // nodes after it find it listed and wait for it. A tracker that does
    // not answer leaves the choice to librqbit's peers (below).
    match state.engine.enlist(&torrent).await {
        Ok(swarm) if swarm.seeders == 0 && swarm.leechers <= 1 => {
            return Some(Fallback {
                label: "first",
                reason: "the tracker lists no seeder and no other leecher: this node fetches the blob and seeds it".into(),
            });
        }
        Ok(_) => {}
        Err(error) => tracing::debug!("agent: {error}"),
    }
    let announce_every = (state.settings.peer_deadline / 4).max(Duration::from_secs(1));
    let transfer = match state.engine.download(torrent, announce_every).await {
        Ok(transfer) => transfer,
        Err(error) => {
            return Some(Fallback {
                label: "engine",
                reason: error.to_string(),
            });
        }
    };
    let stopped = |label, reason: String| {
        let info_hash = transfer.info_hash();
        tracing::debug!(info_hash = %hex::encode(info_hash.0), peers = %transfer.fetched_by_peer(), "agent: bytes from each peer");
        state
            .metrics
            .discarded
            .increment(transfer.unverified_bytes());
        async move {
            // Still listed: it seeds the blob once the origin gave the rest.
            state.engine.step_aside(info_hash).await;
            Some(Fallback { label, reason })
        }
    };
    let mut stream = match transfer.stream().await {
        Ok(stream) => stream,
        Err(error) => return stopped("engine", error.to_string()).await,
    };
    let deadline = state.settings.peer_deadline;
    // With no peer connected a quarter of the deadline in (the tracker
    // answers a new torrent at once, and a peer on the same network accepts
    // in milliseconds), waiting longer gains nothing: the first node of a
    // rollout, or one whose only peers have gone, goes to the origin early.
    let lonely = deadline / 4;
    let started = tokio::time::Instant::now();
    let mut last_progress = started;
    // Progress is any byte from peers, verified in any order or still in
    // flight, not only the next piece in order: on a busy link peers deliver
    // later pieces while the next one is still arriving.
    let mut progress_seen = transfer.progress();
    let fleetwide = &state.pulls.verified_from_peers;
    let mut verified_counted = progress_seen.0;
    fleetwide.fetch_add(verified_counted, Ordering::Relaxed);
    let mut fleetwide_seen = fleetwide.load(Ordering::Relaxed);
    let mut buffer = vec![0u8; 256 << 10];
    // librqbit's stats are a snapshot with an allocation: read them at most
    // once per POLL, not once per 256 KiB chunk (800 times a second at
    // 200 MB/s).
    let mut accounted_at = tokio::time::Instant::now();
    while *held < size {
        if accounted_at.elapsed() >= POLL {
            accounted_at = tokio::time::Instant::now();
            let verified = transfer.progress().0;
            if verified > verified_counted {
                fleetwide.fetch_add(verified - verified_counted, Ordering::Relaxed);
                verified_counted = verified;
            }
        }
        match tokio::time::timeout(POLL, stream.read(&mut buffer)).await {
            Ok(Ok(0)) => {
                return stopped("engine", format!("the stream ended at {held} bytes")).await;
            }
            Ok(Ok(n)) => {
                hash.update(&buffer[..n]);
                *held += n as u64;
                state.metrics.bytes(Source::Peers, n as u64);
                progress.send_replace(Progress::Running(*held));
                last_progress = tokio::time::Instant::now();
            }
            Ok(Err(error)) => return stopped("engine", error.to_string()).await,
            Err(_)
                if transfer.progress() != progress_seen && {
                    // Fetched bytes beyond what one piece per connected peer
                    // can hold in flight were thrown away (pieces that failed
                    // their hash): a peer that sends bad pieces again and again
                    // is no progress.
                    let in_flight = u64::from(transfer.peers().live + 1) * piece_length;
                    transfer.progress().0 != progress_seen.0
                        || transfer.unverified_bytes() <= in_flight
                } =>
            {
                progress_seen = transfer.progress();
                last_progress = tokio::time::Instant::now();
            }
            Err(_) if fleetwide.load(Ordering::Relaxed) != fleetwide_seen => {
                fleetwide_seen = fleetwide.load(Ordering::Relaxed);
                last_progress = tokio::time::Instant::now();
            }
            Err(_) if last_progress.elapsed() >= deadline => {
                return stopped(
                    "peer_deadline",
                    format!(
                        "peers delivered no byte in {deadline:?}, for this blob or any other (agent.peer_deadline); {} peers connected",
                        transfer.peers().live
                    ),
                )
                .await;
            }
            // Nobody to get it from: the tracker named no peer at all (the
            // first node of a rollout, or a tracker that is down). A named
            // peer with nothing yet is waited for, up to the deadline: it may
            // be the node that went to the origin first, which seeds the
            // blob once whole, and waiting seconds for it saves a copy from
            // the origin (every node of a rollout's first seconds went to the
            // origin while this rule also fired on empty peers).
            Err(_) if *held == 0 && started.elapsed() >= lonely && transfer.peers().seen == 0 => {
                return stopped(
                    "no_peers",
                    format!(
                        "the tracker named no peer in {lonely:?} (a quarter of agent.peer_deadline)"
                    ),
                )
                .await;
            }
            Err(_) => {}
        }
    }
    state
        .metrics
        .discarded
        .increment(transfer.unverified_bytes());
    tracing::debug!(info_hash = %hex::encode(transfer.info_hash().0), peers = %transfer.fetched_by_peer(), "agent: bytes from each peer");
    None
}

/// How often a pull waiting on peers looks at the clock and the peer count.
const POLL: Duration = Duration::from_millis(250);

/// Fetches bytes `held..size` from the bridge's web seed, else the
/// registry, writing them into the cache's file; retries from where it got.
#[allow(clippy::too_many_arguments)]
async fn from_origin(
    state: &AgentState,
    registry: &Registry,
    blob: &BlobRef,
    caller: &Caller,
    web_seed: Option<String>,
    size: u64,
    hash: &mut aws_lc_rs::digest::Context,
    held: &mut u64,
    progress: &watch::Sender<Progress>,
) -> Result<(), PullError> {
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(state.cache.data_path(&blob.digest))
        .await?;
    let mut last_error = String::new();
    // Web seed first (the bridge's account, no load on the caller's
    // credentials), then the registry; each source gets two tries.
    let sources: Vec<Source> = web_seed
        .iter()
        .map(|_| Source::Bridge)
        .chain([Source::Registry])
        .flat_map(|source| [source, source])
        .collect();
    for source in sources {
        if *held >= size {
            break;
        }
        let range = HeaderValue::from_str(&format!("bytes={held}-")).ok();
        let response = match source {
            Source::Bridge => {
                open_web_seed(
                    state,
                    web_seed.as_deref().unwrap_or_default(),
                    range.as_ref(),
                )
                .await
            }
            _ => registry
                .upstream
                .open(blob, caller.credentials(), range.as_ref())
                .await
                .map_err(|e| e.to_string()),
        };
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                last_error = format!("{}: {error}", source.label());
                continue;
            }
        };
        // A 200 to a ranged request starts from byte 0: skip what is held.
        let mut skip = if response.status() == axum::http::StatusCode::PARTIAL_CONTENT {
            0
        } else {
            *held
        };
        file.seek(SeekFrom::Start(*held)).await?;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let mut chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => {
                    last_error = format!("{}: {error}", source.label());
                    break;
                }
            };
            if skip > 0 {
                let dropped = skip.min(chunk.len() as u64);
                let _ = chunk.split_to(dropped as usize);
                skip -= dropped;
            }
            let room = (size - *held).min(chunk.len() as u64) as usize;
            let chunk = chunk.slice(..room);
            if chunk.is_empty() {
                continue;
            }
            file.write_all(&chunk).await?;
            // tokio's File hands a write to a blocking thread and returns:
            // readers (other file handles) may see the bytes only once it
            // finished. flush waits for that; without it a reader can send
            // stale bytes below the watermark.
            file.flush().await?;
            hash.update(&chunk);
            *held += chunk.len() as u64;
            state.metrics.bytes(source, chunk.len() as u64);
            progress.send_replace(Progress::Running(*held));
        }
        file.flush().await?;
    }
    if *held < size {
        return Err(PullError::Origin {
            got: *held,
            size,
            reason: last_error,
        });
    }
    file.sync_data().await?;
    Ok(())
}

/// A response body that follows a pull (or a verified cached blob) over
/// bytes `start..end`: bytes up to the watermark as they come, the blob's
/// last byte only once the whole blob verified; an error (an aborted
/// response) if the pull fails or stalls longer than `stall`.
#[allow(clippy::too_many_arguments)]
pub fn body(
    path: std::path::PathBuf,
    size: u64,
    start: u64,
    end: u64,
    progress: watch::Receiver<Progress>,
    stall: Duration,
    file: Option<tokio::fs::File>,
) -> axum::body::Body {
    struct Reader {
        path: std::path::PathBuf,
        file: Option<tokio::fs::File>,
        position: u64,
        size: u64,
        end: u64,
        progress: watch::Receiver<Progress>,
        stall: Duration,
        buffer: Vec<u8>,
    }
    let reader = Reader {
        path,
        file,
        position: start,
        size,
        end,
        progress,
        stall,
        buffer: vec![0u8; 256 << 10],
    };
    let stream = futures_util::stream::unfold(reader, |mut reader| async move {
        if reader.position >= reader.end {
            return None;
        }
        let result = next_chunk(&mut reader).await;
        let failed = result.is_err();
        let item = (result, reader);
        if failed {
            // One error item ends the body; the next poll returns None.
            let (result, mut reader) = item;
            reader.position = reader.end;
            return Some((result, reader));
        }
        Some(item)
    });

    async fn next_chunk(reader: &mut Reader) -> Result<Bytes, std::io::Error> {
        loop {
            let state = *reader.progress.borrow_and_update();
            let limit = match state {
                Progress::Verified => reader.end,
                Progress::Running(ready) => ready.min(reader.size - 1).min(reader.end),
                Progress::Failed => {
                    return Err(std::io::Error::other(
                        "the pull failed; see the agent's log",
                    ));
                }
            };
            if reader.position < limit {
                if reader.file.is_none() {
                    reader.file = Some(tokio::fs::File::open(&reader.path).await?);
                }
                let Some(file) = reader.file.as_mut() else {
                    continue;
                };
                let want = (limit - reader.position).min(reader.buffer.len() as u64) as usize;
                file.seek(SeekFrom::Start(reader.position)).await?;
                let n = file.read(&mut reader.buffer[..want]).await?;
                if n == 0 {
                    return Err(std::io::Error::other(
                        "the cached file is shorter than the blob",
                    ));
                }
                reader.position += n as u64;
                return Ok(Bytes::copy_from_slice(&reader.buffer[..n]));
            }
            match tokio::time::timeout(reader.stall, reader.progress.changed()).await {
                Ok(Ok(())) => {}
                // The pull ended: its last state is final.
                Ok(Err(_)) => {
                    if *reader.progress.borrow() != Progress::Verified {
                        return Err(std::io::Error::other("the pull ended unverified"));
                    }
                }
                Err(_) => {
                    return Err(std::io::Error::other(format!(
                        "no progress in {:?}",
                        reader.stall
                    )));
                }
            }
        }
    }

    axum::body::Body::from_stream(stream)
}

/// A `Range` header the agent does not serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("only one range, bytes=N- or bytes=N-M")]
pub struct BadRange;

/// A `Range` header's first and last byte: `bytes=N-` (containerd's resume)
/// and `bytes=N-M`; several ranges, suffix ranges and garbage are refused.
pub fn parse_range(value: Option<&HeaderValue>) -> Result<Option<(u64, Option<u64>)>, BadRange> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_str().map_err(|_| BadRange)?;
    let spec = text.trim().strip_prefix("bytes=").ok_or(BadRange)?;
    if spec.contains(',') {
        return Err(BadRange);
    }
    let (start, end) = spec.split_once('-').ok_or(BadRange)?;
    let start: u64 = start.trim().parse().map_err(|_| BadRange)?;
    let end = match end.trim() {
        "" => None,
        end => Some(end.parse::<u64>().map_err(|_| BadRange)?),
    };
    if end.is_some_and(|end| end < start) {
        return Err(BadRange);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_one_span_from_a_start() {
        let parse = |text: &str| parse_range(Some(&HeaderValue::from_str(text).expect("header")));
        assert_eq!(parse_range(None), Ok(None));
        assert_eq!(parse("bytes=100-"), Ok(Some((100, None))));
        assert_eq!(parse("bytes=0-99"), Ok(Some((0, Some(99)))));
        for bad in [
            "bytes=-5",
            "bytes=5-1",
            "bytes=1-2,4-5",
            "items=1-",
            "bytes=x-",
        ] {
            assert_eq!(parse(bad), Err(BadRange), "{bad}");
        }
    }
}
