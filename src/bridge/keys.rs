//! The bridge's signing keys and their rotation.
//!
//! Keys are `KID.pem` files in `bridge.keys_dir` (the layout `swarmgate
//! keygen` writes); `rotation.json` beside them is the schedule: when each key
//! was published and from when it signs. A rotation publishes the next key at
//! once and lets it sign only after `rotation_delay`, so trackers have it
//! before the first token it signs arrives. The key it replaces stays
//! published for `retired_overlap` after that, so torrents already handed out
//! keep working; then it is deleted. The [`Schedule`] is pure (time is an
//! argument); [`KeyStore`] holds it with the loaded keys and writes it to disk
//! atomically, so a restart resumes the same schedule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::bittorrent::InfoHash;
use crate::gateway::mint::{self, KeyAlg, TokenSpec};

/// The schedule's file name inside `keys_dir`.
pub const SCHEDULE_FILE: &str = "rotation.json";

/// Why keys could not be loaded, rotated or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A file in the keys directory could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// Key generation or signing failed.
    #[error(transparent)]
    Mint(#[from] mint::MintError),
    /// A rotation is already scheduled.
    #[error(
        "a rotation is already pending: key {kid} starts signing in {seconds} s; rotate again after that"
    )]
    Pending {
        /// The pending key.
        kid: String,
        /// Seconds until it signs.
        seconds: u64,
    },
    /// No key signs right now (cannot happen once the store is open).
    #[error("no signing key is in force")]
    NoSigningKey,
    /// A token the bridge did not sign, or signed for something else.
    #[error("token refused: {0}")]
    Token(String),
}

/// Parses `ES256`, `EdDSA` or `RS256` (any case).
pub fn parse_algorithm(name: &str) -> Option<KeyAlg> {
    match name.to_ascii_lowercase().as_str() {
        "es256" => Some(KeyAlg::Es256),
        "eddsa" => Some(KeyAlg::EdDsa),
        "rs256" => Some(KeyAlg::Rs256),
        _ => None,
    }
}

/// One key's place in the schedule (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledKey {
    /// Its key id (`KID.pem`).
    pub kid: String,
    /// When it entered the JWKS.
    pub published: u64,
    /// When it starts signing; it signs until the next key's `signing_from`.
    pub signing_from: u64,
}

/// The rotation schedule, ordered by `signing_from`. Pure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Every key still published or pending.
    pub keys: Vec<ScheduledKey>,
}

impl Schedule {
    /// The key that signs at `now`: the latest whose `signing_from` has come.
    pub fn signing(&self, now: u64) -> Option<&ScheduledKey> {
        self.keys.iter().rev().find(|key| key.signing_from <= now)
    }

    /// The key published but not yet signing, if a rotation is under way.
    pub fn pending(&self, now: u64) -> Option<&ScheduledKey> {
        self.keys.iter().find(|key| key.signing_from > now)
    }

    /// When the key at `index` stops being published: its successor's
    /// `signing_from` plus the overlap; `None` while it has no successor.
    fn removal_at(&self, index: usize, overlap: Duration) -> Option<u64> {
        self.keys
            .get(index + 1)
            .map(|next| next.signing_from.saturating_add(overlap.as_secs()))
    }

    /// The keys in the JWKS at `now`: published, and not past their overlap.
    pub fn published(&self, now: u64, overlap: Duration) -> Vec<&ScheduledKey> {
        (0..self.keys.len())
            .filter(|&i| {
                self.keys[i].published <= now
                    && self.removal_at(i, overlap).is_none_or(|end| now < end)
            })
            .map(|i| &self.keys[i])
            .collect()
    }

    /// Drops the keys whose overlap has ended; returns their kids.
    pub fn prune(&mut self, now: u64, overlap: Duration) -> Vec<String> {
        let gone: Vec<usize> = (0..self.keys.len())
            .filter(|&i| self.removal_at(i, overlap).is_some_and(|end| now >= end))
            .collect();
        let kids = gone.iter().map(|&i| self.keys[i].kid.clone()).collect();
        let mut index = 0;
        self.keys.retain(|_| {
            index += 1;
            !gone.contains(&(index - 1))
        });
        kids
    }

    /// Refuses while a rotation is pending (a key published, not yet signing).
    pub fn check_not_pending(&self, now: u64) -> Result<(), KeyError> {
        match self.pending(now) {
            Some(pending) => Err(KeyError::Pending {
                kid: pending.kid.clone(),
                seconds: pending.signing_from - now,
            }),
            None => Ok(()),
        }
    }

