//! The agent's own registry credentials, read from a Docker `config.json`
//! (`{"auths": {"host": {"auth": base64("user:pass")}}}`, or `username` and
//! `password` fields): the format Kubernetes pull secrets
//! (`kubernetes.io/dockerconfigjson`) and `docker login` write. Pure.
//!
//! They are used only for callers that send no `Authorization`: under
//! Kubernetes, CRI gives a mirror no pull secret (containerd#10540), so the
//! node's agent carries them, as the kubelet's own credential file would.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;

/// Why a `config.json` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthsError {
    /// The file is not the JSON Docker writes.
    #[error("not a Docker config.json: {0}")]
    Json(String),
    /// An `auth` field that is not base64 of `user:password`.
    #[error("auths.{0}.auth is not base64 of \"user:password\"")]
    Auth(String),
}

/// A user and password for one registry host.
#[derive(Clone, PartialEq, Eq)]
pub struct Login {
    /// The user (or `<token>` for registries that take a token as password).
    pub username: String,
    /// The password or token.
    pub password: String,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret, not even in a debug log.
        write!(f, "Login({:?}, <redacted>)", self.username)
    }
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    auths: HashMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The logins of a `config.json`, keyed by registry host (`host[:port]`,
/// with any `https://` prefix and path that Docker writes for Docker Hub
/// taken off).
pub fn parse(text: &str) -> Result<HashMap<String, Login>, AuthsError> {
    let file: File = serde_json::from_str(text).map_err(|e| AuthsError::Json(e.to_string()))?;
    let mut logins = HashMap::new();
    for (key, entry) in file.auths {
        let host = host_of(&key);
        let login = match (entry.auth, entry.username, entry.password) {
            (Some(auth), _, _) if !auth.is_empty() => {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(|| AuthsError::Auth(host.clone()))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| AuthsError::Auth(host.clone()))?;
                Login {
                    username: username.to_owned(),
                    password: password.to_owned(),
                }
            }
            (_, Some(username), Some(password)) => Login { username, password },
            _ => continue,
        };
        logins.insert(host, login);
    }
    Ok(logins)
}

/// `https://index.docker.io/v1/` → `index.docker.io`; `host:5000` stays.
fn host_of(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_fields_and_user_password_fields_are_read() {
        let text = r#"{"auths": {
            "registry.example:5000": {"auth": "YWxpY2U6czNjcjN0OndpdGg6Y29sb25z"},
            "https://index.docker.io/v1/": {"username": "bob", "password": "pw"},
            "empty.example": {}
        }, "credsStore": "desktop"}"#;
        let logins = parse(text).expect("parses");
        assert_eq!(logins.len(), 2);
        let alice = &logins["registry.example:5000"];
        assert_eq!(alice.username, "alice");
        assert_eq!(alice.password, "s3cr3t:with:colons");
        assert_eq!(logins["index.docker.io"].username, "bob");
        assert!(!format!("{alice:?}").contains("s3cr3t"));
    }

    #[test]
    fn bad_files_are_errors_that_name_the_host() {
        assert!(matches!(parse("{"), Err(AuthsError::Json(_))));
        let error = parse(r#"{"auths": {"h": {"auth": "bm9jb2xvbg=="}}}"#).expect_err("no colon");
        assert_eq!(
            error.to_string(),
            "auths.h.auth is not base64 of \"user:password\""
        );
        assert!(parse(r#"{"auths": {"h": {"auth": "!!"}}}"#).is_err());
        assert!(parse("{}").expect("no auths").is_empty());
    }
}
