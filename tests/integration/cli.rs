//! The command line as a cargo user meets it: cargo's flags reach cargo with cargo's
//! meanings, typos get suggestions, `--help` is grouped like `cargo build --help`,
//! completions work in bash, zsh and fish through `cargo microimage …`, `--image-refs`
//! writes the result lines, `inspect` takes what the tool prints, and the default binary
//! is chosen the way cargo chooses it, and long steps say that they are going on.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn mistyped_subcommands_and_flags_get_suggestions() {
    let out =
        run(tool().args(["microimage", "biuld"])).fails_with(2, "unrecognized subcommand 'biuld'");
    assert!(
        out.stderr.contains("a similar subcommand exists: 'build'"),
        "{}",
        out.stderr
    );
    let out = run(tool().args(["microimage", "build", "--platfrom", "x"]))
        .fails_with(2, "unexpected argument '--platfrom'");
    assert!(
        out.stderr
            .contains("a similar argument exists: '--platform'"),
        "{}",
        out.stderr
    );
    run(tool().args(["microimage", "build", "--release", "--profile", "dev"]))
        .fails_with(2, "conflicting usage of --profile=dev and --release");
    run(tool().args(["microimage", "build", "-j", "0"])).fails_with(2, "jobs may not be 0");
}

#[test]
fn help_groups_options_like_cargo_build() {
    let help = run(tool().args(["microimage", "build", "--help"]))
        .ok()
        .stdout;
    let headings = [
        "Options:",
        "Package Selection:",
        "Target Selection:",
        "Feature Selection:",
        "Compilation Options:",
        "Manifest Options:",
        "Image Options:",
        "Output Options:",
    ];
    let mut at = 0;
    for heading in headings {
        let found = help[at..]
            .find(&format!("\n{heading}\n"))
            .unwrap_or_else(|| panic!("no `{heading}` after byte {at}:\n{help}"));
        at += found + 1;
    }
    for flag in [
        "--release",
        "--jobs",
        "--target-dir",
        "--keep-going",
        "--config",
        "--ignore-rust-version",
        "--image-refs",
    ] {
        assert!(help.contains(flag), "{flag} missing:\n{help}");
    }
    assert!(help.contains("Usage: cargo microimage build"), "{help}");
    let top = run(tool().args(["microimage", "--help"])).ok().stdout;
    assert!(
        !top.contains("zig"),
        "the internal zig helper is offered:\n{top}"
    );
}

/// A hello copy built with cargo's own flags, the way docs/commands.md shows them.
#[test]
fn cargo_flags_reach_cargo_with_cargos_meanings() {
    let c = fixture("hello");
    let work = c.path().join("work");
    std::fs::create_dir(&work).unwrap();
    copy_crate(&repo().join("tests/fixtures/hello"), &work);
    let out = run(tool()
        .current_dir(&work)
        .env_remove("CARGO_TARGET_DIR")
        .args([
            "microimage",
            "build",
            "-vv",
            "--bin",
            "hello",
            "--release",
            "-j",
            "2",
            "--keep-going",
            "--target-dir",
            "../alt-target",
            "--config",
            "profile.release.lto=true",
        ]))
    .ok();
    let alt = c.path().join("alt-target");
    let bin = alt.join("x86_64-unknown-linux-musl/release/hello");
    assert!(
        bin.is_file(),
        "--target-dir: no {}\n{}",
        bin.display(),
        out.stderr
    );
    let (reference, _) = result_line(&out.stdout);
    assert_eq!(
        reference,
        format!("oci:{}:1.2.3", alt.join("microimage/hello").display()),
        "the default output follows --target-dir"
    );
    // -vv reaches cargo: it shows each rustc run with its environment …
    assert!(
        out.stderr.contains("CARGO_PKG_NAME=hello"),
        "{}",
        out.stderr
    );
    // … and there, the --config value has turned LTO on.
    let rustc_line = out
        .stderr
        .lines()
        .find(|l| l.contains("CARGO_CRATE_NAME=hello") && l.contains("rustc"))
        .unwrap_or_else(|| panic!("no rustc line for hello:\n{}", out.stderr));
    assert!(rustc_line.contains("-C lto"), "{rustc_line}");
    for flag in ["--jobs 2", "--keep-going", "-vv"] {
        let quoted: String = flag
            .split(' ')
            .map(|w| format!("\"{w}\""))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            out.stderr.contains(&quoted),
            "{flag} not passed:\n{}",
            out.stderr
        );
    }

    // --ignore-rust-version, with a rust-version no toolchain has.
    let manifest = work.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        text.replace(
            "edition = \"2021\"",
            "edition = \"2021\"\nrust-version = \"1.999\"",
        ),
    )
    .unwrap();
    let build = |extra: &[&str]| {
        run(tool()
            .current_dir(&work)
            .args([
                "microimage",
                "build",
                "--bin",
                "hello",
                "--target-dir",
                "../alt-target",
            ])
            .args(extra))
    };
    build(&[]).fails_with(1, "requires rustc 1.999");
    build(&["--ignore-rust-version"]).ok();
}

