//! Runtime parity (DESIGN §9): what `build` links into a binary besides its code, seen from
//! outside — mimalloc serving the allocations (its own statistics), the string routines
//! checked against byte-by-byte copies and comparisons, the PID 1 hook under `podman stop`, a program's own
//! SIGTERM handler still in charge, nothing changed outside PID 1, musl's malloc kept on
//! request or when a crate brings its own allocator, and the failures without a C compiler
//! or offline. example-app (ring) under podman on amd64 and arm64 is in `multiarch.rs`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

use crate::common::*;

/// The runtime-probe fixture built with the defaults (`--workspace`: `probe` and
/// `graceful`) into `DIR/<bin>`: (fixture copy, DIR, stdout, stderr).
fn probes() -> &'static (PathBuf, PathBuf, String, String) {
    static BUILT: OnceLock<(PathBuf, PathBuf, String, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = fixture("runtime-probe").keep();
        let out_dir = tmp().keep().join("probes");
        let out = run(tool()
            .current_dir(&dir)
            .args(["microimage", "build", "--locked", "--workspace", "-o"])
            .arg(&out_dir))
        .ok();
        (dir, out_dir, out.stdout, out.stderr)
    })
}

/// The digest `build` printed for `bin`.
fn digest_of(stdout: &str, bin: &str) -> String {
    stdout
        .lines()
        .find(|l| l.contains(&format!("/{bin}:")))
        .map(|l| result_line(l).1)
        .unwrap_or_else(|| panic!("no line for {bin} in {stdout}"))
}

fn binary(name: &str) -> PathBuf {
    shared_target()
        .join("x86_64-unknown-linux-musl/release")
        .join(name)
}

/// Starts `oci:LAYOUT:TAG ARGS` detached, waits for its `ready` line, then stops it with
/// `podman stop -t TIMEOUT`: (exit code, seconds the stop took, logs).
fn stop_in_podman(
    podman: &Podman,
    layout: &Path,
    timeout: u32,
    args: &[&str],
) -> (i64, f64, String) {
    let stop = ["stop", "-t", &timeout.to_string()];
    end_in_podman(podman, layout, &[], &stop, args)
}

/// The same, ended by `podman END… NAME` (`stop -t 30`, `kill --signal INT`), then
/// waited for; `options` go to `podman run` (`--platform linux/s390x`).
pub fn end_in_podman(
    podman: &Podman,
    layout: &Path,
    options: &[&str],
    end: &[&str],
    args: &[&str],
) -> (i64, f64, String) {
    let name = format!(
        "microimage-stop-{}-{}",
        std::process::id(),
        fastrand::u32(..)
    );
    podman.forget_later(&format!("localhost{}:0.1.0", layout.display()));
    run(podman
        .command()
        .args(["run", "-d", "--name", &name])
        .args(options)
        .arg(format!("oci:{}:0.1.0", layout.display()))
        .args(args))
    .ok();
    let logs = || run(podman.command().args(["logs", &name])).stdout;
    wait_for_log(logs, "ready");
    let t = Instant::now();
    run(podman.command().args(end).arg(&name)).ok();
    run(podman.command().args(["wait", &name])).ok();
    let took = t.elapsed().as_secs_f64();
    let code = run(podman
        .command()
        .args(["inspect", &name, "--format", "{{.State.ExitCode}}"]))
    .ok()
    .stdout
    .trim()
    .parse()
    .unwrap();
    let out = logs();
    run(podman.command().args(["rm", "-f", &name]));
    (code, took, out)
}

