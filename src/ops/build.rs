//! `cargo microimage build` (and `push`): compile, verify, pack and deliver.

use std::collections::BTreeMap;

use super::{
    current_dir, pack_and_deliver, resolve_image, sinks, verified, with_base, with_git, Bases,
    Outcome, Packed, PushRequest,
};
use crate::build;
use crate::error::{Error, Result};
use crate::image::{ImageName, ImageSpec, PlatformBinary};
use crate::layers::cache::LayerCache;
use crate::plan::cache::{Answers, PlanCache};
use crate::plan::{self, CargoOptions, Plan};
use crate::platform::Platform;
use crate::provenance;
use crate::sbom;
use crate::settings::{self, ImageArgs};
use crate::shell::Shell;
use crate::sinks::{Destination, OutputOptions, Sink};

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
    /// With `workspace`: only these binaries, as `PACKAGE/BIN` (what `resolve` needs).
    pub only: Vec<String>,
    /// `--sign-key` of `build` (a push has its own, in `push`): signs the images and their
    /// provenance, as referrers in the layout or archive.
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
}

/// The rustc that compiled a target's binaries (the first line of its `rustc -vV`) and its
/// commit: the nightly where the standard library is built from source, else the active
/// toolchain.
fn rustc_of(prepared: &build::Prepared, facts: &build::Facts) -> (Option<String>, Option<String>) {
    match prepared.toolchain.std_from_source() {
        Some(nightly) => (Some(nightly.version.clone()), Some(nightly.commit.clone())),
        None => (facts.toolchain.clone(), facts.rustc_commit.clone()),
    }
}

/// The one `build-std` setting of a build: every image that sets it must agree (one cargo
/// build per target serves them all).
fn one_build_std(jobs: &[Job]) -> Result<settings::BuildStd> {
    let mut set = jobs
        .iter()
        .filter(|j| j.build_std.1 != settings::Origin::Default);
    let Some(first) = set.next() else {
        return Ok(settings::BuildStd::Auto);
    };
    match set.find(|j| j.build_std.0 != first.build_std.0) {
        None => Ok(first.build_std.0),
        Some(other) => Err(Error::usage(format!(
            "`build-std` is `{}` for {} ({}) and `{}` for {} ({}), and one build serves both",
            first.build_std.0.name(),
            first.plan.bin,
            first.build_std.1,
            other.build_std.0.name(),
            other.plan.bin,
            other.build_std.1
        ))
        .with_help(
            "set it once, in the workspace's [workspace.metadata.microimage], or pass --build-std",
        )),
    }
}

/// One image to make: a binary, its settings and where it goes.
struct Job {
    plan: Plan,
    spec: ImageSpec,
    sbom: Vec<sbom::Format>,
    provenance: settings::Provenance,
    runtime: settings::Runtime,
    build_std: (settings::BuildStd, settings::Origin),
    base: Option<settings::BaseRequest>,
    platforms: Vec<&'static Platform>,
    sinks: Vec<Sink>,
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
    check_request(request, image)?;
    let cwd = current_dir()?;
    let mut planned = Planned::load(request, &cwd, shell)?;
    check_output(&planned.plans, output)?;
    let plans = std::mem::take(&mut planned.plans);
    let mut jobs = jobs(plans, request, image, output, &cwd, shell)?;
    read_bases(&mut jobs, request, shell)?;
    let targets = targets(&jobs);
    let build_std = one_build_std(&jobs)?;
    let (prepared, facts) =
        build::prepare(&targets, &request.cargo, build_std, &planned.known, shell)?;
    warn_old_musl(&facts, shell);
    planned.remember(&jobs, &targets, &prepared, &facts);
    let runtimes = prepare_runtimes(&jobs, &targets, &prepared, &facts, &request.cargo, shell)?;
    let made = compile(&jobs, &targets, &prepared, &facts, runtimes, request, shell)?;
    deliver(jobs, made, request, shell)
}

/// Flags that contradict each other, refused before anything is asked of cargo.
fn check_request(request: &BuildRequest, image: &ImageArgs) -> Result<()> {
    if request.push.is_none() {
        super::one_name(&image.tags)?;
    }
    build::toolchain::warm_up_early(&request.platforms);
    if !request.workspace && !request.exclude.is_empty() {
        return Err(Error::usage(
            "--exclude can only be used together with --workspace",
        ));
    }
    Ok(())
}

/// The binaries to build and what cargo answered about them, from the plan cache when
/// nothing it depends on changed (`plan::cache`).
struct Planned {
    plans: Vec<Plan>,
    known: Answers,
    cache: PlanCache,
}

