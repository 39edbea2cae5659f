//! The set of public keys tokens may be signed with, from a JWKS document
//! and/or files, and which algorithms each key may verify.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// The family of a key, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// RSA: RS256/384/512 and PS256/384/512.
    Rsa,
    /// NIST P-256: ES256.
    P256,
    /// NIST P-384: ES384.
    P384,
    /// An EC key of unknown curve (from a PEM file): ES256 or ES384.
    Ec,
    /// Ed25519: EdDSA.
    Ed25519,
}

/// One public key, ready to verify signatures.
#[derive(Clone)]
pub struct VerifyingKey {
    /// The key id tokens name in their header, if the key has one.
    pub kid: Option<Arc<str>>,
    /// What kind of key it is.
    pub kind: KeyKind,
    /// The one algorithm the key was published for (JWK `alg`), if stated.
    pub alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    /// Whether a token signed with `alg` may be checked against this key.
    /// HMAC algorithms never are: a public key must not double as a secret.
    pub fn accepts(&self, alg: Algorithm) -> bool {
        use Algorithm::*;
        if self.alg.is_some_and(|stated| stated != alg) {
            return false;
        }
        match self.kind {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ec => matches!(alg, ES256 | ES384),
            KeyKind::Ed25519 => alg == EdDSA,
        }
    }

    /// Builds a key from one JWK. Private parameters, if present, are ignored.
    pub fn from_jwk(jwk: &Jwk) -> Result<Self, KeyError> {
        if jwk.common.public_key_use == Some(PublicKeyUse::Encryption) {
            return Err(KeyError::Unusable(
                "marked for encryption (use = enc)".into(),
            ));
        }
        // The crypto library only looks at key material when verifying; check
        // sizes here so a broken key is reported at load, not as bad signatures.
        let kind = match &jwk.algorithm {
            AlgorithmParameters::RSA(rsa) => {
                if decoded_len(&rsa.n) < 256 {
                    return Err(KeyError::Unusable(
                        "RSA modulus shorter than 2048 bits".into(),
                    ));
                }
                KeyKind::Rsa
            }
            AlgorithmParameters::EllipticCurve(ec) => {
                let (kind, size) = match ec.curve {
                    EllipticCurve::P256 => (KeyKind::P256, 32),
                    EllipticCurve::P384 => (KeyKind::P384, 48),
                    ref other => {
                        return Err(KeyError::Unusable(format!("unsupported curve {other:?}")));
                    }
                };
                if decoded_len(&ec.x) != size || decoded_len(&ec.y) != size {
                    return Err(KeyError::Unusable(format!(
                        "EC coordinates must be {size} bytes each"
                    )));
                }
                kind
            }
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                if decoded_len(&okp.x) != 32 {
                    return Err(KeyError::Unusable(
                        "an Ed25519 public key is 32 bytes".into(),
                    ));
                }
                KeyKind::Ed25519
            }
            AlgorithmParameters::OctetKeyPair(okp) => {
                return Err(KeyError::Unusable(format!(
                    "unsupported curve {:?}",
                    okp.curve
                )));
            }
            AlgorithmParameters::OctetKey(_) => {
                return Err(KeyError::Unusable(
                    "symmetric (kty oct) keys are never accepted".into(),
                ));
            }
            _ => return Err(KeyError::Unusable("unsupported key type".into())),
        };
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(stated) => Some(signing_algorithm(stated)?),
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| KeyError::Unusable(e.to_string()))?;
        Ok(Self {
            kid: jwk.common.key_id.as_deref().map(Arc::from),
            kind,
            alg,
            key,
        })
    }

    /// Builds a key from a PEM public key (SPKI); its kid is given by the caller.
    pub fn from_public_pem(pem: &[u8], kid: Option<&str>) -> Result<Self, KeyError> {
        let (kind, key) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (KeyKind::Rsa, key)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            (KeyKind::Ec, key)
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            (KeyKind::Ed25519, key)
        } else {
            return Err(KeyError::Unusable(
                "not an RSA, EC or Ed25519 public key in PEM".into(),
            ));
        };
        Ok(Self {
            kid: kid.map(Arc::from),
            kind,
            alg: None,
            key,
        })
    }
}

/// Length of a base64url value once decoded; 0 if it does not decode.
fn decoded_len(value: &str) -> usize {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(value.trim_end_matches('='))
        .map(|bytes| bytes.len())
        .unwrap_or(0)
}