#[test]
fn the_default_links_mimalloc_and_the_hook_and_both_work_under_podman() {
    let (_, dir, _, stderr) = probes();
    assert!(
        stderr.contains(
            "Building graceful, probe for linux/amd64 (x86_64-unknown-linux-musl) with mimalloc, the PID 1 signal hook and 8 MiB thread stacks"
        ),
        "{stderr}"
    );
    let verified = verify_json(&binary("probe"));
    assert_eq!(verified["allocator"], "mimalloc", "{verified}");
    assert_eq!(verified["pid1_signals"], true, "{verified}");
    assert_eq!(verified["allocator_linked"], true, "{verified}");
    assert_eq!(verified["thread_stack"], 8 << 20, "{verified}");
    // inspect reads the same from the image's layer.
    let inspect = first_json(
        &run(tool()
            .args(["microimage", "inspect", "--message-format", "json"])
            .arg(dir.join("probe")))
        .ok()
        .stdout,
    );
    let runtime = &inspect["platforms"][0]["binary"]["runtime"];
    assert_eq!(runtime["allocator"], "mimalloc", "{inspect}");
    assert_eq!(runtime["pid1_signals"], true, "{inspect}");
    assert_eq!(runtime["allocator_linked"], true, "{inspect}");
    assert_eq!(runtime["thread_stack"], 8 << 20, "{inspect}");

    let podman = Podman::new();
    // The copy routines linked in on x86_64, against a byte-by-byte copy.
    let checked = podman
        .run_oci(&dir.join("probe"), "0.1.0", &[], &["memcheck"])
        .ok();
    assert!(
        checked.stdout.contains("memcpy and memmove ok"),
        "{}",
        checked.stdout
    );
    // mimalloc serves the allocations: it prints its statistics when asked.
    let stats = podman
        .run_oci(
            &dir.join("probe"),
            "0.1.0",
            &["-e", "MIMALLOC_SHOW_STATS=1"],
            &["alloc"],
        )
        .ok();
    assert!(
        stats.stdout.contains("allocated 100000 strings"),
        "{}",
        stats.stdout
    );
    assert!(
        stats.stderr.contains("committed") && stats.stderr.contains("peak rss"),
        "no mimalloc statistics:\n{}",
        stats.stderr
    );
}

#[test]
fn as_pid_1_a_program_without_handlers_stops_at_once_and_one_with_handlers_shuts_down_its_way() {
    let (_, dir, _, _) = probes();
    let podman = Podman::new();
    // Without the hook podman would wait the whole 30 s and then SIGKILL it (137).
    let (code, took, _) = stop_in_podman(&podman, &dir.join("probe"), 30, &["wait"]);
    assert_eq!(code, 143, "SIGTERM ends it as it would outside a container");
    assert!(took < 10.0, "podman stop took {took:.1} s");
    // A program with its own SIGTERM handler (signal-hook, which also calls the handler it
    // replaced — ours, which then does nothing) runs its own shutdown.
    let (code, _, logs) = stop_in_podman(&podman, &dir.join("graceful"), 30, &[]);
    assert_eq!(code, 0, "{logs}");
    assert!(logs.contains("shutting down cleanly"), "{logs}");
}

#[test]
fn as_pid_1_sigint_and_sighup_end_it_too_an_inherited_ignore_stays_and_a_handler_of_its_own_rules()
{
    let (_, dir, _, _) = probes();
    let podman = Podman::new();
    let probe = dir.join("probe");
    for (signal, code) in [("INT", 130), ("HUP", 129), ("TERM", 143)] {
        let (got, _, logs) = end_in_podman(
            &podman,
            &probe,
            &[],
            &["kill", "--signal", signal],
            &["wait"],
        );
        assert_eq!(got, code, "SIG{signal}: {logs}");
    }
    // Started with SIGTERM ignored (the probe ignores it and executes itself, as a shell's
    // `trap '' TERM; exec …` would): it stays ignored, so `podman stop` has to kill it.
    let (got, _, logs) = stop_in_podman(&podman, &probe, 2, &["ignoring", "wait"]);
    assert_eq!(got, 137, "{logs}");
    // A handler of the program's own that does not chain to the one it replaced: it alone
    // runs (its exit status, 42).
    let (got, _, logs) = stop_in_podman(&podman, &probe, 30, &["own-handler"]);
    assert_eq!(got, 42, "{logs}");
    assert!(logs.contains("own handler ran"), "{logs}");
}

#[test]
fn outside_pid_1_the_hook_does_nothing() {
    probes();
    let mut child = Command::new(binary("probe"))
        .arg("wait")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");
    run(Command::new("kill").args(["-TERM", &child.id().to_string()])).ok();
    let status = child.wait().unwrap();
    assert_eq!(
        status.signal(),
        Some(15),
        "killed by SIGTERM, not exited: {status:?}"
    );
}

