//! `merge`: per-platform images → one image index holding every platform manifest of every
//! source, unchanged — so their digests, and the SBOMs and signatures made for them, stay
//! valid. What `docker buildx imagetools create` and `crane index append` do, for release
//! pipelines that build each platform on its own runner (`push --by-digest` there, `merge`
//! in the last job).
//!
//! Sources are OCI layouts (`DIR[:TAG]`), OCI archives (`FILE[:TAG]`) and registry
//! references (by tag or digest), read through `crate::sources`: local blobs where they are
//! (a layout's files; an archive's entries, spilled to disk past a few MiB), each checked
//! against its digest. A registry source's manifests and configs are read; its layers are
//! only downloaded when the result goes somewhere they are not: to disk, or to another
//! registry. Pushed to the registry they are in, they are mounted from the source's
//! repository (or are there already), never downloaded and uploaded again.
//!
//! The index is made by [`crate::image::index_blob`], as `build` makes it: platform
//! manifests sorted by platform, each entry its manifest's descriptor and platform, and the
//! annotations the sources agree on. So the same sources in any order give the same index,
//! and merging the platforms of a `build` gives that build's index digest.

use std::collections::BTreeMap;

use oci_spec::image::{ImageConfiguration, MediaType};

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::image::{ImageName, ImageSet, PlatformImage, Referrer};
use crate::layers::Layer;
use crate::platform::Platform;
use crate::registry::ConnectOptions;
use crate::shell::Shell;

use crate::sources::{DOCKER_LIST, DOCKER_MANIFEST};

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

/// Reads every source through `crate::sources`: local ones from disk, registry ones over
/// the network. `push_to` is the registry the result is pushed to, if it is: layers of
/// sources in that registry are left there (mounted later), all others are downloaded.
pub fn read_sources(
    sources: &[crate::sources::Source],
    push_to: Option<&str>,
    options: &ConnectOptions,
    shell: &Shell,
) -> Result<Vec<SourceImage>> {
    sources
        .iter()
        .map(|source| {
            if let crate::sources::Source::Local { path, .. } = source {
                // A docker-archive is told apart from its headers alone, before any
                // entry is read.
                if path.is_file()
                    && crate::sources::archive_kind(path)
                        == Some(crate::sources::Format::DockerArchive)
                {
                    return Err(docker_archive(&source.label()));
                }
            }
            let layers = match source {
                crate::sources::Source::Remote(reference) => {
                    let registry = reference
                        .parse::<oci_client::Reference>()
                        .ok()
                        .map(|r| r.registry().to_string());
                    if push_to.is_some() && registry.as_deref() == push_to {
                        crate::sources::Layers::Describe
                    } else {
                        crate::sources::Layers::Download
                    }
                }
                crate::sources::Source::Local { .. } => crate::sources::Layers::Download,
            };
            let read = crate::sources::read(
                source,
                &crate::sources::Options {
                    connect: options,
                    shell,
                    layers,
                    attachments: false,
                },
            )?;
            source_image(source, read)
        })
        .collect()
}

/// One source's image as merge takes it: its platform images, their referrers (local
/// sources: the SBOMs travel with them) and the names it carries.
fn source_image(
    source: &crate::sources::Source,
    read: crate::sources::Read,
) -> Result<SourceImage> {
    if read.format == crate::sources::Format::DockerArchive {
        return Err(docker_archive(&read.label));
    }
    let by_digest = matches!(source, crate::sources::Source::Remote(r) if r.contains('@'));
    let (image, rest) = read.one_image()?;
    let label = rest.label.clone();
    let mut parts = Vec::new();
    for m in image.manifests {
        let platform = m.platform().ok_or_else(|| {
            Error::input(format!(
                "`{label}` has an image for {}, which merge does not take",
                m.platform_name()
            ))
            .with_help(format!(
                "merge takes the platforms cargo microimage builds: {}",
                crate::platform::supported_list()
            ))
        })?;
        let manifest = m.manifest.ok_or_else(|| docker_archive(&label))?;
        let layers = layers_of(&label, m.layers, &m.config_json)?;
        parts.push(Part {
            platform,
            manifest,
            config: m.config,
            layers,
        });
    }
    // The referrers of these platform manifests, with their blobs.
    let mut referrers = Vec::new();
    let mut extra = Vec::new();
    for a in &rest.attached {
        let Some(manifest) = a.manifest.clone() else {
            continue;
        };
        if !parts
            .iter()
            .any(|p| p.manifest.digest.to_string() == a.subject)
        {
            continue;
        }
        for d in &a.blobs {
            extra.push(rest.blob(d)?);
        }
        referrers.push(Referrer {
            subject: a.subject.parse().map_err(|_| {
                Error::input(format!(
                    "`{label}`: a referrer's subject `{}` is not a digest",
                    a.subject
                ))
            })?,
            artifact_type: a.artifact_type.clone(),
            predicate_type: crate::provenance::predicate_of(&a.annotations),
            manifest,
        });
    }
    Ok(SourceImage {
        label,
        annotations: image.annotations,
        names: if by_digest { Vec::new() } else { image.names },
        parts,
        referrers,
        extra,
        remote: rest.remote,
    })
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

fn docker_archive(label: &str) -> Error {
    Error::input(format!(
        "`{label}` is a docker-archive, which holds no OCI manifests to merge"
    ))
    .with_help(
        "write the platform images as OCI layouts or OCI archives (--format oci or oci-archive)",
    )
}
