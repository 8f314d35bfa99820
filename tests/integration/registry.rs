//! Push against a real registry: Debian's docker-registry (distribution v2) started here
//! on a free 127.0.0.1 port — without auth, with htpasswd (bcrypt) basic auth, with TLS
//! from a self-signed CA — and a fault proxy in front of it. Results are pulled back with
//! skopeo and run with podman.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

pub struct Registry {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
    tls: bool,
    token_server: Option<Child>,
}

#[derive(Default)]
pub struct Setup {
    pub user: Option<(&'static str, &'static str)>,
    pub tls: bool,
    /// Bearer tokens from tests/support/token_server.py instead of htpasswd.
    pub token: Option<(&'static str, &'static str)>,
}

impl Registry {
    pub fn start(setup: Setup) -> Registry {
        let dir = tmp();
        let port = free_port();
        let d = dir.path();
        let mut config = format!(
            "version: 0.1\nlog: {{level: info}}\nstorage: {{filesystem: {{rootdirectory: {}}}, delete: {{enabled: true}}}}\n",
            d.join("data").display()
        );
        let mut http = format!("http: {{addr: \"127.0.0.1:{port}\", secret: test-only");
        if setup.tls {
            server_certificate(d);
            http.push_str(&format!(
                ", tls: {{certificate: {}, key: {}}}",
                d.join("cert.pem").display(),
                d.join("key.pem").display()
            ));
        }
        config.push_str(&http);
        config.push_str("}\n");
        if let Some((user, pass)) = setup.user {
            let out = external("htpasswd", &["-Bbn", user, pass]);
            std::fs::write(d.join("htpasswd"), out).unwrap();
            config.push_str(&format!(
                "auth: {{htpasswd: {{realm: test, path: {}}}}}\n",
                d.join("htpasswd").display()
            ));
        }
        let mut token_server = None;
        if let Some((user, pass)) = setup.token {
            self_signed(d, "microimage-token", "tok.key", "tok.crt");
            let token_port = free_port();
            token_server = Some(
                Command::new("python3")
                    .arg(repo().join("tests/support/token_server.py"))
                    .args([
                        &token_port.to_string(),
                        user,
                        pass,
                        "tok.key",
                        "tok.crt",
                        "microimage-test-issuer",
                    ])
                    .current_dir(d)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(d.join("token.log")).unwrap())
                    .spawn()
                    .unwrap(),
            );
            wait_port(token_port);
            config.push_str(&format!(
                "auth: {{token: {{realm: \"http://127.0.0.1:{token_port}/token\", service: microimage-test, \
                 issuer: microimage-test-issuer, rootcertbundle: {}}}}}\n",
                d.join("tok.crt").display()
            ));
        }
        std::fs::write(d.join("config.yml"), config).unwrap();
        let log = std::fs::File::create(d.join("registry.log")).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(d.join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry {
            dir,
            port,
            child,
            tls: setup.tls,
            token_server,
        };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the registry did not start: {}", self.log());
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Blob uploads started (POSTs to /blobs/uploads/ that are not mounts).
    pub fn uploads(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| {
                l.contains("\"POST /v2/") && l.contains("/blobs/uploads/") && !l.contains("mount=")
            })
            .count()
    }

    pub fn mounts(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains("\"POST /v2/") && l.contains("mount="))
            .count()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// skopeo flags to reach it.
    fn skopeo_tls(&self) -> Vec<String> {
        if self.tls {
            vec![format!("--cert-dir={}", self.certs_dir().display())]
        } else {
            vec!["--tls-verify=false".into()]
        }
    }