/// `key=value` fields of a probe's result line.
fn fields(line: &str) -> std::collections::HashMap<String, u64> {
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

/// The bound docs/runtime.md documents for memory held after a burst, with nothing live: what
/// the program held at start plus 24 MiB.
const IDLE_BOUND_KIB: u64 = 24 << 10;

#[test]
fn memory_freed_after_a_burst_goes_back_while_the_program_idles_unless_the_user_says_otherwise() {
    let (_, dir, _, _) = probes();
    let podman = Podman::new();
    let layout = dir.join("probe");
    // Four threads allocate 400 MiB of small blocks, free it all and exit; the program
    // then makes no allocator call at all. Measured inside the container, by the program.
    let out = podman
        .run_oci(&layout, "0.1.0", &[], &["burst", "400"])
        .ok();
    let f = fields(&out.stdout);
    assert!(f["peak_rss_kib"] > 100 << 10, "no burst: {}", out.stdout);
    assert!(
        f["idle_rss_kib"] <= f["start_rss_kib"] + IDLE_BOUND_KIB,
        "freed memory kept: {}",
        out.stdout
    );
    // The user's MIMALLOC_PURGE_DELAY still rules: -1 is mimalloc's "never purge".
    let kept = podman
        .run_oci(
            &layout,
            "0.1.0",
            &["-e", "MIMALLOC_PURGE_DELAY=-1"],
            &["burst", "400"],
        )
        .ok();
    let k = fields(&kept.stdout);
    assert!(
        k["idle_rss_kib"] > k["peak_rss_kib"] / 2,
        "MIMALLOC_PURGE_DELAY=-1 ignored: {}",
        kept.stdout
    );
}

#[test]
fn c_threads_get_a_glibc_sized_stack_and_an_explicit_size_still_wins() {
    let (_, dir, _, _) = probes();
    let podman = Podman::new();
    let layout = dir.join("probe");
    for (args, used) in [
        (&["cthread", "1024"][..], "1024"),
        (&["cthread", "4096"][..], "4096"),
        // Asked for explicitly: 6 MiB of a 7 MiB stack.
        (&["cthread", "6144", "7168"][..], "6144"),
    ] {
        let out = podman.run_oci(&layout, "0.1.0", &[], args).ok();
        assert!(
            out.stdout.contains(&format!("c thread used {used} KiB")),
            "{args:?}: {}",
            out.stdout
        );
    }
    // An explicit size smaller than the default is honoured too: 1 MiB of a 512 KiB stack
    // crashes.
    podman
        .run_oci(&layout, "0.1.0", &[], &["cthread", "1024", "512"])
        .fails_with(139, "");
}

#[test]
fn system_and_no_pid1_signals_keep_musl_as_it_is_and_switching_back_relinks() {
    let (dir, _, stdout, _) = probes();
    let t = tmp();
    // A target dir of its own: the shared one's `probe` is what the other tests check.
    let target = t.path().join("target");
    let build = |extra: &[&str], out: &str| {
        run(tool()
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .args(["microimage", "build", "--locked", "--bin", "probe"])
            .args(extra)
            .arg("-o")
            .arg(t.path().join(out)))
        .ok()
    };
    let bin = target.join("x86_64-unknown-linux-musl/release/probe");
    let out = build(
        &[
            "--allocator",
            "system",
            "--no-pid1-signals",
            "--thread-stack-size",
            "128KiB",
        ],
        "system",
    );
    assert!(
        out.stderr.contains(
            "Building probe for linux/amd64 (x86_64-unknown-linux-musl) with musl's malloc and 128 KiB thread stacks\n"
        ),
        "{}",
        out.stderr
    );
    let verified = run(tool().args(["microimage", "verify"]).arg(&bin)).ok();
    assert!(
        verified
            .stdout
            .contains("crates recorded, musl's malloc, 128 KiB thread stacks (musl's default)\n"),
        "{}",
        verified.stdout
    );
    assert!(
        verified.stderr.contains("uses musl's own malloc")
            && verified.stderr.contains("links mimalloc in by default"),
        "{}",
        verified.stderr
    );
    // What the hook prevents: as PID 1 the program ignores SIGTERM until it is killed.
    let podman = Podman::new();
    let (code, _, _) = stop_in_podman(&podman, &t.path().join("system"), 1, &["wait"]);
    assert_eq!(code, 137);
    // The key works: with musl's 128 KiB, a C thread that needs 1 MiB crashes the program
    // (SIGSEGV: 139), and one that asks for its size explicitly still gets it.
    let system = t.path().join("system");
    podman
        .run_oci(&system, "0.1.0", &[], &["cthread", "1024"])
        .fails_with(139, "");
    let explicit = podman
        .run_oci(&system, "0.1.0", &[], &["cthread", "1024", "2048"])
        .ok();
    assert!(
        explicit.stdout.contains("c thread used 1024 KiB"),
        "{}",
        explicit.stdout
    );
    // Back to the defaults: relinked (cargo saw the change), the same image as the
    // defaults gave in the shared target dir.
    let again = build(&[], "default");
    assert_eq!(result_line(&again.stdout).1, digest_of(stdout, "probe"));
    assert_eq!(verify_json(&bin)["allocator"], "mimalloc");
}

#[test]
fn the_tool_installed_elsewhere_builds_the_same_image() {
    // cargo hashes the workspace wrapper's path into the build: with the tool's own path,
    // every install location gave other digests.
    let (dir, _, stdout, _) = probes();
    let t = tmp();
    let elsewhere = t.path().join("opt/tools/bin");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let copy = elsewhere.join("cargo-microimage");
    std::fs::copy(env!("CARGO_BIN_EXE_cargo-microimage"), &copy).unwrap();
    let out = run(tool_at(&copy)
        .env("CARGO_TARGET_DIR", t.path().join("target"))
        .current_dir(dir)
        .args(["microimage", "build", "--locked", "--bin", "probe", "-o"])
        .arg(t.path().join("image")))
    .ok();
    assert_eq!(result_line(&out.stdout).1, digest_of(stdout, "probe"));
}

#[test]
fn a_crate_with_its_own_allocator_keeps_it() {
    let c = fixture("jemalloc");
    let t = tmp();
    let out = run(tool()
        .current_dir(c.path())
        .args(["microimage", "build", "--locked", "-o"])
        .arg(t.path().join("image")))
    .ok();
    assert!(
        out.stderr.contains(
            "Building jemalloc-app for linux/amd64 (x86_64-unknown-linux-musl) with its own allocator (tikv-jemallocator), the PID 1 signal hook and 8 MiB thread stacks"
        ),
        "{}",
        out.stderr
    );
    let verified = verify_json(&binary("jemalloc-app"));
    assert_eq!(verified["allocator"], "jemalloc", "{verified}");
    let podman = Podman::new();
    let ran = podman
        .run_oci(&t.path().join("image"), "0.1.0", &[], &[])
        .ok();
    assert_eq!(ran.stdout.trim(), "jemalloc-app allocated 10000 strings");
    // Asking for mimalloc as well is refused, before anything is written.
    run(tool()
        .current_dir(c.path())
        .args([
            "microimage",
            "build",
            "--locked",
            "--allocator",
            "mimalloc",
            "-o",
        ])
        .arg(t.path().join("refused")))
    .fails_with(
        1,
        "--allocator mimalloc: `jemalloc-app` brings an allocator of its own (tikv-jemallocator)",
    );
    assert!(!t.path().join("refused").exists());
}

#[test]
fn without_a_c_compiler_auto_keeps_musls_malloc_with_a_warning_and_mimalloc_fails() {
    let c = fixture("hello");
    let t = tmp();
    // Hide zig (no `zig` on PATH, a `python3` without ziglang): arm64 has no C compiler.
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("python3"), "#!/bin/sh\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let build = |allocator: &str, out: &str| {
        run(tool()
            .current_dir(c.path())
            .env("PATH", &path)
            .env("CARGO_TARGET_DIR", t.path().join("target"))
            .args([
                "microimage",
                "build",
                "--bin",
                "hello",
                "--platform",
                "linux/arm64",
            ])
            .args(["--allocator", allocator, "-o"])
            .arg(t.path().join(out)))
    };
    let auto = build("auto", "auto").ok();
    assert!(
        auto.stderr
            .contains("warning: `hello` keeps musl's malloc on linux/arm64")
            && auto.stderr.contains("python3 -m pip install ziglang"),
        "{}",
        auto.stderr
    );
    assert!(
        auto.stderr
            .contains("(aarch64-unknown-linux-musl) with musl's malloc, the PID 1 signal hook and 8 MiB thread stacks"),
        "{}",
        auto.stderr
    );
    let refused = build("mimalloc", "refused").fails_with(
        1,
        "--allocator mimalloc: compiling mimalloc for linux/arm64 needs a C compiler for aarch64-unknown-linux-musl",
    );
    assert!(
        refused.stderr.contains("python3 -m pip install ziglang"),
        "{}",
        refused.stderr
    );
    assert!(!t.path().join("refused").exists());
}

