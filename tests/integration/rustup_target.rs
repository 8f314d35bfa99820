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

/// `rustup`: records its arguments and succeeds, or (`fails`) runs that shell code.
fn setup_with(fails: Option<&str>) -> (tempfile::TempDir, std::process::Command) {
    let t = tmp();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(t.path().join("empty-sysroot")).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let sysroot = run(std::process::Command::new("rustc").args(["--print", "sysroot"]))
        .ok()
        .stdout;
    let real = Path::new(sysroot.trim()).join("bin/rustc");
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
