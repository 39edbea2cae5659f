//! The JWT gateway end to end: a real JWKS server on loopback, a real
//! swarmgate server, real HTTP announces carrying real signed tokens.

mod common;
#[path = "common/jwks.rs"]
mod jwks;

use std::time::{Duration, Instant};

use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jwks::JwksServer;
use serde_bencode::value::Value;
use serde_json::json;
use swarmgate::config::{AuthMode, Config};
use swarmgate::gateway::layer::unix_now;
use swarmgate::gateway::mint::{self, KeyAlg};

/// A signing key as the registry holds it, with its published JWK.
struct RegistryKey {
    kid: String,
    private_pem: String,
    jwk: Jwk,
}

impl RegistryKey {
    fn new(alg: KeyAlg, kid: &str) -> Self {
        let generated = mint::generate(alg, kid).expect("keygen");
        Self {
            kid: kid.into(),
            private_pem: generated.private_pem,
            jwk: generated.public_jwk,
        }
    }

    /// Quay publishes RSA keys with no `alg` and no `use`.
    fn quay_shaped(mut self) -> Self {
        self.jwk.common.key_algorithm = None;
        self.jwk.common.public_key_use = None;
        self
    }

    fn sign(&self, alg: Algorithm, claims: serde_json::Value) -> String {
        let (key, alg) =
            mint::signing_key(self.private_pem.as_bytes(), Some(alg)).expect("signing key");
        let mut header = Header::new(alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    }
}

fn jwks_of(keys: &[&RegistryKey]) -> String {
    json!({ "keys": keys.iter().map(|k| &k.jwk).collect::<Vec<_>>() }).to_string()
}

const ISSUER: &str = "quay";
const AUDIENCE: &str = "https://tracker.example/announce";

fn hex(torrent: u8) -> String {
    format!("{torrent:02x}").repeat(20)
}

fn claims(torrent: u8) -> serde_json::Value {
    json!({ "iss": ISSUER, "aud": AUDIENCE, "infohash": hex(torrent) })
}

fn jwt_config(jwks_url: &str) -> Config {
    let mut config = loopback_config();
    config.auth.mode = AuthMode::Jwt;
    config.auth.keys_dir = String::new();
    config.auth.jwks_url = jwks_url.to_owned();
    config.auth.issuer = ISSUER.into();
    config.auth.audience = AUDIENCE.into();
    config.auth.jwks_refresh = Duration::from_secs(3600);
    config
}

/// Announces for `torrent` with `token`; returns the failure reason, or None on success.
async fn announce_with(http: std::net::SocketAddr, torrent: u8, token: &str) -> Option<String> {
    let (status, body) = get(
        http,
        &format!(
            "/announce?{}&jwt={token}",
            announce_query(torrent, 1, 6881, 0, "")
        ),
    )
    .await;
    assert_eq!(status, 200);
    failure(&body)
}

async fn wait_ready(server: &swarmgate::server::Server) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.gateway().expect("jwt mode").keys_loaded() {
        assert!(Instant::now() < deadline, "no key set loaded within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A JWKS server publishing `keys`, and a ready tracker trusting it (with `tweak` applied).
async fn tracker_trusting(
    keys: &[&RegistryKey],
    tweak: impl FnOnce(&mut Config),
) -> (JwksServer, swarmgate::server::Server, std::net::SocketAddr) {
    let jwks = JwksServer::start(jwks_of(keys)).await;
    let mut config = jwt_config(&jwks.url);
    tweak(&mut config);
    let server = start(config).await;
    wait_ready(&server).await;
    let http = server.http_addr.expect("http");
    (jwks, server, http)
}

#[tokio::test]
async fn every_accepted_algorithm_and_every_refusal() {
    let rsa = RegistryKey::new(KeyAlg::Rs256, "rsa-1").quay_shaped();
    let ec = RegistryKey::new(KeyAlg::Es256, "ec-1");
    let ed = RegistryKey::new(KeyAlg::EdDsa, "ed-1");
    let (_jwks, server, http) = tracker_trusting(&[&rsa, &ec, &ed], |_| {}).await;

    for (key, alg) in [
        (&rsa, Algorithm::RS256),
        (&rsa, Algorithm::PS256),
        (&ec, Algorithm::ES256),
        (&ed, Algorithm::EdDSA),
    ] {
        assert_eq!(
            announce_with(http, 1, &key.sign(alg, claims(1))).await,
            None,
            "{alg:?}"
        );
    }

    // HS256 "signed" with the RSA public key as the HMAC secret: algorithm confusion.
    let der = pem::parse(&rsa.private_pem).expect("pem").into_contents();
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).expect("rsa");
    let public_der = aws_lc_rs::encoding::AsDer::<aws_lc_rs::encoding::PublicKeyX509Der>::as_der(
        aws_lc_rs::signature::KeyPair::public_key(&pair),
    )
    .expect("spki");
    let public_pem = pem::encode(&pem::Pem::new("PUBLIC KEY", public_der.as_ref().to_vec()));
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let confused = jsonwebtoken::encode(
        &hs_header,
        &claims(1),
        &EncodingKey::from_secret(public_pem.as_bytes()),
    )
    .expect("hs256");

    let b64 = |v: serde_json::Value| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let unsigned = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "kid": "ec-1"})),
        b64(claims(1))
    );
    let good = ec.sign(Algorithm::ES256, claims(1));
    let (head, sig) = good.rsplit_once('.').expect("three parts");
    // Flip the first signature character to another base64url letter.
    let flipped = if sig.starts_with('A') { 'B' } else { 'A' };
    let tampered_sig = format!("{head}.{flipped}{}", sig.get(1..).unwrap_or_default());
    let (h, rest) = good.split_once('.').expect("parts");
    let (_, s) = rest.split_once('.').expect("parts");
    let swapped_claims = format!("{h}.{}.{s}", b64(claims(2)));
    let mut stranger = RegistryKey::new(KeyAlg::Es256, "nobody-knows-me");
    stranger.kid = "nobody-knows-me".into();
    let now = unix_now();
    let mut uppercase = claims(0xab);
    uppercase["infohash"] = json!(hex(0xab).to_uppercase());

    let cases: Vec<(&str, String, u8, &str)> = vec![
        (
            "alg none",
            unsigned,
            1,
            "unapproved request: invalid jwt: algorithm not allowed (none",
        ),
        (
            "HS256 with the public key",
            confused,
            1,
            "unapproved request: invalid jwt: algorithm not allowed (HS256",
        ),
        (
            "ES256 header on an RSA key",
            format!(
                "{}.{}.AAAA",
                b64(json!({"alg": "ES256", "kid": "rsa-1"})),
                b64(claims(1))
            ),
            1,
            "unapproved request: invalid jwt: algorithm not allowed (ES256 does not fit the Rsa key rsa-1)",
        ),
        (
            "unknown kid",
            stranger.sign(Algorithm::ES256, claims(1)),
            1,
            "unapproved request: invalid jwt: unknown signing key (kid nobody-knows-me)",
        ),
        (
            "tampered signature",
            tampered_sig,
            1,
            "unapproved request: invalid jwt: bad signature",
        ),
        (
            "claims swapped under a valid signature",
            swapped_claims,
            2,
            "unapproved request: invalid jwt: bad signature",
        ),
        (
            "expired",
            ec.sign(
                Algorithm::ES256,
                json!({"iss": ISSUER, "aud": AUDIENCE, "infohash": hex(1), "exp": now - 3600}),
            ),
            1,
            "unapproved request: invalid jwt: expired",
        ),
        (
            "not yet valid",
            ec.sign(
                Algorithm::ES256,
                json!({"iss": ISSUER, "aud": AUDIENCE, "infohash": hex(1), "nbf": now + 3600}),
            ),
            1,
            "unapproved request: invalid jwt: not yet valid",
        ),
        (
            "wrong issuer",
            ec.sign(
                Algorithm::ES256,
                json!({"iss": "mallory", "aud": AUDIENCE, "infohash": hex(1)}),
            ),
            1,
            "unapproved request: invalid jwt: wrong issuer",
        ),
        (
            "wrong audience",
            ec.sign(
                Algorithm::ES256,
                json!({"iss": ISSUER, "aud": ["https://elsewhere/announce"], "infohash": hex(1)}),
            ),
            1,
            "unapproved request: invalid jwt: wrong audience",
        ),
        (
            "another torrent's token",
            ec.sign(Algorithm::ES256, claims(2)),
            1,
            "unapproved request: invalid jwt: infohash not approved",
        ),
        (
            "not a JWT",
            "abc.def".into(),
            1,
            "unapproved request: invalid jwt: malformed token",
        ),
        (
            "garbage header",
            "!!!.e30.AAAA".into(),
            1,
            "unapproved request: invalid jwt: malformed token",
        ),
    ];
    for (what, token, torrent, expected) in cases {
        let reason = announce_with(http, torrent, &token)
            .await
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(reason.starts_with(expected), "{what}: {reason}");
        // The next legitimate request is served normally.
        assert_eq!(announce_with(http, 1, &good).await, None, "after {what}");
    }

    assert_eq!(
        announce_with(http, 0xab, &ec.sign(Algorithm::ES256, uppercase)).await,
        None,
        "uppercase hex infohash"
    );
    let (_, body) = get(
        http,
        &format!("/announce?{}", announce_query(1, 1, 6881, 0, "")),
    )
    .await;
    assert!(
        failure(&body)
            .expect("refused")
            .starts_with("unapproved request: missing jwt")
    );

    // A bearer header works for custom agents.
    let (_, body) = get_with(
        http,
        &format!("/announce?{}", announce_query(1, 1, 6881, 0, "")),
        &[("authorization", &format!("Bearer {good}"))],
    )
    .await;
    assert_eq!(failure(&body), None);
    server.shutdown().await;
}