#[test]
fn offline_needs_mimalloc_compiled_once_and_then_works() {
    let c = fixture("hello");
    let t = tmp();
    // A machine that never compiled mimalloc and has no crates downloaded.
    let cache = t.path().join("cache");
    let empty_cargo_home = t.path().join("cargo-home");
    std::fs::create_dir_all(&empty_cargo_home).unwrap();
    let build = |cargo_home: Option<&Path>, offline: bool, out: &str| {
        let mut cmd = tool();
        cmd.current_dir(c.path())
            .env("XDG_CACHE_HOME", &cache)
            .env("CARGO_TARGET_DIR", t.path().join("target"))
            .args(["microimage", "build", "--bin", "hello"]);
        if let Some(home) = cargo_home {
            cmd.env("CARGO_HOME", home);
        }
        if offline {
            cmd.arg("--offline");
        }
        run(cmd.arg("-o").arg(t.path().join(out)))
    };
    let refused = build(Some(&empty_cargo_home), true, "refused").fails_with(
        1,
        "compiling mimalloc (libmimalloc-sys v0.1.49) for x86_64-unknown-linux-musl",
    );
    assert!(
        refused
            .stderr
            .contains("with --offline/--frozen cargo cannot download libmimalloc-sys")
            && refused.stderr.contains("--allocator system"),
        "{}",
        refused.stderr
    );
    assert!(!t.path().join("refused").exists());
    // Once, online: compiled and kept.
    let first = build(None, false, "online").ok();
    assert!(
        first.stderr.contains("Compiling mimalloc"),
        "{}",
        first.stderr
    );
    // Then offline, with nothing downloaded: from the cache, not compiled again.
    let offline = build(Some(&empty_cargo_home), true, "offline").ok();
    assert!(
        !offline.stderr.contains("Compiling mimalloc"),
        "{}",
        offline.stderr
    );
    assert_eq!(result_line(&offline.stdout).1, result_line(&first.stdout).1);
}

