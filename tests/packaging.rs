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

/// `SWARMGATE_X: value` lines of one service in compose.yaml.
fn compose_environment(compose: &str, service: &str) -> BTreeMap<String, String> {
    let header = format!("  {service}:");
    compose
        .lines()
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("   "))
        .filter_map(|line| line.trim().split_once(": "))
        .filter(|(name, _)| name.starts_with("SWARMGATE_"))
        .map(|(name, value)| {
            let value = value.trim();
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value.trim_matches('"'));
            (name.to_owned(), unquoted.to_owned())
        })
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
    let vars = compose_environment(&compose, "swarmgate");
    assert!(vars.len() >= 5, "{vars:?}");
    let config = load(&vars);
    assert_eq!(config.auth.mode, AuthMode::Jwt);
    assert_eq!(
        config.auth.keys_dir, "",
        "no development keys in a deployment"
    );
    assert_eq!(config.log.format, LogFormat::Json);

    // swarmgate trusts the bridge's JWKS; the bridge signs with the same issuer.
    let bridge = load(&compose_environment(&compose, "bridge")).bridge;
    assert_eq!(
        config.auth.jwks_url,
        format!(
            "http://bridge:{}/keys/services/{}/keys",
            bridge.listen.port(),
            bridge.service
        )
    );
    assert_eq!(config.auth.issuer, bridge.issuer);
    // The bridge reads the registry by service name, with an account that
    // deploy/htpasswd holds.
    assert_eq!(bridge.upstream, "http://registry:5000");
    assert!(read("deploy/htpasswd").starts_with("demo:$2y$"));
    assert!(
        read("deploy/htpasswd")
            .lines()
            .any(|l| l.starts_with(&format!("{}:$2y$", bridge.upstream_username)))
    );
    assert!(compose.contains("image: registry:2"));
    // Its torrents announce to the tracker's published ports, over both protocols.
    let http = config.http.listen.port();
    let udp = config.udp.listen.port();
    assert!(
        bridge
            .trackers
            .contains(&format!("http://127.0.0.1:{http}/announce"))
    );
    assert!(
        bridge
            .trackers
            .contains(&format!("udp://127.0.0.1:{udp}/announce"))
    );
    assert!(compose.contains(&format!("\"{http}:{http}/tcp\"")));
    assert!(compose.contains(&format!("\"{udp}:{udp}/udp\"")));
    assert!(compose.contains(&format!("\"{0}:{0}\"", bridge.listen.port())));
    assert!(bridge.keys_dir.starts_with("/var/lib/swarmgate/"));
    assert!(read("Dockerfile").contains("/var/lib/swarmgate"));

    // Prometheus scrapes the admin listener, which listens beyond loopback.
    let admin: SocketAddr = config.admin.listen;
    assert!(admin.ip().is_unspecified(), "{admin}");
    let prometheus = read("deploy/prometheus/prometheus.yml");
    assert!(prometheus.contains(&format!("swarmgate:{}", admin.port())));
    assert!(prometheus.contains(&format!("bridge:{}", bridge.admin_listen.port())));
    assert!(bridge.admin_listen.ip().is_unspecified());
    assert!(compose.contains("./deploy/prometheus:/etc/prometheus:ro"));
    assert!(prometheus.contains("- alerts.yml"));
    // Grafana gets the dashboard and its provisioning.
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro"));
    let provider = read("deploy/grafana/provisioning/dashboards/swarmgate.yml");
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    assert!(datasource.contains("url: http://prometheus:9090"));
}

#[test]
fn the_cluster_profile_runs_two_instances_that_share_redis_and_the_udp_secret() {
    let compose = read("compose.yaml");
    let single = load(&compose_environment(&compose, "swarmgate"));
    let instances: Vec<Config> = ["tracker-a", "tracker-b"]
        .iter()
        .map(|service| load(&compose_environment(&compose, service)))
        .collect();
    for config in &instances {
        assert_eq!(config.cluster.redis, "redis://redis:6379");
        assert_eq!(config.cluster.namespace, instances[0].cluster.namespace);
        assert_eq!(config.udp.secret, instances[0].udp.secret);
        assert!(config.udp.secret.len() >= 32);
        // The same keys as the single tracker: torrents work on every instance.
        assert_eq!(config.auth.jwks_url, single.auth.jwks_url);
        assert_eq!(config.auth.issuer, single.auth.issuer);
    }
    assert!(compose.contains("  redis:\n    profiles: [\"cluster\"]"));
    for service in ["tracker-a", "tracker-b"] {
        assert!(
            compose.contains(&format!("  {service}:\n    profiles: [\"cluster\"]")),
            "{service} belongs to the cluster profile"
        );
    }
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
    // The snapshot goes to the state directory the unprivileged user owns.
    assert!(
        config
            .store
            .snapshot_path
            .starts_with("/var/lib/swarmgate/")
    );
    assert!(dockerfile.contains("--chown=65532:65532 /state /var/lib/swarmgate"));
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
