//! The bridge's and the agent's request paths (`<name>/blobs/<digest>`,
//! `<name>/manifests/<tag or digest>`), which go into registry URLs and
//! cache file names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use swarmgate::bridge::reference::{BlobRef, ManifestRef};

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
    if let Ok(manifest) = ManifestRef::parse(path) {
        // Accepted manifest paths print back to themselves, and the part
        // that goes after /v2/<name>/ in a registry URL has no '/', '?' or '#'.
        assert_eq!(format!("{}/{}", manifest.name, manifest.rest()), path);
        let reference = manifest.rest();
        let reference = reference.trim_start_matches("manifests/");
        assert!(!reference.contains(['/', '?', '#', '%']));
        assert!(!manifest.name.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    }
});
