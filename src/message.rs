//! The records of `--message-format json`, in one place: one type per `reason` (the model
//! is cargo's `machine_message.rs`), all variants of [`Record`], so the schema is these
//! types and a consumer written in Rust can read them back with serde. Every run ends with
//! one [`RunFinished`] saying whether the whole run succeeded and, if not, what failed
//! ([`ErrorRecord`]: its kind, never only the text).
//!
//! Paths are strings: as they are when they are UTF-8; otherwise the bytes that are not
//! are written as `\xNN` ([`path_text`]), so nothing is lost or replaced.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Kind};
use crate::image::ImageSet;
use crate::ops::Outcome;
pub use crate::shell::path_text;

/// One line of JSON output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Record {
    /// An image written to disk (`build`, `pack`).
    ImageWritten(ImageWritten),
    /// An image pushed to a registry (`push`, `pack --push`).
    ImagePushed(ImagePushed),
    /// `inspect`'s report.
    ImageInspected(crate::inspect::Report),
    /// `verify`'s verdict on one binary.
    BinaryVerified(BinaryVerified),
    /// The last record of every run.
    RunFinished(RunFinished),
}

impl Record {
    /// The record as one line of JSON (without the newline).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).expect("records are plain data and always serialise")
    }

    /// The record for a finished image: pushed, or written.
    pub fn of_outcome(outcome: &Outcome) -> Record {
        let set = &outcome.set;
        let platforms = platforms(set);
        if let Some(pushed) = &outcome.pushed {
            return Record::ImagePushed(ImagePushed {
                reference: pushed.reference.clone(),
                tags: pushed.tags.clone(),
                index_digest: set.index.digest.to_string(),
                pinned: pushed.pinned.clone(),
                pinned_kind: pushed.pinned_kind,
                blobs: BlobCounts {
                    uploaded: pushed.uploaded,
                    mounted: pushed.mounted,
                    present: pushed.present,
                },
                platforms,
                signatures: pushed
                    .signatures
                    .iter()
                    .map(|s| SignatureRecord {
                        digest: s.digest.clone(),
                        reference: s.reference.clone(),
                        added: s.added,
                    })
                    .collect(),
            });
        }
        let destination = outcome.destination.as_ref();
        Record::ImageWritten(ImageWritten {
            name: set.name.to_string(),
            tag: set.name.tag.clone(),
            reference: destination.map(|d| d.reference(set)),
            path: destination.map(|d| path_text(&d.path)),
            format: destination.map(|d| d.format.transport().to_string()),
            index_digest: set.index.digest.to_string(),
            platforms,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageWritten {
    pub name: String,
    pub tag: String,
    /// `oci:/abs/dir:tag`, `oci-archive:/abs/x.tar:tag`, `docker-archive:/abs/x.tar`.
    pub reference: Option<String>,
    pub path: Option<String>,
    /// `oci`, `oci-archive` or `docker-archive`.
    pub format: Option<String>,
    pub index_digest: String,
    pub platforms: Vec<PlatformRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagePushed {
    /// `registry/repository:tag` as pushed (`registry/repository` with `--by-digest`).
    pub reference: String,
    /// Extra tags pushed after it.
    pub tags: Vec<String>,
    pub index_digest: String,
    /// `reference@digest`: of the index, or with `--by-digest` and one platform, of its
    /// manifest.
    pub pinned: String,
    /// What `pinned` names: `index` or `manifest`.
    pub pinned_kind: crate::sinks::registry::PinnedKind,
    pub blobs: BlobCounts,
    pub platforms: Vec<PlatformRecord>,
    /// With `--sign-key`: the index and each platform manifest, signed.
    pub signatures: Vec<SignatureRecord>,
}

/// A cosign signature of one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureRecord {
    /// The manifest (or index) signed.
    pub digest: String,
    /// Where the signature is: `registry/repository:sha256-<hex>.sig`.
    pub reference: String,
    /// False when that key's signature was there already (nothing was added).
    pub added: bool,
}

/// An artifact attached to a platform image (an SBOM, provenance), as an OCI 1.1 referrer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedRecord {
    /// `application/spdx+json`, `application/vnd.cyclonedx+json`.
    pub artifact_type: String,
    /// The artifact manifest's digest.
    pub manifest_digest: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobCounts {
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
}

/// One platform of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformRecord {
    /// `linux/amd64`, `linux/arm64/v8`.
    pub platform: String,
    pub manifest_digest: String,
    pub config_digest: String,
    /// Config and layers as stored: what a pull downloads.
    pub compressed_size: u64,
    /// The layers' tars; null for a platform taken whole from another image (`merge`).
    pub uncompressed_size: Option<u64>,
    /// The binary that was packed; null for a platform taken whole (`merge`).
    pub binary: Option<String>,
    pub binary_size: Option<u64>,
    /// The SBOMs attached to this platform's manifest.
    pub sboms: Vec<AttachedRecord>,
    /// Its provenance (a SLSA v1 statement, or with `--sign-key` a Sigstore bundle holding
    /// it signed), when attached.
    pub provenance: Option<AttachedRecord>,
}

fn platforms(set: &ImageSet) -> Vec<PlatformRecord> {
    set.images
        .iter()
        .map(|i| PlatformRecord {
            platform: i.platform.oci_name(),
            manifest_digest: i.manifest.digest.to_string(),
            config_digest: i.config.digest.to_string(),
            compressed_size: i.compressed_size(),
            uncompressed_size: i.uncompressed_size(),
            binary: i.packed.as_ref().map(|p| path_text(&p.binary)),
            binary_size: i.packed.as_ref().map(|p| p.binary_size),
            sboms: set
                .referrers
                .iter()
                .filter(|r| r.subject == i.manifest.digest)
                .filter(|r| r.predicate_type.is_none())
                .map(|r| AttachedRecord {
                    artifact_type: r.artifact_type.clone(),
                    manifest_digest: r.manifest.digest.to_string(),
                })
                .collect(),
            provenance: set
                .referrers
                .iter()
                .filter(|r| r.subject == i.manifest.digest)
                .find(|r| r.predicate_type.as_deref() == Some(crate::provenance::PREDICATE_TYPE))
                .map(|r| AttachedRecord {
                    artifact_type: r.artifact_type.clone(),
                    manifest_digest: r.manifest.digest.to_string(),
                }),
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryVerified {
    pub path: String,
    /// No `PT_INTERP`, no `DT_NEEDED`.
    #[serde(rename = "static")]
    pub is_static: bool,
    /// `linux/amd64` when the machine is a supported platform.
    pub platform: Option<String>,
    pub machine: String,
    pub interpreter: Option<String>,
    pub needed: Vec<String>,
    pub size: u64,
    /// The crates its dependency data (cargo-auditable's `.dep-v0`) records, if it has any.
    pub crates: Option<usize>,
    /// Its `malloc`: `mimalloc`, `jemalloc`, `musl`, `glibc` or `unknown` (when it is ELF).
    pub allocator: Option<crate::verify::Allocator>,
    /// Whether cargo-microimage's PID 1 signal hook is linked in (when it is ELF).
    pub pid1_signals: Option<bool>,
    /// Whether its mimalloc was linked in by cargo-microimage rather than being the
    /// program's own `#[global_allocator]` (when it is ELF).
    pub allocator_linked: Option<bool>,
    /// The default stack of threads C code starts without a size, in bytes (musl binaries).
    pub thread_stack: Option<u64>,
    /// Whether it can go into an image.
    pub ok: bool,
    /// Why not, when it cannot.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunFinished {
    pub success: bool,
    /// What failed, when something did.
    pub error: Option<ErrorRecord>,
}

/// An error as JSON: its kind (`usage`, `config`, `build`, `verify`, `output`, `registry`,
/// `input`), for `config` the file and key, and the text a person reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub kind: String,
    pub file: Option<String>,
    pub key: Option<String>,
    pub message: String,
    pub help: Option<String>,
    /// The process exit status this error gives.
    pub exit_code: i32,
}

impl RunFinished {
    pub fn success() -> RunFinished {
        RunFinished {
            success: true,
            error: None,
        }
    }

    pub fn failure(error: &Error) -> RunFinished {
        let (file, key) = match error.kind() {
            Kind::Config { file, key } => (Some(path_text(file)), Some(key.clone())),
            _ => (None, None),
        };
        let kind = serde_json::to_value(error.kind())
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(String::from))
            .unwrap_or_default();
        RunFinished {
            success: false,
            error: Some(ErrorRecord {
                kind,
                file,
                key,
                message: error.message().to_string(),
                help: error.help().map(String::from),
                exit_code: error.exit_code(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn records_carry_their_reason_and_read_back() {
        let finished = Record::RunFinished(RunFinished::failure(&Error::config(
            Path::new("/ws/Cargo.toml"),
            "user",
            "bad",
        )));
        let line = finished.to_line();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["reason"], "run-finished");
        assert_eq!(value["error"]["kind"], "config");
        assert_eq!(value["error"]["file"], "/ws/Cargo.toml");
        assert_eq!(value["error"]["exit_code"], 1);
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), finished);
    }

    #[test]
    fn paths_that_are_not_utf8_are_escaped_not_replaced() {
        use std::os::unix::ffi::OsStrExt;
        let p = Path::new(std::ffi::OsStr::from_bytes(b"/tmp/a\xffb/\xc3\xa9"));
        assert_eq!(path_text(p), "/tmp/a\\xffb/\u{e9}");
        assert_eq!(path_text(Path::new("/plain")), "/plain");
    }
}
