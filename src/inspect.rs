//! `inspect`: reads an image back from an OCI layout directory, an OCI archive or a
//! docker-archive and reports its tag, platforms, manifest digests, layers (media type,
//! compressed and uncompressed size, file count) and run configuration. Every blob read is
//! checked against its digest, so a damaged image is reported, not described.
//!
//! Remote images (`registry/repository:tag`) are read through a registry connection
//! (`crate::registry::connection`): same credentials, same transport rules as a push.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, MediaType};
use serde::{Deserialize, Serialize};

use crate::blob;
use crate::error::{Error, IoContext, Result};
use crate::layers::Compression;
use crate::shell::human_size;

/// What `inspect` reports about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub location: String,
    /// `oci`, `oci-archive`, `docker-archive` or `registry`.
    pub format: String,
    /// Tags found (`org.opencontainers.image.ref.name`, or docker `RepoTags`).
    pub tags: Vec<String>,
    /// Full names (`io.containerd.image.name`, or docker `RepoTags`).
    pub names: Vec<String>,
    pub index_digest: Option<String>,
    pub platforms: Vec<PlatformReport>,
    /// Cosign signatures found for the index and the platform manifests (registries only:
    /// they live under `sha256-<hex>.sig` tags).
    pub signatures: Vec<SignatureReport>,
}

/// The signatures of one manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureReport {
    /// The manifest (or index) signed.
    pub digest: String,
    /// `sha256-<hex>.sig`.
    pub tag: String,
    /// The signature manifest's digest.
    pub manifest_digest: String,
    /// How many signatures it holds (one per layer).
    pub count: usize,
}

/// An artifact about a platform image (an OCI 1.1 referrer: an SBOM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedReport {
    /// `application/spdx+json`, `application/vnd.cyclonedx+json`, or whatever it says.
    pub artifact_type: String,
    /// `SPDX 2.3`, `CycloneDX 1.5`, when it is a format this tool writes.
    pub format: Option<String>,
    pub manifest_digest: String,
    /// The document's size, when its manifest was read.
    pub size: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformReport {
    pub platform: String,
    pub manifest_digest: Option<String>,
    pub config_digest: String,
    pub compressed_size: u64,
    /// Unknown for remote images (their layers are not downloaded).
    pub uncompressed_size: Option<u64>,
    pub layers: Vec<LayerReport>,
    pub config: RunConfig,
    /// SBOMs and other artifacts whose subject is this platform's manifest.
    pub attached: Vec<AttachedReport>,
    /// The entrypoint's binary, when it was found in the layers (local images only).
    pub binary: Option<BinaryReport>,
}

/// The program the image runs (its `Entrypoint`), read from the layers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryReport {
    pub path: String,
    pub size: u64,
    /// Its `malloc`, and whether cargo-microimage's PID 1 signal hook is in it.
    pub runtime: crate::verify::Runtime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerReport {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
    /// Unknown for remote images.
    pub uncompressed_size: Option<u64>,
    /// Unknown for remote images.
    pub files: Option<usize>,
}

/// The parts of the image config that say how the container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
    pub env: Vec<String>,
    pub exposed_ports: Vec<String>,
    pub labels: std::collections::BTreeMap<String, String>,
    pub created: Option<String>,
}

/// Where image files are read from.
enum Store {
    Dir(PathBuf),
    Archive(HashMap<String, Vec<u8>>),
}

