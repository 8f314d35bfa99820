//! `merge`: per-platform images → one image index holding every platform manifest of every
//! source, unchanged — so their digests, and the SBOMs and signatures made for them, stay
//! valid. What `docker buildx imagetools create` and `crane index append` do, for release
//! pipelines that build each platform on its own runner (`push --by-digest` there, `merge`
//! in the last job).
//!
//! Sources are OCI layouts (`DIR[:TAG]`), OCI archives (`FILE[:TAG]`) and registry
//! references (by tag or digest). Local blobs are read where they are (a layout's files; an
//! archive's entries, spilled to disk past a few MiB), each checked against its digest. A
//! registry source's manifests and configs are read; its layers are only downloaded when
//! the result goes somewhere they are not: to disk, or to another registry. Pushed to the
//! registry they are in, they are mounted from the source's repository (or are there
//! already), never downloaded and uploaded again.
//!
//! The index is made by [`crate::image::index_blob`], as `build` makes it: platform
//! manifests sorted by platform, each entry its manifest's descriptor and platform, and the
//! annotations the sources agree on. So the same sources in any order give the same index,
//! and merging the platforms of a `build` gives that build's index digest.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use crate::blob::{self, Blob, Data};
use crate::error::{Error, IoContext, Result};
use crate::image::{ImageName, ImageSet, PlatformImage, Referrer};
use crate::layers::Layer;
use crate::platform::Platform;
use crate::registry::ConnectOptions;
use crate::shell::Shell;

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const REF_NAME: &str = "org.opencontainers.image.ref.name";
const IMAGE_NAME: &str = "io.containerd.image.name";

/// Blobs up to this size are read into memory (manifests, configs, small layers).
const IN_MEMORY: u64 = 1 << 20;

/// What one source holds.
pub struct SourceImage {
    /// The source as the user named it, for messages.
    pub label: String,
    /// The annotations of its index (of its manifest, when it is one manifest).
    pub annotations: BTreeMap<String, String>,
    /// The full names it carries (`io.containerd.image.name` in a layout; `repo:tag` of a
    /// registry reference by tag).
    pub names: Vec<String>,
    pub parts: Vec<Part>,
    /// Artifacts about its platform manifests (SBOMs) that travel with it (local sources).
    pub referrers: Vec<Referrer>,
    /// The referrers' other blobs (their config and layers).
    pub extra: Vec<Blob>,
    /// A registry source's registry and repository.
    pub remote: Option<(String, String)>,
}

/// One platform image of a source.
pub struct Part {
    pub platform: &'static Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
}

/// Reads every source: local ones from disk, registry ones over the network. `push_to` is
/// the registry the result is pushed to, if it is: layers of sources in that registry are
/// left there (mounted later), all others are downloaded.
pub fn read_sources(
    sources: &[crate::inspect::Source],
    push_to: Option<&str>,
    options: &ConnectOptions,
    shell: &Shell,
) -> Result<Vec<SourceImage>> {
    sources
        .iter()
        .map(|source| match source {
            crate::inspect::Source::Local { path, tag } => read_local(path, tag.as_deref()),
            crate::inspect::Source::Remote(reference) => {
                read_remote(reference, push_to, options, shell)
            }
        })
        .collect()
}

