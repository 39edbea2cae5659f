//! Fetching the registry's JWKS over HTTP(S).

use std::time::Duration;

use super::keys::{KeyError, LoadedKeys, parse_jwks};

/// The largest JWKS document read; a registry publishes a few keys (Quay's
/// RSA JWKS is under 1 KiB a key), so anything near this is a fault.
pub const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a JWKS fetch failed; the previous key set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("cannot fetch {url}: {message}")]
    Request {
        /// The JWKS URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// The registry answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The JWKS URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body is larger than [`MAX_JWKS_BYTES`]; it was not read to the end.
    #[error("{url} sent a JWKS over {MAX_JWKS_BYTES} bytes; refusing to read it")]
    TooLarge {
        /// The JWKS URL.
        url: String,
    },
    /// The body is not a JWK set.
    #[error("{url} did not return a JWK set: {source}")]
    Document {
        /// The JWKS URL.
        url: String,
        /// The parse error.
        source: KeyError,
    },
}

/// Fetches one JWKS URL.
pub struct JwksFetcher {
    client: reqwest::Client,
    url: String,
}

impl JwksFetcher {
    /// A fetcher for `url`, giving up on any one fetch after `timeout`.
    pub fn new(url: String, timeout: Duration) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!("swarmgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Request {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { client, url })
    }

    /// The URL fetched.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// GETs and parses the key set.
    pub async fn fetch(&self) -> Result<LoadedKeys, FetchError> {
        let request_error = |e: reqwest::Error| FetchError::Request {
            url: self.url.clone(),
            message: e.to_string(),
        };
        let mut response = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(request_error)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: self.url.clone(),
        };
        if response
            .content_length()
            .is_some_and(|len| len > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).map_err(|source| FetchError::Document {
            url: self.url.clone(),
            source,
        })
    }
}
