//! A docker-archive (what `docker save` writes, file or unpacked directory):
//! `manifest.json` lists each image's config file, `RepoTags` and layer files by name.
//! Names are resolved inside the archive only (see `super::Files`): one that leads out
//! of it is refused like a missing file. There is no manifest, so each image is one
//! platform image whose layers get the OCI media type their bytes show (docker-archive
//! layers are plain tars, or gzip/zstd from newer engines).

use oci_spec::image::{ImageConfiguration, MediaType};

use super::{no_such_tag, parse, selected, Files, Format, Image, Manifest, Read};
use crate::blob::Blob;
use crate::error::{Error, Result};

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Reads the docker-archive in `files`: the images named `tag` (all without one).
pub(crate) fn read(
    files: Files,
    label: String,
    location: String,
    tag: Option<&str>,
) -> Result<Read> {
    let manifest = files.small(&label, "manifest.json")?.unwrap_or_default();
    let entries: Vec<Entry> = parse(&label, "manifest.json", &manifest)?;
    let all_tags: Vec<String> = entries.iter().flat_map(|e| e.repo_tags.clone()).collect();
    let mut images = Vec::new();
    for e in entries.into_iter().filter(|e| selected(tag, &e.repo_tags)) {
        let (config_data, config_digest) = files.named(&label, &e.config)?;
        super::within(
            &label,
            "config",
            config_data.len(),
            crate::registry::limits::SMALL_BLOB_LIMIT,
        )?;
        let config = Blob {
            media_type: MediaType::ImageConfig,
            digest: config_digest,
            data: config_data,
        };
        let config_json: ImageConfiguration = parse(
            &label,
            "config",
            &config.data.to_vec().map_err(|err| {
                Error::input(format!("`{label}`: reading {} failed: {err}", e.config))
            })?,
        )?;
        let mut layers = Vec::new();
        for name in &e.layers {
            let (data, digest) = files.named(&label, name)?;
            let media_type = layer_type(&data);
            layers.push(Blob {
                media_type,
                digest,
                data,
            });
        }
        images.push(Image {
            tags: e
                .repo_tags
                .iter()
                .filter_map(|t| t.rsplit_once(':').map(|(_, t)| t.to_string()))
                .collect(),
            names: e.repo_tags,
            index: None,
            annotations: Default::default(),
            manifests: vec![Manifest {
                entry_platform: None,
                manifest: None,
                annotations: Default::default(),
                config,
                config_json,
                layers,
            }],
        });
    }
    if let Some(t) = tag.filter(|_| images.is_empty()) {
        return Err(no_such_tag(&location, t, &all_tags));
    }
    Ok(Read {
        label,
        location,
        format: Format::DockerArchive,
        images,
        all_tags,
        attached: Vec::new(),
        signatures: Vec::new(),
        remote: None,
        files: Some(files),
    })
}

/// The OCI layer media type of a layer's bytes, by their first bytes.
fn layer_type(data: &crate::blob::Data) -> MediaType {
    let mut head = [0u8; 4];
    let n = std::io::Read::read(&mut data.reader(), &mut head).unwrap_or(0);
    match &head[..n] {
        [0x1f, 0x8b, ..] => MediaType::ImageLayerGzip,
        [0x28, 0xb5, 0x2f, 0xfd] => MediaType::ImageLayerZstd,
        _ => MediaType::ImageLayer,
    }
}
