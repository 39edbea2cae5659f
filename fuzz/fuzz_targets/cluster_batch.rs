//! Reading what other instances put on the cluster channel and in Redis
//! (anyone who can reach Redis can write there). Every input is decoded as
//! a batch, and again with a valid header in front, so the fuzzer explores
//! the changes too; what decodes re-encodes to what it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::cluster::wire::{BATCH_HEADER_LEN, BATCH_MAGIC, BatchEncoder, decode_batch, decode_peer};

fuzz_target!(|data: &[u8]| {
    // Far from the expiries' range, so every peer keeps its remaining time.
    let now = 0;
    let _ = decode_batch(data, now);
    if data.len() > 21 {
        let _ = decode_peer(&data[..21], &data[21..], now);
    }
    if data.len() >= BATCH_HEADER_LEN {
        let mut fixed = BATCH_MAGIC.to_vec();
        fixed.extend_from_slice(&data[4..]);
        if let Ok((header, changes)) = decode_batch(&fixed, now) {
            let mut encoder = BatchEncoder::new(header.sender, header.sent_micros);
            for change in &changes {
                encoder.push(change, now);
            }
            let again = encoder.finish();
            // An entry without a join time (an older writer's) gains one
            // (4 bytes); what it says is unchanged. Entries that all carry
            // one re-encode to the same bytes.
            assert_eq!(decode_batch(&again, now), Ok((header, changes)));
            if again.len() == fixed.len() {
                assert_eq!(again, fixed);
            }
        }
    }
});