impl Store {
    fn open(path: &Path) -> Result<Store> {
        if path.is_dir() {
            return Ok(Store::Dir(path.to_path_buf()));
        }
        let file = File::open(path).path_context("opening", path)?;
        let mut files = HashMap::new();
        let mut archive = tar::Archive::new(file);
        let bad = |e: std::io::Error| {
            Error::input(format!(
                "`{}` is not a readable tar archive: {e}",
                path.display()
            ))
            .with_help("inspect takes an OCI layout directory, an OCI archive or a docker-archive")
        };
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if entry.header().entry_type().is_file() {
                let name = entry
                    .path()
                    .map_err(bad)?
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .to_string();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(bad)?;
                files.insert(name, data);
            }
        }
        Ok(Store::Archive(files))
    }

    fn get(&self, name: &str) -> Option<Vec<u8>> {
        match self {
            Store::Dir(dir) => std::fs::read(dir.join(name)).ok(),
            Store::Archive(files) => files.get(name).cloned(),
        }
    }

    fn has(&self, name: &str) -> bool {
        match self {
            Store::Dir(dir) => dir.join(name).is_file(),
            Store::Archive(files) => files.contains_key(name),
        }
    }

    /// A blob by digest, checked against it.
    fn blob(&self, digest: &str) -> Result<Vec<u8>> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let data = self.get(&format!("blobs/sha256/{hex}")).ok_or_else(|| {
            Error::input(format!("the image is incomplete: blob {digest} is missing"))
        })?;
        self.checked(digest, data)
    }

    fn checked(&self, digest: &str, data: Vec<u8>) -> Result<Vec<u8>> {
        let actual = blob::sha256(&data);
        if actual.to_string() != digest {
            return Err(Error::input(format!(
                "the image is damaged: blob {digest} has content with digest {actual}"
            )));
        }
        Ok(data)
    }
}

/// What `inspect` is asked to read: a path (bare, or with the transport prefix the tool
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
}

/// Reads a local [`Source`].
pub fn inspect_source(source: &Source) -> Result<Report> {
    match source {
        Source::Local { path, tag } => inspect_tagged(path, tag.as_deref()),
        Source::Remote(r) => Err(Error::input(format!("`{r}` is a registry reference"))),
    }
}

/// Reads the image at `path` (layout directory, OCI archive or docker-archive).
pub fn inspect(path: &Path) -> Result<Report> {
    inspect_tagged(path, None)
}

/// Reads the image at `path`; with `tag`, only the image of that tag (OCI
/// `org.opencontainers.image.ref.name`, or a docker-archive's `RepoTags` name or tag).
pub fn inspect_tagged(path: &Path, tag: Option<&str>) -> Result<Report> {
    if !path.exists() {
        return Err(
            Error::input(format!("`{}` does not exist", path.display())).with_help(
                "pass an OCI layout directory (e.g. target/microimage/<bin>) or an image archive",
            ),
        );
    }
    let store = Store::open(path)?;
    let location =
        crate::shell::path_text(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    if store.has("oci-layout") {
        let format = if matches!(store, Store::Dir(_)) {
            "oci"
        } else {
            "oci-archive"
        };
        inspect_oci(&store, location, format, tag)
    } else if store.has("manifest.json") {
        inspect_docker(&store, location, tag)
    } else {
        Err(Error::input(format!(
            "`{}` is not an OCI layout, an OCI archive or a docker-archive (no oci-layout or manifest.json)",
            path.display()
        )))
    }
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data)
        .map_err(|e| Error::input(format!("the image's {what} is not valid: {e}")))
}

/// Whether an index.json entry (or docker-archive name) is the one `wanted` asks for.
pub(crate) fn selected(wanted: Option<&str>, tags: &[String]) -> bool {
    wanted.is_none_or(|w| {
        tags.iter()
            .any(|t| t == w || t.rsplit_once(':').is_some_and(|(_, tag)| tag == w))
    })
}

/// The error for a tag that no image in the file has.
fn no_such_tag(location: &str, wanted: &str, tags: &[String]) -> Error {
    Error::input(format!("`{location}` has no image tagged `{wanted}`")).with_help(
        if tags.is_empty() {
            "its images have no tags: inspect it without one".to_string()
        } else {
            format!("its tags: {}", tags.join(", "))
        },
    )
}