    /// Schedules `kid`: published at `now`, signing from `now + delay`.
    pub fn rotate(&mut self, kid: &str, now: u64, delay: Duration) -> Result<(), KeyError> {
        self.check_not_pending(now)?;
        self.keys.push(ScheduledKey {
            kid: kid.to_owned(),
            published: now,
            signing_from: now.saturating_add(delay.as_secs()),
        });
        self.keys.sort_by_key(|key| key.signing_from);
        Ok(())
    }
}

/// A private key loaded from its PEM, with its public halves.
struct LoadedKey {
    encoding: EncodingKey,
    algorithm: Algorithm,
    jwk: Jwk,
    decoding: DecodingKey,
}

/// What the store was opened with.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// `bridge.keys_dir`.
    pub dir: PathBuf,
    /// Algorithm of generated keys.
    pub algorithm: KeyAlg,
    /// `iss`.
    pub issuer: String,
    /// `aud`, if any.
    pub audience: Option<String>,
    /// `exp` = now + this, if set.
    pub token_ttl: Option<Duration>,
    /// `bridge.rotation_delay`.
    pub rotation_delay: Duration,
    /// `bridge.retired_overlap`.
    pub retired_overlap: Duration,
}

struct Ring {
    schedule: Schedule,
    keys: HashMap<String, LoadedKey>,
}

/// The keys on disk, the schedule, and signing and checking with them.
pub struct KeyStore {
    settings: KeySettings,
    ring: RwLock<Ring>,
}

#[derive(Deserialize)]
struct SeedClaims {
    infohash: String,
}

