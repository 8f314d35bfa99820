//! `merge`: per-platform images from layouts, archives and a registry → one index. The
//! merged index is byte-for-byte the one `build` makes of both platforms; a merge pushed to
//! the registry the platform images are in mounts their blobs and uploads none; both
//! platforms then run from it under podman.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::*;
use crate::registry::{pusher, Registry, Setup};
use serde_json::Value;

/// `build` of example-app for `platform` to `out` (cargo's no-op once it is built).
fn build(platform: &str, out: &Path) -> String {
    let done = run(tool()
        .args([
            "microimage",
            "build",
            "-q",
            "--locked",
            "--platform",
            platform,
        ])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(out))
    .ok();
    result_line(&done.stdout).1
}

fn merge(args: &[&std::ffi::OsStr]) -> Run {
    run(tool().args(["microimage", "merge"]).args(args))
}

fn os<P: AsRef<std::ffi::OsStr> + ?Sized>(p: &P) -> &std::ffi::OsStr {
    p.as_ref()
}

#[test]
fn merge_of_layouts_and_archives_is_the_index_build_makes() {
    let t = tmp();
    let at = |name: &str| t.path().join(name);
    let both = build("linux/amd64,linux/arm64", &at("both"));
    assert_eq!(
        build("linux/amd64", &at("amd64")),
        build("linux/amd64", &at("amd64.tar"))
    );
    build("linux/arm64", &at("arm64"));
    build("linux/arm64", &at("arm64.tar"));

    // Two layouts, in either order; a layout and an archive; DIR:TAG names the image.
    for (n, sources) in [
        ["amd64", "arm64"],
        ["arm64", "amd64"],
        ["amd64", "arm64.tar"],
        ["arm64.tar:0.1.0", "amd64.tar"],
    ]
    .iter()
    .enumerate()
    {
        let out = at(&format!("m{n}"));
        let paths: Vec<PathBuf> = sources
            .iter()
            .map(|s| PathBuf::from(format!("{}/{s}", t.path().display())))
            .collect();
        let mut args = vec![os("-o"), out.as_os_str()];
        args.extend(paths.iter().map(|p| p.as_os_str()));
        let done = merge(&args).ok();
        let (location, digest) = result_line(&done.stdout);
        assert_eq!(digest, both, "{sources:?}");
        assert_eq!(location, format!("oci:{}:0.1.0", out.display()));
        assert!(done.stderr.contains("Merging"), "{}", done.stderr);
    }
    // An archive too; skopeo reads the index and both manifests.
    let archive = at("app.tar");
    let done = merge(&[
        os("-o"),
        archive.as_os_str(),
        at("amd64").as_os_str(),
        at("arm64").as_os_str(),
    ])
    .ok();
    assert_eq!(result_line(&done.stdout).1, both);
    let raw = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:0.1.0", archive.display()),
        ],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let platforms: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["amd64", "arm64"]);

    // The SBOMs and provenance of the platform manifests travel with them: inspect lists
    // them per platform.
    let inspected = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(at("m0")))
    .ok();
    let report = first_json(&inspected.stdout);
    for p in report["platforms"].as_array().unwrap() {
        assert_eq!(p["attached"].as_array().unwrap().len(), 2, "{p}");
    }
    // JSON: the platforms taken whole have no binary.
    let json = run(tool()
        .args(["microimage", "merge", "--message-format", "json", "-o"])
        .arg(at("j"))
        .args([at("amd64"), at("arm64")]))
    .ok();
    let record = first_json(&json.stdout);
    assert_eq!(record["reason"], "image-written");
    assert_eq!(record["index_digest"], both.as_str());
    assert!(record["platforms"][0]["binary"].is_null(), "{record}");
    assert!(record["platforms"][1]["compressed_size"].as_u64().unwrap() > 100_000);

    // It runs: the arm64 image of the merged layout, under qemu.
    let podman = Podman::new();
    let arm = podman
        .run_oci(
            &at("m0"),
            "0.1.0",
            &["--platform", "linux/arm64"],
            &["--check"],
        )
        .ok();
    let report: Value = serde_json::from_str(arm.stdout.trim()).unwrap();
    assert_eq!(report["arch"], "aarch64");

    // Refusals, each with nothing written: one platform twice (both sources named), a
    // docker-archive source, an image whose manifest is missing, a docker-archive output.
    let out = at("refused");
    merge(&[
        os("-o"),
        out.as_os_str(),
        at("amd64").as_os_str(),
        at("both").as_os_str(),
    ])
    .fails_with(
        2,
        &format!(
            "linux/amd64 is in both `{}` and `{}`",
            at("amd64").display(),
            at("both").display()
        ),
    );
    let docker = at("docker.tar");
    run(tool()
        .args([
            "microimage",
            "build",
            "-q",
            "--locked",
            "--platform",
            "linux/amd64",
            "--format",
            "docker-archive",
        ])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&docker))
    .ok();
    merge(&[
        os("-o"),
        out.as_os_str(),
        docker.as_os_str(),
        at("arm64").as_os_str(),
    ])
    .fails_with(1, "is a docker-archive, which holds no OCI manifests");
    let broken = at("broken");
    copy_dir(&at("arm64"), &broken);
    let index: Value =
        serde_json::from_str(&std::fs::read_to_string(broken.join("index.json")).unwrap()).unwrap();
    let top = index["manifests"][0]["digest"].as_str().unwrap();
    let top: Value = serde_json::from_slice(
        &std::fs::read(
            broken
                .join("blobs/sha256")
                .join(top.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let manifest = top["manifests"][0]["digest"].as_str().unwrap().to_string();
    std::fs::remove_file(
        broken
            .join("blobs/sha256")
            .join(manifest.trim_start_matches("sha256:")),
    )
    .unwrap();
    merge(&[
        os("-o"),
        out.as_os_str(),
        at("amd64").as_os_str(),
        broken.as_os_str(),
    ])
    .fails_with(1, &format!("is incomplete: blob {manifest} is missing"));
    merge(&[
        os("-o"),
        at("x.tar").as_os_str(),
        os("--format"),
        os("docker-archive"),
        at("amd64").as_os_str(),
        at("arm64").as_os_str(),
    ])
    .fails_with(
        2,
        "a docker-archive holds one platform's image, not an index",
    );
    assert!(!out.exists() && !at("x.tar").exists());
    // Index annotations are those the sources agree on.
    let annotated = at("annotated");
    run(tool()
        .args([
            "microimage",
            "build",
            "-q",
            "--locked",
            "--platform",
            "linux/arm64",
        ])
        .args(["--annotation", "org.example.only-arm64=yes"])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&annotated))
    .ok();
    let mixed = at("mixed");
    merge(&[
        os("-o"),
        mixed.as_os_str(),
        annotated.as_os_str(),
        at("amd64").as_os_str(),
    ])
    .ok();
    let raw = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:0.1.0", mixed.display()),
        ],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    let annotations = index["annotations"].as_object().unwrap();
    assert!(!annotations.contains_key("org.example.only-arm64"), "{raw}");
    assert_eq!(
        annotations["org.opencontainers.image.version"], "0.1.0",
        "{raw}"
    );
    // Neither -o nor --push.
    merge(&[at("amd64").as_os_str()]).fails_with(2, "--output");
}

