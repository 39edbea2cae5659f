//! One suite, every storage mode: a single instance, a single instance
//! restarted from its snapshot before every check, two instances on a
//! standalone Redis, two instances on a three-node Redis Cluster. Peers
//! announce to the instances in turn, from loopback source addresses that a
//! sites map splits into racks, zones and regions; once every instance holds
//! what was announced (a state waited on, not a time), each instance must
//! answer as one tracker would: the same counts, every peer, nearest tier
//! first, the seeder guard, stops and completions seen everywhere.
//!
//! The bridgehead guard is on (the default, one per region), so every mode
//! must also agree on which leecher of a region links regions: a rollout
//! spread over all instances (three on Redis) hands far peers to as many
//! leechers as one instance does, and to the same one everywhere.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::redis::{RedisCluster, RedisProcess};
use common::*;
use swarmgate::config::{Config, Site};
use swarmgate::server::Server;

/// Where each peer announces from, its port, and its tier seen from [`ANNOUNCER`].
const PEERS: [(&str, u16, usize); 9] = [
    ("127.1.1.2", 7001, 0), // same /24 as the announcer
    ("127.1.1.3", 7002, 0),
    ("127.1.2.2", 7003, 1), // same zone (127.1.0.0/16), another rack
    ("127.1.3.2", 7004, 1),
    ("127.2.1.2", 7005, 2), // zone b, same region "east"
    ("127.2.2.2", 7006, 2),
    ("127.3.1.2", 7007, 3), // region "west"
    ("127.9.9.2", 7008, 3), // no site at all
    ("127.9.9.3", 7009, 3),
];
const ANNOUNCER: &str = "127.1.1.1";

/// The instances of one storage mode, and what keeps their Redis alive.
struct Deployment {
    name: &'static str,
    instances: Vec<Server>,
    /// Snapshot mode: the configuration each check restarts the instance with.
    restart: Option<Config>,
    /// Peers each instance handed out since it started.
    handed: Vec<u64>,
    /// The `downloaded` every announce reports, raised each time: a
    /// leecher's download never stands still, so none reads as stalled
    /// (the guard hands stalled leechers far peers) however slow the run.
    progress: u64,
    _redis: Option<Box<dyn std::any::Any>>,
}

fn config(redis: Option<(&str, &str)>) -> Config {
    let mut config = loopback_config();
    config.locality.sites = vec![
        site("127.1.0.0/16", "a", "east"),
        site("127.2.0.0/16", "b", "east"),
        site("127.3.0.0/16", "c", "west"),
    ];
    assert_eq!(config.locality.bridgeheads, 1, "the default guard");
    if let Some((urls, namespace)) = redis {
        config.cluster.redis = urls.into();
        config.cluster.namespace = namespace.into();
        config.cluster.flush_interval = Duration::from_millis(20);
    }
    config
}

fn site(cidr: &str, zone: &str, region: &str) -> Site {
    Site {
        cidr: cidr.parse().expect("cidr"),
        zone: zone.into(),
        region: region.into(),
    }
}

impl Deployment {
    async fn single() -> Self {
        Self {
            name: "single instance",
            instances: vec![start(config(None)).await],
            restart: None,
            handed: vec![0],
            progress: 0,
            _redis: None,
        }
    }

    async fn snapshot_restarts(dir: &std::path::Path) -> Self {
        let mut config = config(None);
        config.store.snapshot_path = dir.join("swarms.bin").display().to_string();
        Self {
            name: "single instance, restarted from its snapshot",
            instances: vec![start(config.clone()).await],
            restart: Some(config),
            handed: vec![0],
            progress: 0,
            _redis: None,
        }
    }

    async fn redis_trio(dir: &std::path::Path) -> Self {
        let redis = RedisProcess::start(dir, false);
        let url = redis.url();
        Self::on_redis(
            "three instances, standalone Redis",
            3,
            &url,
            Box::new(redis),
        )
        .await
    }

    async fn redis_cluster_pair(dir: &std::path::Path) -> Self {
        let redis = RedisCluster::start(dir);
        let urls = redis.urls();
        Self::on_redis(
            "two instances, Redis Cluster of three",
            2,
            &urls,
            Box::new(redis),
        )
        .await
    }

