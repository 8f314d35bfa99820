//! Reading images made elsewhere — the mirror of `crate::sinks`: one reader per kind of
//! source, all giving the same [`Read`]: the images found (an index and its platform
//! manifests, or one manifest), their configs parsed, and every blob as a [`Blob`] whose
//! bytes were checked against its digest and size (in memory when small, else a file:
//! a layout's own, or an archive entry spilled to disk), or known only by its descriptor
//! for a registry image whose layers are not needed ([`Layers::Describe`]).
//!
//! - [`oci`]: an OCI layout directory or an OCI archive (`index.json`, tags, the
//!   referrers listed beside the images);
//! - [`docker`]: a docker-archive (`manifest.json`), file or directory;
//! - [`registry`]: a registry reference, by tag or digest.
//!
//! `inspect`, `merge` and `--base` read through here and nowhere else.

pub mod base;
pub mod docker;
mod files;
pub mod oci;
pub mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, MediaType};

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::platform::Platform;
use crate::registry::ConnectOptions;
use crate::shell::Shell;

pub(crate) use files::Files;

/// Docker schema 2 media types, which registries and docker-archives still carry.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The annotations of a layout's `index.json` entries: the tag, and the full name.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// What a command is asked to read: a path (bare, or with the transport prefix the tool
/// prints: `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `docker-archive:FILE[:NAME]`), or a
/// registry reference (`registry/repository:tag`, also as `docker://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Local {
        path: PathBuf,
        /// The tag (OCI) or name (docker-archive) of one image among several.
        tag: Option<String>,
    },
    Remote(String),
}

impl Source {
    pub fn parse(arg: &std::ffi::OsStr) -> Result<Source> {
        let path = Path::new(arg);
        let Some(text) = arg.to_str().filter(|_| !path.exists()) else {
            return Ok(Source::Local {
                path: path.to_path_buf(),
                tag: None,
            });
        };
        if let Some(reference) = text.strip_prefix("docker://") {
            return Ok(Source::Remote(reference.to_string()));
        }
        let prefixed = ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .find_map(|p| text.strip_prefix(p));
        if let Some(rest) = prefixed {
            // The path may itself hold a `:`; the tag is what follows the last one.
            if Path::new(rest).exists() {
                return Ok(Source::Local {
                    path: rest.into(),
                    tag: None,
                });
            }
            if let Some((p, tag)) = rest.rsplit_once(':') {
                if Path::new(p).exists() && !tag.is_empty() {
                    return Ok(Source::Local {
                        path: p.into(),
                        tag: Some(tag.to_string()),
                    });
                }
            }
            let shown = rest.rsplit_once(':').map_or(rest, |(p, _)| p);
            return Err(Error::input(format!("`{shown}` does not exist")).with_help(
                "pass an OCI layout directory or an image archive, as `cargo microimage build` printed it",
            ));
        }
        // `DIR:TAG` / `FILE:TAG`: an existing path and a tag (no `/` in a tag).
        if let Some((p, tag)) = text.rsplit_once(':') {
            if !tag.is_empty() && !tag.contains('/') && !p.is_empty() && Path::new(p).exists() {
                return Ok(Source::Local {
                    path: p.into(),
                    tag: Some(tag.to_string()),
                });
            }
        }
        // A registry reference names its host first (`ghcr.io/…`, `127.0.0.1:5000/…`);
        // anything else that does not exist is a mistyped path, not Docker Hub.
        Ok(if crate::registry::reference::names_registry(text) {
            Source::Remote(text.to_string())
        } else {
            Source::Local {
                path: path.to_path_buf(),
                tag: None,
            }
        })
    }

    /// The source as the user named it, for messages.
    pub fn label(&self) -> String {
        match self {
            Source::Local { path, tag: Some(t) } => format!("{}:{t}", path.display()),
            Source::Local { path, tag: None } => path.display().to_string(),
            Source::Remote(r) => r.clone(),
        }
    }
}

