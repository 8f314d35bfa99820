//! Supply chain (DESIGN §8), checked by tools nobody here wrote: trivy reads the crates
//! from the dependency data in the binary of an unpacked image; pyspdxtools and the
//! CycloneDX JSON schema (cyclonedx-python-lib) validate the SBOMs; signatures pushed to a
//! real registry are checked in cosign's format by Python's `cryptography`
//! (tests/support/cosign.py), with keys made there — PKCS#8 and cosign's encrypted format.
//! The tools live where scripts/setup.sh puts them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;
use crate::registry::{pusher, Registry, Setup};
use serde_json::Value;

/// Where scripts/setup.sh installs trivy and the Python venv.
fn tools() -> PathBuf {
    let dir = tools_dir();
    assert!(
        dir.join("trivy/trivy").is_file() && dir.join("venv/bin/python").is_file(),
        "trivy and the Python venv are missing from {}: run scripts/setup.sh",
        dir.display()
    );
    dir
}

fn python() -> Command {
    Command::new(tools().join("venv/bin/python"))
}

/// tests/support/cosign.py, run by the tools' Python.
fn cosign() -> Command {
    let mut cmd = python();
    cmd.arg(repo().join("tests/support/cosign.py"));
    cmd
}

/// What `cmd` (a cosign.py check) prints, as JSON.
fn printed_json(cmd: &mut Command) -> Value {
    serde_json::from_str(run(cmd).ok().stdout.trim()).unwrap()
}

/// The crates trivy finds in the root filesystem `rootfs`, as `name@version`.
fn trivy_crates(rootfs: &Path) -> BTreeSet<String> {
    let t = tmp();
    let out = t.path().join("trivy.json");
    run(Command::new(tools().join("trivy/trivy"))
        .env("TRIVY_CACHE_DIR", t.path().join("cache"))
        .args(["rootfs", "-q", "--format", "cyclonedx", "-o"])
        .arg(&out)
        .arg(rootfs))
    .ok();
    let doc: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    doc["components"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["purl"].as_str())
        .filter_map(|p| p.strip_prefix("pkg:rustbinary/"))
        .map(String::from)
        .collect()
}

/// Unpacks `layout:tag` with umoci; returns the bundle directory (rootfs inside).
fn unpack(layout: &Path, tag: &str) -> tempfile::TempDir {
    let t = tmp();
    let bundle = t.path().join("bundle");
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image"])
        .arg(format!("{}:{tag}", layout.display()))
        .arg(&bundle))
    .ok();
    t
}

/// The documents of the SBOMs listed in a layout's index.json, by artifact type (the
/// provenance beside them left out).
fn sboms(layout: &Path) -> Vec<(String, Vec<u8>, Value)> {
    layout_referrers(layout)
        .into_iter()
        .filter(|(t, ..)| t == "application/spdx+json" || t == "application/vnd.cyclonedx+json")
        .map(|(t, manifest, doc)| (t, doc, manifest))
        .collect()
}

/// The `pkg:cargo/` packages of an SBOM document that are linked into the binary, as
/// `name@version` (the CA bundle of the base layer, which comes from the
/// `webpki-root-certs` crate, is asserted on and left out).
fn sbom_crates(artifact_type: &str, doc: &[u8]) -> BTreeSet<String> {
    let mut crates = sbom_purls(artifact_type, doc);
    let bundle: Vec<String> = crates
        .iter()
        .filter(|c| c.starts_with("webpki-root-certs@"))
        .cloned()
        .collect();
    assert_eq!(
        bundle.len(),
        1,
        "the CA bundle's source is listed once: {crates:?}"
    );
    crates.remove(&bundle[0]);
    crates
}