#[tokio::test]
async fn oversize_tokens_are_refused_quickly_and_nothing_breaks() {
    let ec = RegistryKey::new(KeyAlg::Es256, "ec-1");
    let (_jwks, server, http) = tracker_trusting(&[&ec], |_| {}).await;
    let good = ec.sign(Algorithm::ES256, claims(1));

    // 64 KiB in a bearer header, and 60 KiB in the query (a URI tops out below 64 KiB).
    let began = Instant::now();
    let huge = "a".repeat(64 * 1024);
    let (status, body) = get_with(
        http,
        &format!("/announce?{}", announce_query(1, 1, 6881, 0, "")),
        &[("authorization", &format!("Bearer {huge}"))],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        failure(&body).as_deref(),
        Some("unapproved request: invalid jwt: token too large (65536 bytes, at most 4096)")
    );
    let reason = announce_with(http, 1, &"b".repeat(60 * 1024))
        .await
        .expect("refused");
    assert!(
        reason.starts_with("unapproved request: invalid jwt: token too large (61440 bytes"),
        "{reason}"
    );
    assert!(
        began.elapsed() < Duration::from_secs(1),
        "took {:?}",
        began.elapsed()
    );

    // A raw request whose URI is longer than HTTP libraries allow at all.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(http).await.expect("connect");
    let request = format!(
        "GET /announce?jwt={} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        "c".repeat(70 * 1024)
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        answer.starts_with(b"HTTP/1.1 4"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(80)])
    );

    assert_eq!(
        announce_with(http, 1, &good).await,
        None,
        "served normally afterwards"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn quay_shaped_keys_and_tokens_work_unchanged_including_its_config_check() {
    // Quay: RS256, a 64-hex kid, JWKS entries without alg/use, claims exactly iss/aud/infohash, no exp.
    let kid = "5f0e4d0d6d39c7d7e2fb0d6a2f4e1c2b9a8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b";
    let quay = RegistryKey::new(KeyAlg::Rs256, kid).quay_shaped();
    let other_instance = RegistryKey::new(KeyAlg::Rs256, &"e".repeat(64)).quay_shaped();
    let (jwks, server, http) = tracker_trusting(&[&other_instance, &quay], |_| {}).await;

    // Quay's configuration check: info_hash = sha1("test"), numwant=0, port=80.
    let sha1_test: [u8; 20] =
        *b"\xa9\x4a\x8f\xe5\xcc\xb1\x9b\xa6\x1c\x4c\x08\x73\xd3\x91\xe9\x87\x98\x2f\xbb\xd3";
    let token = quay.sign(
        Algorithm::RS256,
        json!({"iss": "quay", "aud": AUDIENCE, "infohash": hex_of(&sha1_test)}),
    );
    assert!(token.len() > 241, "RS256 tokens are long ({})", token.len());
    let fetches_before = jwks.fetches();
    let query = format!(
        "info_hash={}&peer_id=-QU0001-000000000000&port=80&uploaded=0&downloaded=0&left=0&numwant=0&jwt={token}",
        escape(&sha1_test)
    );
    let (status, body) = get(http, &format!("/announce?{query}")).await;
    assert_eq!(status, 200);
    assert!(
        !String::from_utf8_lossy(&body).contains("failure reason"),
        "{}",
        body.escape_ascii()
    );
    assert_eq!(
        jwks.fetches(),
        fetches_before,
        "no registry lookup for a known key"
    );

    let token = quay.sign(Algorithm::RS256, claims(3));
    assert_eq!(announce_with(http, 3, &token).await, None);
    server.shutdown().await;
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn scrape_answers_only_what_the_token_approves() {
    let ec = RegistryKey::new(KeyAlg::Es256, "ec-1");
    let (_jwks, server, http) = tracker_trusting(&[&ec], |_| {}).await;
    let token1 = ec.sign(Algorithm::ES256, claims(1));
    assert_eq!(announce_with(http, 1, &token1).await, None);
    assert_eq!(
        announce_with(http, 2, &ec.sign(Algorithm::ES256, claims(2))).await,
        None
    );

    let query = format!(
        "info_hash={}&info_hash={}&jwt={token1}",
        escape(&[1; 20]),
        escape(&[2; 20])
    );
    let (_, body) = get(http, &format!("/scrape?{query}")).await;
    let reply = dict(&body);
    let Some(Value::Dict(files)) = reply.get(&b"files"[..]) else {
        panic!("files: {}", body.escape_ascii())
    };
    assert_eq!(
        files.keys().cloned().collect::<Vec<_>>(),
        vec![vec![1u8; 20]],
        "torrent 2 is left out"
    );

    let (_, body) = get(http, &format!("/scrape?info_hash={}", escape(&[1; 20]))).await;
    assert!(
        failure(&body)
            .expect("refused")
            .starts_with("unapproved request: missing jwt")
    );
    let (_, body) = get(http, &format!("/scrape?jwt={token1}")).await;
    assert!(
        failure(&body)
            .expect("refused")
            .starts_with("full scrape is not supported")
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_kid_is_accepted_on_first_use_under_a_flood_of_made_up_kids() {
    let old = RegistryKey::new(KeyAlg::Es256, "instance-a");
    let pacing = Duration::from_millis(500);
    // jwks_refresh = 1h: every fetch below is one that an unknown kid asked for.
    let (jwks, server, http) =
        tracker_trusting(&[&old], |c| c.auth.jwks_min_refetch = pacing).await;
    assert_eq!(
        announce_with(http, 1, &old.sign(Algorithm::ES256, claims(1))).await,
        None
    );

    // A hostile token holder sends a token with a fresh made-up kid every 50 ms.
    let fetches_before = jwks.fetches();
    let flood_started = Instant::now();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let flood = tokio::spawn(async move {
        let mut sent = Vec::new();
        for n in 0.. {
            if *stopped.borrow() {
                break;
            }
            let forger = RegistryKey::new(KeyAlg::Es256, &format!("forged-{n}"));
            let token = forger.sign(Algorithm::ES256, claims(1));
            sent.push(tokio::spawn(
                async move { announce_with(http, 1, &token).await },
            ));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut refusals = Vec::new();
        for request in sent {
            refusals.push(request.await.expect("join"));
        }
        refusals
    });
    // The flood is under way once it has made the tracker fetch twice.
    let deadline = Instant::now() + Duration::from_secs(30);
    while jwks.fetches() < fetches_before + 2 {
        assert!(Instant::now() < deadline, "the flood caused no refetches");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Meanwhile a registry instance restarts with a new key and uses it at once.
    let new = RegistryKey::new(KeyAlg::EdDsa, "instance-b");
    jwks.publish(jwks_of(&[&old, &new]));
    assert_eq!(
        announce_with(http, 1, &new.sign(Algorithm::EdDSA, claims(1))).await,
        None,
        "the new key is accepted on first use, flood or not"
    );

    stop.send(true).expect("flood running");
    let refusals = flood.await.expect("join");
    let elapsed = flood_started.elapsed();
    let fetches = jwks.fetches() - fetches_before;
    assert!(refusals.len() >= 2, "{} made-up kids sent", refusals.len());
    for reason in &refusals {
        let reason = reason.as_deref().expect("a made-up kid is refused");
        assert!(
            reason.starts_with("unapproved request: invalid jwt: unknown signing key"),
            "{reason}"
        );
    }
    // Paced: fetch starts at least 500 ms apart (the last may still be running).
    let allowed = (elapsed.as_millis() / pacing.as_millis()) as usize + 1;
    println!(
        "{} made-up kids in {elapsed:?}: {fetches} JWKS fetches (pacing allows {allowed})",
        refusals.len()
    );
    assert!(
        fetches <= allowed,
        "{fetches} fetches, pacing allows {allowed}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_refetch_line_refuses_at_once_and_is_counted() {
    let key = RegistryKey::new(KeyAlg::Es256, "k");
    let (jwks, server, http) = tracker_trusting(&[&key], |c| {
        c.auth.jwks_max_waiting = 1;
        c.auth.jwks_min_refetch = Duration::from_secs(3600);
    })
    .await;
    // The load at start was the last fetch: the next may start only in an
    // hour, so the first unknown kid holds the line's one place until then.
    let waiting = tokio::spawn({
        let token = RegistryKey::new(KeyAlg::Es256, "first").sign(Algorithm::ES256, claims(1));
        async move { announce_with(http, 1, &token).await }
    });
    let gateway = server.gateway().expect("jwt mode");
    while gateway.waiting_for_keys() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = RegistryKey::new(KeyAlg::Es256, "second").sign(Algorithm::ES256, claims(1));
    assert_eq!(
        announce_with(http, 1, &second).await.as_deref(),
        Some(
            "unapproved request: invalid jwt: unknown signing key, and too many requests are waiting for the key set; retry later"
        )
    );
    assert_eq!(
        announce_with(http, 1, &key.sign(Algorithm::ES256, claims(1))).await,
        None,
        "known keys are not held up by the line"
    );
    let m = scrape_metrics(server.admin_addr).await;
    assert_eq!(
        sample(
            &m,
            r#"swarmgate_auth_rejections_total{reason="refetch_busy"}"#
        ),
        1.0
    );
    waiting.abort();
    assert_eq!(jwks.fetches(), 1, "only the load at start");
    server.shutdown().await;
}

#[tokio::test]
async fn a_removed_key_is_refused_after_refresh_even_when_cached() {
    let leaving = RegistryKey::new(KeyAlg::Es256, "leaving");
    let staying = RegistryKey::new(KeyAlg::Es256, "staying");
    let (jwks, server, http) = tracker_trusting(&[&leaving, &staying], |c| {
        c.auth.jwks_refresh = Duration::from_millis(200)
    })
    .await;
    let token = leaving.sign(Algorithm::ES256, claims(1));
    assert_eq!(announce_with(http, 1, &token).await, None);
    assert_eq!(
        announce_with(http, 1, &token).await,
        None,
        "now from the cache"
    );
    assert!(server.gateway().expect("gateway").cached_tokens() >= 1);

    jwks.publish(jwks_of(&[&staying]));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match announce_with(http, 1, &token).await {
            Some(reason) => {
                assert!(
                    reason.starts_with(
                        "unapproved request: invalid jwt: unknown signing key (kid leaving)"
                    ),
                    "{reason}"
                );
                break;
            }
            None => assert!(
                Instant::now() < deadline,
                "a removed key still works after 5 s"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        announce_with(http, 1, &staying.sign(Algorithm::ES256, claims(1))).await,
        None
    );
    server.shutdown().await;
}

#[tokio::test]
async fn jwks_down_after_start_keeps_the_last_good_keys() {
    let key = RegistryKey::new(KeyAlg::Es256, "k");
    let (jwks, server, http) = tracker_trusting(&[&key], |c| {
        c.auth.jwks_refresh = Duration::from_millis(100)
    })
    .await;
    let cached = key.sign(Algorithm::ES256, claims(1));
    assert_eq!(announce_with(http, 1, &cached).await, None);

    jwks.set_down(true);
    let fetches = jwks.fetches();
    let deadline = Instant::now() + Duration::from_secs(5);
    while jwks.fetches() < fetches + 2 {
        assert!(Instant::now() < deadline, "the tracker stopped trying");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        announce_with(http, 1, &cached).await,
        None,
        "a cached token still works"
    );
    let fresh = key.sign(Algorithm::ES256, claims(2));
    assert_eq!(
        announce_with(http, 2, &fresh).await,
        None,
        "a new token by a known key still works"
    );
    let (status, _) = get(server.admin_addr, "/readyz").await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn jwks_down_at_start_refuses_clearly_then_recovers() {
    let key = RegistryKey::new(KeyAlg::EdDsa, "k");
    let jwks = JwksServer::start(jwks_of(&[&key])).await;
    jwks.set_down(true);
    let server = start(jwt_config(&jwks.url)).await;
    let http = server.http_addr.expect("http");
    let token = key.sign(Algorithm::EdDSA, claims(1));

    let (status, body) = get(server.admin_addr, "/readyz").await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    // What an alert sees: the same answer, as a gauge.
    let metrics = scrape_metrics(server.admin_addr).await;
    assert_eq!(sample(&metrics, "swarmgate_ready"), 0.0);
    let reason = announce_with(http, 1, &token).await.expect("refused");
    assert_eq!(
        reason,
        "unapproved request: invalid jwt: signing keys not loaded yet, retry later"
    );

    jwks.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(server.admin_addr, "/readyz").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "not ready 10 s after the JWKS came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = scrape_metrics(server.admin_addr).await;
    assert_eq!(sample(&metrics, "swarmgate_ready"), 1.0);
    assert_eq!(announce_with(http, 1, &token).await, None);
    server.shutdown().await;
}

#[tokio::test]
async fn development_keys_in_the_repo_verify_minted_tokens() {
    // The default configuration trusts keys/ (development keys, see keys/README.md).
    let server = start(dev_config()).await;
    let http = server.http_addr.expect("http");
    for kid in ["dev-es256", "dev-eddsa", "dev-rs256"] {
        let token = mint_dev(kid, [9; 20], None);
        // Without exp (as Quay mints them), the short dev tokens fit libtorrent's UDP limit.
        if kid != "dev-rs256" {
            assert!(
                token.len() <= mint::UDP_TOKEN_LIMIT,
                "{kid}: {} characters",
                token.len()
            );
        }
        assert_eq!(announce_with(http, 9, &token).await, None, "{kid}");
        let token = mint_dev(kid, [9; 20], Some(Duration::from_secs(3600)));
        assert_eq!(announce_with(http, 9, &token).await, None, "{kid} with exp");
    }
    server.shutdown().await;
}
