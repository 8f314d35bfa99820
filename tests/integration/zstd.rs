//! `--compression zstd`: example-app's image with zstd layers, read by skopeo and by GNU
//! tar with the zstd CLI, run by podman, converted to a docker-archive, and identical
//! between `build` and `pack`.

use std::process::Command;

use crate::common::*;
use serde_json::Value;

const TAG: &str = "0.1.0";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

/// example-app built with zstd layers into a fresh layout; returns (dir, layout, stdout).
fn build_zstd(extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let t = tmp();
    let layout = t.path().join("zst");
    let out = run(tool()
        .args(["microimage", "build", "--locked", "--compression", "zstd"])
        .args(extra)
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&layout))
    .ok();
    (t, layout, out.stdout)
}

#[test]
fn a_zstd_image_is_read_by_skopeo_and_tar_and_runs_under_podman() {
    let (_t, layout, stdout) = build_zstd(&[]);
    let reference = format!("oci:{}:{TAG}", layout.display());

    // skopeo resolves the index to this machine's platform and copies that image out,
    // manifest as is.
    let layers_of = |reference: &str| -> Vec<Value> {
        let dir = tmp();
        let dest = format!("dir:{}", dir.path().join("copy").display());
        external("skopeo", &["copy", "-q", reference, &dest]);
        let raw = std::fs::read_to_string(dir.path().join("copy/manifest.json")).unwrap();
        let manifest: Value = serde_json::from_str(&raw).unwrap();
        manifest["layers"].as_array().unwrap().clone()
    };
    let layers = layers_of(&reference);
    assert_eq!(layers.len(), 2, "{layers:?}");
    for layer in &layers {
        assert_eq!(layer["mediaType"], ZSTD, "{layers:?}");
    }
    // Smaller than the gzip image's layers.
    let (gzip_layout, _) = example_layout();
    let size =
        |layers: &[Value]| -> u64 { layers.iter().map(|l| l["size"].as_u64().unwrap()).sum() };
    let gzip = layers_of(&format!("oci:{}:{TAG}", gzip_layout.display()));
    assert!(size(&layers) < size(&gzip), "{layers:?} vs {gzip:?}");

    // GNU tar with the zstd CLI reads every layer (umoci 0.4.7, Debian's, predates zstd).
    for layer in &layers {
        let digest = layer["digest"].as_str().unwrap();
        let blob = layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        let listing = run(Command::new("tar").args(["--zstd", "-tvf"]).arg(&blob))
            .ok()
            .stdout;
        assert!(
            listing.contains("etc/passwd") || listing.contains("usr/local/bin/example-app"),
            "{listing}"
        );
        assert!(
            listing.contains(" 0/0 ") || listing.contains("65532/65532"),
            "{listing}"
        );
    }

    let podman = Podman::new();
    let out = podman.run_oci(&layout, TAG, &[], &["--check"]).ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["uid"], 65532);
    assert!(report["ca_roots"].as_u64().unwrap() > 100, "{report}");

    let inspected = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(&layout))
    .ok();
    let report: Value = first_json(&inspected.stdout);
    let layers = report["platforms"][0]["layers"].as_array().unwrap().clone();
    assert_eq!(layers[0]["media_type"], ZSTD);
    assert_eq!(layers[0]["files"], 10);
    assert_eq!(layers[1]["files"], 4);
    assert!(!stdout.is_empty());
}

#[test]
fn pack_with_zstd_matches_build_and_a_docker_archive_holds_plain_tars() {
    let (_t, _layout, stdout) = build_zstd(&[]);
    let (_, built) = result_line(&stdout);
    let binary = shared_target().join("x86_64-unknown-linux-musl/release/example-app");
    let t = tmp();
    let packed = run(tool()
        .args([
            "microimage",
            "pack",
            "--compression",
            "zstd",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg(&binary)
        .arg("-o")
        .arg(t.path().join("packed")))
    .ok();
    assert_eq!(result_line(&packed.stdout).1, built);

    // docker-archive: the layers go in decompressed, so any docker can load it.
    let archive = t.path().join("app.tar");
    run(tool()
        .args([
            "microimage",
            "build",
            "--locked",
            "--compression",
            "zstd",
            "--format",
            "docker-archive",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&archive))
    .ok();
    let config = external(
        "skopeo",
        &["inspect", &format!("docker-archive:{}", archive.display())],
    );
    assert!(config.contains("\"Architecture\": \"amd64\""), "{config}");
    let listing = run(Command::new("tar").arg("-tf").arg(&archive))
        .ok()
        .stdout;
    let layer = listing
        .lines()
        .find(|l| l.ends_with(".tar"))
        .unwrap_or_else(|| panic!("no layer in {listing}"));
    let inner = run(Command::new("tar")
        .arg("-xOf")
        .arg(&archive)
        .arg(layer)
        .arg("--to-command=tar -t"))
    .ok()
    .stdout;
    assert!(
        inner.contains("etc/passwd") || inner.contains("usr/local/bin/example-app"),
        "{inner}"
    );
}
