//! End to end: `cargo microimage build` of example-app (rustls + ring, so C code), read by
//! tools nobody here wrote (skopeo, umoci) and run by podman with runc.

use crate::common::*;
use serde_json::Value;

const TAG: &str = "0.1.0";

#[test]
fn stdout_is_one_result_line_with_the_index_digest() {
    let (layout, stdout) = example_layout();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let (reference, digest) = result_line(stdout);
    assert_eq!(reference, format!("oci:{}:{TAG}", layout.display()));
    let raw = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci:{}:{TAG}", layout.display()),
        ],
    );
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    // The digest printed is the digest of the index skopeo reads.
    let index_json: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], digest.as_str());
    assert_eq!(
        index_json["manifests"][0]["annotations"]["io.containerd.image.name"],
        "example-app:0.1.0"
    );
}

#[test]
fn skopeo_reads_the_config() {
    let (layout, _) = example_layout();
    let config = external(
        "skopeo",
        &[
            "inspect",
            "--config",
            &format!("oci:{}:{TAG}", layout.display()),
        ],
    );
    let config: Value = serde_json::from_str(&config).unwrap();
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/example-app"])
    );
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["WorkingDir"], "/home/nonroot");
    assert_eq!(
        c["Env"],
        serde_json::json!([
            "PATH=/usr/local/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
        ])
    );
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    let inspect = external(
        "skopeo",
        &["inspect", &format!("oci:{}:{TAG}", layout.display())],
    );
    let inspect: Value = serde_json::from_str(&inspect).unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);
}

#[test]
fn umoci_stats_and_unpacks_exactly_the_designed_files() {
    let (layout, _) = example_layout();
    let stat = external(
        "umoci",
        &["stat", "--image", &format!("{}:{TAG}", layout.display())],
    );
    assert!(stat.contains("cargo-microimage base"), "{stat}");
    assert!(
        stat.contains("COPY example-app /usr/local/bin/example-app"),
        "{stat}"
    );

    let t = tmp();
    let rootfs = t.path().join("rootfs");
    external(
        "umoci",
        &[
            "raw",
            "unpack",
            "--image",
            &format!("{}:{TAG}", layout.display()),
            rootfs.to_str().unwrap(),
        ],
    );
    let mut files: Vec<String> = walk_all(&rootfs)
        .into_iter()
        .map(|p| p.strip_prefix(&rootfs).unwrap().display().to_string())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "etc",
            "etc/group",
            "etc/os-release",
            "etc/passwd",
            "etc/ssl",
            "etc/ssl/certs",
            "etc/ssl/certs/ca-certificates.crt",
            "home",
            "home/nonroot",
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/example-app",
        ]
    );
    use std::os::unix::fs::MetadataExt;
    let meta = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).unwrap();
    assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
    assert_eq!(meta("home/nonroot").mode() & 0o7777, 0o700);
    assert_eq!(
        (meta("home/nonroot").uid(), meta("home/nonroot").gid()),
        (65532, 65532)
    );
    assert_eq!(meta("usr/local/bin/example-app").mode() & 0o7777, 0o755);
    assert_eq!(meta("usr/local/bin/example-app").uid(), 0);
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd")).unwrap();
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    let certs = std::fs::read_to_string(rootfs.join("etc/ssl/certs/ca-certificates.crt")).unwrap();
    assert!(certs.matches("-----BEGIN CERTIFICATE-----").count() > 100);
}

fn walk_all(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if p.is_dir() && !p.is_symlink() {
            out.extend(walk_all(&p));
        }
    }
    out
}

#[test]
fn podman_runs_it_as_nonroot_with_ca_roots_and_a_writable_tmp() {
    let (layout, _) = example_layout();
    let podman = Podman::new();
    let out = podman.run_oci(layout, TAG, &[], &["--check"]).ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["uid"], 65532);
    assert_eq!(report["gid"], 65532);
    assert!(report["ca_roots"].as_u64().unwrap() > 100, "{report}");
    assert_eq!(report["tls_ready"], true);
    assert_eq!(report["tmp_writable"], true);
    assert_eq!(report["cwd"], "/home/nonroot");
    assert_eq!(report["arch"], "x86_64");
}

#[test]
fn podman_runs_it_as_an_http_service() {
    let (layout, _) = example_layout();
    let report = Podman::new().serve_example(layout, TAG, None);
    assert_eq!(report["uid"], 65532);
    assert!(report["ca_roots"].as_u64().unwrap() > 100);
}

#[test]
fn inspect_reports_platforms_layers_and_config() {
    let (layout, stdout) = example_layout();
    let (_, digest) = result_line(stdout);
    let out = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(layout))
    .ok();
    let report: Value = first_json(&out.stdout);
    assert_eq!(report["reason"], "image-inspected");
    assert_eq!(report["index_digest"], digest.as_str());
    assert_eq!(report["tags"], serde_json::json!([TAG]));
    let p = &report["platforms"][0];
    assert_eq!(p["platform"], "linux/amd64");
    let layers = p["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[0]["media_type"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    // base: etc, etc/group, etc/os-release, etc/passwd, etc/ssl, etc/ssl/certs, the bundle, home, home/nonroot, tmp
    assert_eq!(layers[0]["files"], 10);
    // app: usr, usr/local, usr/local/bin, the binary
    assert_eq!(layers[1]["files"], 4);
    assert!(layers[1]["uncompressed_size"].as_u64().unwrap() > layers[1]["size"].as_u64().unwrap());
    assert_eq!(p["config"]["user"], "65532:65532");

    let human = run(tool().args(["microimage", "inspect"]).arg(layout))
        .ok()
        .stdout;
    assert!(human.contains("Platform: linux/amd64"), "{human}");
    assert!(
        human.contains("Entrypoint: [\"/usr/local/bin/example-app\"]"),
        "{human}"
    );
    assert!(human.contains(&digest), "{human}");
}

#[test]
fn json_message_format_lists_sizes_and_digests() {
    let t = tmp();
    let out = run(tool()
        .args([
            "microimage",
            "build",
            "--locked",
            "--message-format",
            "json",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(t.path().join("img.tar")))
    .ok();
    let line: Value = first_json(&out.stdout);
    assert_eq!(line["reason"], "image-written");
    assert_eq!(line["format"], "oci-archive");
    assert_eq!(line["name"], "example-app:0.1.0");
    let p = &line["platforms"][0];
    assert_eq!(p["platform"], "linux/amd64");
    assert!(p["binary_size"].as_u64().unwrap() > 100_000);
    assert!(p["compressed_size"].as_u64().unwrap() < p["uncompressed_size"].as_u64().unwrap());
    // Same inputs, same digest as the layout build.
    let (_, digest) = result_line(&example_layout().1);
    assert_eq!(line["index_digest"], digest.as_str());
    let archive = format!("oci-archive:{}:{TAG}", t.path().join("img.tar").display());
    external("skopeo", &["inspect", &archive]);
}
