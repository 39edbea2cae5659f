//! The JWKS document parser (what a registry, or whoever answers at its URL, sends).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(loaded) = swarmgate::gateway::keys::parse_jwks(data) {
        let set = swarmgate::gateway::keys::KeySet::new(loaded.keys);
        for kid in set.kids() {
            assert!(set.contains(kid));
        }
    }
});