    fn certs_dir(&self) -> PathBuf {
        let d = self.dir.path().join("certs.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(self.ca(), d.join("ca.crt")).unwrap();
        d
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.token_server.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn wait_port(port: u16) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {port}");
}

/// The tool with a private blob-location cache and docker/podman auth files of the test.
pub fn pusher(home: &Path) -> Command {
    let mut cmd = tool();
    share_compiled_runtime(&home.join("cache"));
    cmd.env("XDG_CACHE_HOME", home.join("cache"))
        .env("DOCKER_CONFIG", home.join("docker"))
        .env("REGISTRY_AUTH_FILE", home.join("auth.json"))
        .env_remove("MICROIMAGE_REPO");
    cmd
}

fn push_example(home: &Path, reference: &str, extra: &[&str]) -> Run {
    run(pusher(home)
        .args([
            "microimage",
            "push",
            reference,
            "--locked",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml"))
        .args(extra))
}

fn digest_of_raw(registry: &Registry, reference: &str) -> String {
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(registry.skopeo_tls());
    args.push(format!("docker://{reference}"));
    let raw = run(Command::new("skopeo").args(&args)).ok().stdout;
    use sha2::Digest;
    let hash = sha2::Sha256::digest(raw.as_bytes());
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn push_prints_reference_at_digest_and_skopeo_pulls_the_same_blobs() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let reference = format!("{}/example-app:1.0", registry.host());
    let out = push_example(home.path(), &reference, &["--tag", "latest"]).ok();
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    let line = out.stdout.trim();
    let (pushed, digest) = line.split_once('@').unwrap();
    assert_eq!(pushed, reference);
    assert_eq!(digest_of_raw(&registry, &reference), digest);
    assert_eq!(
        digest_of_raw(
            &registry,
            &format!("{}/example-app:latest", registry.host())
        ),
        digest
    );

    // Pulled back into an OCI layout: exactly the blobs of the local build.
    let t = tmp();
    let pulled = t.path().join("pulled");
    external(
        "skopeo",
        &[
            "copy",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:1.0", pulled.display()),
        ],
    );
    let blobs = |dir: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(dir.join("blobs/sha256"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (local, local_out) = example_layout();
    // skopeo copies the image, not the SBOM and provenance that refer to it (their
    // manifests, documents and shared empty config).
    let index: Value =
        serde_json::from_slice(&std::fs::read(local.join("index.json")).unwrap()).unwrap();
    let mut sbom_blobs = Vec::new();
    for entry in index["manifests"].as_array().unwrap() {
        if entry["artifactType"].is_string() {
            let digest = entry["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:");
            let manifest: Value = serde_json::from_slice(
                &std::fs::read(local.join("blobs/sha256").join(digest)).unwrap(),
            )
            .unwrap();
            sbom_blobs.push(digest.to_string());
            for d in [
                &manifest["config"]["digest"],
                &manifest["layers"][0]["digest"],
            ] {
                sbom_blobs.push(
                    d.as_str()
                        .unwrap()
                        .trim_start_matches("sha256:")
                        .to_string(),
                );
            }
        }
    }
    sbom_blobs.sort();
    sbom_blobs.dedup();
    assert_eq!(sbom_blobs.len(), 5);
    let image_blobs: Vec<String> = blobs(local)
        .into_iter()
        .filter(|b| !sbom_blobs.contains(b))
        .collect();
    assert_eq!(blobs(&pulled), image_blobs);
    let (_, local_digest) = result_line(local_out);
    assert_eq!(
        local_digest, digest,
        "pushed and written images are the same image"
    );

    // podman pulls it by digest and runs it.
    let podman = Podman::new();
    podman.forget_later(line);
    let run_out =
        run(podman
            .command()
            .args(["run", "--rm", "--tls-verify=false", line, "--check"]))
        .ok();
    let report: Value = serde_json::from_str(run_out.stdout.trim()).unwrap();
    assert_eq!(report["uid"], 65532);
}

#[test]
fn multi_arch_push_runs_on_both_platforms() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let reference = format!("{}/multi:1.0", registry.host());
    let out = push_example(home.path(), &reference, &["--platform", "all"]).ok();
    let line = out.stdout.trim().to_string();
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{reference}"),
    ]))
    .ok()
    .stdout;
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2);
    // inspect reads it back from the registry.
    let inspected = run(pusher(home.path()).args([
        "microimage",
        "inspect",
        "--message-format",
        "json",
        &reference,
    ]))
    .ok();
    let report: Value = first_json(&inspected.stdout);
    assert_eq!(report["format"], "registry");
    assert_eq!(report["index_digest"], line.split_once('@').unwrap().1);
    let platforms: Vec<&str> = report["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!(
        report["platforms"][1]["manifest_digest"],
        index["manifests"][1]["digest"]
    );
    assert!(report["platforms"][0]["layers"][1]["files"].is_null());
    let podman = Podman::new();
    podman.forget_later(&line);
    let arm = run(podman.command().args([
        "run",
        "--rm",
        "--tls-verify=false",
        "--platform",
        "linux/arm64",
        &line,
        "--check",
    ]))
    .ok();
    let report: Value = serde_json::from_str(arm.stdout.trim()).unwrap();
    assert_eq!(report["arch"], "aarch64");
}

#[test]
fn re_push_uploads_nothing_and_another_repository_mounts() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    push_example(home.path(), &format!("{}/first:1", registry.host()), &[]).ok();
    let uploads = registry.uploads();
    assert_eq!(
        uploads,
        6,
        "base and app layers, config, the SBOM, the provenance and their empty config: {}",
        registry.log()
    );
    let again = push_example(home.path(), &format!("{}/first:1", registry.host()), &[]).ok();
    assert_eq!(registry.uploads(), uploads, "a re-push started uploads");
    assert!(
        again
            .stderr
            .contains("0 uploaded, 0 mounted, 6 already there"),
        "{}",
        again.stderr
    );
    let other = push_example(home.path(), &format!("{}/second:1", registry.host()), &[]).ok();
    assert_eq!(
        registry.uploads(),
        uploads,
        "the second repository uploaded instead of mounting"
    );
    assert_eq!(registry.mounts(), 6);
    assert!(
        other.stderr.contains("0 uploaded, 6 mounted"),
        "{}",
        other.stderr
    );
}

