//! The bridge's request paths (`<name>/blobs/<digest>`), which go into
//! registry URLs and cache file names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::bridge::reference::BlobRef;

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(blob) = BlobRef::parse(path) {
        // Accepted paths print back to themselves and name a safe file.
        assert_eq!(blob.path(), path);
        let file = blob.digest.file_name();
        assert!(file.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
        assert!(!blob.name.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    }
});
