//! Nothing a user owns is lost or silently changed: other images in a layout, files that
//! are not image archives, interrupted and concurrent runs, modes; only runnable ELF
//! executables pass `verify`, and what was checked is what is packed; settings that would
//! surprise at run time are refused before anything is built; every usage error exits 2.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;

/// `build --bin hello` of a hello copy in `dir`, with `extra` arguments.
fn build_hello(dir: &Path, extra: &[&str]) -> Run {
    run(tool()
        .current_dir(dir)
        .args(["microimage", "build", "--bin", "hello"])
        .args(extra))
}

/// The image entries of a layout's index.json (not the SBOMs that refer to them).
fn index_entries(layout: &Path) -> Vec<Value> {
    all_entries(layout)
        .into_iter()
        .filter(|e| e["artifactType"].is_null())
        .collect()
}

fn all_entries(layout: &Path) -> Vec<Value> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"].as_array().unwrap().clone()
}

fn temporaries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".microimage-"))
        .collect()
}

/// 1: a layout filled by skopeo with another image keeps it; our tag's entry is replaced,
/// and the blobs only our old image used go.
#[test]
fn writing_into_a_layout_keeps_its_other_images() {
    let c = fixture("hello");
    let layout = c.path().join("images");
    // Another image, copied in by skopeo under the tag `other`.
    let (example, _) = example_layout();
    external(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:0.1.0", example.display()),
            &format!("oci:{}:other", layout.display()),
        ],
    );
    let first = build_hello(c.path(), &["-o", layout.to_str().unwrap()]).ok();
    let entries = index_entries(&layout);
    assert_eq!(entries.len(), 2, "{entries:?}");
    external(
        "skopeo",
        &["inspect", &format!("oci:{}:other", layout.display())],
    );
    external(
        "skopeo",
        &["inspect", &format!("oci:{}:1.2.3", layout.display())],
    );
    // Our tag again, different content: still two entries, the old one's own blobs gone.
    let blobs = |l: &Path| std::fs::read_dir(l.join("blobs/sha256")).unwrap().count();
    let before = blobs(&layout);
    let second = build_hello(
        c.path(),
        &["-o", layout.to_str().unwrap(), "--label", "changed=yes"],
    )
    .ok();
    assert_ne!(result_line(&first.stdout).1, result_line(&second.stdout).1);
    assert_eq!(index_entries(&layout).len(), 2);
    // One SBOM and one provenance, about the new image: the old ones went with the image
    // they described.
    assert_eq!(all_entries(&layout).len(), 4, "{:?}", all_entries(&layout));
    assert_eq!(
        blobs(&layout),
        before,
        "old config, manifest, index, SBOM and provenance replaced one for one"
    );
    external(
        "skopeo",
        &["inspect", &format!("oci:{}:other", layout.display())],
    );
    // umoci reads the layout too.
    external(
        "umoci",
        &["stat", "--image", &format!("{}:1.2.3", layout.display())],
    );
    assert!(temporaries(c.path()).is_empty());
}

/// 2: an archive output replaces only an image archive; a symlink is written through.
#[test]
fn archives_replace_only_image_archives_and_write_through_symlinks() {
    let c = fixture("hello");
    let notes = c.path().join("NOTES.md");
    std::fs::write(&notes, "my notes").unwrap();
    build_hello(c.path(), &["-o", "NOTES.md", "--format", "docker-archive"])
        .fails_with(1, "is not an image archive");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
    // A link to a real archive: the archive is replaced, the link stays a link.
    let real = c.path().join("real.tar");
    build_hello(c.path(), &["-o", real.to_str().unwrap()]).ok();
    let link = c.path().join("link.tar");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = build_hello(c.path(), &["-o", "link.tar", "--label", "via=link"]).ok();
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    let report = run(tool().args(["inspect", real.to_str().unwrap()]))
        .ok()
        .stdout;
    assert!(report.contains(&result_line(&out.stdout).1), "{report}");
    // A link to a file that is not an image archive: refused, both untouched.
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&notes, &link).unwrap();
    build_hello(c.path(), &["-o", "link.tar"]).fails_with(1, "is not an image archive");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "my notes");
}

