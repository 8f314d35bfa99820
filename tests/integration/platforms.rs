//! Every platform of the table, built from Rust and run under podman (qemu-user for the
//! foreign ones): the pure-Rust hello fixture on all eight, in one index equal to a merge
//! of eight single ones; ring (C and assembly, through zig) on linux/386 and on the five
//! platforms whose standard library this machine's Rust release does not ship (arm v7 and
//! v6, riscv64, ppc64le, and s390x, which is tier 3), where one is built from source on
//! the nightly toolchain and zig links; and there the runtime probe (mimalloc, the copy
//! and compare routines, C thread stacks, the PID 1 stop). ring on amd64 and arm64 is
//! example-app's (multiarch.rs, build_example.rs).

use std::path::Path;
use std::process::Command;

use crate::common::*;
use serde_json::Value;

/// The target dir of these tests: their own, inside the shared one. Their builds (five
/// standard libraries, zig's musl for each, the runtime parts) then run beside the other
/// tests' builds instead of after them under one cargo lock, which left the cores idle
/// in a build's single-threaded stretches.
fn platforms_target() -> std::path::PathBuf {
    shared_target().join("platforms")
}

/// [`tool`] building in [`platforms_target`].
fn platforms_tool() -> Command {
    let mut cmd = tool();
    cmd.env("CARGO_TARGET_DIR", platforms_target());
    cmd
}

/// The platforms whose standard library rustup does not ship for this machine's Rust
/// (s390x is tier 3 everywhere): built from source on the nightly toolchain. (triple,
/// platform, `std::env::consts::ARCH` of its binaries)
const FROM_SOURCE: [(&str, &str, &str); 5] = [
    ("armv7-unknown-linux-musleabihf", "linux/arm/v7", "arm"),
    ("arm-unknown-linux-musleabihf", "linux/arm/v6", "arm"),
    ("riscv64gc-unknown-linux-musl", "linux/riscv64", "riscv64"),
    (
        "powerpc64le-unknown-linux-musl",
        "linux/ppc64le",
        "powerpc64",
    ),
    ("s390x-unknown-linux-musl", "linux/s390x", "s390x"),
];

/// The five platforms of [`FROM_SOURCE`], as one `--platform` value.
fn from_source_platforms() -> String {
    FROM_SOURCE.map(|(_, p, _)| p).join(",")
}

/// The line of `stderr` that starts with `start` (`Building hello for`, `Using`) and
/// names `triple`.
fn line_for<'a>(stderr: &'a str, start: &str, triple: &str) -> &'a str {
    stderr
        .lines()
        .find(|l| l.trim_start().starts_with(start) && l.contains(triple))
        .unwrap_or_else(|| panic!("no `{start}` line for {triple}:\n{stderr}"))
}

