//! BEP 15 request packets with BEP 41 options after announces, on any bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::protocol::udp::{self, UdpRequest};

fuzz_target!(|data: &[u8]| {
    match udp::parse_request(data) {
        Ok(UdpRequest::Announce(announce)) => {
            // The URL data and its query are slices of what was sent.
            let url = announce.url_data.as_bytes();
            assert!(url.len() <= data.len());
            let _ = swarmgate::protocol::query::jwt(announce.url_data.query());
        }
        Ok(UdpRequest::Scrape { info_hashes, .. }) => {
            assert!(info_hashes.len() <= udp::MAX_SCRAPE_HASHES);
        }
        Ok(_) => {}
        Err(error) => {
            // An error reply never echoes more than the request carried.
            if let Some(transaction_id) = error.transaction_id {
                let mut out = Vec::new();
                udp::write_error(&mut out, transaction_id, &error.to_string(), data.len());
                assert!(out.len() <= data.len().max(8));
            }
        }
    }
});
