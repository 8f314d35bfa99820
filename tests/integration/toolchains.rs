//! C and C++ toolchains for the targets (DESIGN §5): one toolchain per target, checked by a
//! tiny compile and said in one `Using` line; C++ from cxx bridges, CMake and snmalloc on
//! amd64 (where musl-tools has no C++ compiler) and arm64; a broken musl-gcc passed over
//! for zig; a switch of toolchains in one target dir; host programs that build scripts
//! need (cmake…) named before anything compiles.

use std::process::Command;

use crate::common::*;

/// A `x86_64-linux-musl-gcc` that fails whatever it is asked, in a directory to put first
/// on `PATH`; returns that `PATH`.
fn broken_musl_gcc(dir: &std::path::Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let gcc = bin.join("x86_64-linux-musl-gcc");
    std::fs::write(
        &gcc,
        "#!/bin/sh\necho 'this musl-gcc is broken' >&2\nexit 1\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&gcc, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

#[test]
fn cxx_bridges_cmake_and_snmalloc_build_and_run_on_amd64_and_arm64() {
    // C++ three ways in one binary: a cxx bridge (cc-rs through cxx-build), a CMake
    // library with a C and a C++ source, and snmalloc (C++, built by CMake) as the global
    // allocator, with threads whose thread-locals are torn down. Before: on amd64 the
    // tool gave cc-rs musl-tools' C compiler and no C++ one
    // (`failed to find tool "x86_64-linux-musl-g++"`), and on arm64 snmalloc did not link
    // (`undefined symbol: __cxa_thread_atexit_impl`, glibc's, which its CMake build calls
    // on every non-Apple Unix).
    let dir = fixture("cxx");
    let out = tmp();
    let layout = out.path().join("cxx");
    let build = run(tool()
        .current_dir(dir.path())
        // Optimised less (C++ at -O1): what is checked (which compilers, that it links
        // statically and runs, thread teardown) does not depend on it, and snmalloc's
        // templates at -O3 for two targets cost the suite's budget.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .args(["microimage", "build", "--locked"])
        .args(["--platform", "linux/amd64,linux/arm64", "-o"])
        .arg(&layout))
    .ok();
    for triple in ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"] {
        let line = build
            .stderr
            .lines()
            .find(|l| l.contains("Using") && l.contains(triple))
            .unwrap_or_else(|| panic!("no Using line for {triple}:\n{}", build.stderr));
        assert!(
            line.contains("as C/C++ compiler and linker") && line.contains("snmalloc-sys"),
            "{line}"
        );
    }
    let podman = Podman::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let ran = podman
            .run_oci(&layout, "0.1.0", &["--platform", platform], &[])
            .ok();
        assert_eq!(
            ran.stdout.trim(),
            "hello, c++ area=12 perimeter=14 allocated=15360 thread-local destructors run=4",
            "{platform}"
        );
    }
    let verify = run(tool()
        .args(["microimage", "verify"])
        .arg(shared_target().join("x86_64-unknown-linux-musl/release/cxx-app")))
    .ok();
    assert!(
        verify.stdout.contains("static") && verify.stdout.contains("snmalloc"),
        "{}",
        verify.stdout
    );
}

#[test]
fn a_broken_musl_gcc_is_passed_over_for_zig_and_a_target_dir_switches_toolchains() {
    // cmake-c: a CMake C library with threads. The first build compiles it with
    // musl-tools' compiler; the second, in the same target dir, finds a musl-gcc that
    // cannot compile, says so, uses zig, and builds the C afresh; the third, with
    // musl-gcc again, reuses the first one's outputs.
    let dir = fixture("cmake-c");
    let t = tmp();
    let target = t.path().join("target");
    let build = |path: Option<&str>| {
        let mut cmd = tool();
        cmd.current_dir(dir.path())
            .env("CARGO_TARGET_DIR", &target)
            .args(["microimage", "build", "--locked", "-o"])
            .arg(t.path().join("out"));
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = run(&mut cmd).ok();
        let ran = run(&mut Command::new(
            target.join("x86_64-unknown-linux-musl/release/cmake-c"),
        ))
        .ok();
        assert_eq!(ran.stdout.trim(), "sum=5050");
        out
    };
    let first = build(None);
    assert!(
        first.stderr.contains(
            "Using x86_64-linux-musl-gcc (x86_64-linux-gnu-gcc"
        ) && first.stderr.contains("as C compiler and rust-lld as linker for x86_64-unknown-linux-musl (C code in cmake-c 0.1.0)"),
        "{}",
        first.stderr
    );
    let second = build(Some(&broken_musl_gcc(t.path())));
    for needle in [
        "warning: `x86_64-linux-musl-gcc` on PATH cannot compile for x86_64-unknown-linux-musl: \
         it failed to compile a line of C (exit status: 1): this musl-gcc is broken; using zig instead",
        "as C/C++ compiler and linker for x86_64-unknown-linux-musl (C code in cmake-c 0.1.0)",
    ] {
        assert!(second.stderr.contains(needle), "{needle}\n{}", second.stderr);
    }
    // Each toolchain's C outputs are kept apart (its own OUT_DIR, so no CMake cache of
    // the other compiler): zig compiled the C afresh, and back with musl-gcc nothing
    // compiles again.
    assert!(
        second.stderr.contains("Compiling cmake-c"),
        "{}",
        second.stderr
    );
    let third = build(None);
    assert!(!third.stderr.contains("Compiling"), "{}", third.stderr);
}

