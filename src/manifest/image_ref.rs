//! Image references in Docker's grammar, completed as Docker completes them:
//! `busybox` is `docker.io/library/busybox:latest`.
//!
//! Written out rather than taken from oci-spec because its `Reference` compiles a
//! Unicode regex that costs about 140 ms in every process that parses one.

use std::fmt;
use std::str::FromStr;

pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";
const MAX_NAME_LEN: usize = 255;
const MAX_TAG_LEN: usize = 128;

/// A reference that does not follow Docker's grammar; it displays what is wrong
/// (callers name the reference where they report it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct InvalidImageRef {
    /// The text as written.
    pub reference: String,
    /// What is wrong with it.
    pub reason: ImageRefProblem,
}

/// What is wrong with an image reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageRefProblem {
    #[error("the repository name is empty")]
    EmptyName,
    #[error("the name is longer than {MAX_NAME_LEN} characters")]
    NameTooLong,
    #[error("invalid registry \"{0}\" (expected host[:port])")]
    Registry(String),
    #[error("invalid repository name component \"{component}\"{}", lowercase_hint(.uppercase))]
    PathComponent { component: String, uppercase: bool },
    #[error("invalid tag \"{0}\" (up to {MAX_TAG_LEN} letters, digits, '_', '.' and '-', not starting with '.' or '-')")]
    Tag(String),
    #[error("invalid digest \"{0}\" (expected sha256:<64 hex digits>)")]
    DigestAlgorithm(String),
    #[error(
        "invalid digest \"{digest}\" (expected {len} lowercase hex digits after the algorithm)"
    )]
    DigestHex { digest: String, len: usize },
}

fn lowercase_hint(uppercase: &bool) -> &'static str {
    if *uppercase {
        " (repository names are lowercase)"
    } else {
        ""
    }
}

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// `host[:port]`, e.g. `docker.io` or `127.0.0.1:5000`.
    pub registry: String,
    /// Path inside the registry, e.g. `library/busybox`.
    pub repository: String,
    /// Absent only when a digest pins the image without a tag.
    pub tag: Option<String>,
    /// `algorithm:hex`, e.g. `sha256:...`.
    pub digest: Option<String>,
}

impl FromStr for ImageRef {
    type Err = InvalidImageRef;

    fn from_str(text: &str) -> Result<Self, InvalidImageRef> {
        parse(text).map_err(|reason| InvalidImageRef {
            reference: text.to_owned(),
            reason,
        })
    }
}

fn parse(text: &str) -> Result<ImageRef, ImageRefProblem> {
    let (name_and_tag, digest) = match text.split_once('@') {
        Some((rest, digest)) => (rest, Some(parse_digest(digest)?)),
        None => (text, None),
    };
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_and_tag[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            let tag = &name_and_tag[colon + 1..];
            check_tag(tag)?;
            (&name_and_tag[..colon], Some(tag.to_owned()))
        }
        None => (name_and_tag, None),
    };
    if name.is_empty() {
        return Err(ImageRefProblem::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ImageRefProblem::NameTooLong);
    }
    let (registry, path) = match name.split_once('/') {
        Some((first, rest)) if is_registry(first) => {
            check_registry(first)?;
            (first.to_owned(), rest.to_owned())
        }
        _ => (DEFAULT_REGISTRY.to_owned(), name.to_owned()),
    };
    for component in path.split('/') {
        check_path_component(component)?;
    }
    let repository = if registry == DEFAULT_REGISTRY && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let tag = match (&tag, &digest) {
        (None, None) => Some(DEFAULT_TAG.to_owned()),
        _ => tag,
    };
    Ok(ImageRef {
        registry,
        repository,
        tag,
        digest,
    })
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

/// Docker's rule: the first component names a registry when it has a `.` or a `:`,
/// or is `localhost`.
fn is_registry(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost"
}

