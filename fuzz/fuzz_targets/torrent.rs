//! Reading `.torrent` files (what agents and registries hand the tools).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = swarmgate::torrent::info_hash_of(data);
});
