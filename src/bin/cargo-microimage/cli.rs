//! The command line: clap definitions, grouped the way `cargo build --help` groups its
//! options, and their conversion into the library's plain option values — with the
//! defaults that come from the environment (`SOURCE_DATE_EPOCH`, `MICROIMAGE_REPO`), read
//! here and nowhere else.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use microimage::ops;
use microimage::plan::CargoOptions;
use microimage::registry::ConnectOptions;
use microimage::settings::{parse_key_value, parse_port, ImageArgs};
use microimage::sinks::load::Engine;
use microimage::sinks::{Format, OutputOptions};
use microimage::{platform, Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "cargo-microimage",
    version,
    about = "Build tiny, reproducible FROM-scratch OCI images of Rust binaries, without a Docker daemon",
    after_help = "Without a subcommand, `cargo microimage` runs `build`.\n\
                  See 'cargo microimage help <command>' for more information on a command."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Use verbose output (-vv very verbose: cargo's build script output too)
    #[arg(short, long, global = true, action = ArgAction::Count)]
    pub verbose: u8,
    /// Do not print status lines, only results and errors
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
    /// Results as human-readable lines or as JSON lines (each with a `reason`)
    #[arg(long, global = true, value_enum, value_name = "FMT", default_value_t = MessageFormat::Human)]
    pub message_format: MessageFormat,
    /// Coloring of status lines and the progress bar [default: $CARGO_TERM_COLOR, else auto]
    #[arg(long, global = true, value_enum, value_name = "WHEN")]
    pub color: Option<Color>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build the crate for each platform, verify the binaries are static, write the image
    Build {
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        output: OutputFlags,
        #[command(flatten)]
        sign: SignFlag,
        #[command(flatten)]
        refs: RefsFlag,
    },
    /// Build like `build`, then push the image to a registry
    Push {
        /// Where to: registry/repository:tag (default: $MICROIMAGE_REPO/<bin>:<version>); with --by-digest, registry/repository
        #[arg(value_name = "REFERENCE")]
        reference: Option<String>,
        /// Push without a tag and print REPOSITORY@DIGEST (of the platform manifest when one platform is built), for `merge` to assemble
        #[arg(long, help_heading = "Registry Options")]
        by_digest: bool,
        #[command(flatten)]
        build: BuildFlags,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        sign: SignFlag,
        #[command(flatten)]
        refs: RefsFlag,
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
        #[arg(long, value_name = "REFERENCE", help_heading = "Registry Options")]
        push: Option<String>,
        /// With --push: no tag; print REPOSITORY@DIGEST (of the platform manifest when one platform is packed)
        #[arg(long, requires = "push", help_heading = "Registry Options")]
        by_digest: bool,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        sign: SignFlag,
        #[command(flatten)]
        image: ImageFlags,
        #[command(flatten)]
        output: OutputFlags,
        #[command(flatten)]
        refs: RefsFlag,
    },
    /// Merge per-platform images (from registries, layouts, archives) into one multi-platform image
    #[command(
        after_help = "Platform manifests are kept as they are (their digests, SBOMs and signatures stay valid); \
                      two sources for one platform are an error. Pushed to the registry the sources are in, \
                      their layers are mounted, never downloaded.\n\n\
                      Examples:\n  \
                      cargo microimage merge --push ghcr.io/o/app:1.4.0 --tag latest ghcr.io/o/app@sha256:A ghcr.io/o/app@sha256:B\n  \
                      cargo microimage merge -o app.tar amd64/ arm64.tar",
        group(clap::ArgGroup::new("destination").required(true).args(["push", "output"]))
    )]
    Merge {
        /// Registry references (by tag or digest), OCI layouts (DIR[:TAG]) and OCI archives (FILE[:TAG])
        #[arg(required = true, value_name = "SOURCE")]
        sources: Vec<OsString>,
        /// Push the index to this registry/repository:tag (with --by-digest, registry/repository)
        #[arg(long, value_name = "REFERENCE", help_heading = "Registry Options",
              conflicts_with_all = ["output", "format"])]
        push: Option<String>,
        /// With --push: no tag; print REPOSITORY@DIGEST of the index
        #[arg(long, requires = "push", help_heading = "Registry Options")]
        by_digest: bool,
        /// With -o, the image's name (default: the sources' name); with --push, an extra tag (repeatable)
        #[arg(
            long = "tag",
            value_name = "NAME[:TAG]",
            help_heading = "Image Options"
        )]
        tags: Vec<String>,
        /// Write the image here: a directory gets an OCI layout, a path ending in .tar an OCI archive
        #[arg(short, long, value_name = "PATH", help_heading = "Output Options")]
        output: Option<PathBuf>,
        /// oci or oci-archive (default: from the -o path)
        #[arg(long, value_name = "oci|oci-archive", help_heading = "Output Options",
              value_parser = |s: &str| Format::parse(s).map_err(|e| e.to_string()))]
        format: Option<Format>,
        #[command(flatten)]
        registry: RegistryFlags,
        #[command(flatten)]
        sign: SignFlag,
        #[command(flatten)]
        refs: RefsFlag,
    },
    /// Build and push each image that Kubernetes YAML names as microimage://NAME, and print the YAML with REPO/NAME@sha256:… in its place
    Resolve {
        #[command(flatten)]
        resolve: ResolveArgs,
    },
    /// Resolve like `resolve`, then apply the result with `kubectl apply -f -` ($KUBECTL)
    Apply {
        #[command(flatten)]
        resolve: ResolveArgs,
        /// Arguments for kubectl, after `--` (e.g. `-- --namespace dev --dry-run=server`)
        #[arg(last = true, value_name = "KUBECTL ARGS")]
        kubectl_args: Vec<OsString>,
    },
    /// Show an image's platforms, digests, layers and run configuration
    Inspect {
        /// An OCI layout directory, an OCI archive or a docker-archive (a bare path, or
        /// oci:DIR[:TAG], oci-archive:FILE[:TAG], docker-archive:FILE as the tool prints
        /// them), or a registry reference
        #[arg(value_name = "PATH|REFERENCE")]
        image: OsString,
        #[command(flatten)]
        registry: RegistryFlags,
    },
    /// Check that binaries are fully static and say which platform they are for
    Verify {
        #[arg(required = true, value_name = "BINARY")]
        binaries: Vec<PathBuf>,
    },
    /// Print a shell completion script for `cargo microimage` (bash, zsh, fish)
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// BUILD options, with cargo's names, meanings and help headings.
#[derive(Args, Debug)]
pub struct BuildFlags {
    /// Package to build (see `cargo help pkgid`)
    #[arg(
        short = 'p',
        long = "package",
        value_name = "SPEC",
        help_heading = "Package Selection"
    )]
    pub package: Option<String>,
    /// One image per binary target of every workspace member
    #[arg(long, conflicts_with_all = ["package", "bin"], help_heading = "Package Selection")]
    pub workspace: bool,
    /// Exclude packages from --workspace
    #[arg(
        long,
        value_name = "SPEC",
        requires = "workspace",
        help_heading = "Package Selection"
    )]
    pub exclude: Vec<String>,

    /// Binary target to put in the image
    #[arg(long, value_name = "NAME", help_heading = "Target Selection")]
    pub bin: Option<String>,

    /// Space or comma separated list of features to activate
    #[arg(
        short = 'F',
        long,
        value_name = "FEATURES",
        help_heading = "Feature Selection"
    )]
    pub features: Vec<String>,
    /// Activate all available features
    #[arg(long, help_heading = "Feature Selection")]
    pub all_features: bool,
    /// Do not activate the `default` feature
    #[arg(long, help_heading = "Feature Selection")]
    pub no_default_features: bool,

    /// Build in release mode (the default: the same as --profile release)
    #[arg(short = 'r', long, help_heading = "Compilation Options")]
    pub release: bool,
    /// Build artifacts with the specified profile [default: release]
    #[arg(
        long,
        value_name = "PROFILE-NAME",
        help_heading = "Compilation Options"
    )]
    pub profile: Option<String>,
    /// Number of parallel jobs, defaults to # of CPUs
    #[arg(short = 'j', long, value_name = "N", allow_negative_numbers = true,
          value_parser = parse_jobs, help_heading = "Compilation Options")]
    pub jobs: Option<String>,
    /// Do not abort the build as soon as there is an error
    #[arg(long, help_heading = "Compilation Options")]
    pub keep_going: bool,
    /// Image platforms, comma-separated or repeated: linux/amd64, linux/arm64, linux/arm/v7, linux/arm/v6, linux/386, linux/riscv64, linux/ppc64le, linux/s390x; `all` = linux/amd64,linux/arm64; `all-supported` = every one [default: this machine's]
    #[arg(long, value_name = "PLATFORM", help_heading = "Compilation Options")]
    pub platform: Vec<String>,
    /// Rust target triples, as an alternative to --platform
    #[arg(long, value_name = "TRIPLE", help_heading = "Compilation Options")]
    pub target: Vec<String>,
    /// Directory for all generated artifacts
    #[arg(long, value_name = "DIRECTORY", help_heading = "Compilation Options")]
    pub target_dir: Option<PathBuf>,
    /// Strip symbols through cargo's `strip` profile setting (the default)
    #[arg(
        long,
        overrides_with = "no_strip",
        help_heading = "Compilation Options"
    )]
    pub strip: bool,
    /// Keep symbols
    #[arg(long, overrides_with = "strip", help_heading = "Compilation Options")]
    pub no_strip: bool,
    /// Do not record the crates in the binary (cargo-auditable format; on by default)
    #[arg(long, help_heading = "Compilation Options")]
    pub no_auditable: bool,
    /// The binary's malloc: auto (mimalloc, unless its crates bring an allocator), mimalloc, or system (musl's own) [default: auto]
    #[arg(
        long,
        value_name = "auto|mimalloc|system",
        help_heading = "Compilation Options"
    )]
    pub allocator: Option<microimage::settings::Allocator>,
    /// Do not link the hook that makes the program stop on SIGTERM, SIGINT and SIGHUP when it runs as PID 1
    #[arg(long, help_heading = "Compilation Options")]
    pub no_pid1_signals: bool,
    /// Default stack of threads that C code starts without a size, 128KiB (musl's) to 8MiB [default: 8MiB, as glibc]
    #[arg(
        long,
        value_name = "SIZE",
        value_parser = parse_thread_stack,
        help_heading = "Compilation Options"
    )]
    pub thread_stack_size: Option<String>,
    /// The standard library: auto (rustup's, else built from source on nightly), always (from source), or never (rustup's or an error) [default: auto]
    #[arg(
        long,
        value_name = "auto|always|never",
        help_heading = "Compilation Options"
    )]
    pub build_std: Option<microimage::settings::BuildStd>,

    /// Path to Cargo.toml
    #[arg(long, value_name = "PATH", help_heading = "Manifest Options")]
    pub manifest_path: Option<PathBuf>,
    /// Ignore `rust-version` specification in packages
    #[arg(long, help_heading = "Manifest Options")]
    pub ignore_rust_version: bool,
    /// Assert that `Cargo.lock` will remain unchanged
    #[arg(long, help_heading = "Manifest Options")]
    pub locked: bool,
    /// Run without accessing the network
    #[arg(long, help_heading = "Manifest Options")]
    pub offline: bool,
    /// Equivalent to specifying both --locked and --offline
    #[arg(long, help_heading = "Manifest Options")]
    pub frozen: bool,

    /// Override a configuration value (passed to cargo)
    #[arg(long = "config", value_name = "KEY=VALUE|PATH")]
    pub config: Vec<String>,
}

