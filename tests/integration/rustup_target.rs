//! A missing Rust target: added with `rustup target add` (with a status line) when rustup is
//! there, otherwise an error that gives the exact command. The "missing" target is simulated
//! with a `rustc` wrapper whose `--print sysroot` points at an empty sysroot; everything
//! else goes to the real compiler.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::*;

fn script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn setup(rustup_works: bool) -> (tempfile::TempDir, std::process::Command) {
    setup_with(if rustup_works { None } else { Some("exit 1") })
}

/// The rustc behind rustup's proxy (the one the fake `rustc`s hand on to).
fn real_rustc() -> std::path::PathBuf {
    let sysroot = run(std::process::Command::new("rustc").args(["--print", "sysroot"]))
        .ok()
        .stdout;
    Path::new(sysroot.trim()).join("bin/rustc")
}

/// `rustup`: records its arguments and succeeds, or (`fails`) runs that shell code.
fn setup_with(fails: Option<&str>) -> (tempfile::TempDir, std::process::Command) {
    let t = tmp();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(t.path().join("empty-sysroot")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let real = real_rustc();
    script(
        &bin.join("rustc"),
        &format!(
            "if [ \"$1 $2\" = \"--print sysroot\" ]; then echo {}; else exec {} \"$@\"; fi",
            t.path().join("empty-sysroot").display(),
            real.display()
        ),
    );
    let log = t.path().join("rustup.log");
    let rustup = match fails {
        None => format!("echo \"$@\" >> {}; exit 0", log.display()),
        Some(code) => code.to_string(),
    };
    script(&bin.join("rustup"), &rustup);
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let c = fixture("hello");
    let mut cmd = tool();
    cmd.current_dir(c.keep())
        .env("PATH", path)
        .env("RUSTC", bin.join("rustc"))
        .env("CARGO_TARGET_DIR", t.path().join("target"))
        .args(["microimage", "build", "--bin", "hello", "-o"])
        .arg(t.path().join("image"));
    (t, cmd)
}

#[test]
fn a_missing_target_is_added_with_rustup() {
    let (t, mut cmd) = setup(true);
    let out = run(&mut cmd).ok();
    assert!(
        out.stderr.contains("Installing Rust target x86_64-unknown-linux-musl (`rustup target add x86_64-unknown-linux-musl`)"),
        "{}",
        out.stderr
    );
    let log = std::fs::read_to_string(t.path().join("rustup.log")).unwrap();
    assert!(
        log.contains("target add x86_64-unknown-linux-musl"),
        "{log}"
    );
}

#[test]
fn without_rustup_the_error_gives_the_command() {
    let (t, mut cmd) = setup(false);
    run(&mut cmd).fails_with(
        1,
        "the Rust standard library for x86_64-unknown-linux-musl is not installed",
    );
    let (_t2, mut again) = setup(false);
    run(&mut again).fails_with(1, "`rustup target add x86_64-unknown-linux-musl`");
    assert!(!t.path().join("image").exists());
}

/// What rustup 1.28 prints when a Rust release does not ship a target's standard library
/// (as for armv7-unknown-linux-musleabihf with Rust 1.95 here): the reason reaches the
/// user, without rustup's backtrace, with what to do instead.
#[test]
fn a_target_rustup_cannot_install_is_refused_with_the_reason() {
    let (t, mut cmd) = setup_with(Some(
        "[ \"$1\" = --version ] && exit 0\n\
cat >&2 <<'EOF'\n\
info: downloading component rust-std\n\
info: rolling back changes\n\
error: component download failed for rust-std-x86_64-unknown-linux-musl\n\
\n\
Caused by:\n\
    0: could not download file from 'https://static.rust-lang.org/dist/2026-04-16/rust-std-1.95.0-x86_64-unknown-linux-musl.tar.xz' to '/root/.rustup/downloads/x.partial'\n\
    1: http request returned an unsuccessful status code: 404\n\
\n\
Stack backtrace:\n\
   0: anyhow::error::<impl core::convert::From<E> for anyhow::Error>::from\n\
EOF\n\
exit 1",
    ));
    let out = run(&mut cmd).fails_with(
        1,
        "rustup cannot install the Rust standard library for x86_64-unknown-linux-musl",
    );
    for needle in [
        "component download failed for rust-std-x86_64-unknown-linux-musl",
        "http request returned an unsuccessful status code: 404",
        "this Rust release does not ship x86_64-unknown-linux-musl",
        "`cargo microimage pack` it",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    assert!(
        !out.stderr.contains("backtrace") && !out.stderr.contains(".partial"),
        "{}",
        out.stderr
    );
    assert!(!t.path().join("image").exists());
}

/// A `rustup` that has no standard library to give for any target (what it says for a
/// release that does not ship one), and lists `toolchains` (shell code printing them);
/// `which --toolchain … rustc` answers with `rustc`.
fn rustup_without_std(toolchains: &str, rustc: &Path) -> String {
    format!(
        "case \"$1 $2\" in\n\
         '--version ') exit 0 ;;\n\
         'toolchain list') {toolchains} ;;\n\
         'which --toolchain') echo {} ;;\n\
         *) echo 'error: component download failed for rust-std-x86_64-unknown-linux-musl' >&2\n\
            echo '    1: http request returned an unsuccessful status code: 404' >&2; exit 1 ;;\n\
         esac",
        rustc.display()
    )
}

/// Runs `cmd` (with `extra` arguments), which must fail before compiling anything with
/// `message` and `help`, writing nothing.
fn refused_before_compiling(t: &Path, cmd: &mut std::process::Command, message: &str, help: &str) {
    let out = run(cmd).fails_with(1, message);
    assert!(out.stderr.contains(help), "{help}\n{}", out.stderr);
    assert!(!out.stderr.contains("Compiling"), "{}", out.stderr);
    assert!(!t.join("image").exists());
    assert!(!t.join("target").exists(), "cargo ran");
}

#[test]
fn a_standard_library_to_build_from_source_without_a_nightly_or_its_rust_src_is_refused_before_compiling(
) {
    // No nightly at all: `auto` and `always` say so, with the command that installs one.
    let (t, mut cmd) = setup_with(Some(&rustup_without_std(
        "echo 'stable-x86_64-unknown-linux-gnu (active, default)'",
        Path::new("/nonexistent"),
    )));
    refused_before_compiling(
        t.path(),
        &mut cmd,
        "component download failed for rust-std-x86_64-unknown-linux-musl; http request returned an unsuccessful \
         status code: 404; and it cannot be built from source here: no nightly toolchain is installed",
        "help: install one: `rustup toolchain install nightly --component rust-src` to build it from source; \
         or this Rust release does not ship x86_64-unknown-linux-musl",
    );
    refused_before_compiling(
        t.path(),
        cmd.args(["--build-std", "always"]),
        "--build-std always builds the standard library for x86_64-unknown-linux-musl from source, which needs \
         a nightly toolchain with rust-src: no nightly toolchain is installed",
        "`rustup toolchain install nightly --component rust-src`",
    );

    // A nightly without rust-src: the command that adds it to that toolchain.
    let nightly = t.path().join("nightly");
    let sysroot = nightly.join("sysroot");
    std::fs::create_dir_all(sysroot.join("bin")).unwrap();
    script(
        &nightly.join("rustc"),
        &format!(
            "case \"$1\" in --print) echo {} ;; -vV) echo 'rustc 1.97.0-nightly (0123456789 2026-11-30)' ;; esac",
            sysroot.display()
        ),
    );
    let (t, mut cmd) = setup_with(Some(&rustup_without_std(
        "echo stable-x86_64-unknown-linux-gnu; echo nightly-2026-11-01-x86_64-unknown-linux-gnu; \
         echo nightly-x86_64-unknown-linux-gnu",
        &nightly.join("rustc"),
    )));
    refused_before_compiling(
        t.path(),
        &mut cmd,
        "it cannot be built from source here: the nightly toolchain nightly-x86_64-unknown-linux-gnu lacks the \
         rust-src component",
        "`rustup component add rust-src --toolchain nightly-x86_64-unknown-linux-gnu`",
    );

    // The active toolchain, when it is a nightly (`cargo +nightly-…`, RUSTUP_TOOLCHAIN, a
    // rust-toolchain.toml), is the one used, before any other installed nightly.
    let active = t.path().join("active");
    std::fs::create_dir_all(active.join("sysroot")).unwrap();
    let real = real_rustc();
    // This toolchain's rustc, said to be a nightly, with a sysroot that lacks rust-src.
    script(
        &active.join("rustc"),
        &format!(
            "case \"$1 $2\" in\n\
             '--print sysroot') echo {} ;;\n\
             '-vV ') {real} -vV | sed 's/^rustc [0-9.]* /rustc 1.98.0-nightly /' ;;\n\
             *) exec {real} \"$@\" ;;\n\
             esac",
            active.join("sysroot").display(),
            real = real.display()
        ),
    );
    let mut active_cmd = tool();
    active_cmd
        .current_dir(cmd.get_current_dir().unwrap())
        .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .env("RUSTC", active.join("rustc"))
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .args(cmd.get_args())
        .args(["--build-std", "always"]);
    refused_before_compiling(
        t.path(),
        &mut active_cmd,
        "with rust-src: the nightly toolchain nightly lacks the rust-src component",
        "`rustup component add rust-src --toolchain nightly`",
    );

    // `never`: rustup's refusal, and the way to build it from source instead.
    refused_before_compiling(
        t.path(),
        cmd.args(["--build-std", "never"]),
        "rustup cannot install the Rust standard library for x86_64-unknown-linux-musl",
        "or build the standard library from source with `--build-std auto`",
    );
}
