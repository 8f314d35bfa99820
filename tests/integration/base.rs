//! `--base`: the app on another image. Every base is made here, nothing pulled from
//! outside: a busybox image for amd64 and arm64 from Debian's `busybox-static`
//! (`scripts/setup.sh` fetches it), and a "company" base with its own Env, User, Labels,
//! ports, volume, stop signal, WorkingDir, Cmd and CA bundle. They are read from the local
//! registry (with auth, as OCI and as Docker schema 2), and as a layout, an OCI archive and
//! a docker-archive.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;
use crate::registry::{basic, docker_config, pusher, Registry, Setup};
use serde_json::{json, Value};

fn umoci(args: &[&str]) {
    run(Command::new("umoci").args(args)).ok();
}

fn blob(layout: &Path, digest: &str) -> Value {
    let hex = digest.strip_prefix("sha256:").unwrap();
    serde_json::from_slice(&std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()).unwrap()
}

/// The `index.json` entry tagged `tag` in `layout`.
fn entry(layout: &Path, tag: &str) -> Value {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap_or_else(|| panic!("no {tag} in {index}"))
        .clone()
}

/// Adds an image index of the `tags` (one single-platform image each) to `layout`,
/// tagged `name`.
fn add_index(layout: &Path, name: &str, tags: &[(&str, &str, Option<&str>)]) {
    let manifests: Vec<Value> = tags
        .iter()
        .map(|(tag, arch, variant)| {
            let e = entry(layout, tag);
            let mut platform = json!({"architecture": arch, "os": "linux"});
            if let Some(v) = variant {
                platform["variant"] = json!(v);
            }
            json!({"mediaType": e["mediaType"], "digest": e["digest"], "size": e["size"], "platform": platform})
        })
        .collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))
    .unwrap();
    let digest = format!("sha256:{}", sha256_hex(&index));
    std::fs::write(layout.join("blobs/sha256").join(&digest[7..]), &index).unwrap();
    let path = layout.join("index.json");
    let mut top: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    top["manifests"].as_array_mut().unwrap().push(json!({
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "digest": digest,
        "size": index.len(),
        "annotations": {"org.opencontainers.image.ref.name": name},
    }));
    std::fs::write(&path, serde_json::to_vec(&top).unwrap()).unwrap();
}

/// The bases, made once: (busybox layout with `amd64`, `arm64` and the index `1`,
/// company layout tagged `1`, the company CA).
pub fn bases() -> &'static (PathBuf, PathBuf, PathBuf) {
    static MADE: OnceLock<(PathBuf, PathBuf, PathBuf)> = OnceLock::new();
    MADE.get_or_init(|| {
        let dir = tmp().keep();
        let busybox = dir.join("busybox");
        let bb = busybox.to_str().unwrap();
        umoci(&["init", "--layout", bb]);
        for arch in ["amd64", "arm64"] {
            let root = dir.join(format!("root-{arch}"));
            std::fs::create_dir_all(root.join("bin")).unwrap();
            std::fs::copy(
                tools_dir().join("busybox").join(arch).join("busybox"),
                root.join("bin/busybox"),
            )
            .unwrap_or_else(|e| panic!("busybox for {arch} (run scripts/setup.sh): {e}"));
            std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
            let image = format!("{bb}:{arch}");
            umoci(&["new", "--image", &image]);
            umoci(&["insert", "--image", &image, root.to_str().unwrap(), "/"]);
            umoci(&[
                "config",
                "--image",
                &image,
                "--os",
                "linux",
                "--architecture",
                arch,
                "--config.user",
                "0:0",
                "--config.env",
                "PATH=/bin",
                "--config.cmd",
                "/bin/sh",
            ]);
        }
        add_index(
            &busybox,
            "1",
            &[("amd64", "amd64", None), ("arm64", "arm64", Some("v8"))],
        );

        // The company base: busybox with a config of its own and a CA bundle of one CA.
        let company = dir.join("company");
        let co = company.to_str().unwrap();
        let root = dir.join("root-company");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        std::fs::create_dir_all(root.join("etc/ssl/certs")).unwrap();
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::copy(
            tools_dir().join("busybox/amd64/busybox"),
            root.join("bin/busybox"),
        )
        .unwrap();
        std::os::unix::fs::symlink("busybox", root.join("bin/sh")).unwrap();
        self_signed(&dir, "Acme Internal CA", "company-ca.key", "company-ca.pem");
        std::fs::copy(
            dir.join("company-ca.pem"),
            root.join("etc/ssl/certs/ca-certificates.crt"),
        )
        .unwrap();
        umoci(&["init", "--layout", co]);
        let image = format!("{co}:1");
        umoci(&["new", "--image", &image]);
        umoci(&["insert", "--image", &image, root.to_str().unwrap(), "/"]);
        umoci(&[
            "config",
            "--image",
            &image,
            "--os",
            "linux",
            "--architecture",
            "amd64",
            "--config.user",
            "1000:1000",
            "--config.env",
            "PATH=/usr/bin:/bin",
            "--config.env",
            "COMPANY=acme",
            "--config.env",
            "RUST_LOG=warn",
            "--config.label",
            "org.company=acme",
            "--config.label",
            "shared=base",
            "--config.exposedports",
            "9000/tcp",
            "--config.volume",
            "/data",
            "--config.stopsignal",
            "SIGINT",
            "--config.workingdir",
            "/srv",
            "--config.cmd",
            "serve",
        ]);
        (busybox, company, dir.join("company-ca.pem"))
    })
}

