//! Which blob a request names: `<name>/blobs/<digest>` checked against the
//! OCI distribution grammar before anything reaches the registry. Pure.
//!
//! Names are checked because the bridge puts them in upstream URLs and in
//! web seed URLs; digests because the torrent is cached by digest and the
//! blob is verified against it while it streams.

use std::fmt;

/// Why a path does not name a blob. Each maps to a 400 with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// No `/blobs/` between a name and a digest.
    #[error("expected NAME/blobs/DIGEST, e.g. library/alpine/blobs/sha256:<64 hex digits>")]
    Shape,
    /// The repository name breaks the OCI grammar.
    #[error(
        "invalid repository name {0:?}: lowercase letters and digits, path components \
         joined by '/', separators '.', '_', '__' or '-' inside a component, at most 255 characters"
    )]
    Name(String),
    /// Not `algorithm:hex`.
    #[error("invalid digest {0:?}: expected sha256:<64 lowercase hex digits>")]
    Digest(String),
    /// A manifest reference that is neither a tag nor a digest.
    #[error("invalid tag {0:?}: expected [A-Za-z0-9_][A-Za-z0-9._-]{{0,127}} or a digest")]
    Tag(String),
    /// A well-formed digest of an algorithm the bridge cannot verify.
    #[error("unsupported digest algorithm {0:?}: the bridge verifies sha256 digests only")]
    Algorithm(String),
}

impl ReferenceError {
    /// The Distribution API's error code for it (`NAME_INVALID`, ...).
    pub fn oci_code(&self) -> &'static str {
        match self {
            ReferenceError::Name(_) => "NAME_INVALID",
            ReferenceError::Digest(_) | ReferenceError::Algorithm(_) => "DIGEST_INVALID",
            ReferenceError::Tag(_) => "MANIFEST_INVALID",
            ReferenceError::Shape => "UNSUPPORTED",
        }
    }
}

/// A blob's content address; only SHA-256, the algorithm registries use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses `sha256:<64 lowercase hex digits>`.
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let invalid = || ReferenceError::Digest(text.chars().take(100).collect());
        let (algorithm, encoded) = text.split_once(':').ok_or_else(invalid)?;
        let algorithm_ok = !algorithm.is_empty()
            && algorithm
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b));
        let encoded_ok = !encoded.is_empty()
            && encoded
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-');
        if !algorithm_ok || !encoded_ok {
            return Err(invalid());
        }
        if algorithm != "sha256" {
            return Err(ReferenceError::Algorithm(
                algorithm.chars().take(32).collect(),
            ));
        }
        if encoded.len() != 64 || encoded.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(invalid());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(encoded, &mut bytes).map_err(|_| invalid())?;
        Ok(Self(bytes))
    }

    /// The file-name-safe form, `sha256-<hex>`: the torrent's file name, so
    /// the infohash depends on the bytes alone, never on the repository.
    pub fn file_name(&self) -> String {
        format!("sha256-{}", hex::encode(self.0))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

/// A repository name and a blob digest from a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobRef {
    /// The repository, e.g. `team/app/base` (several components allowed).
    pub name: String,
    /// The blob.
    pub digest: Digest,
}

impl BlobRef {
    /// Parses `<name>/blobs/<digest>`.
    pub fn parse(path: &str) -> Result<Self, ReferenceError> {
        let (name, digest) = path.rsplit_once("/blobs/").ok_or(ReferenceError::Shape)?;
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            digest: Digest::parse(digest)?,
        })
    }

    /// `<name>/blobs/<digest>`, as in registry and web seed URLs.
    pub fn path(&self) -> String {
        format!("{}/blobs/{}", self.name, self.digest)
    }
}

/// What a manifest request names: a tag, or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestTag {
    /// A tag (`[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`): resolved by the registry on every request.
    Tag(String),
    /// A content address: the answer is checked against it.
    Digest(Digest),
}

/// A repository name and a manifest reference from a request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestRef {
    /// The repository.
    pub name: String,
    /// The tag or digest.
    pub reference: ManifestTag,
}

impl ManifestRef {
    /// Parses `<name>/manifests/<tag or digest>`.
    pub fn parse(path: &str) -> Result<Self, ReferenceError> {
        let (name, reference) = path
            .rsplit_once("/manifests/")
            .ok_or(ReferenceError::Shape)?;
        check_name(name)?;
        let reference = if reference.contains(':') {
            ManifestTag::Digest(Digest::parse(reference)?)
        } else if tag_ok(reference) {
            ManifestTag::Tag(reference.to_owned())
        } else {
            return Err(ReferenceError::Tag(reference.chars().take(130).collect()));
        };
        Ok(Self {
            name: name.to_owned(),
            reference,
        })
    }

