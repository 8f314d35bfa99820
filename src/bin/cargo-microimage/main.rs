//! The `cargo-microimage` binary: parses the command line with clap ([`cli`]) into the
//! library's option values, dispatches to the library's command (`microimage::ops`), and
//! prints results on stdout (one line per
//! image, or JSON lines with `--message-format json`). Status and errors go to stderr.

mod cli;
mod completions;
#[cfg(test)]
mod docs;

use std::ffi::OsString;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use microimage::message::{self, BinaryVerified, Record, RunFinished};
use microimage::ops::{self, Outcome};
use microimage::shell::{Shell, Verbosity};
use microimage::sinks::{OutputOptions, Replace};
use microimage::{inspect, platform, Error, Result};

use cli::{Cli, Color, Command, MessageFormat};

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // cargo-zigbuild's wrapper directory holds an `ar` symlink to this binary, and its
    // scripts run `cargo-microimage zig cc -- …`: internal, so not part of the CLI.
    if Path::new(args.first().map_or("".as_ref(), |a| a.as_os_str()))
        .file_stem()
        .is_some_and(|n| n == "ar")
    {
        microimage::build::toolchain::use_direct_zig();
        let zig = cargo_zigbuild::Zig::Ar {
            args: args
                .iter()
                .skip(1)
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
        };
        return run_zig(&zig);
    }
    if args.get(1).is_some_and(|a| a == "zig") {
        microimage::build::toolchain::use_direct_zig();
        #[derive(Parser)]
        #[command(name = "cargo-microimage zig")]
        struct ZigCli {
            #[command(subcommand)]
            zig: cargo_zigbuild::Zig,
        }
        let mut rest = args.clone();
        rest.remove(1);
        return run_zig(&ZigCli::parse_from(rest).zig);
    }
    // cargo runs this binary as its RUSTC, linked as `rustc`, to add path remapping inside
    // any compiler cache (`build::wrapper::Rustc`).
    if microimage::build::wrapper::is_rustc(&args) {
        let code = microimage::build::wrapper::rustc(&args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // cargo runs this binary as its RUSTC_WORKSPACE_WRAPPER to add dependency data and the
    // runtime to the link (`build::wrapper`): `microimage-rustc-<hash> <rustc> <args…>`,
    // only in a build it set up.
    if std::env::var_os(microimage::build::wrapper::DATA_DIR).is_some() && args.len() >= 2 {
        let code = microimage::build::wrapper::wrap(&args);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let cli = cli::parse(args);
    let verbosity = if cli.quiet {
        Verbosity::Quiet
    } else if cli.verbose > 0 {
        Verbosity::Verbose
    } else {
        Verbosity::Normal
    };
    let shell = Shell::new(verbosity);
    match set_color(cli.color).and_then(|()| run(&cli, &shell)) {
        Ok(code) => code,
        Err(e) => {
            shell.error(&e);
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Applies `--color` (or cargo's `CARGO_TERM_COLOR`) to this process and to the cargo it runs.
fn set_color(flag: Option<Color>) -> Result<()> {
    let choice = match flag {
        Some(c) => c,
        None => match std::env::var("CARGO_TERM_COLOR").ok().as_deref() {
            None | Some("") | Some("auto") => Color::Auto,
            Some("always") => Color::Always,
            Some("never") => Color::Never,
            Some(other) => {
                return Err(Error::usage(format!(
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

/// Runs zig for the build of a C dependency (called by cargo, through cc-rs or rustc).
fn run_zig(zig: &cargo_zigbuild::Zig) -> ExitCode {
    if let cargo_zigbuild::Zig::Cc { args } | cargo_zigbuild::Zig::Cxx { args } = zig {
        if microimage::build::toolchain::is_cl_style_probe(args) {
            // What zig says, without first building a C library for nothing.
            eprintln!("zig: error: unknown argument: '-?'");
            return ExitCode::FAILURE;
        }
    }
    match zig.execute() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: zig failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command; with `--message-format json`, ends with a `run-finished` record.
fn run(cli: &Cli, shell: &Shell) -> Result<ExitCode> {
    let out = Printer {
        json: cli.message_format == MessageFormat::Json,
    };
    let result = dispatch(cli, shell, &out);
    let finished = match &result {
        Ok(code) if *code == ExitCode::SUCCESS => RunFinished::success(),
        Ok(_) => RunFinished {
            success: false,
            error: None,
        },
        Err(e) => RunFinished::failure(e),
    };
    out.record(&Record::RunFinished(finished));
    result
}

fn dispatch(cli: &Cli, shell: &Shell, out: &Printer) -> Result<ExitCode> {
    match &cli.command {
        Command::Build {
            build,
            image,
            output,
            sign,
            refs,
        } => {
            let mut request = build.request(cli.verbose, None)?;
            request.sign = sign.key()?;
            let args = build.image_args(image, true)?;
            let outcomes = ops::build(&request, &args, &output.options(), shell)?;
            out.outcomes(&outcomes, refs.image_refs.as_deref(), shell)?;
        }
        Command::Push {
            reference,
            by_digest,
            build,
            image,
            registry,
            sign,
            refs,
        } => {
            // With push, --tag adds tags; the name comes from REFERENCE or $MICROIMAGE_REPO.
            let push = registry.push(reference.clone(), &image.tags, sign.key()?, *by_digest);
            let request = build.request(cli.verbose, Some(push))?;
            let args = build.image_args(image, false)?;
            let outcomes = ops::push::push(&request, &args, shell)?;
            out.outcomes(&outcomes, refs.image_refs.as_deref(), shell)?;
        }
        Command::Pack {
            binaries,
            bin,
            platform,
            manifest_path,
            push,
            by_digest,
            registry,
            sign,
            image,
            output,
            refs,
        } => {
            let request = ops::PackRequest {
                binaries: binaries.clone(),
                bin_name: bin.clone(),
                platforms: if platform.is_empty() {
                    Vec::new()
                } else {
                    platform::resolve(platform, &[])?
                },
                manifest_path: manifest_path.clone(),
                push: push.as_ref().map(|reference| {
                    registry.push(Some(reference.clone()), &image.tags, None, *by_digest)
                }),
                sign: sign.key()?,
            };
            let args = image.args(push.is_none())?;
            let outcome = ops::pack(&request, &args, &output.options(), shell)?;
            out.outcomes(&[outcome], refs.image_refs.as_deref(), shell)?;
        }
        Command::Merge {
            sources,
            push,
            by_digest,
            tags,
            output,
            format,
            registry,
            sign,
            refs,
        } => {
            let request = ops::MergeRequest {
                sources: sources.clone(),
                tags: tags.clone(),
                push: push.as_ref().map(|reference| {
                    registry.push(Some(reference.clone()), tags, None, *by_digest)
                }),
                options: registry.options(),
                sign: sign.key()?,
            };
            let options = OutputOptions {
                output: output.clone(),
                format: *format,
                load: None,
            };
            let outcome = ops::merge(&request, &options, shell)?;
            out.outcomes(&[outcome], refs.image_refs.as_deref(), shell)?;
        }
        Command::Resolve { resolve } => {
            if out.json {
                return Err(Error::usage(
                    "resolve prints YAML on stdout; --message-format json would mix records into it",
                )
                .with_help("drop --message-format json (status lines stay on stderr)"));
            }
            let (request, args) = resolve.request(cli.verbose)?;
            print_stdout(&ops::resolve::resolve(&request, &args, shell)?);
        }
        Command::Apply {
            resolve,
            kubectl_args,
        } => {
            let (request, args) = resolve.request(cli.verbose)?;
            let code = ops::apply::apply(&request, &args, kubectl_args, shell)?;
            if code != 0 {
                return Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)));
            }
        }
        Command::Inspect { image, registry } => {
            let report = ops::inspect::inspect(image, &registry.options(), shell)?;
            if out.json {
                out.record(&Record::ImageInspected(report));
            } else {
                print_stdout(&inspect::render(&report));
            }
        }
        Command::Verify { binaries } => {
            let checked = ops::verify::verify(binaries, shell);
            return Ok(out.verified(&checked, shell));
        }
        Command::Completions { shell: target } => {
            print_stdout(&completions::script(*target));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Where results go: stdout, as lines for people or JSON records.
struct Printer {
    json: bool,
}

impl Printer {
    /// Prints what `verify` found about each binary (a line, or a JSON record), and each
    /// problem as an error; exit status 1 if any binary fails.
    fn verified(&self, checked: &[ops::verify::Checked], shell: &Shell) -> ExitCode {
        for c in checked {
            let path = &c.path;
            if self.json {
                let problem = c.error.as_ref().map(|e| e.message().to_string());
                let record = match &c.verdict {
                    Some(v) => BinaryVerified {
                        path: message::path_text(path),
                        is_static: v.is_static(),
                        platform: v.platform.map(|p| p.short_name()),
                        machine: v.machine.clone(),
                        interpreter: v.interpreter.clone(),
                        needed: v.needed.clone(),
                        size: v.size,
                        crates: c.crates,
                        allocator: c.runtime.map(|r| r.allocator),
                        pid1_signals: c.runtime.map(|r| r.pid1_signals),
                        allocator_linked: c.runtime.map(|r| r.allocator_linked),
                        thread_stack: c.runtime.and_then(|r| r.thread_stack),
                        ok: problem.is_none(),
                        problem,
                    },
                    None => BinaryVerified {
                        path: message::path_text(path),
                        is_static: false,
                        platform: None,
                        machine: String::new(),
                        interpreter: None,
                        needed: Vec::new(),
                        size: 0,
                        crates: None,
                        allocator: None,
                        pid1_signals: None,
                        allocator_linked: None,
                        thread_stack: None,
                        ok: false,
                        problem,
                    },
                };
                self.record(&Record::BinaryVerified(record));
            } else if let Some(v) = &c.verdict {
                let recorded = match c.crates {
                    Some(n) => format!(", {n} crate{} recorded", if n == 1 { "" } else { "s" }),
                    None => ", no dependency data".to_string(),
                };
                let runtime = c
                    .runtime
                    .map(|r| format!(", {}", r.describe()))
                    .unwrap_or_default();
                let state = match (c.platform, v.is_static()) {
                    (Some(p), _) => format!("static, {p} ({}){recorded}{runtime}", v.machine),
                    (None, false) => format!("NOT static ({})", v.machine),
                    (None, true) => format!("cannot run in an image ({})", v.machine),
                };
                println_stdout(&format!("{}: {state}", path.display()));
            } else {
                println_stdout(&format!("{}: not an executable", path.display()));
            }
            if let Some(e) = &c.error {
                shell.error(e);
            }
        }
        if checked.iter().all(|c| c.ok()) {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        }
    }

    fn record(&self, record: &Record) {
        if self.json {
            println_stdout(&record.to_line());
        }
    }

    /// Prints the result of each image (a line, or a JSON record) and, with
    /// `--image-refs`, writes the result lines to that file too, atomically, once every
    /// image is done.
    fn outcomes(
        &self,
        outcomes: &[Outcome],
        image_refs: Option<&Path>,
        shell: &Shell,
    ) -> Result<()> {
        let mut lines = String::new();
        for outcome in outcomes {
            let line = result_line(outcome);
            if self.json {
                self.record(&Record::of_outcome(outcome));
            } else {
                println_stdout(&line);
            }
            lines.push_str(&line);
            lines.push('\n');
        }
        if let Some(path) = image_refs {
            microimage::sinks::write_file(path, Replace::AnyFile, shell, |file| {
                file.write_all(lines.as_bytes())
                    .map_err(|e| Error::io("writing", path, e))
            })
            .map_err(|e| e.context("--image-refs"))?;
        }
        Ok(())
    }
}

/// The line printed for an image: `REF@sha256:…` for a push, `TRANSPORT:PATH[:TAG] sha256:…`
/// for an image on disk.
fn result_line(outcome: &Outcome) -> String {
    let set = &outcome.set;
    match (&outcome.pushed, &outcome.destination) {
        (Some(pushed), _) => pushed.pinned.clone(),
        (None, Some(destination)) => format!("{} {}", destination.reference(set), set.index.digest),
        (None, None) => set.index.digest.to_string(),
    }
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
