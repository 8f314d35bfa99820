//! How `build` drives cargo: symbols stripped through the profile (or kept with
//! `--no-strip`), the user's RUSTFLAGS kept when the tool appends its own flags, and the
//! global flags (`-q`, `--color`) reaching cargo.

use std::path::Path;
use std::process::Command;

use crate::common::*;

fn build(
    crate_dir: &Path,
    target: &Path,
    extra: &[&str],
    rustflags: Option<&str>,
) -> std::path::PathBuf {
    let mut cmd = tool();
    cmd.current_dir(crate_dir)
        .env("CARGO_TARGET_DIR", target)
        .args(["microimage", "build", "--bin", "hello", "-o"])
        .arg(target.join("image"))
        .args(extra);
    if let Some(flags) = rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    run(&mut cmd).ok();
    target.join("x86_64-unknown-linux-musl/release/hello")
}

fn has_symtab(bin: &Path) -> bool {
    let sections = run(Command::new("readelf").arg("-S").arg(bin)).ok().stdout;
    sections.contains(".symtab")
}

#[test]
fn symbols_are_stripped_by_default_and_kept_with_no_strip() {
    let c = fixture("hello");
    let t = tmp();
    let stripped = build(c.path(), &t.path().join("a"), &[], None);
    assert!(
        !has_symtab(&stripped),
        "the default build kept its symbol table"
    );
    let kept = build(c.path(), &t.path().join("b"), &["--no-strip"], None);
    assert!(has_symtab(&kept), "--no-strip lost the symbol table");
}

#[test]
fn the_users_rustflags_are_kept() {
    let c = fixture("hello");
    let t = tmp();
    let bin = build(c.path(), t.path(), &[], Some("--cfg microimage_probe"));
    let out = run(&mut Command::new(&bin)).ok();
    assert!(
        out.stdout.contains("built with the user's RUSTFLAGS"),
        "{}",
        out.stdout
    );
    // And the checkout path does not end up in the binary.
    let bytes = std::fs::read(&bin).unwrap();
    let checkout = c.path().to_str().unwrap().as_bytes();
    assert!(
        !bytes.windows(checkout.len()).any(|w| w == checkout),
        "the checkout path is in the binary"
    );
}

/// `cargo microimage ARGS --bin hello -o <target>/image` in a copy of the hello fixture.
fn hello_with(args: &[&str]) -> (Run, tempfile::TempDir) {
    let c = fixture("hello");
    let t = tmp();
    let out = run(tool()
        .current_dir(c.path())
        .env("CARGO_TARGET_DIR", t.path())
        .arg("microimage")
        .args(args)
        .args(["--bin", "hello", "-o"])
        .arg(t.path().join("image")))
    .ok();
    (out, t)
}

#[test]
fn global_flags_go_before_the_implied_build_and_quiet_silences_cargo_too() {
    // `cargo microimage -q --color never` is `build`, quiet: cargo's own `Compiling` and
    // `Finished` lines are gone too, and stdout still has the one result line.
    let (out, t) = hello_with(&["-q", "--color", "never"]);
    assert_eq!(out.stderr, "", "-q printed on stderr");
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(t.path().join("image/index.json").is_file());
}

#[test]
fn color_always_colours_status_lines() {
    let (out, _t) = hello_with(&["build", "--color=always"]);
    // Both this tool's `Verified` and cargo's `Finished` are coloured, though stderr is a pipe.
    assert!(
        out.stderr.contains("\x1b[1m\x1b[32m    Verified"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("\x1b[1m\x1b[32m    Finished"),
        "{}",
        out.stderr
    );
}

/// A warm build reuses what cargo answered last time (`-v` says "Fresh") only while every
/// file it depends on is the same: a new cargo config file or an edited Cargo.toml makes the
/// tool ask cargo again, and the edit shows in the image.
#[test]
fn a_warm_build_reuses_cargos_answers_until_an_input_changes() {
    let c = fixture("hello");
    let cache = c.path().join("user-cache");
    let build = || {
        run(tool()
            .current_dir(c.path())
            .env("XDG_CACHE_HOME", &cache)
            .args(["microimage", "build", "-v", "--bin", "hello"]))
        .ok()
    };
    let fresh = |r: &Run| r.stderr.contains("Fresh cargo's answers from the last run");
    let first = build();
    assert!(!fresh(&first), "{}", first.stderr);
    let second = build();
    assert!(fresh(&second), "{}", second.stderr);
    assert_eq!(result_line(&first.stdout), result_line(&second.stdout));

    std::fs::create_dir_all(c.path().join(".cargo")).unwrap();
    std::fs::write(c.path().join(".cargo/config.toml"), "[build]\n").unwrap();
    let third = build();
    assert!(!fresh(&third), "a new cargo config file was not noticed");
    assert!(fresh(&build()));

    let manifest = c.path().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}\n[package.metadata.microimage]\nlabels = {{ edited = \"yes\" }}\n"),
    )
    .unwrap();
    let edited = build();
    assert!(!fresh(&edited), "an edited Cargo.toml was not noticed");
    let (reference, _) = result_line(&edited.stdout);
    let config: serde_json::Value =
        serde_json::from_str(&external("skopeo", &["inspect", "--config", &reference])).unwrap();
    assert_eq!(config["config"]["Labels"]["edited"], "yes", "{config}");
}

