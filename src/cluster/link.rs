//! The connection to Redis: one multiplexed connection per primary node, the
//! slot map that says which node holds a key, and a subscriber.
//!
//! Standalone Redis and Redis Cluster look alike from here: a standalone
//! server is a cluster of one node holding every slot. The slot map is read
//! once per connection (`CLUSTER SLOTS`); a node that fails or a slot that
//! moves makes a command fail, the caller drops the link, and the next
//! connection reads the map again and resynchronises. Commands are sent one
//! pipeline per node, so a batch costs one round trip per node whatever its
//! size. Only commands Valkey also has are used.
//!
//! `rediss://` URLs speak TLS (rustls) with the CA and client certificate of
//! [`Access`]; credentials come from the URL or from [`Access`], and every
//! node of a Redis Cluster is reached the same way as the seed. The slot map
//! also names every replica: [`Link::known_nodes`] hands them to the caller,
//! so that a reconnect can start from any node it has ever learned, not only
//! from the configured seeds (a seed that died would otherwise strand the
//! instance while the rest of the cluster serves).

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{
    AsyncConnectionConfig, Client, ClientTlsConfig, ConnectionAddr, ConnectionInfo, Pipeline,
    TlsCertificates, Value,
};

/// Why the cluster link could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `cluster.redis` is not a usable URL.
    #[error("cluster.redis {url:?} is not a Redis URL: {source}")]
    Url {
        /// The offending URL, its password redacted.
        url: String,
        /// What redis-rs said.
        source: redis::RedisError,
    },
    /// TLS settings that cannot work with the URLs given.
    #[error("{0}")]
    Tls(String),
    /// The node refused the credentials.
    #[error(
        "Redis on {node} refused the credentials (the URL's user and password, else cluster.username and cluster.password): {source}"
    )]
    Auth {
        /// The node.
        node: String,
        /// What it said.
        source: redis::RedisError,
    },
    /// The TLS handshake failed.
    #[error(
        "TLS with Redis on {node} failed (is its certificate signed by cluster.tls_ca_file, and for this address? does it want a client certificate, cluster.tls_cert_file?): {source}"
    )]
    Handshake {
        /// The node.
        node: String,
        /// What rustls or the server said.
        source: redis::RedisError,
    },
    /// No seed node answered.
    #[error("no Redis node in cluster.redis answered ({0})")]
    Unreachable(String),
    /// A command failed (node down, slot moved, timeout, server error).
    #[error("Redis {op} failed on {node}: {source}")]
    Command {
        /// What was being done.
        op: &'static str,
        /// The node.
        node: String,
        /// What happened.
        source: redis::RedisError,
    },
    /// Redis refused some commands of a write (a key of another type where a
    /// swarm hash belongs, out of memory, an ACL): the others were applied,
    /// and the link itself is fine.
    #[error("Redis refused part of a write on {node}: {source}")]
    Refused {
        /// The node.
        node: String,
        /// What it said.
        source: redis::RedisError,
    },
    /// `CLUSTER SLOTS` answered something this code cannot use.
    #[error("Redis Cluster slot map unusable: {0}")]
    Topology(String),
    /// A deadline passed.
    #[error("Redis {0} timed out")]
    Timeout(&'static str),
}

/// What reaching Redis takes beyond the URL: credentials for URLs that
/// carry none, and TLS material for `rediss://` ones.
#[derive(Clone, Default)]
pub struct Access {
    /// ACL user, when the URL names none (`cluster.username`).
    pub username: Option<String>,
    /// Password, when the URL carries none (`cluster.password`).
    pub password: Option<String>,
    /// PEM CA certificates trusted instead of the system's (`cluster.tls_ca_file`).
    pub root_cert: Option<Vec<u8>>,
    /// PEM client certificate and key, for mutual TLS.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl Access {
    fn has_tls_material(&self) -> bool {
        self.root_cert.is_some() || self.client.is_some()
    }
}

/// `url` with its password, if any, replaced by `***`: for logs and errors.
pub fn redacted(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_owned(),
    }
}

/// One primary node.
struct Node {
    name: String,
    client: Client,
    connection: MultiplexedConnection,
}

/// A live link to every primary node.
pub struct Link {
    nodes: Vec<Node>,
    /// Every node the slot map named, primaries and replicas, reachable
    /// as the seed was.
    known: Vec<ConnectionInfo>,
    /// Node index per slot; empty for a standalone server.
    slots: Vec<u16>,
    timeout: Duration,
}

