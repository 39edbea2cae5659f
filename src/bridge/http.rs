//! The bridge's routes: torrents, the web seed and the JWKS on the public
//! listener; health, readiness, metrics and rotation on the operators' one.
//! Thin: each handler parses, asks the registry or the builder, and answers.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::TryStreamExt;
use serde::Deserialize;

use super::BridgeState;
use super::build::{BuildError, Built, Source};
use super::reference::{BlobRef, ReferenceError};
use super::upstream::{Credentials, UpstreamError};
use crate::gateway::layer::unix_now;
use crate::torrent::MetaInfo;

type Shared = Arc<BridgeState>;

/// The public routes.
pub(super) fn public_app(state: Shared) -> Router {
    Router::new()
        .route("/c1/torrent/{*blob}", get(torrent))
        .route("/seed/{*blob}", get(seed))
        .route("/keys/services/{service}/keys", get(jwks))
        .with_state(state)
}

/// The operators' routes.
pub(super) fn admin_app(state: Shared) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/rotate", post(rotate))
        .with_state(state)
}

/// The Distribution API's error document, `application/json`: what OCI
/// clients parse, and what an operator reads in `message`.
pub(crate) fn oci_error(
    status: StatusCode,
    code: &'static str,
    message: impl std::fmt::Display,
) -> Response {
    let body = serde_json::json!({
        "errors": [{"code": code, "message": message.to_string(), "detail": null}]
    });
    (status, axum::Json(body)).into_response()
}

/// An error document whose code follows from the status.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    let code = match status.as_u16() {
        401 => "UNAUTHORIZED",
        403 => "DENIED",
        404 => "NOT_FOUND",
        413 => "SIZE_INVALID",
        429 => "TOOMANYREQUESTS",
        502..=504 => "UNAVAILABLE",
        400..=499 => "UNSUPPORTED",
        _ => "UNKNOWN",
    };
    oci_error(status, code, message)
}

/// A malformed name, digest or path: 400 with the matching code.
fn bad_reference(bad: &ReferenceError) -> Response {
    oci_error(StatusCode::BAD_REQUEST, bad.oci_code(), bad)
}

/// The registry's refusal, passed through: same status, same challenge, and
/// a body in the Distribution API's error format.
fn upstream_reply(state: &BridgeState, failure: &UpstreamError) -> Response {
    state.metrics.upstream_error(failure.label());
    match failure {
        UpstreamError::Refused { status, challenge } => {
            let code = match status.as_u16() {
                401 => "UNAUTHORIZED",
                403 => "DENIED",
                404 => "BLOB_UNKNOWN",
                _ => "UNSUPPORTED",
            };
            let mut response = oci_error(
                *status,
                code,
                format_args!("the registry answered {status}"),
            );
            if let Some(challenge) = challenge {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, challenge.clone());
            }
            response
        }
        UpstreamError::Timeout(_) => error(StatusCode::GATEWAY_TIMEOUT, failure),
        UpstreamError::Status(_) | UpstreamError::Unreachable(_) => {
            error(StatusCode::BAD_GATEWAY, failure)
        }
    }
}

fn build_reply(state: &BridgeState, failure: &BuildError) -> Response {
    match failure {
        BuildError::Upstream(upstream) => upstream_reply(state, upstream),
        BuildError::TooLarge { .. } => error(StatusCode::PAYLOAD_TOO_LARGE, failure),
        BuildError::DigestMismatch { .. } | BuildError::Interrupted { .. } => {
            error(StatusCode::BAD_GATEWAY, failure)
        }
    }
}

/// `GET /c1/torrent/<name>/blobs/<digest>`: the blob's torrent, for a
/// caller the registry authorises now.
async fn torrent(
    State(state): State<Shared>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (response, result) = torrent_reply(&state, &path, &headers).await;
    state.metrics.torrent(result);
    response
}

