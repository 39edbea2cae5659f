//! The HTTP announce and scrape query parsers, and the jwt lookup, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::protocol::query;

fuzz_target!(|data: &[u8]| {
    if let Ok(announce) = query::parse_announce(data) {
        // A port of 0 never gets through.
        assert_ne!(announce.port, 0);
    }
    let _ = query::parse_scrape(data, 74);
    let _ = query::jwt(data);
    for (name, value) in query::pairs(data) {
        let _ = query::token_text(value);
        let _ = name;
    }
});
