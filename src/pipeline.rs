//! The pipeline, end to end: plan → build → verify → layers/image → output. These are the
//! library's entry points for the `build` and `pack` commands; each returns what was
//! written so the CLI can report it.

use std::path::{Path, PathBuf};

use crate::build;
use crate::error::{Error, Result};
use crate::image::{self, ImageName, ImageSet, PlatformBinary};
use crate::options::{ImageOptions, OutputOptions};
use crate::output::{self, Destination};
use crate::plan::{self, CargoOptions, Plan};
use crate::platform::{self, Platform};
use crate::push;
use crate::shell::{human_size, Shell};
use crate::verify;

/// A finished image and where it went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub set: ImageSet,
    /// Where it was written on disk, if it was.
    pub destination: Option<Destination>,
    /// Where it was pushed, if it was.
    pub pushed: Option<push::Pushed>,
}

/// Where an image goes.
#[derive(Debug, Clone)]
pub enum Sink {
    Disk(Destination),
    Registry {
        reference: oci_client::Reference,
        tags: Vec<String>,
        options: push::PushOptions,
    },
}

/// `push`: where to, and how to connect.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// `registry/repository:tag`; default `$MICROIMAGE_REPO/<bin>:<version>`.
    pub reference: Option<String>,
    /// Extra tags for the same repository.
    pub tags: Vec<String>,
    pub options: push::PushOptions,
}

impl PushRequest {
    /// The sink for an image of `bin` whose default tag is `tag`.
    fn sink(&self, bin: &str, tag: &str, images: usize) -> Result<Sink> {
        let reference = match (&self.reference, std::env::var("MICROIMAGE_REPO")) {
            (Some(_), _) if images > 1 => {
                return Err(Error::usage(format!("one REFERENCE given, but {images} images are built"))
                    .with_help("leave REFERENCE out and set MICROIMAGE_REPO: each image goes to $MICROIMAGE_REPO/<bin>:<version>"))
            }
            (Some(r), _) => r.clone(),
            (None, Ok(repo)) if !repo.trim().is_empty() => format!("{}/{bin}:{tag}", repo.trim().trim_end_matches('/')),
            (None, _) => {
                return Err(Error::usage("push needs a destination: a REFERENCE or $MICROIMAGE_REPO")
                    .with_help("e.g. `cargo microimage push ghcr.io/you/app:1.0`, or `MICROIMAGE_REPO=ghcr.io/you cargo microimage push`"))
            }
        };
        for t in &self.tags {
            if t.contains([':', '/', '@'])
                || crate::image::ImageName::parse(&format!("x:{t}")).is_err()
            {
                return Err(Error::usage(format!("--tag `{t}`: with push, --tag adds a tag (like `latest`) to the pushed repository")));
            }
        }
        Ok(Sink::Registry {
            reference: push::parse_reference(&reference)?,
            tags: self.tags.clone(),
            options: self.options.clone(),
        })
    }
}

/// What `build` takes besides the image and output options.
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    pub cargo: CargoOptions,
    /// `--platform`/`--target`; empty means: from Cargo.toml, else this machine's.
    pub platforms: Vec<&'static Platform>,
    /// `--workspace`: one image per binary target of every member.
    pub workspace: bool,
    /// `--exclude`: members left out of `--workspace`.
    pub exclude: Vec<String>,
    /// `push`: send the images to a registry instead of writing them to disk.
    pub push: Option<PushRequest>,
}

/// One image to make: a binary, its settings and where it goes.
struct Job {
    plan: Plan,
    spec: image::ImageSpec,
    platforms: Vec<&'static Platform>,
    sink: Sink,
}