async fn torrent_reply(
    state: &BridgeState,
    path: &str,
    headers: &HeaderMap,
) -> (Response, &'static str) {
    let blob = match BlobRef::parse(path) {
        Ok(blob) => blob,
        Err(bad) => return (bad_reference(&bad), "bad_request"),
    };
    let credentials = Credentials::Caller(headers.get(header::AUTHORIZATION));
    // Every request asks the registry, cached torrent or not.
    match state.upstream.authorize(&blob, credentials).await {
        Ok(Some(size)) if size > state.max_blob_bytes => {
            let too_large = BuildError::TooLarge {
                limit: state.max_blob_bytes,
            };
            return (error(StatusCode::PAYLOAD_TOO_LARGE, too_large), "too_large");
        }
        Ok(_) => {}
        Err(refused @ UpstreamError::Refused { .. }) => {
            return (upstream_reply(state, &refused), "refused");
        }
        Err(failure) => return (upstream_reply(state, &failure), "upstream_error"),
    }
    let Built {
        info,
        info_hash,
        source,
    } = match state.builder.info(&blob, credentials).await {
        Ok(built) => built,
        Err(failure) => return (build_reply(state, &failure), failure.label()),
    };
    let now = unix_now();
    let token = match state.keys.sign(info_hash, now) {
        Ok(token) => token,
        Err(failure) => {
            tracing::error!("cannot sign a token: {failure}");
            return (error(StatusCode::INTERNAL_SERVER_ERROR, failure), "error");
        }
    };
    let web_seed = format!("{}/seed/{}?jwt={token}", state.public_url, blob.path());
    let meta = MetaInfo::new(
        (*info).clone(),
        &state.trackers,
        Some(&token),
        vec![web_seed],
        now as i64,
    );
    let cache = match source {
        Source::Cache => "hit",
        Source::Built => "miss",
    };
    let response = (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-bittorrent"),
            ),
            // Signed for this request: never to be shared by a proxy cache.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::HeaderName::from_static("x-swarmgate-infohash"),
                HeaderValue::from_str(&info_hash.to_hex()).unwrap_or(HeaderValue::from_static("")),
            ),
            (
                header::HeaderName::from_static("x-swarmgate-cache"),
                HeaderValue::from_static(cache),
            ),
        ],
        meta.to_bytes(),
    )
        .into_response();
    (response, "ok")
}

#[derive(Deserialize)]
struct SeedQuery {
    jwt: Option<String>,
}

/// `GET /seed/<name>/blobs/<digest>?jwt=`: the blob's bytes (one range at
/// most) for the holder of a token this bridge signed for its infohash.
async fn seed(
    State(state): State<Shared>,
    Path(path): Path<String>,
    Query(query): Query<SeedQuery>,
    headers: HeaderMap,
) -> Response {
    let (response, result) = seed_reply(&state, &path, query, &headers).await;
    state.metrics.seed(result);
    response
}

async fn seed_reply(
    state: &Shared,
    path: &str,
    query: SeedQuery,
    headers: &HeaderMap,
) -> (Response, &'static str) {
    let blob = match BlobRef::parse(path) {
        Ok(blob) => blob,
        Err(bad) => return (bad_reference(&bad), "bad_request"),
    };
    let Some(token) = query.jwt else {
        return (
            error(
                StatusCode::UNAUTHORIZED,
                "a web seed read needs ?jwt=<token from the torrent>",
            ),
            "refused",
        );
    };
    // The signature first, so no one without a token can make the bridge
    // read a blob.
    let approved = match state.keys.verify(&token, unix_now()) {
        Ok(info_hash) => info_hash,
        Err(refused) => return (error(StatusCode::UNAUTHORIZED, refused), "refused"),
    };
    let info_hash = match state.builder.info_hash(&blob, Credentials::Own).await {
        Ok(info_hash) => info_hash,
        Err(BuildError::Upstream(refused)) => return bridge_account_reply(state, &refused),
        Err(failure) => return (build_reply(state, &failure), failure.label()),
    };
    if info_hash != approved {
        return (
            error(
                StatusCode::FORBIDDEN,
                "the token approves another torrent than this blob's",
            ),
            "refused",
        );
    }
    let range = headers.get(header::RANGE);
    let upstream = match state.upstream.open(&blob, Credentials::Own, range).await {
        Ok(response) => response,
        Err(failure) => return bridge_account_reply(state, &failure),
    };
    let status = upstream.status();
    let mut reply = Response::builder().status(status);
    for name in [header::CONTENT_LENGTH, header::CONTENT_RANGE] {
        if let Some(value) = upstream.headers().get(&name) {
            reply = reply.header(name, value.clone());
        }
    }
    let counted = state.clone();
    let body = upstream
        .bytes_stream()
        .inspect_ok(move |chunk| counted.metrics.seed_bytes.increment(chunk.len() as u64));
    let response = reply
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .body(Body::from_stream(body))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e));
    (response, "ok")
}

