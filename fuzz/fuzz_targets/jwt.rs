//! JWT header and claims: any token text through the header reader and the
//! verifier, and any header and claims JSON signed with a trusted key, so the
//! claims parser (which runs only after a good signature) is reached too.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use swarmgate::gateway::keys::VerifyingKey;
use swarmgate::gateway::mint;
use swarmgate::gateway::token::{self, TokenPolicy};

struct Fixture {
    policy: TokenPolicy,
    signing: EncodingKey,
    verifying: VerifyingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let pem = include_bytes!("../../keys/dev-eddsa.pem");
    let (signing, _) = mint::signing_key(pem, None).expect("dev key");
    let jwks = include_bytes!("../../keys/jwks.json");
    let loaded = swarmgate::gateway::keys::parse_jwks(jwks).expect("dev jwks");
    let verifying = loaded
        .keys
        .into_iter()
        .find(|k| k.kid.as_deref() == Some("dev-eddsa"))
        .expect("dev-eddsa in jwks.json");
    Fixture {
        policy: TokenPolicy {
            issuer: "dev-registry".into(),
            audience: Some("https://tracker.example/announce".into()),
            algorithms: vec![Algorithm::EdDSA, Algorithm::ES256, Algorithm::RS256],
            leeway_secs: 60,
            require_exp: false,
            max_token_bytes: 4096,
        },
        signing,
        verifying,
    }
});

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    let now = 1_800_000_000;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let token = if mode & 1 == 0 {
        // The bytes as a token, as a client may send anything.
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // Header JSON and claims JSON (split at the first NUL), signed.
        let at = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        let (header, claims) = rest.split_at(at);
        let claims = claims.get(1..).unwrap_or_default();
        let message = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let Ok(signature) =
            jsonwebtoken::crypto::sign(message.as_bytes(), &fixture.signing, Algorithm::EdDSA)
        else {
            return;
        };
        format!("{message}.{signature}")
    };
    if let Ok(header) = token::read_header(&token, &fixture.policy) {
        if let Ok(approval) =
            token::verify(&token, &header, &fixture.verifying, &fixture.policy, now)
        {
            let _ = approval.check_time(now, 60);
        }
    }
});