#[test]
fn the_default_binary_leaves_out_those_whose_features_are_off() {
    let c = tmp();
    let d = c.path();
    std::fs::create_dir_all(d.join("src/bin")).unwrap();
    std::fs::write(
        d.join("Cargo.toml"),
        "[package]\nname = \"gated\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n\
         [features]\nextra = []\n\n[[bin]]\nname = \"gated\"\npath = \"src/main.rs\"\n\n\
         [[bin]]\nname = \"gated-extra\"\npath = \"src/bin/extra.rs\"\nrequired-features = [\"extra\"]\n\n\
         [workspace]\n",
    )
    .unwrap();
    std::fs::write(d.join("src/main.rs"), "fn main() { println!(\"main\"); }\n").unwrap();
    std::fs::write(
        d.join("src/bin/extra.rs"),
        "fn main() { println!(\"extra\"); }\n",
    )
    .unwrap();
    let build = |extra: &[&str]| {
        run(tool()
            .current_dir(d)
            .args(["microimage", "build", "-o"])
            .arg(d.join("image"))
            .args(extra))
    };
    let out = build(&[]).ok();
    assert!(out.stderr.contains("Building gated for"), "{}", out.stderr);
    let out = build(&["--features", "extra"]).fails_with(2, "has several binaries");
    assert!(
        out.stderr.contains("`gated`, `gated-extra`"),
        "{}",
        out.stderr
    );
    build(&["--bin", "gated-extra"]).fails_with(2, "requires the features `extra`");
    build(&["--bin", "gated-extra", "--features", "extra"]).ok();
}

