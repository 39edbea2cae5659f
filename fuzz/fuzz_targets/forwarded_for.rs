//! X-Forwarded-For chains: any header values from a trusted proxy.
#![no_main]

use std::net::IpAddr;

use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use swarmgate::frontend::client_ip;

fuzz_target!(|data: &[u8]| {
    let trusted: [IpNet; 2] = [
        "127.0.0.0/8".parse().expect("net"),
        "10.0.0.0/8".parse().expect("net"),
    ];
    let peer: IpAddr = "127.0.0.1".parse().expect("ip");
    // Newline-separated header values, as several X-Forwarded-For headers.
    let values: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    // Any header values resolve to some address without panicking; from an
    // untrusted peer the header is never believed.
    let _ = client_ip::resolve(peer, values.iter().copied(), &trusted);
    let stranger: IpAddr = "192.0.2.1".parse().expect("ip");
    let resolved = client_ip::resolve(stranger, values.iter().copied(), &trusted);
    assert_eq!(resolved.ip, stranger);
    assert!(!resolved.via_trusted_proxy);
});