fn signing_algorithm(stated: KeyAlgorithm) -> Result<Algorithm, KeyError> {
    use KeyAlgorithm as K;
    Ok(match stated {
        K::RS256 => Algorithm::RS256,
        K::RS384 => Algorithm::RS384,
        K::RS512 => Algorithm::RS512,
        K::PS256 => Algorithm::PS256,
        K::PS384 => Algorithm::PS384,
        K::PS512 => Algorithm::PS512,
        K::ES256 => Algorithm::ES256,
        K::ES384 => Algorithm::ES384,
        K::EdDSA => Algorithm::EdDSA,
        other => {
            return Err(KeyError::Unusable(format!(
                "alg {other:?} is not a signature algorithm we accept"
            )));
        }
    })
}

/// Why keys could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The document is not a JWKS (`{"keys": [...]}`) or a single JWK.
    #[error("not a JWK set: {0}")]
    NotJwks(String),
    /// One key cannot be used; the others still are.
    #[error("unusable key: {0}")]
    Unusable(String),
    /// A key file or directory could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The path.
        path: String,
        /// The OS error.
        message: String,
    },
}

/// Keys parsed from one source, plus the reasons the skipped ones were skipped.
#[derive(Debug, Default)]
pub struct LoadedKeys {
    /// The usable keys.
    pub keys: Vec<VerifyingKey>,
    /// One line per skipped key, for a warning log.
    pub skipped: Vec<String>,
}

/// Parses a JWKS document (or a single JWK). Keys that fail to parse are skipped, not fatal.
pub fn parse_jwks(document: &[u8]) -> Result<LoadedKeys, KeyError> {
    let value: serde_json::Value =
        serde_json::from_slice(document).map_err(|e| KeyError::NotJwks(e.to_string()))?;
    let entries = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.clone(),
        Some(_) => return Err(KeyError::NotJwks("\"keys\" is not an array".into())),
        None if value.get("kty").is_some() => vec![value],
        None => return Err(KeyError::NotJwks("no \"keys\" array".into())),
    };
    let mut loaded = LoadedKeys::default();
    for (index, entry) in entries.into_iter().enumerate() {
        let kid = entry.get("kid").and_then(|k| k.as_str()).map(str::to_owned);
        let parsed = serde_json::from_value::<Jwk>(entry)
            .map_err(|e| KeyError::Unusable(e.to_string()))
            .and_then(|jwk| VerifyingKey::from_jwk(&jwk));
        match parsed {
            Ok(key) => loaded.keys.push(key),
            Err(error) => loaded.skipped.push(format!(
                "key #{index} (kid {}): {error}",
                kid.as_deref().unwrap_or("none")
            )),
        }
    }
    Ok(loaded)
}

