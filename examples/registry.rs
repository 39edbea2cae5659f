//! A small container registry, as swarmgate sees one: it stores blobs by
//! digest, publishes its signing keys as a JWKS, hands out a signed torrent
//! for any blob, and rotates its signing key on request.
//!
//! ```sh
//! cargo run --example registry -- --listen 127.0.0.1:5000 --tracker http://127.0.0.1:6969/announce
//! SWARMGATE_AUTH__JWKS_URL=http://127.0.0.1:5000/keys/services/quay/keys SWARMGATE_AUTH__KEYS_DIR= \
//!   SWARMGATE_AUTH__ISSUER=example-registry cargo run -- serve
//! curl -X PUT --data-binary @layer.tar http://127.0.0.1:5000/v2/ns/repo/blobs/sha256:<hex of layer.tar>
//! curl -o layer.torrent http://127.0.0.1:5000/c1/torrent/ns/repo/blobs/sha256:<hex>
//! curl -X POST http://127.0.0.1:5000/admin/rotate-key
//! curl -X POST http://127.0.0.1:5000/admin/retire-keys   # end the overlap now
//! ```
//!
//! Routes (Quay's paths where Quay has one):
//! - `PUT /v2/<name>/blobs/sha256:<hex>`: store a blob; the body must hash to the digest.
//! - `GET`/`HEAD /v2/<name>/blobs/<digest>`: the blob, with single byte ranges
//!   (BEP 19 web seeds fetch pieces by range).
//! - `GET /keys/services/<service>/keys`: the JWKS: the signing key, plus
//!   retired keys until their overlap window ends.
//! - `GET /c1/torrent/<ns>/<repo>/blobs/<digest>`: a private v1 torrent whose
//!   announce URLs carry a token for its infohash, signed by the current key,
//!   with the blob's URL as web seed.
//! - `POST /admin/rotate-key`: a new signing key; the old one stays published
//!   for `--overlap`.
//! - `POST /admin/retire-keys`: ends every overlap now: only the signing key
//!   stays published (an operator's explicit step, and a test's, instead of
//!   waiting out a clock).
//!
//! Blobs live in memory and nothing is authenticated: it is a model of the
//! registry side for tests and demos, not a registry. Keep it on loopback or
//! a private network.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey};
use parking_lot::Mutex;
use swarmgate::gateway::mint::{self, KeyAlg, TokenSpec};
use swarmgate::torrent::{self, Info, MetaInfo};

/// The largest blob accepted (blobs are held in memory).
const MAX_BLOB_BYTES: usize = 1 << 30;

/// How the registry is set up.
#[derive(Debug, Clone, Parser)]
#[command(about = "A small container registry that signs layer torrents for swarmgate")]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// This registry's URL as agents reach it (for web seeds); default http://LISTEN.
    #[arg(long)]
    pub public_url: Option<String>,
    /// A tracker announce URL to put in torrents; repeatable (first = announce).
    #[arg(long = "tracker", required = true)]
    pub trackers: Vec<String>,
    /// The `iss` claim; swarmgate's auth.issuer must match.
    #[arg(long, default_value = "example-registry")]
    pub issuer: String,
    /// The `aud` claim, if any.
    #[arg(long)]
    pub audience: Option<String>,
    /// The service name in the JWKS path (`quay` is Quay's).
    #[arg(long, default_value = "quay")]
    pub service: String,
    /// Signing algorithm: es256 or eddsa (tokens fit UDP), rs256 (Quay's; HTTP only).
    #[arg(long, default_value = "es256", value_parser = parse_alg)]
    pub alg: KeyAlg,
    /// How long a retired key stays published after a rotation. Make it at
    /// least the longest token or torrent lifetime in use.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub overlap: Duration,
    /// Token lifetime (`exp`); none by default, as with Quay.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub token_ttl: Option<Duration>,
    /// Torrent piece length.
    #[arg(long, default_value = "512KiB", value_parser = parse_piece_length)]
    pub piece_length: u64,
}

