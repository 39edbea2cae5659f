//! Reading snapshot files (what a restart trusts). Every input is decoded as
//! it is, and again with the magic, version and checksum made valid, so the
//! fuzzer explores the records behind the checksum too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::store::snapshot::{MAGIC, VERSION, decode};

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
    if data.len() >= 72 {
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(MAGIC);
        fixed[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let body = fixed.len() - 32;
        let sum = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &fixed[..body]);
        fixed[body..].copy_from_slice(sum.as_ref());
        if let Ok(snapshot) = decode(&fixed) {
            // What decodes re-encodes to the same bytes.
            let mut encoder = swarmgate::store::snapshot::Encoder::new(snapshot.written_at, 0);
            for swarm in &snapshot.swarms {
                encoder.swarm(swarm);
            }
            assert_eq!(encoder.finish(), fixed);
        }
    }
});
