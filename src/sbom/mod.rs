//! SBOMs: one document per platform image, SPDX 2.3 JSON ([`spdx`]) and/or CycloneDX 1.5
//! JSON ([`cyclonedx`]), attached to the image as OCI 1.1 artifact manifests whose
//! `subject` is the platform manifest ([`referrers`]).
//!
//! A document lists the image, the crates linked into its binary (name, version,
//! `pkg:cargo/` purl, license expression, Cargo.lock checksum, source), the Rust toolchain
//! that built it, and what the base layer holds (the CA bundle with the
//! `webpki-root-certs` version, tzdata with its version), with their relationships. Every
//! identifier and timestamp comes from the inputs (the source date epoch, the manifest
//! digest), so the same inputs give the same documents, byte for byte.
//!
//! Not for: where they go; every sink takes them with the image (`crate::sinks`).

pub mod cyclonedx;
pub mod spdx;

use oci_spec::image::{Digest, MediaType};

use crate::blob::Blob;
use crate::error::Result;
use crate::image::{canonical_json, ImageSet, ImageSpec, Referrer};
use crate::layers::base::{self, CaCerts};
use crate::plan::graph::Crate;
use crate::platform::Platform;

pub use crate::settings::sbom_format::{parse_formats, Format};

/// What is known about the binary of one platform image, for its SBOM.
#[derive(Debug, Clone, Default)]
pub struct Contents {
    /// The crates linked into it, its own package first (from the build's dependency
    /// graph, or from the data recorded in a prebuilt binary); empty if unknown.
    pub crates: Vec<Crate>,
    /// `rustc -vV`'s first line, when the tool built it.
    pub toolchain: Option<String>,
}

/// What one document describes.
pub struct Subject<'a> {
    pub spec: &'a ImageSpec,
    pub platform: &'a Platform,
    /// The platform manifest the document is about.
    pub manifest: &'a Digest,
    pub contents: &'a Contents,
}

impl Subject<'_> {
    /// `rs.microimage` names for what the base layer holds: (name, version, purl).
    fn base_packages(&self) -> Vec<(&'static str, String, Option<String>)> {
        let mut out = Vec::new();
        // On a base image, the CA bundle is the base's unless one was asked for.
        let ours = self.spec.from.is_none() || self.spec.explicit.ca_certs;
        match &self.spec.base.ca_certs {
            _ if !ours => {}
            CaCerts::Bundled => {
                let v = env!("MICROIMAGE_WEBPKI_ROOT_CERTS_VERSION");
                out.push((
                    "webpki-root-certs",
                    v.to_string(),
                    Some(format!("pkg:cargo/webpki-root-certs@{v}")),
                ));
            }
            CaCerts::Host | CaCerts::Path(_) => {
                out.push(("ca-certificates", "NOASSERTION".to_string(), None));
            }
            CaCerts::None => {}
        }
        if self.spec.base.tzdata {
            out.push(("tzdata", base::tzdata_version().to_string(), None));
        }
        out
    }
}

impl Subject<'_> {
    /// The base image this platform image was built on: its name as given, the digest of
    /// the platform manifest used (else of what the name resolved to), and its purl
    /// (`pkg:oci/NAME@DIGEST?repository_url=…` for a registry base).
    fn base_image(&self) -> Option<(String, Option<String>, Option<String>)> {
        let from = self.spec.from.as_ref()?;
        let digest = from
            .for_platform(self.platform)
            .and_then(|p| p.manifest_digest.clone())
            .or_else(|| from.digest.clone());
        let purl = match (&from.remote, &digest) {
            (Some((registry, repository)), Some(digest)) => {
                let last = repository.rsplit('/').next().unwrap_or(repository);
                Some(format!(
                    "pkg:oci/{last}@{}?repository_url={registry}/{repository}",
                    digest.replace(':', "%3A")
                ))
            }
            _ => None,
        };
        Some((from.name.clone(), digest, purl))
    }
}

/// The purl of a crate.
fn purl(c: &Crate) -> String {
    format!("pkg:cargo/{}@{}", c.name, c.version)
}

/// A Cargo.toml `license` as an SPDX expression (the old `MIT/Apache-2.0` form becomes
/// `MIT OR Apache-2.0`), or `None` when it is not one.
fn license_expression(license: Option<&str>) -> Option<String> {
    let text = license?.trim();
    let text = if text.contains('/') && !text.contains(' ') {
        text.replace('/', " OR ")
    } else {
        text.to_string()
    };
    ::spdx::Expression::parse_mode(&text, ::spdx::ParseMode::LAX)
        .ok()
        .map(|e| e.to_string())
}

/// Where a crate comes from, as a download location.
fn download_location(c: &Crate) -> String {
    match c.source.as_str() {
        "crates.io" => format!(
            "https://crates.io/api/v1/crates/{}/{}/download",
            c.name, c.version
        ),
        _ => match c.source_id.as_deref() {
            Some(id) => id
                .trim_start_matches("git+")
                .trim_start_matches("registry+")
                .to_string(),
            None => "NOASSERTION".to_string(),
        },
    }
}

/// The document of `format` for `subject`.
pub fn document(format: Format, subject: &Subject) -> Result<Vec<u8>> {
    match format {
        Format::Spdx => canonical_json(&spdx::document(subject)?),
        Format::Cyclonedx => cyclonedx::document(subject),
    }
}

/// The SBOM referrers of every platform image of `set`, in `formats`, added to the set:
/// for each, the document as a blob and an artifact manifest (empty config, the document
/// as its one layer, `subject` = the platform manifest).
pub fn attach(
    set: &mut ImageSet,
    spec: &ImageSpec,
    contents: &[Contents],
    formats: &[Format],
) -> Result<()> {
    if formats.is_empty() {
        return Ok(());
    }
    let mut referrers = Vec::new();
    for (image, contents) in set.images.iter().zip(contents) {
        let subject = Subject {
            spec,
            platform: image.platform,
            manifest: &image.manifest.digest,
            contents,
        };
        for &format in formats {
            let doc = Blob::new(
                MediaType::Other(format.media_type().into()),
                document(format, &subject)?,
            );
            let manifest = crate::image::artifact_manifest(
                format.media_type(),
                &doc,
                &image.manifest,
                &spec.created()?,
                std::collections::BTreeMap::new(),
            )?;
            referrers.push((
                Referrer {
                    subject: image.manifest.digest.clone(),
                    artifact_type: format.media_type().to_string(),
                    predicate_type: None,
                    manifest,
                },
                doc,
            ));
        }
    }
    set.add_referrers(referrers);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_licenses() {
        assert_eq!(parse_formats("spdx").unwrap(), [Format::Spdx]);
        assert_eq!(
            parse_formats("cyclonedx, spdx").unwrap(),
            [Format::Spdx, Format::Cyclonedx]
        );
        assert!(parse_formats("none").unwrap().is_empty());
        assert!(parse_formats("spdx,none").is_err());
        assert!(parse_formats("swid").is_err());
        assert_eq!(
            license_expression(Some("MIT/Apache-2.0")).as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(
            license_expression(Some("MIT OR Apache-2.0")).as_deref(),
            Some("MIT OR Apache-2.0")
        );
        assert_eq!(license_expression(Some("not a license at all")), None);
        assert_eq!(license_expression(None), None);
    }
}