/// The runtime probe built for `triple` in `target_dir` has mimalloc, which answers for its statistics,
/// and copies and compares right (`probe memcheck`): run directly, through qemu-user
/// (binfmt_misc) for a foreign one.
pub fn mimalloc_and_the_routines_work(target_dir: &Path, triple: &str) {
    let bin = target_dir.join(triple).join("release/probe");
    assert_eq!(verify_json(&bin)["allocator"], "mimalloc", "{triple}");
    let checked = run(Command::new(&bin).arg("memcheck")).ok();
    assert!(
        checked.stdout.contains("memcpy and memmove ok")
            && checked.stdout.contains("memcmp and bcmp ok"),
        "{triple}: {}",
        checked.stdout
    );
    let stats = run(Command::new(&bin)
        .arg("alloc")
        .env("MIMALLOC_SHOW_STATS", "1"))
    .ok();
    assert!(
        stats.stderr.contains("peak rss"),
        "{triple}: {}",
        stats.stderr
    );
}

#[test]
fn on_linux_386_and_arm64_mimalloc_and_the_string_routines_work_too() {
    // 32-bit x86 has its own path through the routines (no `rep movsb`), arm64 its own
    // comparisons (musl's copies stay there); mimalloc is compiled by zig for both.
    let (dir, _, _, _) = probes();
    let t = tmp();
    let out = run(tool()
        .current_dir(dir)
        .args([
            "microimage",
            "build",
            "--locked",
            "--bin",
            "probe",
            "--platform",
            "linux/386,linux/arm64",
            "-o",
        ])
        .arg(t.path().join("image")))
    .ok();
    for triple in ["aarch64-unknown-linux-musl", "i686-unknown-linux-musl"] {
        assert!(
            out.stderr.contains(&format!(
                "({triple}) with mimalloc, the PID 1 signal hook and 8 MiB thread stacks"
            )),
            "{}",
            out.stderr
        );
        // i386 binaries run on this machine as they are, arm64 ones through qemu-user.
        mimalloc_and_the_routines_work(&shared_target(), triple);
    }
    // On arm64 too, from the image under podman (qemu-user): freed memory goes back while
    // the program idles (qemu's own memory is in the start figure), and a C thread gets
    // a stack of 8 MiB by default.
    let podman = Podman::new();
    let image = t.path().join("image");
    let arm64 = ["--platform", "linux/arm64"];
    let out = podman
        .run_oci(&image, "0.1.0", &arm64, &["burst", "200"])
        .ok();
    let f = fields(&out.stdout);
    assert!(
        f["peak_rss_kib"] > f["start_rss_kib"] + (60 << 10),
        "no burst: {}",
        out.stdout
    );
    assert!(
        f["idle_rss_kib"] <= f["start_rss_kib"] + IDLE_BOUND_KIB,
        "freed memory kept on arm64: {}",
        out.stdout
    );
    let out = podman
        .run_oci(&image, "0.1.0", &arm64, &["cthread", "1024"])
        .ok();
    assert!(
        out.stdout.contains("c thread used 1024 KiB"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_wrapper_that_drops_the_runtimes_arguments_fails_the_build_instead_of_a_silent_image() {
    // A workspace wrapper of the user's that passes on everything but what the tool adds
    // at the final link: the binary then had musl's malloc, no hook and musl's stacks, and
    // the build said nothing.
    let t = tmp();
    let dir = t.path().join("hello");
    copy_crate(&repo().join("tests/fixtures/hello"), &dir);
    let wrapper = t.path().join("dropping-wrapper");
    std::fs::write(
        &wrapper,
        r#"#!/usr/bin/env bash
rustc=$1; shift
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -l|-L) case "$2" in *microimage*) shift 2; continue ;; esac ;;
    *stack-size=*) shift; continue ;;
  esac
  args+=("$1"); shift
done
exec "$rustc" "${args[@]}"
"#,
    )
    .unwrap();
    run(Command::new("chmod").arg("755").arg(&wrapper)).ok();
    let out = run(tool()
        .current_dir(&dir)
        .env("RUSTC_WORKSPACE_WRAPPER", &wrapper)
        .env("CARGO_TARGET_DIR", t.path().join("target"))
        .args(["microimage", "build", "--locked", "--bin", "hello", "-o"])
        .arg(t.path().join("image")));
    let out = out.fails_with(
        1,
        "was linked without mimalloc, the PID 1 signal hook, its 8 MiB thread stack size",
    );
    assert!(
        out.stderr.contains("RUSTC_WORKSPACE_WRAPPER"),
        "{}",
        out.stderr
    );
    assert!(!t.path().join("image").exists(), "an image was written");
}

