//! Making a blob's torrent: stream it from the registry once, hashing pieces
//! (SHA-1) and the whole (SHA-256) in the same pass, in constant memory. The
//! blob is never buffered, not even a piece: both hashes take the bytes as
//! they arrive. A blob whose SHA-256 is not its digest yields no torrent and
//! nothing cached. Concurrent requests for one blob share one build.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use aws_lc_rs::digest;
use parking_lot::Mutex;
use tokio::sync::OnceCell;

use super::BridgeMetrics;
use super::cache::DiskCache;
use super::reference::{BlobRef, Digest};
use super::upstream::{Credentials, Upstream, UpstreamError};
use crate::bittorrent::InfoHash;
use crate::torrent::{Info, PieceHasher};

/// Why no torrent could be made.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BuildError {
    /// The registry would not give the blob.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The blob is larger than `bridge.max_blob_bytes`.
    #[error("the blob is larger than bridge.max_blob_bytes ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The bytes the registry sent do not hash to the digest.
    #[error(
        "the registry sent {bytes} bytes whose sha256 is {actual}, not {expected}: the stored blob is corrupt"
    )]
    DigestMismatch {
        /// The requested digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: String,
        /// How many bytes came.
        bytes: u64,
    },
    /// The stream broke off.
    #[error("the blob stream broke off after {bytes} bytes: {message}")]
    Interrupted {
        /// Bytes received.
        bytes: u64,
        /// The transport's error.
        message: String,
    },
}

impl BuildError {
    /// A bounded label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            BuildError::Upstream(_) => "upstream_error",
            BuildError::TooLarge { .. } => "too_large",
            BuildError::DigestMismatch { .. } => "digest_mismatch",
            BuildError::Interrupted { .. } => "interrupted",
        }
    }
}

type Flight = Arc<OnceCell<Result<(Arc<Info>, InfoHash), BuildError>>>;

/// Where a torrent's `info` came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The disk cache.
    Cache,
    /// Built (or joined a build) just now.
    Built,
}

/// A torrent's `info`, its infohash (computed once), and where it came from.
#[derive(Debug, Clone)]
pub struct Built {
    /// The `info` dictionary.
    pub info: Arc<Info>,
    /// SHA-1 of its bencoding.
    pub info_hash: InfoHash,
    /// Cache or build.
    pub source: Source,
}

/// Builds torrents and keeps them in the cache.
pub struct Builder {
    upstream: Arc<Upstream>,
    cache: DiskCache,
    piece_length: u64,
    max_blob_bytes: u64,
    flights: Mutex<HashMap<Digest, Flight>>,
    metrics: Arc<BridgeMetrics>,
}

impl Builder {
    /// A builder streaming from `upstream` into `cache`.
    pub fn new(
        upstream: Arc<Upstream>,
        cache: DiskCache,
        piece_length: u64,
        max_blob_bytes: u64,
        metrics: Arc<BridgeMetrics>,
    ) -> Self {
        Self {
            upstream,
            cache,
            piece_length,
            max_blob_bytes,
            flights: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The cache, for its size.
    pub fn cache(&self) -> &DiskCache {
        &self.cache
    }

    /// Builds in progress.
    pub fn flights(&self) -> usize {
        self.flights.lock().len()
    }

    /// The torrent `info` of `blob`: from the cache, or built by streaming
    /// the blob with `credentials` (joining a build already under way).
    pub async fn info(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
    ) -> Result<Built, BuildError> {
        match self.cache.get(&blob.digest, self.piece_length) {
            Ok(Some((info, info_hash))) => {
                self.metrics.cache_hit.increment(1);
                return Ok(Built {
                    info: Arc::new(info),
                    info_hash,
                    source: Source::Cache,
                });
            }
            Ok(None) => {}
            Err(corrupt) => {
                self.metrics.cache_corrupt.increment(1);
                tracing::warn!("{corrupt}");
            }
        }
        self.metrics.cache_miss.increment(1);
        let flight = self.flights.lock().entry(blob.digest).or_default().clone();
        let result = flight
            .get_or_init(|| self.build(blob, credentials))
            .await
            .clone();
        // The first to finish retires the flight; later requests read the cache.
        let mut flights = self.flights.lock();
        if flights
            .get(&blob.digest)
            .is_some_and(|current| Arc::ptr_eq(current, &flight))
        {
            flights.remove(&blob.digest);
        }
        result.map(|(info, info_hash)| Built {
            info,
            info_hash,
            source: Source::Built,
        })
    }

    /// Only the infohash of `blob`'s torrent (what a web seed read checks its
    /// token against): from the cache's index when this process knows it,
    /// with no file read, else as [`Builder::info`] finds it.
    pub async fn info_hash(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
    ) -> Result<InfoHash, BuildError> {
        if let Some(known) = self.cache.info_hash(&blob.digest, self.piece_length) {
            return Ok(known);
        }
        Ok(self.info(blob, credentials).await?.info_hash)
    }

    async fn build(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
    ) -> Result<(Arc<Info>, InfoHash), BuildError> {
        let started = Instant::now();
        let result = self.stream_and_hash(blob, credentials).await.map(|info| {
            let info_hash = info.info_hash();
            (Arc::new(info), info_hash)
        });
        let outcome = match &result {
            Ok((info, info_hash)) => {
                self.metrics
                    .build_seconds
                    .record(started.elapsed().as_secs_f64());
                self.metrics.build_bytes.increment(info.length);
                if let Err(error) = self.cache.put(&blob.digest, info, *info_hash) {
                    tracing::warn!("torrent built but not cached: {error}");
                }
                tracing::info!(
                    blob = %blob.path(), bytes = info.length, infohash = %info_hash,
                    seconds = started.elapsed().as_secs_f64(), "torrent built"
                );
                "ok"
            }
            Err(error) => {
                tracing::warn!(blob = %blob.path(), "torrent not built: {error}");
                error.label()
            }
        };
        self.metrics.build(outcome);
        result
    }

    async fn stream_and_hash(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
    ) -> Result<Info, BuildError> {
        let limit = self.max_blob_bytes;
        let mut response = self.upstream.open(blob, credentials, None).await?;
        if response
            .content_length()
            .is_some_and(|length| length > limit)
        {
            return Err(BuildError::TooLarge { limit });
        }
        let mut pieces =
            PieceHasher::new(self.piece_length).map_err(|e| BuildError::Interrupted {
                bytes: 0,
                message: e.to_string(),
            })?;
        let mut whole = digest::Context::new(&digest::SHA256);
        loop {
            let chunk = response
                .chunk()
                .await
                .map_err(|e| BuildError::Interrupted {
                    bytes: pieces.length(),
                    message: e.to_string(),
                })?;
            let Some(chunk) = chunk else { break };
            if pieces.length() + chunk.len() as u64 > limit {
                return Err(BuildError::TooLarge { limit });
            }
            pieces.update(&chunk);
            whole.update(&chunk);
        }
        let actual = whole.finish();
        if actual.as_ref() != blob.digest.0 {
            return Err(BuildError::DigestMismatch {
                expected: blob.digest,
                actual: hex::encode(actual.as_ref()),
                bytes: pieces.length(),
            });
        }
        pieces
            .finish(&blob.digest.file_name())
            .map_err(|e| BuildError::Interrupted {
                bytes: 0,
                message: e.to_string(),
            })
    }
}
