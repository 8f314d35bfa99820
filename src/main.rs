//! The `cargo-microimage` binary: parses the command line with clap into the library's
//! option values, runs the pipeline, and prints results on stdout (one line per image, or
//! JSON lines with `--message-format json`). Status and errors go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use microimage::config::IncludeBase;
use microimage::layers::base::CaCerts;
use microimage::options::{parse_key_value, parse_port, ImageOptions, OutputOptions};
use microimage::output::load::Engine;
use microimage::output::Format;
use microimage::pipeline::{self, Outcome};
use microimage::plan::CargoOptions;
use microimage::shell::{Shell, Verbosity};
use microimage::{inspect, platform, verify, Result};

#[derive(Parser, Debug)]
#[command(
    name = "cargo-microimage",
    bin_name = "cargo microimage",
    version,
    about = "Build tiny, reproducible FROM-scratch OCI images of Rust binaries, without a Docker daemon",
    after_help = "Without a subcommand, `cargo microimage` runs `build`."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Say more about what is done (the cargo command line, for instance)
    #[arg(short, long, global = true)]
    verbose: bool,
    /// Print no status lines, only results and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// Results as human-readable lines or as JSON lines (each with a `reason`)
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human)]
    message_format: MessageFormat,
    /// Coloring of status lines and the progress bar [default: $CARGO_TERM_COLOR, else auto]
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    color: Option<Color>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Color {
    Auto,
    Always,
    Never,
}