impl Planned {
    fn load(request: &BuildRequest, cwd: &std::path::Path, shell: &Shell) -> Result<Planned> {
        let what = match request.workspace {
            true => format!("build --workspace --exclude {:?}", request.exclude),
            false => "build".to_string(),
        };
        let cache = PlanCache::for_request(&request.cargo, &what, cwd);
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
        let plans: Vec<Plan> = if request.only.is_empty() {
            plans
        } else {
            plans
                .into_iter()
                .filter(|p| {
                    request
                        .only
                        .contains(&format!("{}/{}", p.package_name, p.bin))
                })
                .collect()
        };
        warn_outside_paths(&plans, shell);
        Ok(Planned {
            plans,
            known: known.unwrap_or_default(),
            cache,
        })
    }

    /// Stores what this build learned (the plans, each target's graph, the toolchain, the
    /// nightlies) when the cache lacked any of it.
    fn remember(
        &mut self,
        jobs: &[Job],
        targets: &[Target],
        prepared: &[build::Prepared],
        facts: &build::Facts,
    ) {
        let known = &mut self.known;
        let nightlies: BTreeMap<String, build::stdlib::Nightly> = targets
            .iter()
            .zip(prepared)
            .filter_map(|((p, _), prepared)| {
                let nightly = prepared.toolchain.std_from_source()?;
                Some((p.triple.to_string(), nightly.clone()))
            })
            .collect();
        let learned = known.sysroot.is_none()
            || known.toolchain.is_none()
            || known.rustc_commit.is_none()
            || nightlies
                .iter()
                .any(|(t, n)| known.nightlies.get(t) != Some(n))
            || targets
                .iter()
                .any(|(p, _)| !known.graphs.contains_key(p.triple));
        if !learned {
            return;
        }
        known.plans = jobs.iter().map(|j| j.plan.clone()).collect();
        known.sysroot = Some(facts.sysroot.clone());
        known.toolchain = facts.toolchain.clone();
        known.rustc_commit = facts.rustc_commit.clone();
        known.nightlies.extend(nightlies);
        for ((platform, _), p) in targets.iter().zip(prepared) {
            known
                .graphs
                .insert(platform.triple.to_string(), p.graph.clone());
        }
        self.cache.store(known);
    }
}

/// One `-o FILE.tar` cannot hold several images.
fn check_output(plans: &[Plan], output: &OutputOptions) -> Result<()> {
    match &output.output {
        Some(o) if plans.len() > 1 && o.extension().is_some_and(|e| e == "tar") => {
            Err(Error::usage(format!(
                "-o `{}` names one archive, but {} images are built",
                o.display(),
                plans.len()
            ))
            .with_help("with several images, -o names a directory; each image goes to DIR/<bin>"))
        }
        _ => Ok(()),
    }
}

/// Every image's settings and destinations, resolved before anything is compiled, so bad
/// settings fail fast.
fn jobs(
    plans: Vec<Plan>,
    request: &BuildRequest,
    image: &ImageArgs,
    output: &OutputOptions,
    cwd: &std::path::Path,
    shell: &Shell,
) -> Result<Vec<Job>> {
    let images = plans.len();
    plans
        .into_iter()
        .map(|plan| {
            let cx = settings::Context {
                default_name: ImageName::default_for(&plan.bin, &plan.version)?,
                bin: &plan.bin,
                annotations: with_git(&plan.annotations, plan.package_root()),
                cwd,
            };
            let settings::Resolved {
                spec,
                sbom,
                provenance,
                runtime,
                build_std,
                base,
                ..
            } = resolve_image(image, &plan.levels, &cx, shell)?;
            let platforms = settings::platforms(&request.platforms, &plan.levels)?;
            let default_dir = plan.target_directory.join("microimage").join(&plan.bin);
            let sinks = sinks(
                request.push.as_ref(),
                output,
                &plan.bin,
                &spec,
                images,
                || match (&output.output, request.workspace) {
                    (Some(o), true) => {
                        Destination::resolve(None, output.format, &o.join(&plan.bin))
                    }
                    (o, _) => Destination::resolve(o.as_deref(), output.format, &default_dir),
                },
            )?;
            Ok(Job {
                plan,
                spec,
                sbom,
                provenance,
                runtime,
                build_std,
                base,
                platforms,
                sinks,
            })
        })
        .collect()
}

/// The base images, read before anything is compiled (a missing platform fails fast).
fn read_bases(jobs: &mut [Job], request: &BuildRequest, shell: &Shell) -> Result<()> {
    let connect = request
        .push
        .as_ref()
        .map(|p| p.options.clone())
        .unwrap_or_default();
    let mut bases = Bases::default();
    for job in jobs {
        if let Some(base) = &job.base {
            let from = bases.read(base, &job.platforms, &job.sinks, &connect, shell)?;
            with_base(&mut job.spec, &mut job.sinks, from);
        }
    }
    Ok(())
}