#[test]
fn the_binary_packed_is_the_one_cargo_built_even_if_another_build_replaces_it_after() {
    // cargo uplifts every build of a binary to one path and lets go of the build
    // directory when it exits; another build of it with other settings (another run, an
    // IDE) can then put its own file there. Simulated: a `cargo` that, once the real one is
    // done, puts busybox where `hello` was. The image had busybox in it before.
    let c = fixture("hello");
    let t = tmp();
    let busybox = tools_dir().join("busybox/amd64/busybox");
    let script = t.path().join("cargo");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\"$REAL_CARGO\" \"$@\"; rc=$?\n\
             if [ \"$1\" = build ]; then f=\"$CARGO_TARGET_DIR/x86_64-unknown-linux-musl/release/hello\"; rm -f \"$f\"; cp {} \"$f\"; fi\n\
             exit $rc\n",
            busybox.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = t.path().join("target");
    let layout = t.path().join("image");
    run(tool()
        .current_dir(c.path())
        .env("CARGO", &script)
        .env("REAL_CARGO", real)
        .env("CARGO_TARGET_DIR", &target)
        .args(["microimage", "build", "--bin", "hello", "-o"])
        .arg(&layout))
    .ok();
    let built: Vec<u64> = std::fs::read_dir(target.join("x86_64-unknown-linux-musl/release/deps"))
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("hello-") && !name.contains('.')
        })
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert_eq!(built.len(), 1, "{built:?}");
    let report = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(&layout))
    .ok();
    let json: serde_json::Value =
        serde_json::from_str(report.stdout.lines().next().unwrap()).unwrap();
    let packed = json["platforms"][0]["binary"]["size"].as_u64();
    assert_eq!(packed, Some(built[0]), "{}", report.stdout);
    assert_ne!(packed, Some(busybox.metadata().unwrap().len()));
}

#[test]
fn the_hosts_cc_never_links_a_target_binary() {
    // A `cc` first on PATH that refuses to link anything for a musl target and runs the
    // real one for the host's build scripts and proc macros. Pure Rust on three platforms
    // and C code (the runtime probe's, through x86_64-linux-musl-gcc on amd64 and zig on
    // arm64) still build: rust-lld or the target's toolchain links them.
    let t = tmp();
    let bin = t.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let real = run(Command::new("sh").args(["-c", "command -v cc"]))
        .ok()
        .stdout
        .trim()
        .to_string();
    let cc = bin.join("cc");
    std::fs::write(
        &cc,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in *-unknown-linux-musl*) \
             echo \"the host cc was asked to link for a musl target: $a\" >&2; exit 1;; esac; done\n\
             exec {real} \"$@\"\n"
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&cc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    // `build -v` of BIN in a copy of the fixture DIR for PLATFORMS, with that `cc` first
    // on PATH: its output and the target dir.
    let build = |dir: &str, bin: &str, platforms: &str| {
        let crate_dir = fixture(dir);
        let target = t.path().join(format!("{bin}-target"));
        let out = run(tool()
            .current_dir(crate_dir.path())
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", &target)
            .args(["microimage", "build", "-v", "--locked", "--bin", bin])
            .args(["--platform", platforms, "-o"])
            .arg(t.path().join(bin)))
        .ok();
        (out, target)
    };

    let (out, target) = build("hello", "hello", "linux/amd64,linux/arm64,linux/386");
    for triple in [
        "x86_64-unknown-linux-musl",
        "aarch64-unknown-linux-musl",
        "i686-unknown-linux-musl",
    ] {
        assert!(
            out.stderr
                .contains(&format!("{triple} with rust-lld (no C code in the graph)")),
            "{}",
            out.stderr
        );
    }
    let said = run(&mut Command::new(
        target.join("x86_64-unknown-linux-musl/release/hello"),
    ))
    .ok();
    assert!(said.stdout.contains("hello from hello"), "{}", said.stdout);

    let (out, target) = build("runtime-probe", "probe", "linux/amd64,linux/arm64");
    assert!(
        out.stderr
            .contains("as C compiler and rust-lld as linker for x86_64-unknown-linux-musl (C code in runtime-probe 0.1.0"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("as C/C++ compiler and linker for aarch64-unknown-linux-musl"),
        "{}",
        out.stderr
    );
    // The C thread of the probe runs, on its glibc-sized stack.
    let ran = run(
        Command::new(target.join("x86_64-unknown-linux-musl/release/probe"))
            .args(["cthread", "1024"]),
    )
    .ok();
    assert!(
        ran.stdout.contains("c thread used 1024 KiB"),
        "{}",
        ran.stdout
    );
}