/// The result of [`combine`]: the image, and for a push, the repositories each blob of a
/// registry source can be mounted from (registry → digest → repositories).
pub struct Merged {
    pub set: ImageSet,
    pub mounts: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// Puts the platform images of `sources` into one index (named `merged`, a placeholder for
/// the caller to replace: the index's bytes do not hold the name).
pub fn combine(sources: Vec<SourceImage>, source_date_epoch: u64) -> Result<Merged> {
    // One image per platform, across and within sources.
    let mut seen: BTreeMap<&'static Platform, (usize, &str)> = BTreeMap::new();
    for (at, source) in sources.iter().enumerate() {
        for part in &source.parts {
            if let Some((other_at, other)) = seen.insert(part.platform, (at, &source.label)) {
                let message = if other_at == at {
                    format!("`{other}` has two images for {}", part.platform.oci_name())
                } else if other == source.label {
                    format!("`{other}` is given twice")
                } else {
                    format!(
                        "{} is in both `{other}` and `{}`",
                        part.platform.oci_name(),
                        source.label
                    )
                };
                return Err(Error::usage(message)
                    .with_help("an index holds one image per platform: leave one of them out"));
            }
        }
    }
    if seen.is_empty() {
        return Err(Error::input("the sources hold no platform images"));
    }
    // One kind of manifest: an OCI index of OCI manifests, or a Docker list of Docker ones.
    let mut kinds: BTreeMap<String, &str> = BTreeMap::new();
    for source in &sources {
        for part in &source.parts {
            kinds
                .entry(part.manifest.media_type.to_string())
                .or_insert(&source.label);
        }
    }
    if kinds.len() > 1 {
        let list: Vec<String> = kinds
            .iter()
            .map(|(kind, label)| format!("`{label}` has {kind}"))
            .collect();
        return Err(Error::input(format!(
            "the sources' manifests are of different kinds: {}",
            list.join(", ")
        ))
        .with_help("an index holds one kind; copy one of them to the other's format first (e.g. `skopeo copy --format oci`)"));
    }
    let index_type = match kinds.keys().next().map(String::as_str) {
        Some(DOCKER_MANIFEST) => MediaType::Other(DOCKER_LIST.to_string()),
        _ => MediaType::ImageIndex,
    };
    // The annotations every source has, with the same value.
    let mut annotations = sources[0].annotations.clone();
    for source in &sources[1..] {
        annotations.retain(|k, v| source.annotations.get(k) == Some(v));
    }

    let mut mounts: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut blobs = BTreeMap::new();
    let mut referrers = Vec::new();
    let mut parts = Vec::new();
    for source in sources {
        if let Some((registry, repository)) = &source.remote {
            for part in &source.parts {
                let digests =
                    std::iter::once(&part.config).chain(part.layers.iter().map(|l| &l.blob));
                for b in digests {
                    let at = mounts
                        .entry(registry.clone())
                        .or_default()
                        .entry(b.digest.to_string())
                        .or_default();
                    if !at.contains(repository) {
                        at.push(repository.clone());
                    }
                }
            }
        }
        for b in source.extra {
            blobs.insert(b.digest.to_string(), b);
        }
        for r in source.referrers {
            blobs.insert(r.manifest.digest.to_string(), r.manifest.clone());
            referrers.push(r);
        }
        parts.extend(source.parts);
    }
    parts.sort_by_key(|p| p.platform);
    let mut entries = Vec::new();
    let mut images = Vec::new();
    for part in parts {
        let mut entry = part.manifest.descriptor();
        entry.set_platform(Some(part.platform.to_oci()));
        entries.push(entry);
        for b in part
            .layers
            .iter()
            .map(|l| &l.blob)
            .chain([&part.config, &part.manifest])
        {
            blobs.insert(b.digest.to_string(), b.clone());
        }
        images.push(PlatformImage {
            platform: part.platform,
            manifest: part.manifest,
            config: part.config,
            layers: part.layers,
            packed: None,
        });
    }
    let index = crate::image::index_blob(index_type, entries, &annotations)?;
    blobs.insert(index.digest.to_string(), index.clone());
    referrers.sort_by_key(|r: &Referrer| r.manifest.digest.to_string());
    Ok(Merged {
        set: ImageSet {
            name: ImageName {
                repository: "merged".to_string(),
                tag: "latest".to_string(),
            },
            index,
            images,
            referrers,
            blobs,
            source_date_epoch,
        },
        mounts,
    })
}

/// The name the sources agree on (for `-o` without `--tag`).
pub fn agreed_name(sources: &[SourceImage]) -> Option<String> {
    let first = sources.first()?.names.first()?;
    sources
        .iter()
        .all(|s| s.names.iter().any(|n| n == first))
        .then(|| first.clone())
}

fn parse<T: serde::de::DeserializeOwned>(label: &str, what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| Error::input(format!("`{label}`: its {what} is not valid: {e}")))
}

