//! The base image of `--base`, read for the platforms being built: for each, the base's
//! manifest for that platform (variant included; one it lacks is an error listing what it
//! has), its config, and its layers with their OCI media types (Docker schema 2 types map
//! to their OCI twins; the bytes, so the digests, stay the same).
//!
//! A local base (layout, OCI archive, docker-archive) is read where it is. A registry base
//! is read through a cache of blobs by digest in the user's cache directory: manifests and
//! configs are checked against their digests whenever they are read from it, layers when
//! they are stored (downloaded a step at a time to a temporary file, never whole in
//! memory). So a base given by digest whose blobs are cached costs no request at all, and
//! one given by tag costs the connection and one manifest request to learn what the tag
//! points at. With [`Layers::Describe`] (every destination is the base's own registry,
//! which mounts them) layers are not downloaded at all.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::{is_index, is_manifest, parse, parse_manifest, Layers, Options, Source, DOCKER_LAYER};
use crate::blob::{self, Blob, Data};
use crate::error::{Error, Result};
use crate::image::{FromImage, FromPlatform};
use crate::layers::Layer;
use crate::platform::Platform;
use crate::registry::connection::Connection;

/// Reads the base `source` (named `name`, as given) for `platforms`.
pub fn read(
    name: &str,
    source: &Source,
    platforms: &[&'static Platform],
    options: &Options,
) -> Result<FromImage> {
    match source {
        Source::Remote(reference) => read_remote(name, reference, platforms, options),
        Source::Local { .. } => read_local(name, source, platforms, options),
    }
}

fn read_local(
    name: &str,
    source: &Source,
    platforms: &[&'static Platform],
    options: &Options,
) -> Result<FromImage> {
    let read = super::read(source, options)?;
    let (image, rest) = read.one_image()?;
    let digest = match &image.index {
        Some(index) => Some(index.digest.to_string()),
        None => image.manifests.first().and_then(|m| m.digest()),
    };
    let have: Vec<String> = image.manifests.iter().map(|m| m.platform_name()).collect();
    let mut out = Vec::new();
    for &platform in platforms {
        let m = image
            .manifests
            .iter()
            .find(|m| m.platform() == Some(platform))
            .ok_or_else(|| missing_platform(name, platform, &have))?;
        out.push(FromPlatform {
            platform,
            manifest_digest: m.digest(),
            config: m.config_json.clone(),
            layers: layers(name, m.layers.clone(), &m.config_json)?,
        });
    }
    Ok(FromImage {
        name: local_name(&image, digest.as_deref()),
        digest,
        remote: rest.remote,
        platforms: out,
    })
}

/// What a local base is recorded as (`org.opencontainers.image.base.name`, the
/// provenance): the name the image gives itself, or its tag, with its digest — never the
/// path it was read from, which would name the checkout and make the image's digest
/// depend on where that is.
fn local_name(image: &super::Image, digest: Option<&str>) -> String {
    let own = image.names.first().or(image.tags.first());
    match (own, digest) {
        (Some(n), Some(d)) => format!("{n}@{d}"),
        (Some(n), None) => n.clone(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "local image".to_string(),
    }
}

fn missing_platform(name: &str, platform: &Platform, have: &[String]) -> Error {
    Error::input(format!(
        "the base image `{name}` has no image for {}: it has {}",
        platform.oci_name(),
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(", ")
        }
    ))
    .with_help("build for the platforms the base has (--platform), or use a base that has this one")
}

/// The base's layers as this tool's: OCI media types, their diff_ids from `config`.
fn layers(name: &str, blobs: Vec<Blob>, config: &ImageConfiguration) -> Result<Vec<Layer>> {
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != blobs.len() {
        return Err(Error::input(format!(
            "the base image `{name}` is damaged: a manifest has {} layers but its config lists {}",
            blobs.len(),
            diff_ids.len()
        )));
    }
    blobs
        .into_iter()
        .zip(diff_ids)
        .map(|(mut blob, diff_id)| {
            blob.media_type = oci_layer_type(name, &blob.media_type)?;
            Ok(Layer {
                blob,
                diff_id: diff_id.parse().map_err(|_| {
                    Error::input(format!(
                        "the base image `{name}`: its config has a bad diff_id `{diff_id}`"
                    ))
                })?,
                // Not known without reading the layer (0: unknown).
                uncompressed_size: 0,
                entries: 0,
            })
        })
        .collect()
}

/// A layer media type as OCI names it: Docker schema 2's map to their twins.
fn oci_layer_type(name: &str, media_type: &MediaType) -> Result<MediaType> {
    let text = media_type.to_string();
    Ok(match text.as_str() {
        DOCKER_LAYER => MediaType::ImageLayerGzip,
        "application/vnd.docker.image.rootfs.diff.tar" => MediaType::ImageLayer,
        "application/vnd.docker.image.rootfs.diff.tar.zstd" => MediaType::ImageLayerZstd,
        _ if matches!(
            media_type,
            MediaType::ImageLayer | MediaType::ImageLayerGzip | MediaType::ImageLayerZstd
        ) =>
        {
            media_type.clone()
        }
        _ => {
            return Err(Error::input(format!(
                "the base image `{name}` has a layer of type {text}, which cannot be carried into an image"
            ))
            .with_help("use a base whose layers are tar, tar+gzip or tar+zstd"))
        }
    })
}

// ----- registry bases -----

const ACCEPT: &[&str] = crate::registry::MANIFEST_TYPES;

/// Blobs by digest, under the user's cache directory.
struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    fn open() -> Cache {
        Cache {
            dir: crate::blob::cache_home().map(|h| h.join("base-blobs")),
        }
    }

    fn path(&self, digest: &str) -> Option<PathBuf> {
        let (algorithm, hex) = digest.split_once(':')?;
        let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
        (ok(algorithm) && ok(hex))
            .then(|| self.dir.as_ref().map(|d| d.join(algorithm).join(hex)))?
    }

    /// A small blob (manifest, config), if cached and still what its digest says.
    fn small(&self, digest: &str) -> Option<Vec<u8>> {
        let bytes = std::fs::read(self.path(digest)?).ok()?;
        (blob::sha256(&bytes).to_string() == digest).then_some(bytes)
    }

    fn put_small(&self, digest: &str, bytes: &[u8]) {
        if let Some(path) = self.path(digest) {
            let _ = write_atomic(&path, |f| f.write_all(bytes));
        }
    }

    /// A cached layer of `size` bytes (stored only after it was checked).
    fn layer(&self, digest: &str, size: u64) -> Option<Data> {
        let path = self.path(digest)?;
        let file = std::fs::File::open(&path).ok()?;
        let meta = file.metadata().ok()?;
        (meta.is_file() && meta.len() == size).then(|| Data::borrowed_file(file, size, &path))
    }
}

/// Writes a file through a temporary beside it and renames it in.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut temp = tempfile::Builder::new()
        .prefix(crate::guard::PREFIX)
        .tempfile_in(dir)?;
    let _registered = crate::guard::Temporary::register(temp.path());
    write(temp.as_file_mut())?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// A registry connection made when first needed (a base cached whole needs none).
struct Lazy<'a> {
    target: &'a oci_client::Reference,
    options: &'a Options<'a>,
    conn: Option<Connection>,
}