fn inspect_oci(
    store: &Store,
    location: String,
    format: &'static str,
    wanted: Option<&str>,
) -> Result<Report> {
    let top: ImageIndex = parse("index.json", &store.get("index.json").unwrap_or_default())?;
    let mut all_tags = Vec::new();
    let mut report = Report {
        location,
        format: format.to_string(),
        tags: Vec::new(),
        names: Vec::new(),
        index_digest: None,
        platforms: Vec::new(),
        signatures: Vec::new(),
    };
    // Artifacts about the images (SBOMs) are listed in index.json beside them, untagged;
    // a manifest with a `subject` is one of those, not an image.
    let mut attached: HashMap<String, Vec<AttachedReport>> = HashMap::new();
    let mut images = Vec::new();
    for entry in top.manifests() {
        let digest = entry.digest().to_string();
        if *entry.media_type() == MediaType::ImageManifest {
            let manifest: ImageManifest = parse("manifest", &store.blob(&digest)?)?;
            if let Some(subject) = manifest.subject() {
                let artifact_type = manifest
                    .artifact_type()
                    .as_ref()
                    .or(entry.artifact_type().as_ref())
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| manifest.config().media_type().to_string());
                attached
                    .entry(subject.digest().to_string())
                    .or_default()
                    .push(AttachedReport {
                        format: crate::sbom::Format::of(&artifact_type)
                            .map(|f| f.name().to_string()),
                        artifact_type,
                        manifest_digest: digest,
                        size: Some(manifest.layers().iter().map(|l| l.size()).sum()),
                    });
                continue;
            }
        }
        images.push(entry);
    }
    for entry in images {
        let ann = entry.annotations().clone().unwrap_or_default();
        let tags: Vec<String> = ann
            .get("org.opencontainers.image.ref.name")
            .into_iter()
            .chain(ann.get("io.containerd.image.name"))
            .cloned()
            .collect();
        all_tags.extend(ann.get("org.opencontainers.image.ref.name").cloned());
        if !selected(wanted, &tags) {
            continue;
        }
        report
            .tags
            .extend(ann.get("org.opencontainers.image.ref.name").cloned());
        report
            .names
            .extend(ann.get("io.containerd.image.name").cloned());
        let digest = entry.digest().to_string();
        match entry.media_type() {
            MediaType::ImageIndex => {
                report.index_digest.get_or_insert(digest.clone());
                let index: ImageIndex = parse("image index", &store.blob(&digest)?)?;
                for m in index.manifests() {
                    report
                        .platforms
                        .push(platform_report(store, m.digest().as_ref())?);
                }
            }
            MediaType::ImageManifest => report.platforms.push(platform_report(store, &digest)?),
            other => {
                return Err(Error::input(format!(
                    "index.json points at an unsupported {other}"
                )));
            }
        }
    }
    for p in &mut report.platforms {
        if let Some(list) = p.manifest_digest.as_ref().and_then(|d| attached.get(d)) {
            p.attached = list.clone();
        }
    }
    if let Some(w) = wanted.filter(|_| report.platforms.is_empty()) {
        return Err(no_such_tag(&report.location, w, &all_tags));
    }
    Ok(report)
}

fn platform_report(store: &Store, manifest_digest: &str) -> Result<PlatformReport> {
    let manifest: ImageManifest = parse("manifest", &store.blob(manifest_digest)?)?;
    let config_digest = manifest.config().digest().to_string();
    let config: ImageConfiguration = parse("config", &store.blob(&config_digest)?)?;
    let program = entrypoint(&config);
    let mut layers = Vec::new();
    let mut binary = None;
    for l in manifest.layers() {
        let digest = l.digest().to_string();
        let data = store.blob(&digest)?;
        let (layer, found) = layer_report(
            &digest,
            l.media_type().to_string(),
            &data,
            program.as_deref(),
        )?;
        layers.push(layer);
        binary = found.or(binary);
    }
    let mut report = summarise(
        Some(manifest_digest.to_string()),
        config_digest,
        manifest.config().size(),
        &config,
        layers,
    );
    report.binary = binary;
    Ok(report)
}