/// `templates/runtime/rt.rs` compiled for `triple` with `cfgs`, as `build` compiles it.
fn rt_object(triple: &str, cfgs: &[&str], out: &Path) {
    let mut cmd = Command::new("rustc");
    cmd.args(["--edition", "2021", "--crate-type", "lib", "--emit", "obj"])
        .args(["--crate-name", "microimage_rt", "--target", triple])
        .args([
            "-C",
            "panic=abort",
            "-C",
            "opt-level=3",
            "-C",
            "codegen-units=1",
        ])
        .arg("-o")
        .arg(out)
        .arg(repo().join("templates/runtime/rt.rs"));
    for cfg in cfgs {
        cmd.args(["--cfg", cfg]);
    }
    run(&mut cmd).ok();
}

/// The disassembly of `file` (objdump, AT&T syntax).
fn disassembly(file: &Path) -> String {
    external(
        "objdump",
        &["-d", "--no-show-raw-insn", file.to_str().unwrap()],
    )
}

/// Function `name`'s part of a [`disassembly`].
fn function<'a>(disassembly: &'a str, name: &str) -> &'a str {
    let start = disassembly
        .find(&format!("<{name}>:\n"))
        .unwrap_or_else(|| panic!("no {name} in the disassembly"));
    let body = &disassembly[start..];
    &body[..body.find("\n\n").unwrap_or(body.len())]
}

