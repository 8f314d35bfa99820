//! Archive sinks: an OCI layout in a tar file (`oci-archive`), and the `docker save`
//! format (`docker-archive`) that `docker load` of older engines and `podman load` take.
//!
//! Both are deterministic tars written with the layer writer's tar code: sorted entries,
//! mtime = the source date epoch, root-owned, fixed modes.

use std::fs::File;
use std::io::BufWriter;

use crate::blob;
use crate::error::{Error, Result};
use crate::image::{canonical_json, ImageSet};
use crate::layers::{self, Content, Entry};
use crate::sinks::layout;

/// Writes `set` as an OCI archive (a tar of the OCI layout).
pub fn write_oci(set: &ImageSet, file: &mut File) -> Result<()> {
    let mut entries = vec![
        Entry::dir("blobs", 0o755),
        Entry::dir("blobs/sha256", 0o755),
        Entry::file(
            "oci-layout",
            0o644,
            Content::Bytes(layout::OCI_LAYOUT.into()),
        ),
        Entry::file(
            "index.json",
            0o644,
            Content::Bytes(layout::index_json(set)?.into()),
        ),
    ];
    for b in set.blobs.values() {
        let path = format!("blobs/sha256/{}", blob::hex(&b.digest));
        entries.push(Entry::file(&path, 0o644, Content::Blob(b.data.clone())));
    }
    write_entries(entries, set, file)
}

/// Writes `set` in the `docker save` format. It holds one image, so `set` must have
/// exactly one platform.
pub fn write_docker(set: &ImageSet, file: &mut File) -> Result<()> {
    let image = match set.images.as_slice() {
        [one] => one,
        many => {
            return Err(Error::usage(format!(
                "a docker-archive holds one platform, but this image has {} ({})",
                many.len(),
                many.iter()
                    .map(|i| i.platform.short_name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .with_help("pass one --platform for a docker-archive, or use --format oci-archive"))
        }
    };
    let config_name = format!("{}.json", blob::hex(&image.config.digest));
    let mut entries = vec![Entry::file(
        &config_name,
        0o644,
        Content::Blob(image.config.data.clone()),
    )];
    let mut layer_names = Vec::new();
    for layer in &image.layers {
        let name = format!("{}.tar", blob::hex(&layer.diff_id));
        if !layer_names.contains(&name) {
            // The tool's layers are written as the plain tars they hold; a base image's
            // layer as it is (a plain tar, or one whose unpacked size is not known:
            // `docker load` and `podman load` unpack a compressed layer file themselves).
            let content = match layers::Compression::of(&layer.blob.media_type) {
                Some(compression) if layer.uncompressed_size > 0 => Content::Decompressed {
                    blob: layer.blob.data.clone(),
                    compression,
                    size: layer.uncompressed_size,
                },
                _ => Content::Blob(layer.blob.data.clone()),
            };
            entries.push(Entry::file(&name, 0o644, content));
        }
        layer_names.push(name);
    }
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [set.name.to_string()],
        "Layers": layer_names,
    }]);
    entries.push(Entry::file(
        "manifest.json",
        0o644,
        Content::Bytes(canonical_json(&manifest)?.into()),
    ));
    write_entries(entries, set, file)
}

fn write_entries(mut entries: Vec<Entry>, set: &ImageSet, file: &mut File) -> Result<()> {
    layers::sort_and_check(&mut entries)?;
    let out = layers::write_tar(&entries, set.source_date_epoch, BufWriter::new(file))?;
    out.into_inner()
        .map_err(|e| Error::output(format!("writing the archive failed: {}", e.error())))?;
    Ok(())
}
