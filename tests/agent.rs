//! `swarmgate agent` with real components: the real registry (htpasswd),
//! the bridge and a jwt-mode tracker trusting only the bridge's JWKS,
//! agents as child processes (so they can be killed), and real clients:
//! `skopeo` (which verifies every digest) and containerd 1.6 with `ctr`
//! (which unpacks what it pulled).
//!
//! The containerd tests need root (containerd runs as root here, with its
//! own root, state and socket in the test's directory) and skip with a
//! line otherwise; `SWARMGATE_SKIP_INTEROP=1` skips every test here.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::registry::{PASSWORD, Registry, USER, sha256_hex};
use swarmgate::config::AuthMode;

const BIN: &str = env!("CARGO_BIN_EXE_swarmgate");
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const ANY_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

/// A ustar archive holding one regular file: a layer containerd can unpack.
fn tar_with(name: &str, data: &[u8]) -> Vec<u8> {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    let octal = |field: &mut [u8], value: u64| {
        let text = format!("{value:0width$o}\0", width = field.len() - 1);
        field.copy_from_slice(text.as_bytes());
    };
    octal(&mut header[100..108], 0o644);
    octal(&mut header[108..116], 0);
    octal(&mut header[116..124], 0);
    octal(&mut header[124..136], data.len() as u64);
    octal(&mut header[136..148], 1_700_000_000);
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|&b| u64::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
    let mut out = header.to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
    out
}

/// An OCI image layout being written: blobs, then an index naming `tag`.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn new(dir: &Path, name: &str) -> Self {
        let dir = dir.join(format!("layout-{name}"));
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("oci-layout");
        Self { dir }
    }

    /// Stores a blob; returns its descriptor.
    fn put(&self, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let hex_digest = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex_digest), bytes).expect("blob");
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex_digest}"), "size": bytes.len()})
    }

    /// An image of `layers` (tar archives) for `arch`; returns its manifest's descriptor.
    fn image(&self, arch: &str, layers: &[Vec<u8>]) -> serde_json::Value {
        let layers: Vec<_> = layers
            .iter()
            .map(|tar| self.put("application/vnd.oci.image.layer.v1.tar", tar))
            .collect();
        let diff_ids: Vec<_> = layers.iter().map(|l| l["digest"].clone()).collect();
        let config = serde_json::json!({
            "architecture": arch, "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        });
        let config = self.put(
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config, "layers": layers
        });
        let mut descriptor = self.put(OCI_MANIFEST, manifest.to_string().as_bytes());
        descriptor["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        descriptor
    }

    /// Names `top` (a manifest, or an index written here of `platforms`) as `tag`.
    fn tag(&self, tag: &str, platforms: Vec<serde_json::Value>) -> &Path {
        let mut top = if platforms.len() == 1 {
            platforms[0].clone()
        } else {
            let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": platforms});
            self.put(OCI_INDEX, index.to_string().as_bytes())
        };
        top["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [top]});
        std::fs::write(self.dir.join("index.json"), index.to_string()).expect("index");
        &self.dir
    }
}

/// Random tar layers of the given sizes, different per `seed`.
fn layers(sizes: &[usize], seed: u64) -> Vec<Vec<u8>> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            tar_with(
                &format!("file{i}.bin"),
                &common::random_bytes(size, seed * 100 + i as u64 + 1),
            )
        })
        .collect()
}

/// The layer digests of a stored manifest.
fn layer_digests(manifest: &serde_json::Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_owned())
        .collect()
}

/// Registry, bridge and tracker; agents are started per test.
struct Fleet {
    dir: PathBuf,
    registry: Registry,
    bridge: swarmgate::bridge::Bridge,
    tracker: Option<swarmgate::server::Server>,
}

impl Fleet {
    async fn start(name: &str) -> Option<Self> {
        let (dir, registry) = common::registry::with_registry(name)?;
        // The bridge's port is chosen before the tracker that fetches its
        // JWKS starts, so another socket may take it meanwhile: then both
        // start again on another port (a few tries at most).
        let mut tries = 0;
        let (bridge, tracker) = loop {
            tries += 1;
            let bridge_port = common::registry::free_port();
            let mut config = common::loopback_config();
            config.auth.mode = AuthMode::Jwt;
            config.auth.issuer = "swarmgate-bridge".into();
            config.auth.keys_dir = String::new();
            config.auth.jwks_url =
                format!("http://127.0.0.1:{bridge_port}/keys/services/swarmgate/keys");
            config.auth.jwks_min_refetch = Duration::from_millis(200);
            config.announce.interval = Duration::from_secs(2);
            config.announce.min_interval = Duration::from_secs(1);
            let tracker = common::start(config).await;
            let tracker_http = tracker.http_addr.expect("http");

            let mut config = swarmgate::config::Config::default();
            let bridge = &mut config.bridge;
            bridge.listen = format!("127.0.0.1:{bridge_port}").parse().expect("addr");
            bridge.admin_listen = "127.0.0.1:0".parse().expect("addr");
            bridge.upstream = registry.url();
            bridge.upstream_username = USER.into();
            bridge.upstream_password = PASSWORD.into();
            bridge.public_url = format!("http://127.0.0.1:{bridge_port}");
            bridge.trackers = vec![format!("http://{tracker_http}/announce")];
            bridge.cache_dir = dir.join("bridge-cache").display().to_string();
            bridge.keys_dir = dir.join("bridge-keys").display().to_string();
            match swarmgate::bridge::start(&config).await {
                Ok(bridge) => break (bridge, tracker),
                Err(error) if tries < 5 && error.to_string().contains("in use") => {
                    tracker.shutdown().await;
                }
                Err(error) => panic!("bridge starts: {error}"),
            }
        };
        Some(Self {
            dir,
            registry,
            bridge,
            tracker: Some(tracker),
        })
    }

