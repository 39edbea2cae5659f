//! The agent's routes: the OCI Distribution pull API on the mirror listener
//! (`/v2/`, manifests, blobs), health, readiness and metrics on the
//! operators' one. Thin: each handler parses, asks the registry, and hands
//! blobs to the cache or a pull. Every error is an OCI error document.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::StreamExt as _;

use super::pull::{self, Progress};
use super::{AgentState, Registry, Source};
use crate::bridge::http::oci_error;
use crate::bridge::reference::{BlobRef, ManifestRef, ManifestTag, ReferenceError};
use crate::bridge::upstream::UpstreamError;

type Shared = Arc<AgentState>;

/// Largest manifest read (registries refuse larger ones: 4 MiB).
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The mirror's routes.
pub(super) fn mirror_app(state: Shared) -> Router {
    Router::new()
        .route("/v2/", get(ping))
        .route("/v2", get(ping))
        .route("/v2/{*path}", get(v2))
        .fallback(|| async {
            oci_error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "this is a pull-through mirror: only GET and HEAD under /v2/",
            )
        })
        .with_state(state)
}

/// The operators' routes.
pub(super) fn admin_app(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn reference_error(error: &ReferenceError) -> Response {
    oci_error(StatusCode::BAD_REQUEST, error.oci_code(), error)
}

/// The registry's refusal, passed through with its challenge; an
/// unreachable registry is a 502 or 504 (nothing is served unauthorised).
fn upstream_reply(failure: &UpstreamError, unknown: &'static str) -> Response {
    match failure {
        UpstreamError::Refused { status, challenge } => {
            let code = match status.as_u16() {
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 => unknown,
                _ => "UNSUPPORTED",
            };
            let mut response = oci_error(*status, code, format!("the registry answered {status}"));
            if let Some(challenge) = challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            response
        }
        UpstreamError::Timeout(_) => oci_error(StatusCode::GATEWAY_TIMEOUT, "UNAVAILABLE", failure),
        UpstreamError::Status(_) | UpstreamError::Unreachable(_) => {
            oci_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", failure)
        }
    }
}

/// containerd's `?ns=<registry host>`.
fn namespace(query: Option<&str>) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let value = pair.strip_prefix("ns=")?;
        percent_encoding::percent_decode_str(value)
            .decode_utf8()
            .ok()
            .map(|v| v.into_owned())
    })
}

/// The registry a request is for, or the 404 for a registry not mirrored.
fn route<'a>(
    state: &'a AgentState,
    query: Option<&str>,
) -> Result<&'a Arc<Registry>, Box<Response>> {
    let ns = namespace(query);
    state.registry(ns.as_deref()).ok_or_else(|| {
        Box::new(oci_error(
            StatusCode::NOT_FOUND,
            "NAME_UNKNOWN",
            format!(
                "registry {:?} is not mirrored by this agent: add it to agent.registries",
                ns.unwrap_or_default()
            ),
        ))
    })
}

/// `GET /v2/`: the registry's own answer for these credentials, so clients
/// that ping first (skopeo) learn its challenge.
async fn ping(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let registry = match route(&state, query.as_deref()) {
        Ok(registry) => registry,
        Err(response) => return *response,
    };
    let caller = registry.caller(headers.get(header::AUTHORIZATION));
    if matches!(caller, pull::Caller::Own) {
        state.metrics.request("ping", "ok");
        return distribution_ok();
    }
    match registry.upstream.ping(caller.credentials()).await {
        Ok(()) => {
            state.metrics.request("ping", "ok");
            distribution_ok()
        }
        Err(failure) => {
            state.metrics.request("ping", failure.label());
            upstream_reply(&failure, "UNSUPPORTED")
        }
    }
}

fn distribution_ok() -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (
                header::HeaderName::from_static("docker-distribution-api-version"),
                "registry/2.0",
            ),
        ],
        "{}",
    )
        .into_response()
}