impl Lazy<'_> {
    async fn get(&mut self) -> Result<&Connection> {
        if self.conn.is_none() {
            self.conn = Some(
                crate::registry::connection::connect(
                    self.target,
                    self.options.connect,
                    self.options.shell,
                    oci_client::RegistryOperation::Pull,
                )
                .await?,
            );
        }
        Ok(self.conn.as_ref().expect("just made"))
    }
}

fn read_remote(
    name: &str,
    reference: &str,
    platforms: &[&'static Platform],
    options: &Options,
) -> Result<FromImage> {
    let target: oci_client::Reference = reference.parse().map_err(|e| {
        Error::usage(format!(
            "--base `{reference}` is not an image reference: {e}"
        ))
    })?;
    crate::registry::block_on(async {
        let mut remote = Remote {
            name,
            target: &target,
            cache: Cache::open(),
            lazy: Lazy {
                target: &target,
                options,
                conn: None,
            },
            layers: options.layers,
        };
        let (top, top_digest) = remote.top().await?;
        let chosen = remote.chosen(&top, &top_digest, platforms).await?;
        let mut out = Vec::new();
        for (platform, digest, raw) in chosen {
            out.push(remote.platform(platform, digest, &raw).await?);
        }
        Ok(FromImage {
            name: name.to_string(),
            digest: Some(top_digest),
            remote: Some((
                target.registry().to_string(),
                target.repository().to_string(),
            )),
            platforms: out,
        })
    })
}

/// A base image in a registry, read through the base-blob cache: the registry is asked
/// only for what the cache lacks.
struct Remote<'a> {
    name: &'a str,
    target: &'a oci_client::Reference,
    cache: Cache,
    lazy: Lazy<'a>,
    layers: Layers,
}