fn sbom_purls(artifact_type: &str, doc: &[u8]) -> BTreeSet<String> {
    let doc: Value = serde_json::from_slice(doc).unwrap();
    let purls: Vec<String> = if artifact_type == "application/spdx+json" {
        doc["packages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["externalRefs"].as_array().cloned().unwrap_or_default())
            .filter_map(|r| r["referenceLocator"].as_str().map(String::from))
            .collect()
    } else {
        doc["components"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["purl"].as_str().map(String::from))
            .collect()
    };
    purls
        .iter()
        .filter_map(|p| p.strip_prefix("pkg:cargo/"))
        .map(|p| p.split('?').next().unwrap().to_string())
        .collect()
}

/// Validates an SBOM with the tool for its format: pyspdxtools, or the CycloneDX 1.5 JSON
/// schema through cyclonedx-python-lib.
fn validate(artifact_type: &str, doc: &[u8]) {
    let t = tmp();
    let file = t.path().join("doc.json");
    std::fs::write(&file, doc).unwrap();
    if artifact_type == "application/spdx+json" {
        run(Command::new(tools().join("venv/bin/pyspdxtools"))
            .arg("-i")
            .arg(&file))
        .ok();
    } else {
        let script = "import sys\n\
from cyclonedx.schema import SchemaVersion\n\
from cyclonedx.validation.json import JsonStrictValidator\n\
error = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())\n\
sys.exit(f'invalid: {error}' if error else 0)\n";
        run(python().args(["-c", script]).arg(&file)).ok();
    }
}

/// example-app built with both SBOM formats into a layout: (layout, the built binary).
fn example_with_sboms() -> &'static (PathBuf, PathBuf) {
    static BUILT: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Shares the cargo build of the common example layout.
        example_layout();
        let layout = tmp().keep().join("example-sboms");
        let out = run(tool()
            .args([
                "microimage",
                "build",
                "--locked",
                "--sbom",
                "spdx,cyclonedx",
            ])
            .args(["--message-format", "json", "--manifest-path"])
            .arg(repo().join("example-app/Cargo.toml"))
            .arg("-o")
            .arg(&layout))
        .ok();
        assert!(
            out.stderr
                .contains("Attached SPDX 2.3 and CycloneDX 1.5 SBOMs (linux/amd64: 31 crates)"),
            "{}",
            out.stderr
        );
        let record = first_json(&out.stdout);
        let binary = PathBuf::from(record["platforms"][0]["binary"].as_str().unwrap());
        assert_eq!(record["platforms"][0]["sboms"].as_array().unwrap().len(), 2);
        (layout, binary)
    })
}