/// The kind of source, as `inspect` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Oci,
    OciArchive,
    DockerArchive,
    Registry,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Oci => "oci",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
            Format::Registry => "registry",
        }
    }
}

/// What becomes of a registry image's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layers {
    /// Known by their descriptors only (`Data::Remote`): to describe them, or to mount
    /// them from their repository.
    Describe,
    /// Downloaded (to a spill file past a few MiB), checked against size and digest.
    Download,
}

/// How to read a source.
#[derive(Clone, Copy)]
pub struct Options<'a> {
    pub connect: &'a ConnectOptions,
    pub shell: &'a Shell,
    pub layers: Layers,
    /// Registries: also list each manifest's referrers and look up cosign signatures
    /// (what `inspect` shows).
    pub attachments: bool,
}

/// A source, read.
pub struct Read {
    /// The source as the user named it, for messages.
    pub label: String,
    /// Where it is: the absolute path, or the reference.
    pub location: String,
    pub format: Format,
    /// Its images: the `index.json` entries (or docker-archive entries) of the tag asked
    /// for, all of them without one; a registry reference's one.
    pub images: Vec<Image>,
    /// Every tag the source has (for "no image tagged" messages).
    pub all_tags: Vec<String>,
    /// Artifacts about its platform manifests (SBOMs): a layout's untagged entries with a
    /// `subject`, a registry's referrers.
    pub attached: Vec<Attached>,
    /// Cosign signatures (registries, with [`Options::attachments`]).
    pub signatures: Vec<Signature>,
    /// A registry source's registry and repository.
    pub remote: Option<(String, String)>,
    /// A local source's files, for reading the attached artifacts' blobs.
    files: Option<Files>,
}

impl Read {
    /// A blob of a local source by its descriptor, checked (the attached artifacts').
    pub fn blob(&self, d: &Descriptor) -> Result<Blob> {
        match &self.files {
            Some(files) => files.blob(&self.label, d),
            None => Err(Error::input(format!(
                "`{}`: blob {} is not read from a registry here",
                self.label,
                d.digest()
            ))),
        }
    }

    /// The one image, for commands that take one (merge, `--base`); an error naming the
    /// tags otherwise.
    pub fn one_image(self) -> Result<(Image, ReadRest)> {
        let Read {
            label,
            location,
            format,
            mut images,
            all_tags,
            attached,
            signatures,
            remote,
            files,
        } = self;
        let tags = || {
            if all_tags.is_empty() {
                "its images have no tags".to_string()
            } else {
                format!("its tags: {}", all_tags.join(", "))
            }
        };
        match images.len() {
            1 => Ok((
                images.remove(0),
                ReadRest {
                    label,
                    location,
                    format,
                    attached,
                    signatures,
                    remote,
                    files,
                },
            )),
            0 => Err(Error::input(format!("`{label}` holds no image"))),
            n => Err(Error::usage(format!(
                "`{label}` holds {n} images; name one as {location}:TAG"
            ))
            .with_help(tags())),
        }
    }
}

/// What is left of a [`Read`] once its one image is taken.
pub struct ReadRest {
    pub label: String,
    pub location: String,
    pub format: Format,
    pub attached: Vec<Attached>,
    pub signatures: Vec<Signature>,
    pub remote: Option<(String, String)>,
    files: Option<Files>,
}

impl ReadRest {
    /// See [`Read::blob`].
    pub fn blob(&self, d: &Descriptor) -> Result<Blob> {
        match &self.files {
            Some(files) => files.blob(&self.label, d),
            None => Err(Error::input(format!(
                "`{}`: blob {} is not read from a registry here",
                self.label,
                d.digest()
            ))),
        }
    }
}