/// Puts the amd64 busybox base (`crate::base::bases`) in `host` as `REPOSITORY:1`.
fn busybox_into(host: &str, repository: &str, creds: Option<&str>) {
    let (busybox, _, _) = crate::base::bases();
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        cmd.args(["--dest-creds", creds]);
    }
    run(cmd
        .arg(format!("oci:{}:amd64", busybox.display()))
        .arg(format!("docker://{host}/{repository}:1")))
    .ok();
}

/// `push REFERENCE --base BASE` of example-app for linux/amd64.
fn push_on_base(home: &Path, reference: &str, base: &str) -> Run {
    run(pusher(home)
        .args(["microimage", "push", reference, "--locked", "--base", base])
        .arg("--manifest-path")
        .arg(repo().join("example-app/Cargo.toml")))
}

#[test]
fn a_base_on_a_registry_that_checks_scopes_is_mounted_not_downloaded() {
    // Token auth with scopes enforced (the token service grants exactly what is asked,
    // as Docker Hub and GHCR do): a mount from acme/base needs `repository:acme/base:pull`
    // in the push's token. It was not asked for, the mount was refused (401), and as the
    // base's layers are only described when the push goes to the base's registry, the
    // push failed.
    let registry = Registry::start(Setup {
        token: Some(("tok-user", "tok-pass")),
        ..Default::default()
    });
    let host = registry.host();
    busybox_into(&host, "acme/base", Some("tok-user:tok-pass"));
    let home = tmp();
    docker_config(
        home.path(),
        &serde_json::json!({"auths": {host.clone(): {"auth": basic("tok-user", "tok-pass")}}}),
    );
    let out = push_on_base(
        home.path(),
        &format!("{host}/me/app:1"),
        &format!("{host}/acme/base:1"),
    )
    .ok();
    assert!(out.stderr.contains("1 mounted"), "{}", out.stderr);
    // Its config is read (the image inherits it); its layer is not.
    let log = registry.log();
    let gets: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"GET /v2/acme/base/blobs/"))
        .collect();
    assert!(gets.len() <= 1, "base blobs downloaded: {gets:#?}");
    let tokens = std::fs::read_to_string(registry.dir.path().join("token.log")).unwrap();
    assert!(
        tokens.contains("acme%2Fbase%3Apull") || tokens.contains("acme/base:pull"),
        "{tokens}"
    );
}

#[test]
fn a_base_layer_the_registry_will_not_mount_is_copied_from_the_base() {
    // A registry that declines mounts: the described base layer is read from the base's
    // repository and uploaded as it arrives (the push failed before).
    let registry = Registry::start(Setup::default());
    busybox_into(&registry.host(), "acme/base", None);
    let proxy = Proxy::start(registry.port, Fault::NoMounts);
    let host = format!("127.0.0.1:{}", proxy.port);
    let home = tmp();
    let reference = format!("{host}/me/app:1");
    let out = push_on_base(home.path(), &reference, &format!("{host}/acme/base:1")).ok();
    assert!(out.stderr.contains("0 mounted"), "{}", out.stderr);
    assert!(
        registry.log().contains("GET /v2/acme/base/blobs/"),
        "not copied"
    );
    // The image is whole: skopeo copies it.
    let t = tmp();
    run(Command::new("skopeo").args([
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{reference}"),
        &format!("oci:{}:1", t.path().join("pulled").display()),
    ]))
    .ok();
}

pub fn docker_config(home: &Path, config: &Value) {
    std::fs::create_dir_all(home.join("docker")).unwrap();
    std::fs::write(home.join("docker/config.json"), config.to_string()).unwrap();
}

pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

