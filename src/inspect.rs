//! `inspect`: describes an image read through `crate::sources` — an OCI layout directory,
//! an OCI archive, a docker-archive or a registry reference: its tags, platforms, manifest
//! digests, layers (media type, compressed and uncompressed size, file count), the program
//! and what it carries at run time, run configuration, attached artifacts and signatures.
//! Every blob read is checked against its digest, so a damaged image is reported, not
//! described.

use std::collections::HashMap;
use std::io::Read;

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::blob;
use crate::error::{Error, Result};
use crate::layers::Compression;
use crate::shell::human_size;
pub use crate::sources::Source;

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
    /// For provenance (an in-toto statement, or a Sigstore bundle holding one): its
    /// predicate type (`https://slsa.dev/provenance/v1`) and whether it is signed.
    pub predicate_type: Option<String>,
    pub signed: Option<bool>,
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
    /// The base image it was built on (`org.opencontainers.image.base.name` and
    /// `.base.digest` on its manifest), if it says.
    pub base: Option<BaseReport>,
}

/// The base image a platform image names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaseReport {
    pub name: String,
    pub digest: Option<String>,
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

/// Reads `source` (a layout, an archive or a registry reference) through
/// `crate::sources` and describes it. Local images' layers are read (streamed and
/// decompressed) to count their files and to find the program; a registry's are described
/// from their descriptors, not downloaded.
pub fn inspect(
    source: &Source,
    options: &crate::registry::ConnectOptions,
    shell: &crate::shell::Shell,
) -> Result<Report> {
    let read = crate::sources::read(
        source,
        &crate::sources::Options {
            connect: options,
            shell,
            layers: crate::sources::Layers::Describe,
            attachments: true,
        },
    )?;
    let mut report = Report {
        location: read.location.clone(),
        format: read.format.name().to_string(),
        tags: Vec::new(),
        names: Vec::new(),
        index_digest: None,
        platforms: Vec::new(),
        signatures: read
            .signatures
            .iter()
            .map(|s| SignatureReport {
                digest: s.digest.clone(),
                tag: s.tag.clone(),
                manifest_digest: s.manifest_digest.clone(),
                count: s.count,
            })
            .collect(),
    };
    if let Source::Remote(reference) = source {
        // A reference names itself, by tag or by digest.
        let target: Option<oci_client::Reference> = reference.parse().ok();
        report.names = target.iter().map(|t| t.whole()).collect();
        report.tags = target
            .as_ref()
            .and_then(|t| t.tag().map(str::to_string))
            .into_iter()
            .collect();
    }
    let mut attached: HashMap<String, Vec<AttachedReport>> = HashMap::new();
    for a in &read.attached {
        let provenance = crate::provenance::describe(&a.artifact_type, &a.annotations);
        attached
            .entry(a.subject.clone())
            .or_default()
            .push(AttachedReport {
                format: crate::sbom::Format::of(&a.artifact_type).map(|f| f.name().to_string()),
                artifact_type: a.artifact_type.clone(),
                manifest_digest: a.manifest_digest.clone(),
                size: a.size,
                predicate_type: provenance.as_ref().map(|(p, _)| p.clone()),
                signed: provenance.as_ref().map(|(_, s)| *s),
            });
    }
    for image in &read.images {
        if read.format != crate::sources::Format::Registry {
            report.tags.extend(image.tags.iter().cloned());
            report.names.extend(image.names.iter().cloned());
        }
        if let Some(index) = &image.index {
            report.index_digest.get_or_insert(index.digest.to_string());
        }
        for m in &image.manifests {
            let mut platform = platform_report(&read.label, m, shell)?;
            if let Some(list) = platform
                .manifest_digest
                .as_ref()
                .and_then(|d| attached.get(d))
            {
                platform.attached = list.clone();
            }
            report.platforms.push(platform);
        }
    }
    Ok(report)
}

fn platform_report(
    label: &str,
    m: &crate::sources::Manifest,
    shell: &crate::shell::Shell,
) -> Result<PlatformReport> {
    let program = entrypoint(&m.config_json);
    let mut layers = Vec::new();
    let mut binary = None;
    for l in &m.layers {
        let (layer, found) = layer_report(label, l, program.as_deref(), shell)?;
        layers.push(layer);
        binary = found.or(binary);
    }
    let mut report = summarise(
        m.digest(),
        m.config.digest.to_string(),
        m.config.size(),
        &m.config_json,
        layers,
    );
    report.binary = binary;
    report.base = m
        .annotations
        .get(crate::image::BASE_NAME)
        .map(|name| BaseReport {
            name: name.clone(),
            digest: m.annotations.get(crate::image::BASE_DIGEST).cloned(),
        });
    Ok(report)
}

/// The path of the program the image runs (the entrypoint's first word), without the
/// leading `/`, as tar entries name it.
fn entrypoint(config: &ImageConfiguration) -> Option<String> {
    let c = config.config().as_ref()?;
    let first = c.entrypoint().as_ref()?.first()?;
    Some(first.trim_start_matches('/').to_string()).filter(|p| !p.is_empty())
}

/// The most of one layer `inspect` unpacks for its report (a layer that unpacks to more —
/// or a decompression bomb — is reported without its unpacked size and file count).
const UNPACK_LIMIT: u64 = 8 << 30;

