//! The HTTP frontend: `GET /announce` and `GET /scrape` (BEP 3, 7, 23, 48).
//!
//! Every reply is HTTP 200 with a bencoded body, failures included, because
//! BitTorrent clients only read the body of a 200.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ipnet::IpNet;
use tower::ServiceExt;

use super::{AnnounceLimits, client_ip};
use crate::bittorrent::{AnnounceRequest, InfoHash, PeerId, ScrapeRequest};
use crate::config::Config;
use crate::metrics::{self, Outcome, RequestMetrics};
use crate::protocol::query::{self, AnnounceQuery};
use crate::protocol::reply::{self, AnnounceReply, PeerFormat, ScrapeCounts};
use crate::tracker::{BoxedTracker, RequestKind, TrackerRequest, TrackerResponse};

/// The parts of the configuration the HTTP frontend reads per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Intervals and numwant/scrape limits.
    pub limits: AnnounceLimits,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Deadlines of each new connection.
    pub timeouts: super::http_listener::ConnectionTimeouts,
}

impl HttpSettings {
    /// Takes the HTTP frontend's settings from the configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            limits: AnnounceLimits::from_config(&config.announce),
            trusted_proxies: config.http.trusted_proxies.clone(),
            timeouts: super::http_listener::ConnectionTimeouts {
                header_read: config.http.header_read_timeout,
                idle: config.http.idle_timeout,
            },
        }
    }
}

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    service: BoxedTracker,
    settings: Arc<ArcSwap<HttpSettings>>,
    metrics: Arc<RequestMetrics>,
}

impl HttpState {
    /// State for [`app`]: the tracker service to call, the settings to apply
    /// (swappable by a reload), and where to count requests.
    pub fn new(
        service: BoxedTracker,
        settings: Arc<ArcSwap<HttpSettings>>,
        metrics: Arc<RequestMetrics>,
    ) -> Self {
        Self {
            service,
            settings,
            metrics,
        }
    }
}

/// The tracker's HTTP routes. Serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn app(state: HttpState) -> Router {
    Router::new()
        .route("/announce", get(announce))
        .route("/scrape", get(scrape))
        .with_state(state)
}

async fn announce(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let started = Instant::now();
    let query = uri.query().unwrap_or("").as_bytes();
    let settings = state.settings.load_full();
    let (body, outcome) = match build_announce(&settings, peer.ip(), &headers, query) {
        Ok((request, format)) => match state.service.clone().oneshot(request).await {
            Ok(TrackerResponse::Announce(response)) => (
                reply::announce(
                    &AnnounceReply {
                        interval: settings.limits.interval,
                        min_interval: settings.limits.min_interval,
                        complete: response.stats.complete,
                        incomplete: response.stats.incomplete,
                        format,
                    },
                    response
                        .peers
                        .iter()
                        .map(|peer| (peer.id.map(|id| id.0), peer.addr)),
                ),
                Outcome::Ok,
            ),
            Ok(TrackerResponse::Scrape(_)) => (internal_error("announce"), Outcome::Error),
            Err(rejection) => {
                tracing::debug!(%peer, cause = rejection.cause, "announce rejected");
                (reply::failure(&rejection.reason), Outcome::Rejected)
            }
        },
        Err(error) => {
            tracing::debug!(%peer, %error, "malformed announce");
            (reply::failure(&error.to_string()), Outcome::Error)
        }
    };
    state
        .metrics
        .record(metrics::RequestKind::Announce, outcome, started.elapsed());
    bencoded(body)
}

async fn scrape(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let started = Instant::now();
    let query = uri.query().unwrap_or("").as_bytes();
    let limit = state.settings.load().limits.max_scrape_infohashes;
    let (body, outcome) = match query::parse_scrape(query, limit) {
        Ok(parsed) => {
            let request = TrackerRequest {
                kind: RequestKind::Scrape(ScrapeRequest {
                    info_hashes: parsed.info_hashes.into_iter().map(InfoHash).collect(),
                }),
                token: token(query::jwt(query), &headers),
            };
            match state.service.clone().oneshot(request).await {
                Ok(TrackerResponse::Scrape(response)) => {
                    let body = reply::scrape(response.files.iter().map(|(hash, stats)| {
                        let counts = ScrapeCounts {
                            complete: stats.complete,
                            downloaded: stats.downloaded,
                            incomplete: stats.incomplete,
                        };
                        (hash.0, counts)
                    }));
                    (body, Outcome::Ok)
                }
                Ok(TrackerResponse::Announce(_)) => (internal_error("scrape"), Outcome::Error),
                Err(rejection) => {
                    tracing::debug!(%peer, cause = rejection.cause, "scrape rejected");
                    (reply::failure(&rejection.reason), Outcome::Rejected)
                }
            }
        }
        Err(error) => {
            tracing::debug!(%peer, %error, "malformed scrape");
            (reply::failure(&error.to_string()), Outcome::Error)
        }
    };
    state
        .metrics
        .record(metrics::RequestKind::Scrape, outcome, started.elapsed());
    bencoded(body)
}