fn parse_alg(text: &str) -> Result<KeyAlg, String> {
    match text.to_ascii_lowercase().as_str() {
        "es256" => Ok(KeyAlg::Es256),
        "eddsa" => Ok(KeyAlg::EdDsa),
        "rs256" => Ok(KeyAlg::Rs256),
        _ => Err("one of es256, eddsa, rs256".into()),
    }
}

fn parse_piece_length(text: &str) -> Result<u64, String> {
    torrent::parse_piece_length(text).map_err(|e| e.to_string())
}

/// A key the registry signs with, or signed with until a rotation.
struct SigningKey {
    kid: String,
    key: EncodingKey,
    alg: Algorithm,
    public: Jwk,
}

/// The signing key and the retired keys still published.
struct KeyRing {
    /// Keys minted so far, for naming the next one.
    generation: u32,
    current: SigningKey,
    /// Retired public keys and when they stop being published.
    retired: Vec<(Jwk, Instant)>,
}

impl KeyRing {
    /// The keys published at `now`.
    fn published(&self, now: Instant) -> JwkSet {
        let mut keys = vec![self.current.public.clone()];
        keys.extend(
            self.retired
                .iter()
                .filter(|(_, until)| *until > now)
                .map(|(jwk, _)| jwk.clone()),
        );
        JwkSet { keys }
    }
}

/// What one blob is stored as.
struct Blob {
    data: Bytes,
    /// Hashed once, on first request for a torrent.
    info: Option<Info>,
}

/// The registry's state, shared by its handlers.
pub struct Registry {
    settings: Settings,
    public_url: String,
    keys: Mutex<KeyRing>,
    /// `(repository name, digest)` → blob.
    blobs: Mutex<HashMap<(String, String), Blob>>,
}

impl Registry {
    /// A registry with a fresh signing key.
    pub fn new(settings: Settings) -> Result<Arc<Self>, String> {
        let current = new_key(settings.alg, 1)?;
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", settings.listen));
        Ok(Arc::new(Self {
            public_url: public_url.trim_end_matches('/').to_owned(),
            settings,
            keys: Mutex::new(KeyRing {
                generation: 1,
                current,
                retired: Vec::new(),
            }),
            blobs: Mutex::new(HashMap::new()),
        }))
    }

    /// The JWKS URL swarmgate should fetch.
    pub fn jwks_url(&self) -> String {
        format!(
            "{}/keys/services/{}/keys",
            self.public_url, self.settings.service
        )
    }

    /// The kid tokens are signed with now.
    pub fn current_kid(&self) -> String {
        self.keys.lock().current.kid.clone()
    }

    /// Starts signing with a new key; the old one stays published for the overlap.
    /// Returns (new kid, retired kid).
    pub fn rotate(&self) -> Result<(String, String), String> {
        let mut ring = self.keys.lock();
        let generation = ring.generation + 1;
        let next = new_key(self.settings.alg, generation)?;
        let old = std::mem::replace(&mut ring.current, next);
        ring.generation = generation;
        let now = Instant::now();
        ring.retired.retain(|(_, until)| *until > now);
        ring.retired.push((old.public, now + self.settings.overlap));
        Ok((ring.current.kid.clone(), old.kid))
    }

    /// Unpublishes every retired key at once; returns how many.
    pub fn retire_keys(&self) -> usize {
        let mut ring = self.keys.lock();
        std::mem::take(&mut ring.retired).len()
    }

    /// The routes.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/v2/", get(|| async { "{}" }))
            .route("/v2/{*path}", get(get_blob).head(get_blob).put(put_blob))
            .route("/keys/services/{service}/keys", get(jwks))
            .route("/c1/torrent/{*path}", get(get_torrent))
            .route("/admin/rotate-key", post(rotate_key))
            .route("/admin/retire-keys", post(retire_keys))
            // Layers are large; axum's default body limit is 2 MB.
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BLOB_BYTES))
            .with_state(self)
    }
}

