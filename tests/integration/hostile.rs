//! Untrusted input: registries that misbehave on purpose (`tests/support/
//! hostile_registry.py`). Each case ends with exit status 1 and one clear message — no
//! panic, no hang, memory within bounds, nothing left behind.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

struct Hostile {
    child: Child,
    port: u16,
    log: tempfile::TempDir,
}

impl Hostile {
    fn start(mode: &str) -> Hostile {
        Hostile::start_with(mode, &[])
    }

    fn start_with(mode: &str, extra: &[&str]) -> Hostile {
        let port = free_port();
        let log = tmp();
        let child = Command::new("python3")
            .arg(repo().join("tests/support/hostile_registry.py"))
            .args([&port.to_string(), mode])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log.path().join("requests")).unwrap())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "it never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Hostile { child, port, log }
    }

    /// The request lines it got that contain `part`.
    fn requests(&self, part: &str) -> usize {
        std::fs::read_to_string(self.log.path().join("requests"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(part))
            .count()
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the tool under `/usr/bin/time` with a deadline: (run, peak RSS in KiB).
fn bounded(cache: &Path, args: &[&str]) -> (Run, u64) {
    bounded_with(cache, &[], args)
}

/// [`bounded`] with more environment variables.
fn bounded_with(cache: &Path, envs: &[(&str, &str)], args: &[&str]) -> (Run, u64) {
    let t = tmp();
    let rss = t.path().join("rss");
    let started = Instant::now();
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-o")
        .arg(&rss)
        .args(["-f", "%M"])
        .arg(env!("CARGO_BIN_EXE_cargo-microimage"))
        .arg("microimage")
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .envs(envs.iter().copied())
        .env("XDG_CACHE_HOME", cache);
    let out = run(&mut cmd);
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "it took {:?}",
        started.elapsed()
    );
    let kib = std::fs::read_to_string(&rss)
        .unwrap_or_default()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    (out, kib)
}

#[test]
fn a_token_that_is_not_a_header_value_is_an_error_not_a_panic() {
    // oci-client 0.18 unwraps the token into a header value (client.rs), which panicked;
    // tokens are now asked for by our own request, which refuses it, and oci-client's own
    // calls are guarded anyway (a unit test of `registry::block_on`).
    let registry = Hostile::start("token-newline");
    let cache = tmp();
    let (out, _) = bounded(
        cache.path(),
        &["inspect", &format!("{}/team/app:1", registry.host())],
    );
    let out = out.fails_with(
        1,
        "the registry's token service sent a token that is not a valid header value",
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert_eq!(
        out.stderr.matches("error:").count(),
        1,
        "one message: {}",
        out.stderr
    );
}

/// What a run left in the spill directory of the cache at `cache`.
fn spill_left(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join("cargo-microimage/spill"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn endless_and_slow_registry_answers_are_cut_off() {
    let cache = tmp();
    // Given up on by cargo's own settings, here 2 s (waited for for ever before).
    let fast = [
        ("CARGO_HTTP_TIMEOUT", "2"),
        ("CARGO_HTTP_LOW_SPEED_LIMIT", "10"),
    ];
    let wanted = format!("sha256:{}", "0".repeat(64));
    type Env<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Env, &str, String); 6] = [
        // Read whole into memory before (3 GB, then an abort).
        ("endless-manifest", &[], ":1", "the registry sent more than 4 MiB for a manifest".into()),
        // oci-client read a token service's answer whole.
        ("endless-token", &[], ":1", "the registry sent more than 1 MiB for a token (from its token service)".into()),
        // A byte every half second: 2 B/s, under the 10 B/s limit, never a 2 s stall.
        ("slow-manifest", &fast, ":1", "the registry is too slow sending a manifest: less than 10 bytes per second".into()),
        ("slow-token", &fast, ":1", "the registry is too slow sending a token (from its token service): less than 10 bytes per second".into()),
        // Not the manifest asked for by digest (the error was printed twice).
        ("wrong-digest", &[], &format!("@{wanted}"), format!("the registry sent a manifest with digest sha256:cd47143e8cf42b8d66097682d1b47db75f55852b2b51561ba1226a97d88ea375 for {wanted}")),
        // Sizes that add up past 2^64 (inspect printed a wrapped total, 16.00 EiB).
        ("huge-sizes", &[], ":1", "its manifest declares sizes beyond what the OCI spec allows".into()),
    ];
    for (mode, envs, at, message) in &cases {
        let registry = Hostile::start(mode);
        let started = Instant::now();
        let (out, kib) = bounded_with(
            cache.path(),
            envs,
            &["inspect", &format!("{}/team/app{at}", registry.host())],
        );
        let out = out.fails_with(1, message);
        assert_eq!(
            out.stderr.matches("error:").count(),
            1,
            "{mode}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{mode}: {}", out.stderr);
        assert!(kib < 64 * 1024, "{mode}: peak RSS {kib} KiB");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{mode}: {:?}",
            started.elapsed()
        );
        assert_eq!(
            spill_left(cache.path()),
            Vec::<std::path::PathBuf>::new(),
            "{mode}"
        );
    }

    // A referrers list without end: the image is still described, the list is not.
    let registry = Hostile::start("endless-referrers");
    let (out, kib) = bounded(
        cache.path(),
        &["inspect", &format!("{}/team/app:1", registry.host())],
    );
    let out = out.ok();
    assert!(
        out.stderr.contains("cannot be listed: reading from")
            && out.stderr.contains("more than 4 MiB for a referrers list"),
        "{}",
        out.stderr
    );
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
}

#[test]
fn a_layer_longer_than_its_descriptor_is_stopped_at_once() {
    let registry = Hostile::start("oversize-blob");
    let cache = tmp();
    let t = tmp();
    let out_dir = t.path().join("merged");
    let (out, kib) = bounded(
        cache.path(),
        &[
            "merge",
            "-o",
            out_dir.to_str().unwrap(),
            &format!("{}/team/app:1", registry.host()),
        ],
    );
    out.fails_with(1, "sent more than the 97 bytes layer");
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    assert!(!out_dir.exists());
    assert_eq!(spill_left(cache.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn an_endless_config_is_refused_in_bounded_memory() {
    // Read whole into memory before: a 3 GB config took 3.2 GB.
    let registry = Hostile::start("endless-config");
    let cache = tmp();
    let (out, kib) = bounded(
        cache.path(),
        &["inspect", &format!("{}/team/app:1", registry.host())],
    );
    out.fails_with(1, "the registry sent more than 8 MiB for the config");
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
}

/// A small image of this machine's static busybox (scripts/setup.sh fetches it), packed
/// into an OCI layout (`DIR:1`) and a docker-archive unpacked into a directory.
fn local_images() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tmp();
    let busybox = tools_dir().join("busybox/amd64/busybox");
    let layout = t.path().join("layout");
    run(tool()
        .current_dir(t.path())
        .args(["microimage", "pack", "--tag", "bb:1", "--sbom", "none"])
        .arg(&busybox)
        .arg("-o")
        .arg(&layout))
    .ok();
    let archive = t.path().join("docker.tar");
    run(tool()
        .current_dir(t.path())
        .args(["microimage", "pack", "--tag", "bb:1", "--sbom", "none"])
        .args(["--format", "docker-archive"])
        .arg(&busybox)
        .arg("-o")
        .arg(&archive))
    .ok();
    let docker = t.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    run(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&docker))
    .ok();
    (t, layout, docker)
}

/// The layer blobs of a layout (every blob bigger than a manifest).
fn big_blobs(layout: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.metadata().unwrap().len() > 100_000)
        .collect()
}

#[test]
fn local_images_are_read_inside_themselves_only() {
    let (_t, layout, docker) = local_images();
    let cache = tmp();
    // A docker-archive directory whose manifest.json names a file outside it: refused,
    // nothing of that file read (its size and digest were printed before).
    let manifest = docker.join("manifest.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let config = serde_json::from_str::<serde_json::Value>(&text).unwrap()[0]["Config"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        &manifest,
        text.replace(&config, "../../../../../../etc/shadow"),
    )
    .unwrap();
    let (out, _) = bounded(cache.path(), &["inspect", docker.to_str().unwrap()]);
    let out = out.fails_with(
        1,
        "`../../../../../../etc/shadow`, which its manifest.json names, is not in it",
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);

    // A layer blob that is a symlink to /dev/zero, and one that is a FIFO: refused at
    // once, in bounded memory (an endless read, or a hang, before).
    let blob = big_blobs(&layout).pop().unwrap();
    let saved = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &blob).unwrap();
    let (out, kib) = bounded(cache.path(), &["inspect", layout.to_str().unwrap()]);
    out.fails_with(1, "is incomplete: blob sha256:");
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
    std::fs::remove_file(&blob).unwrap();
    run(Command::new("mkfifo").arg(&blob)).ok();
    for args in [
        vec!["inspect", layout.to_str().unwrap()],
        vec![
            "merge",
            "-o",
            "/nonexistent-merge-out",
            layout.to_str().unwrap(),
        ],
    ] {
        let (out, _) = bounded(cache.path(), &args);
        out.fails_with(1, "is incomplete: blob sha256:");
    }
    std::fs::remove_file(&blob).unwrap();
    std::fs::write(&blob, saved).unwrap();
    run(tool().args(["microimage", "inspect"]).arg(&layout)).ok();

    // index.json as a symlink to /dev/zero, and missing: said so, not "invalid JSON".
    let index = layout.join("index.json");
    std::fs::rename(&index, layout.join("index.json.saved")).unwrap();
    let (out, _) = bounded(cache.path(), &["inspect", layout.to_str().unwrap()]);
    out.fails_with(1, "it has no index.json");
    std::os::unix::fs::symlink("/dev/zero", &index).unwrap();
    let (out, kib) = bounded(cache.path(), &["inspect", layout.to_str().unwrap()]);
    out.fails_with(1, "it has no index.json");
    assert!(kib < 64 * 1024, "peak RSS {kib} KiB");
}