/// Turns a parsed query into the protocol-agnostic request, plus how to write the peers.
fn build_announce(
    settings: &HttpSettings,
    peer: IpAddr,
    headers: &HeaderMap,
    query: &[u8],
) -> Result<(TrackerRequest, PeerFormat), query::QueryError> {
    let parsed = query::parse_announce(query)?;
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(HeaderValue::as_bytes);
    let client = client_ip::resolve(peer, forwarded, &settings.trusted_proxies);
    let ip = if client.via_trusted_proxy {
        claimed_ip(&parsed).unwrap_or(client.ip)
    } else {
        client.ip
    };
    let format = if parsed.compact {
        PeerFormat::Compact
    } else {
        PeerFormat::Dictionaries {
            with_peer_ids: !parsed.no_peer_id,
        }
    };
    let numwant = settings.limits.numwant(parsed.numwant);
    let request = TrackerRequest {
        kind: RequestKind::Announce(AnnounceRequest {
            info_hash: InfoHash(parsed.info_hash),
            peer_id: PeerId(parsed.peer_id),
            addr: SocketAddr::new(ip.to_canonical(), parsed.port),
            event: parsed.event,
            left: parsed.left,
            uploaded: parsed.uploaded,
            downloaded: parsed.downloaded,
            numwant,
            peer_ids: format
                == PeerFormat::Dictionaries {
                    with_peer_ids: true,
                },
        }),
        token: token(parsed.jwt.map(query::token_text), headers),
    };
    Ok((request, format))
}

/// The address a client behind a trusted proxy claims: `ip`, else `ipv4`, else `ipv6`.
fn claimed_ip(parsed: &AnnounceQuery<'_>) -> Option<IpAddr> {
    parsed
        .ip
        .or(parsed.ipv4.map(IpAddr::V4))
        .or(parsed.ipv6.map(IpAddr::V6))
}

/// The bearer token: the `jwt` parameter, else an `Authorization: Bearer` header.
fn token(from_query: Option<String>, headers: &HeaderMap) -> Option<String> {
    if from_query.is_some() {
        return from_query;
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

fn internal_error(what: &str) -> Vec<u8> {
    tracing::error!(
        what,
        "tracker service answered with the wrong kind of response"
    );
    reply::failure("internal error")
}

fn bencoded(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(trusted: &[&str]) -> HttpSettings {
        HttpSettings {
            trusted_proxies: trusted.iter().map(|t| t.parse().expect("net")).collect(),
            ..HttpSettings::from_config(&Config::default())
        }
    }

    const QUERY: &str = "info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=6881\
&uploaded=0&downloaded=0&left=1&ip=198.51.100.4&numwant=1000";

    fn announce_of(request: TrackerRequest) -> AnnounceRequest {
        match request.kind {
            RequestKind::Announce(announce) => announce,
            RequestKind::Scrape(_) => panic!("not an announce"),
        }
    }

    #[test]
    fn ip_parameter_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "10.1.1.1".parse().expect("ip");
        let (untrusted, _) =
            build_announce(&settings(&[]), peer, &HeaderMap::new(), QUERY.as_bytes()).expect("ok");
        assert_eq!(
            announce_of(untrusted).addr,
            "10.1.1.1:6881".parse().expect("addr")
        );
        let (trusted, _) = build_announce(
            &settings(&["10.0.0.0/8"]),
            peer,
            &HeaderMap::new(),
            QUERY.as_bytes(),
        )
        .expect("ok");
        assert_eq!(
            announce_of(trusted).addr,
            "198.51.100.4:6881".parse().expect("addr")
        );
    }

    #[test]
    fn numwant_is_clamped_and_token_found_in_header() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        let peer: IpAddr = "127.0.0.1".parse().expect("ip");
        let (request, format) =
            build_announce(&settings(&[]), peer, &headers, QUERY.as_bytes()).expect("ok");
        assert_eq!(request.token.as_deref(), Some("abc.def"));
        assert_eq!(format, PeerFormat::Compact);
        assert_eq!(announce_of(request).numwant, 200);

        let with_param = format!("{QUERY}&jwt=from.query&compact=0&no_peer_id=1");
        let (request, format) =
            build_announce(&settings(&[]), peer, &headers, with_param.as_bytes()).expect("ok");
        assert_eq!(
            request.token.as_deref(),
            Some("from.query"),
            "the query parameter wins"
        );
        assert_eq!(
            format,
            PeerFormat::Dictionaries {
                with_peer_ids: false
            }
        );
    }
}
