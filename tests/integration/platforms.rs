//! The platforms beyond amd64 and arm64, each run under podman (qemu-user for the foreign
//! ones): linux/386 built from Rust — example-app, whose ring compiles C through zig, and
//! the pure-Rust hello fixture through rust-lld — and linux/arm/v7, linux/arm/v6,
//! linux/riscv64 and linux/ppc64le from a static C program compiled with zig (this
//! machine's Rust release ships no standard library for those musl targets; building one
//! is refused with rustup's reason, see rustup_target.rs). Each is verified, packed into
//! one index with the right architecture and variant, and run.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use serde_json::Value;

#[test]
fn linux_386_builds_from_rust_with_and_without_c_and_runs() {
    let t = tmp();
    let app = t.path().join("app");
    let out = run(tool()
        // Optimised less: what is checked here (ring's C through zig for i686, the image's
        // platform, a TLS-ready service that runs) does not depend on it, and example-app's
        // 60 crates at opt-level 3 for one more target were a minute of the suite.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .args([
            "microimage",
            "build",
            "--locked",
            "--platform",
            "linux/386",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&app))
    .ok();
    assert!(
        out.stderr
            .contains("as C/C++ compiler and linker for i686-unknown-linux-musl (C code in ring"),
        "{}",
        out.stderr
    );
    let config: Value = serde_json::from_str(&external(
        "skopeo",
        &[
            "inspect",
            "--config",
            "--override-arch",
            "386",
            &format!("oci:{}:0.1.0", app.display()),
        ],
    ))
    .unwrap();
    assert_eq!(
        (config["architecture"].as_str(), config["os"].as_str()),
        (Some("386"), Some("linux"))
    );
    let podman = Podman::new();
    let check = podman
        .run_oci(&app, "0.1.0", &["--platform", "linux/386"], &["--check"])
        .ok();
    let report: Value = serde_json::from_str(check.stdout.trim()).unwrap();
    assert_eq!(report["arch"], "x86");
    assert_eq!(report["tls_ready"], true);

    let hello = fixture("hello");
    let image = t.path().join("hello");
    let out = run(tool()
        .current_dir(hello.path())
        .args([
            "microimage",
            "build",
            "-v",
            "--bin",
            "hello",
            "--target",
            "i686-unknown-linux-musl",
            "-o",
        ])
        .arg(&image))
    .ok();
    assert!(
        out.stderr.contains("i686-unknown-linux-musl with rust-lld"),
        "{}",
        out.stderr
    );
    let said = podman
        .run_oci(&image, "1.2.3", &["--platform", "linux/386"], &["one"])
        .ok();
    assert_eq!(said.stdout.trim(), "hello from hello [\"one\"] (x86)");
}

/// zig, as the tool finds it: `python3 -m ziglang`, else `zig` on PATH.
fn zig() -> Command {
    let python = Command::new("python3")
        .args(["-c", "import ziglang"])
        .status()
        .is_ok_and(|s| s.success());
    if python {
        let mut c = Command::new("python3");
        c.args(["-m", "ziglang"]);
        c
    } else {
        Command::new("zig")
    }
}

/// The C probe compiled statically for zig's `target` (with `cpu`).
fn probe(dir: &Path, name: &str, target: &str, cpu: Option<&str>) -> PathBuf {
    let out = dir.join(name);
    let mut cmd = zig();
    cmd.args(["cc", "-target", target, "-static", "-O2", "-s", "-o"])
        .arg(&out)
        .arg(repo().join("tests/fixtures/cprobe/probe.c"))
        .env(
            "ZIG_GLOBAL_CACHE_DIR",
            std::env::var_os("ZIG_GLOBAL_CACHE_DIR")
                .unwrap_or_else(|| shared_target().join("zig-cache").into_os_string()),
        );
    if let Some(cpu) = cpu {
        cmd.arg(format!("-mcpu={cpu}"));
    }
    run(&mut cmd).ok();
    out
}

#[test]
fn arm_v7_arm_v6_riscv64_and_ppc64le_are_told_apart_packed_and_run() {
    let t = tmp();
    // (binary, zig target, cpu, platform, what `uname -m` says under qemu)
    let cases = [
        (
            "probe-armv7",
            "arm-linux-musleabihf",
            Some("generic+v7a"),
            "linux/arm/v7",
            "armv7l",
        ),
        (
            "probe-armv6",
            "arm-linux-musleabihf",
            Some("arm1176jzf_s"),
            "linux/arm/v6",
            "armv7l",
        ),
        (
            "probe-riscv64",
            "riscv64-linux-musl",
            None,
            "linux/riscv64",
            "riscv64",
        ),
        (
            "probe-ppc64le",
            "powerpc64le-linux-musl",
            None,
            "linux/ppc64le",
            "ppc64le",
        ),
    ];
    let binaries: Vec<PathBuf> = cases
        .iter()
        .map(|(name, target, cpu, _, _)| probe(t.path(), name, target, *cpu))
        .collect();
    // verify reads each one's platform from its ELF header (and, for arm, its attributes).
    for (bin, (_, _, _, platform, _)) in binaries.iter().zip(&cases) {
        let out = run(tool()
            .arg("verify")
            .arg(bin)
            .args(["--message-format", "json"]))
        .ok();
        let record = first_json(&out.stdout);
        assert_eq!(record["platform"], *platform, "{record}");
        assert_eq!(record["static"], true);
    }
    // A v7 binary is not a v6 image.
    run(tool()
        .args([
            "microimage",
            "pack",
            "--bin",
            "probe",
            "--platform",
            "linux/arm/v6",
            "-o",
        ])
        .arg(t.path().join("wrong"))
        .arg(&binaries[0]))
    .fails_with(1, "linux/arm/v7");

    let image = t.path().join("image");
    run(tool()
        .args([
            "microimage",
            "pack",
            "--bin",
            "probe",
            "--tag",
            "probe:1",
            "--sbom",
            "none",
            "-o",
        ])
        .arg(&image)
        .args(&binaries))
    .ok();
    let raw = external(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:1", image.display())],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let p = &m["platform"];
            match p["variant"].as_str() {
                Some(v) => format!(
                    "{}/{}/{v}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
                None => format!(
                    "{}/{}",
                    p["os"].as_str().unwrap(),
                    p["architecture"].as_str().unwrap()
                ),
            }
        })
        .collect();
    assert_eq!(
        platforms,
        [
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/riscv64",
            "linux/ppc64le"
        ],
        "{raw}"
    );
    let podman = Podman::new();
    for (_, _, _, platform, machine) in cases {
        let config: Value = serde_json::from_str(&external(
            "skopeo",
            &[
                "inspect",
                "--config",
                "--override-arch",
                platform.split('/').nth(1).unwrap(),
                "--override-variant",
                platform.split('/').nth(2).unwrap_or(""),
                &format!("oci:{}:1", image.display()),
            ],
        ))
        .unwrap();
        assert_eq!(
            config["variant"].as_str(),
            platform.split('/').nth(2),
            "{platform}: {config}"
        );
        let out = podman
            .run_oci(&image, "1", &["--platform", platform], &[])
            .ok();
        assert_eq!(
            out.stdout.trim(),
            format!("built for {platform}, running on {machine}")
        );
    }
}