fn inspect_docker(store: &Store, location: String, wanted: Option<&str>) -> Result<Report> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = parse(
        "manifest.json",
        &store.get("manifest.json").unwrap_or_default(),
    )?;
    let mut report = Report {
        location,
        format: "docker-archive".to_string(),
        tags: Vec::new(),
        names: Vec::new(),
        index_digest: None,
        platforms: Vec::new(),
        signatures: Vec::new(),
    };
    let all_tags: Vec<String> = entries.iter().flat_map(|e| e.repo_tags.clone()).collect();
    for e in entries
        .into_iter()
        .filter(|e| selected(wanted, &e.repo_tags))
    {
        let raw = store
            .get(&e.config)
            .ok_or_else(|| Error::input(format!("the docker-archive is missing {}", e.config)))?;
        let config_digest = blob::sha256(&raw).to_string();
        let config: ImageConfiguration = parse("config", &raw)?;
        let program = entrypoint(&config);
        let mut layers = Vec::new();
        let mut binary = None;
        for name in &e.layers {
            let data = store
                .get(name)
                .ok_or_else(|| Error::input(format!("the docker-archive is missing {name}")))?;
            let digest = blob::sha256(&data).to_string();
            let (layer, found) = layer_report(
                &digest,
                "application/x-tar".into(),
                &data,
                program.as_deref(),
            )?;
            layers.push(layer);
            binary = found.or(binary);
        }
        report.tags.extend(
            e.repo_tags
                .iter()
                .filter_map(|t| t.rsplit_once(':').map(|(_, t)| t.to_string())),
        );
        report.names.extend(e.repo_tags);
        let mut platform = summarise(None, config_digest, raw.len() as u64, &config, layers);
        platform.binary = binary;
        report.platforms.push(platform);
    }
    if let Some(w) = wanted.filter(|_| report.platforms.is_empty()) {
        return Err(no_such_tag(&report.location, w, &all_tags));
    }
    Ok(report)
}

/// The path of the program the image runs (the entrypoint's first word), without the
/// leading `/`, as tar entries name it.
fn entrypoint(config: &ImageConfiguration) -> Option<String> {
    let c = config.config().as_ref()?;
    let first = c.entrypoint().as_ref()?.first()?;
    Some(first.trim_start_matches('/').to_string()).filter(|p| !p.is_empty())
}

/// A layer's report, and the program at `program` if the layer holds it (a regular file).
fn layer_report(
    digest: &str,
    media_type: String,
    data: &[u8],
    program: Option<&str>,
) -> Result<(LayerReport, Option<BinaryReport>)> {
    let bad = |e: std::io::Error| Error::input(format!("layer {digest} cannot be read: {e}"));
    // By content, not media type: docker-archives hold plain tars whatever they say.
    let compression = if data.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    };
    let tar = match compression {
        Some(c) => {
            let mut out = Vec::new();
            c.decoder(data)
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(bad)?;
            out
        }
        None => data.to_vec(),
    };
    let mut files = 0;
    let mut binary = None;
    let mut archive = tar::Archive::new(&tar[..]);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        files += 1;
        let name = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if Some(name) == program && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).map_err(bad)?;
            binary = Some(BinaryReport {
                path: format!("/{name}"),
                size: bytes.len() as u64,
                runtime: crate::verify::runtime_of_bytes(&bytes),
            });
        }
    }
    let layer = LayerReport {
        digest: digest.to_string(),
        media_type,
        size: data.len() as u64,
        uncompressed_size: Some(tar.len() as u64),
        files: Some(files),
    };
    Ok((layer, binary))
}

fn summarise(
    manifest_digest: Option<String>,
    config_digest: String,
    config_size: u64,
    config: &ImageConfiguration,
    layers: Vec<LayerReport>,
) -> PlatformReport {
    let mut platform = format!("{}/{}", config.os(), config.architecture());
    if let Some(v) = config.variant() {
        platform = format!("{platform}/{v}");
    }
    let c = config.config().clone().unwrap_or_default();
    let mut exposed_ports = c.exposed_ports().clone().unwrap_or_default();
    exposed_ports.sort();
    PlatformReport {
        attached: Vec::new(),
        binary: None,
        platform,
        manifest_digest,
        config_digest,
        compressed_size: config_size + layers.iter().map(|l| l.size).sum::<u64>(),
        uncompressed_size: layers.iter().map(|l| l.uncompressed_size).sum(),
        layers,
        config: RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            user: c.user().clone(),
            working_dir: c.working_dir().clone(),
            env: c.env().clone().unwrap_or_default(),
            exposed_ports,
            labels: c.labels().clone().unwrap_or_default().into_iter().collect(),
            created: config.created().clone(),
        },
    }
}

