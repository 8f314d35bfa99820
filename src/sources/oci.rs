//! An OCI image layout, as a directory or an OCI archive: `index.json`'s entries are the
//! images (an index and its platform manifests, or one manifest), tagged with
//! `org.opencontainers.image.ref.name`; untagged entries whose manifest has a `subject`
//! are artifacts about them (SBOMs, signatures), as this tool writes them.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{
    is_index, is_manifest, no_such_tag, parse, parse_manifest, selected, sorted, Attached, Files,
    Format, Image, Manifest, Read, IMAGE_NAME, REF_NAME,
};
use crate::error::{Error, Result};
use crate::registry::limits::{MANIFEST_LIMIT, SMALL_BLOB_LIMIT};

/// Reads the layout in `files`: the images tagged `tag` (all without one).
pub(crate) fn read(
    files: Files,
    label: String,
    location: String,
    tag: Option<&str>,
) -> Result<Read> {
    let format = match files {
        Files::Dir(_) => Format::Oci,
        Files::Archive(_) => Format::OciArchive,
    };
    let top = files.small(&label, "index.json")?.ok_or_else(|| {
        Error::input(format!(
            "`{label}` is not a complete OCI layout: it has no index.json"
        ))
    })?;
    let top: ImageIndex = parse(&label, "index.json", &top)?;
    // Artifacts about images sit beside them in index.json: manifests with a subject.
    let mut entries = Vec::new();
    let mut attached = Vec::new();
    for entry in top.manifests() {
        if is_manifest(entry.media_type())
            && entry
                .annotations()
                .as_ref()
                .is_none_or(|a| !a.contains_key(REF_NAME))
        {
            let (blob, bytes) = files.document(&label, "manifest", entry, MANIFEST_LIMIT)?;
            let manifest: ImageManifest = parse_manifest(&label, "manifest", &bytes)?;
            if let Some(subject) = manifest.subject() {
                let artifact_type = manifest
                    .artifact_type()
                    .as_ref()
                    .or(entry.artifact_type().as_ref())
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| manifest.config().media_type().to_string());
                attached.push(Attached {
                    subject: subject.digest().to_string(),
                    artifact_type,
                    manifest_digest: entry.digest().to_string(),
                    size: Some(
                        manifest
                            .layers()
                            .iter()
                            .fold(0u64, |sum, l| sum.saturating_add(l.size())),
                    ),
                    blobs: std::iter::once(manifest.config().clone())
                        .chain(manifest.layers().iter().cloned())
                        .collect(),
                    manifest: Some(blob),
                    annotations: manifest
                        .annotations()
                        .clone()
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                });
                continue;
            }
        }
        entries.push(entry);
    }
    let tags_of = |e: &Descriptor| -> (Vec<String>, Vec<String>) {
        let ann = e.annotations().clone().unwrap_or_default();
        (
            ann.get(REF_NAME).cloned().into_iter().collect(),
            ann.get(IMAGE_NAME).cloned().into_iter().collect(),
        )
    };
    let all_tags: Vec<String> = entries.iter().flat_map(|e| tags_of(e).0).collect();
    let mut images = Vec::new();
    for entry in entries {
        let (tags, names) = tags_of(entry);
        let both: Vec<String> = tags.iter().chain(&names).cloned().collect();
        if !selected(tag, &both) {
            continue;
        }
        images.push(image(&files, &label, entry, tags, names)?);
    }
    if let Some(t) = tag.filter(|_| images.is_empty()) {
        return Err(no_such_tag(&location, t, &all_tags));
    }
    Ok(Read {
        label,
        location,
        format,
        images,
        all_tags,
        attached,
        signatures: Vec::new(),
        remote: None,
        files: Some(files),
    })
}

/// One `index.json` entry: an index of platform manifests, or one manifest.
fn image(
    files: &Files,
    label: &str,
    entry: &Descriptor,
    tags: Vec<String>,
    names: Vec<String>,
) -> Result<Image> {
    if is_index(entry.media_type()) {
        let (index_blob, bytes) = files.document(label, "image index", entry, MANIFEST_LIMIT)?;
        let index: ImageIndex = parse(label, "image index", &bytes)?;
        let manifests = index
            .manifests()
            .iter()
            .map(|m| manifest(files, label, m))
            .collect::<Result<Vec<_>>>()?;
        Ok(Image {
            tags,
            names,
            index: Some(index_blob),
            annotations: sorted(index.annotations()),
            manifests,
        })
    } else {
        let m = manifest(files, label, entry)?;
        Ok(Image {
            tags,
            names,
            index: None,
            annotations: m.annotations.clone(),
            manifests: vec![m],
        })
    }
}

/// A platform manifest, its config and its layers, each checked.
fn manifest(files: &Files, label: &str, d: &Descriptor) -> Result<Manifest> {
    if !is_manifest(d.media_type()) {
        return Err(Error::input(format!(
            "`{label}` holds a {} where an image manifest should be",
            d.media_type()
        )));
    }
    let (blob, bytes) = files.document(label, "manifest", d, MANIFEST_LIMIT)?;
    let parsed: ImageManifest = parse_manifest(label, "manifest", &bytes)?;
    let (config, bytes) = files.document(label, "config", parsed.config(), SMALL_BLOB_LIMIT)?;
    let config_json: ImageConfiguration = parse(label, "config", &bytes)?;
    let layers = parsed
        .layers()
        .iter()
        .map(|l| files.blob(label, l))
        .collect::<Result<Vec<_>>>()?;
    Ok(Manifest {
        entry_platform: d.platform().clone(),
        annotations: sorted(parsed.annotations()),
        manifest: Some(blob),
        config,
        config_json,
        layers,
    })
}