#[test]
fn trivy_finds_the_crates_the_sboms_list_and_both_sboms_validate() {
    let (layout, _) = example_with_sboms();
    let bundle = unpack(layout, "0.1.0");
    let scanned = trivy_crates(&bundle.path().join("bundle/rootfs"));
    // mimalloc, which the build linked in, is recorded like any crate.
    for name in [
        "ring@",
        "rustls@",
        "hyper@",
        "tokio@",
        "example-app@0.1.0",
        "libmimalloc-sys@0.1.49",
    ] {
        assert!(
            scanned.iter().any(|c| c.starts_with(name)),
            "trivy does not see {name}: {scanned:?}"
        );
    }
    let docs = sboms(layout);
    assert_eq!(docs.len(), 2);
    for (artifact_type, doc, manifest) in &docs {
        validate(artifact_type, doc);
        // Exactly what the binary links: what trivy read from it, no more and no less —
        // no build dependency (ring's `cc`), no procedural macro (`tokio-macros`), nothing
        // for another target (`windows-sys`).
        let listed = sbom_crates(artifact_type, doc);
        assert_eq!(listed, scanned, "{artifact_type}");
        assert!(!listed.iter().any(|c| c.starts_with("cc@")
            || c.starts_with("tokio-macros@")
            || c.starts_with("windows")));
        assert_eq!(
            manifest["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(manifest["artifactType"], artifact_type.as_str());
        assert_eq!(
            manifest["subject"]["digest"],
            first_json(
                &run(tool()
                    .args(["microimage", "inspect", "--message-format", "json"])
                    .arg(layout))
                .ok()
                .stdout
            )["platforms"][0]["manifest_digest"]
        );
    }
    // The rest of the SBOM: the toolchain and the base layer's contents, with versions.
    let spdx = String::from_utf8(
        docs.iter()
            .find(|d| d.0 == "application/spdx+json")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    assert!(
        spdx.contains("\"rustc\"") && spdx.contains("webpki-root-certs"),
        "{spdx}"
    );
    let spdx_doc: Value = serde_json::from_str(&spdx).unwrap();
    let ring = spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "ring")
        .unwrap();
    assert!(
        ring["licenseDeclared"].as_str().unwrap().contains("ISC"),
        "ring's license expression is recorded: {ring}"
    );
    assert_eq!(
        ring["checksums"][0]["algorithm"], "SHA256",
        "Cargo.lock's checksum: {ring}"
    );
    let mimalloc = spdx_doc["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "libmimalloc-sys")
        .unwrap();
    assert_eq!(mimalloc["versionInfo"], "0.1.49", "{mimalloc}");
    assert_eq!(mimalloc["licenseDeclared"], "MIT", "{mimalloc}");
    // Other tools still read the layout by tag: the SBOM entries do not get in their way.
    let skopeo = external(
        "skopeo",
        &["inspect", &format!("oci:{}:0.1.0", layout.display())],
    );
    assert!(skopeo.contains("\"Architecture\": \"amd64\""), "{skopeo}");
    run(Command::new("umoci")
        .args(["stat", "--image"])
        .arg(format!("{}:0.1.0", layout.display())))
    .ok();
}

#[test]
fn the_layout_with_sboms_runs_under_podman() {
    let (layout, _) = example_with_sboms();
    let podman = Podman::new();
    let out = podman.run_oci(layout, "0.1.0", &[], &["--check"]).ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["tls_ready"], true, "{report}");
}

#[test]
fn a_packed_prebuilt_binary_keeps_its_crates_for_scanners_and_its_sbom() {
    let (layout, binary) = example_with_sboms();
    let verified = run(tool()
        .args(["microimage", "verify", "--message-format", "json"])
        .arg(binary))
    .ok();
    assert_eq!(first_json(&verified.stdout)["crates"], 31);
    let human = run(tool().args(["microimage", "verify"]).arg(binary)).ok();
    assert!(
        human
            .stdout
            .contains("static, linux/amd64 (x86_64), 31 crates recorded"),
        "{}",
        human.stdout
    );
    // Outside the project: nothing but the binary's own data to go on.
    let t = tmp();
    let packed = t.path().join("packed");
    run(tool()
        .current_dir(t.path())
        .args([
            "microimage",
            "pack",
            "--sbom",
            "cyclonedx",
            "--tag",
            "app:1",
        ])
        .arg(binary)
        .arg("-o")
        .arg(&packed))
    .ok();
    let bundle = unpack(&packed, "1");
    let scanned = trivy_crates(&bundle.path().join("bundle/rootfs"));
    let docs = sboms(&packed);
    assert_eq!(docs.len(), 1);
    validate(&docs[0].0, &docs[0].1);
    assert_eq!(sbom_crates(&docs[0].0, &docs[0].1), scanned);
    let built = sboms(layout);
    let cyclonedx = built.iter().find(|d| d.0 == docs[0].0).unwrap();
    assert_eq!(sbom_crates(&cyclonedx.0, &cyclonedx.1), scanned);
    // Its provenance says it was prebuilt, and names it by content.
    let statements = layout_provenance(&packed);
    assert_eq!(statements.len(), 1);
    let statement: Value = serde_json::from_slice(&statements[0]).unwrap();
    let build = &statement["predicate"]["buildDefinition"];
    assert_eq!(build["externalParameters"]["prebuilt"], true, "{statement}");
    let named = build["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "binary")
        .unwrap();
    assert_eq!(
        named["digest"]["sha256"],
        sha256_hex(&std::fs::read(binary).unwrap()).as_str()
    );
}

#[test]
fn no_auditable_and_no_sbom_leave_the_binary_and_layout_bare() {
    let dir = fixture("hello");
    let out = run(tool()
        .current_dir(dir.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--no-auditable",
            "--sbom",
            "none",
            "--provenance",
            "none",
        ])
        .args(["--message-format", "json", "-o"])
        .arg(dir.path().join("img")))
    .ok();
    let record = first_json(&out.stdout);
    assert!(record["platforms"][0]["sboms"]
        .as_array()
        .unwrap()
        .is_empty());
    assert!(record["platforms"][0]["provenance"].is_null());
    // Nothing at all is attached.
    assert!(layout_referrers(&dir.path().join("img")).is_empty());
    assert!(!out.stderr.contains("Attached"), "{}", out.stderr);
    let verified = run(tool()
        .args(["microimage", "verify", "--message-format", "json"])
        .arg(record["platforms"][0]["binary"].as_str().unwrap()))
    .ok();
    assert_eq!(first_json(&verified.stdout)["crates"], Value::Null);
}

#[test]
fn a_users_rustc_wrapper_still_runs_and_the_data_lists_exactly_the_crate() {
    let dir = fixture("hello");
    let log = dir.path().join("wrapper.log");
    let wrapper = dir.path().join("wrap.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(tool()
        .current_dir(dir.path())
        .env("RUSTC_WRAPPER", &wrapper)
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--message-format",
            "json",
            "-o",
        ])
        .arg(dir.path().join("img")))
    .ok();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("--crate-name hello"),
        "the wrapper did not run: {logged}"
    );
    let binary = first_json(&out.stdout)["platforms"][0]["binary"]
        .as_str()
        .unwrap()
        .to_string();
    let verified = run(tool()
        .args(["microimage", "verify", "--message-format", "json"])
        .arg(&binary))
    .ok();
    // hello has no dependencies: its data records itself, and the mimalloc the build
    // linked in.
    assert_eq!(first_json(&verified.stdout)["crates"], 2);
}