/// A platform to build, with the plans of the jobs that want it.
type Target<'a> = (&'static Platform, Vec<&'a Plan>);

/// Every platform some job wants, in the table's order, each with those jobs' plans.
fn targets(jobs: &[Job]) -> Vec<Target<'_>> {
    let mut all: Vec<&'static Platform> = jobs.iter().flat_map(|j| j.platforms.clone()).collect();
    all.sort();
    all.dedup();
    all.into_iter()
        .map(|p| (p, wanted(jobs, p).iter().map(|&i| &jobs[i].plan).collect()))
        .collect()
}

/// The indices of the jobs that want `platform`.
fn wanted(jobs: &[Job], platform: &Platform) -> Vec<usize> {
    (0..jobs.len())
        .filter(|&i| jobs[i].platforms.contains(&platform))
        .collect()
}

/// Warns when the toolchain's musl has the old DNS resolver.
fn warn_old_musl(facts: &build::Facts, shell: &Shell) {
    if let Some(warning) = facts
        .toolchain
        .as_deref()
        .and_then(build::runtime::old_musl_warning)
    {
        shell.warn(warning);
    }
}

/// What each binary links besides its own code (compiled once per target and cached), per
/// target and wanting job; the targets are prepared at the same time.
fn prepare_runtimes(
    jobs: &[Job],
    targets: &[Target],
    prepared: &[build::Prepared],
    facts: &build::Facts,
    cargo: &CargoOptions,
    shell: &Shell,
) -> Result<Vec<Vec<build::runtime::Linked>>> {
    std::thread::scope(|scope| {
        let work: Vec<_> = targets
            .iter()
            .zip(prepared)
            .map(|((platform, _), prepared)| {
                scope.spawn(move || {
                    let wanted = wanted(jobs, platform);
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
                        rustc_of(prepared, facts).0.as_deref(),
                        cargo,
                        &jobs[wanted[0]].plan.target_directory,
                        shell,
                    )
                })
            })
            .collect();
        work.into_iter()
            .map(|w| w.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Result<Vec<_>>>()
    })
}

/// What compiling gave one job, one entry per platform: the checked binary, what its SBOM
/// lists, and how it was made (for the provenance).
#[derive(Default)]
struct Made {
    binaries: Vec<PlatformBinary>,
    contents: Vec<sbom::Contents>,
    facts: Vec<provenance::Facts>,
}

/// Compiles every target (one cargo build each), verifies each binary and gathers what the
/// SBOMs and the provenance say of it.
fn compile(
    jobs: &[Job],
    targets: &[Target],
    prepared: &[build::Prepared],
    facts: &build::Facts,
    runtimes: Vec<Vec<build::runtime::Linked>>,
    request: &BuildRequest,
    shell: &Shell,
) -> Result<Vec<Made>> {
    let mut made: Vec<Made> = jobs.iter().map(|_| Made::default()).collect();
    let lock_sha256 = jobs
        .first()
        .and_then(|j| std::fs::read(j.plan.workspace_root.join("Cargo.lock")).ok())
        .map(|lock| crate::blob::hex(&crate::blob::sha256(&lock)).to_string());
    for (((platform, plans), prepared), linked) in targets.iter().zip(prepared).zip(runtimes) {
        let links = links(jobs, platform, prepared, linked);
        let binaries = build::build(plans, &links, &request.cargo, platform, prepared, shell)?;
        // The C compiler of the app's own C code, asked once per target (only if it has
        // any): binaries that link mimalloc name the one that compiled it.
        let app_cc = std::cell::OnceCell::new();
        for ((i, binary), link) in wanted(jobs, platform).into_iter().zip(binaries).zip(links) {
            let checked = verified(&binary.path, Some(binary.file), platform, shell)?;
            let runtime = link.runtime.as_ref();
            if let Some(runtime) = runtime {
                build::runtime::check_linked(&checked, runtime)?;
            }
            made[i].binaries.push(checked);
            let crates = crates_of(&prepared.graph, &jobs[i].plan);
            made[i].contents.push(sbom::Contents {
                crates: runtime.map_or_else(|| crates.to_vec(), |r| r.crates(crates)),
                toolchain: rustc_of(prepared, facts).0,
            });
            let compiler = runtime.and_then(|r| r.c_compiler.clone()).or_else(|| {
                let has_c = !prepared.graph.c_crates.is_empty();
                has_c
                    .then(|| {
                        app_cc
                            .get_or_init(|| {
                                build::toolchain::c_compiler(&prepared.toolchain, shell)
                                    .ok()
                                    .flatten()
                                    .map(|cc| cc.name)
                            })
                            .clone()
                    })
                    .flatten()
            });
            made[i].facts.push(provenance::Facts {
                recipe: Some(recipe(
                    &jobs[i].plan,
                    &request.cargo,
                    lock_sha256.clone(),
                    prepared,
                    facts,
                )),
                zig: compiler.filter(|name| name.starts_with("zig ")),
                binary_sha256: None,
            });
        }
    }
    Ok(made)
}