/// Parses `cluster.redis`: one URL, or several separated by commas (seed
/// nodes of one cluster), each completed with `access`.
pub fn seeds(urls: &str, access: &Access) -> Result<Vec<ConnectionInfo>, LinkError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            let failed = |source| LinkError::Url {
                url: redacted(url),
                source,
            };
            let info = redis::IntoConnectionInfo::into_connection_info(url).map_err(failed)?;
            let info = with_credentials(info, access);
            match info.addr() {
                ConnectionAddr::TcpTls { .. } if access.has_tls_material() => {
                    let certificates = TlsCertificates {
                        client_tls: access.client.clone().map(|(client_cert, client_key)| {
                            ClientTlsConfig {
                                client_cert,
                                client_key,
                            }
                        }),
                        root_cert: access.root_cert.clone(),
                    };
                    // The client parses the PEM into rustls's stores, held in
                    // the address, so every node reached from it shares them.
                    Client::build_with_tls(info, certificates)
                        .map(|client| client.get_connection_info().clone())
                        .map_err(|source| {
                            LinkError::Tls(format!(
                                "cluster.tls_ca_file, cluster.tls_cert_file or cluster.tls_key_file is not usable PEM: {source}"
                            ))
                        })
                }
                ConnectionAddr::Tcp(..) if access.has_tls_material() => Err(LinkError::Tls(format!(
                    "cluster.tls_* files are set but {} is not a rediss:// URL",
                    redacted(url)
                ))),
                _ => Ok(info),
            }
        })
        .collect()
}

/// `info` with `access`'s user and password, unless it carries a password.
pub fn with_credentials(info: ConnectionInfo, access: &Access) -> ConnectionInfo {
    let mut settings = info.redis_settings().clone();
    if settings.password().is_none()
        && let Some(password) = &access.password
    {
        settings = settings.set_password(password);
        if settings.username().is_none()
            && let Some(username) = &access.username
        {
            settings = settings.set_username(username);
        }
    }
    info.set_redis_settings(settings)
}

/// `template` (credentials, TLS) at another node's address.
fn at(template: &ConnectionInfo, host: String, port: u16) -> ConnectionInfo {
    let addr = match template.addr() {
        ConnectionAddr::TcpTls {
            insecure,
            tls_params,
            ..
        } => ConnectionAddr::TcpTls {
            host,
            port,
            insecure: *insecure,
            tls_params: tls_params.clone(),
        },
        _ => ConnectionAddr::Tcp(host, port),
    };
    template.clone().set_addr(addr)
}

fn name_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
        ConnectionAddr::Unix(path) => path.display().to_string(),
        other => format!("{other:?}"),
    }
}

impl Link {
    /// Connects to the first seed that answers and, if it is a cluster node,
    /// to every primary in its slot map.
    pub async fn connect(seeds: &[ConnectionInfo], timeout: Duration) -> Result<Self, LinkError> {
        let mut failures = Vec::new();
        for seed in seeds {
            match Self::connect_via(seed, timeout).await {
                Ok(link) => return Ok(link),
                Err(error) => failures.push(format!("{}: {error}", name_of(seed))),
            }
        }
        Err(LinkError::Unreachable(failures.join("; ")))
    }

    /// Asks the sentinels in turn where the primary named `master` is, and
    /// connects to it there as `primary` (credentials, TLS) says, checking
    /// that it is a primary: a sentinel that has not yet seen a failover
    /// may still name the old one.
    pub async fn via_sentinels(
        sentinels: &[ConnectionInfo],
        master: &str,
        primary: &ConnectionInfo,
        timeout: Duration,
    ) -> Result<Self, LinkError> {
        let mut failures = Vec::new();
        for sentinel in sentinels {
            let (host, port) = match ask_sentinel(sentinel, master, timeout).await {
                Ok(address) => address,
                Err(error) => {
                    failures.push(format!("sentinel {}: {error}", name_of(sentinel)));
                    continue;
                }
            };
            let info = at(primary, host, port);
            let link = match Self::connect_via(&info, timeout).await {
                Ok(link) => link,
                Err(error) => {
                    failures.push(format!(
                        "{} (named by sentinel {}): {error}",
                        name_of(&info),
                        name_of(sentinel)
                    ));
                    continue;
                }
            };
            let mut connection = link.nodes[0].connection.clone();
            let role: redis::RedisResult<Value> = bounded(
                timeout,
                "ROLE",
                redis::cmd("ROLE").query_async(&mut connection),
            )
            .await?;
            match role {
                Ok(Value::Array(parts)) if matches!(parts.first(), Some(Value::BulkString(role)) if role == b"master") =>
                {
                    return Ok(link);
                }
                other => failures.push(format!(
                    "{} (named by sentinel {}) is not a primary: {other:?}",
                    name_of(&info),
                    name_of(sentinel)
                )),
            }
        }
        Err(LinkError::Unreachable(failures.join("; ")))
    }

