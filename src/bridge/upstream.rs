//! The registry the bridge stands beside, spoken to over the OCI
//! Distribution API: `HEAD` a blob with the caller's credentials (is this
//! caller allowed it?) and `GET` it, whole or a range, with the caller's or the
//! bridge's own credentials.
//!
//! Authorisation is the registry's alone: the caller's `Authorization` header
//! goes upstream unchanged and the registry's 401/403/404, with its
//! `WWW-Authenticate` challenge, come back unchanged. For its own account the
//! bridge speaks both schemes registries use: Basic, and the Bearer token flow
//! (fetch a token from the challenge's realm, then retry).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, StatusCode, header};
use base64::Engine as _;
use parking_lot::Mutex;

use super::reference::BlobRef;

/// Why the registry did not give what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// The registry refused the caller (401, 403, 404, 416): passed through
    /// with its challenge.
    #[error("the registry answered {status}")]
    Refused {
        /// Its status.
        status: StatusCode,
        /// Its `WWW-Authenticate` header, if any.
        challenge: Option<HeaderValue>,
    },
    /// Any other status the bridge cannot pass on as the caller's fault.
    #[error("the registry answered {0} (expected 200)")]
    Status(StatusCode),
    /// No answer in time.
    #[error("the registry did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection, or a broken one.
    #[error("cannot reach the registry: {0}")]
    Unreachable(String),
}

impl UpstreamError {
    /// A bounded label for metrics: the status code for refusals, else the kind.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Refused { status, .. } => match status.as_u16() {
                401 => "401",
                403 => "403",
                404 => "404",
                416 => "416",
                _ => "4xx",
            },
            UpstreamError::Status(status) if status.is_server_error() => "5xx",
            UpstreamError::Status(_) => "other",
            UpstreamError::Timeout(_) => "timeout",
            UpstreamError::Unreachable(_) => "unreachable",
        }
    }
}

/// Whose credentials a request carries.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// The caller's `Authorization` header, as received (or none).
    Caller(Option<&'a HeaderValue>),
    /// This process's own account: `bridge.upstream_username` for the
    /// bridge, the `auths` of `agent.docker_config` for an agent.
    Own,
}

/// Bearer tokens remembered per scope at most; a full table is emptied.
const MAX_REMEMBERED_TOKENS: usize = 256;

/// A client of one registry.
pub struct Upstream {
    base: String,
    /// Never follows redirects: a `HEAD` that redirects to storage means
    /// "authorised", and presigned storage URLs refuse `HEAD`.
    checking: reqwest::Client,
    /// Follows redirects to storage (Authorization is dropped across hosts).
    streaming: reqwest::Client,
    basic: Option<HeaderValue>,
    timeout: Duration,
    tokens: Mutex<HashMap<String, (HeaderValue, Instant)>>,
}