/// The supported platform an image is for: from its index entry, else its config.
fn platform_of(
    label: &str,
    entry: Option<&oci_spec::image::Platform>,
    config: &ImageConfiguration,
) -> Result<&'static Platform> {
    let (os, arch, variant) = match entry {
        Some(p) => (
            p.os().to_string(),
            p.architecture().to_string(),
            p.variant().clone(),
        ),
        None => (
            config.os().to_string(),
            config.architecture().to_string(),
            config.variant().clone(),
        ),
    };
    let name = match &variant {
        Some(v) => format!("{os}/{arch}/{v}"),
        None => format!("{os}/{arch}"),
    };
    Platform::from_oci(&name).map_err(|_| {
        Error::input(format!(
            "`{label}` has an image for {name}, which merge does not take"
        ))
        .with_help(format!(
            "merge takes the platforms cargo microimage builds: {}",
            crate::platform::supported_list()
        ))
    })
}

/// An optional annotation map, sorted (empty when absent).
fn sorted(annotations: &Option<HashMap<String, String>>) -> BTreeMap<String, String> {
    annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// Whether a descriptor's media type is an index (OCI, or a Docker manifest list).
fn is_index(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageIndex || media_type.to_string() == DOCKER_LIST
}

fn is_manifest(media_type: &MediaType) -> bool {
    *media_type == MediaType::ImageManifest || media_type.to_string() == DOCKER_MANIFEST
}

/// A manifest's layers — `blobs`, one per layer descriptor, in order — with their
/// diff_ids from its `config`.
fn layers_of(label: &str, blobs: Vec<Blob>, config: &ImageConfiguration) -> Result<Vec<Layer>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != blobs.len() {
        return Err(Error::input(format!(
            "`{label}` is damaged: a manifest has {} layers but its config lists {}",
            blobs.len(),
            diff_ids.len()
        )));
    }
    blobs
        .into_iter()
        .zip(diff_ids)
        .map(|(blob, diff_id)| {
            Ok(Layer {
                blob,
                diff_id: diff_id.parse().map_err(|_| {
                    Error::input(format!(
                        "`{label}`: its config has a bad diff_id `{diff_id}`"
                    ))
                })?,
                // Not known without reading the layer: nothing of merge's needs it.
                uncompressed_size: 0,
                entries: 0,
            })
        })
        .collect()
}

// ----- local sources -----

/// A layout directory, or an archive's files (each spilled to disk past a few MiB, its
/// digest computed as it is read).
enum Files {
    Dir(PathBuf),
    Archive(HashMap<String, (Data, oci_spec::image::Digest)>),
}

impl Files {
    fn open(path: &Path, label: &str) -> Result<Files> {
        if path.is_dir() {
            return Ok(Files::Dir(path.to_path_buf()));
        }
        let bad = |e: std::io::Error| {
            Error::input(format!("`{label}` is not a readable tar archive: {e}")).with_help(
                "merge takes OCI layout directories, OCI archives and registry references",
            )
        };
        // A docker-archive is told apart from its headers alone, before any entry is read.
        if crate::sinks::is_image_archive(path) && !archive_has(path, "oci-layout") {
            return Err(docker_archive(label));
        }
        let file = File::open(path).path_context("opening", path)?;
        let mut files = HashMap::new();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = entry
                .path()
                .map_err(bad)?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            let mut out = blob::HashingWriter::new(blob::SpillWriter::new());
            std::io::copy(&mut entry, &mut out).map_err(bad)?;
            out.flush().map_err(bad)?;
            let (spill, digest, _) = out.finish();
            let data = spill.finish().path_context("reading", path)?;
            files.insert(name, (data, digest));
        }
        Ok(Files::Archive(files))
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Files::Dir(dir) => dir.join(name).is_file(),
            Files::Archive(files) => files.contains_key(name),
        }
    }

    fn small(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Files::Dir(dir) => std::fs::read(dir.join(name)).ok(),
            Files::Archive(files) => files.get(name).and_then(|(d, _)| d.to_vec().ok()),
        }
    }

    /// The blob `d` names, checked against its size and digest.
    fn blob(&self, label: &str, d: &Descriptor) -> Result<Blob> {
        let digest = d.digest().clone();
        let name = format!("blobs/sha256/{}", blob::hex(&digest));
        let missing = || {
            Error::input(format!("`{label}` is incomplete: blob {digest} is missing"))
                .with_help("write the image again, or copy it whole (skopeo copy --all)")
        };
        let damaged =
            |what: String| Error::input(format!("`{label}` is damaged: blob {digest} {what}"));
        let (data, actual) = match self {
            Files::Archive(files) => files.get(&name).cloned().ok_or_else(missing)?,
            Files::Dir(dir) => {
                let path = dir.join(&name);
                let file = File::open(&path).map_err(|_| missing())?;
                let size = file.metadata().path_context("reading", &path)?.len();
                if size != d.size() {
                    return Err(damaged(format!("has {size} bytes, not {}", d.size())));
                }
                if size <= IN_MEMORY {
                    let mut bytes = Vec::new();
                    (&file)
                        .read_to_end(&mut bytes)
                        .path_context("reading", &path)?;
                    let actual = blob::sha256(&bytes);
                    (Data::Memory(bytes.into()), actual)
                } else {
                    let actual = blob::sha256_open(&file, size).path_context("reading", &path)?;
                    (Data::borrowed_file(file, size, &path), actual)
                }
            }
        };
        if data.len() != d.size() {
            return Err(damaged(format!(
                "has {} bytes, not {}",
                data.len(),
                d.size()
            )));
        }
        if actual != digest {
            return Err(damaged(format!("holds content with digest {actual}")));
        }
        Ok(Blob {
            media_type: d.media_type().clone(),
            digest,
            data,
        })
    }
}

