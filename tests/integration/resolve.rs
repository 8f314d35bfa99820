//! The Kubernetes inner loop: `resolve` (YAML in, the same YAML out with each
//! `microimage://NAME` replaced by the image pushed for it), `apply` (through a stand-in
//! kubectl), `--local` into dockerd, and the Skaffold and Tilt recipes of docs/dev-loop run
//! with the variables those tools set.

use std::path::Path;
use std::process::Command;

use crate::common::*;
use crate::docker::dockerd;
use crate::registry::{Registry, Setup};

const DEPLOY: &str = r#"# The service and its admin job. microimage://hello in a comment stays.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello   # not an image
spec:
  template:
    spec:
      containers:
        - name: hello
          image: microimage://hello
          args: ["--port", "8080"]
        - name: sidecar
          image: &admin "microimage://hello/hello-admin"
        - name: again
          image: *admin
---
# A document without a reference, byte for byte.
apiVersion: v1
kind: ConfigMap
data:
  note: 'say microimage://hello in a sentence'
  quoted: "tab\there"
---
apiVersion: batch/v1
kind: Job
spec:
  template:
    spec:
      containers:
        - {name: admin, image: 'microimage://hello-admin'}
"#;

/// The registry's image for `bin` in a resolved YAML: `HOST/apps/BIN@sha256:…`.
fn pinned_of(yaml: &str, host: &str, bin: &str) -> String {
    let start = yaml
        .find(&format!("{host}/apps/{bin}@sha256:"))
        .unwrap_or_else(|| panic!("no {bin} in {yaml}"));
    let end = start + host.len() + "/apps/".len() + bin.len() + "@sha256:".len() + 64;
    yaml[start..end].to_string()
}

