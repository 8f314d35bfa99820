//! The SBOM formats a user can ask for (`--sbom`, config key `sbom`). Here rather than in
//! `crate::sbom` because settings are read before anything is planned, and `crate::sbom`
//! describes planned crates.

/// An SBOM format (`--sbom`, config key `sbom`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Spdx,
    Cyclonedx,
}

impl Format {
    /// The artifact type and the document's media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Format::Spdx => "application/spdx+json",
            Format::Cyclonedx => "application/vnd.cyclonedx+json",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Spdx => "SPDX 2.3",
            Format::Cyclonedx => "CycloneDX 1.5",
        }
    }

    /// The format of an artifact type, if it is an SBOM this tool knows.
    pub fn of(artifact_type: &str) -> Option<Format> {
        [Format::Spdx, Format::Cyclonedx]
            .into_iter()
            .find(|f| f.media_type() == artifact_type)
    }
}

/// Parses `spdx`, `cyclonedx`, `spdx,cyclonedx` or `none`.
pub fn parse_formats(text: &str) -> std::result::Result<Vec<Format>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim) {
        match word {
            "spdx" => out.push(Format::Spdx),
            "cyclonedx" => out.push(Format::Cyclonedx),
            "none" if text.trim() == "none" => {}
            _ => {
                return Err(format!(
                    "`{text}` is not a list of SBOM formats: use spdx, cyclonedx, spdx,cyclonedx or none"
                ))
            }
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}
