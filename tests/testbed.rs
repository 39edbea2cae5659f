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

/// A box on the chart: x0, y0, x1, y1 in SVG pixels.
type Box = (f64, f64, f64, f64);

fn attr(line: &str, name: &str) -> Option<f64> {
    let start = line.find(&format!(" {name}=\""))? + name.len() + 3;
    line[start..].split('"').next()?.parse().ok()
}

/// Every text and rectangle of a chart `svg_chart` drew (one element per
/// line), as boxes. Text is measured at 0.6 em per character and 1 em high,
/// the average advance of a sans-serif face; `svg_chart` lays out with more.
fn chart_boxes(svg: &str) -> (f64, f64, Vec<(String, Box)>, Vec<Box>) {
    let head = svg.lines().next().expect("svg");
    let (width, height) = (
        attr(head, "width").expect("width"),
        attr(head, "height").expect("height"),
    );
    let (mut texts, mut rects) = (Vec::new(), Vec::new());
    for line in svg.lines().skip(1) {
        if line.starts_with("<text") {
            let content = line
                .split('>')
                .nth(1)
                .and_then(|t| t.split('<').next())
                .expect("text");
            let size = attr(line, "font-size").unwrap_or(12.0);
            let (x, y) = (attr(line, "x").expect("x"), attr(line, "y").expect("y"));
            let w = 0.6 * size * content.chars().count() as f64;
            let x0 = if line.contains("text-anchor=\"middle\"") {
                x - w / 2.0
            } else {
                x
            };
            texts.push((content.to_owned(), (x0, y - size, x0 + w, y)));
        } else if line.starts_with("<rect") {
            let (x, y) = (attr(line, "x").expect("x"), attr(line, "y").expect("y"));
            let (w, h) = (
                attr(line, "width").expect("w"),
                attr(line, "height").expect("h"),
            );
            if (w, h) != (width, height) {
                rects.push((x, y, x + w, y + h));
            }
        }
    }
    (width, height, texts, rects)
}

fn overlap(a: Box, b: Box) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

/// No label overlaps another label or a bar, and nothing is cut off.
fn assert_chart_clean(svg: &str, what: &str) {
    let (width, height, texts, rects) = chart_boxes(svg);
    for (i, (text, a)) in texts.iter().enumerate() {
        assert!(
            a.0 >= 0.0 && a.1 >= 0.0 && a.2 <= width && a.3 <= height,
            "{what}: {text:?} is cut off ({a:?} in {width}x{height})"
        );
        for (other, b) in &texts[i + 1..] {
            assert!(!overlap(*a, *b), "{what}: {text:?} overlaps {other:?}");
        }
        for bar in &rects {
            assert!(
                !overlap(*a, *bar),
                "{what}: {text:?} overlaps a bar or legend key"
            );
        }
    }
}

#[test]
fn the_testbed_chart_has_no_overlaps_or_cut_labels() {
    // The chart the docs show.
    let committed =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/testbed.svg"))
            .expect("docs/testbed.svg");
    assert_chart_clean(&committed, "docs/testbed.svg");
    // A new chart with more policies and longer names than any run has.
    let dir = std::env::temp_dir().join(format!("swarmgate-chart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let mib = 1024.0 * 1024.0;
    let results: Vec<serde_json::Value> = [
        "random",
        "tiers",
        "tiers-every-4",
        "tiers-no-bridgeheads-and-a-long-name",
        "strict",
    ]
    .iter()
    .enumerate()
    .map(|(i, policy)| {
        let n = i as f64;
        serde_json::json!({
            "policy": policy,
            "p99_s": 100.0 + n,
            "bytes": {
                "within_rack": (1.0 + n) * mib,
                "across_racks": 5.0 * mib,
                "across_zones": (10.0 - n) * mib,
                "across_regions": (8.0 - n) * mib,
            },
        })
    })
    .collect();
    let json = dir.join("results.json");
    std::fs::write(
        &json,
        serde_json::json!({"topology": {"size": 1, "regions": 3}, "results": results}).to_string(),
    )
    .expect("json");
    let svg = dir.join("chart.svg");
    let run = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/testbed"))
        .arg("--chart-from")
        .arg(&json)
        .arg("--chart")
        .arg(&svg)
        .output()
        .expect("scripts/testbed runs (python3)");
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let drawn = std::fs::read_to_string(&svg).expect("chart");
    assert_eq!(
        drawn.matches("<text").count(),
        1 + 5 * 3 + 4,
        "title, 3 labels per bar, legend"
    );
    assert_chart_clean(&drawn, "a generated chart");
    let _ = std::fs::remove_dir_all(&dir);
}
