//! Token check cost: cold (signature verified) per algorithm, and cached.
//! `cargo bench --bench token`.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;
use swarmgate::bittorrent::InfoHash;
use swarmgate::gateway::keys::{KeySet, VerifyingKey};
use swarmgate::gateway::layer::unix_now;
use swarmgate::gateway::mint::{self, KeyAlg, TokenSpec};
use swarmgate::gateway::token::{self, TokenPolicy};
use swarmgate::gateway::{Gateway, KeySources};

fn policy() -> TokenPolicy {
    TokenPolicy {
        issuer: "bench".into(),
        audience: None,
        algorithms: vec![
            Algorithm::RS256,
            Algorithm::PS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ],
        leeway_secs: 60,
        require_exp: false,
        max_token_bytes: 4096,
    }
}

fn key_and_token(alg: KeyAlg, sign_with: Algorithm, kid: &str) -> (VerifyingKey, String) {
    let generated = mint::generate(alg, kid).expect("keygen");
    let mut jwk = generated.public_jwk;
    jwk.common.key_algorithm = None; // let PS256 use the RSA key
    let key = VerifyingKey::from_jwk(&jwk).expect("jwk");
    let (signing, alg) =
        mint::signing_key(generated.private_pem.as_bytes(), Some(sign_with)).expect("pem");
    let spec = TokenSpec {
        kid: kid.into(),
        issuer: "bench".into(),
        audience: None,
        info_hash: InfoHash([7; 20]),
        ttl: None,
    };
    (
        key,
        mint::mint(&signing, alg, &spec, unix_now()).expect("mint"),
    )
}

fn tokens(c: &mut Criterion) {
    let cases = [
        (KeyAlg::Rs256, Algorithm::RS256, "rs256"),
        (KeyAlg::Rs256, Algorithm::PS256, "ps256"),
        (KeyAlg::Es256, Algorithm::ES256, "es256"),
        (KeyAlg::EdDsa, Algorithm::EdDSA, "eddsa"),
    ];
    let policy = policy();
    let now = unix_now();
    let mut cold = c.benchmark_group("token_cold");
    let mut prepared = Vec::new();
    for (alg, sign_with, name) in cases {
        let (key, token) = key_and_token(alg, sign_with, name);
        cold.bench_with_input(BenchmarkId::from_parameter(name), &token, |b, token| {
            b.iter(|| {
                let header = token::read_header(token, &policy).expect("header");
                black_box(token::verify(token, &header, &key, &policy, now).expect("valid"))
            })
        });
        prepared.push((key, token, name));
    }
    cold.finish();

    let keys: Vec<VerifyingKey> = prepared.iter().map(|(key, _, _)| key.clone()).collect();
    let gateway = Arc::new(Gateway::new(
        policy.clone(),
        KeySources {
            static_keys: keys,
            fetcher: None,
            refetch: swarmgate::gateway::RefetchPolicy {
                min_interval: std::time::Duration::from_secs(1),
                max_waiting: 1024,
            },
        },
        1000,
    ));
    assert_eq!(gateway.keys().len(), KeySet::new(Vec::new()).len() + 4);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut cached = c.benchmark_group("token_cached");
    for (_, token, name) in &prepared {
        runtime
            .block_on(gateway.check(Some(token), now))
            .expect("warm the cache");
        cached.bench_with_input(BenchmarkId::from_parameter(name), token, |b, token| {
            b.to_async(&runtime).iter(|| async {
                black_box(gateway.check(Some(token), now).await.expect("cached"))
            })
        });
    }
    cached.finish();
}

criterion_group!(benches, tokens);
criterion_main!(benches);
