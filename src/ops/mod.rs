//! The commands, one file each (as cargo's `ops/`): [`build`], [`push`], [`pack`],
//! [`merge`], [`inspect`] and [`verify`]. Each takes the options the CLI parsed, runs the
//! stages in order — settings → plan → build → verify → layers/image → sinks — and returns
//! what was made and where it went; the CLI only parses, dispatches and prints. The steps
//! several commands share are here (packing and delivering an image, the sinks of one).
//!
//! `build` and `pack` resolve their image settings through the same
//! [`settings::resolve`], so packing the binaries `build` made, in the same project, gives
//! the same image.

pub mod apply;
pub mod build;
pub mod inspect;
pub mod merge;
pub mod pack;
pub mod push;
pub mod resolve;
pub mod verify;

pub use build::{build, BuildRequest};
pub use merge::{merge, MergeRequest};
pub use pack::{pack, PackRequest};
pub use push::PushRequest;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::image::{self, ImageSet, ImageSpec, PlatformBinary};
use crate::layers::{self, cache::LayerCache};
use crate::plan::{self};
use crate::platform::Platform;
use crate::registry::ConnectOptions;
use crate::sbom;
use crate::settings::{self, ImageArgs, Levels, Origin};
use crate::shell::{human_size, Shell};
use crate::sinks::registry::Pushed;
use crate::sinks::{Destination, OutputOptions, Sink};

/// A finished image and where it went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub set: ImageSet,
    /// Where it was written on disk, if it was.
    pub destination: Option<Destination>,
    /// Where it was pushed, if it was.
    pub pushed: Option<Pushed>,
}

/// An image written to disk has one name: `--tag` at most once (with `push`, `--tag`
/// adds tags instead).
fn one_name(tags: &[String]) -> Result<()> {
    if tags.len() > 1 {
        return Err(Error::usage(format!(
            "--tag given {} times, but an image written to disk has one name",
            tags.len()
        ))
        .with_help("pass one --tag NAME[:TAG]; several tags are for `push` (or `--push`)"));
    }
    Ok(())
}

/// The sinks of one image: the disk or a registry, then `--load` (ko's MultiPublisher:
/// one image, several destinations).
fn sinks(
    push: Option<&PushRequest>,
    output: &OutputOptions,
    bin: &str,
    spec: &ImageSpec,
    images: usize,
    disk: impl FnOnce() -> Result<Destination>,
) -> Result<Vec<Sink>> {
    let mut sinks = vec![match push {
        Some(push) => Sink::Registry(push.target(bin, &spec.name.tag, images)?),
        None => Sink::Disk(disk()?),
    }];
    sinks.extend(output.load.map(Sink::Load));
    Ok(sinks)
}

/// Cargo.toml's annotations and git's, for the package in `dir`.
fn with_git(
    annotations: &std::collections::BTreeMap<String, String>,
    dir: &Path,
) -> std::collections::BTreeMap<String, String> {
    let mut all = annotations.clone();
    all.extend(plan::git_annotations(dir));
    all
}

fn current_dir() -> Result<PathBuf> {
    std::env::current_dir().map_err(|e| {
        Error::build(format!("reading the current directory failed: {e}")).with_source(e)
    })
}

/// Resolves the image settings of one binary and says, with `-v`, where the ones that are
/// not defaults came from.
fn resolve_image(
    args: &ImageArgs,
    levels: &Levels,
    cx: &settings::Context,
    shell: &Shell,
) -> Result<settings::Resolved> {
    let resolved = settings::resolve(args, levels, cx)?;
    for (key, origin) in &resolved.origins {
        if let Origin::Manifest { .. } = origin {
            shell.verbose("Setting", format!("{key} for {} from {origin}", cx.bin));
        }
    }
    Ok(resolved)
}