/// The config and manifest of the one platform image of layout `dir` tagged `tag`, for
/// `arch`.
fn image_of(dir: &Path, tag: &str, arch: &str) -> (Value, Value) {
    let index = blob(dir, entry(dir, tag)["digest"].as_str().unwrap());
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == arch)
        .unwrap()
        .clone();
    let manifest = blob(dir, m["digest"].as_str().unwrap());
    let config = blob(dir, manifest["config"]["digest"].as_str().unwrap());
    (config, manifest)
}

fn build_on(base: &str, out: &Path, extra: &[&str]) -> Run {
    run(tool()
        .args(["microimage", "build", "--locked", "--base", base])
        .args(extra)
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(out))
}

#[test]
fn a_company_base_passes_on_its_config_and_ca_bundle_as_specified() {
    let (_, company, _) = bases();
    let t = tmp();
    let base = format!("oci:{}:1", company.display());
    let out = t.path().join("on-company");
    build_on(
        &base,
        &out,
        &[
            "--env",
            "RUST_LOG=debug",
            "--label",
            "shared=ours",
            "--expose",
            "8080",
        ],
    )
    .ok();
    let (config, manifest) = image_of(&out, "0.1.0", "amd64");
    let first_config = config["config"].clone();
    let c = &config["config"];
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "COMPANY=acme",
            "RUST_LOG=debug"
        ]),
        "{config}"
    );
    assert_eq!(c["User"], "1000:1000", "the base's user, not root");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/example-app"]));
    assert!(c.get("Cmd").is_none(), "the base's Cmd is dropped: {c}");
    assert_eq!(
        c["Labels"],
        json!({"org.company": "acme", "shared": "ours"})
    );
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "9000/tcp": {}}));
    assert_eq!(c["Volumes"], json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGINT");
    // The base's layers first, unchanged, then the app's; its history, then ours.
    let (base_config, base_manifest) = {
        let e = entry(company, "1");
        let m = blob(company, e["digest"].as_str().unwrap());
        (blob(company, m["config"]["digest"].as_str().unwrap()), m)
    };
    let diff_ids = config["rootfs"]["diff_ids"].as_array().unwrap();
    assert_eq!(diff_ids.len(), 2);
    let first_diff_id = diff_ids[0].clone();
    assert_eq!(diff_ids[0], base_config["rootfs"]["diff_ids"][0]);
    assert_eq!(
        manifest["layers"][0]["digest"],
        base_manifest["layers"][0]["digest"]
    );
    let history = config["history"].as_array().unwrap();
    let base_history = base_config["history"].as_array().unwrap();
    assert_eq!(&history[..base_history.len()], &base_history[..]);
    assert!(history.last().unwrap()["created_by"]
        .as_str()
        .unwrap()
        .contains("cargo-microimage app"));
    let annotations = &manifest["annotations"];
    // A local base is recorded by its tag and digest, never by the path it was read from
    // (which named the checkout and made the digest depend on it).
    let recorded = format!("1@{}", entry(company, "1")["digest"].as_str().unwrap());
    assert_eq!(annotations["org.opencontainers.image.base.name"], *recorded);
    assert_eq!(
        annotations["org.opencontainers.image.base.digest"],
        entry(company, "1")["digest"]
    );
    // The provenance names the base by digest.
    let statement: Value = serde_json::from_slice(&layout_provenance(&out)[0]).unwrap();
    let named = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "base")
        .unwrap_or_else(|| panic!("no base in {statement}"))
        .clone();
    assert_eq!(
        format!("sha256:{}", named["digest"]["sha256"].as_str().unwrap()),
        entry(company, "1")["digest"].as_str().unwrap()
    );
    assert_eq!(named["annotations"]["reference"], *recorded);
    // inspect shows it.
    let inspected = run(tool().args(["microimage", "inspect"]).arg(&out)).ok();
    assert!(
        inspected
            .stdout
            .contains(&format!("Base:     {recorded} (sha256:")),
        "{}",
        inspected.stdout
    );
    // It runs with the company's CA bundle (one root); with --ca-certs bundled, the
    // Mozilla roots go on top and SSL_CERT_FILE points at them.
    let podman = Podman::new();
    let report: Value = serde_json::from_str(
        podman
            .run_oci(&out, "0.1.0", &[], &["--check"])
            .ok()
            .stdout
            .trim(),
    )
    .unwrap();
    assert_eq!(report["ca_roots"], 1, "{report}");
    assert_eq!(report["cwd"], "/srv", "{report}");
    let bundled = t.path().join("bundled");
    build_on(&base, &bundled, &["--ca-certs", "bundled"]).ok();
    let (config, manifest) = image_of(&bundled, "0.1.0", "amd64");
    assert!(config["config"]["Env"]
        .as_array()
        .unwrap()
        .contains(&json!("SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")));
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 3);
    let report: Value = serde_json::from_str(
        podman
            .run_oci(&bundled, "0.1.0", &[], &["--check"])
            .ok()
            .stdout
            .trim(),
    )
    .unwrap();
    assert!(report["ca_roots"].as_u64().unwrap() > 100, "{report}");

    // The same base as an OCI archive and as a docker-archive: the same config.
    let archive = t.path().join("company.tar");
    let docker = t.path().join("company-docker.tar");
    external(
        "skopeo",
        &[
            "copy",
            &base,
            &format!("oci-archive:{}:1", archive.display()),
        ],
    );
    external(
        "skopeo",
        &[
            "copy",
            &base,
            &format!("docker-archive:{}:company:1", docker.display()),
        ],
    );
    for (other, name) in [
        (
            format!("oci-archive:{}:1", archive.display()),
            "from-archive",
        ),
        (
            format!("docker-archive:{}", docker.display()),
            "from-docker",
        ),
    ] {
        let o = t.path().join(name);
        build_on(
            &other,
            &o,
            &[
                "--env",
                "RUST_LOG=debug",
                "--label",
                "shared=ours",
                "--expose",
                "8080",
            ],
        )
        .ok();
        let (c2, m2) = image_of(&o, "0.1.0", "amd64");
        assert_eq!(c2["config"], first_config, "{name}");
        assert_eq!(c2["rootfs"]["diff_ids"][0], first_diff_id, "{name}");
        assert_eq!(
            m2["layers"][0]["mediaType"]
                .as_str()
                .unwrap()
                .split('+')
                .next(),
            Some("application/vnd.oci.image.layer.v1.tar"),
            "{name}"
        );
    }

    // pack of the built binary on the same base gives the same image as build.
    let (_, built) = result_line(
        &build_on(
            &base,
            &t.path().join("again"),
            &[
                "--env",
                "RUST_LOG=debug",
                "--label",
                "shared=ours",
                "--expose",
                "8080",
            ],
        )
        .ok()
        .stdout,
    );
    let packed = run(tool()
        .current_dir(repo().join("example-app"))
        .args(["microimage", "pack", "--base", &base])
        .args([
            "--env",
            "RUST_LOG=debug",
            "--label",
            "shared=ours",
            "--expose",
            "8080",
        ])
        .arg(shared_target().join("x86_64-unknown-linux-musl/release/example-app"))
        .arg("-o")
        .arg(t.path().join("packed")))
    .ok();
    assert_eq!(result_line(&packed.stdout).1, built);
}