fn new_key(alg: KeyAlg, generation: u32) -> Result<SigningKey, String> {
    // Short kids keep tokens short enough for UDP (BEP 41 carries at most 255 bytes).
    let kid = format!("reg-{generation}");
    let generated = mint::generate(alg, &kid).map_err(|e| e.to_string())?;
    let (key, alg) =
        mint::signing_key(generated.private_pem.as_bytes(), None).map_err(|e| e.to_string())?;
    Ok(SigningKey {
        kid,
        key,
        alg,
        public: generated.public_jwk,
    })
}

/// Splits `<name>/blobs/<digest>`, checking both parts' form; the error is
/// the 400 response's text.
fn blob_path(path: &str) -> Result<(String, String), &'static str> {
    let (name, digest) = path
        .rsplit_once("/blobs/")
        .ok_or("expected <name>/blobs/<digest>")?;
    let valid_name = !name.is_empty()
        && name.split('/').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !valid_name {
        return Err("repository names are lowercase letters, digits, . _ - and /");
    }
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or("digests are sha256:<64 hex digits>")?;
    Ok((
        name.to_owned(),
        format!("sha256:{}", hex.to_ascii_lowercase()),
    ))
}

async fn put_blob(
    State(registry): State<Arc<Registry>>,
    Path(path): Path<String>,
    body: Bytes,
) -> Response {
    let (name, digest) = match blob_path(&path) {
        Ok(parts) => parts,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let actual = hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body));
    if digest != format!("sha256:{actual}") {
        return (
            StatusCode::BAD_REQUEST,
            format!("DIGEST_INVALID: the body hashes to sha256:{actual}"),
        )
            .into_response();
    }
    registry.blobs.lock().insert(
        (name, digest.clone()),
        Blob {
            data: body,
            info: None,
        },
    );
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(&digest) {
        response
            .headers_mut()
            .insert("Docker-Content-Digest", value);
    }
    response
}

async fn get_blob(
    State(registry): State<Arc<Registry>>,
    method: Method,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let key = match blob_path(&path) {
        Ok(key) => key,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let Some(data) = registry
        .blobs
        .lock()
        .get(&key)
        .map(|blob| blob.data.clone())
    else {
        return (StatusCode::NOT_FOUND, "BLOB_UNKNOWN").into_response();
    };
    let total = data.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|value| value.to_str().ok())
        .map(|value| byte_range(value, total));
    let (status, body, content_range) = match range {
        None => (StatusCode::OK, data, None),
        Some(Some((start, end))) => (
            StatusCode::PARTIAL_CONTENT,
            data.slice(start as usize..=end as usize),
            Some(format!("bytes {start}-{end}/{total}")),
        ),
        Some(None) => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{total}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let mut response = if method == Method::HEAD {
        let mut response = status.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        response
    } else {
        (status, body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(value) = content_range.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::CONTENT_RANGE, value);
    }
    response
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range within `total`, inclusive;
/// `None` when it cannot be satisfied (several ranges are not supported).
fn byte_range(value: &str, total: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.trim();
    if spec.contains(',') || total == 0 {
        return None;
    }
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let n: u64 = suffix.parse().ok()?;
            (total.checked_sub(n.min(total))?, total - 1)
        }
        (start, "") => (start.parse().ok()?, total - 1),
        (start, end) => (start.parse().ok()?, end.parse::<u64>().ok()?.min(total - 1)),
    };
    (start <= end && start < total).then_some((start, end))
}

async fn jwks(State(registry): State<Arc<Registry>>, Path(service): Path<String>) -> Response {
    if service != registry.settings.service {
        return (StatusCode::NOT_FOUND, "no such service").into_response();
    }
    let set = registry.keys.lock().published(Instant::now());
    axum::Json(set).into_response()
}