/// Applies `--color` (or cargo's `CARGO_TERM_COLOR`) to this process and to the cargo it runs.
fn set_color(flag: Option<Color>) -> Result<(), microimage::Error> {
    let choice = match flag {
        Some(c) => c,
        None => match std::env::var("CARGO_TERM_COLOR").ok().as_deref() {
            None | Some("") | Some("auto") => Color::Auto,
            Some("always") => Color::Always,
            Some("never") => Color::Never,
            Some(other) => {
                return Err(microimage::Error::usage(format!(
                    "CARGO_TERM_COLOR is `{other}`; expected `auto`, `always` or `never`"
                )))
            }
        },
    };
    let (name, stream) = match choice {
        Color::Auto => ("auto", anstream::ColorChoice::Auto),
        Color::Always => ("always", anstream::ColorChoice::Always),
        Color::Never => ("never", anstream::ColorChoice::Never),
    };
    stream.write_global();
    if choice != Color::Auto {
        console::set_colors_enabled_stderr(choice == Color::Always);
        // Read by the cargo builds this process starts (still single-threaded here).
        std::env::set_var("CARGO_TERM_COLOR", name);
    }
    Ok(())
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum MessageFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the crate for each platform, verify the binaries are static, write the image
    Build {
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// Build like `build`, then push the image to a registry
    Push {
        /// Where to: registry/repository:tag (default: $MICROIMAGE_REPO/<bin>:<version>)
        #[arg(value_name = "REFERENCE")]
        reference: Option<String>,
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Pack prebuilt static binaries (one per platform) into an image
    Pack {
        /// Static ELF binaries; each one's platform is read from its header
        #[arg(required = true, value_name = "BINARY")]
        binaries: Vec<PathBuf>,
        /// The binary's name in the image (default: the files' name)
        #[arg(long, value_name = "NAME")]
        bin: Option<String>,
        /// Platforms the binaries must be for, exactly (default: whatever their ELF headers say)
        #[arg(long, value_name = "PLATFORM")]
        platform: Vec<String>,
        /// The cargo project whose defaults (tag, annotations) apply (default: the current one)
        #[arg(long, value_name = "PATH")]
        manifest_path: Option<PathBuf>,
        /// Push to this registry/repository:tag instead of writing to disk
        #[arg(long, value_name = "REFERENCE")]
        push: Option<String>,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        output: OutputFlags,
    },
    /// Show an image's platforms, digests, layers and run configuration
    Inspect {
        /// An OCI layout directory, an OCI archive, a docker-archive, or a registry reference
        #[arg(value_name = "PATH|REFERENCE")]
        path: PathBuf,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Check that binaries are fully static and say which platform they are for
    Verify {
        #[arg(required = true, value_name = "BINARY")]
        binaries: Vec<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Internal: the `zig cc`/`zig ar` wrapper that cargo-zigbuild's scripts call back into
    #[command(hide = true, subcommand)]
    Zig(cargo_zigbuild::Zig),
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Build options")]
struct BuildFlags {
    /// Package to build (see `cargo help pkgid`)
    #[arg(short = 'p', long = "package", value_name = "SPEC")]
    package: Option<String>,
    /// One image per binary target of every workspace member
    #[arg(long, conflicts_with_all = ["package", "bin"])]
    workspace: bool,
    /// Leave a member out of --workspace (repeatable)
    #[arg(long, value_name = "SPEC", requires = "workspace")]
    exclude: Vec<String>,
    /// Binary target to put in the image
    #[arg(long, value_name = "NAME")]
    bin: Option<String>,
    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH")]
    manifest_path: Option<PathBuf>,
    /// Space or comma separated list of features to activate
    #[arg(short = 'F', long, value_name = "FEATURES")]
    features: Vec<String>,
    /// Activate all available features
    #[arg(long)]
    all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long)]
    no_default_features: bool,
    /// Build artifacts with the specified profile
    #[arg(long, value_name = "PROFILE-NAME", default_value = "release")]
    profile: String,
    /// Assert that `Cargo.lock` will remain unchanged
    #[arg(long)]
    locked: bool,
    /// Equivalent to specifying both --locked and --offline
    #[arg(long)]
    frozen: bool,
    /// Run without accessing the network
    #[arg(long)]
    offline: bool,
    /// Image platforms: linux/amd64, linux/arm64, comma-separated or repeated, or `all`
    #[arg(long, value_name = "PLATFORM")]
    platform: Vec<String>,
    /// Rust target triples, as an alternative to --platform
    #[arg(long, value_name = "TRIPLE")]
    target: Vec<String>,
    /// Strip symbols through cargo's `strip` profile setting (the default)
    #[arg(long, overrides_with = "no_strip")]
    strip: bool,
    /// Keep symbols
    #[arg(long, overrides_with = "strip")]
    no_strip: bool,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Image options")]
struct ImageFlags {
    /// Image name and tag, NAME[:TAG] (default: <bin>:<version>); with push, a tag to add (repeatable)
    #[arg(long = "tag", value_name = "NAME[:TAG]")]
    tags: Vec<String>,
    /// Config label (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    label: Vec<(String, String)>,
    /// Manifest and index annotation (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    annotation: Vec<(String, String)>,
    /// Environment variable (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    env: Vec<(String, String)>,
    /// Port to expose (repeatable)
    #[arg(long, value_name = "PORT[/tcp|/udp]", value_parser = |s: &str| parse_port(s).map_err(|e| e.to_string()))]
    expose: Vec<String>,
    /// User to run as (default 65532:65532, "nonroot")
    #[arg(long, value_name = "USER[:GROUP]")]
    user: Option<String>,
    /// Working directory (default /home/nonroot)
    #[arg(long, value_name = "DIR")]
    workdir: Option<String>,
    /// Default argument for the binary, the image's CMD (repeatable)
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// CA certificates: bundled (Mozilla roots), host, none, or a PEM file
    #[arg(long, value_name = "bundled|host|none|PATH")]
    ca_certs: Option<String>,
    /// Copy files or directories into the image (repeatable; SRC relative to the current directory)
    #[arg(long, value_name = "SRC[:DEST]")]
    include: Vec<String>,
    /// Add /usr/share/zoneinfo from the embedded tz database
    #[arg(long)]
    tzdata: bool,
    /// Timestamp for every date in the image (default: $SOURCE_DATE_EPOCH, else 0)
    #[arg(long, value_name = "SECONDS")]
    source_date_epoch: Option<u64>,
    /// Layer compression: gzip (level 6, read everywhere) or zstd (level 9: smaller, needs docker 23+ / containerd 1.5+ / podman) [default: gzip]
    #[arg(long, value_name = "gzip|zstd")]
    compression: Option<microimage::layers::Compression>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Registry options")]
struct RegistryFlags {
    /// Allow plain HTTP to any registry (loopback registries may always use it)
    #[arg(long)]
    insecure: bool,
    /// Trust the CA certificates in this PEM file, too
    #[arg(long, value_name = "PATH")]
    ca_file: Option<PathBuf>,
}

impl RegistryFlags {
    fn options(&self) -> microimage::push::PushOptions {
        microimage::push::PushOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        }
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Output options")]
struct OutputFlags {
    /// Where to write: a directory gets an OCI layout, a path ending in .tar an archive
    /// (default target/microimage/<bin>/)
    #[arg(short, long, value_name = "PATH")]
    output: Option<PathBuf>,
    /// Output format
    #[arg(long, value_name = "oci|oci-archive|docker-archive", value_parser = |s: &str| Format::parse(s).map_err(|e| e.to_string()))]
    format: Option<Format>,
    /// Also load the image into the local podman or docker (this machine's platform)
    #[arg(long, value_name = "podman|docker", num_args = 0..=1, require_equals = true, default_missing_value = "auto",
          value_parser = |s: &str| Engine::parse(s).map_err(|e| e.to_string()))]
    load: Option<Engine>,
}

impl BuildFlags {
    /// The library's build request for these flags (`push` for `cargo microimage push`).
    fn request(&self, push: Option<pipeline::PushRequest>) -> Result<pipeline::BuildRequest> {
        Ok(pipeline::BuildRequest {
            cargo: self.cargo_options(),
            platforms: if self.platform.is_empty() && self.target.is_empty() {
                Vec::new()
            } else {
                platform::resolve(&self.platform, &self.target)?
            },
            workspace: self.workspace,
            exclude: self.exclude.clone(),
            push,
        })
    }

    fn cargo_options(&self) -> CargoOptions {
        CargoOptions {
            manifest_path: self.manifest_path.clone(),
            package: self.package.clone(),
            bin: self.bin.clone(),
            features: self
                .features
                .iter()
                .flat_map(|f| f.split([',', ' ']))
                .filter(|f| !f.is_empty())
                .map(String::from)
                .collect(),
            all_features: self.all_features,
            no_default_features: self.no_default_features,
            profile: self.profile.clone(),
            locked: self.locked,
            frozen: self.frozen,
            offline: self.offline,
            strip: !self.no_strip,
        }
    }
}

impl ImageFlags {
    /// For local output: at most one --tag, the image's name.
    fn single_tag(&self) -> Result<()> {
        if self.tags.len() > 1 {
            return Err(microimage::Error::usage(format!(
                "--tag given {} times, but an image written to disk has one name",
                self.tags.len()
            ))
            .with_help("pass one --tag NAME[:TAG]; several tags are for `push`"));
        }
        Ok(())
    }

    fn options(&self) -> ImageOptions {
        ImageOptions {
            tag: self.tags.first().cloned(),
            labels: self.label.clone(),
            annotations: self.annotation.clone(),
            env: self.env.clone(),
            expose: self.expose.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            args: self.args.clone(),
            ca_certs: self.ca_certs.as_deref().map(CaCerts::parse),
            include: self
                .include
                .iter()
                .map(|i| (i.clone(), IncludeBase::CurrentDir))
                .collect(),
            tzdata: self.tzdata.then_some(true),
            source_date_epoch: self.source_date_epoch,
            compression: self.compression,
        }
    }
}

impl OutputFlags {
    fn options(&self) -> OutputOptions {
        OutputOptions {
            output: self.output.clone(),
            format: self.format,
            load: self.load,
        }
    }
}

const SUBCOMMANDS: &[&str] = &[
    "build",
    "push",
    "pack",
    "inspect",
    "verify",
    "completions",
    "zig",
    "help",
];

/// cargo runs `cargo-microimage microimage ARGS`; drop that word, and default to `build`.
fn normalised_args() -> Vec<std::ffi::OsString> {
    normalise(std::env::args_os().collect())
}

/// Drops the `microimage` cargo passes, and puts `build` where no subcommand is named —
/// after any global flags (`cargo microimage -v --color never` is `build`, like cargo).
fn normalise(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    if args.get(1).is_some_and(|a| a == "microimage") {
        args.remove(1);
    }
    let mut at = 1;
    while let Some(arg) = args.get(at).and_then(|a| a.to_str()) {
        if ["-v", "--verbose", "-q", "--quiet"].contains(&arg)
            || arg.starts_with("--color=")
            || arg.starts_with("--message-format=")
        {
            at += 1;
        } else if arg == "--color" || arg == "--message-format" {
            at += 2;
        } else {
            break;
        }
    }
    let first = args.get(at).and_then(|a| a.to_str()).unwrap_or("");
    let passes =
        SUBCOMMANDS.contains(&first) || ["-h", "--help", "-V", "--version"].contains(&first);
    if !passes {
        args.insert(at.min(args.len()), "build".into());
    }
    args
}

fn main() -> ExitCode {
    // cargo-zigbuild's wrapper directory holds an `ar` symlink to this binary.
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    if argv0
        .as_deref()
        .and_then(|p| p.file_stem())
        .is_some_and(|n| n == "ar")
    {
        let zig = cargo_zigbuild::Zig::Ar {
            args: std::env::args().skip(1).collect(),
        };
        return run_zig(&zig);
    }
    let cli = Cli::parse_from(normalised_args());
    if let Command::Zig(zig) = &cli.command {
        return run_zig(zig);
    }
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let shell = Shell::new(verbosity);
    if let Err(e) = set_color(cli.color) {
        shell.error(&e);
        return ExitCode::from(e.exit_code() as u8);
    }
    match run(&cli, &shell) {
        Ok(code) => code,
        Err(e) => {
            shell.error(&e);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Runs zig for the build of a C dependency (called by cargo, through cc-rs or rustc).
fn run_zig(zig: &cargo_zigbuild::Zig) -> ExitCode {
    match zig.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: zig failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli, shell: &Shell) -> Result<ExitCode> {
    let json = cli.message_format == MessageFormat::Json;
    match &cli.command {
        Command::Build {
            build,
            image,
            output,
        } => {
            image.single_tag()?;
            let request = build.request(None)?;
            for outcome in pipeline::build(&request, &image.options(), &output.options(), shell)? {
                print_outcome(&outcome, json);
            }
        }
        Command::Push {
            reference,
            build,
            image,
            registry,
        } => {
            // With push, --tag adds tags; the name comes from REFERENCE or $MICROIMAGE_REPO.
            let mut image_options = image.options();
            image_options.tag = None;
            let tags = image.tags.clone();
            let request = build.request(Some(pipeline::PushRequest {
                reference: reference.clone(),
                tags,
                options: registry.options(),
            }))?;
            for outcome in
                pipeline::build(&request, &image_options, &OutputOptions::default(), shell)?
            {
                print_outcome(&outcome, json);
            }
        }
        Command::Pack {
            binaries,
            bin,
            platform,
            manifest_path,
            push,
            registry,
            image,
            output,
        } => {
            let mut image_options = image.options();
            if push.is_some() {
                image_options.tag = None;
            } else {
                image.single_tag()?;
            }
            let platforms = if platform.is_empty() {
                Vec::new()
            } else {
                platform::resolve(platform, &[])?
            };
            let request = pipeline::PackRequest {
                binaries: binaries.clone(),
                bin_name: bin.clone(),
                platforms,
                manifest_path: manifest_path.clone(),
                push: push.as_ref().map(|reference| pipeline::PushRequest {
                    reference: Some(reference.clone()),
                    tags: image.tags.clone(),
                    options: registry.options(),
                }),
            };
            let outcome = pipeline::pack(&request, &image_options, &output.options(), shell)?;
            print_outcome(&outcome, json);
        }
        Command::Inspect { path, registry } => {
            let text = path.to_string_lossy();
            // A registry reference names its host first (`ghcr.io/…`, `127.0.0.1:5000/…`);
            // anything else that does not exist is a mistyped path, not Docker Hub.
            let names_registry = text.split_once('/').is_some_and(|(first, _)| {
                first.contains(['.', ':']) && first != "." && first != ".." || first == "localhost"
            });
            let remote = !path.exists() && names_registry;
            let report = if remote {
                inspect::inspect_remote(&text, &registry.options(), shell)?
            } else {
                inspect::inspect(path)?
            };
            if json {
                let mut value = serde_json::to_value(&report).expect("reports serialise");
                value["reason"] = "image-inspected".into();
                println_stdout(&value.to_string());
            } else {
                print_stdout(&inspect::render(&report));
            }
        }
        Command::Verify { binaries } => return verify_binaries(binaries, json, shell),
        Command::Completions { shell: target } => {
            use clap::CommandFactory;
            clap_complete::generate(
                *target,
                &mut Cli::command(),
                "cargo-microimage",
                &mut std::io::stdout(),
            );
        }
        Command::Zig(_) => unreachable!("handled in main"),
    }
    Ok(ExitCode::SUCCESS)
}

fn verify_binaries(binaries: &[PathBuf], json: bool, shell: &Shell) -> Result<ExitCode> {
    let mut failed = 0;
    for path in binaries {
        let verdict = verify::inspect(path)?;
        let checked = verdict.require_static();
        if json {
            let value = serde_json::json!({
                "reason": "binary-verified",
                "path": path,
                "static": verdict.is_static(),
                "platform": verdict.platform.map(|p| p.short_name()),
                "machine": verdict.machine,
                "interpreter": verdict.interpreter,
                "needed": verdict.needed,
                "size": verdict.size,
                "ok": checked.is_ok(),
            });
            println_stdout(&value.to_string());
        } else {
            let state = match (&checked, verdict.is_static()) {
                (Ok(p), _) => format!("static, {p} ({})", verdict.machine),
                (Err(_), true) => format!("static, unsupported machine {}", verdict.machine),
                (Err(_), false) => format!("NOT static ({})", verdict.machine),
            };
            println_stdout(&format!("{}: {state}", path.display()));
        }
        if let Err(e) = checked {
            shell.error(&e);
            failed += 1;
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn print_outcome(outcome: &Outcome, json: bool) {
    let set = &outcome.set;
    if let Some(pushed) = &outcome.pushed {
        let line = format!("{}@{}", pushed.reference, set.index.digest);
        if json {
            let value = serde_json::json!({
                "reason": "image-pushed",
                "reference": pushed.reference,
                "tags": pushed.tags,
                "index_digest": set.index.digest.to_string(),
                "pinned": line,
                "blobs": {"uploaded": pushed.uploaded, "mounted": pushed.mounted, "present": pushed.present},
                "platforms": platform_json(set),
            });
            println_stdout(&value.to_string());
        } else {
            println_stdout(&line);
        }
        return;
    }
    let Some(destination) = &outcome.destination else {
        return;
    };
    let reference = destination.reference(set);
    if json {
        let platforms = platform_json(set);
        let value = serde_json::json!({
            "reason": "image-written",
            "name": set.name.to_string(),
            "tag": set.name.tag,
            "reference": reference,
            "path": destination.path,
            "format": destination.format.transport(),
            "index_digest": set.index.digest.to_string(),
            "platforms": platforms,
        });
        println_stdout(&value.to_string());
    } else {
        println_stdout(&format!("{reference} {}", set.index.digest));
    }
}

fn platform_json(set: &microimage::image::ImageSet) -> Vec<serde_json::Value> {
    set.images
        .iter()
        .map(|i| {
            serde_json::json!({
                "platform": i.platform.oci_name(),
                "manifest_digest": i.manifest.digest.to_string(),
                "config_digest": i.config.digest.to_string(),
                "compressed_size": i.compressed_size(),
                "uncompressed_size": i.uncompressed_size(),
                "binary_size": i.binary_size,
            })
        })
        .collect()
}

fn println_stdout(line: &str) {
    print_stdout(&format!("{line}\n"));
}

/// Writes to stdout, ignoring a closed pipe (`… | head`).
fn print_stdout(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::normalise;

    fn norm(args: &[&str]) -> Vec<String> {
        normalise(args.iter().map(Into::into).collect())
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn build_is_the_default_subcommand_after_global_flags() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["c", "microimage"], &["c", "build"]),
            (&["c", "microimage", "push", "x"], &["c", "push", "x"]),
            (
                &["c", "microimage", "--bin", "a"],
                &["c", "build", "--bin", "a"],
            ),
            (&["c", "microimage", "-v", "push"], &["c", "-v", "push"]),
            (&["c", "microimage", "-q"], &["c", "-q", "build"]),
            (
                &["c", "microimage", "--color", "never", "-p", "a"],
                &["c", "--color", "never", "build", "-p", "a"],
            ),
            (
                &["c", "--message-format=json", "inspect", "x"],
                &["c", "--message-format=json", "inspect", "x"],
            ),
            (&["c", "microimage", "--help"], &["c", "--help"]),
        ];
        for (given, expected) in cases {
            assert_eq!(norm(given), *expected, "{given:?}");
        }
    }
}