/// `linux/amd64` or `linux/arm/v7` of an index entry.
fn platform_of(entry: &Value) -> String {
    let p = &entry["platform"];
    let (os, arch) = (
        p["os"].as_str().unwrap(),
        p["architecture"].as_str().unwrap(),
    );
    match p["variant"].as_str() {
        Some(v) if arch == "arm" => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

#[test]
fn all_eight_platforms_build_from_rust_into_one_index_that_a_merge_gives_too_and_each_runs() {
    // hello (pure Rust) for every platform in one command: amd64, arm64 and 386 with
    // rustup's standard library, the five others with one built from source on nightly,
    // all of them linked by zig where rustc has no musl of its own.
    let hello = fixture("hello");
    let t = tmp();
    let all = t.path().join("all");
    let build = |platform: &str, out: &Path| {
        run(platforms_tool()
            .current_dir(hello.path())
            .args(["microimage", "build", "--locked", "--bin", "hello"])
            .args(["--platform", platform, "-o"])
            .arg(out))
        .ok()
    };
    let out = build("all-supported", &all);
    for (triple, _, _) in FROM_SOURCE {
        let building = line_for(&out.stderr, "Building hello for", triple);
        assert!(
            building.contains("with the standard library built from source by nightly"),
            "{building}"
        );
        let using = line_for(&out.stderr, "Using", triple);
        assert!(
            using.contains("as linker for")
                && using.contains("the standard library is built from source"),
            "{using}"
        );
    }
    let raw = external(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:1.2.3", all.display())],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let platforms: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(platform_of)
        .collect();
    assert_eq!(
        platforms,
        [
            "linux/amd64",
            "linux/arm64",
            "linux/arm/v7",
            "linux/arm/v6",
            "linux/386",
            "linux/riscv64",
            "linux/ppc64le",
            "linux/s390x"
        ],
        "{raw}"
    );
    let digest = result_line(&out.stdout).1;

    // Eight single-platform layouts (cargo has everything: only packing) merge into the
    // same index, byte for byte.
    let mut singles = Vec::new();
    let mut s390x = String::new();
    for platform in &platforms {
        let dir = t.path().join(platform.replace('/', "-"));
        let again = build(platform, &dir);
        assert!(!again.stderr.contains("Compiling"), "{}", again.stderr);
        if platform == "linux/s390x" {
            s390x = result_line(&again.stdout).1;
        }
        singles.push(dir);
    }
    // From another checkout path, the same nightly gives the same image (std included).
    let elsewhere = fixture("hello");
    let other = run(platforms_tool()
        .current_dir(elsewhere.path())
        .args(["microimage", "build", "--locked", "--bin", "hello"])
        .args(["--platform", "linux/s390x", "-o"])
        .arg(t.path().join("elsewhere")))
    .ok();
    assert_eq!(result_line(&other.stdout).1, s390x);
    let merged = run(platforms_tool()
        .args(["microimage", "merge", "-o"])
        .arg(t.path().join("merged"))
        .args(&singles))
    .ok();
    assert_eq!(result_line(&merged.stdout).1, digest);

    // verify reads each binary's platform from its ELF header (v6 and v7 told apart by
    // their attributes; s390x is big-endian), and each one is static.
    for (triple, platform, _) in FROM_SOURCE {
        let bin = platforms_target().join(triple).join("release/hello");
        let record = verify_json(&bin);
        assert_eq!(record["platform"], platform, "{record}");
        assert_eq!(record["static"], true, "{record}");
    }
    // A v7 binary is not a v6 image.
    run(platforms_tool()
        .args([
            "microimage",
            "pack",
            "--bin",
            "hello",
            "--platform",
            "linux/arm/v6",
            "-o",
        ])
        .arg(t.path().join("wrong"))
        .arg(platforms_target().join("armv7-unknown-linux-musleabihf/release/hello")))
    .fails_with(1, "linux/arm/v7");

    let podman = Podman::new();
    let arch = |platform: &str| match platform {
        "linux/amd64" => "x86_64",
        "linux/arm64" => "aarch64",
        "linux/386" => "x86",
        p => FROM_SOURCE.iter().find(|f| f.1 == p).map(|f| f.2).unwrap(),
    };
    for platform in &platforms {
        let said = podman
            .run_oci(&all, "1.2.3", &["--platform", platform], &["hi"])
            .ok();
        assert_eq!(
            said.stdout.trim(),
            format!("hello from hello [\"hi\"] ({})", arch(platform)),
            "{platform}"
        );
    }
}

#[test]
fn ring_runs_on_386_and_where_the_standard_library_is_built_from_source_and_the_runtime_parts_work_there(
) {
    let t = tmp();
    // ring: its C (and, on arm, assembly; elsewhere its portable C) compiled by zig.
    // And on 386, with rustup's standard library: ring's x86 assembly, zig for C there too.
    let ring = fixture("ring-probe");
    let image = t.path().join("ring");
    let platforms = format!("linux/386,{}", from_source_platforms());
    let out = run(platforms_tool()
        .current_dir(ring.path())
        .args([
            "microimage",
            "build",
            "--locked",
            "--platform",
            &platforms,
            "-o",
        ])
        .arg(&image))
    .ok();
    let using = line_for(&out.stderr, "Using", "i686-unknown-linux-musl");
    assert!(
        using.contains("as C/C++ compiler and linker for i686-unknown-linux-musl (C code in ring"),
        "{using}"
    );
    let podman = Podman::new();
    let i386 = ("i686-unknown-linux-musl", "linux/386", "x86");
    for (_, platform, arch) in FROM_SOURCE.iter().chain([&i386]) {
        let said = podman
            .run_oci(&image, "0.1.0", &["--platform", platform], &[])
            .ok();
        assert!(
            said.stdout
                .starts_with(&format!("ring ok on {arch}: sha256 ba7816bf8f01cfea")),
            "{platform}: {}",
            said.stdout
        );
    }

    // The default runtime parts: mimalloc (compiled by zig for each), the PID 1 signal
    // hook and 8 MiB stacks for C threads.
    let probes = fixture("runtime-probe");
    let probes = probes.path();
    let layouts = t.path().join("probes");
    let out = run(platforms_tool()
        .current_dir(probes)
        .args(["microimage", "build", "--locked", "--bin", "probe"])
        .args(["--platform", &from_source_platforms(), "-o"])
        .arg(&layouts))
    .ok();
    for (triple, _, _) in FROM_SOURCE {
        let building = line_for(&out.stderr, "Building probe for", triple);
        assert!(
            building.contains("with mimalloc, the PID 1 signal hook and 8 MiB thread stacks"),
            "{building}"
        );
        crate::runtime::mimalloc_and_the_routines_work(&platforms_target(), triple);
        let bin = platforms_target().join(triple).join("release/probe");
        let stack = run(Command::new(&bin).args(["cthread", "4096"])).ok();
        assert!(
            stack.stdout.contains("c thread used 4096 KiB"),
            "{triple}: {}",
            stack.stdout
        );
    }
    // As PID 1 under podman, s390x's stops at once on SIGTERM (143, not podman's kill).
    let single = t.path().join("s390x");
    run(platforms_tool()
        .current_dir(probes)
        .args([
            "microimage",
            "build",
            "--locked",
            "--bin",
            "probe",
            "--platform",
            "linux/s390x",
            "-o",
        ])
        .arg(&single))
    .ok();
    // Its provenance names the nightly that compiled it, std included.
    let statements = layout_provenance(&single);
    let statement: Value = serde_json::from_slice(&statements[0]).unwrap();
    let rustc = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "rustc")
        .unwrap()
        .clone();
    assert!(
        rustc["annotations"]["version"]
            .as_str()
            .unwrap()
            .contains("-nightly"),
        "{rustc}"
    );
    assert_eq!(
        rustc["annotations"]["standardLibrary"], "built from source (-Zbuild-std)",
        "{rustc}"
    );
    assert_eq!(
        rustc["digest"]["gitCommit"].as_str().unwrap().len(),
        40,
        "{rustc}"
    );
    let (code, took, logs) = crate::runtime::end_in_podman(
        &podman,
        &single,
        &["--platform", "linux/s390x"],
        &["stop", "-t", "30"],
        &["wait"],
    );
    assert_eq!(code, 143, "{logs}");
    assert!(took < 10.0, "podman stop took {took:.1} s");
}
