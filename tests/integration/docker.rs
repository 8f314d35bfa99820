//! Docker, the client most users run, for real: Debian's dockerd (20.10, with its own
//! containerd) started once for the whole test run on a private socket, as RECIPES.md
//! says, and stopped by its PID when the tests end. Images are loaded (`--load=docker`,
//! `docker load` of a docker-archive), run and stopped by it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;

/// The test run's Docker engine.
pub struct Dockerd {
    socket: PathBuf,
    pub version: String,
}

/// Starts dockerd on first use. A shell beside it waits for this test process to end, then
/// stops dockerd by its PID and removes its directories.
pub fn dockerd() -> &'static Dockerd {
    static ENGINE: OnceLock<Dockerd> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let dir = tmp().keep().join("dk");
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let script = format!(
            "dockerd --iptables=false --bridge=none --data-root {d}/root --exec-root {d}/exec \
             -H unix://{d}/docker.sock --pidfile {d}/pid >{d}/log 2>&1 & pid=$!; \
             while kill -0 {parent} 2>/dev/null; do sleep 1; done; \
             kill $pid; wait $pid; rm -rf {d}",
            parent = std::process::id()
        );
        // Never waited for: it outlives this process, which is what it watches.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let engine = Dockerd {
            socket: dir.join("docker.sock"),
            version: String::new(),
        };
        let started = Instant::now();
        loop {
            let out = run(engine
                .command()
                .args(["version", "--format", "{{.Server.Version}}"]));
            if out.code == 0 {
                return Dockerd {
                    version: out.stdout.trim().to_string(),
                    ..engine
                };
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "dockerd did not start (scripts/setup.sh installs docker.io): {}",
                std::fs::read_to_string(dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
}

impl Dockerd {
    /// The engine's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// `docker` talking to this engine.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new("docker");
        cmd.env("DOCKER_HOST", self.host());
        cmd
    }

    /// The tool, with `docker` talking to this engine.
    pub fn tool(&self) -> Command {
        let mut cmd = tool();
        cmd.env("DOCKER_HOST", self.host());
        cmd
    }

    /// `docker run --rm --network none IMAGE ARGS`.
    pub fn run(&self, image: &str, extra: &[&str], args: &[&str]) -> Run {
        run(self
            .command()
            .args(["run", "--rm", "--network", "none"])
            .args(extra)
            .arg(image)
            .args(args))
    }
}

/// example-app built into `out` with `extra`, loaded into the engine.
fn example_app(engine: &Dockerd, out: &Path, extra: &[&str]) -> Run {
    run(engine
        .tool()
        .args(["microimage", "build", "--locked", "--manifest-path"])
        .arg(repo().join("example-app/Cargo.toml"))
        .args(extra)
        .arg("-o")
        .arg(out))
}

#[test]
fn docker_loads_and_runs_what_load_and_docker_archives_give_it() {
    let engine = dockerd();
    let t = tmp();

    // Both platforms built, this machine's loaded: it runs, with TLS roots and as nonroot.
    let out = example_app(
        engine,
        &t.path().join("multi"),
        &["--platform", "linux/amd64,linux/arm64", "--load=docker"],
    )
    .ok();
    assert!(
        out.stderr.contains(&format!(
            "Loading example-app:0.1.0 (linux/amd64) into docker (engine {})",
            engine.version
        )),
        "{}",
        out.stderr
    );
    let check = engine.run("example-app:0.1.0", &[], &["--check"]).ok();
    let report: serde_json::Value = serde_json::from_str(check.stdout.trim()).unwrap();
    assert_eq!(report["uid"], 65532);
    assert_eq!(report["tls_ready"], true);
    assert!(report["ca_roots"].as_u64().unwrap() > 100, "{report}");

    // A docker-archive written to disk, loaded by `docker load`.
    let hello = fixture("hello");
    let archive = t.path().join("hello.tar");
    run(engine
        .tool()
        .current_dir(hello.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--format",
            "docker-archive",
            "-o",
        ])
        .arg(&archive))
    .ok();
    let loaded = run(engine.command().args(["load", "-i"]).arg(&archive)).ok();
    assert!(
        loaded.stdout.contains("Loaded image: hello:1.2.3"),
        "{}",
        loaded.stdout
    );
    let said = engine.run("hello:1.2.3", &[], &["a"]).ok();
    assert_eq!(said.stdout.trim(), "hello from hello [\"a\"] (x86_64)");

    // On a base with a shell (busybox): loaded, the app and the base's shell both run.
    let (busybox, _, _) = crate::base::bases();
    let base = format!("oci:{}:1", busybox.display());
    example_app(
        engine,
        &t.path().join("based"),
        &[
            "--base",
            &base,
            "--platform",
            "linux/amd64",
            "--tag",
            "based-app:1",
            "--load=docker",
        ],
    )
    .ok();
    let check = engine.run("based-app:1", &[], &["--check"]).ok();
    assert!(
        check.stdout.contains("\"tls_ready\":true"),
        "{}",
        check.stdout
    );
    let shell = engine
        .run(
            "based-app:1",
            &["--entrypoint", "/bin/sh"],
            &["-c", "echo shell $((6*7)) as $(id -u)"],
        )
        .ok();
    assert_eq!(shell.stdout.trim(), "shell 42 as 65532");
}

