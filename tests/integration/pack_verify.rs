//! `pack` of prebuilt binaries into OCI and docker archives, and the static check
//! (`verify`, and the refusal to pack or build dynamic binaries).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use serde_json::Value;

/// The `hello` fixture built with plain cargo for x86_64 musl (static), once.
fn static_hello() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let dir = fixture("hello").keep();
        cargo_build_fixture(&dir, "hello")
    })
}

#[test]
fn pack_writes_an_oci_archive_that_skopeo_reads() {
    let t = tmp();
    let archive = t.path().join("hello.tar");
    let out = run(tool()
        .args(["microimage", "pack"])
        .arg(static_hello())
        .arg("-o")
        .arg(&archive))
    .ok();
    let (reference, digest) = result_line(&out.stdout);
    assert_eq!(
        reference,
        format!("oci-archive:{}:latest", archive.display())
    );
    assert!(digest.starts_with("sha256:"));
    assert!(out.stderr.contains("Verified"), "{}", out.stderr);
    let inspect: Value =
        serde_json::from_str(&external("skopeo", &["inspect", &reference])).unwrap();
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
    let config: Value =
        serde_json::from_str(&external("skopeo", &["inspect", "--config", &reference])).unwrap();
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/usr/local/bin/hello"])
    );
}

#[test]
fn pack_writes_a_docker_archive_that_podman_loads_and_runs() {
    let t = tmp();
    let archive = t.path().join("hello-docker.tar");
    run(tool()
        .args([
            "microimage",
            "pack",
            "--format",
            "docker-archive",
            "--tag",
            "microimage-test/hello:dock",
            "--arg",
            "one",
        ])
        .arg(static_hello())
        .arg("-o")
        .arg(&archive))
    .ok();
    let podman = Podman::new();
    podman.forget_later("localhost/microimage-test/hello:dock");
    let load = run(podman.command().args(["load", "-i"]).arg(&archive)).ok();
    assert!(
        load.stdout.contains("microimage-test/hello:dock"),
        "{}",
        load.stdout
    );
    let out = run(podman
        .command()
        .args(["run", "--rm", "localhost/microimage-test/hello:dock"]))
    .ok();
    assert_eq!(out.stdout.trim(), "hello from hello [\"one\"] (x86_64)");
    // inspect reads docker archives too.
    let report = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(&archive))
    .ok();
    let report: Value = first_json(&report.stdout);
    assert_eq!(report["format"], "docker-archive");
    assert_eq!(
        report["platforms"][0]["config"]["cmd"],
        serde_json::json!(["one"])
    );
}

#[test]
fn pack_uses_the_image_flags() {
    let t = tmp();
    let layout = t.path().join("flags");
    run(tool()
        .args([
            "microimage",
            "pack",
            "--tag",
            "registry.example.com/team/hello:2.0",
            "--label",
            "team=core",
            "--annotation",
            "org.example.note=hi",
            "--env",
            "RUST_LOG=debug",
            "--expose",
            "8080",
            "--expose",
            "53/udp",
            "--user",
            "1000:1000",
            "--workdir",
            "/srv",
            "--arg",
            "--flag",
            "--source-date-epoch",
            "1700000000",
            "--ca-certs",
            "none",
        ])
        .arg(static_hello())
        .arg("-o")
        .arg(&layout))
    .ok();
    let reference = format!("oci:{}:2.0", layout.display());
    let config: Value =
        serde_json::from_str(&external("skopeo", &["inspect", "--config", &reference])).unwrap();
    let c = &config["config"];
    assert_eq!(
        c["Env"],
        serde_json::json!(["PATH=/usr/local/bin", "RUST_LOG=debug"])
    );
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"53/udp": {}, "8080/tcp": {}})
    );
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["Cmd"], serde_json::json!(["--flag"]));
    assert_eq!(c["Labels"], serde_json::json!({"team": "core"}));
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");
    let raw: Value =
        serde_json::from_str(&external("skopeo", &["inspect", "--raw", &reference])).unwrap();
    assert_eq!(raw["annotations"]["org.example.note"], "hi");
    assert_eq!(
        raw["annotations"]["org.opencontainers.image.created"],
        "2023-11-14T22:13:20Z"
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "registry.example.com/team/hello:2.0"
    );
    // --ca-certs none: no bundle in the base layer.
    let report = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(&layout))
    .ok();
    let report: Value = first_json(&report.stdout);
    assert_eq!(report["platforms"][0]["layers"][0]["files"], 7);
}