    /// `manifests/<reference>`, the path under `/v2/<name>/`.
    pub fn rest(&self) -> String {
        match &self.reference {
            ManifestTag::Tag(tag) => format!("manifests/{tag}"),
            ManifestTag::Digest(digest) => format!("manifests/{digest}"),
        }
    }
}

/// The distribution spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
fn tag_ok(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    matches!(bytes.first(), Some(&b) if word(b))
        && bytes.len() <= 128
        && bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-')
}

/// The OCI distribution spec's name grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
fn check_name(name: &str) -> Result<(), ReferenceError> {
    let invalid = || ReferenceError::Name(name.chars().take(300).collect());
    if name.is_empty() || name.len() > 255 {
        return Err(invalid());
    }
    for component in name.split('/') {
        if !component_ok(component.as_bytes()) {
            return Err(invalid());
        }
    }
    Ok(())
}

fn component_ok(component: &[u8]) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let (Some(&first), Some(&last)) = (component.first(), component.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between alphanumeric runs: exactly ".", "_" or "__", or any run of "-".
    let mut i = 0;
    while i < component.len() {
        if alnum(component[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < component.len() && !alnum(component[i]) {
            i += 1;
        }
        let separator = &component[start..i];
        let ok = separator == b"."
            || separator == b"_"
            || separator == b"__"
            || separator.iter().all(|&b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn manifest_references_are_tags_or_digests() {
        let by_tag = ManifestRef::parse("team/app/manifests/v1.2_rc-3").expect("tag");
        assert_eq!(by_tag.name, "team/app");
        assert_eq!(by_tag.reference, ManifestTag::Tag("v1.2_rc-3".into()));
        assert_eq!(by_tag.rest(), "manifests/v1.2_rc-3");
        let by_digest = ManifestRef::parse(&format!("app/manifests/sha256:{HEX}")).expect("digest");
        assert_eq!(by_digest.rest(), format!("manifests/sha256:{HEX}"));
        for bad in [
            "app/manifests/-leading-dash",
            "app/manifests/",
            "app/manifests/a/b",
            "app/manifests/sha256:short",
            "App/manifests/latest",
            "app/blobs/latest",
        ] {
            assert!(ManifestRef::parse(bad).is_err(), "{bad}");
        }
        let long = "t".repeat(129);
        assert!(ManifestRef::parse(&format!("app/manifests/{long}")).is_err());
        assert!(ManifestRef::parse(&format!("app/manifests/{}", &long[1..])).is_ok());
    }

    #[test]
    fn names_with_several_components_and_separators() {
        for good in [
            "alpine",
            "library/alpine",
            "team/app/base",
            "a.b_c__d---e/f0",
            "0",
        ] {
            let path = format!("{good}/blobs/sha256:{HEX}");
            let parsed = BlobRef::parse(&path).unwrap_or_else(|e| panic!("{good}: {e}"));
            assert_eq!(parsed.name, good);
            assert_eq!(parsed.path(), path);
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in [
            "", "Alpine", "/alpine", "alpine/", "a//b", "a/../b", "..", "a___b", "a._b", "-a",
            "a-", "a b", "a%2fb", "a?b",
        ] {
            let path = format!("{bad}/blobs/sha256:{HEX}");
            assert!(
                matches!(BlobRef::parse(&path), Err(ReferenceError::Name(_))),
                "{bad:?} accepted"
            );
        }
        let long = "a".repeat(256);
        assert!(BlobRef::parse(&format!("{long}/blobs/sha256:{HEX}")).is_err());
    }

    #[test]
    fn digests() {
        let digest = Digest::parse(&format!("sha256:{HEX}")).expect("valid");
        assert_eq!(digest.to_string(), format!("sha256:{HEX}"));
        assert_eq!(digest.file_name(), format!("sha256-{HEX}"));
        assert_eq!(
            Digest::parse(&format!("sha512:{HEX}{HEX}")),
            Err(ReferenceError::Algorithm("sha512".into()))
        );
        for bad in [
            "",
            "sha256",
            "sha256:",
            &format!("sha256:{}", &HEX[1..]),
            &format!("sha256:{}", HEX.to_uppercase()),
            &format!("sha256:{HEX}00"),
            &format!("SHA256:{HEX}"),
            &format!("sha256:{}g", &HEX[1..]),
            "sha256:../../etc",
        ] {
            assert!(
                matches!(Digest::parse(bad), Err(ReferenceError::Digest(_))),
                "{bad:?}"
            );
        }
        assert_eq!(BlobRef::parse("alpine/sha256"), Err(ReferenceError::Shape));
    }

    proptest! {
        /// Anything at all is parsed or refused; never a panic, and what is
        /// accepted prints back to itself.
        #[test]
        fn any_path_is_parsed_or_refused(path in ".{0,300}") {
            if let Ok(parsed) = BlobRef::parse(&path) {
                prop_assert_eq!(parsed.path(), path);
            }
        }
    }
}