/// 3: SIGTERM while writing leaves nothing behind; a temporary of a killed run (SIGKILL)
/// is removed by the next run; outputs follow the umask.
#[test]
fn interrupted_runs_leave_no_temporaries_and_modes_follow_the_umask() {
    let c = fixture("hello");
    let bin = cargo_build_fixture(c.path(), "hello");
    // A big binary, so that writing the output takes long enough to be interrupted.
    let big = c.path().join("big");
    let mut data = std::fs::read(&bin).unwrap();
    let mut noise = vec![0u8; 200 << 20];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").unwrap(),
        &mut noise,
    )
    .unwrap();
    data.extend_from_slice(&noise);
    std::fs::write(&big, &data).unwrap();
    drop((data, noise));
    let out_dir = c.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let mut child = tool()
        .current_dir(c.path())
        .args(["pack", "big", "-o"])
        .arg(out_dir.join("image"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while temporaries(&out_dir).is_empty() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!temporaries(&out_dir).is_empty(), "no temporary appeared");
    run(Command::new("kill").args(["-TERM", &child.id().to_string()])).ok();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(
        temporaries(&out_dir).is_empty(),
        "{:?}",
        temporaries(&out_dir)
    );
    assert!(!out_dir.join("image").exists(), "a half-written output");

    // What a SIGKILLed run leaves: removed by the next run writing there.
    std::fs::create_dir(out_dir.join(".microimage-stale")).unwrap();
    std::fs::write(out_dir.join(".microimage-stale/blob"), "x").unwrap();
    std::fs::write(out_dir.join(".microimage-old"), "x").unwrap();
    std::fs::write(out_dir.join("mine.txt"), "keep").unwrap();
    for (umask, file_mode, dir_mode) in [("022", 0o644, 0o755), ("077", 0o600, 0o700)] {
        let layout = out_dir.join(format!("image-{umask}"));
        run(Command::new("sh")
            .args([
                "-c",
                &format!("umask {umask} && exec \"$0\" microimage build --bin hello -o \"$1\""),
                env!("CARGO_BIN_EXE_cargo-microimage"),
            ])
            .arg(&layout)
            .current_dir(c.path())
            .env_remove("RUST_BACKTRACE")
            .env("CARGO_TARGET_DIR", shared_target()))
        .ok();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&layout.join("index.json")), file_mode, "umask {umask}");
        assert_eq!(mode(&layout), dir_mode, "umask {umask}");
        assert_eq!(
            mode(&layout.join("blobs/sha256")),
            dir_mode,
            "umask {umask}"
        );
    }
    assert!(
        temporaries(&out_dir).is_empty(),
        "{:?}",
        temporaries(&out_dir)
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("mine.txt")).unwrap(),
        "keep"
    );
}

