//! The container packaging stays in step with the code: every `SWARMGATE_*`
//! variable that `Dockerfile` and `compose.yaml` set is a real configuration
//! key with a valid value, and the ports they publish are the ones configured.
//! (`.ci/run` checks `compose.yaml` against the Compose specification; no
//! container engine runs in CI, so these are checked as text.)

use std::collections::BTreeMap;
use std::net::SocketAddr;

use swarmgate::config::{AuthMode, Config, LogFormat};

fn read(file: &str) -> String {
    std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).expect(file)
}

/// `SWARMGATE_X: value` lines of compose.yaml (one service sets them all).
fn compose_environment(compose: &str) -> BTreeMap<String, String> {
    compose
        .lines()
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(name, _)| name.starts_with("SWARMGATE_"))
        .map(|(name, value)| (name.to_owned(), value.trim().trim_matches('"').to_owned()))
        .collect()
}

/// `NAME=value` pairs of the Dockerfile's ENV instructions.
fn dockerfile_environment(dockerfile: &str) -> BTreeMap<String, String> {
    let joined = dockerfile.replace("\\\n", " ");
    joined
        .lines()
        .filter_map(|line| line.trim().strip_prefix("ENV "))
        .flat_map(|rest| rest.split_whitespace())
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect()
}

fn load(vars: &BTreeMap<String, String>) -> Config {
    Config::load(None, vars.clone()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn compose_sets_real_keys_and_wires_services_by_name() {
    let compose = read("compose.yaml");
    let vars = compose_environment(&compose);
    assert!(vars.len() >= 5, "{vars:?}");
    let config = load(&vars);
    assert_eq!(config.auth.mode, AuthMode::Jwt);
    assert_eq!(
        config.auth.keys_dir, "",
        "no development keys in a deployment"
    );
    assert_eq!(config.log.format, LogFormat::Json);

    // swarmgate trusts the registry's JWKS, and the registry signs with the same issuer.
    assert!(
        config.auth.jwks_url.starts_with("http://registry:5000/"),
        "{}",
        config.auth.jwks_url
    );
    assert!(compose.contains(&format!("--issuer={}", config.auth.issuer)));
    assert!(compose.contains("--listen=0.0.0.0:5000"));
    // The registry's torrents announce to the tracker's published ports.
    let http = config.http.listen.port();
    let udp = config.udp.listen.port();
    assert!(compose.contains(&format!("--tracker=http://swarmgate:{http}/announce")));
    assert!(compose.contains(&format!("--tracker=udp://swarmgate:{udp}/announce")));
    assert!(compose.contains(&format!("\"{http}:{http}/tcp\"")));
    assert!(compose.contains(&format!("\"{udp}:{udp}/udp\"")));

    // Prometheus scrapes the admin listener, which listens beyond loopback.
    let admin: SocketAddr = config.admin.listen;
    assert!(admin.ip().is_unspecified(), "{admin}");
    let prometheus = read("deploy/prometheus.yml");
    assert!(prometheus.contains(&format!("swarmgate:{}", admin.port())));
    assert!(compose.contains("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml"));
}

#[test]
fn the_dockerfile_builds_in_stages_runs_unprivileged_and_exposes_the_configured_ports() {
    let dockerfile = read("Dockerfile");
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(stages >= 2, "multi-stage");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with('0'),
        "{user}"
    );

    // The image ships no keys, so on its own it refuses to start, saying
    // what to set; with a JWKS URL (as the operator gives) it is complete.
    let mut vars = dockerfile_environment(&dockerfile);
    let refused = Config::load(None, vars.clone()).expect_err("no keys, no start");
    assert!(
        refused
            .to_string()
            .contains("set auth.keys_dir or auth.jwks_url"),
        "{refused}"
    );
    vars.insert(
        "SWARMGATE_AUTH__JWKS_URL".into(),
        "https://registry.example/keys/services/quay/keys".into(),
    );
    let config = load(&vars);
    assert_eq!(config.auth.keys_dir, "", "the image ships no keys");
    assert!(config.admin.listen.ip().is_unspecified());
    let expose = format!(
        "EXPOSE {http}/tcp {udp}/udp {admin}/tcp",
        http = config.http.listen.port(),
        udp = config.udp.listen.port(),
        admin = config.admin.listen.port()
    );
    assert!(dockerfile.contains(&expose), "{expose}");
    // What the build stage compiles exists under those names.
    assert!(dockerfile.contains("--bin swarmgate --example registry"));
    assert!(
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/registry.rs")).exists()
    );
}
