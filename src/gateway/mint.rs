//! The registry's side of tokens: generating signing keys and minting tokens
//! that the gateway accepts. Used by `swarmgate keygen` / `swarmgate mint`,
//! the examples and the tests.

use std::path::Path;
use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::bittorrent::InfoHash;

/// The signature algorithms keys can be generated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    /// ECDSA P-256 with SHA-256: small tokens (fit libtorrent's UDP limit).
    Es256,
    /// Ed25519: small tokens, fastest to verify.
    EdDsa,
    /// RSA 2048 with SHA-256: what Quay uses; tokens too long for UDP.
    Rs256,
}

impl KeyAlg {
    /// The JWS algorithm.
    pub fn algorithm(self) -> Algorithm {
        match self {
            KeyAlg::Es256 => Algorithm::ES256,
            KeyAlg::EdDsa => Algorithm::EdDSA,
            KeyAlg::Rs256 => Algorithm::RS256,
        }
    }
}

/// Why a key could not be made or a token minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// Key generation failed in the crypto library.
    #[error("cannot generate a key: {0}")]
    Generate(String),
    /// The PEM is not a private key we can sign with.
    #[error("not a usable private key (PKCS#8 PEM of an EC P-256, Ed25519 or RSA key): {0}")]
    Key(String),
    /// Signing failed.
    #[error("cannot sign: {0}")]
    Sign(String),
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// A freshly generated key pair: the private key as PKCS#8 PEM, the public half as a JWK.
pub struct GeneratedKey {
    /// `-----BEGIN PRIVATE KEY-----` ...
    pub private_pem: String,
    /// The public key, with `kid`, `alg` and `use = sig`.
    pub public_jwk: Jwk,
}

/// Generates a signing key for `alg`, published under `kid`.
pub fn generate(alg: KeyAlg, kid: &str) -> Result<GeneratedKey, MintError> {
    let failed = |e: aws_lc_rs::error::Unspecified| MintError::Generate(e.to_string());
    let der: Vec<u8> = match alg {
        KeyAlg::Es256 => {
            let pair = aws_lc_rs::signature::EcdsaKeyPair::generate(
                &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            )
            .map_err(failed)?;
            pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
        }
        KeyAlg::EdDsa => {
            let pair = aws_lc_rs::signature::Ed25519KeyPair::generate().map_err(failed)?;
            pair.to_pkcs8v1().map_err(failed)?.as_ref().to_vec()
        }
        KeyAlg::Rs256 => {
            let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(failed)?;
            AsDer::<aws_lc_rs::encoding::Pkcs8V1Der<'static>>::as_der(&pair)
                .map_err(failed)?
                .as_ref()
                .to_vec()
        }
    };
    let private_pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der));
    let (key, algorithm) = signing_key(private_pem.as_bytes(), Some(alg.algorithm()))?;
    let mut public_jwk =
        Jwk::from_encoding_key(&key, algorithm).map_err(|e| MintError::Key(e.to_string()))?;
    public_jwk.common.key_id = Some(kid.to_owned());
    public_jwk.common.key_algorithm = Some(match alg {
        KeyAlg::Es256 => KeyAlgorithm::ES256,
        KeyAlg::EdDsa => KeyAlgorithm::EdDSA,
        KeyAlg::Rs256 => KeyAlgorithm::RS256,
    });
    public_jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
    Ok(GeneratedKey {
        private_pem,
        public_jwk,
    })
}

/// Reads a private key PEM; the algorithm is `alg` or, by default, the
/// natural one for the key's type (ES256, EdDSA, RS256).
pub fn signing_key(
    pem: &[u8],
    alg: Option<Algorithm>,
) -> Result<(EncodingKey, Algorithm), MintError> {
    let key_error = |e: jsonwebtoken::errors::Error| MintError::Key(e.to_string());
    match alg {
        Some(alg @ (Algorithm::ES256 | Algorithm::ES384)) => {
            Ok((EncodingKey::from_ec_pem(pem).map_err(key_error)?, alg))
        }
        Some(Algorithm::EdDSA) => Ok((
            EncodingKey::from_ed_pem(pem).map_err(key_error)?,
            Algorithm::EdDSA,
        )),
        Some(
            alg @ (Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512),
        ) => Ok((EncodingKey::from_rsa_pem(pem).map_err(key_error)?, alg)),
        Some(other) => Err(MintError::Key(format!(
            "{other:?} is not an algorithm swarmgate accepts"
        ))),
        None => EncodingKey::from_ec_pem(pem)
            .map(|k| (k, Algorithm::ES256))
            .or_else(|_| EncodingKey::from_ed_pem(pem).map(|k| (k, Algorithm::EdDSA)))
            .or_else(|_| EncodingKey::from_rsa_pem(pem).map(|k| (k, Algorithm::RS256)))
            .map_err(key_error),
    }
}

/// What a token approves and who issued it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpec {
    /// `kid` in the header.
    pub kid: String,
    /// `iss`.
    pub issuer: String,
    /// `aud`, if any.
    pub audience: Option<String>,
    /// `infohash`, written as lowercase hex.
    pub info_hash: InfoHash,
    /// `exp` = `now` + this, if set.
    pub ttl: Option<Duration>,
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    infohash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

/// Signs a token for `spec` at `now` (Unix seconds). No `typ` header, to keep it short.
pub fn mint(
    key: &EncodingKey,
    alg: Algorithm,
    spec: &TokenSpec,
    now: u64,
) -> Result<String, MintError> {
    let mut header = Header::new(alg);
    header.typ = None;
    header.kid = Some(spec.kid.clone());
    let claims = MintedClaims {
        iss: &spec.issuer,
        aud: spec.audience.as_deref(),
        infohash: spec.info_hash.to_hex(),
        exp: spec.ttl.map(|ttl| now.saturating_add(ttl.as_secs())),
    };
    jsonwebtoken::encode(&header, &claims, key).map_err(|e| MintError::Sign(e.to_string()))
}

/// Adds `jwk` to the JWKS file at `path` (created if absent), replacing a key with the same kid.
pub fn add_to_jwks(path: &Path, jwk: Jwk) -> Result<(), MintError> {
    let file_error = |e: &dyn std::fmt::Display| MintError::File {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut set = match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<JwkSet>(&bytes).map_err(|e| file_error(&e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => JwkSet { keys: Vec::new() },
        Err(e) => return Err(file_error(&e)),
    };
    set.keys
        .retain(|key| key.common.key_id != jwk.common.key_id);
    set.keys.push(jwk);
    let mut text = serde_json::to_string_pretty(&set).map_err(|e| file_error(&e))?;
    text.push('\n');
    std::fs::write(path, text).map_err(|e| file_error(&e))
}

/// Writes a private key PEM readable by its owner only (mode 0600 on Unix).
pub fn write_private_key(path: &Path, bytes: &[u8]) -> Result<(), MintError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(|e| MintError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })
}

/// The longest token libtorrent can carry over UDP: it sends the announce
/// path and query in one BEP 41 option of at most 255 bytes, and
/// `/announce?jwt=` takes 14 of them.
pub const UDP_TOKEN_LIMIT: usize = 255 - "/announce?jwt=".len();