/// One image: an index and its platform manifests, or one manifest.
pub struct Image {
    /// Its tags (`org.opencontainers.image.ref.name`, a docker-archive's, the reference's).
    pub tags: Vec<String>,
    /// Its full names (`io.containerd.image.name`, a docker-archive's `RepoTags`, a
    /// reference by tag).
    pub names: Vec<String>,
    /// The index, when the image is one.
    pub index: Option<Blob>,
    /// The index's annotations (the manifest's, when it is one manifest).
    pub annotations: BTreeMap<String, String>,
    pub manifests: Vec<Manifest>,
}

/// One platform image.
pub struct Manifest {
    /// The platform its index entry gives, if any.
    pub entry_platform: Option<oci_spec::image::Platform>,
    /// The manifest, with its media type (a docker-archive has none).
    pub manifest: Option<Blob>,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    pub config: Blob,
    pub config_json: ImageConfiguration,
    /// The layers, in order, with the media types the manifest gives them.
    pub layers: Vec<Blob>,
}

impl Manifest {
    /// `os/arch[/variant]`: from the index entry, else the config.
    pub fn platform_name(&self) -> String {
        let (os, arch, variant) = match &self.entry_platform {
            Some(p) => (
                p.os().to_string(),
                p.architecture().to_string(),
                p.variant().clone(),
            ),
            None => (
                self.config_json.os().to_string(),
                self.config_json.architecture().to_string(),
                self.config_json.variant().clone(),
            ),
        };
        match variant {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        }
    }

    /// The supported platform it is for, if it is one.
    pub fn platform(&self) -> Option<&'static Platform> {
        Platform::from_oci(&self.platform_name()).ok()
    }

    /// The manifest's digest, when it has one.
    pub fn digest(&self) -> Option<String> {
        self.manifest.as_ref().map(|m| m.digest.to_string())
    }
}

/// An artifact about a platform manifest (an OCI 1.1 referrer).
pub struct Attached {
    /// The digest of the manifest it is about.
    pub subject: String,
    pub artifact_type: String,
    /// Its manifest, when it was read (local sources); a registry's referrers list gives
    /// the descriptor only.
    pub manifest: Option<Blob>,
    pub manifest_digest: String,
    /// The size of its contents (its layers), when known.
    pub size: Option<u64>,
    /// Its manifest's config and layers (to carry it along).
    pub blobs: Vec<Descriptor>,
    /// Its annotations (a registry's referrers list repeats the manifest's).
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// The cosign signatures of one manifest (a registry's `sha256-<hex>.sig` tag).
pub struct Signature {
    pub digest: String,
    pub tag: String,
    pub manifest_digest: String,
    pub count: usize,
}

/// Reads `source`.
pub fn read(source: &Source, options: &Options) -> Result<Read> {
    match source {
        Source::Local { path, tag } => read_local(path, tag.as_deref()),
        Source::Remote(reference) => registry::read(reference, options),
    }
}

/// A layout directory, an OCI archive or a docker-archive, whichever `path` holds.
fn read_local(path: &Path, tag: Option<&str>) -> Result<Read> {
    let label = match tag {
        Some(t) => format!("{}:{t}", path.display()),
        None => path.display().to_string(),
    };
    if std::fs::symlink_metadata(path).is_err() {
        return Err(Error::input(format!("`{}` does not exist", path.display()))
            .with_help(
                "pass an OCI layout directory (DIR[:TAG]), an image archive (FILE[:TAG]) or a registry reference",
            ));
    }
    let location =
        crate::shell::path_text(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    let files = Files::open(path, &label)?;
    if files.has("oci-layout") {
        oci::read(files, label, location, tag)
    } else if files.has("manifest.json") {
        docker::read(files, label, location, tag)
    } else {
        Err(Error::input(format!(
            "`{}` is not an OCI layout, an OCI archive or a docker-archive (no oci-layout or manifest.json)",
            path.display()
        )))
    }
}

/// What kind of image archive the tar at `path` is, from its headers alone (no entry is
/// read): an OCI archive holds `oci-layout` and `index.json`, a docker-archive
/// `manifest.json` (and newer `docker save` output both, which is read as OCI).
pub fn archive_kind(path: &Path) -> Option<Format> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = tar::Archive::new(file);
    let entries = archive.entries_with_seek().ok()?;
    let (mut layout, mut index, mut docker) = (false, false, false);
    for entry in entries.take(100_000) {
        let entry = entry.ok()?;
        let name = entry.path().ok()?;
        match name.to_string_lossy().trim_start_matches("./") {
            "oci-layout" => layout = true,
            "index.json" => index = true,
            "manifest.json" => docker = true,
            _ => {}
        }
    }
    if layout && index {
        Some(Format::OciArchive)
    } else if docker {
        Some(Format::DockerArchive)
    } else {
        None
    }
}

/// Refuses a document of `size` bytes (a manifest, an index: 4 MiB; a config: 8 MiB) past
/// `limit`, before it is read.
pub(crate) fn within(label: &str, what: &str, size: u64, limit: usize) -> Result<()> {
    if size > limit as u64 {
        return Err(Error::input(format!(
            "`{label}`: its {what} has {size} bytes, more than the {} MiB such a document may hold",
            limit >> 20
        ))
        .with_help("this is not an image this tool reads; check where it came from"));
    }
    Ok(())
}

/// A small blob's bytes (a manifest, a config), read from `label`.
pub(crate) fn bytes(label: &str, blob: &Blob) -> Result<Vec<u8>> {
    blob.data.to_vec().map_err(|e| {
        Error::input(format!(
            "`{label}`: reading blob {} failed: {e}",
            blob.digest
        ))
    })
}

/// Parses JSON read from `label`.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    label: &str,
    what: &str,
    data: &[u8],
) -> Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| Error::input(format!("`{label}`: its {what} is not valid: {e}")))
}