fn check_registry(registry: &str) -> Result<(), ImageRefProblem> {
    let invalid = || Err(ImageRefProblem::Registry(registry.to_owned()));
    // An IPv6 address is bracketed: [::1]:5000.
    let (host_ok, port) = match registry.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((address, rest)) => (
                !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
                rest.strip_prefix(':'),
            ),
            None => return invalid(),
        },
        None => {
            let (host, port) = match registry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (registry, None),
            };
            let labels_ok = host.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            (labels_ok, port)
        }
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if host_ok && port_ok {
        Ok(())
    } else {
        invalid()
    }
}

/// `[a-z0-9]+` runs joined by `.`, `_`, `__` or any number of `-`.
fn check_path_component(component: &str) -> Result<(), ImageRefProblem> {
    let invalid = || {
        Err(ImageRefProblem::PathComponent {
            component: component.to_owned(),
            uppercase: component.chars().any(|c| c.is_ascii_uppercase()),
        })
    };
    let bytes = component.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(&bytes[0]) || !alnum(&bytes[bytes.len() - 1]) {
        return invalid();
    }
    let mut rest = component;
    while let Some(separator_start) =
        rest.find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
    {
        let after = &rest[separator_start..];
        let separator_len = after
            .find(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            .unwrap_or(after.len());
        let separator = &after[..separator_len];
        let valid = matches!(separator, "." | "_" | "__") || separator.bytes().all(|b| b == b'-');
        if !valid {
            return invalid();
        }
        rest = &after[separator_len..];
    }
    Ok(())
}

fn check_tag(tag: &str) -> Result<(), ImageRefProblem> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let valid = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(ImageRefProblem::Tag(tag.to_owned()))
    }
}

fn parse_digest(digest: &str) -> Result<String, ImageRefProblem> {
    let expected_len = match digest.split_once(':') {
        Some(("sha256", hex)) => (64, hex),
        Some(("sha512", hex)) => (128, hex),
        _ => return Err(ImageRefProblem::DigestAlgorithm(digest.to_owned())),
    };
    let (len, hex) = expected_len;
    if hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(digest.to_owned())
    } else {
        Err(ImageRefProblem::DigestHex {
            digest: digest.to_owned(),
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Result<String, String> {
        text.parse::<ImageRef>()
            .map(|r| r.to_string())
            .map_err(|err| err.to_string())
    }

    #[test]
    fn short_names_are_completed_as_docker_does() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (written, completed) in [
            ("busybox", "docker.io/library/busybox:latest".to_owned()),
            ("busybox:1.36", "docker.io/library/busybox:1.36".to_owned()),
            (
                "library/busybox",
                "docker.io/library/busybox:latest".to_owned(),
            ),
            ("bitnami/redis:7", "docker.io/bitnami/redis:7".to_owned()),
            ("ghcr.io/owner/app:v1", "ghcr.io/owner/app:v1".to_owned()),
            (
                "127.0.0.1:5000/web:1.4",
                "127.0.0.1:5000/web:1.4".to_owned(),
            ),
            ("localhost/web", "localhost/web:latest".to_owned()),
            (
                "localhost:5000/a/b/c",
                "localhost:5000/a/b/c:latest".to_owned(),
            ),
            (
                "my-registry.local/team__x/a.b_c--d",
                "my-registry.local/team__x/a.b_c--d:latest".to_owned(),
            ),
            (
                &format!("busybox@{digest}"),
                format!("docker.io/library/busybox@{digest}"),
            ),
            (
                &format!("web:1@{digest}"),
                format!("docker.io/library/web:1@{digest}"),
            ),
        ] {
            assert_eq!(full(written), Ok(completed), "{written}");
        }
    }

    #[test]
    fn malformed_references_say_what_is_wrong() {
        assert!(full("Web").unwrap_err().contains("lowercase"));
        assert!(full("web@sha256:abc").unwrap_err().contains("64"));
        assert!(full("web@md5:abc").unwrap_err().contains("invalid digest"));
        assert!(full("web:-x").unwrap_err().contains("invalid tag"));
        for bad in [
            "",
            ":1",
            "web:",
            "/web",
            "web/",
            "a//b",
            "a..b",
            "a.-b",
            "-a",
            "host:port/x",
            "a b",
        ] {
            assert!(full(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