/// `GET`/`HEAD /v2/<name>/manifests/<reference>` and `/v2/<name>/blobs/<digest>`.
async fn v2(
    State(state): State<Shared>,
    method: Method,
    Path(path): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let registry = match route(&state, query.as_deref()) {
        Ok(registry) => registry.clone(),
        Err(response) => return *response,
    };
    let is_blob = match (path.rfind("/blobs/"), path.rfind("/manifests/")) {
        (Some(blob), Some(manifest)) => blob > manifest,
        (Some(_), None) => true,
        (None, Some(_)) => false,
        (None, None) => {
            return oci_error(
                StatusCode::NOT_FOUND,
                "UNSUPPORTED",
                "expected /v2/NAME/manifests/REFERENCE or /v2/NAME/blobs/DIGEST",
            );
        }
    };
    if is_blob {
        blob(&state, &registry, method, &path, &headers).await
    } else {
        manifest(&state, &registry, method, &path, &headers).await
    }
}

async fn manifest(
    state: &AgentState,
    registry: &Registry,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let manifest = match ManifestRef::parse(path) {
        Ok(manifest) => manifest,
        Err(bad) => {
            state.metrics.request("manifest", "bad_request");
            return reference_error(&bad);
        }
    };
    let caller = registry.caller(headers.get(header::AUTHORIZATION));
    let accept: Vec<_> = headers
        .get_all(header::ACCEPT)
        .iter()
        .map(|value| (header::ACCEPT, value.clone()))
        .collect();
    let upstream_method = if method == Method::HEAD {
        reqwest::Method::HEAD
    } else {
        reqwest::Method::GET
    };
    let response = match registry
        .upstream
        .forward(
            upstream_method,
            &manifest.name,
            &manifest.rest(),
            caller.credentials(),
            &accept,
        )
        .await
    {
        Ok(response) => response,
        Err(failure) => {
            state.metrics.request("manifest", failure.label());
            return upstream_reply(&failure, "MANIFEST_UNKNOWN");
        }
    };
    let status = response.status();
    let mut reply = Response::builder().status(status.as_u16());
    for name in [
        header::CONTENT_TYPE,
        header::WWW_AUTHENTICATE,
        header::ETAG,
        header::HeaderName::from_static("docker-content-digest"),
    ] {
        if let Some(value) = response.headers().get(&name) {
            reply = reply.header(name, value.clone());
        }
    }
    if method == Method::HEAD {
        if let Some(length) = response.headers().get(header::CONTENT_LENGTH) {
            reply = reply.header(header::CONTENT_LENGTH, length.clone());
        }
        state
            .metrics
            .request("manifest", status_label(status.as_u16()));
        return reply.body(Body::empty()).unwrap_or_default();
    }
    let body = match read_bounded(response, MAX_MANIFEST_BYTES).await {
        Ok(body) => body,
        Err(reason) => {
            state.metrics.request("manifest", "upstream_error");
            return oci_error(StatusCode::BAD_GATEWAY, "UNAVAILABLE", reason);
        }
    };
    // By digest: the bytes must be what was asked for, whoever served them.
    if status.is_success()
        && let ManifestTag::Digest(digest) = &manifest.reference
    {
        let actual = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
        if actual.as_ref() != digest.0 {
            state.metrics.request("manifest", "digest_mismatch");
            return oci_error(
                StatusCode::BAD_GATEWAY,
                "MANIFEST_INVALID",
                format!("the registry's manifest does not hash to {digest}"),
            );
        }
    }
    state
        .metrics
        .request("manifest", status_label(status.as_u16()));
    reply.body(Body::from(body)).unwrap_or_default()
}