    fn bridge_url(&self) -> String {
        format!("http://{}", self.bridge.addr)
    }

    /// The `[agent]` section for an agent named `name`, mirroring the
    /// registry with `bridge` (or none), plus `extra` keys.
    fn agent_config(&self, name: &str, bridge: Option<&str>, extra: &str) -> PathBuf {
        let path = self.dir.join(format!("{name}.toml"));
        let text = format!(
            "[agent]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n\
             cache_dir = \"{}\"\n{}upstream_timeout = \"10s\"\n\
             registries = [{{ name = \"{}\", url = \"{}\", bridge = \"{}\" }}]\n{extra}",
            self.dir.join(format!("{name}-cache")).display(),
            // `extra` may set its own.
            if extra.contains("peer_deadline") {
                ""
            } else {
                "peer_deadline = \"12s\"\n"
            },
            self.registry.addr,
            self.registry.url(),
            bridge.unwrap_or_default(),
        );
        std::fs::write(&path, text).expect("agent config");
        path
    }

    fn agent(&self, name: &str, extra: &str) -> AgentProcess {
        let bridge = self.bridge_url();
        AgentProcess::start(self.agent_config(name, Some(&bridge), extra))
    }

    /// Bytes the registry has sent for GETs of these blobs so far.
    fn sent_for(&self, digests: &[String]) -> u64 {
        digests
            .iter()
            .map(|d| self.registry.blob_bytes_sent(d))
            .sum()
    }

    /// Seeders the tracker lists for the blob at `path` (`NAME/blobs/DIGEST`),
    /// asked as a fresh leecher with the torrent's own token.
    async fn seeders(&self, path: &str) -> i64 {
        let torrent = reqwest::Client::new()
            .get(format!("{}/c1/torrent/{path}", self.bridge_url()))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .expect("bridge")
            .bytes()
            .await
            .expect("torrent");
        let meta: swarmgate::torrent::MetaInfo =
            serde_bencode::from_bytes(&torrent).expect("a torrent");
        let info_hash = swarmgate::torrent::info_hash_of(&torrent).expect("infohash");
        let url = format!(
            "{}&info_hash={}&peer_id=-XX0001-agenttest001&port=9&uploaded=0&downloaded=0&left=1&compact=1",
            meta.announce,
            common::escape(&info_hash.0)
        );
        let body = reqwest::get(&url)
            .await
            .expect("announce")
            .bytes()
            .await
            .expect("body");
        // Unlisted again: an agent that looks at the swarm next must not
        // count this asker as a leecher to wait for.
        reqwest::get(format!("{url}&event=stopped"))
            .await
            .expect("stopped");
        common::int(&common::dict(&body), "complete")
    }