#[test]
fn basic_auth_from_the_docker_config() {
    let registry = Registry::start(Setup {
        user: Some(("ci", "s3cret-pass")),
        ..Default::default()
    });
    let home = tmp();
    let reference = format!("{}/authed:1", registry.host());
    // Anonymous: refused, with where credentials were looked for.
    let out = push_example(home.path(), &reference, &[]).fails_with(
        1,
        "refused to let anonymous access push to `authed`: not authorized",
    );
    assert!(out.stderr.contains("config.json"), "{}", out.stderr);
    docker_config(
        home.path(),
        &serde_json::json!({"auths": {registry.host(): {"auth": basic("ci", "s3cret-pass")}}}),
    );
    let ok = push_example(home.path(), &reference, &[]).ok();
    let digest = ok.stdout.trim().split_once('@').unwrap().1.to_string();
    let check = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        "--creds",
        "ci:s3cret-pass",
        &format!("docker://{reference}"),
    ]))
    .ok();
    use sha2::Digest;
    let hash = sha2::Sha256::digest(check.stdout.as_bytes());
    assert_eq!(
        format!(
            "sha256:{}",
            hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        digest
    );
}

#[test]
fn bearer_token_auth() {
    let registry = Registry::start(Setup {
        token: Some(("tok-user", "tok-pass")),
        ..Default::default()
    });
    let home = tmp();
    let reference = format!("{}/tokened:1", registry.host());
    push_example(home.path(), &reference, &[]).fails_with(1, "not authorized");
    docker_config(
        home.path(),
        &serde_json::json!({"auths": {registry.host(): {"auth": basic("tok-user", "tok-pass")}}}),
    );
    let ok = push_example(home.path(), &reference, &[]).ok();
    assert!(
        ok.stdout.starts_with(&format!("{reference}@sha256:")),
        "{}",
        ok.stdout
    );
    let token_log = std::fs::read_to_string(registry.dir.path().join("token.log")).unwrap();
    assert!(
        token_log.contains("GET /token?"),
        "no token was requested: {token_log}"
    );
    // The token server grants only `pull` under `others/`, as a registry does for a
    // namespace the user does not own: the push is refused, naming the repository.
    let theirs = format!("{}/others/app:1", registry.host());
    let out = push_example(home.path(), &theirs, &[])
        .fails_with(1, "refused to let the credentials from the docker config");
    assert!(
        out.stderr.contains("push to `others/app`"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("your own user or organisation"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stdout, "");
    let check = run(Command::new("skopeo").args([
        "inspect",
        "--tls-verify=false",
        "--creds",
        "tok-user:tok-pass",
        &format!("docker://{reference}"),
    ]))
    .ok();
    assert!(
        check.stdout.contains("\"Architecture\": \"amd64\""),
        "{}",
        check.stdout
    );
}

#[test]
fn wrong_password_is_a_clear_error_that_never_shows_the_password() {
    let registry = Registry::start(Setup {
        user: Some(("ci", "right-pass")),
        ..Default::default()
    });
    let home = tmp();
    docker_config(
        home.path(),
        &serde_json::json!({"auths": {registry.host(): {"auth": basic("ci", "Wr0ng-Pa55word")}}}),
    );
    let out = push_example(home.path(), &format!("{}/x:1", registry.host()), &["-v"]).fails_with(
        1,
        &format!(
            "the registry {} refused to let the credentials from the docker config",
            registry.host()
        ),
    );
    for text in [&out.stdout, &out.stderr] {
        assert!(
            !text.contains("Wr0ng-Pa55word"),
            "the password leaked: {text}"
        );
        assert!(
            !text.contains(&basic("ci", "Wr0ng-Pa55word")),
            "the encoded credential leaked: {text}"
        );
    }
    assert!(out.stderr.contains("the docker config"), "{}", out.stderr);
}

#[test]
fn credentials_from_a_credential_helper() {
    let registry = Registry::start(Setup {
        user: Some(("helper-user", "helper-pass")),
        ..Default::default()
    });
    let home = tmp();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let helper = bin.join("docker-credential-microtest");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 1\nread server\n[ \"$server\" = \"{}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\n\
             echo '{{\"ServerURL\":\"'\"$server\"'\",\"Username\":\"helper-user\",\"Secret\":\"helper-pass\"}}'\n",
            registry.host()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();
    docker_config(
        home.path(),
        &serde_json::json!({"credHelpers": {registry.host(): "microtest"}}),
    );
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    run(pusher(home.path())
        .env("PATH", path)
        .args([
            "microimage",
            "push",
            &format!("{}/helped:1", registry.host()),
            "--locked",
            "--manifest-path",
        ])
        .arg(repo().join("example-app/Cargo.toml")))
    .ok();
}

#[test]
fn podman_auth_file_is_used_when_docker_has_nothing() {
    let registry = Registry::start(Setup {
        user: Some(("pod", "man-pass")),
        ..Default::default()
    });
    let home = tmp();
    std::fs::write(
        home.path().join("auth.json"),
        serde_json::json!({"auths": {registry.host(): {"auth": basic("pod", "man-pass")}}})
            .to_string(),
    )
    .unwrap();
    push_example(home.path(), &format!("{}/podauth:1", registry.host()), &[]).ok();
}

#[test]
fn tls_with_a_private_ca() {
    let registry = Registry::start(Setup {
        tls: true,
        ..Default::default()
    });
    let home = tmp();
    let reference = format!("{}/secure:1", registry.host());
    let out = push_example(home.path(), &reference, &[]).fails_with(1, "TLS connection");
    assert!(out.stderr.contains("--ca-file"), "{}", out.stderr);
    let ca = registry.ca();
    let ok = push_example(
        home.path(),
        &reference,
        &["--ca-file", ca.to_str().unwrap()],
    )
    .ok();
    let digest = ok.stdout.trim().split_once('@').unwrap().1.to_string();
    assert_eq!(digest_of_raw(&registry, &reference), digest);
}

#[test]
fn a_stopped_registry_is_a_clear_error() {
    let port = free_port();
    let home = tmp();
    let out = push_example(home.path(), &format!("127.0.0.1:{port}/gone:1"), &[])
        .fails_with(1, &format!("cannot reach the registry 127.0.0.1:{port}"));
    assert!(out.stdout.is_empty());
}

#[test]
fn default_destination_comes_from_microimage_repo() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let out = run(pusher(home.path())
        .env("MICROIMAGE_REPO", format!("{}/team", registry.host()))
        .args(["microimage", "push", "--locked", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml")))
    .ok();
    assert!(
        out.stdout.starts_with(&format!(
            "{}/team/example-app:0.1.0@sha256:",
            registry.host()
        )),
        "{}",
        out.stdout
    );
    run(pusher(home.path())
        .args(["microimage", "push", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml")))
    .fails_with(2, "push needs a destination");
}

#[test]
fn pack_pushes_prebuilt_binaries_with_gzip_or_zstd_layers() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let dir = fixture("hello");
    let bin = cargo_build_fixture(dir.path(), "hello");
    let out = run(pusher(home.path())
        .args(["microimage", "pack"])
        .arg(&bin)
        .args([
            "--push",
            &format!("{}/packed:2", registry.host()),
            "--tag",
            "edge",
        ]))
    .ok();
    assert!(
        out.stdout
            .starts_with(&format!("{}/packed:2@sha256:", registry.host())),
        "{}",
        out.stdout
    );
    digest_of_raw(&registry, &format!("{}/packed:edge", registry.host()));

    // zstd layers go up and come back as they are.
    let zstd = format!("{}/packed:zstd", registry.host());
    run(pusher(home.path())
        .args(["microimage", "pack", "--compression", "zstd"])
        .arg(&bin)
        .args(["--push", &zstd]))
    .ok();
    let copy = tmp();
    let dest = copy.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "-q", "--src-tls-verify=false"])
        .arg(format!("docker://{zstd}"))
        .arg(format!("dir:{}", dest.display())))
    .ok();
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dest.join("manifest.json")).unwrap())
            .unwrap();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"], "application/vnd.oci.image.layer.v1.tar+zstd",
            "{manifest}"
        );
        let blob = dest.join(
            layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        );
        run(Command::new("tar").args(["--zstd", "-tf"]).arg(&blob)).ok();
    }
}