fn copy_dir(from: &Path, to: &Path) {
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}

#[test]
fn merge_push_of_by_digest_pushes_mounts_blobs_and_both_platforms_run() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let t = tmp();
    let both = build("all", &t.path().join("both"));
    let host = registry.host();
    let repository = format!("{host}/app");
    // One push per platform, as matrix jobs on two runners do, each pinned by digest.
    let pinned: Vec<String> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|platform| {
            let done = run(pusher(home.path())
                .args(["microimage", "push", &repository, "--by-digest", "--locked"])
                .args(["--platform", platform, "--manifest-path"])
                .arg(repo().join("example-app/Cargo.toml")))
            .ok();
            done.stdout.trim().to_string()
        })
        .collect();

    // Into another repository of the same registry: blobs mounted, none uploaded; the
    // index is the one `build` of both platforms makes. Another user's machine: no
    // blob-location cache to help (a fresh XDG_CACHE_HOME).
    let (uploads, mounts) = (registry.uploads(), registry.mounts());
    let other = tmp();
    let release = format!("{host}/release:1.4.0");
    let done = run(pusher(other.path())
        .args([
            "microimage",
            "merge",
            "--message-format",
            "json",
            "--push",
            &release,
            "--tag",
            "latest",
        ])
        .args([&pinned[1], &pinned[0]]))
    .ok();
    let record = first_json(&done.stdout);
    assert_eq!(record["reason"], "image-pushed", "{record}");
    assert_eq!(record["index_digest"], both.as_str());
    assert_eq!(record["pinned"], format!("{release}@{both}"));
    assert_eq!(record["blobs"]["uploaded"], 0, "{record}");
    assert!(
        record["blobs"]["mounted"].as_u64().unwrap() >= 4,
        "{record}"
    );
    assert_eq!(
        registry.uploads(),
        uploads,
        "merge uploaded a blob:\n{}",
        registry.log()
    );
    assert!(registry.mounts() > mounts);
    // No layer was downloaded either.
    let layer_gets = registry
        .log()
        .lines()
        .filter(|l| l.contains("\"GET /v2/app/blobs/sha256:"))
        .count();
    assert!(
        layer_gets <= 2,
        "only the two configs are read:\n{}",
        registry.log()
    );

    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/release:latest")))
    .ok()
    .stdout;
    let index: Value = serde_json::from_str(&raw).unwrap();
    let manifests: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| format!("{repository}@{}", m["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(manifests, pinned, "{raw}");
    let podman = Podman::new();
    podman.forget_later(&release);
    for (platform, arch) in [("linux/amd64", "x86_64"), ("linux/arm64", "aarch64")] {
        let out = run(podman.command().args([
            "run",
            "--rm",
            "--tls-verify=false",
            "--platform",
            platform,
            &release,
            "--check",
        ]))
        .ok();
        let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
        assert_eq!(report["arch"], arch);
    }

    // Into the repository they are in: everything is there already.
    let same = run(pusher(home.path())
        .args([
            "microimage",
            "merge",
            "--message-format",
            "json",
            "--push",
            &format!("{repository}:1.4.0"),
        ])
        .args(&pinned))
    .ok();
    let record = first_json(&same.stdout);
    assert_eq!(record["index_digest"], both.as_str());
    assert_eq!(record["blobs"]["uploaded"], 0);
    assert_eq!(record["blobs"]["mounted"], 0);

    // From a local layout: only what the repository lacks is uploaded (here: nothing, the
    // by-digest pushes sent the same blobs).
    let local = run(pusher(home.path())
        .args([
            "microimage",
            "merge",
            "--message-format",
            "json",
            "--push",
            &format!("{repository}:local"),
        ])
        .arg(t.path().join("both")))
    .ok();
    let record = first_json(&local.stdout);
    assert_eq!(record["index_digest"], both.as_str());
    assert_eq!(record["blobs"]["uploaded"], 0, "{record}");
    assert!(
        record["blobs"]["present"].as_u64().unwrap() >= 4,
        "{record}"
    );

    // To disk: the layers are downloaded; the same index.
    let local = t.path().join("pulled.tar");
    run(pusher(home.path())
        .args(["microimage", "merge", "-o"])
        .arg(&local)
        .args([&pinned[0], &format!("{repository}:1.4.0")]))
    .fails_with(2, "linux/amd64 is in both");
    let written = run(pusher(home.path())
        .args(["microimage", "merge", "--tag", "app:2", "-o"])
        .arg(&local)
        .args(&pinned))
    .ok();
    assert_eq!(result_line(&written.stdout).1, both);
    external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:2", local.display()),
        ],
    );

    // A manifest the registry does not have; manifests of another kind (Docker schema 2).
    let absent = format!("{repository}@sha256:{}", "0".repeat(64));
    run(pusher(home.path())
        .args(["microimage", "merge", "--push", &format!("{repository}:x")])
        .args([&pinned[0], &absent]))
    .fails_with(1, "does not exist in the registry");
    let v2s2 = format!("{host}/v2s2:1");
    run(Command::new("skopeo").args([
        "copy",
        "--quiet",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        "--format",
        "v2s2",
        &format!("docker://{}", pinned[1]),
        &format!("docker://{v2s2}"),
    ]))
    .ok();
    run(pusher(home.path())
        .args(["microimage", "merge", "--push", &format!("{repository}:y")])
        .args([&pinned[0], &v2s2]))
    .fails_with(1, "the sources' manifests are of different kinds");
    // Nothing was tagged by the refused merges.
    let tags = external(
        "skopeo",
        &[
            "list-tags",
            "--tls-verify=false",
            &format!("docker://{repository}"),
        ],
    );
    assert!(!tags.contains("\"x\"") && !tags.contains("\"y\""), "{tags}");
}
