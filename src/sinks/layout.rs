//! The OCI image layout sink: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! `index.json` has one entry, pointing at the image index, annotated with the tag in
//! `org.opencontainers.image.ref.name` (so `skopeo inspect oci:DIR:TAG` and
//! `podman run oci:DIR:TAG` find it) and the full name in `io.containerd.image.name`.

use std::fs;
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};

use crate::blob;
use crate::error::{Error, IoContext, Result};
use crate::image::{annotated, canonical_json, ImageSet};

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// The layout's `index.json` for `set`.
pub fn index_json(set: &ImageSet) -> Result<Vec<u8>> {
    let entry = annotated(
        set.index.descriptor(),
        &[
            ("org.opencontainers.image.ref.name", set.name.tag.clone()),
            ("io.containerd.image.name", set.name.to_string()),
        ],
    );
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![entry])
        .build()
        .map_err(|e| Error::output(format!("building index.json failed: {e}")))?;
    canonical_json(&index)
}

/// Writes the layout into the (empty) directory `dir`.
pub fn write(set: &ImageSet, dir: &Path) -> Result<()> {
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).path_context("creating", &blobs)?;
    for b in set.blobs.values() {
        let path = blobs.join(blob::hex(&b.digest));
        fs::write(&path, &b.data).path_context("writing", &path)?;
    }
    let path = dir.join("oci-layout");
    fs::write(&path, OCI_LAYOUT).path_context("writing", &path)?;
    let path = dir.join("index.json");
    fs::write(&path, index_json(set)?).path_context("writing", &path)?;
    Ok(())
}
