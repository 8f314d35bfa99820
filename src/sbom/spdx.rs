//! SPDX 2.3 JSON. Written with `serde_json` values, not a crate: the SPDX crates for Rust
//! read documents (or target SPDX 3); writing the 2.3 JSON fields this document uses is a
//! few dozen lines, checked in the tests with `pyspdxtools`, SPDX's own validator. License
//! expressions go through the `spdx` crate.

use serde_json::{json, Value};

use super::{download_location, license_expression, purl, Subject};
use crate::error::Result;

/// `SPDXRef-…` ids allow letters, digits, `.` and `-`.
fn id(kind: &str, name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("SPDXRef-{kind}-{clean}")
}

/// The document for `s`.
pub fn document(s: &Subject) -> Result<Value> {
    let spec = s.spec;
    let hex = s.manifest.digest();
    let platform = s.platform.short_name();
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "SPDXID": image_id,
        "name": spec.name.repository,
        "versionInfo": spec.name.tag,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "comment": format!("the {platform} image; manifest {}", s.manifest),
        "checksums": [{"algorithm": "SHA256", "checksumValue": hex}],
        "externalRefs": [{
            "referenceCategory": "PACKAGE-MANAGER",
            "referenceType": "purl",
            "referenceLocator": format!(
                "pkg:oci/{}@sha256%3A{hex}?arch={}",
                spec.name.repository.rsplit('/').next().unwrap_or(&spec.name.repository),
                s.platform.architecture
            ),
        }],
    })];
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": image_id,
    })];
    let crate_ids: Vec<String> = s
        .contents
        .crates
        .iter()
        .enumerate()
        .map(|(i, c)| id("Crate", &format!("{}-{}-{i}", c.name, c.version)))
        .collect();
    for (i, c) in s.contents.crates.iter().enumerate() {
        let mut p = json!({
            "SPDXID": crate_ids[i],
            "name": c.name,
            "versionInfo": c.version,
            "downloadLocation": download_location(c),
            "filesAnalyzed": false,
            "primaryPackagePurpose": if i == 0 { "APPLICATION" } else { "LIBRARY" },
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": license_expression(c.license.as_deref()).unwrap_or_else(|| "NOASSERTION".into()),
            "copyrightText": "NOASSERTION",
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl(c),
            }],
        });
        if let Some(sum) = &c.checksum {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": sum}]);
        }
        if let Some(source) = &c.source_id {
            p["sourceInfo"] = json!(format!("cargo source {source}"));
        }
        packages.push(p);
        if i == 0 {
            // The binary's own package is what the image contains; the rest it depends on.
            relationships.push(json!({
                "spdxElementId": image_id,
                "relationshipType": "CONTAINS",
                "relatedSpdxElement": crate_ids[0],
            }));
        }
        for &d in &c.dependencies {
            if let Some(dep) = crate_ids.get(d) {
                relationships.push(json!({
                    "spdxElementId": crate_ids[i],
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": dep,
                }));
            }
        }
    }
    if let Some(toolchain) = &s.contents.toolchain {
        let version = toolchain.trim_start_matches("rustc ").to_string();
        packages.push(json!({
            "SPDXID": "SPDXRef-Toolchain-rustc",
            "name": "rustc",
            "versionInfo": version,
            "downloadLocation": "https://static.rust-lang.org",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "APPLICATION",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        }));
        if let Some(root) = crate_ids.first() {
            relationships.push(json!({
                "spdxElementId": "SPDXRef-Toolchain-rustc",
                "relationshipType": "BUILD_TOOL_OF",
                "relatedSpdxElement": root,
            }));
        }
    }
    if let Some((name, digest, purl)) = s.base_image() {
        let mut p = json!({
            "SPDXID": "SPDXRef-BaseImage",
            "name": name,
            "versionInfo": digest.clone().unwrap_or_else(|| "NOASSERTION".to_string()),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "CONTAINER",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        if let Some(digest) = digest.as_deref().and_then(|d| d.strip_prefix("sha256:")) {
            p["checksums"] = json!([{"algorithm": "SHA256", "checksumValue": digest}]);
        }
        if let Some(purl) = purl {
            p["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }]);
        }
        packages.push(p);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "DESCENDANT_OF",
            "relatedSpdxElement": "SPDXRef-BaseImage",
        }));
    }
    for (name, version, purl) in s.base_packages() {
        let pid = id("Base", name);
        let mut p = json!({
            "SPDXID": pid,
            "name": name,
            "versionInfo": version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "primaryPackagePurpose": "FILE",
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        });
        if let Some(purl) = purl {
            p["externalRefs"] = json!([{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": purl,
            }]);
        }
        packages.push(p);
        relationships.push(json!({
            "spdxElementId": image_id,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": pid,
        }));
    }
    Ok(json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{} {platform}", spec.name),
        "documentNamespace": format!(
            "https://spdx.org/spdxdocs/cargo-microimage/{}/{hex}",
            spec.name.repository.replace(['/', ':'], "-")
        ),
        "creationInfo": {
            "created": spec.created()?,
            "creators": [format!("Tool: cargo-microimage-{}", env!("CARGO_PKG_VERSION"))],
        },
        "packages": packages,
        "relationships": relationships,
    }))
}