#[test]
fn verify_reports_static_binaries_and_their_platform() {
    let out = run(tool().args(["microimage", "verify"]).arg(static_hello())).ok();
    assert_eq!(
        out.stdout.trim(),
        format!(
            "{}: static, linux/amd64 (x86_64), no dependency data, musl's malloc, 128 KiB thread stacks (musl's default)",
            static_hello().display()
        )
    );
    // Built by plain cargo: musl's own malloc and its 128 KiB thread stacks, which verify
    // warns about.
    assert!(
        out.stderr.contains("uses musl's own malloc")
            && out.stderr.contains("musl's 128 KiB stack")
            && out.stderr.contains("stack-size=8388608"),
        "{}",
        out.stderr
    );
    let json = run(tool()
        .args(["microimage", "verify", "--message-format", "json"])
        .arg(static_hello()))
    .ok();
    let v: Value = first_json(&json.stdout);
    assert_eq!(
        (v["static"].clone(), v["platform"].clone()),
        (Value::Bool(true), Value::from("linux/amd64"))
    );
    assert_eq!(v["crates"], Value::Null, "plain cargo records no crates");
    assert_eq!(v["allocator"], "musl");
    assert_eq!(v["pid1_signals"], false);
    assert_eq!(v["allocator_linked"], false);
    assert_eq!(v["thread_stack"], 128 << 10);
}

