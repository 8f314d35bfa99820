//! Multi-arch: example-app (ring compiles C) for linux/amd64 and linux/arm64 in one
//! command — aarch64 C code and linking through zig — one index, the base layer shared,
//! both platforms run under podman (arm64 through qemu-user binfmt) and answer alike.

use std::path::PathBuf;
use std::sync::OnceLock;

use crate::common::*;
use serde_json::Value;

const TAG: &str = "0.1.0";

/// example-app built for `--platform all`, once: (layout, stdout).
fn multi() -> &'static (PathBuf, String) {
    static LAYOUT: OnceLock<(PathBuf, String)> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let layout = tmp().keep().join("multi");
        let out = run(tool()
            .args([
                "microimage",
                "build",
                "--locked",
                "--platform",
                "all",
                "--manifest-path",
            ])
            .arg(repo().join("example-app/Cargo.toml"))
            .arg("-o")
            .arg(&layout))
        .ok();
        assert!(
            out.stderr.contains(
                "as C/C++ compiler and linker for aarch64-unknown-linux-musl (C code in ring"
            ),
            "{}",
            out.stderr
        );
        (layout, out.stdout)
    })
}

fn blob(layout: &std::path::Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

#[test]
fn one_index_two_platforms_one_shared_base_layer() {
    let (layout, stdout) = multi();
    let (_, digest) = result_line(stdout);
    let index = blob(layout, &digest);
    let manifests = index["manifests"].as_array().unwrap();
    let platforms: Vec<(String, Option<String>)> = manifests
        .iter()
        .map(|m| {
            let p = &m["platform"];
            (
                p["architecture"].as_str().unwrap().to_string(),
                p["variant"].as_str().map(String::from),
            )
        })
        .collect();
    assert_eq!(
        platforms,
        [
            ("amd64".to_string(), None),
            ("arm64".to_string(), Some("v8".to_string()))
        ]
    );
    let layers: Vec<Vec<String>> = manifests
        .iter()
        .map(|m| {
            blob(layout, m["digest"].as_str().unwrap())["layers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["digest"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    assert_eq!(layers[0][0], layers[1][0], "the base layer is shared");
    assert_ne!(layers[0][1], layers[1][1]);
    // Stored once in the layout: 2 app layers + 1 base + 2 configs + 2 manifests + 1 index,
    // and the SBOMs and provenance: per platform two documents and their manifests, and one
    // shared empty config.
    assert_eq!(
        std::fs::read_dir(layout.join("blobs/sha256"))
            .unwrap()
            .count(),
        17
    );
    let arm_config = blob(
        layout,
        blob(layout, manifests[1]["digest"].as_str().unwrap())["config"]["digest"]
            .as_str()
            .unwrap(),
    );
    assert_eq!(
        (
            arm_config["architecture"].as_str(),
            arm_config["variant"].as_str()
        ),
        (Some("arm64"), Some("v8"))
    );
}

#[test]
fn skopeo_picks_each_architecture() {
    let (layout, _) = multi();
    let reference = format!("oci:{}:{TAG}", layout.display());
    for arch in ["amd64", "arm64"] {
        let out: Value = serde_json::from_str(&external(
            "skopeo",
            &["inspect", "--override-arch", arch, &reference],
        ))
        .unwrap();
        assert_eq!(out["Architecture"], arch);
    }
}

#[test]
fn both_platforms_run_under_podman_and_answer_alike() {
    let (layout, _) = multi();
    let podman = Podman::new();
    let mut amd = podman.serve_example(layout, TAG, Some("linux/amd64"));
    let mut arm = podman.serve_example(layout, TAG, Some("linux/arm64"));
    assert_eq!(amd["arch"], "x86_64");
    assert_eq!(arm["arch"], "aarch64");
    assert_eq!(arm["tls_ready"], true, "ring works on arm64");
    amd.as_object_mut().unwrap().remove("arch");
    arm.as_object_mut().unwrap().remove("arch");
    assert_eq!(amd, arm);
    // mimalloc serves the allocations on both (ring's C code included): it prints its
    // statistics at exit when asked.
    for platform in ["linux/amd64", "linux/arm64"] {
        let out = podman
            .run_oci(
                layout,
                TAG,
                &["--platform", platform, "-e", "MIMALLOC_SHOW_STATS=1"],
                &["--check"],
            )
            .ok();
        assert!(
            out.stderr.contains("committed") && out.stderr.contains("peak rss"),
            "{platform}: no mimalloc statistics:\n{}",
            out.stderr
        );
    }
}

/// The binaries `build` left in the shared target dir.
fn built_binaries() -> Vec<PathBuf> {
    multi();
    ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"]
        .iter()
        .map(|t| shared_target().join(t).join("release/example-app"))
        .collect()
}

#[test]
fn pack_of_the_same_binaries_gives_the_same_index() {
    let (_, stdout) = multi();
    let (_, built) = result_line(stdout);
    let t = tmp();
    // Given in the other order: the platform comes from each ELF header.
    let mut bins = built_binaries();
    bins.reverse();
    let out = run(tool()
        .current_dir(repo().join("example-app"))
        .args(["microimage", "pack", "--platform", "all"])
        .args(&bins)
        .arg("-o")
        .arg(t.path().join("packed")))
    .ok();
    let (_, packed) = result_line(&out.stdout);
    assert_eq!(packed, built);
    // Both carry their dependency data (arm64 linked by zig): the same 31 crates, with
    // mimalloc's; and mimalloc and the PID 1 hook.
    for bin in &bins {
        let verified = first_json(
            &run(tool()
                .args(["microimage", "verify", "--message-format", "json"])
                .arg(bin))
            .ok()
            .stdout,
        );
        assert_eq!(verified["crates"], 31, "{}", bin.display());
        assert_eq!(verified["allocator"], "mimalloc", "{}", bin.display());
        assert_eq!(verified["pid1_signals"], true, "{}", bin.display());
    }
}

#[test]
fn pack_refuses_a_binary_for_another_platform() {
    let t = tmp();
    let arm = &built_binaries()[1];
    let out = run(tool()
        .args(["microimage", "pack", "--platform", "linux/amd64"])
        .arg(arm)
        .arg("-o")
        .arg(t.path().join("x")))
    .fails_with(
        1,
        "is a binary for linux/arm64 (aarch64), but --platform asks for linux/amd64",
    );
    assert!(out.stdout.is_empty());
    let amd = &built_binaries()[0];
    run(tool()
        .args(["microimage", "pack"])
        .arg(amd)
        .arg(amd)
        .arg("-o")
        .arg(t.path().join("y")))
    .fails_with(2, "are both binaries for linux/amd64");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 0);
}

#[test]
fn c_code_without_zig_fails_before_compiling_and_says_how_to_get_zig() {
    let t = tmp();
    // Hide zig: no `zig` on PATH and a `python3` without the ziglang module.
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(bin.join("python3"), "#!/bin/sh\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let target = t.path().join("target");
    let out = run(tool()
        .env("PATH", path)
        .env("CARGO_TARGET_DIR", &target)
        .args(["microimage", "build", "--locked", "--platform", "linux/arm64", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(t.path().join("image")))
    .fails_with(1, "building for aarch64-unknown-linux-musl needs a C compiler for that target: these crates compile C: ring");
    assert!(
        out.stderr.contains("python3 -m pip install ziglang"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("Compiling"),
        "it compiled before failing:\n{}",
        out.stderr
    );
    assert!(!t.path().join("image").exists());
    assert!(!target.join("aarch64-unknown-linux-musl").exists());

    // Pure Rust for a platform whose standard library is built from source: zig links it.
    let hello = fixture("hello");
    let out = run(tool()
        .current_dir(hello.path())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "microimage",
            "build",
            "--locked",
            "--bin",
            "hello",
            "--platform",
            "linux/s390x",
            "-o",
        ])
        .arg(t.path().join("image")))
    .fails_with(
        1,
        "linking for s390x-unknown-linux-musl needs zig: its standard library is built from source",
    );
    assert!(
        out.stderr.contains("python3 -m pip install ziglang"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("Compiling"), "{}", out.stderr);
    assert!(!t.path().join("image").exists());
    assert!(!target.join("s390x-unknown-linux-musl").exists());
}

#[test]
fn pure_rust_links_for_arm64_with_rust_lld_and_runs_under_qemu() {
    let c = fixture("hello");
    let target = tmp();
    let layout = target.path().join("hello-arm");
    run(tool()
        .current_dir(c.path())
        .env("CARGO_TARGET_DIR", target.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--target",
            "aarch64-unknown-linux-musl",
            "--arg",
            "x",
            "-o",
        ])
        .arg(&layout))
    .ok();
    let podman = Podman::new();
    let out = podman
        .run_oci(&layout, "1.2.3", &["--platform", "linux/arm64"], &[])
        .ok();
    assert_eq!(out.stdout.trim(), "hello from hello [\"x\"] (aarch64)");
    // Linked by rust-lld alone, it still carries its dependency data, and mimalloc
    // (compiled by zig: pure Rust needs no C compiler, mimalloc does) with the PID 1 hook.
    let verified = run(tool().args(["microimage", "verify"]).arg(
        target
            .path()
            .join("aarch64-unknown-linux-musl/release/hello"),
    ))
    .ok();
    assert!(
        verified.stdout.contains(
            "static, linux/arm64 (aarch64), 2 crates recorded, mimalloc (linked by cargo-microimage), PID 1 signal hook, 8 MiB thread stacks"
        ),
        "{}",
        verified.stdout
    );
}