#[test]
fn credential_helpers_are_named_when_missing_and_stopped_when_they_hang() {
    // A registry that asks for credentials, and a docker config naming helpers.
    let registry = Hostile::start("token-newline");
    let home = tmp();
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let hang = bin.join("docker-credential-hangs");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hang, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let inspect = |helper: &str| {
        crate::registry::docker_config(
            home.path(),
            &serde_json::json!({"credHelpers": {registry.host(): helper}}),
        );
        let started = Instant::now();
        let out = run(tool()
            .env("PATH", &path)
            .env("DOCKER_CONFIG", home.path().join("docker"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .args([
                "microimage",
                "inspect",
                &format!("{}/team/app:1", registry.host()),
            ]));
        (out, started.elapsed())
    };
    // Missing: named, at once (it said "Unable to communicate with credential helper").
    let (out, _) = inspect("nothere");
    out.fails_with(
        1,
        "the credential helper `docker-credential-nothere` (named in the docker config",
    );
    // Hanging: stopped after the deadline (it hung for ever).
    let (out, took) = inspect("hangs");
    out.fails_with(1, "did not answer within 30 s");
    assert!(took < Duration::from_secs(90), "{took:?}");
}

#[test]
fn manifest_reads_are_retried_as_the_readme_says_and_the_message_counts_true() {
    // Not retried before: a 503 ended the read, and a 429 said "after 5 attempts" after one.
    let flaky = Hostile::start("manifest-flaky");
    let cache = tmp();
    let (out, _) = bounded(
        cache.path(),
        &["inspect", &format!("{}/team/app:1", flaky.host())],
    );
    let out = out.ok();
    assert_eq!(
        out.stderr.matches("Retrying reading a manifest").count(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(flaky.requests("/manifests/1 "), 3);

    let limited = Hostile::start("manifest-429");
    let (out, _) = bounded(
        cache.path(),
        &["inspect", &format!("{}/team/app:1", limited.host())],
    );
    out.fails_with(1, "still answered 429 Too Many Requests after 5 attempts");
    assert_eq!(limited.requests("/manifests/1 "), 5);
}

#[test]
fn basic_credentials_never_go_to_a_plain_http_token_service_of_an_https_registry() {
    let certs = tmp();
    server_certificate(certs.path());
    // The challenge as distribution writes it, in lowercase, and after a Basic one: the
    // last two were read past by the check before (oci-client finds a Bearer challenge in
    // each, and then sent the credentials to the plain-HTTP realm).
    for mode in ["http-realm", "http-realm-lower", "http-realm-multi"] {
        let realm_port = free_port();
        let registry = Hostile::start_with(
            mode,
            &[
                &realm_port.to_string(),
                certs.path().join("cert.pem").to_str().unwrap(),
                certs.path().join("key.pem").to_str().unwrap(),
            ],
        );
        let home = tmp();
        crate::registry::docker_config(
            home.path(),
            &serde_json::json!({"auths": {registry.host(): {"auth": crate::registry::basic("ci", "s3cret")}}}),
        );
        let out = run(tool()
            .env("DOCKER_CONFIG", home.path().join("docker"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .args(["microimage", "inspect", "--ca-file"])
            .arg(certs.path().join("ca.pem"))
            .arg(format!("{}/team/app:1", registry.host())));
        let out = out.fails_with(
            1,
            &format!("were not sent: its token service `http://127.0.0.1:{realm_port}/token` is plain HTTP while the registry is HTTPS"),
        );
        assert!(!out.stderr.contains("s3cret"), "{mode}: {}", out.stderr);
        assert_eq!(
            registry.requests("REALM"),
            0,
            "{mode}: something reached the token service"
        );
    }
}

/// Writes an OCI layout at `dir` whose one layer is a gzip of a tar holding `unpacked`
/// bytes of zeros (a decompression bomb, made as a stream: nothing that size is held or
/// written), and, with `junk`, an OCI archive `dir.tar` of it with an entry of that many
/// zero bytes that no manifest uses.
fn bomb_layout(dir: &Path, unpacked: u64, junk: Option<u64>) {
    let script = r#"
import gzip, hashlib, io, json, os, sys, tarfile
out, n, junk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
class Zeros(io.RawIOBase):
    def __init__(self, n): self.n = n
    def readable(self): return True
    def readinto(self, b):
        k = min(len(b), self.n); b[:k] = bytes(k); self.n -= k; return k
class Hashing(io.RawIOBase):
    def __init__(self, inner): self.inner, self.h = inner, hashlib.sha256()
    def writable(self): return True
    def write(self, b): self.h.update(b); return self.inner.write(b)
os.makedirs(out + "/blobs/sha256")
with open(out + "/layer", "wb") as f:
    gz = gzip.GzipFile(fileobj=f, mode="wb", compresslevel=1, mtime=0)
    raw = Hashing(gz)
    with tarfile.open(fileobj=raw, mode="w|") as t:
        info = tarfile.TarInfo("zeros"); info.size = n
        t.addfile(info, io.BufferedReader(Zeros(n), 1 << 20))
    gz.close()
diff_id = "sha256:" + raw.h.hexdigest()
def put(data=None, path=None):
    if path:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for c in iter(lambda: f.read(1 << 20), b""): h.update(c)
        d, size = h.hexdigest(), os.path.getsize(path)
        os.rename(path, out + "/blobs/sha256/" + d)
    else:
        d, size = hashlib.sha256(data).hexdigest(), len(data)
        open(out + "/blobs/sha256/" + d, "wb").write(data)
    return {"digest": "sha256:" + d, "size": size}
layer = put(path=out + "/layer")
config = put(json.dumps({"architecture": "amd64", "os": "linux",
    "rootfs": {"type": "layers", "diff_ids": [diff_id]}, "config": {}}).encode())
manifest = put(json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": dict(config, mediaType="application/vnd.oci.image.config.v1+json"),
    "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")]}).encode())
json.dump({"schemaVersion": 2, "manifests": [dict(manifest,
    mediaType="application/vnd.oci.image.manifest.v1+json",
    annotations={"org.opencontainers.image.ref.name": "1"})]}, open(out + "/index.json", "w"))
json.dump({"imageLayoutVersion": "1.0.0"}, open(out + "/oci-layout", "w"))
if junk:
    with tarfile.open(out + ".tar", "w") as t:
        for name in sorted(os.listdir(out)) + ["blobs/sha256/" + b for b in os.listdir(out + "/blobs/sha256")]:
            if name != "blobs" and not os.path.isdir(out + "/" + name):
                t.add(out + "/" + name, name)
        info = tarfile.TarInfo("unused"); info.size = junk
        t.addfile(info, io.BufferedReader(Zeros(junk), 1 << 20))
"#;
    run(Command::new("python3")
        .args(["-c", script])
        .arg(dir)
        .arg(unpacked.to_string())
        .arg(junk.unwrap_or(0).to_string()))
    .ok();
}

#[test]
fn local_bombs_are_read_in_bounded_memory() {
    // A layer that unpacks to 256 MiB, and an OCI archive with a 256 MiB entry no manifest
    // uses: inspect held the whole layer unpacked (a 16 GiB bomb took 4.2 GB, then "out of
    // memory") and the whole archive (a 1.5 GB unused entry cost 2.1 GB).
    let t = tmp();
    let layout = t.path().join("bomb");
    let size = 256u64 << 20;
    bomb_layout(&layout, size, Some(size));
    let cache = tmp();
    for source in [layout.clone(), t.path().join("bomb.tar")] {
        let (out, kib) = bounded(
            cache.path(),
            &[
                "inspect",
                "--message-format",
                "json",
                source.to_str().unwrap(),
            ],
        );
        let out = out.ok();
        let json: serde_json::Value =
            serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
        let unpacked = json["platforms"][0]["layers"][0]["uncompressed_size"]
            .as_u64()
            .unwrap();
        assert!(unpacked > size, "{}", out.stdout);
        assert!(kib < 64 * 1024, "{}: peak RSS {kib} KiB", source.display());
    }
    assert_eq!(spill_left(cache.path()), Vec::<std::path::PathBuf>::new());
}

#[test]
fn local_documents_that_claim_a_gibibyte_are_refused_before_they_are_read() {
    // A layout whose config, and one whose manifest, is a sparse file of 1 GiB of zeros,
    // described by its true size and digest: read whole before (1 GiB allocated, past the
    // bound below); refused by the registry's caps now (8 MiB configs, 4 MiB manifests).
    let t = tmp();
    let script = r#"
import hashlib, json, os, sys
out = sys.argv[1]
ZEROS = "sha256:49bc20df15e412a64472421e13fe86ff1c5165e18b2afccf160d4dc19fe68a14"
GIB = 1 << 30
def put(dir, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    open(dir + "/blobs/sha256/" + d[7:], "wb").write(data)
    return d
for name in ("config", "manifest"):
    dir = out + "/" + name
    os.makedirs(dir + "/blobs/sha256")
    open(dir + "/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
    with open(dir + "/blobs/sha256/" + ZEROS[7:], "wb") as f:
        f.truncate(GIB)
    config = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": ZEROS, "size": GIB}
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config, "layers": []}).encode()
    entry = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "annotations": {"org.opencontainers.image.ref.name": "1"}}
    if name == "config":
        entry.update(digest=put(dir, manifest), size=len(manifest))
    else:
        entry.update(digest=ZEROS, size=GIB)
    open(dir + "/index.json", "w").write(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
"#;
    run(Command::new("python3").args(["-c", script]).arg(t.path())).ok();
    let cache = tmp();
    for (name, says) in [
        (
            "config",
            "its config has 1073741824 bytes, more than the 8 MiB",
        ),
        (
            "manifest",
            "its manifest has 1073741824 bytes, more than the 4 MiB",
        ),
    ] {
        let layout = t.path().join(name);
        let (out, kib) = bounded(cache.path(), &["inspect", layout.to_str().unwrap()]);
        out.fails_with(1, says);
        assert!(kib < 64 * 1024, "{name}: peak RSS {kib} KiB");
    }
}