impl KeyStore {
    /// Opens `settings.dir`: loads the schedule and its keys; imports
    /// `KID.pem` files the schedule does not name (the newest signs); generates
    /// a first key when there is none. Writes the schedule back.
    pub fn open(settings: KeySettings, now: u64) -> Result<Self, KeyError> {
        let dir = settings.dir.clone();
        std::fs::create_dir_all(&dir).map_err(|e| file_error(&dir, &e))?;
        let schedule_path = dir.join(SCHEDULE_FILE);
        let mut schedule = match std::fs::read(&schedule_path) {
            Ok(bytes) => match serde_json::from_slice::<Schedule>(&bytes) {
                Ok(schedule) => schedule,
                Err(error) => {
                    let aside = crate::files::set_aside(&schedule_path, now)
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|e| format!("(not moved: {e})"));
                    tracing::error!(
                        file = %schedule_path.display(), moved_to = %aside,
                        "the key rotation schedule is corrupt ({error}); moved aside, rebuilding it from the key files"
                    );
                    Schedule::default()
                }
            },
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Schedule::default(),
            Err(error) => return Err(file_error(&schedule_path, &error)),
        };
        let mut keys = HashMap::new();
        schedule
            .keys
            .retain(|entry| match load_pem(&dir, &entry.kid) {
                Ok(key) => {
                    keys.insert(entry.kid.clone(), key);
                    true
                }
                Err(error) => {
                    tracing::error!("scheduled key {} dropped: {error}", entry.kid);
                    false
                }
            });
        // Keys put in the directory by hand (swarmgate keygen) that the
        // schedule does not know: already published; the newest signs now.
        let mut found = unscheduled_pems(&dir, &schedule)?;
        found.sort_by_key(|(_, modified)| *modified);
        let count = found.len();
        for (position, (kid, _)) in found.into_iter().enumerate() {
            let key = load_pem(&dir, &kid)?;
            keys.insert(kid.clone(), key);
            let signing_from = if position + 1 == count {
                now
            } else {
                now.saturating_sub(1)
            };
            schedule.keys.push(ScheduledKey {
                kid,
                published: 0,
                signing_from,
            });
        }
        schedule.keys.sort_by_key(|key| key.signing_from);
        let store = Self {
            settings,
            ring: RwLock::new(Ring { schedule, keys }),
        };
        if store.ring.read().schedule.signing(now).is_none() {
            let kid = store.new_kid(now);
            let key = store.generate(&kid)?;
            let mut ring = store.ring.write();
            ring.keys.insert(kid.clone(), key);
            ring.schedule.keys.insert(
                0,
                ScheduledKey {
                    kid: kid.clone(),
                    published: now,
                    signing_from: now,
                },
            );
            tracing::info!(kid, dir = %dir.display(), "no signing key yet: generated one");
        }
        store.prune(now)?;
        store.save()?;
        Ok(store)
    }

    /// Starts a rotation: the next key is a `KID.pem` in the directory the
    /// schedule does not name yet (made with `swarmgate keygen`), else one the
    /// bridge generates. It is published now and signs after the delay.
    pub fn rotate(&self, now: u64) -> Result<ScheduledKey, KeyError> {
        // Before a key is generated for nothing.
        self.ring.read().schedule.check_not_pending(now)?;
        let dir = &self.settings.dir;
        let unscheduled = unscheduled_pems(dir, &self.ring.read().schedule)?;
        let (kid, key) = match unscheduled
            .into_iter()
            .max_by_key(|(_, modified)| *modified)
        {
            Some((kid, _)) => {
                let key = load_pem(dir, &kid)?;
                (kid, key)
            }
            None => {
                let kid = self.new_kid(now);
                let key = self.generate(&kid)?;
                (kid, key)
            }
        };
        {
            let mut ring = self.ring.write();
            ring.schedule
                .rotate(&kid, now, self.settings.rotation_delay)?;
            ring.keys.insert(kid.clone(), key);
        }
        self.save()?;
        let ring = self.ring.read();
        let entry = ring
            .schedule
            .keys
            .iter()
            .find(|key| key.kid == kid)
            .cloned()
            .ok_or(KeyError::NoSigningKey)?;
        tracing::info!(
            kid = entry.kid,
            signing_from = entry.signing_from,
            "key rotation started: the new key is published now and signs after bridge.rotation_delay"
        );
        Ok(entry)
    }

    /// Drops keys past their overlap, deleting their private halves.
    pub fn prune(&self, now: u64) -> Result<(), KeyError> {
        let gone = {
            let mut ring = self.ring.write();
            let gone = ring.schedule.prune(now, self.settings.retired_overlap);
            for kid in &gone {
                ring.keys.remove(kid);
            }
            gone
        };
        if gone.is_empty() {
            return Ok(());
        }
        for kid in &gone {
            let path = self.settings.dir.join(format!("{kid}.pem"));
            if let Err(error) = std::fs::remove_file(&path) {
                tracing::warn!(file = %path.display(), "retired key not deleted: {error}");
            }
            tracing::info!(kid, "retired key removed from the JWKS and deleted");
        }
        self.save()
    }

    /// The schedule as it stands.
    pub fn schedule(&self) -> Schedule {
        self.ring.read().schedule.clone()
    }

    /// The kid signing at `now`.
    pub fn signing_kid(&self, now: u64) -> Option<String> {
        self.ring
            .read()
            .schedule
            .signing(now)
            .map(|k| k.kid.clone())
    }

    /// The published public keys at `now`.
    pub fn jwks(&self, now: u64) -> JwkSet {
        let ring = self.ring.read();
        let keys = ring
            .schedule
            .published(now, self.settings.retired_overlap)
            .into_iter()
            .filter_map(|entry| ring.keys.get(&entry.kid).map(|key| key.jwk.clone()))
            .collect();
        JwkSet { keys }
    }

    /// A token approving `info_hash`, signed by the key in force at `now`.
    pub fn sign(&self, info_hash: InfoHash, now: u64) -> Result<String, KeyError> {
        let ring = self.ring.read();
        let entry = ring.schedule.signing(now).ok_or(KeyError::NoSigningKey)?;
        let key = ring.keys.get(&entry.kid).ok_or(KeyError::NoSigningKey)?;
        let spec = TokenSpec {
            kid: entry.kid.clone(),
            issuer: self.settings.issuer.clone(),
            audience: self.settings.audience.clone(),
            info_hash,
            ttl: self.settings.token_ttl,
        };
        Ok(mint::mint(&key.encoding, key.algorithm, &spec, now)?)
    }

    /// Checks that `token` was signed by a key this bridge publishes at
    /// `now`; returns the infohash it approves.
    pub fn verify(&self, token: &str, now: u64) -> Result<InfoHash, KeyError> {
        let refused = |why: &str| KeyError::Token(why.to_owned());
        if token.len() > 8192 {
            return Err(refused("longer than 8 KiB"));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| refused(&e.to_string()))?;
        let kid = header.kid.ok_or_else(|| refused("no kid"))?;
        let ring = self.ring.read();
        let published = ring
            .schedule
            .published(now, self.settings.retired_overlap)
            .iter()
            .any(|entry| entry.kid == kid);
        let key = ring
            .keys
            .get(&kid)
            .filter(|_| published)
            .ok_or_else(|| refused("not signed by a key this bridge publishes"))?;
        let mut validation = Validation::new(key.algorithm);
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.set_issuer(&[&self.settings.issuer]);
        match &self.settings.audience {
            Some(audience) => validation.set_audience(&[audience]),
            None => validation.validate_aud = false,
        }
        let data = jsonwebtoken::decode::<SeedClaims>(token, &key.decoding, &validation)
            .map_err(|e| refused(&e.to_string()))?;
        InfoHash::from_hex(&data.claims.infohash).map_err(|_| refused("no valid infohash claim"))
    }

    fn new_kid(&self, now: u64) -> String {
        // Short (it travels in every token, and UDP announces carry at most
        // 241 token bytes), unique per second, sortable by age.
        let mut kid = format!("k{}", base36(now));
        let ring = self.ring.read();
        let mut n = 0;
        while ring.keys.contains_key(&kid) || self.settings.dir.join(format!("{kid}.pem")).exists()
        {
            n += 1;
            kid = format!("k{}{n}", base36(now));
        }
        kid
    }

    fn generate(&self, kid: &str) -> Result<LoadedKey, KeyError> {
        let generated = mint::generate(self.settings.algorithm, kid)?;
        let path = self.settings.dir.join(format!("{kid}.pem"));
        mint::write_private_key(&path, generated.private_pem.as_bytes())?;
        load_pem(&self.settings.dir, kid)
    }

    fn save(&self) -> Result<(), KeyError> {
        let schedule = self.ring.read().schedule.clone();
        let mut text = serde_json::to_string_pretty(&schedule).unwrap_or_default();
        text.push('\n');
        let path = self.settings.dir.join(SCHEDULE_FILE);
        crate::files::write_atomically(&path, text.as_bytes()).map_err(|e| file_error(&path, &e))
    }
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn file_error(path: &Path, error: &dyn std::fmt::Display) -> KeyError {
    KeyError::File {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// `KID.pem` files the schedule does not name, with their modification times.
fn unscheduled_pems(
    dir: &Path,
    schedule: &Schedule,
) -> Result<Vec<(String, std::time::SystemTime)>, KeyError> {
    let entries = std::fs::read_dir(dir).map_err(|e| file_error(dir, &e))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(kid) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".pem"))
        else {
            continue;
        };
        if kid.is_empty() || schedule.keys.iter().any(|key| key.kid == kid) {
            continue;
        }
        let modified = entry
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        found.push((kid.to_owned(), modified));
    }
    Ok(found)
}