/// Loads every `*.json` (JWKS or JWK) and public-key `*.pem` file in `dir`.
/// Private-key PEMs (the development signing keys live beside their JWKS) are
/// passed over. A PEM's kid is its file name without extension.
pub fn load_dir(dir: &Path) -> Result<LoadedKeys, KeyError> {
    let read_error = |path: &Path, e: std::io::Error| KeyError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| read_error(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    paths.sort();
    let mut loaded = LoadedKeys::default();
    for path in paths {
        let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if extension != "json" && extension != "pem" {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|e| read_error(&path, e))?;
        let name = path.display();
        if extension == "json" {
            match parse_jwks(&bytes) {
                Ok(mut more) => {
                    loaded.keys.append(&mut more.keys);
                    loaded
                        .skipped
                        .extend(more.skipped.into_iter().map(|s| format!("{name}: {s}")));
                }
                Err(error) => loaded.skipped.push(format!("{name}: {error}")),
            }
        } else if !String::from_utf8_lossy(&bytes).contains("PRIVATE KEY") {
            let kid = path.file_stem().and_then(|s| s.to_str());
            match VerifyingKey::from_public_pem(&bytes, kid) {
                Ok(key) => loaded.keys.push(key),
                Err(error) => loaded.skipped.push(format!("{name}: {error}")),
            }
        }
    }
    Ok(loaded)
}

/// An immutable set of verifying keys, looked up by kid. Replaced whole, never edited.
#[derive(Debug, Default)]
pub struct KeySet {
    by_kid: HashMap<Arc<str>, Arc<VerifyingKey>>,
    without_kid: Vec<Arc<VerifyingKey>>,
}

impl KeySet {
    /// A set of `keys`; for a repeated kid, the later key wins.
    pub fn new<I: IntoIterator<Item = VerifyingKey>>(keys: I) -> Self {
        let mut set = KeySet::default();
        for key in keys {
            let key = Arc::new(key);
            match &key.kid {
                Some(kid) => {
                    set.by_kid.insert(kid.clone(), key);
                }
                None => set.without_kid.push(key),
            }
        }
        set
    }

    /// The key called `kid`.
    pub fn get(&self, kid: &str) -> Option<&Arc<VerifyingKey>> {
        self.by_kid.get(kid)
    }

    /// Whether a key called `kid` is in the set.
    pub fn contains(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Keys without a kid, tried for tokens that name none.
    pub fn anonymous(&self) -> &[Arc<VerifyingKey>] {
        &self.without_kid
    }

    /// How many keys.
    pub fn len(&self) -> usize {
        self.by_kid.len() + self.without_kid.len()
    }

    /// Whether there are no keys at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kids, sorted, for logs.
    pub fn kids(&self) -> Vec<&str> {
        let mut kids: Vec<&str> = self.by_kid.keys().map(|k| &**k).collect();
        kids.sort_unstable();
        kids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A Quay-shaped JWKS entry: RSA, no alg, no use, 64-hex kid.
    const QUAY_JWKS: &str = r#"{"keys":[
      {"kty":"RSA","kid":"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
       "n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw",
       "e":"AQAB"},
      {"kty":"EC","crv":"P-256","kid":"ec1","alg":"ES256",
       "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
      {"kty":"oct","kid":"hmac","k":"c2VjcmV0"},
      {"kty":"EC","crv":"P-256","kid":"broken","x":"AAAA","y":"AAAA"},
      {"kty":"RSA","kid":"encryption","use":"enc","n":"AQAB","e":"AQAB"}
    ]}"#;

    #[test]
    fn quay_shaped_jwks_loads_and_bad_keys_are_skipped() {
        let loaded = parse_jwks(QUAY_JWKS.as_bytes()).expect("a JWKS");
        let kids: Vec<_> = loaded
            .keys
            .iter()
            .filter_map(|k| k.kid.as_deref())
            .collect();
        assert_eq!(
            kids,
            vec![
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "ec1"
            ]
        );
        assert_eq!(loaded.skipped.len(), 3, "{:?}", loaded.skipped);
        assert!(
            loaded
                .skipped
                .iter()
                .any(|s| s.contains("broken") && s.contains("32 bytes"))
        );
        assert!(
            loaded
                .skipped
                .iter()
                .any(|s| s.contains("hmac") && s.contains("symmetric"))
        );
        assert!(loaded.skipped.iter().any(|s| s.contains("encryption")));
    }

    #[test]
    fn algorithms_must_fit_the_key() {
        let loaded = parse_jwks(QUAY_JWKS.as_bytes()).expect("a JWKS");
        let rsa = &loaded.keys[0];
        assert!(rsa.accepts(Algorithm::RS256) && rsa.accepts(Algorithm::PS256));
        assert!(
            !rsa.accepts(Algorithm::ES256)
                && !rsa.accepts(Algorithm::HS256)
                && !rsa.accepts(Algorithm::EdDSA)
        );
        let ec = &loaded.keys[1];
        assert!(ec.accepts(Algorithm::ES256));
        assert!(!ec.accepts(Algorithm::ES384) && !ec.accepts(Algorithm::HS256));
    }

    #[test]
    fn not_a_jwks() {
        assert!(matches!(parse_jwks(b"[1,2]"), Err(KeyError::NotJwks(_))));
        assert!(matches!(
            parse_jwks(b"{\"keys\": 3}"),
            Err(KeyError::NotJwks(_))
        ));
        assert!(matches!(parse_jwks(b"not json"), Err(KeyError::NotJwks(_))));
        assert_eq!(
            parse_jwks(b"{\"keys\": []}").expect("empty ok").keys.len(),
            0
        );
    }

    #[test]
    fn key_set_lookup() {
        let loaded = parse_jwks(QUAY_JWKS.as_bytes()).expect("a JWKS");
        let set = KeySet::new(loaded.keys);
        assert_eq!(set.len(), 2);
        assert!(set.contains("ec1") && !set.contains("hmac"));
        assert_eq!(set.kids()[1], "ec1");
    }
}
