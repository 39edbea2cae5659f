//! Why a request was refused by the gateway, in words a client or operator can act on.

use crate::tracker::Rejection;

/// A refused token. `Display` is the `failure reason` the client reads; the
/// prefixes `unapproved request: missing jwt` and `unapproved request: invalid
/// jwt` are what existing registry tooling looks for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in the request.
    #[error(
        "unapproved request: missing jwt (put the registry-signed token in the announce URL as ?jwt=...)"
    )]
    Missing,
    /// Longer than `auth.max_token_bytes`; refused before any parsing.
    #[error("unapproved request: invalid jwt: token too large ({len} bytes, at most {max})")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts with JSON header and claims.
    #[error("unapproved request: invalid jwt: malformed token ({0})")]
    Malformed(&'static str),
    /// The header's `alg` is not allowed, or does not fit the key's type.
    #[error("unapproved request: invalid jwt: algorithm not allowed ({0})")]
    AlgorithmNotAllowed(String),
    /// No key with the header's `kid`, even after refetching the key set.
    #[error("unapproved request: invalid jwt: unknown signing key (kid {0})")]
    UnknownKey(String),
    /// The signature does not verify with the named key.
    #[error("unapproved request: invalid jwt: bad signature")]
    BadSignature,
    /// `exp` (plus leeway) has passed.
    #[error("unapproved request: invalid jwt: expired")]
    Expired,
    /// `nbf` (minus leeway) is still in the future.
    #[error("unapproved request: invalid jwt: not yet valid")]
    NotYetValid,
    /// `auth.require_exp` is set and the token has no `exp`.
    #[error(
        "unapproved request: invalid jwt: missing exp claim (this tracker requires tokens to expire)"
    )]
    MissingExpiry,
    /// `iss` is absent or not `auth.issuer`.
    #[error("unapproved request: invalid jwt: wrong issuer")]
    WrongIssuer,
    /// `aud` does not contain `auth.audience`.
    #[error("unapproved request: invalid jwt: wrong audience")]
    WrongAudience,
    /// The token approves another torrent, or none.
    #[error("unapproved request: invalid jwt: infohash not approved")]
    InfohashNotApproved,
    /// The token names an unknown key and too many requests already wait for
    /// the key set to be fetched again.
    #[error(
        "unapproved request: invalid jwt: unknown signing key, and too many requests are waiting for the key set; retry later"
    )]
    RefetchBusy,
    /// No key set has been loaded yet (the registry's JWKS was unreachable so far).
    #[error("unapproved request: invalid jwt: signing keys not loaded yet, retry later")]
    NoKeys,
}

impl AuthError {
    /// A short, fixed label for logs and metrics.
    pub fn cause(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::TooLarge { .. } => "too_large",
            AuthError::Malformed(_) => "malformed",
            AuthError::AlgorithmNotAllowed(_) => "algorithm",
            AuthError::UnknownKey(_) => "unknown_kid",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::MissingExpiry => "missing_exp",
            AuthError::WrongIssuer => "issuer",
            AuthError::WrongAudience => "audience",
            AuthError::InfohashNotApproved => "infohash",
            AuthError::RefetchBusy => "refetch_busy",
            AuthError::NoKeys => "no_keys",
        }
    }
}

impl From<AuthError> for Rejection {
    fn from(error: AuthError) -> Self {
        Rejection {
            cause: error.cause(),
            reason: error.to_string(),
        }
    }
}

/// Shortens and cleans a client-supplied string (a `kid`) before it goes into a reply or log.
pub(crate) fn printable(text: &str) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    if cleaned.len() < text.len() {
        format!("{cleaned}...")
    } else {
        cleaned
    }
}