/// A web seed read failed upstream. The bridge read with its own account,
/// so a 401 or 403 is its misconfiguration, not the client's: a 502 that
/// says so (and a log line), never the registry's challenge.
fn bridge_account_reply(state: &BridgeState, failure: &UpstreamError) -> (Response, &'static str) {
    match failure {
        UpstreamError::Refused { status, .. }
            if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN =>
        {
            state.metrics.upstream_error(failure.label());
            tracing::warn!(
                "the registry refused the bridge's own account ({status}) for a web seed read: \
                 check bridge.upstream_username and bridge.upstream_password"
            );
            (
                error(
                    StatusCode::BAD_GATEWAY,
                    "the registry refused the bridge's own account; the operator must fix \
                     bridge.upstream_username or bridge.upstream_password",
                ),
                "upstream_error",
            )
        }
        _ => (upstream_reply(state, failure), "upstream_error"),
    }
}

/// `GET /keys/services/<service>/keys`: the published public keys.
async fn jwks(State(state): State<Shared>, Path(service): Path<String>) -> Response {
    if service != state.service {
        return error(
            StatusCode::NOT_FOUND,
            format_args!(
                "no such service; the JWKS is at /keys/services/{}/keys",
                state.service
            ),
        );
    }
    (
        [(header::CACHE_CONTROL, "no-cache")],
        axum::Json(state.keys.jwks(unix_now())),
    )
        .into_response()
}

/// Ready when a key signs and the registry takes the bridge's own account
/// (what every web seed read uses): a refused account is said here, with
/// both settings named, not first at a client's web seed read.
async fn ready(State(state): State<Shared>) -> Response {
    if state.keys.signing_kid(unix_now()).is_none() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "not ready: no signing key");
    }
    match state.upstream.ping(Credentials::Own).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(UpstreamError::Refused { status, .. }) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format_args!(
                "not ready: the registry refuses the bridge's own account ({status}): \
                 check bridge.upstream_username and bridge.upstream_password"
            ),
        ),
        Err(failure) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            format_args!("not ready: {failure}"),
        ),
    }
}

async fn metrics(State(state): State<Shared>) -> Response {
    let size = state.builder.cache().size();
    let body = state.metrics.registry.scrape(&[
        ("swarmgate_bridge_cache_entries", size.entries as f64),
        ("swarmgate_bridge_cache_bytes", size.bytes as f64),
        (
            "swarmgate_bridge_builds_in_flight",
            state.builder.flights() as f64,
        ),
        (
            "swarmgate_bridge_published_keys",
            state.keys.jwks(unix_now()).keys.len() as f64,
        ),
    ]);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// `POST /admin/rotate`: starts a key rotation (as SIGHUP does).
async fn rotate(State(state): State<Shared>) -> Response {
    let rotated = state.keys.rotate(unix_now());
    state.record_rotation(&rotated);
    match rotated {
        Ok(key) => axum::Json(key).into_response(),
        Err(failure @ super::keys::KeyError::Pending { .. }) => {
            error(StatusCode::CONFLICT, failure)
        }
        Err(failure) => {
            tracing::error!("key rotation failed: {failure}");
            error(StatusCode::INTERNAL_SERVER_ERROR, failure)
        }
    }
}