/// `-j N`: a non-zero integer (negative: that many fewer than the CPUs) or `default`, as
/// cargo takes it.
/// `--thread-stack-size`: checked here, kept as written (the library reads it as the key).
fn parse_thread_stack(s: &str) -> std::result::Result<String, String> {
    microimage::settings::parse_thread_stack(s).map(|_| s.to_string())
}

fn parse_jobs(s: &str) -> std::result::Result<String, String> {
    match s.parse::<i32>() {
        Ok(0) => Err("jobs may not be 0".to_string()),
        Ok(_) => Ok(s.to_string()),
        Err(_) if s == "default" => Ok(s.to_string()),
        Err(_) => Err(format!("`{s}` is not a number of jobs")),
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Image Options")]
pub struct ImageFlags {
    /// Image name and tag, NAME[:TAG] (default: <bin>:<version>); with push, a tag to add (repeatable)
    #[arg(long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,
    /// Config label (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Manifest and index annotation (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    pub annotation: Vec<(String, String)>,
    /// Environment variable (repeatable)
    #[arg(long, value_name = "K=V", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Port to expose (repeatable)
    #[arg(long, value_name = "PORT[/tcp|/udp]", value_parser = |s: &str| parse_port(s).map_err(|e| e.to_string()))]
    pub expose: Vec<String>,
    /// User to run as (default 65532:65532, "nonroot")
    #[arg(long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// Working directory (default /home/nonroot)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Default argument for the binary, the image's CMD (repeatable)
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// CA certificates: bundled (Mozilla roots), host, none, or a PEM file
    #[arg(long, value_name = "bundled|host|none|PATH")]
    pub ca_certs: Option<String>,
    /// Copy files or directories into the image (repeatable; SRC relative to the current directory)
    #[arg(long, value_name = "SRC[:DEST]")]
    pub include: Vec<String>,
    /// Add /usr/share/zoneinfo from the embedded tz database
    #[arg(long)]
    pub tzdata: bool,
    /// Timestamp for every date in the image (default: $SOURCE_DATE_EPOCH, else 0)
    #[arg(long, value_name = "SECONDS")]
    pub source_date_epoch: Option<u64>,
    /// Layer compression: gzip (read everywhere) or zstd (smaller, needs docker 23+ / containerd 1.5+ / podman) [default: gzip]
    #[arg(long, value_name = "gzip|zstd")]
    pub compression: Option<microimage::layers::Compression>,
    /// Compression level: gzip 1-12, zstd 1-22; higher is smaller and slower [default: gzip 6, zstd 9]
    #[arg(long, value_name = "N")]
    pub compression_level: Option<u32>,
    /// SBOMs attached to each platform image: spdx, cyclonedx, spdx,cyclonedx or none [default: spdx]
    #[arg(long, value_name = "FORMATS", value_parser = |s: &str| microimage::sbom::parse_formats(s).map(|_| s.to_string()))]
    pub sbom: Option<String>,
    /// Build provenance attached to each platform image: slsa (a SLSA v1 statement; signed with --sign-key) or none [default: slsa]
    #[arg(long, value_name = "slsa|none")]
    pub provenance: Option<microimage::settings::Provenance>,
    /// The image to put the app on: a registry reference, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE [default: none, FROM scratch]
    #[arg(long, value_name = "REF")]
    pub base: Option<String>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Registry Options")]
pub struct RegistryFlags {
    /// Allow plain HTTP to any registry (loopback registries may always use it)
    #[arg(long)]
    pub insecure: bool,
    /// Trust the CA certificates in this PEM file, too
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Registry Options")]
pub struct SignFlag {
    /// Sign the index, each platform manifest and the provenance with this ECDSA P-256 key
    /// (cosign 3 bundles as referrers; on a push also cosign's .sig tags): PKCS#8 PEM, or a
    /// cosign key with its password in COSIGN_PASSWORD
    #[arg(long, value_name = "PATH")]
    pub sign_key: Option<PathBuf>,
}

impl SignFlag {
    /// The key, read and opened now, before anything is built.
    pub fn key(&self) -> Result<Option<std::sync::Arc<microimage::sign::Key>>> {
        self.sign_key
            .as_deref()
            .map(|p| microimage::sign::Key::load(p).map(std::sync::Arc::new))
            .transpose()
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Output Options")]
pub struct OutputFlags {
    /// Where to write: a directory gets an OCI layout, a path ending in .tar an archive
    /// (default target/microimage/<bin>/)
    #[arg(short, long, value_name = "PATH")]
    pub output: Option<PathBuf>,
    /// Output format
    #[arg(long, value_name = "oci|oci-archive|docker-archive", value_parser = |s: &str| Format::parse(s).map_err(|e| e.to_string()))]
    pub format: Option<Format>,
    /// Also load the image into the local podman or docker (this machine's platform)
    #[arg(long, value_name = "podman|docker", num_args = 0..=1, require_equals = true, default_missing_value = "auto",
          value_parser = |s: &str| Engine::parse(s).map_err(|e| e.to_string()))]
    pub load: Option<Engine>,
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Resolve Options")]
pub struct ResolveFlags {
    /// A YAML file, a directory of them (*.yaml, *.yml), or - for stdin (repeatable; printed in this order)
    #[arg(short = 'f', long = "filename", value_name = "PATH", required = true)]
    pub files: Vec<PathBuf>,
    /// Push the images to REPO/<bin> (default: $MICROIMAGE_REPO)
    #[arg(long, value_name = "REPO")]
    pub repo: Option<String>,
    /// Load the images into podman or docker instead of pushing, named microimage.local/<bin>:<digest> (for kind and minikube)
    #[arg(long, value_name = "podman|docker", num_args = 0..=1, require_equals = true, default_missing_value = "auto",
          value_parser = |s: &str| Engine::parse(s).map_err(|e| e.to_string()))]
    pub local: Option<Engine>,
}

/// The options of `resolve` and `apply`: those of `push`, and which files.
#[derive(Args, Debug)]
pub struct ResolveArgs {
    #[command(flatten)]
    pub build: BuildFlags,
    #[command(flatten)]
    pub image: ImageFlags,
    #[command(flatten)]
    pub registry: RegistryFlags,
    #[command(flatten)]
    pub sign: SignFlag,
    #[command(flatten)]
    pub files: ResolveFlags,
}

impl ResolveArgs {
    /// The library's resolve request, and the IMAGE options.
    pub fn request(&self, verbose: u8) -> Result<(ops::resolve::ResolveRequest, ImageArgs)> {
        let push = self
            .registry
            .push(None, &self.image.tags, self.sign.key()?, false);
        Ok((
            ops::resolve::ResolveRequest {
                files: self.files.files.clone(),
                repo: self.files.repo.clone(),
                local: self.files.local,
                build: self.build.request(verbose, Some(push))?,
            },
            self.build.image_args(&self.image, false)?,
        ))
    }
}

#[derive(Args, Debug)]
#[command(next_help_heading = "Output Options")]
pub struct RefsFlag {
    /// Also write the result lines (one per image, as printed on stdout) to FILE
    #[arg(long, value_name = "FILE")]
    pub image_refs: Option<PathBuf>,
}

impl RegistryFlags {
    pub fn options(&self) -> ConnectOptions {
        ConnectOptions {
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
        }
    }

    /// A push to `reference` (else to `$MICROIMAGE_REPO/<bin>:<tag>`), adding `tags`,
    /// signed with `sign`.
    pub fn push(
        &self,
        reference: Option<String>,
        tags: &[String],
        sign: Option<std::sync::Arc<microimage::sign::Key>>,
        by_digest: bool,
    ) -> ops::PushRequest {
        ops::PushRequest {
            reference,
            default_repository: std::env::var("MICROIMAGE_REPO").ok(),
            tags: tags.to_vec(),
            options: self.options(),
            sign,
            by_digest,
        }
    }
}

impl BuildFlags {
    /// `image`'s IMAGE options with this build's `--no-auditable`, `--allocator`,
    /// `--no-pid1-signals`, `--thread-stack-size` and `--build-std`.
    pub fn image_args(&self, image: &ImageFlags, named: bool) -> Result<ImageArgs> {
        let mut args = image.args(named)?;
        args.auditable = self.no_auditable.then_some(false);
        args.allocator = self.allocator;
        args.pid1_signals = self.no_pid1_signals.then_some(false);
        args.thread_stack_size = self.thread_stack_size.clone();
        args.build_std = self.build_std;
        Ok(args)
    }

    /// The library's build request for these flags (`push` for `cargo microimage push`).
    pub fn request(
        &self,
        verbose: u8,
        push: Option<ops::PushRequest>,
    ) -> Result<ops::BuildRequest> {
        Ok(ops::BuildRequest {
            cargo: self.cargo_options(verbose)?,
            platforms: if self.platform.is_empty() && self.target.is_empty() {
                Vec::new()
            } else {
                platform::resolve(&self.platform, &self.target)?
            },
            workspace: self.workspace,
            exclude: self.exclude.clone(),
            only: Vec::new(),
            push,
            sign: None,
        })
    }

    fn cargo_options(&self, verbose: u8) -> Result<CargoOptions> {
        let profile =
            match (&self.profile, self.release) {
                (Some(p), true) if p != "release" => return Err(Error::usage(format!(
                    "conflicting usage of --profile={p} and --release"
                ))
                .with_help(
                    "--release is the same as --profile release (the default); pass one of them",
                )),
                (Some(p), _) => p.clone(),
                (None, _) => "release".to_string(),
            };
        Ok(CargoOptions {
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
            profile,
            locked: self.locked,
            frozen: self.frozen,
            offline: self.offline,
            strip: !self.no_strip,
            jobs: self.jobs.clone(),
            keep_going: self.keep_going,
            ignore_rust_version: self.ignore_rust_version,
            target_dir: self.target_dir.clone(),
            config: self.config.clone(),
            verbose,
        })
    }
}

impl ImageFlags {
    /// The IMAGE options as the library takes them; `--source-date-epoch` defaults to
    /// `$SOURCE_DATE_EPOCH`. `--tag` names the image only for local output (`push` passes
    /// `named = false`: there it adds tags).
    pub fn args(&self, named: bool) -> Result<ImageArgs> {
        let source_date_epoch = microimage::settings::source_date_epoch(self.source_date_epoch)?;
        Ok(ImageArgs {
            tags: if named { self.tags.clone() } else { Vec::new() },
            labels: self.label.clone(),
            annotations: self.annotation.clone(),
            env: self.env.clone(),
            expose: self.expose.clone(),
            user: self.user.clone(),
            workdir: self.workdir.clone(),
            args: self.args.clone(),
            ca_certs: self.ca_certs.clone(),
            include: self.include.clone(),
            tzdata: self.tzdata,
            source_date_epoch,
            compression: self.compression,
            compression_level: self.compression_level,
            auditable: None,
            sbom: self.sbom.clone(),
            provenance: self.provenance,
            allocator: None,
            pid1_signals: None,
            thread_stack_size: None,
            build_std: None,
            base: self.base.clone(),
        })
    }
}

impl OutputFlags {
    pub fn options(&self) -> OutputOptions {
        OutputOptions {
            output: self.output.clone(),
            format: self.format,
            load: self.load,
        }
    }
}

/// Parses the command line (as given to the process). Usage lines say `cargo microimage`,
/// what users type; the completion scripts are made from [`Cli`] itself, whose binary name
/// is the installed `cargo-microimage`.
pub fn parse(args: Vec<OsString>) -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command()
        .bin_name("cargo microimage")
        .get_matches_from(normalise(args));
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

/// Drops the `microimage` cargo passes, and puts `build` where no subcommand is named —
/// after any global flags (`cargo microimage -v --color never` is `build`, like cargo).
/// A word that is not a subcommand is left where it is, so that clap reports it with a
/// suggestion (`biuld` → `build`) instead of taking it for an argument of `build`.
pub fn normalise(mut args: Vec<OsString>) -> Vec<OsString> {
    if args.get(1).is_some_and(|a| a == "microimage") {
        args.remove(1);
    }
    let mut at = 1;
    while let Some(arg) = args.get(at).and_then(|a| a.to_str()) {
        let vs = arg
            .strip_prefix('-')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c == 'v'));
        if vs
            || ["--verbose", "-q", "--quiet"].contains(&arg)
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
    let first = args.get(at).map(|a| a.to_string_lossy().into_owned());
    let implied_build = match first.as_deref() {
        None => true,
        Some(word) if ["-h", "--help", "-V", "--version"].contains(&word) => false,
        Some(word) => word.starts_with('-'),
    };
    if implied_build {
        args.insert(at.min(args.len()), "build".into());
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
            (&["c", "microimage", "-vv"], &["c", "-vv", "build"]),
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
            // Not a subcommand: left for clap to report with a suggestion.
            (&["c", "microimage", "biuld"], &["c", "biuld"]),
        ];
        for (given, expected) in cases {
            assert_eq!(norm(given), *expected, "{given:?}");
        }
    }

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// The `cargo microimage …` command lines of a shell script (YAML `run:`/`script:`
    /// text): continuation lines joined, cut at the first `|`, `>`, `;` or `&&`, CI
    /// expressions (`${{ … }}`) and command substitutions (`$(…)`) turned into one word.
    fn microimage_lines(script: &str) -> Vec<Vec<String>> {
        let joined = script.replace("\\\n", " ");
        let mut out = Vec::new();
        for line in joined.lines() {
            let Some(at) = line.find("cargo microimage") else {
                continue;
            };
            let mut text = line[at..].to_string();
            for (open, close) in [("${{", "}}"), ("$(", ")")] {
                while let Some(start) = text.find(open) {
                    let end = text[start..]
                        .find(close)
                        .map_or(text.len(), |e| start + e + close.len());
                    text.replace_range(start..end, "VALUE");
                }
            }
            let text = text.split(" # ").next().unwrap_or(&text);
            let words = shlex::split(text).unwrap_or_else(|| panic!("unbalanced quotes: {text}"));
            let end = words
                .iter()
                .position(|w| {
                    ["|", ">", ";", "&&", "||"].contains(&w.as_str()) || w.starts_with('>')
                })
                .unwrap_or(words.len());
            out.push(words[..end].to_vec());
        }
        out
    }

    /// Every string in a YAML document (the scripts are among them).
    fn strings(yaml: &yaml_rust2::Yaml, out: &mut Vec<String>) {
        use yaml_rust2::Yaml;
        match yaml {
            Yaml::String(s) => out.push(s.clone()),
            Yaml::Array(items) => items.iter().for_each(|i| strings(i, out)),
            Yaml::Hash(map) => map.iter().for_each(|(k, v)| {
                strings(k, out);
                strings(v, out);
            }),
            _ => {}
        }
    }

    /// The CI recipes in docs/ci are valid YAML, and every `cargo microimage` command in
    /// them is one this CLI accepts (an explicit subcommand, flags it knows).
    #[test]
    fn ci_recipes_parse_and_their_commands_are_accepted() {
        use clap::FromArgMatches;
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ci");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yml"))
            .collect();
        files.sort();
        assert_eq!(files.len(), 2, "{files:?}");
        let mut subcommands = std::collections::BTreeSet::new();
        for file in &files {
            let text = std::fs::read_to_string(file).unwrap();
            let docs = yaml_rust2::YamlLoader::load_from_str(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(docs.len(), 1, "{}", file.display());
            let mut all = Vec::new();
            strings(&docs[0], &mut all);
            let lines: Vec<Vec<String>> = all.iter().flat_map(|s| microimage_lines(s)).collect();
            assert!(lines.len() >= 2, "{}: {lines:?}", file.display());
            for words in lines {
                let args: Vec<OsString> = std::iter::once("cargo-microimage".into())
                    .chain(words.iter().skip(1).map(Into::into))
                    .collect();
                let matches = Cli::command()
                    .bin_name("cargo microimage")
                    .try_get_matches_from(normalise(args))
                    .unwrap_or_else(|e| panic!("{}: {words:?}:\n{e}", file.display()));
                let cli = Cli::from_arg_matches(&matches).unwrap();
                assert_ne!(words.get(2).map(String::as_str), None, "{words:?}");
                subcommands.insert(
                    format!("{:?}", cli.command)
                        .split([' ', '{'])
                        .next()
                        .unwrap()
                        .to_string(),
                );
            }
        }
        // The recipes push by digest per platform and merge at the end.
        assert!(
            subcommands.contains("Push") && subcommands.contains("Merge"),
            "{subcommands:?}"
        );
    }

    #[test]
    fn the_recipe_line_reader_sees_what_the_shell_would_run() {
        let script = "export X=1\ncargo microimage push \"$IMAGE\" --platform ${{ matrix.platform }} \\\n  --by-digest > out.txt\ncargo microimage merge --push a/b:1 $(cat x) | tee y # note\n";
        assert_eq!(
            microimage_lines(script),
            [
                vec![
                    "cargo",
                    "microimage",
                    "push",
                    "$IMAGE",
                    "--platform",
                    "VALUE",
                    "--by-digest"
                ],
                vec!["cargo", "microimage", "merge", "--push", "a/b:1", "VALUE"],
            ]
        );
    }

    #[test]
    fn jobs() {
        assert!(parse_jobs("4").is_ok());
        assert!(parse_jobs("-1").is_ok());
        assert!(parse_jobs("default").is_ok());
        assert!(parse_jobs("0").is_err());
        assert!(parse_jobs("many").is_err());
    }
}
