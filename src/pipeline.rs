//! The pipeline, end to end: plan → build → verify → layers/image → output. These are the
//! library's entry points for the `build` and `pack` commands; each returns what was
//! written so the CLI can report it.

use std::path::{Path, PathBuf};

use crate::build;
use crate::error::{Error, Result};
use crate::image::{self, ImageName, ImageSet, PlatformBinary};
use crate::options::{ImageOptions, OutputOptions};
use crate::output::{self, Destination};
use crate::plan::{self, CargoOptions};
use crate::platform::Platform;
use crate::shell::{human_size, Shell};
use crate::verify;

/// A finished image and where it was written.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub set: ImageSet,
    pub destination: Destination,
}

/// `cargo microimage build`: builds the crate for each platform, verifies, packs, writes.
pub fn build(
    cargo: &CargoOptions,
    platforms: &[&'static Platform],
    image: &ImageOptions,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Outcome> {
    let plan = plan::plan(cargo)?;
    let default_dir = plan.target_directory.join("microimage").join(&plan.bin);
    let destination = Destination::resolve(output.output.as_deref(), output.format, &default_dir)?;
    let mut spec = image.to_spec(ImageName::default_for(&plan.bin, &plan.version)?, &plan.bin)?;
    let mut annotations = plan.annotations.clone();
    annotations.insert("org.opencontainers.image.created".into(), spec.created()?);
    annotations.extend(std::mem::take(&mut spec.annotations));
    spec.annotations = annotations;

    let mut binaries = Vec::new();
    for &platform in platforms {
        let path = build::build(&plan, cargo, platform, shell)?;
        binaries.push(verified(&path, platform, shell)?);
    }
    pack_and_write(&spec, &binaries, destination, shell)
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
    let destination = Destination::resolve(output.output.as_deref(), output.format, &default_dir)?;
    let mut spec = image.to_spec(default_name, &bin)?;
    annotations.insert(
        "org.opencontainers.image.created".to_string(),
        spec.created()?,
    );
    annotations.extend(std::mem::take(&mut spec.annotations));
    spec.annotations = annotations;
    pack_and_write(&spec, &binaries, destination, shell)
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
    destination: Destination,
    shell: &Shell,
) -> Result<Outcome> {
    let platforms: Vec<String> = binaries.iter().map(|b| b.platform.short_name()).collect();
    shell.status(
        "Packing",
        format!("{} ({})", spec.name, platforms.join(", ")),
    );
    let set = image::assemble(spec, binaries)?;
    output::write(&set, &destination)?;
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
    Ok(Outcome { set, destination })
}
