//! The network testbed's small variant (`scripts/testbed --small`): 8
//! libtorrent agents in their own network namespaces, 2 regions x 1 zone x
//! 2 racks, shaped links, an 8 MiB layer, bytes counted on the routers'
//! interfaces, and the tracker's offload figure checked against the
//! wire's. It needs root, `ip netns` and `tc`; without them the script
//! prints one line saying why and this test passes having checked nothing
//! (it says so). Only behaviour is asserted, never timings.

use std::process::Command;

/// Runs `scripts/testbed --small` with `extra` arguments and the test
/// binary; prints its tables and returns its results, or `None` (with the
/// script's line saying why) where the testbed cannot run here.
fn run_small(extra: &[&str], name: &str) -> Option<Vec<serde_json::Value>> {
    let out = std::env::temp_dir().join(format!("swarmgate-{name}-{}.json", std::process::id()));
    let run = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed"))
        .arg("--small")
        .args(extra)
        .args([
            "--timeout",
            "120",
            "--binary",
            env!("CARGO_BIN_EXE_swarmgate"),
        ])
        .arg("--json")
        .arg(&out)
        .output()
        .expect("scripts/testbed runs (python3)");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "testbed failed: {stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    if let Some(skipped) = stdout.lines().find(|l| l.starts_with("testbed: skipped")) {
        println!("{skipped}");
        return None;
    }
    println!(
        "{}",
        stdout
            .lines()
            .filter(|l| l.starts_with('|'))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("results written"))
            .expect("json");
    let _ = std::fs::remove_file(&out);
    Some(report["results"].as_array().expect("results").clone())
}

#[test]
fn on_a_namespaced_network_tiers_keep_bytes_near_and_every_agent_finishes() {
    let Some(results) = run_small(&[], "testbed") else {
        return;
    };
    let by_policy = |name: &str| {
        results
            .iter()
            .find(|r| r["policy"] == name)
            .unwrap_or_else(|| panic!("no {name} run"))
    };
    for result in &results {
        assert_eq!(
            result["finished"], result["agents"],
            "every agent finishes under {}: {result}",
            result["policy"]
        );
    }
    // The tracker's offload (from peers' reports) agrees with the wire's
    // (origin bytes sent against agent bytes received) within 10 points.
    for result in &results {
        let wire = result["offload_wire"].as_f64().expect("wire offload");
        let tracker = result["offload_tracker"].as_f64().expect("tracker offload");
        assert!(
            (wire - tracker).abs() <= 0.10,
            "offload: the wire says {wire}, the tracker {tracker}: {result}"
        );
    }
    let (tiers, random) = (by_policy("tiers"), by_policy("random"));
    // Same-rack peers first: a newcomer's first peer is in its rack, in every rack.
    assert_eq!(tiers["probes_same_rack"], tiers["racks"], "{tiers}");
    // Cross-region bytes (counted on the core router's links) below random's.
    let across = |r: &serde_json::Value| r["bytes"]["across_regions"].as_u64().expect("bytes");
    assert!(
        across(tiers) < across(random),
        "tiers sent {} bytes across regions, random {}",
        across(tiers),
        across(random)
    );
}

/// `scripts/testbed --small --image`: 8 nodes each running `swarmgate agent`
/// pull a 3-layer image from a real registry through their agent (skopeo,
/// containerd on one node per region where it is installed), straight from
/// the registry as the baseline, and with the tracker killed halfway. Only
/// behaviour is asserted: every pull completes with its digests verified
/// (skopeo and ctr check them), and the agents take fewer bytes out of the
/// registry than the direct pulls do.
#[test]
fn on_a_namespaced_network_agents_pull_an_image_and_spare_the_registry() {
    let Some(results) = run_small(&["--image"], "testbed-image") else {
        return;
    };
    let by_mode = |name: &str| {
        results
            .iter()
            .find(|r| r["mode"] == name)
            .unwrap_or_else(|| panic!("no {name} rollout"))
    };
    for result in &results {
        assert_eq!(
            result["pulled"], result["nodes"],
            "every node pulls the image in {}: {result}",
            result["mode"]
        );
    }
    let egress = |r: &serde_json::Value| r["registry_egress_copies"].as_f64().expect("egress");
    let (direct, agents) = (by_mode("direct"), by_mode("agents"));
    assert!(
        egress(agents) < egress(direct),
        "through the agents the registry sent {} image copies, directly {}",
        egress(agents),
        egress(direct)
    );
    assert!(
        agents["agent_bytes_by_source"]["peers"]
            .as_f64()
            .expect("peers")
            > 0.0,
        "agents exchanged layers: {agents}"
    );
}