fn docker_archive(label: &str) -> Error {
    Error::input(format!(
        "`{label}` is a docker-archive, which holds no OCI manifests to merge"
    ))
    .with_help(
        "write the platform images as OCI layouts or OCI archives (--format oci or oci-archive)",
    )
}

/// Whether the tar at `path` has an entry `name` (headers only).
fn archive_has(path: &Path, name: &str) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut archive = tar::Archive::new(file);
    let Ok(entries) = archive.entries_with_seek() else {
        return false;
    };
    entries.flatten().any(|e| {
        e.path()
            .is_ok_and(|p| p.to_string_lossy().trim_start_matches("./") == name)
    })
}

/// Reads an OCI layout or archive: the image of `tag` (or its one image).
pub fn read_local(path: &Path, tag: Option<&str>) -> Result<SourceImage> {
    let label = match tag {
        Some(t) => format!("{}:{t}", path.display()),
        None => path.display().to_string(),
    };
    if !path.exists() {
        return Err(Error::input(format!("`{}` does not exist", path.display())).with_help(
            "merge takes OCI layout directories (DIR[:TAG]), OCI archives (FILE[:TAG]) and registry references",
        ));
    }
    let files = Files::open(path, &label)?;
    if !files.has("oci-layout") {
        return Err(if files.has("manifest.json") {
            docker_archive(&label)
        } else {
            Error::input(format!(
                "`{label}` is not an OCI layout or OCI archive (no oci-layout file)"
            ))
        });
    }
    let top: ImageIndex = parse(
        &label,
        "index.json",
        &files.small("index.json").unwrap_or_default(),
    )?;
    // Artifacts about images (SBOMs) sit beside them in index.json: manifests with a subject.
    let mut images = Vec::new();
    let mut attached = Vec::new();
    for entry in top.manifests() {
        if is_manifest(entry.media_type()) {
            let manifest: ImageManifest = parse(
                &label,
                "manifest",
                &files
                    .blob(&label, entry)?
                    .data
                    .to_vec()
                    .path_context("reading", path)?,
            )?;
            if manifest.subject().is_some() {
                attached.push((entry.clone(), manifest));
                continue;
            }
        }
        images.push(entry);
    }
    let tags_of = |e: &Descriptor| -> Vec<String> {
        let ann = e.annotations().clone().unwrap_or_default();
        [REF_NAME, IMAGE_NAME]
            .iter()
            .filter_map(|k| ann.get(*k).cloned())
            .collect()
    };
    let chosen: Vec<&Descriptor> = images
        .iter()
        .copied()
        .filter(|e| crate::inspect::selected(tag, &tags_of(e)))
        .collect();
    let all_tags: Vec<String> = images
        .iter()
        .filter_map(|e| {
            e.annotations()
                .as_ref()
                .and_then(|a| a.get(REF_NAME).cloned())
        })
        .collect();
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(match tag {
                Some(t) => Error::input(format!("`{}` has no image tagged `{t}`", path.display()))
                    .with_help(format!("its tags: {}", all_tags.join(", "))),
                None => Error::input(format!("`{label}` holds no image")),
            })
        }
        _ => {
            return Err(Error::usage(format!(
                "`{label}` holds {} images; name one as {}:TAG",
                chosen.len(),
                path.display()
            ))
            .with_help(format!("its tags: {}", all_tags.join(", "))))
        }
    };
    let names = entry
        .annotations()
        .as_ref()
        .and_then(|a| a.get(IMAGE_NAME).cloned())
        .into_iter()
        .collect();
    let blob = |d: &Descriptor| files.blob(&label, d);
    let part = |d: &Descriptor,
                platform: Option<&oci_spec::image::Platform>|
     -> Result<(Part, BTreeMap<String, String>)> {
        if !is_manifest(d.media_type()) {
            return Err(Error::input(format!(
                "`{label}` holds a {} where an image manifest should be",
                d.media_type()
            )));
        }
        let manifest = blob(d)?;
        let parsed: ImageManifest = parse(
            &label,
            "manifest",
            &manifest.data.to_vec().path_context("reading", path)?,
        )?;
        let config = blob(parsed.config())?;
        let config_json: ImageConfiguration = parse(
            &label,
            "config",
            &config.data.to_vec().path_context("reading", path)?,
        )?;
        let platform = platform_of(&label, platform, &config_json)?;
        let blobs = parsed
            .layers()
            .iter()
            .map(blob)
            .collect::<Result<Vec<_>>>()?;
        let layers = layers_of(&label, blobs, &config_json)?;
        let annotations = sorted(parsed.annotations());
        Ok((
            Part {
                platform,
                manifest,
                config,
                layers,
            },
            annotations,
        ))
    };
    let (parts, annotations) = if is_index(entry.media_type()) {
        let index_blob = blob(entry)?;
        let index: ImageIndex = parse(
            &label,
            "image index",
            &index_blob.data.to_vec().path_context("reading", path)?,
        )?;
        let parts = index
            .manifests()
            .iter()
            .map(|m| part(m, m.platform().as_ref()).map(|(p, _)| p))
            .collect::<Result<Vec<_>>>()?;
        (parts, sorted(index.annotations()))
    } else {
        let (p, annotations) = part(entry, entry.platform().as_ref())?;
        (vec![p], annotations)
    };
    // The referrers of these platform manifests, with their blobs.
    let mut referrers = Vec::new();
    let mut extra = Vec::new();
    for (entry, manifest) in attached {
        let subject = manifest.subject().as_ref().map(|s| s.digest().clone());
        let Some(subject) = subject.filter(|s| parts.iter().any(|p| p.manifest.digest == *s))
        else {
            continue;
        };
        extra.push(blob(manifest.config())?);
        for l in manifest.layers() {
            extra.push(blob(l)?);
        }
        let artifact_type = manifest
            .artifact_type()
            .as_ref()
            .or(entry.artifact_type().as_ref())
            .map(|t| t.to_string())
            .unwrap_or_else(|| manifest.config().media_type().to_string());
        referrers.push(Referrer {
            subject,
            artifact_type,
            manifest: blob(&entry)?,
        });
    }
    Ok(SourceImage {
        label,
        annotations,
        names,
        parts,
        referrers,
        extra,
        remote: None,
    })
}