#[test]
fn verify_rejects_a_dynamic_binary_naming_its_libraries() {
    let out = run(tool()
        .args(["microimage", "verify", "/bin/ls"])
        .arg(static_hello()))
    .fails_with(1, "libc.so.6");
    assert!(
        out.stdout.contains("/bin/ls: NOT static (x86_64)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(": static, linux/amd64"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("/lib64/ld-linux-x86-64.so.2"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("musl target"), "{}", out.stderr);
}

#[test]
fn pack_refuses_a_dynamic_binary_and_writes_nothing() {
    let t = tmp();
    let out_path = t.path().join("ls.tar");
    run(tool()
        .args(["microimage", "pack", "/bin/ls", "-o"])
        .arg(&out_path))
    .fails_with(
        1,
        "`/bin/ls` is dynamically linked: it needs the shared libraries",
    );
    assert_no_output(t.path());
}

#[test]
fn pack_refuses_what_is_not_an_executable() {
    let t = tmp();
    let text = t.path().join("notes.txt");
    std::fs::write(&text, "not a binary").unwrap();
    run(tool()
        .args(["microimage", "pack"])
        .arg(&text)
        .arg("-o")
        .arg(t.path().join("x")))
    .fails_with(1, "its format is not ELF");
    run(tool()
        .args(["microimage", "pack"])
        .arg(t.path().join("missing")))
    .fails_with(1, "missing");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1);
}

#[test]
fn build_refuses_a_deliberately_dynamic_musl_build_and_writes_nothing() {
    let crate_dir = fixture("dynamic");
    let target = tmp();
    let out = run(tool()
        .current_dir(crate_dir.path())
        .env("CARGO_TARGET_DIR", target.path())
        .args(["microimage", "build"]))
    .fails_with(1, "is dynamically linked");
    assert!(
        out.stderr.contains("/lib/ld-musl-x86_64.so.1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("-crt-static"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(!target.path().join("microimage").exists());
}

/// Nothing but what the test made itself: no archive, no temporary files.
fn assert_no_output(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn result_lines_show_the_output_without_parent_steps() {
    // `-o sub/../out` was printed as given (`oci:…/sub/../out:1.2.3`).
    let t = tmp();
    std::fs::create_dir_all(t.path().join("sub")).unwrap();
    let out = run(tool()
        .current_dir(t.path())
        .args([
            "microimage",
            "pack",
            "--tag",
            "hello:1.2.3",
            "-o",
            "sub/../out",
        ])
        .arg(static_hello()))
    .ok();
    let real = std::fs::canonicalize(t.path()).unwrap().join("out");
    assert!(
        out.stdout
            .starts_with(&format!("oci:{}:1.2.3 sha256:", real.display())),
        "{}",
        out.stdout
    );
}

/// gzip layers (libdeflate, one member per MiB of tar): `gzip -t` checks every member,
/// `gzip -dc` gives the tar whose sha256 the config lists, the app layer is no larger than
/// `gzip -9` of the binary, and the bytes are the same on one core as on all of them. A
/// level is the user's to choose, within the compressor's range.
#[test]
fn gzip_layers_pass_gzip_and_are_the_same_bytes_on_one_core_as_on_all() {
    example_layout();
    let binary = shared_target().join("x86_64-unknown-linux-musl/release/example-app");
    let t = tmp();
    let pack = |name: &str, one_core: bool, extra: &[&str]| {
        let layout = t.path().join(name);
        let mut cmd = if one_core {
            // The workers are as many as the cores the process may use.
            let mut cmd = tool_at(Path::new("taskset"));
            cmd.args(["-c", "0", env!("CARGO_BIN_EXE_cargo-microimage")]);
            cmd
        } else {
            tool()
        };
        let out = run(cmd
            .current_dir(t.path())
            .args([
                "microimage",
                "pack",
                "--sbom",
                "none",
                "--provenance",
                "none",
            ])
            .args(extra)
            .arg(&binary)
            .arg("-o")
            .arg(&layout))
        .ok();
        (layout, result_line(&out.stdout).1)
    };
    let (layout, all) = pack("all", false, &[]);
    let (_, one) = pack("one", true, &[]);
    assert_eq!(one, all, "one core and two gave different images");
    let blobs: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            (path, data)
        })
        .collect();
    let diff_ids: Vec<String> = blobs
        .iter()
        .filter_map(|(_, data)| serde_json::from_slice::<Value>(data).ok())
        .filter_map(|v| v["rootfs"]["diff_ids"].as_array().cloned())
        .flatten()
        .map(|d| d.as_str().unwrap().to_string())
        .collect();
    let layers: Vec<&(PathBuf, Vec<u8>)> = blobs
        .iter()
        .filter(|(_, data)| data.starts_with(&[0x1f, 0x8b]))
        .collect();
    assert_eq!(layers.len(), 2, "the base layer and the app layer");
    for (path, _) in &layers {
        let path = path.to_str().unwrap();
        external("gzip", &["-t", path]);
        let tar = std::process::Command::new("gzip")
            .args(["-dc", path])
            .output()
            .unwrap();
        assert!(tar.status.success());
        let diff_id = format!("sha256:{}", sha256_hex(&tar.stdout));
        assert!(diff_ids.contains(&diff_id), "{diff_id} not in {diff_ids:?}");
    }
    let app = layers.iter().map(|(_, d)| d.len()).max().unwrap();
    let gzip9 = std::process::Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(&binary)
        .output()
        .unwrap()
        .stdout
        .len();
    assert!(app <= gzip9, "app layer {app} bytes, gzip -9 {gzip9}");
    // Another level: other bytes, the same tar.
    let (_, fast) = pack("fast", false, &["--compression-level", "1"]);
    assert_ne!(fast, all);
    run(tool()
        .args(["microimage", "pack", "--compression-level", "13"])
        .arg(&binary)
        .arg("-o")
        .arg(t.path().join("refused")))
    .fails_with(2, "gzip levels are 1 to 12, not 13");
    assert!(!t.path().join("refused").exists());
}