    async fn connect_via(seed: &ConnectionInfo, timeout: Duration) -> Result<Self, LinkError> {
        let first = open(seed.clone(), timeout).await?;
        let mut connection = first.connection.clone();
        let map: redis::RedisResult<Value> = bounded(
            timeout,
            "CLUSTER SLOTS",
            redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut connection),
        )
        .await?;
        let ranges = match map {
            Ok(value) => parse_slots(value)?,
            // "ERR This instance has cluster support disabled": standalone.
            Err(error) if error.to_string().contains("cluster support disabled") => {
                return Ok(Self {
                    nodes: vec![first],
                    known: Vec::new(),
                    slots: Vec::new(),
                    timeout,
                });
            }
            Err(source) => {
                return Err(LinkError::Command {
                    op: "CLUSTER SLOTS",
                    node: first.name,
                    source,
                });
            }
        };
        let mut nodes: Vec<Node> = Vec::new();
        let mut slots = vec![u16::MAX; 16384];
        let mut known: Vec<ConnectionInfo> = Vec::new();
        for range in &ranges {
            for (host, port) in std::iter::once(&range.primary).chain(&range.replicas) {
                if !known
                    .iter()
                    .any(|info| name_of(info) == format!("{host}:{port}"))
                {
                    known.push(at(seed, host.clone(), *port));
                }
            }
        }
        for SlotRange {
            start,
            end,
            primary: (host, port),
            ..
        } in ranges
        {
            let index = match nodes
                .iter()
                .position(|node| node.name == format!("{host}:{port}"))
            {
                Some(index) => index,
                None => {
                    nodes.push(open(at(seed, host, port), timeout).await?);
                    nodes.len() - 1
                }
            };
            for slot in start..=end.min(16383) {
                slots[slot as usize] = index as u16;
            }
        }
        if nodes.is_empty() || slots.contains(&u16::MAX) {
            return Err(LinkError::Topology(
                "not every slot has a primary (is the cluster still forming?)".into(),
            ));
        }
        Ok(Self {
            nodes,
            known,
            slots,
            timeout,
        })
    }

    /// Every node of the cluster the slot map named (primaries and
    /// replicas); empty for a standalone server.
    pub fn known_nodes(&self) -> &[ConnectionInfo] {
        &self.known
    }

    /// How many primary nodes the link spans.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the server is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        !self.slots.is_empty()
    }

    /// The node holding `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        match self.slots.get(super::wire::key_slot(key) as usize) {
            Some(&node) => node as usize,
            None => 0,
        }
    }

    /// Runs one pipeline per node (empty ones skipped), all at once.
    pub async fn run(&self, pipelines: &[Pipeline]) -> Result<(), LinkError> {
        let runs = self
            .nodes
            .iter()
            .zip(pipelines)
            .filter(|(_, pipeline)| pipeline.cmd_iter().next().is_some())
            .map(|(node, pipeline)| async move {
                let mut connection = node.connection.clone();
                pipeline
                    .query_async::<()>(&mut connection)
                    .await
                    .map_err(|source| {
                        let node = node.name.clone();
                        if is_refusal(&source) {
                            LinkError::Refused { node, source }
                        } else {
                            LinkError::Command {
                                op: "write",
                                node,
                                source,
                            }
                        }
                    })
            });
        let results = bounded(self.timeout, "write", futures_util::future::join_all(runs)).await?;
        // A failed link outranks a refusal: the caller must reconnect.
        let mut refused = None;
        for result in results {
            match result {
                Ok(()) => {}
                Err(refusal @ LinkError::Refused { .. }) => refused = Some(refusal),
                Err(failure) => return Err(failure),
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// Publishes `payload` on `channel` (a cluster relays it to every node's subscribers).
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> Result<(), LinkError> {
        let node = &self.nodes[0];
        let mut connection = node.connection.clone();
        bounded(
            self.timeout,
            "PUBLISH",
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut connection),
        )
        .await?
        .map(drop)
        .map_err(|source| LinkError::Command {
            op: "PUBLISH",
            node: node.name.clone(),
            source,
        })
    }

    /// Subscribes to `channel` on the first node.
    pub async fn subscribe(&self, channel: &str) -> Result<PubSubStream, LinkError> {
        let node = &self.nodes[0];
        let failed = |source| LinkError::Command {
            op: "SUBSCRIBE",
            node: node.name.clone(),
            source,
        };
        let mut pubsub = bounded(self.timeout, "SUBSCRIBE", node.client.get_async_pubsub())
            .await?
            .map_err(failed)?;
        bounded(self.timeout, "SUBSCRIBE", pubsub.subscribe(channel))
            .await?
            .map_err(failed)?;
        Ok(pubsub.into_on_message())
    }

    /// One page of a scan of node `node`: the keys matching `pattern` from
    /// `cursor` on, each with its hash's fields and values, and the cursor to
    /// continue from (0: that node is done). A few hundred keys per round trip.
    pub async fn scan_page(
        &self,
        node: usize,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<SwarmHash>), LinkError> {
        let Some(node) = self.nodes.get(node) else {
            return Ok((0, Vec::new()));
        };
        let mut connection = node.connection.clone();
        let failed = |op| {
            let name = node.name.clone();
            move |source| LinkError::Command {
                op,
                node: name,
                source,
            }
        };
        let (next, keys): (u64, Vec<Vec<u8>>) = bounded(
            self.timeout,
            "SCAN",
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(512)
                // Another program's key of another type under our prefix is
                // skipped, not a failed resync.
                .arg("TYPE")
                .arg("hash")
                .query_async(&mut connection),
        )
        .await?
        .map_err(failed("SCAN"))?;
        if keys.is_empty() {
            return Ok((next, Vec::new()));
        }
        let mut pipeline = redis::pipe();
        for key in &keys {
            pipeline.cmd("HGETALL").arg(key);
        }
        let hashes: Vec<Vec<(Vec<u8>, Vec<u8>)>> = bounded(
            self.timeout,
            "HGETALL",
            pipeline.query_async(&mut connection),
        )
        .await?
        .map_err(failed("HGETALL"))?;
        Ok((next, keys.into_iter().zip(hashes).collect()))
    }
}

/// A swarm hash as a scan reads it: its key, and its fields with their values.
pub type SwarmHash = (Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

/// The next message's payload; `None` once the subscription's connection closed.
pub async fn next_message(stream: &mut PubSubStream) -> Option<Vec<u8>> {
    stream
        .next()
        .await
        .map(|message| message.get_payload_bytes().to_vec())
}

/// Whether Redis answered a command with a refusal that leaves the
/// connection and the slot map as they were (`WRONGTYPE`, `OOM`, `NOPERM`),
/// rather than a failure that calls for a reconnect (I/O, timeouts,
/// `MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`, `READONLY`, `LOADING`).
fn is_refusal(error: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    matches!(
        error.kind(),
        ErrorKind::Extension
            | ErrorKind::Server(ServerErrorKind::ResponseError)
            | ErrorKind::Server(ServerErrorKind::NoPerm)
    )
}

async fn open(info: ConnectionInfo, timeout: Duration) -> Result<Node, LinkError> {
    let name = name_of(&info);
    let client = Client::open(info).map_err(|source| LinkError::Url {
        url: name.clone(),
        source,
    })?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|source| connect_error(name.clone(), source))?;
    Ok(Node {
        name,
        client,
        connection,
    })
}

/// `SENTINEL get-master-addr-by-name`: where the sentinel says `master` is.
async fn ask_sentinel(
    sentinel: &ConnectionInfo,
    master: &str,
    timeout: Duration,
) -> Result<(String, u16), LinkError> {
    let node = open(sentinel.clone(), timeout).await?;
    let mut connection = node.connection.clone();
    let answer: Option<(String, String)> = bounded(
        timeout,
        "SENTINEL get-master-addr-by-name",
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(master)
            .query_async(&mut connection),
    )
    .await?
    .map_err(|source| LinkError::Command {
        op: "SENTINEL get-master-addr-by-name",
        node: node.name.clone(),
        source,
    })?;
    let Some((host, port)) = answer else {
        return Err(LinkError::Topology(format!(
            "the sentinel monitors no primary named {master:?} (cluster.sentinel_master)"
        )));
    };
    let port = port
        .parse()
        .map_err(|_| LinkError::Topology(format!("the sentinel named port {port:?}")))?;
    Ok((host, port))
}

/// A failed connect, named for what the operator should check.
fn connect_error(node: String, source: redis::RedisError) -> LinkError {
    let text = source.to_string();
    if source.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("WRONGPASS")
        || text.contains("NOAUTH")
    {
        LinkError::Auth { node, source }
    } else if text.contains("certificate") || text.contains("TLS") || text.contains("tls") {
        LinkError::Handshake { node, source }
    } else {
        LinkError::Command {
            op: "connect",
            node,
            source,
        }
    }
}

async fn bounded<T>(
    timeout: Duration,
    op: &'static str,
    future: impl Future<Output = T>,
) -> Result<T, LinkError> {
    tokio::time::timeout(timeout, future)
        .await
        .map_err(|_| LinkError::Timeout(op))
}

/// `CLUSTER SLOTS`: `[[start, end, [host, port, id, ...], replicas...], ...]`.
/// One range of `CLUSTER SLOTS`: its slots, its primary and its replicas.
struct SlotRange {
    start: u16,
    end: u16,
    primary: (String, u16),
    replicas: Vec<(String, u16)>,
}

fn parse_slots(value: Value) -> Result<Vec<SlotRange>, LinkError> {
    let bad = |what: &str| LinkError::Topology(what.to_owned());
    let Value::Array(ranges) = value else {
        return Err(bad("CLUSTER SLOTS is not an array"));
    };
    let int = |value: &Value| match value {
        Value::Int(n) => u16::try_from(*n).ok(),
        _ => None,
    };
    let text = |value: &Value| match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    };
    let node = |value: &Value| match value {
        Value::Array(parts) => Some((parts.first().and_then(text)?, parts.get(1).and_then(int)?)),
        _ => None,
    };
    ranges
        .iter()
        .map(|range| {
            let Value::Array(parts) = range else {
                return Err(bad("a slot range is not an array"));
            };
            let (Some(start), Some(end), Some(primary)) = (
                parts.first().and_then(int),
                parts.get(1).and_then(int),
                parts.get(2),
            ) else {
                return Err(bad("a slot range lacks start, end or primary"));
            };
            let primary = node(primary).ok_or_else(|| bad("a primary lacks host or port"))?;
            // A replica the map cannot describe is only a node fewer to
            // reconnect through: skipped.
            let replicas = parts.iter().skip(3).filter_map(node).collect();
            Ok(SlotRange {
                start,
                end,
                primary,
                replicas,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_only_the_password() {
        assert_eq!(
            redacted("rediss://user:s3cret@redis:6380/0"),
            "rediss://user:***@redis:6380/0"
        );
        assert_eq!(
            redacted("redis://:s3cret@10.0.0.5"),
            "redis://:***@10.0.0.5"
        );
        // No password: unchanged, a user name included.
        assert_eq!(
            redacted("redis://user@redis:6379"),
            "redis://user@redis:6379"
        );
        assert_eq!(redacted("redis://redis:6379"), "redis://redis:6379");
        // An '@' in the path is not credentials.
        assert_eq!(redacted("redis://redis:6379/a@b"), "redis://redis:6379/a@b");
        assert_eq!(redacted("not a url"), "not a url");
    }

    #[test]
    fn seeds_take_credentials_from_access_only_where_the_url_has_none() {
        let access = Access {
            username: Some("swarmgate".into()),
            password: Some("from-env".into()),
            ..Access::default()
        };
        let seeds = seeds("redis://a:6379, redis://u:own@b:6379,", &access).expect("seeds");
        assert_eq!(seeds.len(), 2, "the empty entry is skipped");
        let settings = seeds[0].redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("swarmgate"), Some("from-env"))
        );
        let settings = seeds[1].redis_settings();
        assert_eq!(
            (settings.username(), settings.password()),
            (Some("u"), Some("own"))
        );
    }

    #[test]
    fn tls_files_with_a_plain_url_are_refused_and_bad_urls_are_redacted() {
        let access = Access {
            root_cert: Some(b"-----BEGIN CERTIFICATE-----".to_vec()),
            ..Access::default()
        };
        let Err(LinkError::Tls(message)) = seeds("redis://:pw@a:6379", &access) else {
            panic!("accepted");
        };
        assert!(message.contains("not a rediss:// URL"), "{message}");
        assert!(!message.contains("pw@"), "{message}");
        let Err(error) = seeds("redis://:pw@a:notaport", &Access::default()) else {
            panic!("accepted");
        };
        assert!(!error.to_string().contains(":pw@"), "{error}");
    }

    #[test]
    fn another_node_is_reached_as_the_seed_was() {
        let seed = seeds("redis://u:pw@a:6379", &Access::default())
            .expect("seed")
            .remove(0);
        let node = at(&seed, "10.0.0.7".into(), 7001);
        assert_eq!(name_of(&node), "10.0.0.7:7001");
        assert_eq!(node.redis_settings().password(), Some("pw"));
        let tls = seeds("rediss://a:6380", &Access::default())
            .expect("seed")
            .remove(0);
        assert!(matches!(
            at(&tls, "10.0.0.7".into(), 7001).addr(),
            ConnectionAddr::TcpTls { port: 7001, .. }
        ));
    }
}