#[test]
fn resolve_replaces_only_the_references_and_every_image_runs() {
    let registry = Registry::start(Setup::default());
    let host = registry.host();
    let hello = fixture("hello");
    let t = tmp();
    let file = t.path().join("deploy.yaml");
    std::fs::write(&file, DEPLOY).unwrap();
    let dir = t.path().join("more");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.yml"), "image: microimage://hello\n").unwrap();
    std::fs::write(dir.join("a.yaml"), "# first by name\nkind: List\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), "image: microimage://nope\n").unwrap();

    let out = run(tool()
        .current_dir(hello.path())
        .args(["microimage", "resolve", "--repo"])
        .arg(format!("{host}/apps"))
        .arg("-f")
        .arg(&file)
        .arg("-f")
        .arg(&dir))
    .ok();
    let hello_ref = pinned_of(&out.stdout, &host, "hello");
    let admin_ref = pinned_of(&out.stdout, &host, "hello-admin");
    // Everything else byte for byte: the file, then the directory's files by name.
    let expected = DEPLOY
        .replace(
            "image: microimage://hello\n",
            &format!("image: {hello_ref}\n"),
        )
        .replace(
            "\"microimage://hello/hello-admin\"",
            &format!("\"{admin_ref}\""),
        )
        .replace("'microimage://hello-admin'", &format!("'{admin_ref}'"))
        + "---\n# first by name\nkind: List\n---\n"
        + &format!("image: {hello_ref}\n");
    assert_eq!(out.stdout, expected);
    // Each binary built and pushed once.
    assert_eq!(out.stderr.matches("Pushing ").count(), 2, "{}", out.stderr);

    // Every pushed digest runs, pulled from the registry.
    let podman = Podman::new();
    for (reference, said) in [
        (&hello_ref, "hello from hello [\"x\"] (x86_64)"),
        (&admin_ref, "admin tool"),
    ] {
        podman.forget_later(reference);
        let ran = run(podman
            .command()
            .args(["run", "--rm", "--tls-verify=false", reference, "x"]))
        .ok();
        assert_eq!(ran.stdout.trim(), said, "{reference}");
    }

    // From stdin (`-f -`): the same images (nothing rebuilt or pushed again).
    let piped = tool()
        .current_dir(hello.path())
        .stdin(std::fs::File::open(&file).unwrap())
        .args(["microimage", "resolve", "--repo"])
        .arg(format!("{host}/apps"))
        .args(["-f", "-"])
        .output()
        .unwrap();
    let piped = Run {
        code: piped.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&piped.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&piped.stderr).into_owned(),
    }
    .ok();
    assert_eq!(
        piped.stdout,
        expected.split("---\n# first by name").next().unwrap()
    );

    // An unknown name: an error listing the binaries, nothing on stdout, nothing pushed.
    std::fs::write(&file, "image: microimage://nope\n").unwrap();
    let out = run(tool()
        .current_dir(hello.path())
        .args(["microimage", "resolve", "--repo"])
        .arg(format!("{host}/apps"))
        .arg("-f")
        .arg(&file))
    .fails_with(2, "microimage://nope: the workspace has no such binary");
    assert!(
        out.stderr
            .contains("the workspace's binaries: hello/hello, hello/hello-admin"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

/// A stand-in kubectl: records its arguments and what it read, then exits with `code`.
fn kubectl(dir: &Path, code: i32) -> std::path::PathBuf {
    let script = dir.join("kubectl");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {args}\ncat > {stdin}\necho 'deployment.apps/hello configured'\nexit {code}\n",
            args = dir.join("args").display(),
            stdin = dir.join("stdin").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn apply_pipes_the_resolved_yaml_into_kubectl_and_returns_its_status() {
    let registry = Registry::start(Setup::default());
    let hello = fixture("hello");
    let t = tmp();
    let file = t.path().join("deploy.yaml");
    std::fs::write(&file, "image: microimage://hello # the app\n").unwrap();
    let resolve = |program: &Path| {
        run(tool()
            .current_dir(hello.path())
            .env("KUBECTL", program)
            .env("MICROIMAGE_REPO", format!("{}/apps", registry.host()))
            .args(["microimage", "apply", "-f"])
            .arg(&file)
            .args(["--", "--namespace", "dev", "--dry-run=server"]))
    };
    let out = resolve(&kubectl(t.path(), 0)).ok();
    assert!(
        out.stdout.contains("deployment.apps/hello configured"),
        "{}",
        out.stdout
    );
    let args = std::fs::read_to_string(t.path().join("args")).unwrap();
    assert_eq!(args.trim(), "apply -f - --namespace dev --dry-run=server");
    let stdin = std::fs::read_to_string(t.path().join("stdin")).unwrap();
    let pinned = pinned_of(&stdin, &registry.host(), "hello");
    assert_eq!(stdin, format!("image: {pinned} # the app\n"));

    // kubectl's failure is ours, with its own message.
    let out = resolve(&kubectl(t.path(), 1));
    assert_eq!(out.code, 1, "{}", out.stderr);

    // resolve fails: kubectl is never run.
    std::fs::remove_file(t.path().join("args")).unwrap();
    std::fs::write(&file, "image: microimage://nope\n").unwrap();
    resolve(&kubectl(t.path(), 0)).fails_with(2, "no such binary");
    assert!(!t.path().join("args").exists(), "kubectl ran");
}

#[test]
fn local_loads_into_docker_under_a_name_that_names_the_digest() {
    let engine = dockerd();
    let hello = fixture("hello");
    let t = tmp();
    let file = t.path().join("deploy.yaml");
    std::fs::write(&file, "image: microimage://hello-admin\n").unwrap();
    let out = run(engine
        .tool()
        .current_dir(hello.path())
        .args(["microimage", "resolve", "--local=docker", "-f"])
        .arg(&file))
    .ok();
    let image = out
        .stdout
        .trim()
        .strip_prefix("image: ")
        .unwrap_or_else(|| panic!("{}", out.stdout))
        .to_string();
    assert!(
        image.starts_with("microimage.local/hello-admin:")
            && image.len() == "microimage.local/hello-admin:".len() + 64,
        "{image}"
    );
    let ran = engine.run(&image, &[], &[]).ok();
    assert_eq!(ran.stdout.trim(), "admin tool");
}

/// `cargo microimage` for commands run through a shell: the tool's directory first on PATH.
fn path_with_tool() -> String {
    let dir = Path::new(env!("CARGO_BIN_EXE_cargo-microimage"))
        .parent()
        .unwrap();
    format!("{}:{}", dir.display(), std::env::var("PATH").unwrap())
}

/// Runs a recipe's command with `sh -c` in a copy of example-app, as the tool would.
fn recipe(command: &str, envs: &[(&str, String)]) -> Run {
    let engine = dockerd();
    let app = tmp();
    copy_crate(&repo().join("example-app"), app.path());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", command])
        .current_dir(app.path())
        .env("PATH", path_with_tool())
        .env("DOCKER_HOST", format!("unix://{}", engine_socket(engine)))
        .env("CARGO_TARGET_DIR", shared_target())
        .env_remove("RUSTFLAGS")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

fn engine_socket(engine: &crate::docker::Dockerd) -> String {
    engine.socket().display().to_string()
}

#[test]
fn the_skaffold_and_tilt_recipes_build_what_those_tools_expect() {
    let engine = dockerd();
    // Skaffold: build.artifacts[0].custom.buildCommand, run with its variables.
    let skaffold = std::fs::read_to_string(repo().join("docs/dev-loop/skaffold.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&skaffold).unwrap();
    let command = docs[0]["build"]["artifacts"][0]["custom"]["buildCommand"]
        .as_str()
        .unwrap()
        .to_string();
    // A local cluster: the image must be in the local docker under $IMAGE.
    recipe(
        &command,
        &[
            ("IMAGE", "example-app:skaffold-1".to_string()),
            ("PUSH_IMAGE", "false".to_string()),
            ("PLATFORMS", "linux/amd64".to_string()),
        ],
    )
    .ok();
    let check = engine.run("example-app:skaffold-1", &[], &["--check"]).ok();
    assert!(
        check.stdout.contains("\"tls_ready\":true"),
        "{}",
        check.stdout
    );
    // A remote cluster: pushed to $IMAGE, for both platforms.
    let registry = Registry::start(Setup::default());
    let image = format!("{}/example-app:skaffold-2", registry.host());
    recipe(
        &command,
        &[
            ("IMAGE", image.clone()),
            ("PUSH_IMAGE", "true".to_string()),
            ("PLATFORMS", "linux/amd64,linux/arm64".to_string()),
        ],
    )
    .ok();
    let raw = run(Command::new("skopeo").args([
        "inspect",
        "--raw",
        "--tls-verify=false",
        &format!("docker://{image}"),
    ]))
    .ok();
    assert!(
        raw.stdout.contains("\"arm64\"") && raw.stdout.contains("\"amd64\""),
        "{}",
        raw.stdout
    );

    // Tilt: the `command` of the Tiltfile, with $EXPECTED_REF.
    let tiltfile = std::fs::read_to_string(repo().join("docs/dev-loop/Tiltfile")).unwrap();
    let command = tiltfile
        .lines()
        .find_map(|l| l.strip_prefix("command = '"))
        .and_then(|l| l.strip_suffix('\''))
        .unwrap()
        .to_string();
    recipe(
        &command,
        &[("EXPECTED_REF", "example-app:tilt-7f3a".to_string())],
    )
    .ok();
    let check = engine.run("example-app:tilt-7f3a", &[], &["--check"]).ok();
    assert!(
        check.stdout.contains("\"tls_ready\":true"),
        "{}",
        check.stdout
    );
}