/// Reads an image from a registry: `registry/repository:tag` or `…@sha256:…`. Manifests
/// and configs are fetched and checked against their digests; layers are described from
/// their descriptors, not downloaded.
pub fn inspect_remote(
    reference: &str,
    options: &crate::registry::ConnectOptions,
    shell: &crate::shell::Shell,
) -> Result<Report> {
    let target: oci_client::Reference = reference.parse().map_err(|e| {
        Error::usage(format!(
            "`{reference}` is neither a local path nor an image reference: {e}"
        ))
    })?;
    crate::registry::block_on(async {
        let conn = crate::registry::connection::connect(
            &target,
            options,
            shell,
            oci_client::RegistryOperation::Pull,
        )
        .await?;
        const ACCEPT: &[&str] = crate::registry::MANIFEST_TYPES;
        let (top, top_digest) = conn
            .pull_manifest_raw(&target, ACCEPT)
            .await
            .map_err(|e| conn.fail(e))?;
        let value: serde_json::Value = parse("manifest", &top)?;
        let mut report = Report {
            location: reference.to_string(),
            format: "registry".to_string(),
            tags: target
                .tag()
                .map(|t| vec![t.to_string()])
                .unwrap_or_default(),
            names: vec![target.whole()],
            index_digest: None,
            platforms: Vec::new(),
            signatures: Vec::new(),
        };
        let mut manifests = Vec::new();
        if value.get("manifests").is_some() {
            report.index_digest = Some(top_digest.clone());
            let index: ImageIndex = parse("image index", &top)?;
            for m in index.manifests() {
                let by_digest = oci_client::Reference::with_digest(
                    target.registry().to_string(),
                    target.repository().to_string(),
                    m.digest().to_string(),
                );
                let (raw, digest) = conn
                    .pull_manifest_raw(&by_digest, ACCEPT)
                    .await
                    .map_err(|e| conn.fail(e))?;
                manifests.push((digest, raw));
            }
        } else {
            manifests.push((top_digest, top));
        }
        for (digest, raw) in manifests {
            let manifest: ImageManifest = parse("manifest", &raw)?;
            let config_digest = manifest.config().digest().to_string();
            let config_raw = conn.pull_checked(&target, &config_digest, "config").await?;
            let config: ImageConfiguration = parse("config", &config_raw)?;
            let layers = manifest
                .layers()
                .iter()
                .map(|l| LayerReport {
                    digest: l.digest().to_string(),
                    media_type: l.media_type().to_string(),
                    size: l.size(),
                    uncompressed_size: None,
                    files: None,
                })
                .collect();
            let mut platform = summarise(
                Some(digest.clone()),
                config_digest,
                manifest.config().size(),
                &config,
                layers,
            );
            // The referrers API, or the `sha256-<hex>` tag where the registry has none.
            let by_digest = oci_client::Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                digest.clone(),
            );
            // What is attached is extra: a registry that cannot list it does not stop the
            // report.
            let referrers = match conn.client.pull_referrers(&by_digest, None).await {
                Ok(r) => r.manifests,
                Err(e) => {
                    shell.warn(format!(
                        "the artifacts attached to {digest} cannot be listed: {}",
                        conn.fail(e).message()
                    ));
                    Vec::new()
                }
            };
            platform.attached = referrers
                .iter()
                .map(|m| {
                    let artifact_type = m.artifact_type.clone().unwrap_or_default();
                    AttachedReport {
                        format: crate::sbom::Format::of(&artifact_type)
                            .map(|f| f.name().to_string()),
                        artifact_type,
                        manifest_digest: m.digest.clone(),
                        size: None,
                    }
                })
                .collect();
            report.platforms.push(platform);
        }
        let signed = report
            .index_digest
            .iter()
            .chain(
                report
                    .platforms
                    .iter()
                    .filter_map(|p| p.manifest_digest.as_ref()),
            )
            .cloned()
            .collect::<Vec<_>>();
        for digest in signed {
            let tag = crate::sign::signature_tag(&digest);
            let sig_ref = oci_client::Reference::with_tag(
                target.registry().to_string(),
                target.repository().to_string(),
                tag.clone(),
            );
            match conn
                .pull_manifest_raw(&sig_ref, &["application/vnd.oci.image.manifest.v1+json"])
                .await
            {
                Ok((raw, manifest_digest)) => {
                    let manifest: ImageManifest = parse("signature manifest", &raw)?;
                    report.signatures.push(SignatureReport {
                        digest,
                        tag,
                        manifest_digest,
                        count: manifest.layers().len(),
                    });
                }
                Err(e) if crate::registry::errors::is_not_found(&e) => {}
                Err(e) => return Err(conn.fail(e)),
            }
        }
        Ok(report)
    })
}