fn load_pem(dir: &Path, kid: &str) -> Result<LoadedKey, KeyError> {
    let path = dir.join(format!("{kid}.pem"));
    let pem = std::fs::read(&path).map_err(|e| file_error(&path, &e))?;
    let (encoding, algorithm) = mint::signing_key(&pem, None).map_err(|e| file_error(&path, &e))?;
    let mut jwk = Jwk::from_encoding_key(&encoding, algorithm)
        .map_err(|e| file_error(&path, &format!("no public key: {e}")))?;
    jwk.common.key_id = Some(kid.to_owned());
    jwk.common.key_algorithm = match algorithm {
        Algorithm::ES256 => Some(KeyAlgorithm::ES256),
        Algorithm::EdDSA => Some(KeyAlgorithm::EdDSA),
        Algorithm::RS256 => Some(KeyAlgorithm::RS256),
        _ => None,
    };
    jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let decoding = DecodingKey::from_jwk(&jwk)
        .map_err(|e| file_error(&path, &format!("unusable public key: {e}")))?;
    Ok(LoadedKey {
        encoding,
        algorithm,
        jwk,
        decoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn schedule(entries: &[(&str, u64, u64)]) -> Schedule {
        Schedule {
            keys: entries
                .iter()
                .map(|&(kid, published, signing_from)| ScheduledKey {
                    kid: kid.into(),
                    published,
                    signing_from,
                })
                .collect(),
        }
    }

    fn kids(keys: Vec<&ScheduledKey>) -> Vec<&str> {
        keys.into_iter().map(|k| k.kid.as_str()).collect()
    }

    #[test]
    fn a_rotation_publishes_first_signs_later_and_retires_after_the_overlap() {
        let mut s = schedule(&[("a", 0, 0)]);
        s.rotate("b", 1000, Duration::from_secs(300))
            .expect("rotates");
        // Published at once, not yet signing.
        assert_eq!(kids(s.published(1000, HOUR)), ["a", "b"]);
        assert_eq!(s.signing(1299).map(|k| k.kid.as_str()), Some("a"));
        assert_eq!(s.signing(1300).map(|k| k.kid.as_str()), Some("b"));
        // A second rotation while one is pending is refused.
        assert!(matches!(
            s.rotate("c", 1100, Duration::ZERO),
            Err(KeyError::Pending { seconds: 200, .. })
        ));
        // The old key stays published for the overlap after b signs.
        assert_eq!(kids(s.published(1300 + 3599, HOUR)), ["a", "b"]);
        assert_eq!(kids(s.published(1300 + 3600, HOUR)), ["b"]);
        assert!(s.prune(1300 + 3599, HOUR).is_empty());
        assert_eq!(s.prune(1300 + 3600, HOUR), ["a"]);
        assert_eq!(kids(s.published(5000, HOUR)), ["b"]);
    }

    #[test]
    fn a_key_is_never_in_the_jwks_before_it_is_published() {
        let s = schedule(&[("a", 0, 0), ("b", 50, 60)]);
        assert_eq!(kids(s.published(49, HOUR)), ["a"]);
        assert_eq!(s.pending(59).map(|k| k.kid.as_str()), Some("b"));
        assert_eq!(s.pending(60), None);
    }

    fn settings(dir: &Path) -> KeySettings {
        KeySettings {
            dir: dir.to_owned(),
            algorithm: KeyAlg::Es256,
            issuer: "bridge-test".into(),
            audience: None,
            token_ttl: None,
            rotation_delay: Duration::from_secs(10),
            retired_overlap: Duration::from_secs(100),
        }
    }

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("swarmgate-keys-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_store_keeps_its_schedule_across_restarts_and_deletes_retired_keys() {
        let dir = temp("store");
        let info_hash = InfoHash([7; 20]);
        let store = KeyStore::open(settings(&dir), 1000).expect("opens");
        let first = store.signing_kid(1000).expect("a generated key");
        let old_token = store.sign(info_hash, 1000).expect("signs");
        assert_eq!(store.verify(&old_token, 1000).expect("valid"), info_hash);
        let next = store.rotate(1000).expect("rotates");
        assert_eq!(next.signing_from, 1010);
        assert!(matches!(store.rotate(1005), Err(KeyError::Pending { .. })));
        assert_eq!(store.signing_kid(1009).as_deref(), Some(first.as_str()));
        assert_eq!(store.signing_kid(1010).as_deref(), Some(next.kid.as_str()));
        drop(store);

        // Reopened: the same schedule, both keys published, old tokens valid.
        let store = KeyStore::open(settings(&dir), 1020).expect("reopens");
        assert_eq!(store.signing_kid(1020).as_deref(), Some(next.kid.as_str()));
        assert_eq!(store.jwks(1020).keys.len(), 2);
        assert_eq!(
            store.verify(&old_token, 1020).expect("in the overlap"),
            info_hash
        );
        // After the overlap: gone from the JWKS and from disk, tokens refused.
        store.prune(1110).expect("prunes");
        assert_eq!(store.jwks(1110).keys.len(), 1);
        assert!(!dir.join(format!("{first}.pem")).exists());
        assert!(store.verify(&old_token, 1110).is_err());
        let new_token = store.sign(info_hash, 1110).expect("signs");
        assert!(store.verify(&new_token, 1110).is_ok());
        // Forged, for another issuer, or garbage: refused.
        let mut forged = new_token.clone();
        forged.truncate(forged.len() - 3);
        forged.push_str("AAA");
        assert!(store.verify(&forged, 1110).is_err());
        assert!(store.verify("not.a.jwt", 1110).is_err());
        assert!(store.verify(&"A".repeat(10_000), 1110).is_err());

        // A key made with swarmgate keygen is the next one a rotation uses.
        let made = mint::generate(KeyAlg::EdDsa, "ops-2027").expect("generates");
        mint::write_private_key(&dir.join("ops-2027.pem"), made.private_pem.as_bytes())
            .expect("writes");
        assert_eq!(store.rotate(1200).expect("rotates").kid, "ops-2027");
        assert_eq!(store.signing_kid(1210).as_deref(), Some("ops-2027"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_schedule_is_set_aside_and_rebuilt_from_the_key_files() {
        let dir = temp("corrupt");
        let store = KeyStore::open(settings(&dir), 1000).expect("opens");
        let kid = store.signing_kid(1000).expect("key");
        drop(store);
        std::fs::write(dir.join(SCHEDULE_FILE), b"{ not json").expect("corrupt");
        let store = KeyStore::open(settings(&dir), 2000).expect("opens anyway");
        assert_eq!(
            store.signing_kid(2000),
            Some(kid),
            "the key file is kept and signs"
        );
        let aside = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().contains("corrupt-"))
            .count();
        assert_eq!(aside, 1, "the corrupt file is kept for inspection");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kids_are_short() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert!(base36(u64::MAX).len() <= 13);
    }
}