fn status_label(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        401 => "401",
        403 => "403",
        404 => "404",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

async fn read_bounded(response: reqwest::Response, limit: usize) -> Result<bytes::Bytes, String> {
    let mut body = response.bytes_stream();
    let mut out = bytes::BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the registry's answer broke off: {e}"))?;
        if out.len() + chunk.len() > limit {
            return Err(format!("the registry's answer is over {limit} bytes"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

async fn blob(
    state: &Shared,
    registry: &Arc<Registry>,
    method: Method,
    path: &str,
    headers: &HeaderMap,
) -> Response {
    let blob = match BlobRef::parse(path) {
        Ok(blob) => blob,
        Err(bad) => {
            state.metrics.request("blob", "bad_request");
            return reference_error(&bad);
        }
    };
    let caller = registry.caller(headers.get(header::AUTHORIZATION));
    // The registry's yes, for this caller, now: before any byte from the
    // cache or from peers.
    let size = match registry
        .upstream
        .authorize(&blob, caller.credentials())
        .await
    {
        Ok(size) => size,
        Err(failure) => {
            state.metrics.request("blob", failure.label());
            return upstream_reply(&failure, "BLOB_UNKNOWN");
        }
    };
    let range = match pull::parse_range(headers.get(header::RANGE)) {
        Ok(range) => range,
        Err(bad) => {
            state.metrics.request("blob", "bad_range");
            return oci_error(StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UNKNOWN", bad);
        }
    };
    let Some(size) = size else {
        // The registry redirects to storage and gave no size: proxy.
        return passthrough(state, registry, &blob, &caller, headers, range).await;
    };
    let (start, end) = match range {
        None => (0, size),
        Some((start, last)) if start < size => (start, last.map_or(size, |l| (l + 1).min(size))),
        Some(_) => {
            state.metrics.request("blob", "bad_range");
            let mut response = oci_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "BLOB_UNKNOWN",
                format!("the blob has {size} bytes"),
            );
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{size}")) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return response;
        }
    };
    let head = blob_head(&blob, size, range.map(|_| (start, end)));
    if method == Method::HEAD {
        state.metrics.request("blob", "ok");
        return head.body(Body::empty()).unwrap_or_default();
    }
    let path = state.cache.data_path(&blob.digest);
    // A pull waits up to peer_deadline on peers, then up to
    // upstream_timeout on the origin: a reader waits as long.
    let stall = state.settings.peer_deadline + state.settings.upstream_timeout;
    if state.cache.get(&blob.digest).is_some()
        && let Ok(file) = tokio::fs::File::open(&path).await
    {
        state.metrics.request("blob", "cache");
        let (_done, verified) = tokio::sync::watch::channel(Progress::Verified);
        let body = pull::body(path, size, start, end, verified, stall, Some(file));
        return head.body(body).unwrap_or_default();
    }
    if size < state.settings.p2p_min_bytes {
        return passthrough(state, registry, &blob, &caller, headers, range).await;
    }
    match pull::join_or_start(state, registry, &blob, caller.clone(), size).await {
        Some(pull) => {
            state.metrics.request("blob", "pull");
            let body = pull::body(path, size, start, end, pull.watch(), stall, None);
            head.body(body).unwrap_or_default()
        }
        None => passthrough(state, registry, &blob, &caller, headers, range).await,
    }
}

fn blob_head(
    blob: &BlobRef,
    size: u64,
    range: Option<(u64, u64)>,
) -> axum::http::response::Builder {
    let builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("docker-content-digest", blob.digest.to_string());
    match range {
        None => builder
            .status(StatusCode::OK)
            .header(header::CONTENT_LENGTH, size),
        Some((start, end)) => builder
            .status(StatusCode::PARTIAL_CONTENT)
            .header(header::CONTENT_LENGTH, end - start)
            .header(
                header::CONTENT_RANGE,
                format!("bytes {start}-{}/{size}", end.saturating_sub(1)),
            ),
    }
}

/// The blob straight from the registry, uncached; checked against its
/// digest when it is sent whole (a mismatch aborts the response).
async fn passthrough(
    state: &Shared,
    registry: &Registry,
    blob: &BlobRef,
    caller: &pull::Caller,
    headers: &HeaderMap,
    range: Option<(u64, Option<u64>)>,
) -> Response {
    let response = match registry
        .upstream
        .open(blob, caller.credentials(), headers.get(header::RANGE))
        .await
    {
        Ok(response) => response,
        Err(failure) => {
            state.metrics.request("blob", failure.label());
            return upstream_reply(&failure, "BLOB_UNKNOWN");
        }
    };
    state.metrics.request("blob", "passthrough");
    let mut reply = Response::builder()
        .status(response.status().as_u16())
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", blob.digest.to_string());
    for name in [
        header::CONTENT_LENGTH,
        header::CONTENT_RANGE,
        header::ACCEPT_RANGES,
    ] {
        if let Some(value) = response.headers().get(&name) {
            reply = reply.header(name, value.clone());
        }
    }
    let whole = range.is_none() && response.status() == reqwest::StatusCode::OK;
    let checked = Checked {
        upstream: Box::pin(response.bytes_stream()),
        hash: whole.then(|| aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256)),
        held: None,
        expected: blob.digest,
        state: state.clone(),
        done: false,
    };
    let stream = futures_util::stream::unfold(checked, |mut checked| async move {
        let item = checked.next().await?;
        Some((item, checked))
    });
    let stream = Body::from_stream(stream);
    reply.body(stream).unwrap_or_default()
}

/// A registry body passed on one chunk late, so the last chunk goes out
/// only after the whole blob hashed to its digest.
struct Checked {
    upstream:
        std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    hash: Option<aws_lc_rs::digest::Context>,
    held: Option<bytes::Bytes>,
    expected: crate::bridge::reference::Digest,
    state: Shared,
    done: bool,
}

impl Checked {
    async fn next(&mut self) -> Option<Result<bytes::Bytes, std::io::Error>> {
        if self.done {
            return None;
        }
        loop {
            match self.upstream.next().await {
                Some(Ok(chunk)) => {
                    self.state
                        .metrics
                        .bytes(Source::Registry, chunk.len() as u64);
                    if let Some(hash) = self.hash.as_mut() {
                        hash.update(&chunk);
                    }
                    if let Some(previous) = self.held.replace(chunk) {
                        return Some(Ok(previous));
                    }
                }
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(error)));
                }
                None => {
                    self.done = true;
                    if let Some(hash) = self.hash.take()
                        && hash.finish().as_ref() != self.expected.0
                    {
                        tracing::error!(blob = %self.expected,
                            "agent: the registry's blob does not hash to its digest; response aborted");
                        self.state.metrics.pull("digest_mismatch");
                        return Some(Err(std::io::Error::other("digest mismatch")));
                    }
                    return self.held.take().map(Ok);
                }
            }
        }
    }
}

/// Ready when the engine listens for peers and every registry answers.
async fn ready(State(state): State<Shared>) -> Response {
    if state.engine.listen_addr().is_none() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no BitTorrent listener\n",
        )
            .into_response();
    }
    for registry in &state.registries {
        if let Err(failure) = registry.upstream.reachable().await {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: registry {}: {failure}\n", registry.name),
            )
                .into_response();
        }
    }
    (StatusCode::OK, "ready\n").into_response()
}

async fn metrics(State(state): State<Shared>) -> Response {
    let size = state.cache.size();
    let body = state.metrics.registry.scrape(&[
        ("swarmgate_agent_cache_blobs", size.blobs as f64),
        ("swarmgate_agent_cache_bytes", size.bytes as f64),
        ("swarmgate_agent_pulls_in_flight", state.pulls.len() as f64),
        ("swarmgate_agent_torrents", state.engine.torrents() as f64),
        ("swarmgate_agent_seeding", state.engine.seeding() as f64),
        (
            "swarmgate_agent_uploaded_bytes",
            state.engine.uploaded_bytes() as f64,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}