/// A registry's error for the base `name`: a clear one when it does not exist.
fn not_found(name: &str, conn: &Connection, e: oci_client::errors::OciDistributionError) -> Error {
    if crate::registry::errors::is_not_found(&e) {
        Error::input(format!(
            "the base image `{name}` does not exist in the registry"
        ))
        .with_help("check the reference: its repository, and its tag or digest")
    } else {
        conn.fail(e)
    }
}

impl Remote<'_> {
    /// What the reference points at, and its digest: by digest, from the cache if it is
    /// there; by tag, asked (the one request a warm build makes).
    async fn top(&mut self) -> Result<(Vec<u8>, String)> {
        if let Some(digest) = self.target.digest().map(str::to_string) {
            let raw = self.manifest(self.target, &digest).await?;
            return Ok((raw, digest));
        }
        let conn = self.lazy.get().await?;
        let (raw, digest) = conn
            .pull_manifest_raw(self.target, ACCEPT)
            .await
            .map_err(|e| not_found(self.name, conn, e))?;
        if blob::sha256(&raw).to_string() != digest {
            return Err(Error::registry(format!(
                "the registry sent a manifest for `{}` whose content does not match its digest {digest}",
                self.name
            )));
        }
        self.cache.put_small(&digest, &raw);
        Ok((raw.to_vec(), digest))
    }

    /// The manifest `digest` (at `reference`), from the cache or the registry, checked
    /// against its digest.
    async fn manifest(
        &mut self,
        reference: &oci_client::Reference,
        digest: &str,
    ) -> Result<Vec<u8>> {
        if let Some(bytes) = self.cache.small(digest) {
            return Ok(bytes);
        }
        let conn = self.lazy.get().await?;
        let (raw, got) = conn
            .pull_manifest_raw(reference, ACCEPT)
            .await
            .map_err(|e| not_found(self.name, conn, e))?;
        if got != digest || blob::sha256(&raw).to_string() != digest {
            return Err(Error::registry(format!(
                "the registry sent a manifest that does not match {digest}"
            )));
        }
        self.cache.put_small(digest, &raw);
        Ok(raw.to_vec())
    }

    /// The platform manifests wanted (platform, digest, bytes): the index's entries for
    /// `platforms`, or the one manifest `top` is.
    async fn chosen(
        &mut self,
        top: &[u8],
        top_digest: &str,
        platforms: &[&'static Platform],
    ) -> Result<Vec<(&'static Platform, String, Vec<u8>)>> {
        let kind: serde_json::Value = parse(self.name, "manifest", top)?;
        if kind.get("manifests").is_none() {
            return Ok(vec![(platforms[0], top_digest.to_string(), top.to_vec())]);
        }
        let index: ImageIndex = parse(self.name, "image index", top)?;
        let named = |d: &Descriptor| {
            d.platform().as_ref().map(|p| {
                let base = format!("{}/{}", p.os(), p.architecture());
                match p.variant() {
                    Some(v) => format!("{base}/{v}"),
                    None => base,
                }
            })
        };
        let have: Vec<String> = index.manifests().iter().filter_map(named).collect();
        let mut chosen = Vec::new();
        for &platform in platforms {
            let entry = index
                .manifests()
                .iter()
                .filter(|d| is_manifest(d.media_type()))
                .find(|d| named(d).is_some_and(|n| Platform::from_oci(&n).ok() == Some(platform)))
                .ok_or_else(|| missing_platform(self.name, platform, &have))?;
            let digest = entry.digest().to_string();
            let at = oci_client::Reference::with_digest(
                self.target.registry().to_string(),
                self.target.repository().to_string(),
                digest.clone(),
            );
            let raw = self.manifest(&at, &digest).await?;
            chosen.push((platform, digest, raw));
        }
        Ok(chosen)
    }

    /// One platform of the base: its manifest (an image manifest), its config (for that
    /// platform) and its layers (described, or downloaded into the cache).
    async fn platform(
        &mut self,
        platform: &'static Platform,
        digest: String,
        raw: &[u8],
    ) -> Result<FromPlatform> {
        let name = self.name;
        let manifest: ImageManifest = parse_manifest(name, "manifest", raw)?;
        let manifest_type = manifest
            .media_type()
            .clone()
            .unwrap_or(MediaType::ImageManifest);
        if is_index(&manifest_type) || !is_manifest(&manifest_type) {
            return Err(Error::input(format!(
                "the base image `{name}` holds a {manifest_type} where an image manifest should be"
            )));
        }
        let config: ImageConfiguration = self.config(manifest.config().digest().as_ref()).await?;
        // A single-manifest base says its platform in its config only.
        let actual = format!(
            "{}/{}{}",
            config.os(),
            config.architecture(),
            config
                .variant()
                .as_ref()
                .map(|v| format!("/{v}"))
                .unwrap_or_default()
        );
        if Platform::from_oci(&actual).ok() != Some(platform) {
            return Err(missing_platform(name, platform, &[actual]));
        }
        let mut blobs = Vec::new();
        for d in manifest.layers() {
            blobs.push(Blob {
                media_type: d.media_type().clone(),
                digest: d.digest().clone(),
                data: self.layer(d).await?,
            });
        }
        Ok(FromPlatform {
            platform,
            manifest_digest: Some(digest),
            layers: layers(name, blobs, &config)?,
            config,
        })
    }

    /// The config `digest`, from the cache or the registry (checked).
    async fn config(&mut self, digest: &str) -> Result<ImageConfiguration> {
        let raw = match self.cache.small(digest) {
            Some(bytes) => bytes,
            None => {
                let conn = self.lazy.get().await?;
                let bytes = conn.pull_checked(self.target, digest, "config").await?;
                self.cache.put_small(digest, &bytes);
                bytes.to_vec()
            }
        };
        parse(self.name, "config", &raw)
    }

    /// A layer: described only, or downloaded into the cache (unless it is there).
    async fn layer(&mut self, d: &Descriptor) -> Result<Data> {
        Ok(match self.layers {
            Layers::Describe => Data::Remote(d.size()),
            Layers::Download => match self.cache.layer(d.digest().as_ref(), d.size()) {
                Some(data) => data,
                None => {
                    let conn = self.lazy.get().await?;
                    download(conn, self.target, d, &self.cache).await?
                }
            },
        })
    }
}

/// Downloads a layer into the cache (a step at a time), checked against its size and
/// digest before it is stored; without a cache directory, to a spill file.
async fn download(
    conn: &Connection,
    image: &oci_client::Reference,
    d: &Descriptor,
    cache: &Cache,
) -> Result<Data> {
    let Some(path) = cache.path(d.digest().as_ref()) else {
        return super::registry::fetch(conn, image, d).await;
    };
    let data = super::registry::fetch(conn, image, d).await?;
    // Checked by fetch; stored for the next build (a spill file in memory or on disk).
    let stored = write_atomic(&path, |f| {
        std::io::copy(&mut data.reader().take(d.size()), f).map(|_| ())
    });
    match (stored, cache.layer(d.digest().as_ref(), d.size())) {
        (Ok(()), Some(cached)) => Ok(cached),
        _ => Ok(data),
    }
}
