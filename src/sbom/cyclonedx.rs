//! CycloneDX 1.5 JSON, with the `cyclonedx-bom` crate (CycloneDX's own Rust library).

use cyclonedx_bom::external_models::date_time::DateTime;
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::spdx::SpdxExpression;
use cyclonedx_bom::external_models::uri::Purl;
use cyclonedx_bom::models::bom::{Bom, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components};
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::license::{LicenseChoice, Licenses};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::tool::{Tool, Tools};
use std::str::FromStr;

use super::{license_expression, purl, Subject};
use crate::error::{Error, Result};

fn failed(what: impl std::fmt::Display) -> Error {
    Error::output(format!("writing the CycloneDX SBOM failed: {what}"))
}

/// A serial number from the manifest digest: a version-4-shaped UUID, the same every time.
fn serial(hex: &str) -> String {
    let h = crate::blob::sha256(format!("cyclonedx/{hex}").as_bytes());
    let d = crate::blob::hex(&h);
    format!(
        "urn:uuid:{}-{}-4{}-8{}-{}",
        &d[0..8],
        &d[8..12],
        &d[13..16],
        &d[17..20],
        &d[20..32]
    )
}

/// The document for `s`, as JSON bytes.
pub fn document(s: &Subject) -> Result<Vec<u8>> {
    let spec = s.spec;
    let hex = s.manifest.digest();
    let image_ref = format!("image:{}@{}", spec.name, s.manifest);
    let mut image = Component::new(
        Classification::Container,
        &spec.name.repository,
        &spec.name.tag,
        Some(image_ref.clone()),
    );
    image.description = Some(NormalizedString::new(&format!(
        "the {} image; manifest {}",
        s.platform.short_name(),
        s.manifest
    )));
    image.hashes = Some(Hashes(vec![Hash {
        alg: HashAlgorithm::SHA_256,
        content: HashValue(hex.to_string()),
    }]));

    let refs: Vec<String> = s
        .contents
        .crates
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}#{}@{}", purl(c), i, c.source))
        .collect();
    let mut components = Vec::new();
    let mut dependencies = Vec::new();
    for (i, c) in s.contents.crates.iter().enumerate() {
        let kind = if i == 0 {
            Classification::Application
        } else {
            Classification::Library
        };
        let mut component = Component::new(kind, &c.name, &c.version, Some(refs[i].clone()));
        component.purl = Some(Purl::new("cargo", &c.name, &c.version).map_err(failed)?);
        if let Some(expr) = license_expression(c.license.as_deref()) {
            let expr = SpdxExpression::try_from(expr).map_err(failed)?;
            component.licenses = Some(Licenses(vec![LicenseChoice::Expression(expr)]));
        }
        if let Some(sum) = &c.checksum {
            component.hashes = Some(Hashes(vec![Hash {
                alg: HashAlgorithm::SHA_256,
                content: HashValue(sum.clone()),
            }]));
        }
        components.push(component);
        dependencies.push(Dependency {
            dependency_ref: refs[i].clone(),
            dependencies: c
                .dependencies
                .iter()
                .filter_map(|&d| refs.get(d).cloned())
                .collect(),
        });
    }
    let mut contained: Vec<String> = refs.first().cloned().into_iter().collect();
    for (name, version, purl_text) in s.base_packages() {
        let reference = format!("base:{name}@{version}");
        let mut component = Component::new(
            Classification::Data,
            name,
            &version,
            Some(reference.clone()),
        );
        if let Some(p) = purl_text {
            let (_, rest) = p.split_once('/').unwrap_or(("", &p));
            let (n, v) = rest.split_once('@').unwrap_or((rest, ""));
            component.purl = Some(Purl::new("cargo", n, v).map_err(failed)?);
        }
        components.push(component);
        contained.push(reference);
    }
    if let Some((name, digest, purl_text)) = s.base_image() {
        let version = digest.clone().unwrap_or_default();
        let reference = format!("base-image:{name}@{version}");
        let mut component = Component::new(
            Classification::Container,
            &name,
            &version,
            Some(reference.clone()),
        );
        component.description = Some(NormalizedString::new(
            "the base image the app was put on (--base)",
        ));
        if let Some(hex) = digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
            component.hashes = Some(Hashes(vec![Hash {
                alg: HashAlgorithm::SHA_256,
                content: HashValue(hex.to_string()),
            }]));
        }
        if let Some(p) = purl_text {
            component.purl =
                Some(Purl::from_str(&p).map_err(|()| failed(format!("`{p}` is not a purl")))?);
        }
        components.push(component);
        contained.push(reference);
    }
    if let Some(toolchain) = &s.contents.toolchain {
        let version = toolchain.trim_start_matches("rustc ").to_string();
        let mut rustc = Component::new(
            Classification::Application,
            "rustc",
            &version,
            Some("toolchain:rustc".to_string()),
        );
        rustc.description = Some(NormalizedString::new(
            "the Rust compiler that built the binary",
        ));
        components.push(rustc);
    }
    dependencies.push(Dependency {
        dependency_ref: image_ref,
        dependencies: contained,
    });

    let metadata = Metadata {
        timestamp: Some(DateTime::try_from(spec.created()?).map_err(failed)?),
        tools: Some(Tools::List(vec![Tool {
            vendor: None,
            name: Some(NormalizedString::new("cargo-microimage")),
            version: Some(NormalizedString::new(env!("CARGO_PKG_VERSION"))),
            hashes: None,
            external_references: None,
        }])),
        component: Some(image),
        ..Metadata::default()
    };
    let bom = Bom {
        serial_number: Some(UrnUuid::new(serial(hex)).map_err(|e| failed(format!("{e:?}")))?),
        metadata: Some(metadata),
        components: Some(Components(components)),
        dependencies: Some(Dependencies(dependencies)),
        ..Bom::default()
    };
    let mut out = Vec::new();
    bom.output_as_json_v1_5(&mut out).map_err(failed)?;
    // Canonical like every other JSON the tool writes (sorted keys, compact).
    let value: serde_json::Value = serde_json::from_slice(&out).map_err(failed)?;
    crate::image::canonical_json(&value)
}