/// A TCP proxy in front of the registry that injects faults, then passes traffic through.
struct Proxy {
    port: u16,
}

#[derive(Clone)]
enum Fault {
    /// Answer the first N connections with this whole HTTP response (a 503, a 429 …).
    Answer(usize, String),
    /// Cut the first connection that sends more than N bytes upstream, mid-request.
    DropAfter(usize),
    /// Pass requests upstream at no more than N bytes a second: a slow uplink.
    Throttle(u64),
    /// Answer the first N blob-upload `POST`s with this whole HTTP response (each request
    /// gets a connection of its own, so every one is looked at).
    Uploads(usize, String),
    /// Take the `mount=…&from=…` off every blob-upload `POST`: a registry that declines
    /// cross-repository mounts (it opens an upload session, 202, instead).
    NoMounts,
}

impl Proxy {
    fn start(upstream: u16, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { break };
                let connections = connections.clone();
                let dropped = dropped.clone();
                let fault = fault.clone();
                std::thread::spawn(move || {
                    // A TLS hello (0x16) is passed through: only HTTP requests get faults.
                    let mut first = [0u8; 1];
                    let tls = client
                        .peek(&mut first)
                        .is_ok_and(|n| n == 1 && first[0] == 0x16);
                    if let (Fault::Answer(k, response), false) = (&fault, tls) {
                        if connections.fetch_add(1, Ordering::SeqCst) < *k {
                            read_head(&mut client);
                            let _ = client.write_all(response.as_bytes());
                            return;
                        }
                    }
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                        return;
                    };
                    if let (Fault::NoMounts, false) = (&fault, tls) {
                        let head = read_head(&mut client);
                        let (line, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
                        let line = match line.split_once('?') {
                            Some((path, _))
                                if line.starts_with("POST ") && line.contains("mount=") =>
                            {
                                format!("{path} HTTP/1.1")
                            }
                            _ => line.to_string(),
                        };
                        let _ = write!(server, "{line}\r\nConnection: close\r\n{rest}");
                    }
                    if let (Fault::Uploads(k, response), false) = (&fault, tls) {
                        let head = read_head(&mut client);
                        if head.starts_with("POST ")
                            && head.contains("/blobs/uploads/")
                            && connections.fetch_add(1, Ordering::SeqCst) < *k
                        {
                            let _ = client.write_all(response.as_bytes());
                            return;
                        }
                        // One request per connection, so every request is looked at.
                        let (line, rest) = head.split_once("\r\n").unwrap_or((&head, ""));
                        let _ = write!(server, "{line}\r\nConnection: close\r\n{rest}");
                    }
                    let mut client_r = client.try_clone().unwrap();
                    let mut server_w = server.try_clone().unwrap();
                    let limit = match fault {
                        Fault::DropAfter(limit) if dropped.load(Ordering::SeqCst) == 0 => {
                            Some(limit)
                        }
                        _ => None,
                    };
                    let rate = match fault {
                        Fault::Throttle(rate) => Some(rate),
                        _ => None,
                    };
                    let up = std::thread::spawn(move || {
                        let mut sent = 0usize;
                        let mut buf = [0u8; 16384];
                        while let Ok(n) = client_r.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            if let Some(limit) = limit {
                                if sent + n > limit && dropped.fetch_add(1, Ordering::SeqCst) == 0 {
                                    let _ = server_w.shutdown(std::net::Shutdown::Both);
                                    let _ = client_r.shutdown(std::net::Shutdown::Both);
                                    break;
                                }
                            }
                            sent += n;
                            if let Some(rate) = rate {
                                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
                            }
                            if server_w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = server_w.shutdown(std::net::Shutdown::Write);
                    });
                    let _ = std::io::copy(&mut server, &mut client);
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = up.join();
                });
            }
        });
        Proxy { port }
    }
}

