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

use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{MultiplexedConnection, PubSubStream};
use redis::{AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, Pipeline, Value};

/// Why the cluster link could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// `cluster.redis` is not a usable URL.
    #[error("cluster.redis {url:?} is not a Redis URL: {source}")]
    Url {
        /// The offending URL.
        url: String,
        /// What redis-rs said.
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

/// One primary node.
struct Node {
    name: String,
    client: Client,
    connection: MultiplexedConnection,
}

/// A live link to every primary node.
pub struct Link {
    nodes: Vec<Node>,
    /// Node index per slot; empty for a standalone server.
    slots: Vec<u16>,
    timeout: Duration,
}

/// Parses `cluster.redis`: one URL, or several separated by commas (seed nodes of one cluster).
pub fn seeds(urls: &str) -> Result<Vec<ConnectionInfo>, LinkError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            redis::IntoConnectionInfo::into_connection_info(url).map_err(|source| LinkError::Url {
                url: url.to_owned(),
                source,
            })
        })
        .collect()
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
        for (start, end, host, port) in ranges {
            let index = match nodes
                .iter()
                .position(|node| node.name == format!("{host}:{port}"))
            {
                Some(index) => index,
                None => {
                    let info = seed.clone().set_addr(ConnectionAddr::Tcp(host, port));
                    nodes.push(open(info, timeout).await?);
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
            slots,
            timeout,
        })
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
        .map_err(|source| LinkError::Command {
            op: "connect",
            node: name.clone(),
            source,
        })?;
    Ok(Node {
        name,
        client,
        connection,
    })
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
fn parse_slots(value: Value) -> Result<Vec<(u16, u16, String, u16)>, LinkError> {
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
    ranges
        .iter()
        .map(|range| {
            let Value::Array(parts) = range else {
                return Err(bad("a slot range is not an array"));
            };
            let (Some(start), Some(end), Some(Value::Array(primary))) = (
                parts.first().and_then(int),
                parts.get(1).and_then(int),
                parts.get(2),
            ) else {
                return Err(bad("a slot range lacks start, end or primary"));
            };
            let (Some(host), Some(port)) =
                (primary.first().and_then(text), primary.get(1).and_then(int))
            else {
                return Err(bad("a primary lacks host or port"));
            };
            Ok((start, end, host, port))
        })
        .collect()
}