/// The signature checks of tests/support/cosign.py for `digest`.
fn signatures(registry: &Registry, repository: &str, digest: &str, keys: &[&Path]) -> Value {
    printed_json(
        cosign()
            .args([
                "check",
                &format!("http://{}", registry.host()),
                repository,
                digest,
            ])
            .args(keys),
    )
}

fn referrers(registry: &Registry, repository: &str, digest: &str) -> Value {
    printed_json(cosign().args([
        "referrers",
        &format!("http://{}", registry.host()),
        repository,
        digest,
    ]))
}

#[test]
fn signed_pushes_verify_in_cosigns_format_and_resigning_adds_nothing() {
    let (_, binary) = example_with_sboms();
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let keys = tmp();
    let password = "correct horse battery";
    run(cosign().args(["keygen"]).arg(keys.path()).arg(password)).ok();
    let other = tmp();
    run(cosign().args(["keygen"]).arg(other.path()).arg("other")).ok();
    let (pub_a, pub_b) = (keys.path().join("pub.pem"), other.path().join("pub.pem"));
    let reference = format!("{}/team/app:1.0", registry.host());

    // 1. `push` (a build) signed with the PKCS#8 key, both SBOMs attached.
    let first = run(pusher(home.path())
        .args([
            "microimage",
            "-vv",
            "push",
            "--locked",
            "--sbom",
            "spdx,cyclonedx",
        ])
        .args(["--message-format", "json", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg(&reference)
        .arg("--sign-key")
        .arg(keys.path().join("key.pem")))
    .ok();
    let record = first_json(&first.stdout);
    let index = record["index_digest"].as_str().unwrap().to_string();
    let manifest = record["platforms"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    let signed: Vec<(&str, bool)> = record["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["digest"].as_str().unwrap(), s["added"].as_bool().unwrap()))
        .collect();
    assert_eq!(signed, [(index.as_str(), true), (manifest.as_str(), true)]);
    let private = std::fs::read_to_string(keys.path().join("key.pem")).unwrap();
    let secret_line = private.lines().nth(1).unwrap();
    assert!(!first.stderr.contains(secret_line) && !first.stdout.contains(secret_line));

    for digest in [&index, &manifest] {
        let sigs = signatures(&registry, "team/app", digest, &[&pub_a, &pub_b]);
        assert_eq!(sigs["count"], 1, "{sigs}");
        let layer = &sigs["layers"][0];
        assert_eq!(
            layer["media_type"],
            "application/vnd.dev.cosign.simplesigning.v1+json"
        );
        assert_eq!(layer["names_digest"], true);
        assert_eq!(layer["type"], "cosign container image signature");
        assert_eq!(layer["identity"], format!("{}/team/app", registry.host()));
        // Verifies with its own public key, not with another.
        assert_eq!(
            layer["verified_by"],
            serde_json::json!([pub_a.to_str().unwrap()])
        );
    }
    // The SBOMs, the signed provenance and the cosign 3 signature, through the referrers
    // tag schema (docker-registry has no referrers API); each entry carries the artifact
    // type and annotations of the manifest it lists.
    let listed = referrers(&registry, "team/app", &manifest);
    let entries = listed["manifests"].as_array().unwrap();
    let types: BTreeSet<&str> = entries
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        BTreeSet::from([
            "application/spdx+json",
            "application/vnd.cyclonedx+json",
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        ])
    );
    assert_eq!(entries.len(), 4, "{listed}");
    let url = format!("http://{}", registry.host());
    for entry in entries {
        let digest = entry["digest"].as_str().unwrap();
        let listed_manifest: Value =
            printed_json(cosign().args(["manifest", &url, "team/app", digest]));
        assert_eq!(entry["artifactType"], listed_manifest["artifactType"]);
        assert_eq!(entry["annotations"], listed_manifest["annotations"]);
        assert_eq!(listed_manifest["subject"]["digest"], manifest.as_str());
    }
    let provenance = entries
        .iter()
        .find(|e| {
            e["annotations"]["dev.sigstore.bundle.predicateType"]
                == "https://slsa.dev/provenance/v1"
        })
        .unwrap();
    let checked: Value = printed_json(
        cosign()
            .args([
                "registry-bundle",
                &url,
                "team/app",
                provenance["digest"].as_str().unwrap(),
            ])
            .args([&pub_a, &pub_b]),
    );
    // Signed with the key given, and only with it.
    assert_eq!(
        checked["verified_by"],
        serde_json::json!([pub_a.to_str().unwrap()])
    );
    assert_eq!(checked["payload_type"], "application/vnd.in-toto+json");
    assert_eq!(
        checked["statement"]["subject"][0]["digest"]["sha256"],
        manifest.trim_start_matches("sha256:")
    );
    assert_eq!(
        checked["statement"]["predicate"]["buildDefinition"]["externalParameters"]["package"],
        "example-app"
    );

    // 2. The same push again, signed with the same key in cosign's encrypted format:
    // nothing is added.
    let second = run(pusher(home.path())
        .env("COSIGN_PASSWORD", password)
        .args([
            "microimage",
            "-vv",
            "push",
            "--locked",
            "--sbom",
            "spdx,cyclonedx",
        ])
        .args(["--message-format", "json", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg(&reference)
        .arg("--sign-key")
        .arg(keys.path().join("cosign.key")))
    .ok();
    let again = first_json(&second.stdout);
    assert_eq!(
        again["index_digest"],
        index.as_str(),
        "pack gave another image"
    );
    assert!(again["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["added"] == false));
    assert!(!second.stderr.contains(password) && !second.stdout.contains(password));
    assert!(second.stderr.contains("already"), "{}", second.stderr);
    for digest in [&index, &manifest] {
        assert_eq!(
            signatures(&registry, "team/app", digest, &[&pub_a])["count"],
            1
        );
    }
    assert_eq!(
        referrers(&registry, "team/app", &manifest)["manifests"]
            .as_array()
            .unwrap()
            .len(),
        4,
        "a second push duplicated referrer entries"
    );

    // 3. Another key adds its signature beside the first (through `pack --push` of the
    // binary that was built); both verify.
    run(pusher(home.path())
        .env("COSIGN_PASSWORD", "other")
        .args([
            "microimage",
            "pack",
            "--sbom",
            "spdx,cyclonedx",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg(binary)
        .arg("--push")
        .arg(&reference)
        .arg("--sign-key")
        .arg(other.path().join("cosign.key")))
    .ok();
    let both = signatures(&registry, "team/app", &manifest, &[&pub_a, &pub_b]);
    assert_eq!(both["count"], 2);
    assert_eq!(
        both["layers"][0]["verified_by"],
        serde_json::json!([pub_a.to_str().unwrap()])
    );
    assert_eq!(
        both["layers"][1]["verified_by"],
        serde_json::json!([pub_b.to_str().unwrap()])
    );

    // 4. inspect shows what is attached.
    let inspected = run(pusher(home.path()).args([
        "microimage",
        "inspect",
        "--message-format",
        "json",
        &reference,
    ]))
    .ok();
    let report = first_json(&inspected.stdout);
    let attached: BTreeSet<String> = report["platforms"][0]["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| match a["format"].as_str() {
            Some(format) => format.to_string(),
            None => format!("{} {}", a["predicate_type"], a["signed"]),
        })
        .collect();
    // Both keys' cosign 3 signatures and both signed provenances (build's and pack's).
    assert_eq!(
        attached,
        BTreeSet::from([
            "SPDX 2.3".to_string(),
            "CycloneDX 1.5".to_string(),
            "\"https://slsa.dev/provenance/v1\" true".to_string(),
            "\"https://sigstore.dev/cosign/sign/v1\" true".to_string(),
        ])
    );
    let counts: Vec<(String, u64)> = report["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["digest"].as_str().unwrap().to_string(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts, [(index.clone(), 2), (manifest.clone(), 2)]);
    let human = run(pusher(home.path()).args(["microimage", "inspect", &reference])).ok();
    assert!(
        human.stdout.contains("Attached:   SPDX 2.3 sha256:")
            && human
                .stdout
                .contains("Attached:   SLSA provenance v1 (signed) sha256:"),
        "{}",
        human.stdout
    );
    assert!(human
        .stdout
        .contains(&format!("Signed:   {manifest} (2 signatures")));
}

#[test]
fn a_wrong_password_or_a_bad_key_stops_before_anything_is_built_or_pushed() {
    let keys = tmp();
    run(cosign().args(["keygen"]).arg(keys.path()).arg("right")).ok();
    let dir = fixture("hello");
    let out = run(tool()
        .current_dir(dir.path())
        .env("COSIGN_PASSWORD", "wrong-password-123")
        .args([
            "microimage",
            "-vv",
            "push",
            "127.0.0.1:9/app:1",
            "--sign-key",
        ])
        .arg(keys.path().join("cosign.key")))
    .fails_with(1, "the password in COSIGN_PASSWORD does not open this key");
    assert!(!out.stderr.contains("wrong-password-123"));
    assert!(
        !out.stderr.contains("Compiling"),
        "it built first: {}",
        out.stderr
    );
    assert!(!dir.path().join("target").exists());
    let out = run(tool()
        .current_dir(dir.path())
        .env_remove("COSIGN_PASSWORD")
        .args(["microimage", "push", "127.0.0.1:9/app:1", "--sign-key"])
        .arg(keys.path().join("cosign.key")))
    .fails_with(1, "COSIGN_PASSWORD is not set");
    assert!(out.stderr.contains("help:"));
    run(tool()
        .current_dir(dir.path())
        .args(["microimage", "push", "127.0.0.1:9/app:1", "--sign-key"])
        .arg(keys.path().join("pub.pem")))
    .fails_with(1, "not a private key");
}

/// `build --sign-key` to a layout: the provenance is a signed bundle, the index and the
/// platform manifest get cosign 3 signatures, all referrers in the layout, each verifying
/// with the key given and not with another; `merge --push` of the layout carries the
/// platform manifest's along to the registry.
#[test]
fn sign_key_signs_a_layout_and_merge_push_carries_the_signatures_along() {
    example_layout();
    let keys = tmp();
    let other = tmp();
    for (dir, password) in [(&keys, "pw"), (&other, "other")] {
        run(cosign().arg("keygen").arg(dir.path()).arg(password)).ok();
    }
    let (pub_a, pub_b) = (keys.path().join("pub.pem"), other.path().join("pub.pem"));
    let t = tmp();
    let layout = t.path().join("signed");
    let out = run(tool()
        .args(["microimage", "build", "--locked", "--sbom", "none"])
        .args(["--message-format", "json", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&layout)
        .arg("--sign-key")
        .arg(keys.path().join("key.pem")))
    .ok();
    let record = first_json(&out.stdout);
    let index = record["index_digest"].as_str().unwrap().to_string();
    let manifest = record["platforms"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        record["platforms"][0]["provenance"]["artifact_type"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    let mut found = BTreeSet::new();
    for (artifact_type, m, doc) in layout_referrers(&layout) {
        assert_eq!(
            artifact_type,
            "application/vnd.dev.sigstore.bundle.v0.3+json"
        );
        assert_eq!(
            m["annotations"]["dev.sigstore.bundle.content"],
            "dsse-envelope"
        );
        let file = t.path().join("bundle.json");
        std::fs::write(&file, &doc).unwrap();
        let checked: Value = printed_json(cosign().arg("bundle").arg(&file).args([&pub_a, &pub_b]));
        // The Sigstore project's own verifier (JavaScript) agrees: the right key, not another.
        let sigstore = |key: &Path| {
            run(Command::new("node")
                .env("NODE_PATH", tools_dir().join("sigstore/node_modules"))
                .arg(repo().join("tests/support/sigstore_verify.js"))
                .arg(&file)
                .arg(key))
        };
        let verified = sigstore(&pub_a).ok();
        assert_eq!(verified.stdout.trim(), "verified", "{}", verified.stderr);
        assert_eq!(sigstore(&pub_b).code, 1, "another key verified it");
        assert_eq!(
            checked["verified_by"],
            serde_json::json!([pub_a.to_str().unwrap()])
        );
        assert_eq!(checked["has_key_hint"], true);
        let subject = m["subject"]["digest"].as_str().unwrap().to_string();
        assert_eq!(
            checked["statement"]["subject"][0]["digest"]["sha256"],
            subject.trim_start_matches("sha256:")
        );
        let predicate = checked["statement"]["predicateType"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            m["annotations"]["dev.sigstore.bundle.predicateType"],
            predicate.as_str()
        );
        found.insert((predicate, subject));
    }
    assert_eq!(
        found,
        BTreeSet::from([
            (
                "https://slsa.dev/provenance/v1".to_string(),
                manifest.clone()
            ),
            (
                "https://sigstore.dev/cosign/sign/v1".to_string(),
                index.clone()
            ),
            (
                "https://sigstore.dev/cosign/sign/v1".to_string(),
                manifest.clone()
            ),
        ])
    );
    // The same build again signs nothing twice (deterministic signatures).
    run(tool()
        .args([
            "microimage",
            "build",
            "--locked",
            "--sbom",
            "none",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&layout)
        .arg("--sign-key")
        .arg(keys.path().join("key.pem")))
    .ok();
    assert_eq!(layout_referrers(&layout).len(), 3);
    // merge -o with the same key signs nothing twice: the platform manifest was signed by
    // it already, and so was the index (one platform merged alone gives the same index).
    let merged = t.path().join("merged");
    run(tool()
        .args(["microimage", "merge", "--tag", "app:2", "-o"])
        .arg(&merged)
        .arg(&layout)
        .arg("--sign-key")
        .arg(keys.path().join("key.pem")))
    .ok();
    let merged_refs = layout_referrers(&merged);
    let signatures_of = |digest: &str| {
        merged_refs
            .iter()
            .filter(|(_, m, _)| {
                m["subject"]["digest"] == digest
                    && m["annotations"]["dev.sigstore.bundle.predicateType"]
                        == "https://sigstore.dev/cosign/sign/v1"
            })
            .count()
    };
    assert_eq!(signatures_of(&manifest), 1);
    let merged_index: Value =
        serde_json::from_slice(&std::fs::read(merged.join("index.json")).unwrap()).unwrap();
    let new_index = merged_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["artifactType"].is_null())
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(new_index, index);
    assert_eq!(signatures_of(&new_index), 1);

    let registry = Registry::start(Setup::default());
    let home = tmp();
    run(pusher(home.path())
        .args(["microimage", "merge", "--push"])
        .arg(format!("{}/team/merged:1", registry.host()))
        .arg(&layout))
    .ok();
    let listed = referrers(&registry, "team/merged", &manifest);
    let digests: BTreeSet<&str> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(digests.len(), 2, "{listed}");
    let layout_index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    for entry in layout_index["manifests"].as_array().unwrap() {
        let m: Value = serde_json::from_slice(
            &std::fs::read(
                layout.join("blobs/sha256").join(
                    entry["digest"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches("sha256:"),
                ),
            )
            .unwrap(),
        )
        .unwrap();
        if m["subject"]["digest"] == manifest.as_str() {
            assert!(
                digests.contains(entry["digest"].as_str().unwrap()),
                "{listed}"
            );
        }
    }
}
