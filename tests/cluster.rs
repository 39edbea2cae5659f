//! Several tracker processes on Redis, with the real binary and real Redis:
//! a three-node Redis Cluster spreads the swarms over its nodes; `kill -9`
//! of an instance loses no peer; an instance that joins a running cluster
//! serves full swarms from its first answer; a Redis restart leaves the
//! instances answering, says so, and they resynchronise when it returns.
//! Every wait is on a state (a metric, an answer), never a window of time.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::redis::{Pki, RedisCluster, RedisProcess};
use common::*;

/// An instance of the cluster at `urls`, namespace `namespace`, no snapshot.
fn instance(dir: &Path, name: &str, urls: &str, namespace: &str) -> TrackerProcess {
    TrackerProcess::start(
        dir,
        name,
        &format!(
            "[store]\nsnapshot_path = \"\"\n[cluster]\nredis = \"{urls}\"\nnamespace = \"{namespace}\"\ntimeout = \"500ms\"\n"
        ),
    )
}

/// Waits until `check` holds for the instance's metrics.
async fn wait_for_metrics(
    tracker: &TrackerProcess,
    what: &str,
    check: impl Fn(&std::collections::HashMap<String, f64>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = scrape_metrics(tracker.admin).await;
        if check(&metrics) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {metrics:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn peers_held(metrics: &std::collections::HashMap<String, f64>) -> f64 {
    sample(metrics, "swarmgate_peers{role=\"seeder\"}")
        + sample(metrics, "swarmgate_peers{role=\"leecher\"}")
}

fn ports(peers: &[SocketAddr]) -> Vec<u16> {
    let mut ports: Vec<u16> = peers.iter().map(SocketAddr::port).collect();
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_no_peer_is_lost_to_kill_9_and_a_joiner_answers_in_full_at_once() {
    let dir = temp_dir("cluster-kill");
    let redis = RedisCluster::start(&dir);
    let urls = redis.urls();
    let a = instance(&dir, "a", &urls, "kill");
    let b = instance(&dir, "b", &urls, "kill");
    // 30 torrents, three peers each (peer 1 seeds), all announced to A.
    for torrent in 1..=30u8 {
        for peer in 1..=3u8 {
            a.announce(torrent, peer, u64::from(peer != 1)).await;
        }
    }
    wait_for_metrics(&b, "held A's 90 peers", |m| peers_held(m) == 90.0).await;
    // The swarms spread over the nodes by their hash tags.
    let holding = redis.nodes.iter().filter(|node| node.dbsize() > 0).count();
    let keys: u64 = redis.nodes.iter().map(RedisProcess::dbsize).sum();
    assert_eq!(keys, 30, "one hash per swarm");
    assert!(holding >= 2, "30 swarms all on one node of three");

    a.signal(libc::SIGKILL);
    drop(a);
    // B answers every swarm in full, with the counts.
    for torrent in 1..=30u8 {
        let (complete, incomplete, peers) = b.announce(torrent, 40, 100).await;
        assert_eq!((complete, incomplete), (1, 3), "torrent {torrent}");
        assert_eq!(ports(&peers), [7001, 7002, 7003], "torrent {torrent}");
    }
    // A new instance's first answers are complete: it read Redis before serving.
    let c = instance(&dir, "c", &urls, "kill");
    let resynced = c.logged("resynchronised");
    assert_eq!(resynced["fields"]["redis_cluster"].as_bool(), Some(true));
    assert_eq!(resynced["fields"]["nodes"].as_u64(), Some(3));
    for torrent in 1..=30u8 {
        let (complete, incomplete, peers) = c.announce(torrent, 50, 100).await;
        // B's announcer (peer 40) may or may not have replicated yet; A's three have.
        assert_eq!(complete, 1, "torrent {torrent}");
        assert!(incomplete >= 3, "torrent {torrent}: {incomplete}");
        assert!(
            [7001, 7002, 7003]
                .iter()
                .all(|port| ports(&peers).contains(port)),
            "torrent {torrent}: {peers:?}"
        );
    }
    drop((b, c));
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_is_down_instances_answer_and_they_resynchronise_when_it_returns() {
    let dir = temp_dir("cluster-redis-restart");
    let mut redis = RedisProcess::start(&dir, false);
    let url = redis.url();
    let a = instance(&dir, "a", &url, "restart");
    let b = instance(&dir, "b", &url, "restart");
    for peer in 1..=3u8 {
        a.announce(1, peer, 100).await;
    }
    wait_for_metrics(&b, "held A's 3 peers", |m| peers_held(m) == 3.0).await;

    redis.kill();
    for tracker in [&a, &b] {
        wait_for_metrics(tracker, "reported the link down", |m| {
            sample(m, "swarmgate_cluster_link_up") == 0.0
        })
        .await;
        let (status, body) = get(tracker.admin, "/readyz").await;
        let body = String::from_utf8_lossy(&body);
        assert_eq!(status, 200, "still serving: {body}");
        assert!(body.contains("cluster link to Redis is down"), "{body}");
    }
    // Both keep answering from what they hold, and take new peers.
    let (_, incomplete, peers) = a.announce(1, 4, 100).await;
    assert_eq!((incomplete, ports(&peers)), (4, vec![7001, 7002, 7003]));
    let (_, _, peers) = b.announce(1, 5, 100).await;
    assert_eq!(ports(&peers), [7001, 7002, 7003]);

    // Each tries to reconnect while Redis is down, and fails: the test
    // waits for that (it caused it) before bringing Redis back, so the
    // count below does not depend on how fast this machine is.
    for tracker in [&a, &b] {
        wait_for_metrics(tracker, "counted a failed reconnect", |m| {
            sample(m, "swarmgate_cluster_resyncs_total{result=\"error\"}") >= 1.0
        })
        .await;
    }
    // Redis returns empty (it keeps nothing); both reconnect and refill it.
    let redis = RedisProcess::start_on(&dir, redis.port, false);
    for tracker in [&a, &b] {
        wait_for_metrics(tracker, "reconnected", |m| {
            sample(m, "swarmgate_cluster_link_up") == 1.0
        })
        .await;
    }
    // What each took while apart reaches the other.
    wait_for_metrics(&a, "learned B's peer", |m| peers_held(m) == 5.0).await;
    wait_for_metrics(&b, "learned A's peer", |m| peers_held(m) == 5.0).await;
    let (_, incomplete, peers) = b.announce(1, 6, 100).await;
    assert_eq!(
        (incomplete, ports(&peers)),
        (6, vec![7001, 7002, 7003, 7004, 7005])
    );
    // And a newcomer reads all of it from Redis before its first answer.
    let c = instance(&dir, "c", &url, "restart");
    let (_, _, peers) = c.announce(1, 7, 100).await;
    assert!(
        [7001, 7002, 7003, 7004, 7005]
            .iter()
            .all(|port| ports(&peers).contains(port)),
        "{peers:?}"
    );
    let metrics = scrape_metrics(a.admin).await;
    assert!(sample(&metrics, "swarmgate_cluster_resyncs_total{result=\"ok\"}") >= 2.0);
    assert!(
        sample(
            &metrics,
            "swarmgate_cluster_resyncs_total{result=\"error\"}"
        ) >= 1.0
    );
    drop((a, b, c, redis));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_starts_while_redis_is_down_serves_and_joins_later() {
    let dir = temp_dir("cluster-late-redis");
    // A port with nothing listening yet.
    let probe = RedisProcess::start(&dir, false);
    let port = probe.port;
    drop(probe);
    let url = format!("redis://127.0.0.1:{port}");
    let a = instance(&dir, "a", &url, "late");
    let (_, incomplete, _) = a.announce(1, 1, 100).await;
    assert_eq!(incomplete, 1, "serves without Redis");
    let redis = RedisProcess::start_on(&dir, port, false);
    wait_for_metrics(&a, "connected", |m| {
        sample(m, "swarmgate_cluster_link_up") == 1.0
    })
    .await;
    // Its peer was pushed to Redis at the resync: a newcomer sees it.
    let b = instance(&dir, "b", &url, "late");
    let (_, _, peers) = b.announce(1, 2, 100).await;
    assert_eq!(ports(&peers), [7001]);
    drop((a, b, redis));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_stops_answering_without_closing_counts_as_down() {
    let dir = temp_dir("cluster-frozen-redis");
    let redis = RedisProcess::start(&dir, false);
    let url = redis.url();
    let a = instance(&dir, "a", &url, "frozen");
    let b = instance(&dir, "b", &url, "frozen");
    a.announce(1, 1, 100).await;
    wait_for_metrics(&b, "held A's peer", |m| peers_held(m) == 1.0).await;
    // Frozen: every socket stays open, nothing answers (a split, seen from here).
    redis.signal(libc::SIGSTOP);
    for tracker in [&a, &b] {
        wait_for_metrics(tracker, "noticed the silence", |m| {
            sample(m, "swarmgate_cluster_link_up") == 0.0
        })
        .await;
    }
    let (_, incomplete, peers) = b.announce(1, 2, 100).await;
    assert_eq!((incomplete, ports(&peers)), (2, vec![7001]));
    redis.signal(libc::SIGCONT);
    wait_for_metrics(&a, "learned B's peer after the thaw", |m| {
        peers_held(m) == 2.0
    })
    .await;
    drop((a, b, redis));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_state_in_redis_is_counted_and_never_breaks_the_cluster() {
    let dir = temp_dir("cluster-damage");
    let redis = RedisProcess::start(&dir, false);
    let url = redis.url();
    let hex = |torrent: u8| format!("{torrent:02x}").repeat(20);
    // Torrent 1's hash is a string instead; torrent 2's holds garbage.
    let string_key = format!("damage:{{{}}}:p", hex(1));
    assert!(
        redis
            .command(&["SET", &string_key, "not a hash"])
            .is_some_and(|r| r.starts_with("+OK"))
    );
    let garbage_key = format!("damage:{{{}}}:p", hex(2));
    redis.command(&["HSET", &garbage_key, "short", "garbage"]);
    let a = instance(&dir, "a", &url, "damage");
    let b = instance(&dir, "b", &url, "damage");
    let metrics = scrape_metrics(b.admin).await;
    assert!(
        sample(
            &metrics,
            "swarmgate_cluster_corrupt_total{source=\"redis\"}"
        ) >= 1.0
    );
    assert_eq!(sample(&metrics, "swarmgate_cluster_link_up"), 1.0);

    // Redis refuses the write to torrent 1 (WRONGTYPE); B still learns the
    // peer through the channel, and the link stays up.
    a.announce(1, 1, 100).await;
    a.announce(2, 2, 100).await;
    wait_for_metrics(&b, "learned both peers", |m| peers_held(m) == 2.0).await;
    wait_for_metrics(&a, "counted the refusal", |m| {
        sample(m, "swarmgate_cluster_write_refusals_total") >= 1.0
    })
    .await;
    // Garbage on the channel: ignored and counted by both.
    redis.command(&["PUBLISH", "damage:changes", "garbage"]);
    for tracker in [&a, &b] {
        wait_for_metrics(tracker, "counted the garbage batch", |m| {
            sample(m, "swarmgate_cluster_corrupt_total{source=\"channel\"}") >= 1.0
        })
        .await;
        let metrics = scrape_metrics(tracker.admin).await;
        assert_eq!(sample(&metrics, "swarmgate_cluster_link_up"), 1.0);
        assert_eq!(
            sample(&metrics, "swarmgate_cluster_resyncs_total{result=\"ok\"}"),
            1.0
        );
    }
    // A newcomer resynchronises past both damaged keys.
    let c = instance(&dir, "c", &url, "damage");
    assert_eq!(
        c.logged("resynchronised")["fields"]["pulled"].as_u64(),
        Some(1)
    );
    let (_, _, peers) = c.announce(2, 3, 100).await;
    assert_eq!(ports(&peers), [7002]);
    drop((a, b, c, redis));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An instance whose `[cluster]` section is `cluster` (plus a short timeout).
fn instance_with(dir: &Path, name: &str, cluster: &str) -> TrackerProcess {
    TrackerProcess::start(
        dir,
        name,
        &format!("[store]\nsnapshot_path = \"\"\n[cluster]\ntimeout = \"500ms\"\n{cluster}"),
    )
}

/// `/readyz`'s body.
async fn readyz(tracker: &TrackerProcess) -> String {
    let (status, body) = get(tracker.admin, "/readyz").await;
    assert_eq!(status, 200, "a cluster problem never takes an instance out");
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_tls_with_requirepass_or_an_acl_user_instances_share_swarms_and_bad_credentials_or_ca_say_so()
 {
    let dir = temp_dir("cluster-tls");
    let pki = Pki::new(&dir);
    let ca = pki.file("ca.pem");

    // requirepass, server certificate only.
    let redis = RedisProcess::start_tls(
        &dir,
        &pki,
        &["--tls-auth-clients", "no", "--requirepass", "pass-word-1"],
        &["-a", "pass-word-1"],
    );
    let url = format!("rediss://127.0.0.1:{}", redis.port);
    let with_password = |password: &str, ca: &str| {
        format!(
            "redis = \"{url}\"\nnamespace = \"tls\"\npassword = \"{password}\"\ntls_ca_file = \"{ca}\"\n"
        )
    };
    let a = instance_with(&dir, "a", &with_password("pass-word-1", &ca));
    let b = instance_with(&dir, "b", &with_password("pass-word-1", &ca));
    for peer in 1..=3u8 {
        a.announce(1, peer, 100).await;
    }
    wait_for_metrics(&b, "held A's 3 peers through TLS", |m| peers_held(m) == 3.0).await;
    let keys = redis.cli_tls(&pki, &["-a", "pass-word-1", "DBSIZE"]);
    assert!(keys.trim().parse::<u64>().is_ok_and(|n| n >= 1), "{keys}");

    // A wrong password and an untrusted CA: the instance starts, serves,
    // and says why the link is down, in its log and in /readyz.
    let wrong = instance_with(&dir, "wrong", &with_password("not-the-password", &ca));
    let logged = wrong.logged("Redis unreachable at start");
    let error = logged["fields"]["error"]
        .as_str()
        .expect("error")
        .to_owned();
    assert!(error.contains("refused the credentials"), "{error}");
    assert!(!error.contains("not-the-password"), "{error}");
    let body = readyz(&wrong).await;
    assert!(
        body.contains("degraded") && body.contains("refused the credentials"),
        "{body}"
    );
    let untrusted = instance_with(
        &dir,
        "untrusted",
        &with_password("pass-word-1", &pki.file("rogue-ca.pem")),
    );
    let body = readyz(&untrusted).await;
    assert!(
        body.contains("degraded") && body.contains("TLS with Redis"),
        "{body}"
    );
    drop((wrong, untrusted));

    // An ACL user named in the URL, and mutual TLS: the server wants the
    // client certificate, and the default user is off.
    let acl = RedisProcess::start_tls(
        &dir,
        &pki,
        &[
            "--tls-auth-clients",
            "yes",
            "--user",
            "default",
            "off",
            "--user",
            "tracker",
            "on",
            ">acl-secret-2",
            // Only what docs/cluster.md's ACL grants.
            "~acl:*",
            "&acl:changes",
            "+@read",
            "+@write",
            "+@pubsub",
            "+@connection",
            "+cluster|slots",
        ],
        &["--user", "tracker", "--pass", "acl-secret-2"],
    );
    let mutual = format!(
        "redis = \"rediss://tracker:acl-secret-2@127.0.0.1:{}\"\nnamespace = \"acl\"\ntls_ca_file = \"{ca}\"\n\
         tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        acl.port,
        pki.file("client.pem"),
        pki.file("client.key")
    );
    let c = instance_with(&dir, "c", &mutual);
    let d = instance_with(&dir, "d", &mutual);
    for peer in 1..=2u8 {
        d.announce(2, peer, 100).await;
    }
    wait_for_metrics(&c, "held D's 2 peers through mutual TLS", |m| {
        peers_held(m) == 2.0
    })
    .await;
    let (_, incomplete, peers) = c.announce(2, 3, 100).await;
    assert_eq!((incomplete, ports(&peers)), (3, vec![7001, 7002]));
    drop((a, b, c, d));
    drop((redis, acl));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Successful resyncs so far.
fn resyncs(metrics: &std::collections::HashMap<String, f64>) -> f64 {
    sample(metrics, "swarmgate_cluster_resyncs_total{result=\"ok\"}")
}

/// After a primary was killed at `killed`, with `a` at `before` resyncs:
/// waits until `a` is linked and resynchronised again, noting when
/// `taken_over` first held. Returns both times since the kill.
async fn writes_resume_after_failover(
    a: &TrackerProcess,
    before: f64,
    killed: Instant,
    taken_over: impl Fn() -> bool,
) -> (Duration, Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut takeover = None;
    loop {
        if takeover.is_none() && taken_over() {
            takeover = Some(killed.elapsed());
        }
        let m = scrape_metrics(a.admin).await;
        if resyncs(&m) > before && sample(&m, "swarmgate_cluster_link_up") == 1.0 {
            let restored = killed.elapsed();
            return (takeover.unwrap_or(restored), restored);
        }
        assert!(
            Instant::now() < deadline,
            "the instance never found the new primary: {}",
            readyz(a).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Peers 1 and 2 are listed in each of `swarms` swarms for a newcomer (peer 3).
async fn both_peers_listed(fresh: &TrackerProcess, swarms: u8) {
    for torrent in 1..=swarms {
        let (_, incomplete, peers) = fresh.announce(torrent, 3, 100).await;
        assert_eq!(
            (incomplete, ports(&peers)),
            (3, vec![7001, 7002]),
            "swarm {torrent}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_only_seed_primary_dies_finds_the_cluster_through_learned_nodes_and_loses_nothing()
 {
    let dir = temp_dir("cluster-failover");
    let mut redis = RedisCluster::start_with_replicas(&dir, 1);
    let seed = redis.primaries()[0];
    let a = instance(&dir, "a", &redis.nodes[seed].url(), "failover");
    const SWARMS: u8 = 60;
    for torrent in 1..=SWARMS {
        a.announce(torrent, 1, 100).await;
    }
    // Written to Redis: every swarm has its hash on some primary.
    let deadline = Instant::now() + Duration::from_secs(20);
    while redis
        .primaries()
        .iter()
        .map(|&i| redis.nodes[i].dbsize())
        .sum::<u64>()
        < u64::from(SWARMS)
    {
        assert!(Instant::now() < deadline, "the swarms never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = resyncs(&scrape_metrics(a.admin).await);

    // kill -9 the instance's only seed, a primary; then new peers in every
    // swarm, so that writes to its slots must fail and be made again.
    redis.nodes[seed].kill();
    let killed = Instant::now();
    for torrent in 1..=SWARMS {
        a.announce(torrent, 2, 100).await;
    }
    // The link went down (a write to the dead primary failed) and came back
    // through a node learned from the slot map, with a resync; meanwhile
    // the cluster had a primary for every slot again.
    let (failed_over, restored) =
        writes_resume_after_failover(&a, before, killed, || redis.primaries().len() == 3).await;
    println!(
        "failover: a replica took over {:.2} s after the kill; writes flowed again (link up, resynchronised) \
         after {:.2} s, {:.2} s after the failover",
        failed_over.as_secs_f64(),
        restored.as_secs_f64(),
        restored.saturating_sub(failed_over).as_secs_f64()
    );

    // Nothing lost: a fresh instance, seeded with a survivor, lists both
    // peers of every swarm from its first answer.
    let survivor = (0..redis.nodes.len())
        .find(|&i| i != seed)
        .expect("a survivor");
    let fresh = instance(&dir, "fresh", &redis.nodes[survivor].url(), "failover");
    both_peers_listed(&fresh, SWARMS).await;
    drop((a, fresh));
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A field of `SENTINEL master NAME` (redis-cli prints key and value on
/// alternate lines).
fn sentinel_field(sentinel: &RedisProcess, master: &str, field: &str) -> Option<String> {
    let reply = sentinel.cli(&["SENTINEL", "master", master]);
    let lines: Vec<&str> = reply.lines().collect();
    lines
        .iter()
        .position(|line| *line == field)
        .and_then(|i| lines.get(i + 1))
        .map(|value| value.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sentinel_instances_follow_a_failover_to_the_new_primary_and_lose_nothing() {
    let dir = temp_dir("cluster-sentinel");
    let mut primary = RedisProcess::start(&dir, false);
    let replica = RedisProcess::start_replica_of(&dir, primary.port);
    let sentinels: Vec<RedisProcess> = (0..3)
        .map(|_| RedisProcess::start_sentinel(&dir, "tracker", primary.port))
        .collect();
    // Each sentinel knows the replica and the two others before anything fails.
    let deadline = Instant::now() + Duration::from_secs(30);
    for sentinel in &sentinels {
        while sentinel_field(sentinel, "tracker", "num-slaves").as_deref() != Some("1")
            || sentinel_field(sentinel, "tracker", "num-other-sentinels").as_deref() != Some("2")
        {
            assert!(Instant::now() < deadline, "the sentinels never met");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let urls = sentinels
        .iter()
        .map(RedisProcess::url)
        .collect::<Vec<_>>()
        .join(",");
    let via_sentinels =
        format!("redis = \"{urls}\"\nsentinel_master = \"tracker\"\nnamespace = \"sentinel\"\n");
    let a = instance_with(&dir, "a", &via_sentinels);
    const SWARMS: u8 = 20;
    for torrent in 1..=SWARMS {
        a.announce(torrent, 1, 100).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.dbsize() < u64::from(SWARMS) {
        assert!(
            Instant::now() < deadline,
            "the swarms never reached the replica"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = resyncs(&scrape_metrics(a.admin).await);

    primary.kill();
    let killed = Instant::now();
    for torrent in 1..=SWARMS {
        a.announce(torrent, 2, 100).await;
    }
    let replica_port = replica.port.to_string();
    let (promoted, restored) = writes_resume_after_failover(&a, before, killed, || {
        sentinels[0]
            .cli(&["SENTINEL", "get-master-addr-by-name", "tracker"])
            .contains(&replica_port)
    })
    .await;
    println!(
        "sentinel failover: the replica was named primary {:.2} s after the kill; writes flowed again \
         after {:.2} s, {:.2} s after that",
        promoted.as_secs_f64(),
        restored.as_secs_f64(),
        restored.saturating_sub(promoted).as_secs_f64()
    );
    // Nothing lost: a fresh instance finds the new primary through the
    // sentinels and lists both peers of every swarm from its first answer.
    let fresh = instance_with(&dir, "fresh", &via_sentinels);
    both_peers_listed(&fresh, SWARMS).await;
    drop((a, fresh));
    drop((sentinels, replica));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_over_tls_is_reached_node_by_node_the_way_the_seed_was() {
    let dir = temp_dir("cluster-tls-cluster");
    let pki = Pki::new(&dir);
    let nodes = common::redis::tls_cluster(&dir, &pki);
    // One seed; the other two primaries are learned from the slot map and
    // reached with the same TLS settings.
    let config = format!(
        "redis = \"rediss://127.0.0.1:{}\"\nnamespace = \"tlscluster\"\ntls_ca_file = \"{}\"\n",
        nodes[0].port,
        pki.file("ca.pem")
    );
    let a = instance_with(&dir, "a", &config);
    let b = instance_with(&dir, "b", &config);
    const SWARMS: u8 = 30;
    for torrent in 1..=SWARMS {
        a.announce(torrent, 1, 100).await;
    }
    wait_for_metrics(&b, "held A's peers through the TLS cluster", |m| {
        peers_held(m) == f64::from(SWARMS)
    })
    .await;
    // The swarms are spread over all three primaries: every node was written.
    for node in &nodes {
        let keys: u64 = node.cli_tls(&pki, &["DBSIZE"]).trim().parse().unwrap_or(0);
        assert!(keys > 0, "a primary got no swarm over TLS");
    }
    drop((a, b));
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}
