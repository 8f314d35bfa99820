//! The pipeline, end to end: settings → plan → build → verify → layers/image → sinks.
//! These are the library's entry points for the `build`, `push` and `pack` commands; each
//! returns what was made and where it went, so the CLI can report it.
//!
//! `build` and `pack` resolve their image settings through the same
//! [`settings::resolve`], so packing the binaries `build` made, in the same project, gives
//! the same image.

use std::path::{Path, PathBuf};

use crate::build;
use crate::error::{Error, Result};
use crate::image::{self, ImageName, ImageSet, ImageSpec, PlatformBinary};
use crate::layers::{self, cache::LayerCache};
use crate::plan::cache::PlanCache;
use crate::plan::{self, CargoOptions, Plan};
use crate::platform::Platform;
use crate::registry::ConnectOptions;
use crate::sbom;
use crate::settings::{self, ImageArgs, Levels, Origin};
use crate::shell::{human_size, Shell};
use crate::sinks::registry::{Pushed, Target};
use crate::sinks::{Destination, OutputOptions, Sink};
use crate::verify;

/// A finished image and where it went.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub set: ImageSet,
    /// Where it was written on disk, if it was.
    pub destination: Option<Destination>,
    /// Where it was pushed, if it was.
    pub pushed: Option<Pushed>,
}

/// `push`: where to, and how to connect.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// `registry/repository:tag` as given.
    pub reference: Option<String>,
    /// `$MICROIMAGE_REPO` (read by the CLI with its other defaults): without a reference,
    /// each image goes to `<repository>/<bin>:<tag>`.
    pub default_repository: Option<String>,
    /// Extra tags for the same repository.
    pub tags: Vec<String>,
    pub options: ConnectOptions,
    /// `--sign-key`, read (and opened) before anything is built.
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
    /// `--by-digest`: no tag; REFERENCE is `registry/repository`.
    pub by_digest: bool,
}

