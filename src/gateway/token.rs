//! Checking one token: its header, its signature against a key, and its claims.
//! Pure: the time is an argument, and nothing here does I/O.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;

use super::error::{AuthError, printable};
use super::keys::VerifyingKey;
use crate::bittorrent::InfoHash;

/// What a token must satisfy, from `[auth]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPolicy {
    /// Required `iss`.
    pub issuer: String,
    /// Required member of `aud`, when set.
    pub audience: Option<String>,
    /// Signature algorithms accepted (never `none` or HMAC; config refuses those).
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// Longest token looked at; longer ones are refused unread.
    pub max_token_bytes: usize,
}

impl TokenPolicy {
    /// Refuses a token longer than `max_token_bytes` before anything reads it.
    pub fn check_size(&self, token: &str) -> Result<(), AuthError> {
        if token.len() > self.max_token_bytes {
            return Err(AuthError::TooLarge {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        Ok(())
    }
}

/// What a verified token approves, as kept in the verified-token cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The one torrent the token approves.
    pub info_hash: InfoHash,
    /// `exp`, Unix seconds.
    pub expires_at: Option<u64>,
    /// `nbf`, Unix seconds.
    pub not_before: Option<u64>,
    /// The key that signed it, so the approval dies with the key.
    pub kid: Option<Arc<str>>,
}

impl Approval {
    /// Re-checks the time claims at `now` (Unix seconds) with `leeway` seconds of skew.
    pub fn check_time(&self, now: u64, leeway: u64) -> Result<(), AuthError> {
        if self
            .expires_at
            .is_some_and(|exp| now > exp.saturating_add(leeway))
        {
            return Err(AuthError::Expired);
        }
        if self
            .not_before
            .is_some_and(|nbf| now.saturating_add(leeway) < nbf)
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(())
    }

    /// Whether the token approves `info_hash`.
    pub fn check_info_hash(&self, info_hash: &InfoHash) -> Result<(), AuthError> {
        if &self.info_hash == info_hash {
            Ok(())
        } else {
            Err(AuthError::InfohashNotApproved)
        }
    }
}

/// The parts of a token's header that decide which key checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    /// The signature algorithm.
    pub alg: Algorithm,
    /// The signing key's id.
    pub kid: Option<String>,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// Reads the header without trusting it, refusing oversize tokens and
/// algorithms outside the policy (`none` and HMAC always).
pub fn read_header(token: &str, policy: &TokenPolicy) -> Result<TokenHeader, AuthError> {
    policy.check_size(token)?;
    let mut parts = token.split('.');
    let (Some(header), Some(_claims), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("a JWT has three dot-separated parts"));
    };
    let header = URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed("header is not base64url"))?;
    let header: RawHeader = serde_json::from_slice(&header)
        .map_err(|_| AuthError::Malformed("header is not a JSON object with alg"))?;
    let alg = match header.alg.as_str() {
        "none" | "None" | "NONE" => {
            return Err(AuthError::AlgorithmNotAllowed(
                "none: unsigned tokens are never accepted".into(),
            ));
        }
        "HS256" | "HS384" | "HS512" => {
            return Err(AuthError::AlgorithmNotAllowed(format!(
                "{}: HMAC is never accepted, tokens must be signed with the registry's private key",
                header.alg
            )));
        }
        name => name
            .parse::<Algorithm>()
            .map_err(|_| AuthError::AlgorithmNotAllowed(printable(name)))?,
    };
    if !policy.algorithms.contains(&alg) {
        return Err(AuthError::AlgorithmNotAllowed(format!(
            "{alg:?} is not in auth.algorithms"
        )));
    }
    Ok(TokenHeader {
        alg,
        kid: header.kid,
    })
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    aud: Option<Audience>,
    #[serde(default)]
    infohash: Option<String>,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Audience::One(one) => one == wanted,
            Audience::Many(many) => many.iter().any(|a| a == wanted),
        }
    }
}

/// Verifies `token`'s signature with `key` and checks its claims at `now`.
pub fn verify(
    token: &str,
    header: &TokenHeader,
    key: &VerifyingKey,
    policy: &TokenPolicy,
    now: u64,
) -> Result<Approval, AuthError> {
    if !key.accepts(header.alg) {
        return Err(AuthError::AlgorithmNotAllowed(format!(
            "{:?} does not fit the {:?} key {}",
            header.alg,
            key.kind,
            key.kid.as_deref().map(printable).unwrap_or_default()
        )));
    }
    let mut validation = Validation::new(header.alg);
    // The claims are checked below, with messages of our own.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
        .map_err(|error| match error.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::InvalidAlgorithm => {
                AuthError::AlgorithmNotAllowed(format!("{:?}", header.alg))
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => {
                AuthError::Malformed("claims are not a JSON object of the expected shape")
            }
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                AuthError::Malformed("not base64url-encoded JSON")
            }
            _ => AuthError::BadSignature,
        })?
        .claims;

    if claims.iss.as_deref() != Some(policy.issuer.as_str()) {
        return Err(AuthError::WrongIssuer);
    }
    if let Some(audience) = &policy.audience
        && !claims
            .aud
            .as_ref()
            .is_some_and(|aud| aud.contains(audience))
    {
        return Err(AuthError::WrongAudience);
    }
    let info_hash = claims
        .infohash
        .as_deref()
        .and_then(|hex| InfoHash::from_hex(hex).ok())
        .ok_or(AuthError::Malformed(
            "no infohash claim of 40 hex characters",
        ))?;
    if claims.exp.is_none() && policy.require_exp {
        return Err(AuthError::MissingExpiry);
    }
    let approval = Approval {
        info_hash,
        expires_at: claims.exp.map(unix_seconds),
        not_before: claims.nbf.map(unix_seconds),
        kid: key.kid.clone(),
    };
    approval.check_time(now, policy.leeway_secs)?;
    Ok(approval)
}