fn list(platforms: &[&Platform]) -> String {
    platforms
        .iter()
        .map(|p| p.short_name())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn verified(
    path: &Path,
    opened: Option<std::fs::File>,
    platform: &'static Platform,
    shell: &Shell,
) -> Result<PlatformBinary> {
    let verdict = crate::verify::check_opened(path, opened, platform)?;
    shell.status("Verified", describe(path, platform, verdict.size));
    Ok(PlatformBinary::verified(&verdict, platform))
}

pub(crate) fn describe(path: &Path, platform: &Platform, size: u64) -> String {
    format!(
        "{} (static, {platform}, {})",
        path.display(),
        human_size(size)
    )
}

/// How [`pack_and_deliver`] makes an image besides its spec and binaries.
struct Packed<'a> {
    /// App layers from here when the same binary was packed the same way before.
    cache: Option<&'a LayerCache>,
    /// App layers made already (see `image::Packing::made`).
    made: Vec<Option<layers::Layer>>,
    /// The SBOMs to attach, and what each platform's binary holds.
    sbom: &'a [sbom::Format],
    contents: Vec<sbom::Contents>,
    /// The provenance to attach, what is known of how each platform's binary was made,
    /// and the key that signs it (`--sign-key`).
    provenance: settings::Provenance,
    facts: Vec<crate::provenance::Facts>,
    sign: Option<&'a crate::sign::Key>,
}

/// Makes the image of `binaries` and hands it to every sink.
fn pack_and_deliver(
    spec: &ImageSpec,
    binaries: &[PlatformBinary],
    sinks: &[Sink],
    packed: Packed,
    shell: &Shell,
) -> Result<Outcome> {
    let Packed {
        cache,
        made,
        sbom: formats,
        contents,
        provenance,
        facts,
        sign,
    } = packed;
    let mut set = assemble(spec, binaries, cache, made, shell)?;
    attach_sboms(&mut set, spec, binaries, &contents, formats, shell)?;
    if provenance == settings::Provenance::Slsa {
        attach_provenance(&mut set, spec, &contents, &facts, sign, shell)?;
    }
    if let Some(key) = sign {
        sign_set(&mut set, key, shell)?;
    }
    let delivered = crate::sinks::deliver(&set, sinks, shell)?;
    for (img, bin) in set.images.iter().zip(binaries) {
        shell.status(
            "Finished",
            format!(
                "{} {}: {} compressed ({} binary), manifest {}",
                spec.name,
                img.platform,
                human_size(img.compressed_size()),
                human_size(bin.size),
                img.manifest.digest
            ),
        );
    }
    Ok(Outcome {
        set,
        destination: delivered.destination,
        pushed: delivered.pushed,
    })
}

/// The image set of `binaries` (layers, configs, manifests, index), with a bar by bytes on
/// a terminal for the layers still to compress: large binaries take seconds.
fn assemble(
    spec: &ImageSpec,
    binaries: &[PlatformBinary],
    cache: Option<&LayerCache>,
    made: Vec<Option<layers::Layer>>,
    shell: &Shell,
) -> Result<ImageSet> {
    let platforms: Vec<String> = binaries.iter().map(|b| b.platform.short_name()).collect();
    shell.status(
        "Packing",
        format!("{} ({})", spec.name, platforms.join(", ")),
    );
    let remaining = binaries
        .iter()
        .zip(made.iter().chain(std::iter::repeat(&None)))
        .filter(|(_, m)| m.is_none())
        .map(|(b, _)| b.size)
        .sum();
    let bar = shell.progress("Packing", remaining);
    let progress = |n| bar.inc(n);
    image::assemble_with(
        spec,
        binaries,
        &image::Packing {
            progress: Some(&progress),
            cache,
            made,
        },
    )
}

/// Attaches the SBOMs in `formats` to each platform image, and says so (and which
/// binaries hold no dependency data to list).
fn attach_sboms(
    set: &mut ImageSet,
    spec: &ImageSpec,
    binaries: &[PlatformBinary],
    contents: &[sbom::Contents],
    formats: &[sbom::Format],
    shell: &Shell,
) -> Result<()> {
    sbom::attach(set, spec, contents, formats)?;
    if formats.is_empty() {
        return Ok(());
    }
    for (bin, contents) in binaries.iter().zip(contents) {
        if contents.crates.is_empty() {
            shell.warn(format!(
                "{} holds no dependency data (it was not built by cargo microimage or cargo auditable): its SBOM lists only the image's base contents",
                bin.path.display()
            ));
        }
    }
    let names: Vec<&str> = formats.iter().map(|f| f.name()).collect();
    let counts: Vec<String> = set
        .images
        .iter()
        .zip(contents)
        .map(|(img, c)| format!("{}: {} crates", img.platform, c.crates.len()))
        .collect();
    shell.status(
        "Attached",
        format!(
            "{} SBOM{} ({})",
            names.join(" and "),
            if names.len() > 1 { "s" } else { "" },
            counts.join(", ")
        ),
    );
    Ok(())
}