/// Reads an HTTP request head (through the blank line) from `stream`, byte by byte so
/// nothing of the body is consumed.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).is_ok_and(|n| n == 1) {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn repository_names_the_registry_refuses_are_clear_errors() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let cases = [
        (
            "400 Bad Request",
            r#"{"errors":[{"code":"NAME_INVALID","message":"invalid repository name: must be under an organization"}]}"#,
            "rejected the repository name `team/app`: invalid repository name: must be under an organization",
        ),
        (
            "404 Not Found",
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository team/app does not exist"}]}"#,
            "has no repository `team/app`: repository team/app does not exist",
        ),
    ];
    for (status, body, says) in cases {
        let proxy = Proxy::start(
            registry.port,
            Fault::Uploads(usize::MAX, answer(status, body)),
        );
        let reference = format!("127.0.0.1:{}/team/app:1", proxy.port);
        let out = push_example(home.path(), &reference, &[]).fails_with(1, says);
        assert_eq!(out.stdout, "", "a refused push printed a result");
        assert_eq!(
            out.stderr.matches("error:").count(),
            1,
            "not one message: {}",
            out.stderr
        );
    }
    // Nothing was tagged.
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(registry.skopeo_tls());
    args.push(format!("docker://{}/team/app:1", registry.host()));
    assert_ne!(run(Command::new("skopeo").args(&args)).code, 0);
}

