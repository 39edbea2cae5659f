//! A real OCI registry for the bridge and agent suites: Debian's
//! `docker-registry` (CNCF Distribution 2.8) with htpasswd (bcrypt) auth and
//! filesystem storage in a temp dir, images pushed with `skopeo copy`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;

/// The registry's account.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "s3cret-pass";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// A temp dir and a registry started in it; `None` when interop tests are skipped.
pub fn with_registry(name: &str) -> Option<(PathBuf, Registry)> {
    if super::skip_interop() {
        return None;
    }
    let dir = super::temp_dir(name);
    let registry = Registry::start(&dir);
    Some((dir, registry))
}

/// A real Distribution registry on a free loopback port, stopped on drop.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    pub root: PathBuf,
    pub dir: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path) -> Self {
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .expect("htpasswd runs (apache2-utils; scripts/test installs it)");
        assert!(htpasswd.status.success(), "htpasswd failed");
        std::fs::write(dir.join("htpasswd"), &htpasswd.stdout).expect("htpasswd file");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let root = dir.join("storage");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
             http:\n  addr: {addr}\n  secret: swarmgate-test\nauth:\n  htpasswd:\n    realm: swarmgate-test\n    path: {}\n",
            root.display(),
            dir.join("htpasswd").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("registry config");
        let log = std::fs::File::create(dir.join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry runs (scripts/test installs it)");
        let registry = Self {
            child,
            addr,
            root,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not listen within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Pushes a one-layer image to `repo:latest` with `skopeo copy` from an
    /// OCI layout written here; returns the layer's digest as the registry
    /// stores it (skopeo compresses a plain tar layer on the way).
    pub fn push(&self, repo: &str, layer: &[u8]) -> String {
        let layout = self.dir.join(format!("oci-{}", repo.replace('/', "_")));
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).expect("layout");
        let put = |bytes: &[u8]| {
            let hex_digest = sha256_hex(bytes);
            std::fs::write(blobs.join(&hex_digest), bytes).expect("blob");
            (format!("sha256:{hex_digest}"), bytes.len())
        };
        let (layer_digest, layer_size) = put(layer);
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
        })
        .to_string();
        let (config_digest, config_size) = put(config.as_bytes());
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
        })
        .to_string();
        let (manifest_digest, manifest_size) = put(manifest.as_bytes());
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                           "size": manifest_size, "annotations": {"org.opencontainers.image.ref.name": "latest"}}]
        });
        std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        let output = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--dest-creds"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{}/{repo}:latest", self.addr))
            .output()
            .expect("skopeo runs (scripts/test installs it)");
        assert!(
            output.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The manifest as stored names the layer digest the registry holds.
        let output = Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false", "--creds"])
            .arg(format!("{USER}:{PASSWORD}"))
            .arg(format!("docker://{}/{repo}:latest", self.addr))
            .output()
            .expect("skopeo inspect");
        let stored: serde_json::Value = serde_json::from_slice(&output.stdout).expect("a manifest");
        stored["layers"][0]["digest"]
            .as_str()
            .expect("a layer digest")
            .to_owned()
    }

    /// The blob as the registry serves it.
    pub async fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let response = reqwest::Client::new()
            .get(format!("{}/v2/{repo}/blobs/{digest}", self.url()))
            .basic_auth(USER, Some(PASSWORD))
            .send()
            .await
            .expect("blob GET");
        assert_eq!(response.status(), 200);
        response.bytes().await.expect("blob body").to_vec()
    }

    /// Where filesystem storage keeps a blob's bytes.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex_digest = digest.trim_start_matches("sha256:");
        self.root.join(format!(
            "docker/registry/v2/blobs/sha256/{}/{hex_digest}/data",
            &hex_digest[..2]
        ))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    /// Bytes the registry has sent for GETs of `digest` so far, from its
    /// log ("response completed ... http.response.written=N"): what left the
    /// registry for that blob, whoever asked (bridge, agent, client).
    pub fn blob_bytes_sent(&self, digest: &str) -> u64 {
        let log = std::fs::read_to_string(self.dir.join("registry.log")).unwrap_or_default();
        log.lines()
            .filter(|line| {
                line.contains("msg=\"response completed")
                    && line.contains("http.request.method=GET")
                    && line.contains(&format!("/blobs/{digest}"))
            })
            .filter_map(|line| {
                let written = line.split("http.response.written=").nth(1)?;
                written.split_whitespace().next()?.parse::<u64>().ok()
            })
            .sum()
    }

    /// Pushes the OCI layout at `layout` (tag `tag` in its index) to
    /// `repo:tag` with `skopeo copy`, adding `args` (`--all`, `--format v2s2`).
    pub fn push_layout(&self, layout: &Path, tag: &str, repo: &str, args: &[&str]) {
        let output = Command::new("skopeo")
            .args([
                "copy",
                "--dest-tls-verify=false",
                "--dest-compress=false",
                "--dest-creds",
            ])
            .arg(format!("{USER}:{PASSWORD}"))
            .args(args)
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}:{tag}", self.addr))
            .output()
            .expect("skopeo runs (scripts/test installs it)");
        assert!(
            output.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// The manifest `reference` of `repo` as the registry stores it, asking
    /// for any of `accept`.
    pub async fn manifest(&self, repo: &str, reference: &str, accept: &str) -> serde_json::Value {
        let response = reqwest::Client::new()
            .get(format!("{}/v2/{repo}/manifests/{reference}", self.url()))
            .basic_auth(USER, Some(PASSWORD))
            .header("accept", accept)
            .send()
            .await
            .expect("manifest GET");
        assert_eq!(response.status(), 200, "manifest {repo}:{reference}");
        response.json().await.expect("a manifest")
    }
}