/// Attaches a SLSA provenance statement to each platform image (signed with `sign`), and
/// says so.
fn attach_provenance(
    set: &mut ImageSet,
    spec: &ImageSpec,
    contents: &[sbom::Contents],
    facts: &[crate::provenance::Facts],
    sign: Option<&crate::sign::Key>,
    shell: &Shell,
) -> Result<()> {
    crate::provenance::attach(set, spec, contents, facts, sign)?;
    shell.status(
        "Attached",
        match sign {
            Some(key) => format!(
                "SLSA provenance, signed with {} (DSSE in a Sigstore bundle)",
                key.path.display()
            ),
            None => "SLSA provenance (unsigned: --sign-key signs it)".to_string(),
        },
    );
    Ok(())
}

/// Signs the index and every platform manifest of `set` with `key` (cosign 3 bundles, see
/// `crate::provenance::sign`), and says so.
fn sign_set(set: &mut ImageSet, key: &crate::sign::Key, shell: &Shell) -> Result<()> {
    crate::provenance::sign(set, key)?;
    shell.status(
        "Signed",
        format!(
            "the index and {} platform manifest{} with {} (cosign 3 bundles, attached as referrers)",
            set.images.len(),
            if set.images.len() == 1 { "" } else { "s" },
            key.path.display()
        ),
    );
    Ok(())
}

/// The base images of a run, each read once per set of platforms.
#[derive(Default)]
struct Bases {
    read: Vec<(String, Vec<&'static Platform>, bool, ImageFromBase)>,
}

type ImageFromBase = crate::image::FromImage;

impl Bases {
    /// The base of `request` for `platforms`: read now, or as read before in this run. Its
    /// registry layers are downloaded unless every destination is its own registry.
    fn read(
        &mut self,
        request: &settings::BaseRequest,
        platforms: &[&'static Platform],
        sinks: &[Sink],
        connect: &ConnectOptions,
        shell: &Shell,
    ) -> Result<ImageFromBase> {
        let registry = match &request.source {
            crate::sources::Source::Remote(r) => r
                .parse::<oci_client::Reference>()
                .ok()
                .map(|r| r.registry().to_string()),
            crate::sources::Source::Local { .. } => None,
        };
        let mounted = registry.is_some()
            && sinks.iter().all(|s| match s {
                Sink::Registry(t) => Some(t.reference.registry()) == registry.as_deref(),
                _ => false,
            });
        let mut wanted = platforms.to_vec();
        wanted.sort();
        if let Some((.., from)) = self
            .read
            .iter()
            .find(|(name, p, m, _)| *name == request.name && *p == wanted && *m == mounted)
        {
            return Ok(from.clone());
        }
        let layers = if mounted {
            crate::sources::Layers::Describe
        } else {
            crate::sources::Layers::Download
        };
        let from = crate::sources::base::read(
            &request.name,
            &request.source,
            &wanted,
            &crate::sources::Options {
                connect,
                shell,
                layers,
                attachments: false,
            },
        )?;
        let digest = from
            .digest
            .as_deref()
            .map(|d| format!(" ({d})"))
            .unwrap_or_default();
        shell.status(
            "Base",
            format!("{}{digest} for {}", request.name, list(&wanted)),
        );
        self.read
            .push((request.name.clone(), wanted, mounted, from.clone()));
        Ok(from)
    }
}

/// Puts the app on `from`: the spec takes it, and pushes to its registry may mount its
/// layers from its repository.
fn with_base(spec: &mut ImageSpec, sinks: &mut [Sink], from: ImageFromBase) {
    if let Some((registry, repository)) = &from.remote {
        for sink in sinks.iter_mut() {
            if let Sink::Registry(target) = sink {
                if target.reference.registry() == registry {
                    for layer in from.platforms.iter().flat_map(|p| &p.layers) {
                        let at = target
                            .mounts
                            .entry(layer.blob.digest.to_string())
                            .or_default();
                        if !at.contains(repository) {
                            at.push(repository.clone());
                        }
                    }
                }
            }
        }
    }
    spec.from = Some(from);
}
