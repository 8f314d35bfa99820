//! Image references for registries: parsing a push destination, and telling a registry
//! host from a path.

use oci_client::Reference;

use crate::error::{Error, Result};

/// Parses a push destination, `registry/repository:tag`.
pub fn parse_reference(s: &str) -> Result<Reference> {
    let image = crate::image::ImageName::parse(s)?;
    let last = s.rsplit('/').next().unwrap_or(s);
    if !last.contains(':') || s.contains('@') {
        // A missing tag would silently mean `latest`; a push names its tag.
        return Err(Error::usage(format!("`{s}` names no tag"))
            .with_help(format!("push to `{s}:TAG`, e.g. `{s}:1.0.0`")));
    }
    let has_registry = image
        .repository
        .split_once('/')
        .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost");
    if !has_registry {
        return Err(
            Error::usage(format!("`{s}` names no registry")).with_help(format!(
                "push to a full reference such as `ghcr.io/you/{}` or `127.0.0.1:5000/{}`",
                image, image
            )),
        );
    }
    // Checked above as an image name (the distribution spec's grammar), with an explicit
    // registry and a tag: built from its parts. oci-client's parser compiles a large regex
    // on first use (~10 ms, on the path of every push); Docker Hub names still go through
    // it for its `library/` rule.
    if let Some((registry, repository)) = image.repository.split_once('/') {
        if !registry.ends_with("docker.io") && !registry.starts_with('[') {
            return Ok(Reference::with_tag(
                registry.to_string(),
                repository.to_string(),
                image.tag,
            ));
        }
    }
    s.parse::<Reference>()
        .map_err(|e| Error::usage(format!("`{s}` is not an image reference: {e}")))
}

/// Whether `text` starts with a registry host (`ghcr.io/…`, `127.0.0.1:5000/…`,
/// `localhost/…`): a first component with a `.` or a `:`, or `localhost`.
/// `registry/repository` for a push by digest (`--by-digest`): no tag, no digest; the
/// returned reference carries the tag `latest` as a placeholder that is never sent.
pub fn parse_repository(s: &str) -> Result<Reference> {
    let last = s.rsplit('/').next().unwrap_or(s);
    if last.contains(':') || s.contains('@') {
        let repository = s.split('@').next().unwrap_or(s);
        let repository = match repository.rsplit_once('/') {
            Some((head, tail)) => format!("{head}/{}", tail.split(':').next().unwrap_or(tail)),
            None => repository.to_string(),
        };
        return Err(Error::usage(format!(
            "`{s}` names a tag or digest, but --by-digest pushes the image under its digest alone"
        ))
        .with_help(format!("pass the repository: `{repository}`")));
    }
    parse_reference(&format!("{s}:latest"))
}

pub fn names_registry(text: &str) -> bool {
    text.split_once('/').is_some_and(|(first, _)| {
        first.contains(['.', ':']) && first != "." && first != ".." || first == "localhost"
    })
}

pub fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.example.com:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn references_built_from_parts_equal_parsed_ones() {
        for s in [
            "127.0.0.1:5000/app:1.0",
            "ghcr.io/o/team/app:v1.2_x",
            "localhost/a-b/c.d:latest",
        ] {
            let ours = parse_reference(s).unwrap();
            let theirs: Reference = s.parse().unwrap();
            assert_eq!(
                (ours.registry(), ours.repository(), ours.tag(), ours.whole()),
                (
                    theirs.registry(),
                    theirs.repository(),
                    theirs.tag(),
                    theirs.whole()
                ),
                "{s}"
            );
        }
        let hub = parse_reference("docker.io/app:1").unwrap();
        assert_eq!(hub.repository(), "library/app");
    }

    #[test]
    fn repositories_for_a_push_by_digest() {
        let r = parse_repository("127.0.0.1:5000/team/app").unwrap();
        assert_eq!(
            (r.registry(), r.repository()),
            ("127.0.0.1:5000", "team/app")
        );
        for tagged in ["127.0.0.1:5000/app:1", "127.0.0.1:5000/app@sha256:abc"] {
            let e = parse_repository(tagged).unwrap_err();
            assert!(e.message().contains("--by-digest"), "{e}");
            assert_eq!(e.help(), Some("pass the repository: `127.0.0.1:5000/app`"));
        }
        assert!(parse_repository("app").is_err());
    }

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("127.0.0.1:5000/app:1.0").unwrap().whole(),
            "127.0.0.1:5000/app:1.0"
        );
        assert!(parse_reference("127.0.0.1:5000/app")
            .unwrap_err()
            .message()
            .contains("names no tag"));
        assert!(parse_reference("app:1.0")
            .unwrap_err()
            .message()
            .contains("names no registry"));
        assert!(parse_reference("ghcr.io/Acme/app:1").is_err());
        assert!(names_registry("ghcr.io/a/b") && names_registry("localhost/x"));
        assert!(!names_registry("./x/y") && !names_registry("target/microimage"));
    }
}