#[test]
fn a_base_without_the_platform_is_refused_before_anything_is_built() {
    let (_, company, _) = bases();
    let t = tmp();
    let target = t.path().join("target");
    let out = run(tool()
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "microimage",
            "build",
            "--locked",
            "--platform",
            "linux/arm64",
        ])
        .args(["--base", &format!("oci:{}:1", company.display())])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(t.path().join("image")))
    .fails_with(1, "has no image for linux/arm64/v8: it has linux/amd64");
    assert!(!out.stderr.contains("Compiling"), "{}", out.stderr);
    assert!(!t.path().join("image").exists());
    assert!(!target.join("aarch64-unknown-linux-musl").exists());
}

#[test]
fn busybox_from_the_registry_runs_with_its_shell_on_both_platforms_cached_and_mounted() {
    let (busybox, _, _) = bases();
    let registry = Registry::start(Setup {
        user: Some(("ci", "base-pass")),
        ..Default::default()
    });
    let host = registry.host();
    let copy = |from: String, to: String, extra: &[&str]| {
        run(Command::new("skopeo")
            .arg("copy")
            .args(extra)
            .args(["--dest-tls-verify=false", "--dest-creds", "ci:base-pass"])
            .arg(from)
            .arg(to))
        .ok();
    };
    copy(
        format!("oci:{}:1", busybox.display()),
        format!("docker://{host}/base/busybox:1"),
        &["--all"],
    );
    copy(
        format!("oci:{}:amd64", busybox.display()),
        format!("docker://{host}/base/busybox-v2:1"),
        &["--format", "v2s2"],
    );
    let home = tmp();
    docker_config(
        home.path(),
        &json!({"auths": {host.clone(): {"auth": basic("ci", "base-pass")}}}),
    );
    let t = tmp();
    let build = |base: &str, out: &str, extra: &[&str]| {
        run(pusher(home.path())
            .args(["microimage", "build", "--locked", "--base", base])
            .args(extra)
            .arg("--manifest-path")
            .arg(repo().join("example-app/Cargo.toml"))
            .arg("-o")
            .arg(t.path().join(out)))
        .ok()
    };

    // Both platforms, by tag: the base's shell and our binary are both there.
    let by_tag = format!("{host}/base/busybox:1");
    let multi = build(&by_tag, "multi", &["--platform", "all"]);
    let podman = Podman::new();
    for platform in ["linux/amd64", "linux/arm64"] {
        let report: Value = serde_json::from_str(
            podman
                .run_oci(
                    &t.path().join("multi"),
                    "0.1.0",
                    &["--platform", platform],
                    &["--check"],
                )
                .ok()
                .stdout
                .trim(),
        )
        .unwrap();
        assert_eq!(report["tls_ready"], true, "{platform}: {report}");
        let shell = podman
            .run_oci(
                &t.path().join("multi"),
                "0.1.0",
                &["--platform", platform, "--entrypoint", "/bin/sh"],
                &["-c", "test -x /usr/local/bin/example-app && echo shell ok"],
            )
            .ok();
        assert!(
            shell.stdout.contains("shell ok"),
            "{platform}: {}",
            shell.stdout
        );
    }
    let (config, _) = image_of(&t.path().join("multi"), "0.1.0", "arm64");
    assert_eq!(
        config["config"]["User"], "65532:65532",
        "a root base gets nonroot"
    );

    // By digest: the same image twice, and a warm build asks the registry nothing.
    let digest = multi
        .stderr
        .lines()
        .find_map(|l| {
            l.split_once("(sha256:")
                .map(|(_, d)| format!("sha256:{}", &d[..64]))
        })
        .unwrap_or_else(|| panic!("no base digest in {}", multi.stderr));
    let by_digest = format!("{host}/base/busybox@{digest}");
    let first = build(&by_digest, "d1", &["--platform", "all"]);
    let requests = registry
        .log()
        .lines()
        .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
        .count();
    let second = build(&by_digest, "d2", &["--platform", "all"]);
    assert_eq!(result_line(&first.stdout).1, result_line(&second.stdout).1);
    let after = registry
        .log()
        .lines()
        .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD "))
        .count();
    assert_eq!(after, requests, "a warm build by digest asked the registry");
    // By tag, warm: one manifest request besides the connection's, no blob read.
    let before = registry.log();
    build(&by_tag, "warm-tag", &["--platform", "all"]);
    let log = registry.log();
    // The access log's lines (the registry logs more about each request).
    let new: Vec<&str> = log
        .lines()
        .skip(before.lines().count())
        .filter(|l| l.starts_with("127.0.0.1 - -"))
        .collect();
    assert_eq!(
        new.iter().filter(|l| l.contains("/manifests/")).count(),
        1,
        "{new:#?}"
    );
    assert!(!new.iter().any(|l| l.contains("/blobs/")), "{new:#?}");

    // Pushed to the base's registry: its layers are mounted, never uploaded.
    let base_layers: Vec<String> = {
        let (_, m) = image_of(busybox, "1", "amd64");
        m["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_string())
            .collect()
    };
    let mounts = registry.mounts();
    run(pusher(home.path())
        .args([
            "microimage",
            "push",
            "--locked",
            "--platform",
            "linux/amd64",
            "--base",
            &by_digest,
        ])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml"))
        .arg(format!("{host}/app/on-busybox:1")))
    .ok();
    assert!(registry.mounts() > mounts, "no mount: {}", registry.log());
    for digest in &base_layers {
        assert!(
            !registry
                .log()
                .lines()
                .any(|l| l.contains("\"PUT ") && l.contains(digest.as_str())),
            "base layer {digest} was uploaded"
        );
    }

    // A Docker schema 2 base: the same layer bytes under the OCI media type.
    build(&format!("{host}/base/busybox-v2:1"), "v2", &[]);
    let (_, m) = image_of(&t.path().join("v2"), "0.1.0", "amd64");
    assert_eq!(m["layers"][0]["digest"].as_str().unwrap(), base_layers[0]);
    assert_eq!(
        m["layers"][0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let shell = podman
        .run_oci(
            &t.path().join("v2"),
            "0.1.0",
            &["--entrypoint", "/bin/sh"],
            &["-c", "echo v2 ok"],
        )
        .ok();
    assert!(shell.stdout.contains("v2 ok"), "{}", shell.stdout);
}