#[test]
fn transient_503s_are_retried() {
    let registry = Registry::start(Setup::default());
    let unavailable =
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let proxy = Proxy::start(registry.port, Fault::Answer(2, unavailable.into()));
    let home = tmp();
    let reference = format!("127.0.0.1:{}/flaky:1", proxy.port);
    let out = push_example(home.path(), &reference, &["-v"]).ok();
    assert!(out.stderr.contains("Retrying"), "{}", out.stderr);
    assert!(out.stdout.starts_with(&reference), "{}", out.stdout);
}

/// An HTTP response with a JSON body, closing the connection.
fn answer(status: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A `429 Too Many Requests` as distribution sends it, with a `Retry-After` header.
fn too_many_requests(retry_after: &str) -> String {
    let body = r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"too many requests"}]}"#;
    answer(
        &format!("429 Too Many Requests\r\nRetry-After: {retry_after}"),
        body,
    )
}

/// oci-client does not pass a response's headers on, so `Retry-After` is not seen: a 429
/// is retried with capped exponential backoff and jitter (docs/publishing.md).
#[test]
fn rate_limits_are_retried_with_backoff_then_reported() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    // One 429 on the first upload: retried after a backoff step (well under the 2 s the
    // header asks for, which is not seen), and the push completes.
    let proxy = Proxy::start(registry.port, Fault::Uploads(1, too_many_requests("2")));
    let reference = format!("127.0.0.1:{}/limited:1", proxy.port);
    let out = push_example(home.path(), &reference, &[]).ok();
    let retrying: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("Retrying"))
        .collect();
    assert_eq!(retrying.len(), 1, "{}", out.stderr);
    assert!(
        retrying[0].contains("uploading a blob in 0.") && retrying[0].contains("429"),
        "{}",
        retrying[0]
    );
    assert!(out.stdout.starts_with(&reference), "{}", out.stdout);

    // A registry that keeps answering 429 (here for an hour): the attempts run out after
    // the backoff steps, and one clear message says so; nothing is tagged.
    let registry = Registry::start(Setup::default());
    let later = httpdate(std::time::SystemTime::now() + Duration::from_secs(3600));
    let proxy = Proxy::start(
        registry.port,
        Fault::Uploads(usize::MAX, too_many_requests(&later)),
    );
    let reference = format!("127.0.0.1:{}/limited:2", proxy.port);
    let started = std::time::Instant::now();
    let out =
        push_example(home.path(), &reference, &[]).fails_with(1, "is rate-limiting this client");
    assert!(started.elapsed() < Duration::from_secs(120));
    assert!(out.stderr.contains("after 5 attempts"), "{}", out.stderr);
    let errors = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .count();
    assert_eq!(errors, 1, "{}", out.stderr);
    assert_eq!(out.stdout, "");
    let mut args = vec!["inspect".to_string(), "--raw".to_string()];
    args.extend(registry.skopeo_tls());
    args.push(format!("docker://{}/limited:2", registry.host()));
    assert_ne!(run(Command::new("skopeo").args(&args)).code, 0);
}

/// An HTTP-date (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
fn httpdate(at: std::time::SystemTime) -> String {
    let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let out = run(Command::new("date").env("LC_ALL", "C").args([
        "-u",
        "-d",
        &format!("@{secs}"),
        "+%a, %d %b %Y %H:%M:%S GMT",
    ]))
    .ok();
    out.stdout.trim().to_string()
}

#[test]
fn a_connection_dropped_mid_upload_is_recovered() {
    let registry = Registry::start(Setup::default());
    // The app layer is ~1 MB: cut the connection 300 KB into the first big upload.
    let proxy = Proxy::start(registry.port, Fault::DropAfter(300_000));
    let home = tmp();
    let reference = format!("127.0.0.1:{}/dropped:1", proxy.port);
    let first = push_example(home.path(), &reference, &[]);
    // Either the retry finished it, or it failed clearly and a re-run completes it.
    let done = if first.code == 0 {
        first
    } else {
        assert!(
            first.stderr.contains("run the same command again")
                || first.stderr.contains("cannot reach"),
            "{}",
            first.stderr
        );
        push_example(home.path(), &reference, &[]).ok()
    };
    let digest = done.stdout.trim().split_once('@').unwrap().1.to_string();
    let (_, local) = example_layout();
    assert_eq!(
        digest,
        result_line(local).1,
        "the pushed image differs from the built one"
    );
    let direct = format!("{}/dropped:1", registry.host());
    assert_eq!(digest_of_raw(&registry, &direct), digest);
}