/// The human-readable form of a report.
pub fn render(report: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "Image:    {} ({})", report.location, report.format);
    if !report.names.is_empty() {
        let _ = writeln!(s, "Name:     {}", report.names.join(", "));
    }
    if !report.tags.is_empty() {
        let _ = writeln!(s, "Tag:      {}", report.tags.join(", "));
    }
    if let Some(d) = &report.index_digest {
        let _ = writeln!(s, "Index:    {d}");
    }
    for p in &report.platforms {
        let _ = writeln!(s, "\nPlatform: {}", p.platform);
        if let Some(d) = &p.manifest_digest {
            let _ = writeln!(s, "Manifest: {d}");
        }
        let _ = writeln!(s, "Config:   {}", p.config_digest);
        let _ = writeln!(
            s,
            "Size:     {} compressed, {} uncompressed",
            human_size(p.compressed_size),
            p.uncompressed_size.map_or("?".to_string(), human_size)
        );
        let _ = writeln!(
            s,
            "  {:<3} {:<20} {:<44} {:>11} {:>13} {:>6}",
            "#", "DIGEST", "MEDIA TYPE", "COMPRESSED", "UNCOMPRESSED", "FILES"
        );
        for (i, l) in p.layers.iter().enumerate() {
            let short: String = l.digest.chars().take(19).collect();
            let _ = writeln!(
                s,
                "  {:<3} {:<20} {:<44} {:>11} {:>13} {:>6}",
                i + 1,
                short,
                l.media_type,
                human_size(l.size),
                l.uncompressed_size.map_or("?".to_string(), human_size),
                l.files.map_or("?".to_string(), |f| f.to_string())
            );
        }
        if let Some(b) = &p.binary {
            let _ = writeln!(
                s,
                "  Binary:     {} ({}): {}",
                b.path,
                human_size(b.size),
                b.runtime.describe()
            );
        }
        let c = &p.config;
        let _ = writeln!(
            s,
            "  Entrypoint: {}",
            serde_json::to_string(&c.entrypoint).unwrap_or_default()
        );
        if !c.cmd.is_empty() {
            let _ = writeln!(
                s,
                "  Cmd:        {}",
                serde_json::to_string(&c.cmd).unwrap_or_default()
            );
        }
        let _ = writeln!(s, "  User:       {}", c.user.as_deref().unwrap_or("(root)"));
        let _ = writeln!(
            s,
            "  WorkingDir: {}",
            c.working_dir.as_deref().unwrap_or("/")
        );
        for e in &c.env {
            let _ = writeln!(s, "  Env:        {e}");
        }
        if !c.exposed_ports.is_empty() {
            let _ = writeln!(s, "  Ports:      {}", c.exposed_ports.join(", "));
        }
        for (k, v) in &c.labels {
            let _ = writeln!(s, "  Label:      {k}={v}");
        }
        if let Some(created) = &c.created {
            let _ = writeln!(s, "  Created:    {created}");
        }
        for a in &p.attached {
            let what = a.format.as_deref().unwrap_or(&a.artifact_type);
            let size = a
                .size
                .map(|n| format!(", {}", human_size(n)))
                .unwrap_or_default();
            let _ = writeln!(s, "  Attached:   {what} {}{size}", a.manifest_digest);
        }
    }
    if !report.signatures.is_empty() {
        let _ = writeln!(s);
        for sig in &report.signatures {
            let _ = writeln!(
                s,
                "Signed:   {} ({} signature{} under {})",
                sig.digest,
                sig.count,
                if sig.count == 1 { "" } else { "s" },
                sig.tag
            );
        }
    }
    s
}