/// Counts what passes through it, and fails past `limit`.
struct Counting<R> {
    inner: R,
    count: u64,
    limit: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.count > self.limit {
            return Err(std::io::Error::other(TooBig));
        }
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

/// The error [`Counting`] ends a read with.
#[derive(Debug)]
struct TooBig;

impl std::fmt::Display for TooBig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unpacks to more than {} GiB", UNPACK_LIMIT >> 30)
    }
}

impl std::error::Error for TooBig {}

fn too_big(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| inner.is::<TooBig>())
}

/// A layer's report, and the program at `program` if the layer holds it (a regular
/// file). The layer is streamed: decompressed as it is read, the program's bytes spilled
/// to disk past a few MiB. A registry layer is described from its descriptor.
fn layer_report(
    label: &str,
    layer: &crate::blob::Blob,
    program: Option<&str>,
    shell: &crate::shell::Shell,
) -> Result<(LayerReport, Option<BinaryReport>)> {
    let digest = layer.digest.to_string();
    let mut report = LayerReport {
        digest: digest.clone(),
        media_type: layer.media_type.to_string(),
        size: layer.size(),
        uncompressed_size: None,
        files: None,
    };
    if matches!(layer.data, crate::blob::Data::Remote(_)) {
        return Ok((report, None));
    }
    let bad =
        |e: std::io::Error| Error::input(format!("`{label}`: layer {digest} cannot be read: {e}"));
    // By content, not media type: docker-archives hold plain tars whatever they say.
    let mut head = [0u8; 4];
    let n = layer.data.reader().read(&mut head).map_err(bad)?;
    let compression = match &head[..n] {
        [0x1f, 0x8b, ..] => Some(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd] => Some(Compression::Zstd),
        _ => None,
    };
    let reader: Box<dyn Read> = match compression {
        Some(c) => c.stream_decoder(&layer.data).map_err(bad)?,
        None => Box::new(std::io::BufReader::new(layer.data.reader())),
    };
    let mut counted = Counting {
        inner: reader,
        count: 0,
        limit: UNPACK_LIMIT,
    };
    let mut files = 0;
    let mut binary = None;
    let read = (|| -> std::io::Result<()> {
        let mut archive = tar::Archive::new(&mut counted);
        let entries = archive.entries()?;
        for entry in entries {
            let mut entry = entry?;
            files += 1;
            let name = entry.path()?.to_string_lossy().into_owned();
            let name = name.trim_start_matches("./").trim_start_matches('/');
            if Some(name) == program && entry.header().entry_type().is_file() {
                let mut out = blob::SpillWriter::new();
                std::io::copy(&mut entry, &mut out)?;
                let data = out.finish()?;
                binary = Some(BinaryReport {
                    path: format!("/{name}"),
                    size: data.len(),
                    runtime: crate::verify::runtime_of_data(&data),
                });
            }
        }
        // What follows the tar's end (its padding) is part of the layer too.
        std::io::copy(archive.into_inner(), &mut std::io::sink())?;
        Ok(())
    })();
    match read {
        Ok(()) => {
            report.uncompressed_size = Some(counted.count);
            report.files = Some(files);
        }
        Err(e) if too_big(&e) => {
            shell.warn(format!(
                "`{label}`: layer {digest} {}; its unpacked size and files are not reported",
                TooBig
            ));
        }
        Err(e) => return Err(bad(e)),
    }
    Ok((report, binary))
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
        base: None,
        platform,
        manifest_digest,
        config_digest,
        // Saturating: sizes are checked where manifests are read, but a total never wraps.
        compressed_size: layers
            .iter()
            .fold(config_size, |sum, l| sum.saturating_add(l.size)),
        uncompressed_size: layers.iter().try_fold(0u64, |sum, l| {
            l.uncompressed_size.map(|n| sum.saturating_add(n))
        }),
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
        if let Some(b) = &p.base {
            let digest = b
                .digest
                .as_ref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let _ = writeln!(s, "Base:     {}{digest}", b.name);
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
            let provenance = a.predicate_type.as_ref().map(|p| match p.as_str() {
                crate::provenance::PREDICATE_TYPE if a.signed == Some(true) => {
                    "SLSA provenance v1 (signed)".to_string()
                }
                crate::provenance::PREDICATE_TYPE => "SLSA provenance v1 (unsigned)".to_string(),
                crate::provenance::SIGN_PREDICATE_TYPE => "cosign signature".to_string(),
                other if a.signed == Some(true) => format!("{other} (signed)"),
                other => other.to_string(),
            });
            let what = provenance
                .as_deref()
                .or(a.format.as_deref())
                .unwrap_or(&a.artifact_type);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpacking_stops_past_the_limit() {
        let mut c = Counting {
            inner: std::io::repeat(0),
            count: 0,
            limit: 1 << 20,
        };
        let e = std::io::copy(&mut c, &mut std::io::sink()).unwrap_err();
        assert!(too_big(&e), "{e}");
        assert!(c.count <= (1 << 20) + 65536);
        let mut small = Counting {
            inner: &[0u8; 100][..],
            count: 0,
            limit: 1 << 20,
        };
        assert_eq!(
            std::io::copy(&mut small, &mut std::io::sink()).unwrap(),
            100
        );
    }
}