#[test]
fn a_slow_push_on_a_terminal_draws_a_progress_bar() {
    let registry = Registry::start(Setup::default());
    let proxy = Proxy::start(registry.port, Fault::Throttle(400_000));
    let home = tmp();
    let reference = format!("127.0.0.1:{}/progress:1", proxy.port);
    // stderr on a terminal; stdout goes to a file, as in `podman run $(cargo microimage push …)`.
    let stdout = home.path().join("stdout");
    let mut cmd = pusher(home.path());
    cmd.args([
        "microimage",
        "push",
        &reference,
        "--locked",
        "--manifest-path",
    ])
    .arg(repo().join("example-app/Cargo.toml"));
    let terminal = on_terminal(&cmd, &stdout);
    assert!(
        terminal.contains("Uploading ["),
        "no progress bar drawn:\n{terminal}"
    );
    assert!(
        terminal.contains("=>") || terminal.contains("=]"),
        "{terminal}"
    );
    assert!(terminal.contains("Pushed"), "{terminal}");
    let printed = std::fs::read_to_string(&stdout).unwrap();
    assert_eq!(printed.lines().count(), 1, "{printed}");
    assert!(
        printed.starts_with(&format!("{reference}@sha256:")),
        "{printed}"
    );

    // Without a terminal (every other test), nothing of the bar is written.
    let plain = push_example(home.path(), &reference, &[]).ok();
    assert!(!plain.stderr.contains("Uploading"), "{}", plain.stderr);
}

/// `--by-digest`: everything pushed, no image tag made; the line names the platform
/// manifest when one platform was packed, the index when more were, and JSON says which.
#[test]
fn by_digest_pushes_no_tag_and_pins_the_manifest_or_the_index() {
    let registry = Registry::start(Setup::default());
    let home = tmp();
    // Both platforms of example-app, built once into the shared target dir.
    let all = tmp();
    run(tool()
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
        .arg(all.path().join("layout")))
    .ok();
    let binary = |triple: &str| shared_target().join(triple).join("release/example-app");
    let (amd64, arm64) = (
        binary("x86_64-unknown-linux-musl"),
        binary("aarch64-unknown-linux-musl"),
    );
    let repository = format!("{}/app", registry.host());

    let one = run(pusher(home.path())
        .args(["microimage", "pack", "--message-format", "json"])
        .arg(&amd64)
        .args(["--push", &repository, "--by-digest"]))
    .ok();
    let record = first_json(&one.stdout);
    assert_eq!(record["reason"], "image-pushed", "{record}");
    assert_eq!(record["reference"], repository.as_str());
    assert_eq!(record["pinned_kind"], "manifest");
    let manifest = record["platforms"][0]["manifest_digest"].as_str().unwrap();
    assert_eq!(record["pinned"], format!("{repository}@{manifest}"));
    // The registry serves it by that digest; it is an image manifest.
    assert_eq!(
        digest_of_raw(&registry, &format!("{repository}@{manifest}")),
        manifest
    );

    let both = run(pusher(home.path())
        .args(["microimage", "pack"])
        .args([&amd64, &arm64])
        .args(["--push", &repository, "--by-digest"]))
    .ok();
    let (pinned, digest) = both.stdout.trim().split_once('@').unwrap();
    assert_eq!(pinned, repository);
    let raw = run(Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{repository}@{digest}")))
    .ok()
    .stdout;
    let index: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{raw}");

    // No image tag was made: the only tags are the referrers' (`sha256-…`, where the SBOMs
    // are listed on a registry without the referrers API).
    let tags = run(Command::new("skopeo")
        .args(["list-tags", "--tls-verify=false"])
        .arg(format!("docker://{repository}")))
    .ok()
    .stdout;
    let tags: Value = serde_json::from_str(&tags).unwrap();
    let tags = tags["Tags"].as_array().unwrap();
    assert!(!tags.is_empty());
    assert!(
        tags.iter()
            .all(|t| t.as_str().unwrap().starts_with("sha256-")),
        "{tags:?}"
    );

    // A tag in the reference, or --tag, contradicts --by-digest; --by-digest needs --push.
    run(pusher(home.path())
        .args(["microimage", "pack"])
        .arg(&amd64)
        .args(["--push", &format!("{repository}:1"), "--by-digest"]))
    .fails_with(2, "--by-digest pushes the image under its digest alone");
    run(pusher(home.path())
        .args(["microimage", "pack"])
        .arg(&amd64)
        .args(["--push", &repository, "--by-digest", "--tag", "latest"]))
    .fails_with(2, "--by-digest pushes no tag");
    run(pusher(home.path())
        .args(["microimage", "pack", "--by-digest"])
        .arg(&amd64))
    .fails_with(2, "--push");
}