/// `cargo microimage build`: builds each selected binary for its platforms (one cargo
/// invocation per target triple), verifies, packs and writes one image per binary.
pub fn build(
    request: &BuildRequest,
    image: &ImageOptions,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Vec<Outcome>> {
    build::toolchain::warm_up_early(&request.platforms);
    let plans = if request.workspace {
        plan::plan_workspace(&request.cargo, &request.exclude)?
    } else {
        if !request.exclude.is_empty() {
            return Err(Error::usage(
                "--exclude can only be used together with --workspace",
            ));
        }
        vec![plan::plan(&request.cargo)?]
    };
    if plans.len() > 1 {
        if let Some(o) = &output.output {
            if o.extension().is_some_and(|e| e == "tar") {
                return Err(Error::usage(format!(
                    "-o `{}` names one archive, but {} images are built",
                    o.display(),
                    plans.len()
                ))
                .with_help(
                    "with several images, -o names a directory; each image goes to DIR/<bin>",
                ));
            }
        }
    }
    // Resolve every image's settings before compiling anything, so bad settings fail fast.
    let mut jobs = Vec::new();
    for plan in plans {
        let settings = plan.levels.merged();
        let platforms = if !request.platforms.is_empty() {
            request.platforms.clone()
        } else if let Some(from_config) = &settings.platforms {
            platform::resolve(from_config, &[])?
        } else {
            platform::resolve(&[], &[])?
        };
        let options = settings.with_command_line(image);
        let default_dir = plan.target_directory.join("microimage").join(&plan.bin);
        let several = request.workspace;
        let mut spec = options.to_spec(
            ImageName::default_for(&plan.bin, &plan.version)?,
            &plan.bin,
            Some(plan.package_root()),
        )?;
        let mut annotations = plan.annotations.clone();
        annotations.insert("org.opencontainers.image.created".into(), spec.created()?);
        annotations.extend(std::mem::take(&mut spec.annotations));
        spec.annotations = annotations;
        let sink = match &request.push {
            Some(push) => push.sink(&plan.bin, &spec.name.tag, if several { 2 } else { 1 })?,
            None => Sink::Disk(match (&output.output, several) {
                (Some(o), true) => Destination::resolve(None, output.format, &o.join(&plan.bin))?,
                (o, _) => Destination::resolve(o.as_deref(), output.format, &default_dir)?,
            }),
        };
        jobs.push(Job {
            plan,
            spec,
            platforms,
            sink,
        });
    }

    let mut all_platforms: Vec<&'static Platform> =
        jobs.iter().flat_map(|j| j.platforms.clone()).collect();
    all_platforms.sort();
    all_platforms.dedup();
    let mut built: Vec<Vec<PlatformBinary>> = vec![Vec::new(); jobs.len()];
    let wanted = |platform: &Platform| -> Vec<usize> {
        (0..jobs.len())
            .filter(|&i| jobs[i].platforms.contains(&platform))
            .collect()
    };
    let targets: Vec<(&'static Platform, Vec<&Plan>)> = all_platforms
        .iter()
        .map(|&p| (p, wanted(p).iter().map(|&i| &jobs[i].plan).collect()))
        .collect();
    let prepared = build::prepare(&targets, &request.cargo, shell)?;
    for ((platform, plans), prepared) in targets.iter().zip(&prepared) {
        let paths = build::build(plans, &request.cargo, platform, prepared, shell)?;
        for (i, path) in wanted(platform).into_iter().zip(paths) {
            built[i].push(verified(&path, platform, shell)?);
        }
    }
    let mut outcomes = Vec::new();
    for (job, binaries) in jobs.into_iter().zip(built) {
        outcomes.push(pack_and_write(
            &job.spec, &binaries, job.sink, output, shell,
        )?);
    }
    Ok(outcomes)
}

/// What `pack` takes besides the image and output options.
#[derive(Debug, Clone, Default)]
pub struct PackRequest {
    pub binaries: Vec<PathBuf>,
    /// The binary's name in the image (default: the files' common name).
    pub bin_name: Option<String>,
    /// If not empty, the platforms the binaries must be for, exactly.
    pub platforms: Vec<&'static Platform>,
    /// The cargo project whose defaults apply (default: the one around the current directory).
    pub manifest_path: Option<PathBuf>,
    /// `--push REFERENCE`: push instead of writing to disk.
    pub push: Option<PushRequest>,
}

/// `cargo microimage pack`: prebuilt static binaries (one per platform) → image.
///
/// Inside a cargo project with a binary target of the same name, the defaults are those of
/// `build` (tag `<bin>:<version>`, annotations, output under the target dir), so packing
/// the binaries `build` made gives the same image.
pub fn pack(
    request: &PackRequest,
    image: &ImageOptions,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Outcome> {
    let mut binaries: Vec<PlatformBinary> = Vec::new();
    for path in &request.binaries {
        let verdict = verify::inspect(path)?;
        let platform = verdict.require_static()?;
        if !request.platforms.is_empty() && !request.platforms.contains(&platform) {
            return Err(Error::new(format!(
                "`{}` is a binary for {platform} ({}), but --platform asks for {}",
                path.display(),
                verdict.machine,
                list(&request.platforms)
            ))
            .with_help(format!(
                "pass a binary built for {}",
                list(&request.platforms)
            )));
        }
        if let Some(other) = binaries.iter().find(|b| b.platform == platform) {
            return Err(Error::usage(format!(
                "`{}` and `{}` are both binaries for {platform}; an image has one binary per platform",
                other.path.display(),
                path.display()
            )));
        }
        shell.status("Verified", describe(path, platform, verdict.size));
        binaries.push(PlatformBinary {
            platform,
            path: path.clone(),
            size: verdict.size,
        });
    }
    if let Some(missing) = request
        .platforms
        .iter()
        .find(|p| !binaries.iter().any(|b| b.platform == **p))
    {
        return Err(Error::usage(format!(
            "--platform asks for {missing}, but no binary is for it"
        ))
        .with_help(format!("pass a binary built for {}", missing.triple)));
    }
    binaries.sort_by_key(|b| b.platform);
    let bin = match &request.bin_name {
        Some(name) => name.clone(),
        None => bin_name_of(&request.binaries)?,
    };
    if bin.is_empty() || bin.contains('/') || bin == "." || bin == ".." {
        return Err(Error::usage(format!("`{bin}` is not a valid binary name")));
    }
    let project = plan::plan_for_binary(request.manifest_path.as_deref(), &bin)?;
    let (default_name, default_dir, mut annotations) = match &project {
        Some(plan) => (
            ImageName::default_for(&bin, &plan.version)?,
            plan.target_directory.join("microimage").join(&bin),
            plan.annotations.clone(),
        ),
        None => (
            ImageName::default_for(&bin, "latest")?,
            Path::new("target").join("microimage").join(&bin),
            std::collections::BTreeMap::from([(
                "org.opencontainers.image.title".to_string(),
                bin.clone(),
            )]),
        ),
    };
    let mut spec = image.to_spec(
        default_name,
        &bin,
        project.as_ref().map(|p| p.package_root()),
    )?;
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        spec.created()?,
    );
    annotations.extend(std::mem::take(&mut spec.annotations));
    spec.annotations = annotations;
    let sink = match &request.push {
        Some(push) => push.sink(&bin, &spec.name.tag, 1)?,
        None => Sink::Disk(Destination::resolve(
            output.output.as_deref(),
            output.format,
            &default_dir,
        )?),
    };
    pack_and_write(&spec, &binaries, sink, output, shell)
}

fn list(platforms: &[&Platform]) -> String {
    platforms
        .iter()
        .map(|p| p.short_name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of the binary in the image for `pack`: the common file name of the inputs.
fn bin_name_of(paths: &[PathBuf]) -> Result<String> {
    let names: Vec<String> = paths
        .iter()
        .map(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    match names.split_first() {
        Some((first, rest)) if rest.iter().all(|n| n == first) => Ok(first.clone()),
        _ => Err(Error::usage(format!(
            "the binaries have different file names ({}); which name should the image use?",
            names.join(", ")
        ))
        .with_help("pass --bin NAME to name the binary in the image")),
    }
}

fn verified(path: &Path, platform: &'static Platform, shell: &Shell) -> Result<PlatformBinary> {
    let verdict = verify::check(path, platform)?;
    shell.status("Verified", describe(path, platform, verdict.size));
    Ok(PlatformBinary {
        platform,
        path: path.to_path_buf(),
        size: verdict.size,
    })
}

fn describe(path: &Path, platform: &Platform, size: u64) -> String {
    format!(
        "{} (static, {platform}, {})",
        path.display(),
        human_size(size)
    )
}

fn pack_and_write(
    spec: &image::ImageSpec,
    binaries: &[PlatformBinary],
    sink: Sink,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Outcome> {
    let platforms: Vec<String> = binaries.iter().map(|b| b.platform.short_name()).collect();
    shell.status(
        "Packing",
        format!("{} ({})", spec.name, platforms.join(", ")),
    );
    // A bar by bytes on a terminal: large binaries take seconds to compress.
    let bar = shell.progress("Packing", binaries.iter().map(|b| b.size).sum());
    let set = image::assemble_counted(spec, binaries, &|n| bar.inc(n))?;
    drop(bar);
    let (destination, pushed) = match sink {
        Sink::Disk(destination) => {
            output::write(&set, &destination)?;
            (Some(destination), None)
        }
        Sink::Registry {
            reference,
            tags,
            options,
        } => (
            None,
            Some(push::push(&set, &reference, &tags, &options, shell)?),
        ),
    };
    for img in &set.images {
        shell.status(
            "Finished",
            format!(
                "{} {}: {} compressed ({} binary), manifest {}",
                spec.name,
                img.platform,
                human_size(img.compressed_size()),
                human_size(img.binary_size),
                img.manifest.digest
            ),
        );
    }
    if let Some(engine) = output.load {
        output::load::load(&set, engine, shell)?;
    }
    Ok(Outcome {
        set,
        destination,
        pushed,
    })
}