#[test]
fn long_copies_align_the_destination_before_rep_movsb_and_never_use_it_for_close_ranges() {
    // The x86_64 copy routines linked into a host program (a C driver making long copies
    // at every destination alignment and overlapping moves 1 to 129 bytes apart), run under
    // gdb with a breakpoint on each `rep movsb`: every one must start at a 64-byte-aligned
    // destination (`rep movsb` at a misaligned one runs up to 20x slower on AMD Zen 3) and
    // with source and destination at least 64 bytes apart (slow on Intel FSRM parts).
    let t = tmp();
    let object = t.path().join("rt.o");
    rt_object("x86_64-unknown-linux-musl", &["microimage_copy"], &object);
    let driver = t.path().join("driver.c");
    std::fs::write(
        &driver,
        r#"#include <stdlib.h>
#include <string.h>
int main(void) {
    static volatile size_t n = 5000;
    char *b = malloc(1 << 16);
    memset(b, 7, 1 << 16);
    for (int d = 0; d < 64; d++)
        for (int s = 0; s < 3; s++)
            memcpy(b + 32768 + d, b + s, n);
    for (int gap = 1; gap < 130; gap++) {
        memmove(b + 100, b + 100 + gap, n);
        memmove(b + 100 + gap, b + 100, n);
    }
    return 0;
}
"#,
    )
    .unwrap();
    let program = t.path().join("driver");
    run(Command::new("cc")
        .args(["-O0", "-no-pie", "-fno-builtin", "-o"])
        .arg(&program)
        .arg(&driver)
        .arg(&object))
    .ok();
    // A breakpoint on a `rep movsb` hits again after each single-stepped iteration: each
    // one reports and disables itself, and one on the next instruction (2 bytes on) enables
    // it again.
    let mut script = String::from("set pagination off\nset confirm off\n");
    let mut breaks = 0;
    let all = disassembly(&program);
    for name in ["memcpy", "memmove"] {
        let code = function(&all, name);
        let reps: Vec<&str> = code.lines().filter(|l| l.contains("rep movsb")).collect();
        assert!(!reps.is_empty(), "no rep movsb in {name}:\n{code}");
        for line in reps {
            let address = line.trim().split(':').next().unwrap();
            let (at, after) = (breaks + 1, breaks + 2);
            breaks += 2;
            script.push_str(&format!(
                "break *0x{address}\ncommands {at}\nsilent\nprintf \"rep {name} %d %d\\n\", \
                 $rdi & 63, $rsi - $rdi\ndisable {at}\ncontinue\nend\n\
                 break *(0x{address} + 2)\ncommands {after}\nsilent\nenable {at}\ncontinue\nend\n"
            ));
        }
    }
    script.push_str("run\n");
    let gdb_script = t.path().join("trace.gdb");
    std::fs::write(&gdb_script, script).unwrap();
    let traced = run(Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(&gdb_script)
        .arg(&program))
    .ok();
    let hits: Vec<(String, i64, i64)> = traced
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("rep "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect();
    // Every memcpy (192) and every move to a lower address at least 64 bytes away (66).
    let count = |name: &str| hits.iter().filter(|h| h.0 == name).count();
    assert!(count("memcpy") >= 192, "{}", traced.stdout);
    assert!(count("memmove") >= 66, "{}", traced.stdout);
    for (name, alignment, distance) in &hits {
        assert_eq!(
            *alignment, 0,
            "{name}: rep movsb at a misaligned destination"
        );
        assert!(
            *distance >= 64 || *distance < 0,
            "{name}: rep movsb with source {distance} bytes after the destination"
        );
    }
}

#[test]
fn on_i686_the_copy_routines_move_16_bytes_per_sse2_load() {
    // A `u128` read is four 32-bit loads on i686 (with spills): the loops load and store
    // through xmm registers instead, as on x86_64.
    let t = tmp();
    let object = t.path().join("rt.o");
    rt_object("i686-unknown-linux-musl", &["microimage_copy"], &object);
    let all = disassembly(&object);
    for name in ["memcpy", "memmove"] {
        let code = function(&all, name);
        let vector_loads = code
            .lines()
            .filter(|l| (l.contains("movups") || l.contains("movdqu")) && l.contains("),%xmm"))
            .count();
        // The 16- to 32-byte path (2 loads), the 32-byte loop (2) and its tail (2), per
        // direction.
        assert!(
            vector_loads >= 6,
            "{name} loads {vector_loads} times into xmm:\n{code}"
        );
    }
}