#[test]
fn a_users_c_compiler_that_cannot_compile_and_a_missing_cmake_stop_before_compiling() {
    let dir = fixture("cmake-c");
    let t = tmp();
    let target = t.path().join("target");
    let out = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        // The host's gcc given as the cross compiler for arm64.
        .env("CC_aarch64_unknown_linux_musl", "gcc")
        .args(["microimage", "build", "--locked", "--platform", "linux/arm64", "-o"])
        .arg(t.path().join("out")))
    .fails_with(
        1,
        "error: CC_aarch64_unknown_linux_musl = `gcc` cannot compile for aarch64-unknown-linux-musl: \
         it compiled an object that is not for aarch64-unknown-linux-musl (ELF machine 62, wanted 183)",
    );
    assert!(
        out.stderr
            .contains("help: point CC_aarch64_unknown_linux_musl at a compiler"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Compiling"),
        "something compiled:\n{}",
        out.stderr
    );
    let out = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .env("CMAKE", t.path().join("no-cmake-here"))
        .args(["microimage", "build", "--locked", "-o"])
        .arg(t.path().join("out")))
    .fails_with(
        1,
        "error: building for x86_64-unknown-linux-musl needs `cmake` (cmake-c 0.1.0 builds C/C++ code with CMake) \
         on this machine, and it was not found",
    );
    assert!(
        out.stderr.contains("`sudo apt-get install cmake` (Debian/Ubuntu), `sudo dnf install cmake` (Fedora), `brew install cmake` (macOS)"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Compiling"),
        "something compiled:\n{}",
        out.stderr
    );
    assert!(
        !target.join("x86_64-unknown-linux-musl").exists(),
        "the target dir was written"
    );
    assert!(!t.path().join("out").exists());
}

#[test]
fn zig_from_pythons_ziglang_compiles_each_c_file_without_starting_python() {
    // zig installed as `pip install ziglang` is found as `python3 -m ziglang`, and
    // cargo-zigbuild writes that command into the wrapper scripts cargo runs for every C
    // compile, archive and link. Before, each of them started Python (behind a pyenv shim,
    // a shell script, here): 120 ms of CPU against zig's 10 ms for a small file. A
    // `python3` first on PATH logs how it is run: only the questions to zig before the
    // build (its version, where its executable is) may start it, never a compile.
    let real = run(Command::new("sh").args(["-c", "command -v python3"]))
        .ok()
        .stdout
        .trim()
        .to_string();
    let t = tmp();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = t.path().join("python.log");
    let shim = bin.join("python3");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$*\" | cut -c1-60 >> '{}'\nexec '{real}' \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let c = fixture("cfile");
    let out = run(tool()
        .current_dir(c.path())
        .env("PATH", &path)
        // Its own wrappers (they name this `python3`), caches and target dir: the C, the
        // compile check and mimalloc are compiled here, by the wrappers.
        .env("CARGO_ZIGBUILD_CACHE_DIR", t.path().join("zigbuild"))
        .env("XDG_CACHE_HOME", t.path().join("cache"))
        .env("CARGO_TARGET_DIR", t.path().join("target"))
        .args([
            "microimage",
            "build",
            "--locked",
            "--platform",
            "linux/arm64",
            "-o",
        ])
        .arg(t.path().join("image")))
    .ok();
    assert!(
        out.stderr.contains(
            "as C/C++ compiler and linker for aarch64-unknown-linux-musl (C code in cfile"
        ),
        "{}",
        out.stderr
    );
    let ran = std::fs::read_to_string(&log).unwrap();
    let runs: Vec<&str> = ran.lines().collect();
    assert!(
        runs.iter()
            .all(|r| *r == "-m ziglang version" || *r == "-m ziglang env"),
        "python3 ran for more than the tool's questions:\n{ran}"
    );
    // zig's version (cargo-zigbuild asks it too) and `zig env`: a few, not one per file.
    assert!(runs.len() <= 4, "{ran}");
}

#[test]
fn cc_rs_asking_zig_for_cl_style_flags_on_arm_builds_nothing() {
    // cc-rs asks every C compiler `<cc> <flags> -?` (cl and clang-cl take it). On arm
    // targets cargo-zigbuild adds a C file of its own to each run that is not a compile, so
    // zig made an executable of the question: its C library, compiler-rt and UBSan runtime
    // in debug mode, about 100 s of CPU at the first build for arm/v7 and arm/v6, before
    // failing. The tool's `zig cc` answers as zig does, building nothing.
    let t = tmp();
    let zig_cache = t.path().join("zig-cache");
    run(tool()
        .env("ZIG_GLOBAL_CACHE_DIR", &zig_cache)
        .env("CARGO_ZIGBUILD_CACHE_DIR", t.path().join("zigbuild"))
        .current_dir(t.path())
        .args(["zig", "cc", "--", "-g", "-fno-sanitize=all"])
        .args(["-mcpu=generic+v7a+vfp3-d32+thumb2-neon"])
        .args(["-target", "arm-linux-musleabihf", "-?"]))
    .fails_with(1, "unknown argument: '-?'");
    let built: Vec<_> = match zig_cache.is_dir() {
        true => walk(&zig_cache)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "a"))
            .collect(),
        false => Vec::new(),
    };
    assert!(built.is_empty(), "zig built {built:?}");
    assert!(!t.path().join("a.out").exists());
}