/// A `docker` on PATH that logs each command's first word to `log` and passes it on to
/// the real one — answering `version` with `version` when that is given.
fn docker_shim(dir: &Path, version: Option<&str>) -> String {
    let real = which::which("docker").unwrap();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let answer = match version {
        Some(v) => format!("if [ \"$1\" = version ]; then echo {v}; exit 0; fi\n"),
        None => String::new(),
    };
    let script = format!(
        "#!/bin/sh\necho \"$1\" >> {log}\n{answer}exec {real} \"$@\"\n",
        log = dir.join("log").display(),
        real = real.display()
    );
    let shim = bin.join("docker");
    std::fs::write(&shim, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:{}", bin.display(), std::env::var("PATH").unwrap())
}

#[test]
fn the_engine_version_is_asked_once_and_an_oci_archive_it_cannot_read_is_explained() {
    let engine = dockerd();
    let hello = fixture("hello");
    let t = tmp();

    // Two images loaded (the fixture's two binaries): the engine's version asked once.
    let shim = tmp();
    let path = docker_shim(shim.path(), None);
    run(engine
        .tool()
        .env("PATH", &path)
        .current_dir(hello.path())
        .args(["microimage", "build", "--workspace", "--load=docker", "-o"])
        .arg(t.path().join("two")))
    .ok();
    let log = std::fs::read_to_string(shim.path().join("log")).unwrap();
    assert_eq!(log.lines().filter(|l| *l == "version").count(), 1, "{log}");
    assert_eq!(log.lines().filter(|l| *l == "load").count(), 2, "{log}");
    engine.run("hello-admin:1.2.3", &[], &[]).ok();

    // An engine that says it reads OCI archives but is 20.10 underneath: Docker's own
    // "open …/blobs/json: no such file or directory" becomes our message.
    let shim = tmp();
    let path = docker_shim(shim.path(), Some("25.0.0"));
    let out = run(engine
        .tool()
        .env("PATH", &path)
        .current_dir(hello.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--tag",
            "oci-load:1",
            "--load=docker",
            "-o",
        ])
        .arg(t.path().join("oci")));
    let out = out.fails_with(1, "the Docker engine (25.0.0) cannot load an OCI archive");
    assert!(
        out.stderr
            .contains("help: write a docker-archive for it (`--format docker-archive`)"),
        "{}",
        out.stderr
    );
}

#[test]
fn docker_stop_ends_a_program_without_signal_handlers_at_once() {
    // As PID 1 such a program ignored SIGTERM: `docker stop` waited out its timeout, then
    // killed it (137). The hook build links in gives it the default action: 143 at once.
    let engine = dockerd();
    let probe = fixture("runtime-probe");
    let t = tmp();
    run(engine
        .tool()
        .current_dir(probe.path())
        .args([
            "microimage",
            "build",
            "--locked",
            "--bin",
            "probe",
            "--tag",
            "probe-stop:1",
            "--load=docker",
            "-o",
        ])
        .arg(t.path().join("probe")))
    .ok();
    let name = format!("microimage-stop-{}", std::process::id());
    run(engine.command().args([
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        &name,
        "probe-stop:1",
        "wait",
    ]))
    .ok();
    wait_for_log(
        || run(engine.command().args(["logs", &name])).stdout,
        "ready",
    );
    let stopping = Instant::now();
    run(engine.command().args(["stop", "-t", "30", &name])).ok();
    let took = stopping.elapsed();
    let code = run(engine
        .command()
        .args(["inspect", &name, "--format", "{{.State.ExitCode}}"]))
    .ok();
    run(engine.command().args(["rm", "-f", &name]));
    assert_eq!(code.stdout.trim(), "143");
    assert!(took < Duration::from_secs(2), "docker stop took {took:?}");
}