impl PushRequest {
    /// The registry target for an image of `bin` whose tag is `tag`, `images` being the
    /// number of images this run makes.
    fn target(&self, bin: &str, tag: &str, images: usize) -> Result<Target> {
        let reference = match (&self.reference, &self.default_repository) {
            (Some(_), _) if images > 1 => {
                return Err(Error::usage(format!("one REFERENCE given, but {images} images are built"))
                    .with_help("leave REFERENCE out and set MICROIMAGE_REPO: each image goes to $MICROIMAGE_REPO/<bin>:<version>"))
            }
            (Some(r), _) => r.clone(),
            (None, Some(repo)) if !repo.trim().is_empty() && self.by_digest => {
                format!("{}/{bin}", repo.trim().trim_end_matches('/'))
            }
            (None, Some(repo)) if !repo.trim().is_empty() => {
                format!("{}/{bin}:{tag}", repo.trim().trim_end_matches('/'))
            }
            (None, _) => {
                return Err(Error::usage("push needs a destination: a REFERENCE or $MICROIMAGE_REPO")
                    .with_help("e.g. `cargo microimage push ghcr.io/you/app:1.0`, or `MICROIMAGE_REPO=ghcr.io/you cargo microimage push`"))
            }
        };
        for t in &self.tags {
            if t.contains([':', '/', '@']) || ImageName::parse(&format!("x:{t}")).is_err() {
                return Err(Error::usage(format!("--tag `{t}`: with push, --tag adds a tag (like `latest`) to the pushed repository")));
            }
        }
        if self.by_digest && !self.tags.is_empty() {
            return Err(Error::usage(
                "--by-digest pushes no tag, but --tag asks for one",
            )
            .with_help("tag the image when its platforms are merged: `cargo microimage merge --push REF:TAG --tag T …`, or drop --by-digest"));
        }
        let reference = if self.by_digest {
            crate::registry::reference::parse_repository(&reference)?
        } else {
            crate::registry::reference::parse_reference(&reference)?
        };
        Ok(Target {
            reference,
            tags: self.tags.clone(),
            options: self.options.clone(),
            sign: self.sign.clone(),
            by_digest: self.by_digest,
            mounts: Default::default(),
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
    spec: ImageSpec,
    sbom: Vec<sbom::Format>,
    runtime: settings::Runtime,
    base: Option<settings::BaseRequest>,
    platforms: Vec<&'static Platform>,
    sinks: Vec<Sink>,
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
fn resolve(
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

/// `cargo microimage build` (and `push`): builds each selected binary for its platforms
/// (one cargo invocation per target triple), verifies, packs and delivers one image per
/// binary.
pub fn build(
    request: &BuildRequest,
    image: &ImageArgs,
    output: &OutputOptions,
    shell: &Shell,
) -> Result<Vec<Outcome>> {
    build::toolchain::warm_up_early(&request.platforms);
    if !request.workspace && !request.exclude.is_empty() {
        return Err(Error::usage(
            "--exclude can only be used together with --workspace",
        ));
    }
    let cwd = current_dir()?;
    // What cargo answered last time, if nothing it depends on changed (plan::cache).
    let what = match request.workspace {
        true => format!("build --workspace --exclude {:?}", request.exclude),
        false => "build".to_string(),
    };
    let cache = PlanCache::for_request(&request.cargo, &what, &cwd);
    let known = cache.load();
    let plans = match &known {
        Some(answers) => {
            shell.verbose(
                "Fresh",
                "cargo's answers from the last run (nothing they depend on changed)",
            );
            answers.plans.clone()
        }
        None if request.workspace => plan::plan_workspace(&request.cargo, &request.exclude)?,
        None => vec![plan::plan(&request.cargo)?],
    };
    let mut known = known.unwrap_or_default();
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
    let images = plans.len();
    let mut jobs = Vec::new();
    for plan in plans {
        let cx = settings::Context {
            default_name: ImageName::default_for(&plan.bin, &plan.version)?,
            bin: &plan.bin,
            annotations: with_git(&plan.annotations, plan.package_root()),
            cwd: &cwd,
        };
        let settings::Resolved {
            spec,
            sbom,
            runtime,
            base,
            ..
        } = resolve(image, &plan.levels, &cx, shell)?;
        let platforms = settings::platforms(&request.platforms, &plan.levels)?;
        let default_dir = plan.target_directory.join("microimage").join(&plan.bin);
        let sinks = sinks(
            request.push.as_ref(),
            output,
            &plan.bin,
            &spec,
            images,
            || match (&output.output, request.workspace) {
                (Some(o), true) => Destination::resolve(None, output.format, &o.join(&plan.bin)),
                (o, _) => Destination::resolve(o.as_deref(), output.format, &default_dir),
            },
        )?;
        jobs.push(Job {
            plan,
            spec,
            sbom,
            runtime,
            base,
            platforms,
            sinks,
        });
    }

    // The base images, read before anything is compiled (a missing platform fails fast).
    let connect = request
        .push
        .as_ref()
        .map(|p| p.options.clone())
        .unwrap_or_default();
    let mut bases = Bases::default();
    for job in &mut jobs {
        if let Some(base) = &job.base {
            let from = bases.read(base, &job.platforms, &job.sinks, &connect, shell)?;
            with_base(&mut job.spec, &mut job.sinks, from);
        }
    }

    let mut all_platforms: Vec<&'static Platform> =
        jobs.iter().flat_map(|j| j.platforms.clone()).collect();
    all_platforms.sort();
    all_platforms.dedup();
    let mut built: Vec<Vec<PlatformBinary>> = vec![Vec::new(); jobs.len()];
    let mut contents: Vec<Vec<sbom::Contents>> = vec![Vec::new(); jobs.len()];
    let wanted = |platform: &Platform| -> Vec<usize> {
        (0..jobs.len())
            .filter(|&i| jobs[i].platforms.contains(&platform))
            .collect()
    };
    let targets: Vec<(&'static Platform, Vec<&Plan>)> = all_platforms
        .iter()
        .map(|&p| (p, wanted(p).iter().map(|&i| &jobs[i].plan).collect()))
        .collect();
    let (prepared, facts) = build::prepare(&targets, &request.cargo, &known, shell)?;
    let learned = known.sysroot.is_none()
        || known.toolchain.is_none()
        || targets
            .iter()
            .any(|(p, _)| !known.graphs.contains_key(p.triple));
    if learned {
        known.plans = jobs.iter().map(|j| j.plan.clone()).collect();
        known.sysroot = Some(facts.sysroot.clone());
        known.toolchain = facts.toolchain.clone();
        for ((platform, _), p) in targets.iter().zip(&prepared) {
            known
                .graphs
                .insert(platform.triple.to_string(), p.graph.clone());
        }
        cache.store(&known);
    }
    // What each binary links besides its own code (compiled once per target and cached).
    let linked = std::thread::scope(|scope| {
        let work: Vec<_> = targets
            .iter()
            .zip(&prepared)
            .map(|((platform, _), prepared)| {
                let jobs = &jobs;
                let facts = &facts;
                scope.spawn(move || {
                    let wanted = wanted(platform);
                    let requests: Vec<build::runtime::Request> = wanted
                        .iter()
                        .map(|&i| build::runtime::Request {
                            bin: &jobs[i].plan.bin,
                            runtime: &jobs[i].runtime,
                            crates: crates_of(&prepared.graph, &jobs[i].plan),
                        })
                        .collect();
                    build::runtime::prepare(
                        platform,
                        &requests,
                        &prepared.toolchain,
                        facts.toolchain.as_deref(),
                        &request.cargo,
                        &jobs[wanted[0]].plan.target_directory,
                        shell,
                    )
                })
            })
            .collect();
        work.into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Result<Vec<_>>>()
    })?;
    for (((platform, plans), prepared), linked) in targets.iter().zip(&prepared).zip(linked) {
        let links: Vec<build::Link> = wanted(platform)
            .iter()
            .zip(linked)
            .map(|(&i, runtime)| {
                let crates = runtime.crates(crates_of(&prepared.graph, &jobs[i].plan));
                build::Link {
                    additions: build::wrapper::Additions {
                        crates: jobs[i].spec.auditable.then_some(crates),
                        link_args: runtime.args.clone(),
                        link_key: runtime.key.clone(),
                    },
                    runtime: Some(runtime),
                }
            })
            .collect();
        let binaries = build::build(plans, &links, &request.cargo, platform, prepared, shell)?;
        for ((i, binary), link) in wanted(platform).into_iter().zip(binaries).zip(links) {
            built[i].push(verified(&binary.path, Some(binary.file), platform, shell)?);
            let runtime = link.runtime.as_ref();
            contents[i].push(sbom::Contents {
                crates: runtime.map_or_else(
                    || crates_of(&prepared.graph, &jobs[i].plan).to_vec(),
                    |r| r.crates(crates_of(&prepared.graph, &jobs[i].plan)),
                ),
                toolchain: facts.toolchain.clone(),
            });
        }
    }
    jobs.into_iter()
        .zip(built)
        .zip(contents)
        .map(|((job, binaries), contents)| {
            let cache = LayerCache::in_target_dir(&job.plan.target_directory);
            pack_and_deliver(
                &job.spec,
                &binaries,
                &job.sinks,
                Packed {
                    cache: Some(&cache),
                    made: Vec::new(),
                    sbom: &job.sbom,
                    contents,
                },
                shell,
            )
        })
        .collect()
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

/// The crates linked into `plan`'s binary, its package first (empty if unknown).
fn crates_of<'a>(graph: &'a plan::graph::Graph, plan: &Plan) -> &'a [plan::graph::Crate] {
    graph
        .crates
        .get(&plan.package_id)
        .map(Vec::as_slice)
        .unwrap_or_default()
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
        // pack cannot change a prebuilt binary's allocator, but it can say what it costs.
        if let Some(warning) = verify::runtime_of(&verdict).warning(path) {
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
    let bin = match &request.bin_name {
        Some(name) => name.clone(),
        None => bin_name_of(&request.binaries)?,
    };
    if bin.is_empty() || bin.contains('/') || bin == "." || bin == ".." {
        return Err(Error::usage(format!("`{bin}` is not a valid binary name")));
    }
    let cwd = current_dir()?;
    // Reading the project (`cargo metadata`) and compressing the binaries do not depend on
    // each other: the app layers are made meanwhile with the settings the command line
    // gives (or the defaults), and used if the resolved settings turn out the same.
    let guess = (
        image.source_date_epoch.unwrap_or(0),
        image.compression.unwrap_or_default(),
    );
    // Nor does the registry handshake: it is made meanwhile too (the repository does not
    // depend on the tag, which the settings may still change).
    if let Some(Ok(target)) = request.push.as_ref().map(|p| p.target(&bin, "latest", 1)) {
        crate::registry::connection::start_early(&target.reference, &target.options, shell);
    }
    let bar = shell.progress("Packing", binaries.iter().map(|b| b.size).sum());
    let (project, made) = std::thread::scope(|scope| {
        let project = scope.spawn(|| project_of(request.manifest_path.as_deref(), &bin, &cwd));
        let made: Result<Vec<_>> = binaries
            .iter()
            .map(|b| image::app_layer(&bin, b, guess.0, guess.1, &|n| bar.inc(n)))
            .collect();
        let project = project
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        (project, made)
    });
    drop(bar);
    let project = project?;
    let made = made?;
    let (cx, levels, default_dir) = match &project {
        Some(plan) => (
            settings::Context {
                default_name: ImageName::default_for(&bin, &plan.version)?,
                bin: &bin,
                annotations: with_git(&plan.annotations, plan.package_root()),
                cwd: &cwd,
            },
            plan.levels.clone(),
            plan.target_directory.join("microimage").join(&bin),
        ),
        None => (
            settings::Context {
                default_name: ImageName::default_for(&bin, "latest")?,
                bin: &bin,
                annotations: std::collections::BTreeMap::from([(
                    "org.opencontainers.image.title".to_string(),
                    bin.clone(),
                )]),
                cwd: &cwd,
            },
            Levels::default(),
            Path::new("target").join("microimage").join(&bin),
        ),
    };
    let settings::Resolved {
        mut spec,
        sbom,
        base,
        ..
    } = resolve(image, &levels, &cx, shell)?;
    let mut sinks = sinks(request.push.as_ref(), output, &bin, &spec, 1, || {
        Destination::resolve(output.output.as_deref(), output.format, &default_dir)
    })?;
    if let Some(base) = &base {
        let platforms: Vec<&'static Platform> = binaries.iter().map(|b| b.platform).collect();
        let connect = request
            .push
            .as_ref()
            .map(|p| p.options.clone())
            .unwrap_or_default();
        let from = Bases::default().read(base, &platforms, &sinks, &connect, shell)?;
        with_base(&mut spec, &mut sinks, from);
    }
    let cache = project
        .as_ref()
        .map(|p| LayerCache::in_target_dir(&p.target_directory));
    let made = if (spec.source_date_epoch, spec.compression) == guess {
        made.into_iter().map(Some).collect()
    } else {
        Vec::new()
    };
    // The crates each prebuilt binary recorded (cargo-auditable data), for its SBOM.
    let contents = binaries
        .iter()
        .map(|b| {
            Ok(sbom::Contents {
                crates: crate::build::auditable::read(&b.file)?
                    .map(|info| recorded_crates(&info, project.as_ref()))
                    .unwrap_or_default(),
                toolchain: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    pack_and_deliver(
        &spec,
        &binaries,
        &sinks,
        Packed {
            cache: cache.as_ref(),
            made,
            sbom: &sbom,
            contents,
        },
        shell,
    )
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

fn verified(
    path: &Path,
    opened: Option<std::fs::File>,
    platform: &'static Platform,
    shell: &Shell,
) -> Result<PlatformBinary> {
    let verdict = verify::check_opened(path, opened, platform)?;
    shell.status("Verified", describe(path, platform, verdict.size));
    Ok(PlatformBinary::verified(&verdict, platform))
}

fn describe(path: &Path, platform: &Platform, size: u64) -> String {
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
    } = packed;
    let platforms: Vec<String> = binaries.iter().map(|b| b.platform.short_name()).collect();
    shell.status(
        "Packing",
        format!("{} ({})", spec.name, platforms.join(", ")),
    );
    // A bar by bytes on a terminal: large binaries take seconds to compress.
    let remaining = binaries
        .iter()
        .zip(made.iter().chain(std::iter::repeat(&None)))
        .filter(|(_, m)| m.is_none())
        .map(|(b, _)| b.size)
        .sum();
    let bar = shell.progress("Packing", remaining);
    let progress = |n| bar.inc(n);
    let mut set = image::assemble_with(
        spec,
        binaries,
        &image::Packing {
            progress: Some(&progress),
            cache,
            made,
        },
    )?;
    drop(bar);
    sbom::attach(&mut set, spec, &contents, formats)?;
    if !formats.is_empty() {
        for (bin, contents) in binaries.iter().zip(&contents) {
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
            .zip(&contents)
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

/// What `merge` takes.
#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    /// Registry references, OCI layouts (`DIR[:TAG]`) and OCI archives (`FILE[:TAG]`).
    pub sources: Vec<std::ffi::OsString>,
    /// `--tag NAME[:TAG]` for an image written to disk (default: the name the sources
    /// carry, when they agree).
    pub name: Option<String>,
    /// `--push REFERENCE` (with `--tag`s, `--by-digest`, `--sign-key`).
    pub push: Option<PushRequest>,
    /// Source registries are read with these (and `push`'s, when pushing).
    pub options: ConnectOptions,
    /// The mtime of an archive's entries.
    pub source_date_epoch: u64,
}

/// `cargo microimage merge`: the platform images of every source → one index, written to
/// disk or pushed (see [`crate::merge`]).
pub fn merge(request: &MergeRequest, output: &OutputOptions, shell: &Shell) -> Result<Outcome> {
    let sources = request
        .sources
        .iter()
        .map(|s| crate::sources::Source::parse(s))
        .collect::<Result<Vec<_>>>()?;
    // Everything the command line can get wrong, before anything is read.
    let target = request
        .push
        .as_ref()
        .map(|push| {
            if push.reference.is_none() {
                return Err(Error::usage("merge --push needs a REFERENCE"));
            }
            push.target("", "", 1)
        })
        .transpose()?;
    let disk = match (&target, output.output.as_deref()) {
        (Some(_), _) => None,
        (None, Some(path)) => {
            let destination = Destination::resolve(Some(path), output.format, path)?;
            if destination.format == crate::sinks::Format::DockerArchive {
                return Err(Error::usage(
                    "a docker-archive holds one platform's image, not an index",
                )
                .with_help("write the merged image as an OCI layout or an OCI archive (a path ending in .tar)"));
            }
            Some(destination)
        }
        (None, None) => {
            return Err(Error::usage("merge needs -o PATH or --push REFERENCE")
                .with_help("e.g. `cargo microimage merge -o app.tar amd64/ arm64/`"))
        }
    };
    let given_name = request.name.as_deref().map(ImageName::parse).transpose()?;
    let options = match &request.push {
        Some(push) => &push.options,
        None => &request.options,
    };
    let push_to = target.as_ref().map(|t| t.reference.registry().to_string());
    let read = crate::merge::read_sources(&sources, push_to.as_deref(), options, shell)?;
    // The sources are checked (platforms, kinds) before a missing name is asked for.
    let agreed = crate::merge::agreed_name(&read);
    let summary: Vec<String> = read
        .iter()
        .flat_map(|s| {
            s.parts
                .iter()
                .map(move |p| format!("{} from {}", p.platform, s.label))
        })
        .collect();
    let mut merged = crate::merge::combine(read, request.source_date_epoch)?;
    merged.set.name = match (&target, given_name) {
        (Some(t), _) => ImageName::parse(&format!(
            "{}/{}:{}",
            t.reference.registry(),
            t.reference.repository(),
            t.reference.tag().unwrap_or("latest")
        ))?,
        (None, Some(name)) => name,
        (None, None) => match agreed {
            Some(name) => ImageName::parse(&name)?,
            None => {
                return Err(Error::usage("the sources carry no common image name")
                    .with_help("name the merged image: --tag NAME[:TAG]"))
            }
        },
    };
    shell.status(
        "Merging",
        format!("{} ({})", merged.set.name, summary.join(", ")),
    );
    let sink = match (target, disk) {
        (Some(mut target), _) => {
            target.mounts = merged
                .mounts
                .get(target.reference.registry())
                .cloned()
                .unwrap_or_default();
            Sink::Registry(target)
        }
        (None, Some(destination)) => Sink::Disk(destination),
        (None, None) => return Err(Error::usage("merge needs -o PATH or --push REFERENCE")),
    };
    let set = merged.set;
    let delivered = crate::sinks::deliver(&set, &[sink], shell)?;
    shell.status(
        "Finished",
        format!(
            "{} ({} platforms): index {}",
            set.name,
            set.images.len(),
            set.index.digest
        ),
    );
    Ok(Outcome {
        set,
        destination: delivered.destination,
        pushed: delivered.pushed,
    })
}