// ----- registry sources -----

const ACCEPT: &[&str] = crate::registry::MANIFEST_TYPES;

/// Reads a registry source: manifests and configs; layers downloaded unless the result is
/// pushed to this same registry (`push_to`).
pub fn read_remote(
    reference: &str,
    push_to: Option<&str>,
    options: &ConnectOptions,
    shell: &Shell,
) -> Result<SourceImage> {
    let target: oci_client::Reference = reference.parse().map_err(|e| {
        Error::usage(format!(
            "`{reference}` is neither a local path nor an image reference: {e}"
        ))
    })?;
    let label = reference.to_string();
    let download = push_to != Some(target.registry());
    crate::registry::block_on(async {
        let conn = crate::registry::connection::connect(
            &target,
            options,
            shell,
            oci_client::RegistryOperation::Pull,
        )
        .await?;
        let missing = |e: oci_client::errors::OciDistributionError| {
            if crate::registry::errors::is_not_found(&e) {
                Error::input(format!("`{label}` does not exist in the registry"))
                    .with_help("check the reference: pass what `push --by-digest` printed")
            } else {
                conn.fail(e)
            }
        };
        let (top, top_digest) = conn
            .pull_manifest_raw(&target, ACCEPT)
            .await
            .map_err(missing)?;
        if let Some(wanted) = target.digest() {
            if top_digest != wanted {
                return Err(Error::registry(format!(
                    "the registry sent a manifest with digest {top_digest} for `{label}`"
                )));
            }
        }
        let at = |digest: &str| {
            oci_client::Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                digest.to_string(),
            )
        };
        let kind: serde_json::Value = parse(&label, "manifest", &top)?;
        let mut manifests = Vec::new();
        let annotations: BTreeMap<String, String>;
        if kind.get("manifests").is_some() {
            let index: ImageIndex = parse(&label, "image index", &top)?;
            annotations = sorted(index.annotations());
            for m in index.manifests() {
                let (raw, digest) = conn
                    .pull_manifest_raw(&at(m.digest().as_ref()), ACCEPT)
                    .await
                    .map_err(missing)?;
                if blob::sha256(&raw).to_string() != m.digest().to_string()
                    || digest != m.digest().to_string()
                {
                    return Err(Error::registry(format!(
                        "the registry sent a manifest that does not match {}",
                        m.digest()
                    )));
                }
                manifests.push((raw, m.platform().clone()));
            }
        } else {
            let manifest: ImageManifest = parse(&label, "manifest", &top)?;
            annotations = sorted(manifest.annotations());
            manifests.push((top, None));
        }
        let mut parts = Vec::new();
        for (raw, platform) in manifests {
            let parsed: ImageManifest = parse(&label, "manifest", &raw)?;
            // A manifest that does not say its type is an OCI one (the spec's default).
            let manifest_type = parsed
                .media_type()
                .clone()
                .unwrap_or(MediaType::ImageManifest);
            if !is_manifest(&manifest_type) {
                return Err(Error::input(format!(
                    "`{label}` holds a {manifest_type} where an image manifest should be"
                )));
            }
            let config_digest = parsed.config().digest().to_string();
            let config_raw = conn.pull_checked(&target, &config_digest, "config").await?;
            let config_json: ImageConfiguration = parse(&label, "config", &config_raw)?;
            let config = Blob::new(parsed.config().media_type().clone(), config_raw);
            let platform = platform_of(&label, platform.as_ref(), &config_json)?;
            let mut blobs = Vec::new();
            for d in parsed.layers() {
                let data = if download {
                    fetch(&conn, &target, d).await?
                } else {
                    Data::Remote(d.size())
                };
                blobs.push(Blob {
                    media_type: d.media_type().clone(),
                    digest: d.digest().clone(),
                    data,
                });
            }
            let layers = layers_of(&label, blobs, &config_json)?;
            parts.push(Part {
                platform,
                manifest: Blob::new(manifest_type, raw.to_vec()),
                config,
                layers,
            });
        }
        Ok(SourceImage {
            names: target
                .tag()
                .filter(|_| target.digest().is_none())
                .map(|_| vec![target.whole()])
                .unwrap_or_default(),
            label: label.clone(),
            annotations,
            parts,
            referrers: Vec::new(),
            extra: Vec::new(),
            remote: Some((
                target.registry().to_string(),
                target.repository().to_string(),
            )),
        })
    })
}

/// Downloads one layer to a spill file (memory when small), checked against its digest.
async fn fetch(
    conn: &crate::registry::connection::Connection,
    image: &oci_client::Reference,
    d: &Descriptor,
) -> Result<Data> {
    use futures_util::StreamExt;
    let failed = |e: std::io::Error| {
        Error::output(format!("keeping layer {} on disk failed: {e}", d.digest())).with_source(e)
    };
    let mut stream = conn
        .client
        .pull_blob_stream(image, d.digest().as_ref())
        .await
        .map_err(|e| conn.fail(e))?;
    let mut out = blob::HashingWriter::new(blob::SpillWriter::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            Error::registry(format!("downloading layer {} failed: {e}", d.digest()))
        })?;
        out.write_all(&chunk).map_err(failed)?;
    }
    let (spill, digest, size) = out.finish();
    if digest != *d.digest() || size != d.size() {
        return Err(Error::registry(format!(
            "the registry sent {size} bytes with digest {digest} for layer {}",
            d.digest()
        )));
    }
    spill.finish().map_err(failed)
}