    /// `count` instances on the Redis at `urls`, which `redis` keeps running.
    async fn on_redis(
        name: &'static str,
        count: usize,
        urls: &str,
        redis: Box<dyn std::any::Any>,
    ) -> Self {
        let mut instances = Vec::new();
        for _ in 0..count {
            instances.push(start(config(Some((urls, "conformance")))).await);
        }
        Self {
            name,
            instances,
            restart: None,
            handed: vec![0; count],
            progress: 0,
            _redis: Some(redis),
        }
    }

    fn http(&self, turn: usize) -> SocketAddr {
        self.instances[turn % self.instances.len()]
            .http_addr
            .expect("http listener")
    }

    /// Waits until every instance holds these counts (in snapshot mode,
    /// after a restart from the snapshot).
    async fn settled(&mut self, seeders: usize, leechers: usize) {
        if let Some(config) = &self.restart {
            for server in std::mem::take(&mut self.instances) {
                server.shutdown().await;
            }
            self.instances.push(start(config.clone()).await);
            self.handed = vec![0];
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let censuses: Vec<_> = self
                .instances
                .iter()
                .map(|server| server.engine.census())
                .collect();
            if censuses
                .iter()
                .all(|census| (census.seeders, census.leechers) == (seeders, leechers))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: instances never agreed on {seeders} seeders and {leechers} leechers: {censuses:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// An announce of `torrent` from `source` to instance `turn`:
    /// (complete, incomplete, peers). Counts what each instance handed out.
    #[allow(clippy::too_many_arguments)]
    async fn ask(
        &mut self,
        torrent: u8,
        turn: usize,
        source: &str,
        peer: u8,
        port: u16,
        left: u64,
        extra: &str,
    ) -> (i64, i64, Vec<SocketAddr>) {
        let client = reqwest::Client::builder()
            .local_address(source.parse::<IpAddr>().expect("ip"))
            .build()
            .expect("client");
        self.progress += 1 << 20;
        let query = announce_query(torrent, peer, port, left, &format!("&compact=1{extra}"))
            .replace("&downloaded=0&", &format!("&downloaded={}&", self.progress));
        let body = client
            .get(format!("http://{}/announce?{query}", self.http(turn)))
            .send()
            .await
            .expect("sent")
            .bytes()
            .await
            .expect("body");
        assert_eq!(failure(&body), None);
        let reply = dict(&body);
        let peers = compact_peers(&reply);
        // The handout invariants, on every answer of every mode: never the
        // announcer itself, never a peer twice, never more than asked for.
        let me = SocketAddr::new(source.parse().expect("ip"), port);
        assert!(
            !peers.contains(&me),
            "{}: handed itself: {peers:?}",
            self.name
        );
        let mut unique = peers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(
            unique.len(),
            peers.len(),
            "{}: duplicates: {peers:?}",
            self.name
        );
        let numwant = extra
            .split("numwant=")
            .nth(1)
            .and_then(|rest| rest.split('&').next()?.parse::<usize>().ok())
            .unwrap_or(50);
        assert!(peers.len() <= numwant, "{}: {peers:?}", self.name);
        let instances = self.instances.len();
        self.handed[turn % instances] += peers.len() as u64;
        (int(&reply, "complete"), int(&reply, "incomplete"), peers)
    }

    /// Every peer an instance handed out is counted under one tier.
    fn check_tier_counts(&self) {
        for (server, handed) in self.instances.iter().zip(&self.handed) {
            let counted: u64 = server.engine.tier_counts().0.iter().sum();
            assert_eq!(counted, *handed, "{}: peers counted by tier", self.name);
        }
    }

    async fn shutdown(self) {
        for server in self.instances {
            server.shutdown().await;
        }
    }
}

fn tier_of(addr: &SocketAddr) -> usize {
    PEERS
        .iter()
        .find(|(ip, port, _)| addr.ip().to_string() == *ip && addr.port() == *port)
        .map(|(_, _, tier)| *tier)
        .unwrap_or_else(|| panic!("{addr} never announced"))
}

/// The suite every storage mode passes.
async fn conformance(mut deployment: Deployment) {
    let name = deployment.name;
    let n = deployment.instances.len();
    // The announcer joins first, and every instance lists it before anyone
    // else joins: it is its region's bridgehead everywhere, so it is handed
    // every peer. Then the nine peers, spread over the instances.
    deployment
        .ask(1, 0, ANNOUNCER, 99, 7000, 100, "&numwant=0")
        .await;
    deployment.settled(0, 1).await;
    for (i, (ip, port, _)) in PEERS.iter().enumerate() {
        deployment
            .ask(1, i, ip, i as u8 + 1, *port, 100, "&numwant=0")
            .await;
    }
    deployment.settled(0, 10).await;

    for turn in 0..n {
        // Everyone, nearest tier first, with the counts of all instances.
        let (complete, incomplete, all) = deployment
            .ask(1, turn, ANNOUNCER, 99, 7000, 100, "&numwant=50")
            .await;
        assert_eq!(
            (complete, incomplete, all.len()),
            (0, 10, PEERS.len()),
            "{name}: {all:?}"
        );
        let tiers: Vec<usize> = all.iter().map(tier_of).collect();
        assert!(tiers.is_sorted(), "{name}: {all:?} is not ordered by tier");
        // Fewer slots than peers: the rack, then the zone (no seeders, and
        // 5 slots leave no spill share, so both guards stay out of the way).
        for _ in 0..10 {
            let (_, _, five) = deployment
                .ask(1, turn, ANNOUNCER, 99, 7000, 100, "&numwant=5")
                .await;
            let tiers: Vec<usize> = five.iter().map(tier_of).collect();
            assert_eq!(tiers, [0, 0, 1, 1, 2], "{name}, instance {turn}: {five:?}");
        }
        // A later leecher of the announcer's region is no bridgehead on
        // any instance: it is handed its own region only.
        let (ip, port, _) = PEERS[0];
        let (_, _, near) = deployment
            .ask(1, turn, ip, 1, port, 100, "&numwant=50")
            .await;
        let mut near: Vec<String> = near.iter().map(SocketAddr::to_string).collect();
        near.sort();
        assert_eq!(
            near,
            [
                "127.1.1.1:7000",
                "127.1.1.3:7002",
                "127.1.2.2:7003",
                "127.1.3.2:7004",
                "127.2.1.2:7005",
                "127.2.2.2:7006"
            ],
            "{name}, instance {turn}"
        );
    }
    deployment.check_tier_counts();

    // A far seeder, announced to the last instance, is the guard's pick everywhere.
    deployment
        .ask(1, n - 1, "127.3.9.9", 50, 7050, 0, "&numwant=0")
        .await;
    deployment.settled(1, 10).await;
    let guard: SocketAddr = "127.3.9.9:7050".parse().expect("addr");
    for turn in 0..n {
        let (complete, _, three) = deployment
            .ask(1, turn, ANNOUNCER, 99, 7000, 100, "&numwant=3")
            .await;
        assert_eq!(complete, 1, "{name}");
        assert!(
            three.contains(&guard),
            "{name}: guard seeder missing from {three:?}"
        );
    }

    // A leecher completing on one instance is a seeder on all; a peer
    // stopping on another is gone from all; scrape counts agree.
    let (first, last) = (PEERS[0], PEERS[8]);
    deployment
        .ask(1, 0, first.0, 1, first.1, 0, "&event=completed&numwant=0")
        .await;
    deployment
        .ask(1, n - 1, last.0, 9, last.1, 100, "&event=stopped")
        .await;
    deployment.settled(2, 8).await;
    let mut scrapes = Vec::new();
    for turn in 0..n {
        let (status, body) = get(
            deployment.http(turn),
            &format!("/scrape?info_hash={}", escape(&[1; 20])),
        )
        .await;
        assert_eq!(status, 200);
        scrapes.push(body);
        let (complete, incomplete, all) = deployment
            .ask(1, turn, ANNOUNCER, 99, 7000, 100, "&numwant=50")
            .await;
        assert_eq!((complete, incomplete), (2, 8), "{name}");
        let stopped = SocketAddr::new(last.0.parse().expect("ip"), last.1);
        assert!(!all.contains(&stopped), "{name}: stopped peer handed out");
    }
    assert!(
        scrapes.windows(2).all(|pair| pair[0] == pair[1]),
        "{name}: scrapes differ"
    );
    // A seeder is handed leechers only, on every instance; and the east
    // holds a seeder now, so its leechers serve themselves and are handed
    // to no one afar: the west seeder gets the west leecher and the one
    // outside every site.
    for turn in 0..n {
        let (_, _, all) = deployment
            .ask(1, turn, "127.3.9.9", 50, 7050, 0, "&numwant=50")
            .await;
        let mut all: Vec<String> = all.iter().map(SocketAddr::to_string).collect();
        all.sort();
        assert_eq!(
            all,
            ["127.3.1.2:7007", "127.9.9.2:7008"],
            "{name}, instance {turn}"
        );
    }
    deployment.check_tier_counts();
    // One instance hands far peers to one west leecher (the east holds a
    // seeder, so its leechers stay home); so must any number of them.
    let linked = rollout(&mut deployment).await;
    assert!(
        linked.len() == 1 && linked[0].starts_with("127.3."),
        "{name}: one bridgehead in the west, as on one instance: {linked:?}"
    );
    deployment.shutdown().await;
}

/// West leechers of torrent 2 in a rollout, and the east ones.
const WEST: usize = 12;
const EAST: usize = 6;

/// Where rollout leecher `k` announces from (the west ones first).
fn rollout_leecher(k: usize) -> (String, u16) {
    if k < WEST {
        (format!("127.3.{}.{}", 1 + k / 4, 10 + k), 7200 + k as u16)
    } else {
        (format!("127.2.5.{}", 10 + k), 7300 + k as u16)
    }
}

/// Torrent 2 rolls out: an origin seeder in the east, then every leecher
/// at once, each to instance `k % n`. Once every instance lists everyone,
/// each leecher asks each instance: every instance must hand far peers to
/// the same leechers. Returns them (sorted), as `ip:port`.
async fn rollout(deployment: &mut Deployment) -> Vec<String> {
    let name = deployment.name;
    let n = deployment.instances.len();
    let before = deployment.instances[0].engine.census();
    deployment
        .ask(2, 0, "127.1.9.9", 200, 7100, 0, "&numwant=0")
        .await;
    // The rollout's announces run at once: whatever order they arrive in,
    // and whichever instance hears of each first.
    let announces: Vec<_> = (0..WEST + EAST)
        .map(|k| {
            let (ip, port) = rollout_leecher(k);
            let addr = deployment.http(k % n);
            async move {
                let client = reqwest::Client::builder()
                    .local_address(ip.parse::<IpAddr>().expect("ip"))
                    .build()
                    .expect("client");
                let query = announce_query(2, 100 + k as u8, port, 100, "&compact=1&numwant=50");
                let status = client
                    .get(format!("http://{addr}/announce?{query}"))
                    .send()
                    .await
                    .expect("sent")
                    .status();
                assert_eq!(status, 200);
            }
        })
        .collect();
    futures_util::future::join_all(announces).await;
    deployment
        .settled(before.seeders + 1, before.leechers + WEST + EAST)
        .await;
    let mut linked_by: Vec<Vec<String>> = vec![Vec::new(); n];
    for (turn, linked) in linked_by.iter_mut().enumerate() {
        for k in 0..WEST + EAST {
            let (ip, port) = rollout_leecher(k);
            let (_, _, peers) = deployment
                .ask(2, turn, &ip, 100 + k as u8, port, 100, "&numwant=50")
                .await;
            let west = |addr: &SocketAddr| addr.to_string().starts_with("127.3.");
            let me_west = k < WEST;
            if peers.iter().any(|peer| west(peer) != me_west) {
                linked.push(format!("{ip}:{port}"));
            }
        }
        linked.sort();
    }
    assert!(
        linked_by.windows(2).all(|pair| pair[0] == pair[1]),
        "{name}: instances disagree on who links regions: {linked_by:?}"
    );
    linked_by.swap_remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_conforms() {
    conformance(Deployment::single().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_instance_restarted_from_its_snapshot_conforms() {
    let dir = temp_dir("conformance-snapshot");
    conformance(Deployment::snapshot_restarts(&dir).await).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_standalone_redis_conform() {
    let dir = temp_dir("conformance-redis");
    conformance(Deployment::redis_trio(&dir).await).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_a_redis_cluster_conform() {
    let dir = temp_dir("conformance-redis-cluster");
    conformance(Deployment::redis_cluster_pair(&dir).await).await;
    let _ = std::fs::remove_dir_all(&dir);
}