    async fn finish(self) {
        self.bridge.shutdown().await;
        if let Some(tracker) = self.tracker {
            tracker.shutdown().await;
        }
        let dir = self.dir.clone();
        drop(self.registry);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `swarmgate agent` as a child process, its listeners read from its log.
struct AgentProcess {
    child: Child,
    config: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
    _lines: std::sync::mpsc::Receiver<String>,
}

impl AgentProcess {
    fn start(config: PathBuf) -> Self {
        let mut child = Command::new(BIN)
            .args(["agent", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info,librqbit=warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let lines = common::stderr_lines(&mut child);
        let (addr, admin) = common::wait_for(&lines, "saying the agent serves", |line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let fields = &value["fields"];
            Some((
                fields["addr"].as_str()?.parse().ok()?,
                fields["admin_addr"].as_str()?.parse().ok()?,
            ))
        });
        Self {
            child,
            config,
            addr,
            admin,
            _lines: lines,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        common::scrape_metrics(self.admin).await
    }

    async fn bytes_from(&self, source: &str) -> f64 {
        let series = format!("swarmgate_agent_blob_bytes_total{{source=\"{source}\"}}");
        self.metrics().await.get(&series).copied().unwrap_or(0.0)
    }

    /// `kill -9`, then the same configuration again.
    fn kill_and_restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        *self = Self::start(self.config.clone());
    }

    /// SIGTERM, waiting for the exit.
    fn stop(mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `skopeo copy docker://AGENT/repo:tag oci:DIR` through the agent, with
/// `creds` or none; returns whether it succeeded and what skopeo said.
fn skopeo_through(
    agent: &AgentProcess,
    repo_tag: &str,
    out: &Path,
    creds: Option<&str>,
    args: &[&str],
) -> (bool, String) {
    skopeo_from(agent.addr, repo_tag, out, creds, args)
}

/// [`skopeo_through`] the agent serving at `mirror`.
fn skopeo_from(
    mirror: SocketAddr,
    repo_tag: &str,
    out: &Path,
    creds: Option<&str>,
    args: &[&str],
) -> (bool, String) {
    let mut command = Command::new("skopeo");
    command.args(["copy", "--src-tls-verify=false"]);
    match creds {
        Some(creds) => command.args(["--src-creds", creds]),
        None => command.arg("--src-no-creds"),
    };
    let output = command
        .args(args)
        .arg(format!("docker://{mirror}/{repo_tag}"))
        .arg(format!("oci:{}:{}", out.display(), "pulled"))
        .output()
        .expect("skopeo runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

/// GET (or HEAD) through the agent's mirror API, as containerd asks.
async fn mirror_get(
    agent: &AgentProcess,
    method: reqwest::Method,
    path: &str,
    ns: &str,
    auth: Option<(&str, &str)>,
    range: Option<&str>,
) -> reqwest::Response {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/v2/{path}?ns={ns}", agent.url()))
        .header("accept", ANY_MANIFEST);
    if let Some((user, password)) = auth {
        request = request.basic_auth(user, Some(password));
    }
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("the agent answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_copies_oci_images_indexes_and_docker_manifests_and_the_second_agent_pulls_from_the_first()
 {
    let Some(fleet) = Fleet::start("agent-skopeo").await else {
        return;
    };
    // A three-layer OCI image, a two-platform index, a Docker schema 2 image.
    let layout = Layout::new(&fleet.dir, "multi");
    let image = layout.image("amd64", &layers(&[3 << 20, 2 << 20, 2 << 20], 1));
    fleet
        .registry
        .push_layout(layout.tag("v1", vec![image]), "v1", "team/multi", &[]);
    let layout = Layout::new(&fleet.dir, "index");
    let amd64 = layout.image("amd64", &layers(&[2 << 20], 2));
    let arm64 = layout.image("arm64", &layers(&[2 << 20], 3));
    fleet.registry.push_layout(
        layout.tag("v1", vec![amd64, arm64]),
        "v1",
        "team/index",
        &["--all"],
    );
    let layout = Layout::new(&fleet.dir, "docker");
    let image = layout.image("amd64", &layers(&[2 << 20], 4));
    fleet.registry.push_layout(
        layout.tag("v1", vec![image]),
        "v1",
        "team/docker",
        &["--format", "v2s2"],
    );
    let docker = fleet
        .registry
        .manifest("team/docker", "v1", DOCKER_MANIFEST)
        .await;
    assert_eq!(
        docker["mediaType"], DOCKER_MANIFEST,
        "pushed as Docker schema 2"
    );
    let multi = fleet
        .registry
        .manifest("team/multi", "v1", OCI_MANIFEST)
        .await;
    let multi_layers = layer_digests(&multi);
    assert_eq!(multi_layers.len(), 3);

    let first = fleet.agent("first", "");
    let creds = format!("{USER}:{PASSWORD}");
    for (repo, args) in [
        ("team/multi:v1", &[][..]),
        ("team/index:v1", &["--all"][..]),
        ("team/docker:v1", &[][..]),
    ] {
        let out = fleet
            .dir
            .join(format!("out-first-{}", repo.replace(['/', ':'], "_")));
        let (ok, said) = skopeo_through(&first, repo, &out, Some(&creds), args);
        assert!(ok, "skopeo through the first agent, {repo}: {said}");
    }
    let from_origin = first.bytes_from("bridge").await + first.bytes_from("registry").await;
    assert!(
        from_origin > 0.0,
        "the first agent had no peer: the origin served"
    );

    // The second node: every layer of the multi-layer image from the first.
    let sent_before = fleet.sent_for(&multi_layers);
    let second = fleet.agent("second", "");
    let out = fleet.dir.join("out-second");
    let (ok, said) = skopeo_through(&second, "team/multi:v1", &out, Some(&creds), &[]);
    assert!(ok, "skopeo through the second agent: {said}");
    assert_eq!(
        fleet.sent_for(&multi_layers),
        sent_before,
        "the registry sent no layer byte for the second node"
    );
    let layer_bytes: u64 = multi["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["size"].as_u64().expect("size"))
        .sum();
    assert_eq!(second.bytes_from("peers").await, layer_bytes as f64);
    assert_eq!(second.bytes_from("bridge").await, 0.0);
    let uploaded = first.metrics().await["swarmgate_agent_uploaded_bytes"];
    assert!(
        uploaded >= layer_bytes as f64,
        "the first agent uploaded {uploaded}"
    );
    first.stop();
    second.stop();
    fleet.finish().await;
}

/// A rollout's nodes pulling one image at the same moment: the first node to
/// reach the tracker fetches each layer from the origin, the others wait for
/// it and take every layer byte from peers, so the origin sends each layer
/// once. (Before, every node that found only empty peers went to the origin.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_pulling_at_once_take_each_layer_from_the_origin_once() {
    let Some(fleet) = Fleet::start("agent-at-once").await else {
        return;
    };
    let layers = push_image(&fleet, "team/once", &[3 << 20, 2 << 20, 2 << 20], 21).await;
    let digests: Vec<String> = layers.iter().map(|(d, _)| d.clone()).collect();
    let layer_bytes: u64 = layers.iter().map(|(_, size)| size).sum();
    // A deadline no machine reaches: only the rule under test decides.
    let agents: Vec<AgentProcess> = (0..3)
        .map(|n| fleet.agent(&format!("node{n}"), "peer_deadline = \"120s\"\n"))
        .collect();
    let creds = format!("{USER}:{PASSWORD}");
    std::thread::scope(|scope| {
        let pulls: Vec<_> = agents
            .iter()
            .enumerate()
            .map(|(n, agent)| {
                let (mirror, out) = (agent.addr, fleet.dir.join(format!("out-once-{n}")));
                let creds = creds.clone();
                scope.spawn(move || skopeo_from(mirror, "team/once:v1", &out, Some(&creds), &[]))
            })
            .collect();
        for (n, pull) in pulls.into_iter().enumerate() {
            let (ok, said) = pull.join().expect("the pull thread");
            assert!(ok, "skopeo through node {n}: {said}");
        }
    });
    // The bridge read each layer once to hash it into a torrent, and the
    // origin fetch is the other copy.
    assert_eq!(
        fleet.sent_for(&digests),
        2 * layer_bytes,
        "the registry sent each layer to the bridge's hashing and to one node"
    );
    let (mut firsts, mut from_peers, mut from_origin, mut other_fallbacks) = (0.0, 0.0, 0.0, 0.0);
    for agent in &agents {
        let metrics = agent.metrics().await;
        firsts += series(
            &metrics,
            r#"swarmgate_agent_fallbacks_total{reason="first"}"#,
        );
        from_peers += series(
            &metrics,
            r#"swarmgate_agent_blob_bytes_total{source="peers"}"#,
        );
        // The registry's own bytes are the image config's, proxied.
        from_origin += series(
            &metrics,
            r#"swarmgate_agent_blob_bytes_total{source="bridge"}"#,
        );
        other_fallbacks += metrics
            .iter()
            .filter(|(name, _)| {
                name.starts_with("swarmgate_agent_fallbacks_total") && !name.contains("\"first\"")
            })
            .map(|(_, value)| value)
            .sum::<f64>();
    }
    assert_eq!(firsts, layers.len() as f64, "one first node per layer");
    // And each node seeds every layer once librqbit has checked its files.
    for agent in &agents {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while series(&agent.metrics().await, "swarmgate_agent_seeding") < layers.len() as f64 {
            assert!(
                std::time::Instant::now() < deadline,
                "an agent never seeded all its layers"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(other_fallbacks, 0.0, "nobody else went to the origin");
    assert_eq!(
        from_origin, layer_bytes as f64,
        "one node's layers from the origin (the bridge's web seed)"
    );
    assert_eq!(
        from_peers,
        2.0 * layer_bytes as f64,
        "two nodes' layers from peers"
    );
    for agent in agents {
        agent.stop();
    }
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_the_registry_refuses_get_nothing_from_a_node_that_holds_the_layer() {
    let Some(fleet) = Fleet::start("agent-authz").await else {
        return;
    };
    let layout = Layout::new(&fleet.dir, "private");
    let image = layout.image("amd64", &layers(&[2 << 20], 5));
    fleet
        .registry
        .push_layout(layout.tag("v1", vec![image]), "v1", "team/private", &[]);
    let manifest = fleet
        .registry
        .manifest("team/private", "v1", OCI_MANIFEST)
        .await;
    let layer = layer_digests(&manifest).remove(0);
    let agent = fleet.agent("holder", "");
    let ns = fleet.registry.addr.to_string();
    let blob_path = format!("team/private/blobs/{layer}");
    // An authorised caller pulls the layer: the node holds it now.
    let response = mirror_get(
        &agent,
        reqwest::Method::GET,
        &blob_path,
        &ns,
        Some((USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), layer);
    assert_eq!(agent.metrics().await["swarmgate_agent_cache_blobs"], 1.0);

    // No credentials, a wrong password: the registry's 401 and challenge,
    // for the cached blob and for the manifest, by GET and by HEAD.
    for auth in [None, Some((USER, "wrong"))] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            for path in [blob_path.clone(), "team/private/manifests/v1".to_owned()] {
                let response = mirror_get(&agent, method.clone(), &path, &ns, auth, None).await;
                assert_eq!(response.status(), 401, "{method} {path} {auth:?}");
                assert_eq!(
                    response.headers()["www-authenticate"],
                    r#"Basic realm="swarmgate-test""#
                );
                let body = response.bytes().await.expect("body");
                assert!(body.len() < 1024, "an error document, not the blob");
            }
        }
    }
    // The ping tells skopeo and containerd the registry's scheme.
    let ping = reqwest::get(format!("{}/v2/?ns={ns}", agent.url()))
        .await
        .expect("ping");
    assert_eq!(ping.status(), 401);
    assert!(ping.headers().contains_key("www-authenticate"));

    // Bad input: OCI error documents, and the next request is served.
    for (path, status, code) in [
        ("Team/App/blobs/sha256:00".to_owned(), 400, "NAME_INVALID"),
        (
            "team/app/blobs/sha256:abc".to_owned(),
            400,
            "DIGEST_INVALID",
        ),
        (
            "team/app/manifests/-bad".to_owned(),
            400,
            "MANIFEST_INVALID",
        ),
        ("team/app/tags/list".to_owned(), 404, "UNSUPPORTED"),
        (
            format!("team/private/blobs/sha256:{}", "0".repeat(64)),
            404,
            "BLOB_UNKNOWN",
        ),
    ] {
        let response = mirror_get(
            &agent,
            reqwest::Method::GET,
            &path,
            &ns,
            Some((USER, PASSWORD)),
            None,
        )
        .await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let document: serde_json::Value = response.json().await.expect("an OCI error document");
        assert_eq!(document["errors"][0]["code"], code, "{path}");
    }
    let other = mirror_get(
        &agent,
        reqwest::Method::GET,
        &blob_path,
        "elsewhere.example",
        Some((USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(other.status(), 404, "a registry this agent does not mirror");
    let again = mirror_get(
        &agent,
        reqwest::Method::GET,
        &blob_path,
        &ns,
        Some((USER, PASSWORD)),
        Some("bytes=1000-"),
    )
    .await;
    assert_eq!(again.status(), 206);
    assert_eq!(again.bytes().await.expect("body"), body.slice(1000..));
    // The holder announces itself as a seeder once the blob verified.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fleet.seeders(&blob_path).await != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the holder never seeded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    agent.stop();
    // A stopped agent tells the tracker (librqbit itself never does).
    assert_eq!(
        fleet.seeders(&blob_path).await,
        0,
        "the holder said stopped"
    );

    // An agent with its own login (a Docker config.json, as a pull secret
    // mounted on the node) serves callers that send none.
    let auths = fleet.dir.join("config.json");
    let encoded = base64_login(USER, PASSWORD);
    std::fs::write(
        &auths,
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{encoded}"}}}}}}"#,
            fleet.registry.addr
        ),
    )
    .expect("config.json");
    let bridge = fleet.bridge_url();
    let with_login = AgentProcess::start(fleet.agent_config(
        "with-login",
        Some(&bridge),
        &format!("docker_config = \"{}\"\n", auths.display()),
    ));
    let response = mirror_get(
        &with_login,
        reqwest::Method::GET,
        &blob_path,
        &ns,
        None,
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.expect("body"), body);
    // A caller's own wrong credentials still count: the registry decides.
    let response = mirror_get(
        &with_login,
        reqwest::Method::GET,
        &blob_path,
        &ns,
        Some((USER, "wrong")),
        None,
    )
    .await;
    assert_eq!(response.status(), 401);
    with_login.stop();
    fleet.finish().await;
}

fn base64_login(user: &str, password: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
}

/// Pushes a one-platform image of `sizes` to `repo:v1`; returns its layer
/// digests and sizes as stored.
async fn push_image(fleet: &Fleet, repo: &str, sizes: &[usize], seed: u64) -> Vec<(String, u64)> {
    let layout = Layout::new(&fleet.dir, &repo.replace('/', "_"));
    let image = layout.image("amd64", &layers(sizes, seed));
    fleet
        .registry
        .push_layout(layout.tag("v1", vec![image]), "v1", repo, &[]);
    let manifest = fleet.registry.manifest(repo, "v1", OCI_MANIFEST).await;
    manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            (
                l["digest"].as_str().expect("digest").to_owned(),
                l["size"].as_u64().expect("size"),
            )
        })
        .collect()
}

/// A whole blob through the agent, checked against its digest.
async fn pull_blob(agent: &AgentProcess, fleet: &Fleet, repo: &str, digest: &str) -> bytes::Bytes {
    let ns = fleet.registry.addr.to_string();
    let path = format!("{repo}/blobs/{digest}");
    let response = mirror_get(
        agent,
        reqwest::Method::GET,
        &path,
        &ns,
        Some((USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(response.status(), 200, "{path}");
    let body = response.bytes().await.expect("the whole blob");
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), digest);
    body
}

fn series(metrics: &HashMap<String, f64>, name: &str) -> f64 {
    metrics.get(name).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_complete_with_the_tracker_and_then_the_bridge_down() {
    let Some(mut fleet) = Fleet::start("agent-faults").await else {
        return;
    };
    let blobs = push_image(&fleet, "team/faults", &[2 << 20, 2 << 20, 2 << 20], 6).await;
    let first = fleet.agent("first", "");
    pull_blob(&first, &fleet, "team/faults", &blobs[0].0).await;

    // The tracker goes away mid-rollout: the next node still gets every blob.
    fleet.tracker.take().expect("tracker").shutdown().await;
    let second = fleet.agent("second", "");
    pull_blob(&second, &fleet, "team/faults", &blobs[0].0).await;
    pull_blob(&second, &fleet, "team/faults", &blobs[1].0).await;
    let metrics = second.metrics().await;
    assert_eq!(
        series(&metrics, "swarmgate_agent_pulls_total{result=\"verified\"}"),
        2.0
    );
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_blob_bytes_total{source=\"bridge\"}"
        ),
        (blobs[0].1 + blobs[1].1) as f64,
        "no peer without a tracker: the bridge's web seed served"
    );

    // And the bridge too (nothing listens where the agent looks for it):
    // the registry serves, and the fall-back says why.
    let third = AgentProcess::start(fleet.agent_config("third", Some("http://127.0.0.1:1"), ""));
    pull_blob(&third, &fleet, "team/faults", &blobs[2].0).await;
    let metrics = third.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_blob_bytes_total{source=\"registry\"}"
        ),
        blobs[2].1 as f64
    );
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_fallbacks_total{reason=\"bridge\"}"
        ),
        1.0
    );
    first.stop();
    second.stop();
    third.stop();
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_dropped_and_the_origin_completes_the_blob() {
    let Some(fleet) = Fleet::start("agent-corrupt").await else {
        return;
    };
    let blobs = push_image(&fleet, "team/corrupt", &[4 << 20], 7).await;
    let (digest, size) = blobs[0].clone();
    let liar = fleet.agent("liar", "");
    pull_blob(&liar, &fleet, "team/corrupt", &digest).await;
    // Damage the seeded file in place, past the first piece.
    let file = fleet
        .dir
        .join("liar-cache/blobs")
        .join(format!("sha256-{}", digest.trim_start_matches("sha256:")));
    let mut bytes = std::fs::read(&file).expect("cached blob");
    for byte in &mut bytes[(1 << 20)..(1 << 20) + 4096] {
        *byte ^= 0xff;
    }
    std::fs::write(&file, &bytes).expect("damage");

    let honest = fleet.agent("honest", "");
    pull_blob(&honest, &fleet, "team/corrupt", &digest).await;
    let metrics = honest.metrics().await;
    let from_peers = series(
        &metrics,
        "swarmgate_agent_blob_bytes_total{source=\"peers\"}",
    );
    let from_origin = series(
        &metrics,
        "swarmgate_agent_blob_bytes_total{source=\"bridge\"}",
    );
    assert_eq!(
        from_peers + from_origin,
        size as f64,
        "every byte counted once"
    );
    assert!(from_origin > 0.0, "the damaged piece came from the origin");
    assert!(
        series(&metrics, "swarmgate_agent_peer_bytes_discarded_total") >= (512 << 10) as f64,
        "the bad piece was fetched and thrown away"
    );
    assert_eq!(
        series(&metrics, "swarmgate_agent_pulls_total{result=\"verified\"}"),
        1.0
    );
    liar.stop();
    honest.stop();
    fleet.finish().await;
}

/// A TCP relay in front of the registry that passes answers through until
/// `budget` bytes went back, then holds them until released: a registry
/// that stalls mid-blob, as the test decides.
struct StallingRelay {
    addr: SocketAddr,
    budget: std::sync::Arc<std::sync::atomic::AtomicI64>,
    released: std::sync::Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl StallingRelay {
    async fn start(upstream: SocketAddr, budget: i64) -> Self {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let budget = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(budget));
        let released = std::sync::Arc::new(tokio::sync::Notify::new());
        let (shared_budget, shared_release) = (budget.clone(), released.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                    continue;
                };
                let (budget, released) = (shared_budget.clone(), shared_release.clone());
                tokio::spawn(async move {
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let up = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    });
                    let mut buffer = vec![0u8; 16 << 10];
                    loop {
                        while budget.load(Ordering::SeqCst) <= 0 {
                            released.notified().await;
                        }
                        let Ok(n) = server_read.read(&mut buffer).await else {
                            break;
                        };
                        if n == 0 || client_write.write_all(&buffer[..n]).await.is_err() {
                            break;
                        }
                        budget.fetch_sub(n as i64, Ordering::SeqCst);
                    }
                    up.abort();
                });
            }
        });
        Self {
            addr,
            budget,
            released,
            task,
        }
    }

    fn release(&self) {
        self.budget
            .store(i64::MAX, std::sync::atomic::Ordering::SeqCst);
        self.released.notify_waiters();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_mid_pull_leaves_nothing_servable_and_a_range_retry_completes() {
    let Some(fleet) = Fleet::start("agent-kill").await else {
        return;
    };
    let blobs = push_image(&fleet, "team/kill", &[6 << 20], 8).await;
    let (digest, size) = blobs[0].clone();
    let whole = fleet.registry.blob("team/kill", &digest).await;
    // No bridge: the origin is the registry, behind a relay that stalls
    // after about 1 MiB of answers.
    let relay = StallingRelay::start(fleet.registry.addr, 1 << 20).await;
    let config = fleet.dir.join("killed.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\npeer_listen = \"127.0.0.1:0\"\n\
             cache_dir = \"{}\"\npeer_deadline = \"4s\"\nupstream_timeout = \"30s\"\n\
             registries = [{{ name = \"{}\", url = \"http://{}\", bridge = \"\" }}]\n",
            fleet.dir.join("killed-cache").display(),
            fleet.registry.addr,
            relay.addr,
        ),
    )
    .expect("config");
    let mut agent = AgentProcess::start(config);
    let ns = fleet.registry.addr.to_string();
    let path = format!("team/kill/blobs/{digest}");
    let mut response = mirror_get(
        &agent,
        reqwest::Method::GET,
        &path,
        &ns,
        Some((USER, PASSWORD)),
        None,
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut received = Vec::new();
    // Streamed while the pull runs: the first bytes arrive before the stall.
    while received.is_empty() {
        let chunk = response
            .chunk()
            .await
            .expect("streams")
            .expect("a first chunk");
        received.extend_from_slice(&chunk);
    }
    agent.kill_and_restart();
    let leftovers: Vec<_> = std::fs::read_dir(fleet.dir.join("killed-cache/blobs"))
        .expect("cache dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        leftovers.is_empty(),
        "an unverified file survived a restart: {leftovers:?}"
    );
    relay.release();
    let start = received.len();
    let resumed = mirror_get(
        &agent,
        reqwest::Method::GET,
        &path,
        &ns,
        Some((USER, PASSWORD)),
        Some(&format!("bytes={start}-")),
    )
    .await;
    assert_eq!(resumed.status(), 206);
    assert_eq!(
        resumed.headers()["content-range"],
        format!("bytes {start}-{}/{size}", size - 1).as_str()
    );
    received.extend_from_slice(&resumed.bytes().await.expect("the rest"));
    assert_eq!(received.len(), whole.len());
    assert!(received == whole, "the resumed blob is the blob");
    relay.task.abort();
    agent.stop();
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_is_bounded_shared_by_concurrent_pulls_and_reseeded_after_a_restart() {
    let Some(fleet) = Fleet::start("agent-cache").await else {
        return;
    };
    let blobs = push_image(&fleet, "team/cache", &[3 << 20, 3 << 20, 9 << 20], 9).await;
    // Room for two of the 3 MiB layers, not for the 9 MiB one.
    let mut agent = fleet.agent("bounded", "cache_max_bytes = 7340032\n");
    // Two requests at once for one blob: one pull.
    let (a, b) = tokio::join!(
        pull_blob(&agent, &fleet, "team/cache", &blobs[0].0),
        pull_blob(&agent, &fleet, "team/cache", &blobs[0].0)
    );
    assert_eq!(a, b);
    let metrics = agent.metrics().await;
    assert_eq!(
        series(&metrics, "swarmgate_agent_pulls_total{result=\"verified\"}"),
        1.0
    );
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_blob_bytes_total{source=\"bridge\"}"
        ),
        blobs[0].1 as f64,
        "one download for two requests"
    );
    pull_blob(&agent, &fleet, "team/cache", &blobs[1].0).await;
    // Larger than the whole cache: streamed from the registry, not cached.
    pull_blob(&agent, &fleet, "team/cache", &blobs[2].0).await;
    let metrics = agent.metrics().await;
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_cache_bypass_total{reason=\"too_large\"}"
        ),
        1.0
    );
    assert_eq!(series(&metrics, "swarmgate_agent_cache_blobs"), 2.0);
    // Blob 0 is used again, so blob 1 is the least recently used.
    pull_blob(&agent, &fleet, "team/cache", &blobs[0].0).await;

    // A restart checks the kept blobs again and seeds them.
    agent.kill_and_restart();
    let metrics = agent.metrics().await;
    assert_eq!(series(&metrics, "swarmgate_agent_cache_blobs"), 2.0);
    assert_eq!(series(&metrics, "swarmgate_agent_torrents"), 2.0);
    let peer = fleet.agent("peer", "");
    pull_blob(&peer, &fleet, "team/cache", &blobs[1].0).await;
    assert_eq!(
        peer.bytes_from("peers").await,
        blobs[1].1 as f64,
        "the restarted agent seeded what it kept"
    );

    // A third 3 MiB blob evicts the least recently used one: blob 1.
    let more = push_image(&fleet, "team/more", &[3 << 20], 10).await;
    pull_blob(&agent, &fleet, "team/more", &more[0].0).await;
    let metrics = agent.metrics().await;
    assert_eq!(
        series(&metrics, "swarmgate_agent_cache_evictions_total"),
        1.0
    );
    assert_eq!(series(&metrics, "swarmgate_agent_cache_blobs"), 2.0);
    assert_eq!(
        series(&metrics, "swarmgate_agent_torrents"),
        2.0,
        "the evicted blob is no longer seeded"
    );
    let evicted = fleet.dir.join("bounded-cache/blobs").join(format!(
        "sha256-{}",
        blobs[1].0.trim_start_matches("sha256:")
    ));
    assert!(!evicted.exists(), "the evicted blob's file is deleted");
    agent.stop();
    peer.stop();
    fleet.finish().await;
}

/// A containerd of its own (root, state, socket in the test's directory):
/// one node's container runtime. `None`, with a line, where containerd
/// cannot run (not root, or not installed).
struct Containerd {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path, name: &str) -> Option<Self> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root
            || Command::new("containerd")
                .arg("--version")
                .output()
                .is_err()
        {
            println!(
                "skipped: containerd needs root and the containerd package (scripts/test installs it)"
            );
            return None;
        }
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let socket = dir.join("containerd.sock");
        let config = format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n\
             [ttrpc]\n  address = \"{1}.ttrpc\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
            dir.display(),
            socket.display()
        );
        std::fs::write(dir.join("config.toml"), config).expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd runs");
        let containerd = Self { child, dir, socket };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !containerd.ctr(&["version"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "containerd did not answer within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(containerd)
    }

    fn ctr(&self, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("ctr runs")
    }

    /// `ctr images pull` through the registry host configuration in `hosts`
    /// (pull and unpack), with the registry's account.
    fn pull(&self, hosts: &Path, reference: &str) -> std::process::Output {
        let hosts = hosts.display().to_string();
        let user = format!("{USER}:{PASSWORD}");
        self.ctr(&[
            "-n",
            "swarmgate",
            "images",
            "pull",
            "--hosts-dir",
            &hosts,
            "--user",
            &user,
            reference,
        ])
    }

    /// [`pull`](Self::pull), asserting it succeeded; prints how long it took.
    fn pull_checked(&self, hosts: &Path, reference: &str, what: &str) {
        let started = std::time::Instant::now();
        let pulled = self.pull(hosts, reference);
        assert!(
            pulled.status.success(),
            "ctr pull, {what}: {}{}",
            String::from_utf8_lossy(&pulled.stdout),
            String::from_utf8_lossy(&pulled.stderr)
        );
        println!("{what}: ctr pull took {:?}", started.elapsed());
    }

    /// The bytes of `file` in the unpacked image `reference`.
    fn read_from_image(&self, reference: &str, file: &str) -> Vec<u8> {
        let target = self.dir.join("mnt");
        std::fs::create_dir_all(&target).expect("mount point");
        let target = target.display().to_string();
        let mounted = self.ctr(&["-n", "swarmgate", "images", "mount", reference, &target]);
        assert!(
            mounted.status.success(),
            "ctr images mount: {}",
            String::from_utf8_lossy(&mounted.stderr)
        );
        let bytes = std::fs::read(Path::new(&target).join(file)).expect("file in the image");
        let _ = self.ctr(&["-n", "swarmgate", "images", "unmount", &target]);
        bytes
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Snapshots may stay mounted if a test failed part-way.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.join("mnt"))
            .output();
    }
}

/// `swarmgate agent hosts` for `agent`, into `dir`; then, as the test of
/// the mirror being the only way in, the registry fall-back points nowhere.
fn hosts_dir_for(fleet: &Fleet, agent: &AgentProcess, dir: &Path) -> PathBuf {
    let output = Command::new(BIN)
        .args(["agent", "--config"])
        .arg(&agent.config)
        .args(["hosts", "--dir"])
        .arg(dir)
        .args(["--url", &agent.url()])
        .output()
        .expect("agent hosts runs");
    assert!(
        output.status.success(),
        "agent hosts: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let file = dir.join(fleet.registry.addr.to_string()).join("hosts.toml");
    let written = std::fs::read_to_string(&file).expect("hosts.toml written");
    let parsed: toml::Table = toml::from_str(&written).expect("valid TOML");
    assert_eq!(
        parsed["server"].as_str(),
        Some(fleet.registry.url().as_str())
    );
    assert!(parsed["host"].get(agent.url()).is_some(), "{written}");
    let dead_end = written.replace(&fleet.registry.url(), "http://127.0.0.1:1");
    std::fs::write(&file, dead_end).expect("rewrite");
    dir.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_pulls_and_unpacks_through_agents_and_the_second_node_gets_every_layer_from_the_first()
 {
    let Some(fleet) = Fleet::start("agent-containerd").await else {
        return;
    };
    let Some(node1) = Containerd::start(&fleet.dir, "node1") else {
        fleet.finish().await;
        return;
    };
    let Some(node2) = Containerd::start(&fleet.dir, "node2") else {
        fleet.finish().await;
        return;
    };
    let blobs = push_image(&fleet, "team/ctr", &[3 << 20, 2 << 20, 2 << 20], 11).await;
    let digests: Vec<String> = blobs.iter().map(|(d, _)| d.clone()).collect();
    let layer_bytes: u64 = blobs.iter().map(|(_, size)| size).sum();
    let reference = format!("{}/team/ctr:v1", fleet.registry.addr);

    let first = fleet.agent("node1-agent", "");
    let hosts1 = hosts_dir_for(&fleet, &first, &fleet.dir.join("certs.d-1"));
    node1.pull_checked(&hosts1, &reference, "node 1, no peer yet");
    // Unpacked, and the files are the layers' files.
    let file0 = node1.read_from_image(&reference, "file0.bin");
    assert_eq!(file0, common::random_bytes(3 << 20, 1101));

    let sent_before = fleet.sent_for(&digests);
    let second = fleet.agent("node2-agent", "");
    let hosts2 = hosts_dir_for(&fleet, &second, &fleet.dir.join("certs.d-2"));
    node2.pull_checked(&hosts2, &reference, "node 2, from node 1");
    let file2 = node2.read_from_image(&reference, "file2.bin");
    assert_eq!(file2, common::random_bytes(2 << 20, 1103));
    assert_eq!(
        fleet.sent_for(&digests),
        sent_before,
        "the registry served no layer blob again"
    );
    assert_eq!(second.bytes_from("peers").await, layer_bytes as f64);
    first.stop();
    second.stop();
    drop(node1);
    drop(node2);
    fleet.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_follow_an_origin_fill_get_the_blob_byte_exact() {
    let Some(fleet) = Fleet::start("agent-readers").await else {
        return;
    };
    let blobs = push_image(&fleet, "team/readers", &[24 << 20], 12).await;
    let digest = blobs[0].0.clone();
    // No bridge: every byte comes from the registry through the agent's
    // own writes, which readers chase up the watermark.
    let agent = AgentProcess::start(fleet.agent_config("origin-only", None, ""));
    let readers = (0..6).map(|_| pull_blob(&agent, &fleet, "team/readers", &digest));
    let bodies = futures_util::future::join_all(readers).await;
    assert_eq!(
        bodies.len(),
        6,
        "each checked against the digest in pull_blob"
    );
    let metrics = agent.metrics().await;
    assert_eq!(
        series(&metrics, "swarmgate_agent_pulls_total{result=\"verified\"}"),
        1.0
    );
    assert_eq!(
        series(
            &metrics,
            "swarmgate_agent_fallbacks_total{reason=\"no_bridge\"}"
        ),
        1.0
    );
    agent.stop();
    fleet.finish().await;
}