/// bash with bash-completion, cargo's own completion (from the toolchain, as rustup
/// installs it) and ours; `complete` is asked for the function registered for `cargo`,
/// as bash does on TAB.
fn bash_complete(words: &[&str]) -> Vec<String> {
    let sysroot = run(Command::new("rustc").args(["--print", "sysroot"]))
        .ok()
        .stdout;
    let cargo_completion = Path::new(sysroot.trim()).join("etc/bash_completion.d/cargo");
    let line = words.join(" ");
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source /usr/share/bash-completion/bash_completion
source '{cargo}'
source <('{tool}' completions bash)
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))
COMP_LINE='{line}'; COMP_POINT=${{#COMP_LINE}}
spec=$(complete -p '{command}')
[[ $spec =~ -F\ ([^ ]+) ]] || exit 3
"${{BASH_REMATCH[1]}}" '{command}' "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}"
"#,
        cargo = cargo_completion.display(),
        tool = env!("CARGO_BIN_EXE_cargo-microimage"),
        words = quoted.join(" "),
        command = words[0],
    );
    let out = run(Command::new("bash").arg("-c").arg(script)).ok();
    out.stdout.lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_cargo_microimage_and_keeps_cargos_own_completion() {
    assert_eq!(
        bash_complete(&["cargo", "microimage", "build", "--plat"]),
        ["--platform"]
    );
    let subcommands = bash_complete(&["cargo", "microimage", ""]);
    for s in ["build", "push", "pack", "inspect", "verify", "completions"] {
        assert!(subcommands.iter().any(|w| w == s), "{s}: {subcommands:?}");
    }
    assert!(!subcommands.iter().any(|w| w == "zig"), "{subcommands:?}");
    assert_eq!(
        bash_complete(&["cargo", "microimage", "push", "--ca-f"]),
        ["--ca-file"]
    );
    // cargo's own completion still answers for everything else.
    assert_eq!(bash_complete(&["cargo", "bui"]), ["build"]);
    // And the binary called directly.
    assert_eq!(bash_complete(&["cargo-microimage", "pu"]), ["push"]);
}

#[test]
fn fish_completes_cargo_microimage() {
    let tool = env!("CARGO_BIN_EXE_cargo-microimage");
    let script = format!(
        "{tool} completions fish | source\n\
         complete -C 'cargo microimage build --plat'\n\
         echo ---\n\
         complete -C 'cargo microimage '\n"
    );
    let out = run(Command::new("fish").args(["--no-config", "-c", &script])).ok();
    let (options, subcommands) = out.stdout.split_once("---").unwrap();
    assert!(options.trim().starts_with("--platform"), "{}", out.stdout);
    assert!(
        subcommands.contains("\nbuild\t") || subcommands.contains("build\t"),
        "{}",
        out.stdout
    );
    assert!(!subcommands.contains("zig"), "{}", out.stdout);
}

/// zsh's completion system driven through a pseudo-terminal (zsh/zpty): `compinit` with
/// cargo's own `_cargo` (from the toolchain) and ours in `fpath`, then TAB.
#[test]
fn zsh_completes_cargo_microimage_through_cargos_completion() {
    let t = tmp();
    let functions = t.path().join("functions");
    std::fs::create_dir(&functions).unwrap();
    let sysroot = run(Command::new("rustc").args(["--print", "sysroot"]))
        .ok()
        .stdout;
    std::fs::copy(
        Path::new(sysroot.trim()).join("share/zsh/site-functions/_cargo"),
        functions.join("_cargo"),
    )
    .unwrap();
    let ours = run(tool().args(["completions", "zsh"])).ok().stdout;
    std::fs::write(functions.join("_cargo-microimage"), ours).unwrap();
    let driver = format!(
        r#"zmodload zsh/zpty
zpty z 'zsh -f -i'
zpty -w z "PS1='%% '; fpath=({functions} \$fpath); autoload -Uz compinit; compinit -u -d {dump}"
zpty -w -n z $'cargo microimage build --plat\t'
sleep 3
out=
while zpty -r -t z chunk; do out+=$chunk; done
zpty -d z
print -r -- "$out"
"#,
        functions = functions.display(),
        dump = t.path().join("zcompdump").display(),
    );
    let out = run(Command::new("zsh").args(["-f", "-c", &driver])).ok();
    assert!(
        out.stdout.contains("cargo microimage build --platform"),
        "{}",
        out.stdout
    );
}

#[test]
fn completions_into_a_closed_pipe_exit_quietly() {
    for shell in ["bash", "zsh", "fish"] {
        let mut child = tool()
            .args(["completions", shell])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        // The reading end is closed here, as `| head -1` does.
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{shell}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{shell}: {stderr}");
    }
}

#[test]
fn image_refs_holds_the_result_lines_and_json_is_unchanged() {
    let c = fixture("hello");
    let refs = c.path().join("refs.txt");
    let out = run(tool()
        .current_dir(c.path())
        .args(["microimage", "build", "--bin", "hello", "--image-refs"])
        .arg(&refs))
    .ok();
    assert_eq!(std::fs::read_to_string(&refs).unwrap(), out.stdout);
    let json = run(tool()
        .current_dir(c.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--message-format",
            "json",
            "--image-refs",
        ])
        .arg(&refs))
    .ok();
    let result = first_json(&json.stdout);
    assert_eq!(result["reason"], "image-written");
    assert_eq!(std::fs::read_to_string(&refs).unwrap(), out.stdout);
    let entries: Vec<_> = std::fs::read_dir(c.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".microimage"))
        .collect();
    assert!(entries.is_empty(), "temporaries left: {entries:?}");
}

#[test]
fn inspect_takes_the_references_the_tool_prints() {
    let c = fixture("hello");
    let out = run(tool()
        .current_dir(c.path())
        .args(["microimage", "build", "--bin", "hello"]))
    .ok();
    let (reference, digest) = result_line(&out.stdout);
    assert!(reference.starts_with("oci:/"), "{reference}");
    let report = run(tool().args(["inspect", &reference])).ok().stdout;
    assert!(report.contains(&format!("Index:    {digest}")), "{report}");
    let (layout, _) = reference
        .trim_start_matches("oci:")
        .rsplit_once(':')
        .unwrap();
    run(tool().args(["inspect", &format!("oci:{layout}:nope")]))
        .fails_with(1, "has no image tagged `nope`")
        .stderr
        .contains("its tags: 1.2.3")
        .then_some(())
        .expect("the tags are listed");
    for format in ["oci-archive", "docker-archive"] {
        let tar = c.path().join(format!("{format}.tar"));
        let out = run(tool()
            .current_dir(c.path())
            .args([
                "microimage",
                "build",
                "--bin",
                "hello",
                "--format",
                format,
                "-o",
            ])
            .arg(&tar))
        .ok();
        let (reference, _) = result_line(&out.stdout);
        assert!(reference.starts_with(&format!("{format}:/")), "{reference}");
        let report = run(tool().args(["inspect", &reference])).ok().stdout;
        assert!(report.contains(&format!("({format})")), "{report}");
        assert!(report.contains("Platform: linux/amd64"), "{report}");
    }
}