/// An image manifest, parsed and checked: every size it declares within the OCI spec's
/// int64, and so is their total (a hostile manifest could otherwise declare sizes that add
/// up past what a u64 holds).
pub(crate) fn parse_manifest(
    label: &str,
    what: &str,
    data: &[u8],
) -> Result<oci_spec::image::ImageManifest> {
    let manifest: oci_spec::image::ImageManifest = parse(label, what, data)?;
    let total = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .try_fold(0u64, |sum, d| {
            Some(d.size())
                .filter(|&n| n <= i64::MAX as u64)
                .and_then(|n| sum.checked_add(n))
                .filter(|&n| n <= i64::MAX as u64)
        });
    if total.is_none() {
        return Err(Error::input(format!(
            "`{label}`: its {what} declares sizes beyond what the OCI spec allows (a size, or their total, above 2^63-1 bytes)"
        ))
        .with_help("the image is damaged or made to mislead; do not use it"));
    }
    Ok(manifest)
}

/// Whether a media type is an index (OCI, or a Docker manifest list).
pub fn is_index(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageIndex || media_type.to_string() == DOCKER_LIST
}

/// Whether a media type is an image manifest (OCI, or Docker schema 2).
pub fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.to_string() == DOCKER_MANIFEST
}

/// An optional annotation map, sorted (empty when absent).
pub(crate) fn sorted(
    annotations: &Option<std::collections::HashMap<String, String>>,
) -> BTreeMap<String, String> {
    annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Whether an image with `tags` is the one `wanted` asks for (a tag, or a full name).
pub(crate) fn selected(wanted: Option<&str>, tags: &[String]) -> bool {
    wanted.is_none_or(|w| {
        tags.iter()
            .any(|t| t == w || t.rsplit_once(':').is_some_and(|(_, tag)| tag == w))
    })
}

/// The error for a tag that no image in `location` has.
pub(crate) fn no_such_tag(location: &str, wanted: &str, tags: &[String]) -> Error {
    Error::input(format!("`{location}` has no image tagged `{wanted}`")).with_help(
        if tags.is_empty() {
            "its images have no tags: name none".to_string()
        } else {
            format!("its tags: {}", tags.join(", "))
        },
    )
}
