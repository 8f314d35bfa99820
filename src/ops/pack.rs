//! `cargo microimage pack`: prebuilt static binaries → an image.

use std::path::{Path, PathBuf};

use super::{
    current_dir, describe, list, pack_and_deliver, resolve_image, sinks, with_base, with_git,
    Bases, Outcome, Packed, PushRequest,
};
use crate::error::{Error, Result};
use crate::image::{self, ImageName, PlatformBinary};
use crate::layers::cache::LayerCache;
use crate::plan::cache::PlanCache;
use crate::plan::{self, CargoOptions, Plan};
use crate::platform::Platform;
use crate::sbom;
use crate::settings::{self, ImageArgs, Levels};
use crate::shell::Shell;
use crate::sinks::{Destination, OutputOptions};
use crate::verify;

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
    /// `--sign-key`, read (and opened) before anything is made: signs what is pushed.
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
}

/// `cargo microimage pack`: prebuilt static binaries (one per platform) → image.
///
/// Inside a cargo project with a binary target of the same name, the settings are those of
/// `build` — Cargo.toml's `[*.metadata.microimage]` levels, tag `<bin>:<version>`,
/// annotations, output under the target dir — so packing the binaries `build` made gives
/// the same image.
pub fn pack(
    request: &PackRequest,
    image: &ImageArgs,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Outcome> {
    if request.push.is_none() {
        super::one_name(&image.tags)?;
    }
    let push = request.push.clone().map(|mut push| {
        push.sign = request.sign.clone().or(push.sign);
        push
    });
    let binaries = checked_binaries(request, shell)?;
    let bin = bin_name(request)?;
    let cwd = current_dir()?;
    let guess = layer_guess(image);
    // The registry handshake does not wait for the project either (the repository does
    // not depend on the tag, which the settings may still change).
    if let Some(Ok(target)) = push.as_ref().map(|p| p.target(&bin, "latest", 1)) {
        crate::registry::connection::start_early(&target.reference, &target.options, shell);
    }
    let (project, made, facts) = project_and_layers(request, &binaries, &bin, &cwd, guess, shell)?;
    let (cx, levels, default_dir) = context(project.as_ref(), &bin, &cwd)?;
    let settings::Resolved {
        mut spec,
        sbom,
        provenance,
        base,
        ..
    } = resolve_image(image, &levels, &cx, shell)?;
    let mut sinks = sinks(push.as_ref(), output, &bin, &spec, 1, || {
        Destination::resolve(output.output.as_deref(), output.format, &default_dir)
    })?;
    if let Some(base) = &base {
        on_base(&mut spec, &mut sinks, base, &binaries, request, shell)?;
    }
    let cache = project
        .as_ref()
        .map(|p| LayerCache::in_target_dir(&p.target_directory));
    // The layers made meanwhile, if the settings turned out to be the guessed ones.
    let made = match (spec.source_date_epoch, spec.codec()) == guess {
        true => made.into_iter().map(Some).collect(),
        false => Vec::new(),
    };
    let packed = Packed {
        cache: cache.as_ref(),
        made,
        sbom: &sbom,
        contents: recorded_contents(&binaries, project.as_ref())?,
        provenance,
        facts,
        sign: request
            .sign
            .as_deref()
            .or_else(|| request.push.as_ref().and_then(|p| p.sign.as_deref())),
    };
    pack_and_deliver(&spec, &binaries, &sinks, packed, shell)
}

/// Puts the image on `base`, read for the binaries' platforms.
fn on_base(
    spec: &mut crate::image::ImageSpec,
    sinks: &mut [crate::sinks::Sink],
    base: &settings::BaseRequest,
    binaries: &[PlatformBinary],
    request: &PackRequest,
    shell: &Shell,
) -> Result<()> {
    let platforms: Vec<&'static Platform> = binaries.iter().map(|b| b.platform).collect();
    let connect = request
        .push
        .as_ref()
        .map(|p| p.options.clone())
        .unwrap_or_default();
    let from = Bases::default().read(base, &platforms, sinks, &connect, shell)?;
    with_base(spec, sinks, from);
    Ok(())
}

/// Each binary checked (static, for a platform `--platform` allows, one per platform),
/// in the platform table's order.
fn checked_binaries(request: &PackRequest, shell: &Shell) -> Result<Vec<PlatformBinary>> {
    let mut binaries: Vec<PlatformBinary> = Vec::new();
    for path in &request.binaries {
        let verdict = verify::inspect(path)?;
        let platform = verdict.require_static()?;
        if !request.platforms.is_empty() && !request.platforms.contains(&platform) {
            return Err(Error::verify(format!(
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
        // pack cannot change a prebuilt binary's allocator or thread stack, but it can say
        // what they cost.
        for warning in verify::runtime_of(&verdict).warnings(path) {
            shell.warn(warning);
        }
        binaries.push(PlatformBinary::verified(&verdict, platform));
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
    Ok(binaries)
}

/// The binary's name in the image: `--bin`, else the files' common name.
fn bin_name(request: &PackRequest) -> Result<String> {
    let bin = match &request.bin_name {
        Some(name) => name.clone(),
        None => bin_name_of(&request.binaries)?,
    };
    if bin.is_empty() || bin.contains('/') || bin == "." || bin == ".." {
        return Err(Error::usage(format!("`{bin}` is not a valid binary name")));
    }
    Ok(bin)
}

/// The source date epoch and codec the app layers are made with while the project is
/// read: the command line's, or the defaults.
fn layer_guess(image: &ImageArgs) -> (u64, crate::layers::Codec) {
    let compression = image.compression.unwrap_or_default();
    // A level out of range is refused with the settings (as a usage error, naming where it
    // came from); meanwhile the layers are made at the default.
    let level = image
        .compression_level
        .filter(|n| compression.levels().contains(n));
    (
        image.source_date_epoch.unwrap_or(0),
        crate::layers::Codec::new(compression, level),
    )
}

/// Reads the project (`cargo metadata`) and, at the same time, makes the app layers with
/// the `guess`ed settings and hashes the binaries for the provenance: none depends on the
/// others.
fn project_and_layers(
    request: &PackRequest,
    binaries: &[PlatformBinary],
    bin: &str,
    cwd: &Path,
    guess: (u64, crate::layers::Codec),
    shell: &Shell,
) -> Result<(
    Option<Plan>,
    Vec<crate::layers::Layer>,
    Vec<crate::provenance::Facts>,
)> {
    let bar = shell.progress("Packing", binaries.iter().map(|b| b.size).sum());
    let (project, made, facts) = std::thread::scope(|scope| {
        let project = scope.spawn(|| project_of(request.manifest_path.as_deref(), bin, cwd));
        let facts = scope.spawn(|| packed_facts(binaries));
        let made: Result<Vec<_>> = binaries
            .iter()
            .map(|b| image::app_layer(bin, b, guess.0, guess.1, &|n| bar.inc(n)))
            .collect();
        let project = project
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let facts = facts
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (project, made, facts)
    });
    drop(bar);
    Ok((project?, made?, facts?))
}

/// The settings' context, levels and default output: the project's when `pack` runs in
/// one that has this binary, else a bare one (`<bin>:latest`, no Cargo.toml levels).
fn context<'a>(
    project: Option<&Plan>,
    bin: &'a str,
    cwd: &'a Path,
) -> Result<(settings::Context<'a>, Levels, PathBuf)> {
    Ok(match project {
        Some(plan) => (
            settings::Context {
                default_name: ImageName::default_for(bin, &plan.version)?,
                bin,
                annotations: with_git(&plan.annotations, plan.package_root()),
                cwd,
            },
            plan.levels.clone(),
            plan.target_directory.join("microimage").join(bin),
        ),
        None => (
            settings::Context {
                default_name: ImageName::default_for(bin, "latest")?,
                bin,
                annotations: std::collections::BTreeMap::from([(
                    "org.opencontainers.image.title".to_string(),
                    bin.to_string(),
                )]),
                cwd,
            },
            Levels::default(),
            Path::new("target").join("microimage").join(bin),
        ),
    })
}

/// The crates each prebuilt binary recorded (cargo-auditable data), for its SBOM.
fn recorded_contents(
    binaries: &[PlatformBinary],
    project: Option<&Plan>,
) -> Result<Vec<sbom::Contents>> {
    binaries
        .iter()
        .map(|b| {
            Ok(sbom::Contents {
                crates: crate::build::auditable::read(&b.file)?
                    .map(|info| recorded_crates(&info, project))
                    .unwrap_or_default(),
                toolchain: None,
            })
        })
        .collect()
}

/// For the provenance: what was packed, by content.
fn packed_facts(binaries: &[PlatformBinary]) -> Result<Vec<crate::provenance::Facts>> {
    binaries
        .iter()
        .map(|b| {
            let sum = crate::blob::sha256_open(&b.file, b.size).map_err(|e| {
                Error::input(format!("reading {} failed: {e}", b.path.display())).with_source(e)
            })?;
            Ok(crate::provenance::Facts {
                binary_sha256: Some(crate::blob::hex(&sum).to_string()),
                ..Default::default()
            })
        })
        .collect()
}

/// The project `pack` takes its settings from: what `cargo metadata` answered last time
/// for this binary here, if nothing it depends on changed (plan::cache), else asked now.
fn project_of(manifest_path: Option<&Path>, bin: &str, cwd: &Path) -> Result<Option<Plan>> {
    let options = CargoOptions {
        manifest_path: manifest_path.map(Path::to_path_buf),
        ..CargoOptions::default()
    };
    let cache = PlanCache::for_request(&options, &format!("pack {bin}"), cwd);
    if let Some(mut answers) = cache.load().filter(|a| a.plans.len() == 1) {
        return Ok(answers.plans.pop());
    }
    let plan = plan::plan_for_binary(manifest_path, bin)?;
    if let Some(plan) = &plan {
        cache.store(&plan::cache::Answers {
            plans: vec![plan.clone()],
            ..Default::default()
        });
    }
    Ok(plan)
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

/// The crates a prebuilt binary recorded, as SBOM entries; inside a cargo project, with
/// the checksums its Cargo.lock has for them.
fn recorded_crates(
    info: &auditable_serde::VersionInfo,
    project: Option<&Plan>,
) -> Vec<crate::plan::graph::Crate> {
    let lock = project.map(|p| plan::graph::lock_checksums(&p.workspace_root.join("Cargo.lock")));
    // The root first, as the graph lists them.
    let mut order: Vec<usize> = (0..info.packages.len()).collect();
    order.sort_by_key(|&i| !info.packages[i].root);
    let place: Vec<usize> = {
        let mut p = vec![0; order.len()];
        for (new, &old) in order.iter().enumerate() {
            p[old] = new;
        }
        p
    };
    order
        .iter()
        .map(|&i| {
            let p = &info.packages[i];
            let source = String::from(p.source.clone());
            let checksum = lock.as_ref().and_then(|l| {
                l.iter()
                    .find(|((n, v, _), _)| *n == p.name && *v == p.version.to_string())
                    .map(|(_, sum)| sum.clone())
            });
            crate::plan::graph::Crate {
                name: p.name.clone(),
                version: p.version.to_string(),
                source,
                source_id: None,
                license: None,
                checksum,
                dependencies: p.dependencies.iter().map(|&d| place[d]).collect(),
            }
        })
        .collect()
}