#[test]
fn packing_a_large_binary_on_a_terminal_draws_a_progress_bar() {
    let c = fixture("hello");
    let bin = cargo_build_fixture(c.path(), "hello");
    // 96 MiB of incompressible bytes after a real static binary: still the same ELF file.
    let big = c.path().join("big");
    let mut data = std::fs::read(&bin).unwrap();
    let mut noise = std::fs::File::open("/dev/urandom").unwrap();
    let mut extra = vec![0u8; 96 << 20];
    std::io::Read::read_exact(&mut noise, &mut extra).unwrap();
    data.extend_from_slice(&extra);
    std::fs::write(&big, &data).unwrap();
    let stdout = c.path().join("stdout");
    let mut cmd = tool();
    cmd.current_dir(c.path())
        .args(["pack", "big", "-o"])
        .arg(c.path().join("image"));
    let terminal = on_terminal(&cmd, &stdout);
    assert!(
        terminal.contains("Packing ["),
        "no progress bar:\n{terminal}"
    );
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    // Without a terminal, and with -q, nothing of the bar.
    let plain = run(tool()
        .current_dir(c.path())
        .args(["pack", "big", "-o"])
        .arg(c.path().join("image")))
    .ok();
    assert!(!plain.stderr.contains("["), "{}", plain.stderr);
    let quiet = on_terminal(
        tool()
            .current_dir(c.path())
            .args(["-q", "pack", "big", "-o"])
            .arg(c.path().join("image")),
        &stdout,
    );
    assert!(!quiet.contains("Packing"), "{quiet}");
}

#[test]
fn the_first_zig_build_for_a_target_says_what_takes_the_time() {
    let c = fixture("cfile");
    let cache = c.path().join("user-cache");
    let build = || {
        run(tool()
            .current_dir(c.path())
            .env("XDG_CACHE_HOME", &cache)
            .args([
                "microimage",
                "build",
                "--locked",
                "--platform",
                "linux/arm64",
            ]))
        .ok()
    };
    let first = build();
    assert!(
        first
            .stderr
            .contains("Preparing zig's C library for aarch64-unknown-linux-musl"),
        "{}",
        first.stderr
    );
    let second = build();
    assert!(second.stderr.contains("Using zig"), "{}", second.stderr);
    assert!(!second.stderr.contains("Preparing"), "{}", second.stderr);
}

/// Every `--message-format json` line reads back into the library's record types, and the
/// last one says whether the run succeeded — with the error's kind, file and key when not.
#[test]
fn json_records_deserialize_into_their_types_and_end_with_run_finished() {
    use microimage::message::Record;
    let c = fixture("hello");
    let records = |out: &Run| -> Vec<Record> {
        out.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let ok = run(tool().current_dir(c.path()).args([
        "microimage",
        "build",
        "--bin",
        "hello",
        "--message-format",
        "json",
    ]))
    .ok();
    let got = records(&ok);
    assert!(matches!(got[0], Record::ImageWritten(_)), "{got:?}");
    assert!(matches!(got.last(), Some(Record::RunFinished(f)) if f.success && f.error.is_none()));
    let written = match &got[0] {
        Record::ImageWritten(w) => w.clone(),
        _ => unreachable!(),
    };
    let binary = &written.platforms[0]
        .binary
        .as_deref()
        .expect("a packed binary");
    let verified = run(tool().args(["verify", binary, "--message-format", "json"])).ok();
    assert!(matches!(records(&verified)[0], Record::BinaryVerified(ref v) if v.ok && v.is_static));
    let reference = written.reference.clone().unwrap();
    let inspected = run(tool().args(["inspect", &reference, "--message-format", "json"])).ok();
    assert!(
        matches!(records(&inspected)[0], Record::ImageInspected(ref r) if r.index_digest.as_deref() == Some(written.index_digest.as_str()))
    );

    // A bad value in Cargo.toml: the final record names the kind, the file and the key.
    let manifest = c.path().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[package.metadata.microimage]\ntzdata = \"yes\"\n"),
    )
    .unwrap();
    let bad = run(tool().current_dir(c.path()).args([
        "microimage",
        "build",
        "--bin",
        "hello",
        "--message-format",
        "json",
    ]));
    assert_eq!(bad.code, 1);
    match records(&bad).last() {
        Some(Record::RunFinished(f)) => {
            assert!(!f.success);
            let e = f.error.as_ref().unwrap();
            assert_eq!(e.kind, "config");
            assert_eq!(e.key.as_deref(), Some("tzdata"));
            assert_eq!(e.file.as_deref(), Some(manifest.to_str().unwrap()));
            assert_eq!(e.exit_code, 1);
        }
        other => panic!("{other:?}"),
    }
}