/// 4: two runs writing two tags into one layout at once: both tags are there afterwards.
#[test]
fn concurrent_runs_to_one_layout_keep_both_results() {
    let c = fixture("hello");
    build_hello(c.path(), &[]).ok(); // compiled once, so both runs below only pack
    let layout = c.path().join("shared");
    let spawn = |tag: &str| {
        tool()
            .current_dir(c.path())
            .args(["microimage", "build", "--bin", "hello", "--tag", tag, "-o"])
            .arg(&layout)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let runs: Vec<_> = (0..4).map(|i| spawn(&format!("hello:t{i}"))).collect();
    for r in runs {
        let out = r.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tags: std::collections::BTreeSet<String> = index_entries(&layout)
        .iter()
        .map(|e| {
            e["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(tags.len(), 4, "{tags:?}");
}

/// 5: a build without --platform into the default output that held a multi-platform image
/// says that platforms are dropped.
#[test]
fn replacing_a_multi_platform_image_with_fewer_platforms_is_said() {
    let c = fixture("hello");
    let layout = c.path().join("image");
    build_hello(
        c.path(),
        &["--platform", "all", "-o", layout.to_str().unwrap()],
    )
    .ok();
    let out = build_hello(c.path(), &["-o", layout.to_str().unwrap()]).ok();
    assert!(
        out.stderr.contains("warning:")
            && out.stderr.contains("linux/amd64, linux/arm64")
            && out.stderr.contains("--platform linux/amd64,linux/arm64"),
        "{}",
        out.stderr
    );
}

/// ELF files made by a real toolchain (zig), without a C library so that they take no time.
fn zig_elf(dir: &Path, name: &str, target: &str, extra: &[&str], source: &str) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    run(Command::new("python3")
        .args(["-m", "ziglang", "cc", "-target", target, "-nostdlib", "-O1"])
        .args(extra)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .env("ZIG_GLOBAL_CACHE_DIR", shared_target().join("zig-cache")))
    .ok();
    out
}

const START: &str = "void _start(void) { for (;;) {} }\n";

/// 6 and 8: what cannot run is refused, saying what it is; `verify A B C` checks all.
#[test]
fn verify_accepts_only_runnable_executables_and_says_what_the_rest_are() {
    let t = tmp();
    let d = t.path();
    let be = zig_elf(d, "be", "aarch64_be-linux-musl", &["-static"], START);
    let rv32 = zig_elf(d, "rv32", "riscv32-linux-musl", &["-static"], START);
    let lib = zig_elf(d, "lib.so", "x86_64-linux-musl", &["-shared"], START);
    let object = zig_elf(d, "obj.o", "x86_64-linux-musl", &["-c"], START);
    let fifo = d.join("fifo");
    run(Command::new("mkfifo").arg(&fifo)).ok();
    let socket = std::os::unix::net::UnixListener::bind(d.join("sock")).unwrap();
    let text = d.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let cases: [(&Path, &str); 8] = [
        (
            &be,
            "aarch64_be (64-bit, big-endian), which no image platform runs",
        ),
        (&rv32, "riscv (32-bit), which no image platform runs"),
        (&lib, "is an ELF shared library"),
        (&object, "is an ELF relocatable object"),
        (&fifo, "is a named pipe (FIFO)"),
        (&d.join("sock"), "is a socket"),
        (d, "is a directory"),
        (&text, "its format is not ELF"),
    ];
    for (path, says) in cases {
        let start = Instant::now();
        run(tool().arg("verify").arg(path)).fails_with(1, says);
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} hung",
            path.display()
        );
    }
    drop(socket);
    // All are checked, the good one reported as good, and the run fails.
    let c = fixture("hello");
    let good = cargo_build_fixture(c.path(), "hello");
    let out = run(tool().arg("verify").arg(&be).arg(&good).arg(&text));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{}: static, linux/amd64", good.display())),
        "{}",
        out.stdout
    );
    assert_eq!(
        out.stderr
            .lines()
            .filter(|l| l.starts_with("error:"))
            .count(),
        2,
        "{}",
        out.stderr
    );
    // And pack refuses the big-endian one before anything is written.
    run(tool().current_dir(d).args(["pack", "be", "-o", "out"])).fails_with(1, "big-endian");
    assert!(!d.join("out").exists());
}

/// 9: a path that is not UTF-8, with JSON output: no panic, and the path escaped.
#[test]
fn a_path_that_is_not_utf8_is_escaped_in_json() {
    use std::os::unix::ffi::OsStrExt;
    let c = fixture("hello");
    let odd = c.path().join(std::ffi::OsStr::from_bytes(b"out\xff"));
    let out = run(tool()
        .current_dir(c.path())
        .args([
            "microimage",
            "build",
            "--bin",
            "hello",
            "--message-format",
            "json",
            "-o",
        ])
        .arg(odd.join("layout")))
    .ok();
    let record = first_json(&out.stdout);
    assert!(
        record["path"]
            .as_str()
            .unwrap()
            .ends_with("/out\\xff/layout"),
        "{record}"
    );
    assert!(odd.join("layout/index.json").is_file());
}

/// 10-13: settings that would surprise at run time are refused before anything is built.
#[test]
fn surprising_settings_are_refused_before_building() {
    let c = fixture("hello");
    for (args, code, says) in [
        (&["--user", ""][..], 2, "the container would run as root"),
        (&["--user", "bob"][..], 2, "neither a numeric uid"),
        (&["--user", "65532:staff"][..], 2, "neither a numeric gid"),
        (
            &["--include", "Cargo.toml:/etc"][..],
            2,
            "would replace the directory `/etc`",
        ),
        (
            &["--include", "Cargo.toml:/usr/local/bin/hello"][..],
            2,
            "would replace the file `/usr/local/bin/hello`",
        ),
        (
            &["--include", "Cargo.toml:/etc/passwd"][..],
            2,
            "would replace the file `/etc/passwd`",
        ),
        (&["--include", "../x"][..], 2, "lies outside"),
        (&["--tag", "../x:1"][..], 2, "the registry `..`"),
        (&["--tag", "reg istry.io/x:1"][..], 2, "is not a host name"),
        (
            &["--tag", "127.0.0.1:99999/x:1"][..],
            2,
            "not a number from 1 to 65535",
        ),
        (&["--expose", "70000"][..], 2, "is not a port"),
    ] {
        let out = build_hello(c.path(), args).fails_with(code, says);
        assert!(
            !out.stderr.contains("Compiling"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let long = format!("ghcr.io/{}:1", "a".repeat(260));
    build_hello(c.path(), &["--tag", &long]).fails_with(2, "at most 255");

    // The same in Cargo.toml: errors name the key and the file.
    let manifest = c.path().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    for (table, says) in [
        ("user = \"\"", "key `user`"),
        ("expose = [70000]", "`70000` is not a port to expose"),
        (
            "labels = { \"\" = \"x\" }",
            "key `labels`: a key must not be empty",
        ),
        (
            "bin.nope = { user = \"0\" }",
            "key `bin.nope`: the package has no binary target named `nope`",
        ),
    ] {
        std::fs::write(
            &manifest,
            format!("{text}\n[package.metadata.microimage]\n{table}\n"),
        )
        .unwrap();
        let out = build_hello(c.path(), &[]).fails_with(1, says);
        assert!(
            out.stderr.contains(manifest.to_str().unwrap()),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("untagged"), "{}", out.stderr);
    }
    std::fs::write(&manifest, &text).unwrap();

    // What is allowed: a file into a directory the image has, nonroot's home kept as it is.
    let out = build_hello(
        c.path(),
        &[
            "--include",
            "Cargo.toml:/home/nonroot/",
            "--user",
            "nonroot:nonroot",
            "-o",
            "img",
        ],
    )
    .ok();
    let (reference, _) = result_line(&out.stdout);
    let rootfs = c.path().join("rootfs");
    let image = reference.trim_start_matches("oci:");
    external(
        "umoci",
        &["raw", "unpack", "--image", image, rootfs.to_str().unwrap()],
    );
    use std::os::unix::fs::MetadataExt;
    let home = std::fs::metadata(rootfs.join("home/nonroot")).unwrap();
    assert_eq!((home.mode() & 0o7777, home.uid()), (0o700, 65532));
    assert!(rootfs.join("home/nonroot/Cargo.toml").is_file());
}

/// 7: the binary is checked and packed from the same open file: one swapped in at the path
/// between the two is not what goes into the image.
#[test]
fn what_is_packed_is_what_was_checked() {
    let c = fixture("hello");
    let good = cargo_build_fixture(c.path(), "hello");
    let path = c.path().join("app");
    std::fs::copy(&good, &path).unwrap();
    let verdict = microimage::verify::inspect(&path).unwrap();
    let platform = verdict.require_static().unwrap();
    let binary = microimage::image::PlatformBinary::verified(&verdict, platform);
    // Swapped: another file renamed over the path.
    let other = c.path().join("other");
    std::fs::write(&other, b"#!/bin/sh\necho swapped\n").unwrap();
    std::fs::rename(&other, &path).unwrap();
    let spec = microimage::image::ImageSpec::new(
        microimage::image::ImageName::parse("app:1").unwrap(),
        "app",
    );
    let set = microimage::image::assemble(&spec, &[binary]).unwrap();
    let app = &set.images[0].layers[1];
    let tar = {
        use std::io::Read;
        let mut out = Vec::new();
        microimage::layers::Compression::Gzip
            .stream_decoder(&app.blob.data)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        out
    };
    let mut archive = tar::Archive::new(&tar[..]);
    let mut packed = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().ends_with("usr/local/bin/app") {
            std::io::Read::read_to_end(&mut entry, &mut packed).unwrap();
        }
    }
    assert_eq!(
        packed,
        std::fs::read(&good).unwrap(),
        "the swapped-in file was packed"
    );
}

/// 14: a malformed docker config is reported with its path; nothing goes out anonymously.
#[test]
fn a_malformed_docker_config_is_reported_not_ignored() {
    let home = tmp();
    let docker = home.path().join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(docker.join("config.json"), "{ \"auths\": ").unwrap();
    let c = fixture("hello");
    let out = run(tool()
        .current_dir(c.path())
        .env("DOCKER_CONFIG", &docker)
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .args(["microimage", "push", "127.0.0.1:9/x:1", "--bin", "hello"]))
    .fails_with(1, "is not valid JSON");
    assert!(
        out.stderr
            .contains(docker.join("config.json").to_str().unwrap()),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("anonymous"), "{}", out.stderr);
}

/// 15: usage errors exit 2, failures 1.
#[test]
fn usage_errors_exit_2_and_failures_1() {
    let c = fixture("hello");
    for args in [
        &["--expose", "http"][..],
        &["--include", "/abs:/x"][..],
        &["--manifest-path", "nowhere/Cargo.toml"][..],
        &["--platform", "linux/mips64le"][..],
        &["--ca-certs", "missing.pem"][..],
        &["-j", "0"][..],
    ] {
        let out = build_hello(c.path(), args);
        assert_eq!(out.code, 2, "{args:?}: {}", out.stderr);
    }
    run(tool().args(["verify", "/nonexistent/binary"])).fails_with(1, "nonexistent");
}