/// A JSON NumericDate (possibly fractional or negative) as whole Unix seconds.
fn unix_seconds(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        value as u64
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::mint::{self, KeyAlg, TokenSpec};
    use proptest::prelude::*;

    fn policy() -> TokenPolicy {
        TokenPolicy {
            issuer: "reg".into(),
            audience: None,
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            leeway_secs: 10,
            require_exp: false,
            max_token_bytes: 1000,
        }
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    #[test]
    fn headers_that_are_refused_before_any_key_is_touched() {
        let p = policy();
        let cases = [
            (format!("{}.e30.", b64(r#"{"alg":"none"}"#)), "algorithm"),
            (
                format!("{}.e30.sig", b64(r#"{"alg":"HS256","kid":"k"}"#)),
                "algorithm",
            ),
            (
                format!("{}.e30.sig", b64(r#"{"alg":"RS256","kid":"k"}"#)),
                "algorithm",
            ),
            (format!("{}.e30.sig", b64(r#"{"alg":"XYZ"}"#)), "algorithm"),
            (format!("{}.e30.sig", b64(r#"{"kid":"k"}"#)), "malformed"),
            ("only.two".into(), "malformed"),
            ("a.b.c.d".into(), "malformed"),
            ("%%%.e30.sig".into(), "malformed"),
            ("x".repeat(1001), "too_large"),
        ];
        for (token, cause) in cases {
            let error = read_header(&token, &p).expect_err(&token);
            assert_eq!(error.cause(), cause, "{token}: {error}");
        }
        let header = read_header(
            &format!(
                "{}.e30.sig",
                b64(r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#)
            ),
            &p,
        )
        .expect("valid header");
        assert_eq!(
            header,
            TokenHeader {
                alg: Algorithm::ES256,
                kid: Some("k1".into())
            }
        );
    }

    #[test]
    fn time_claims_respect_leeway() {
        let approval = Approval {
            info_hash: InfoHash([1; 20]),
            expires_at: Some(1000),
            not_before: Some(500),
            kid: None,
        };
        assert_eq!(approval.check_time(1010, 10), Ok(()));
        assert_eq!(approval.check_time(1011, 10), Err(AuthError::Expired));
        assert_eq!(approval.check_time(490, 10), Ok(()));
        assert_eq!(approval.check_time(489, 10), Err(AuthError::NotYetValid));
        assert_eq!(
            approval.check_info_hash(&InfoHash([2; 20])),
            Err(AuthError::InfohashNotApproved)
        );
    }

    #[test]
    fn verify_checks_every_claim() {
        let generated = mint::generate(KeyAlg::EdDsa, "k").expect("keygen");
        let key = crate::gateway::keys::VerifyingKey::from_jwk(&generated.public_jwk).expect("jwk");
        let (signing, alg) =
            mint::signing_key(generated.private_pem.as_bytes(), None).expect("pem");
        let spec = TokenSpec {
            kid: "k".into(),
            issuer: "reg".into(),
            audience: Some("aud-1".into()),
            info_hash: InfoHash([3; 20]),
            ttl: Some(std::time::Duration::from_secs(100)),
        };
        let now = 1_000_000;
        let token = mint::mint(&signing, alg, &spec, now).expect("mint");
        let header = read_header(&token, &policy()).expect("header");
        let approval = verify(&token, &header, &key, &policy(), now).expect("valid");
        assert_eq!(
            (approval.info_hash, approval.expires_at),
            (InfoHash([3; 20]), Some(now + 100))
        );

        let mut strict = policy();
        strict.audience = Some("aud-2".into());
        assert_eq!(
            verify(&token, &header, &key, &strict, now),
            Err(AuthError::WrongAudience)
        );
        strict = policy();
        strict.issuer = "other".into();
        assert_eq!(
            verify(&token, &header, &key, &strict, now),
            Err(AuthError::WrongIssuer)
        );
        assert_eq!(
            verify(&token, &header, &key, &policy(), now + 111),
            Err(AuthError::Expired)
        );

        let no_exp =
            mint::mint(&signing, alg, &TokenSpec { ttl: None, ..spec }, now).expect("mint");
        strict = policy();
        strict.require_exp = true;
        assert_eq!(
            verify(&no_exp, &header, &key, &strict, now),
            Err(AuthError::MissingExpiry)
        );
        assert!(verify(&no_exp, &header, &key, &policy(), now).is_ok());
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(token in ".{0,300}") {
            let _ = read_header(&token, &policy());
        }

        #[test]
        fn arbitrary_json_headers_never_panic(header in ".{0,80}", claims in ".{0,80}") {
            let _ = read_header(&format!("{}.{}.sig", b64(&header), b64(&claims)), &policy());
        }
    }
}
