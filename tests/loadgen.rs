//! A smoke run of the load generator (`examples/loadgen.rs`, compiled in
//! here) against a real tracker and against its own no-work responder: a
//! second each, to keep the benchmark tool working. No timing is asserted;
//! the benchmark procedure is in BENCHMARKS.md.

mod common;

#[path = "../examples/loadgen.rs"]
#[allow(dead_code)]
mod loadgen;

use clap::Parser;

/// Starts loadgen with these arguments in a thread of its own.
fn spawn(args: &[&str]) -> tokio::task::JoinHandle<Result<Option<loadgen::Report>, String>> {
    let cli = loadgen::Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
        .map_err(|e| e.to_string());
    tokio::task::spawn_blocking(move || loadgen::execute(cli?.mode))
}

/// Runs loadgen with these arguments to the end.
async fn run(args: &[&str]) -> Result<Option<loadgen::Report>, String> {
    spawn(args).await.expect("loadgen thread")
}

async fn report(args: &[&str]) -> loadgen::Report {
    run(args)
        .await
        .unwrap_or_else(|error| panic!("loadgen {args:?}: {error}"))
        .expect("a load run reports")
}

const DEV_EDDSA: [&str; 6] = [
    "--mint-key",
    concat!(env!("CARGO_MANIFEST_DIR"), "/keys/dev-eddsa.pem"),
    "--kid",
    "dev-eddsa",
    "--issuer",
    "dev-registry",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_drives_the_tracker_over_udp_and_http_with_cached_tokens() {
    // jwt mode: UDP carries tokens in announces only (BEP 41), so scrapes go over HTTP.
    let server = common::start(common::dev_config()).await;
    let udp = server.udp_addr.expect("udp").to_string();
    let http = server.http_addr.expect("http").to_string();
    let pid = std::process::id().to_string();
    let short = ["--seconds", "1", "--torrents", "50", "--pid", &pid];

    let args = [&["udp", "--target", &udp], &short[..], &DEV_EDDSA[..]];
    let udp_report = report(&args.concat()).await;
    assert!(
        udp_report.responses > 100,
        "udp answers: {}",
        udp_report.responses
    );
    assert_eq!(udp_report.errors, 0, "every token is accepted over BEP 41");
    assert!(
        udp_report.cpu.is_some(),
        "CPU per response is read from /proc"
    );

    let args = [
        &[
            "http",
            "--target",
            &http,
            "--connections",
            "8",
            "--scrape-share",
            "0.2",
        ],
        &short[..],
        &DEV_EDDSA[..],
    ];
    let http_report = report(&args.concat()).await;
    assert!(
        http_report.responses > 100,
        "http answers: {}",
        http_report.responses
    );
    assert_eq!(http_report.errors, 0);
    let [p50, p99, p999] = http_report.latency_us;
    assert!(
        p50 <= p99 && p99 <= p999,
        "percentiles in order: {p50} {p99} {p999}"
    );

    // The tracker saw them: about one cache miss per token (two requests with
    // a new token may both miss on two cores), hits for the rest.
    let metrics = common::scrape_metrics(server.admin_addr).await;
    let hits = common::sample(&metrics, "swarmgate_token_cache_hits_total");
    let misses = common::sample(&metrics, "swarmgate_token_cache_misses_total");
    assert!(misses <= 2.0 * 50.0, "misses {misses} for 50 tokens");
    assert!(hits > 10.0 * misses, "hits {hits}, misses {misses}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_loads_its_no_work_responder_and_refuses_what_it_cannot_send() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let listen = format!("127.0.0.1:{port}");
    let responder = spawn(&["noop-udp", "--listen", &listen, "--seconds", "3"]);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let load = report(&[
        "udp",
        "--target",
        &listen,
        "--seconds",
        "1",
        "--scrape-share",
        "0.2",
    ])
    .await;
    assert!(load.responses > 100, "answers: {}", load.responses);
    assert_eq!(load.errors, 0);
    assert!(matches!(responder.await.expect("responder"), Ok(None)));

    // A token with `exp` does not fit one BEP 41 option: refused up front.
    let args = [&["udp", "--seconds", "1", "--cold", "5"], &DEV_EDDSA[..]].concat();
    let refused = run(&args).await.err().expect("refused");
    assert!(
        refused.contains("does not fit one BEP 41 option"),
        "{refused}"
    );
    // And it only ever targets loopback.
    let refused = run(&["http", "--target", "192.0.2.1:80", "--seconds", "1"])
        .await
        .err()
        .expect("refused");
    assert!(refused.contains("loopback"), "{refused}");
}