async fn get_torrent(State(registry): State<Arc<Registry>>, Path(path): Path<String>) -> Response {
    let (name, digest) = match blob_path(&path) {
        Ok(key) => key,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    // Quay's torrent path is /c1/torrent/<namespace>/<repository>/blobs/<digest>.
    let key = (name.clone(), digest.clone());
    let (data, cached) = match registry.blobs.lock().get(&key) {
        Some(blob) => (blob.data.clone(), blob.info.clone()),
        None => return (StatusCode::NOT_FOUND, "BLOB_UNKNOWN").into_response(),
    };
    let info = match cached {
        Some(info) => info,
        None => {
            // Hashing a layer takes a while: off the async workers, outside the lock.
            let file_name = digest.replace(':', "-");
            let piece_length = registry.settings.piece_length;
            let hashed = tokio::task::spawn_blocking(move || {
                Info::from_reader(&file_name, piece_length, &data[..]).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|join| Err(join.to_string()));
            match hashed {
                Ok(info) => {
                    if let Some(blob) = registry.blobs.lock().get_mut(&key) {
                        blob.info = Some(info.clone());
                    }
                    info
                }
                Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
            }
        }
    };
    let now = swarmgate::gateway::layer::unix_now();
    let token = {
        let ring = registry.keys.lock();
        let spec = TokenSpec {
            kid: ring.current.kid.clone(),
            issuer: registry.settings.issuer.clone(),
            audience: registry.settings.audience.clone(),
            info_hash: info.info_hash(),
            ttl: registry.settings.token_ttl,
        };
        mint::mint(&ring.current.key, ring.current.alg, &spec, now)
    };
    let token = match token {
        Ok(token) => token,
        Err(error) => {
            return (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response();
        }
    };
    let webseed = format!("{}/v2/{name}/blobs/{digest}", registry.public_url);
    let meta = MetaInfo::new(
        info,
        &registry.settings.trackers,
        Some(&token),
        vec![webseed],
        now as i64,
    );
    (
        [(header::CONTENT_TYPE, "application/x-bittorrent")],
        meta.to_bytes(),
    )
        .into_response()
}

async fn rotate_key(State(registry): State<Arc<Registry>>) -> Response {
    match registry.rotate() {
        Ok((kid, retired)) => axum::Json(serde_json::json!({
            "kid": kid,
            "retired": retired,
            "retired_published_for_seconds": registry.settings.overlap.as_secs(),
        }))
        .into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, error).into_response(),
    }
}

async fn retire_keys(State(registry): State<Arc<Registry>>) -> Response {
    axum::Json(serde_json::json!({ "retired": registry.retire_keys() })).into_response()
}

/// Serves `registry` on `listener` until the task is dropped.
pub async fn serve(registry: Arc<Registry>, listener: tokio::net::TcpListener) {
    if let Err(error) = axum::serve(listener, registry.router()).await {
        eprintln!("registry: {error}");
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let settings = Settings::parse();
    let listener = match tokio::net::TcpListener::bind(settings.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("registry: cannot listen on {}: {error}", settings.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let registry = match Registry::new(settings) {
        Ok(registry) => registry,
        Err(error) => {
            eprintln!("registry: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!(
        "registry listening on {}; JWKS at {}; signing with kid {}",
        registry.public_url,
        registry.jwks_url(),
        registry.current_kid()
    );
    serve(registry, listener).await;
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_ranges() {
        assert_eq!(byte_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(byte_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(byte_range("bytes=95-200", 100), Some((95, 99)));
        for bad in [
            "bytes=100-",
            "bytes=5-1",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=x-1",
        ] {
            assert_eq!(byte_range(bad, 100), None, "{bad}");
        }
        assert_eq!(byte_range("bytes=0-0", 0), None);
    }

    #[test]
    fn blob_paths() {
        let hex = "ab".repeat(32);
        assert_eq!(
            blob_path(&format!("ns/repo/blobs/sha256:{hex}")).ok(),
            Some(("ns/repo".into(), format!("sha256:{hex}")))
        );
        for bad in [
            format!("NS/blobs/sha256:{hex}"),
            format!("ns//r/blobs/sha256:{hex}"),
            "ns/blobs/sha256:abc".to_owned(),
            format!("ns/blobs/md5:{hex}"),
            "ns/repo".to_owned(),
        ] {
            assert!(blob_path(&bad).is_err(), "{bad}");
        }
    }
}