/// What the final link of each job's binary for `platform` gets: its crate list, the
/// runtime's objects and arguments.
fn links(
    jobs: &[Job],
    platform: &Platform,
    prepared: &build::Prepared,
    linked: Vec<build::runtime::Linked>,
) -> Vec<build::Link> {
    wanted(jobs, platform)
        .iter()
        .zip(linked)
        .map(|(&i, runtime)| {
            let crates = runtime.crates(crates_of(&prepared.graph, &jobs[i].plan));
            build::Link {
                additions: build::wrapper::Additions {
                    crates: jobs[i].spec.auditable.then_some(crates),
                    link_args: runtime.args.clone(),
                    link_key: runtime.key.clone(),
                    thread_stack: Some(runtime.thread_stack),
                },
                runtime: Some(runtime),
            }
        })
        .collect()
}

/// The provenance's account of how `plan`'s binary was built.
fn recipe(
    plan: &Plan,
    cargo: &CargoOptions,
    lock_sha256: Option<String>,
    prepared: &build::Prepared,
    facts: &build::Facts,
) -> provenance::Recipe {
    let (rustc, rustc_commit) = rustc_of(prepared, facts);
    provenance::Recipe {
        package: plan.package_name.clone(),
        version: plan.version.clone(),
        bin: plan.bin.clone(),
        profile: cargo.profile.clone(),
        features: cargo.features.clone(),
        all_features: cargo.all_features,
        no_default_features: cargo.no_default_features,
        lock_sha256,
        rustc,
        rustc_commit: rustc_commit.filter(|c| !c.is_empty()),
        std_from_source: prepared.toolchain.std_from_source().is_some(),
    }
}

/// Packs each job's binaries into its image and delivers it to its sinks.
fn deliver(
    jobs: Vec<Job>,
    made: Vec<Made>,
    request: &BuildRequest,
    shell: &Shell,
) -> Result<Vec<Outcome>> {
    let sign = request
        .sign
        .as_deref()
        .or_else(|| request.push.as_ref().and_then(|p| p.sign.as_deref()));
    jobs.into_iter()
        .zip(made)
        .map(|(job, made)| {
            let cache = LayerCache::in_target_dir(&job.plan.target_directory);
            pack_and_deliver(
                &job.spec,
                &made.binaries,
                &job.sinks,
                Packed {
                    cache: Some(&cache),
                    made: Vec::new(),
                    sbom: &job.sbom,
                    contents: made.contents,
                    provenance: job.provenance,
                    facts: made.facts,
                    sign,
                },
                shell,
            )
        })
        .collect()
}

/// Says, once per path dependency, when one lies outside its workspace: cargo then hashes
/// its absolute path into the crate's `-C metadata` (`SourceId::stable_hash`), so symbol
/// names — and with them the code's layout, the binary and the image digest — can differ
/// between two checkouts at different paths. No flag changes what cargo hashes there, so
/// the layout is reported, with the fix: a workspace root above both crates makes the path
/// relative to it.
fn warn_outside_paths(plans: &[Plan], shell: &Shell) {
    let mut seen = std::collections::BTreeSet::new();
    for plan in plans {
        for (dir, name) in &plan.path_dependencies {
            if !seen.insert(name.clone()) {
                continue;
            }
            shell.warn(format!(
                "the path dependency `{name}` ({}) lies outside the workspace of `{}` ({}): cargo hashes its absolute path into symbol names, so the image digest can depend on where the project is checked out. \
                 To make it not: put a workspace root above both (a Cargo.toml in a common parent directory with `[workspace] members = [...]` naming both). \
                 The provenance records only checkout-independent facts either way",
                dir.display(),
                plan.package_name,
                plan.workspace_root.display()
            ));
        }
    }
}

/// The crates linked into `plan`'s binary, its package first (empty if unknown).
fn crates_of<'a>(graph: &'a plan::graph::Graph, plan: &Plan) -> &'a [plan::graph::Crate] {
    graph
        .crates
        .get(&plan.package_id)
        .map(Vec::as_slice)
        .unwrap_or_default()
}