impl Upstream {
    /// A client of the registry at `base` (e.g. `http://127.0.0.1:5000`).
    pub fn new(
        base: &str,
        username: &str,
        password: &str,
        timeout: Duration,
    ) -> Result<Self, UpstreamError> {
        let build = |redirects: reqwest::redirect::Policy| {
            reqwest::Client::builder()
                .redirect(redirects)
                .connect_timeout(timeout)
                .read_timeout(timeout)
                .user_agent(concat!("swarmgate-bridge/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| UpstreamError::Unreachable(e.to_string()))
        };
        let basic = (!username.is_empty()).then(|| {
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
                .unwrap_or(HeaderValue::from_static(""));
            value.set_sensitive(true);
            value
        });
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            checking: build(reqwest::redirect::Policy::none())?,
            streaming: build(reqwest::redirect::Policy::limited(5))?,
            basic,
            timeout,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    fn blob_url(&self, blob: &BlobRef) -> String {
        format!("{}/v2/{}", self.base, blob.path())
    }

    /// Asks the registry whether `credentials` may read `blob` (`HEAD`);
    /// returns the blob's size when the registry gives it.
    pub async fn authorize(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
    ) -> Result<Option<u64>, UpstreamError> {
        let response = self
            .send(
                &self.checking,
                reqwest::Method::HEAD,
                blob,
                credentials,
                None,
            )
            .await?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            let size = response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .filter(|_| status.is_success());
            return Ok(size);
        }
        Err(refusal(&response))
    }

    /// Opens `blob` for reading (`GET`, optionally one range), following
    /// redirects to storage. Answers 200 or 206; anything else is an error.
    pub async fn open(
        &self,
        blob: &BlobRef,
        credentials: Credentials<'_>,
        range: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let response = self
            .send(
                &self.streaming,
                reqwest::Method::GET,
                blob,
                credentials,
                range,
            )
            .await?;
        match response.status() {
            StatusCode::OK | StatusCode::PARTIAL_CONTENT => Ok(response),
            _ => Err(refusal(&response)),
        }
    }

    /// `GET /v2/` with `credentials`: `Ok` when the registry lets them in,
    /// its refusal (with the challenge) otherwise. A mirror answers its own
    /// `/v2/` with this, so clients learn the registry's auth scheme.
    pub async fn ping(&self, credentials: Credentials<'_>) -> Result<(), UpstreamError> {
        let url = format!("{}/v2/", self.base);
        let response = self
            .once(
                &self.checking,
                reqwest::Method::GET,
                &url,
                self.authorization(credentials, "").as_ref(),
                &[],
            )
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(refusal(&response))
        }
    }

    /// Whether the registry answers at all (`GET /v2/`: 200, or 401 when it
    /// wants credentials, both mean it is up).
    pub async fn reachable(&self) -> Result<(), UpstreamError> {
        let request = self.checking.get(format!("{}/v2/", self.base)).send();
        let response = tokio::time::timeout(self.timeout, request)
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        match response.status() {
            StatusCode::OK | StatusCode::UNAUTHORIZED => Ok(()),
            other => Err(UpstreamError::Status(other)),
        }
    }

    /// Sends `method` for `/v2/<name>/<rest>` (`manifests/<reference>`,
    /// `blobs/<digest>`) with `credentials` and the given headers (`Accept`,
    /// `Range`), never following redirects; the answer comes back as it is,
    /// refusals included, for a mirror to pass on.
    pub async fn forward(
        &self,
        method: reqwest::Method,
        name: &str,
        rest: &str,
        credentials: Credentials<'_>,
        headers: &[(header::HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = format!("{}/v2/{name}/{rest}", self.base);
        self.send_to(&self.streaming, method, &url, name, credentials, headers)
            .await
    }

    /// The `Authorization` a request for repository `name` would carry: the
    /// caller's, or this process's own (a token this client fetched for the
    /// repository, else its Basic login). For a service that asks the
    /// registry in turn, as the bridge does.
    pub fn authorization(&self, credentials: Credentials<'_>, name: &str) -> Option<HeaderValue> {
        match credentials {
            Credentials::Caller(header) => header.cloned(),
            Credentials::Own => self
                .remembered_token(&format!("repository:{name}:pull"))
                .or_else(|| self.basic.clone()),
        }
    }

    async fn send(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        blob: &BlobRef,
        credentials: Credentials<'_>,
        range: Option<&HeaderValue>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let url = self.blob_url(blob);
        let headers: Vec<_> = range
            .map(|value| (header::RANGE, value.clone()))
            .into_iter()
            .collect();
        self.send_to(client, method, &url, &blob.name, credentials, &headers)
            .await
    }

    async fn send_to(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        name: &str,
        credentials: Credentials<'_>,
        headers: &[(header::HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, UpstreamError> {
        let scope = format!("repository:{name}:pull");
        let authorization = self.authorization(credentials, name);
        let response = self
            .once(client, method.clone(), url, authorization.as_ref(), headers)
            .await?;
        // The bridge's own account against a token-service registry: get a
        // token for this repository from the realm the challenge names.
        if matches!(credentials, Credentials::Own)
            && response.status() == StatusCode::UNAUTHORIZED
            && let Some(challenge) = response.headers().get(header::WWW_AUTHENTICATE)
            && let Some(token) = self.fetch_token(challenge, &scope).await?
        {
            return self.once(client, method, url, Some(&token), headers).await;
        }
        Ok(response)
    }

    async fn once(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        url: &str,
        authorization: Option<&HeaderValue>,
        headers: &[(header::HeaderName, HeaderValue)],
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = client.request(method, url);
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        for (name, value) in headers {
            request = request.header(name.clone(), value.clone());
        }
        tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| {
                if e.is_timeout() {
                    UpstreamError::Timeout(self.timeout)
                } else {
                    UpstreamError::Unreachable(e.to_string())
                }
            })
    }

    fn remembered_token(&self, scope: &str) -> Option<HeaderValue> {
        let tokens = self.tokens.lock();
        tokens
            .get(scope)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(token, _)| token.clone())
    }

    /// The Bearer token flow: `GET realm?service=..&scope=..` with the
    /// bridge's Basic credentials. `None` when the challenge is not Bearer.
    async fn fetch_token(
        &self,
        challenge: &HeaderValue,
        scope: &str,
    ) -> Result<Option<HeaderValue>, UpstreamError> {
        let Some(params) = challenge.to_str().ok().and_then(bearer_challenge) else {
            return Ok(None);
        };
        let Some(realm) = params.get("realm") else {
            return Ok(None);
        };
        // Everything but RFC 3986's unreserved characters.
        const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let encode = |text: &str| percent_encoding::utf8_percent_encode(text, QUERY).to_string();
        let separator = if realm.contains('?') { '&' } else { '?' };
        let mut url = format!("{realm}{separator}scope={}", encode(scope));
        if let Some(service) = params.get("service") {
            url.push_str(&format!("&service={}", encode(service)));
        }
        let mut request = self.checking.get(url);
        if let Some(basic) = &self.basic {
            request = request.header(header::AUTHORIZATION, basic.clone());
        }
        let response = tokio::time::timeout(self.timeout, request.send())
            .await
            .map_err(|_| UpstreamError::Timeout(self.timeout))?
            .map_err(|e| UpstreamError::Unreachable(format!("token service: {e}")))?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status()));
        }
        #[derive(serde::Deserialize)]
        struct TokenReply {
            token: Option<String>,
            access_token: Option<String>,
            expires_in: Option<u64>,
        }
        let reply: TokenReply = response
            .json()
            .await
            .map_err(|e| UpstreamError::Unreachable(format!("token service reply: {e}")))?;
        let Some(token) = reply.token.or(reply.access_token) else {
            return Ok(None);
        };
        let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}")) else {
            return Ok(None);
        };
        value.set_sensitive(true);
        // The spec's default lifetime is 60 s; keep a margin.
        let lifetime = Duration::from_secs(reply.expires_in.unwrap_or(60).saturating_sub(10));
        let mut tokens = self.tokens.lock();
        if tokens.len() >= MAX_REMEMBERED_TOKENS {
            tokens.clear();
        }
        tokens.insert(scope.to_owned(), (value.clone(), Instant::now() + lifetime));
        Ok(Some(value))
    }
}

fn refusal(response: &reqwest::Response) -> UpstreamError {
    let status = response.status();
    match status.as_u16() {
        401 | 403 | 404 | 416 => UpstreamError::Refused {
            status,
            challenge: response.headers().get(header::WWW_AUTHENTICATE).cloned(),
        },
        _ => UpstreamError::Status(status),
    }
}

/// The parameters of a `Bearer realm="..",service="..",scope=".."` challenge.
fn bearer_challenge(text: &str) -> Option<HashMap<String, String>> {
    let (scheme, rest) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, remaining) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"')?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        params.insert(key, value.to_owned());
        rest = remaining.trim_start().trim_start_matches(',').trim_start();
    }
    Some(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_are_read() {
        let params = bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        )
        .expect("bearer");
        assert_eq!(params["realm"], "https://auth.example/token");
        assert_eq!(params["service"], "registry.example");
        assert_eq!(params["scope"], "repository:a/b:pull");
        assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
        assert!(bearer_challenge("Bearer realm=\"unterminated").is_none());
        assert_eq!(
            bearer_challenge("Bearer realm=plain, service=s").expect("bearer")["service"],
            "s"
        );
    }
}
