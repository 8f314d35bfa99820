//! Reproducibility (DESIGN §6): the same crate in two checkouts, built into different
//! target dirs under different umasks, gives the same digests; the base layer's digest is
//! pinned (catches compressor or bundle drift); layers do not depend on input order.

use std::process::Command;

use crate::common::*;
use microimage::layers::{self, base, Compression, Content, Entry};
use proptest::prelude::*;

fn build_copy(name: &str, umask: &str, extra: &[&str]) -> (String, String) {
    build_fixture_copy("hello", name, umask, extra)
}

/// Builds a copy of fixture `fixture` in a new directory `name`, under `umask`, into its
/// own target dir; returns the index digest, and the layout's index.json (which lists the
/// SBOM manifests too) with the number of blobs.
fn build_fixture_copy(fixture: &str, name: &str, umask: &str, extra: &[&str]) -> (String, String) {
    let (digest, index, _) = build_fixture_copy_on(fixture, name, umask, extra, None);
    (digest, index)
}

/// [`build_fixture_copy`], on `base` (a layout, copied into the checkout's parent and
/// named by its absolute path there) if given; also returns the output layout.
fn build_fixture_copy_on(
    fixture: &str,
    name: &str,
    umask: &str,
    extra: &[&str],
    base: Option<(&std::path::Path, &str)>,
) -> (String, String, std::path::PathBuf) {
    let parent = tmp().keep();
    let crate_dir = parent.join(name);
    copy_crate(&repo().join("tests/fixtures").join(fixture), &crate_dir);
    let target = parent.join(format!("target-{umask}"));
    let out_dir = parent.join("out");
    let mut extra: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    if let Some((layout, tag)) = base {
        let copy = parent.join("base");
        copy_crate(layout, &copy);
        extra.push(format!("--base oci:{}:{tag}", copy.display()));
    }
    let script = format!(
        "umask {umask} && exec \"$0\" microimage build --bin {fixture} -o \"$1\" {}",
        extra.join(" ")
    );
    let out = run(Command::new("sh")
        .args(["-c", &script, env!("CARGO_BIN_EXE_cargo-microimage")])
        .arg(&out_dir)
        .current_dir(&crate_dir)
        .env_remove("RUST_BACKTRACE")
        .env_remove("SOURCE_DATE_EPOCH")
        .env_remove("RUSTFLAGS")
        .env("CARGO_TARGET_DIR", &target))
    .ok();
    let (_, digest) = result_line(&out.stdout);
    let blobs = std::fs::read_dir(out_dir.join("blobs/sha256"))
        .unwrap()
        .count();
    let index = std::fs::read_to_string(out_dir.join("index.json")).unwrap();
    (digest, format!("{index}\n{blobs} blobs"), out_dir)
}

#[test]
fn two_checkouts_two_target_dirs_two_umasks_one_digest() {
    // With dependency data in the binary (the default), both SBOM formats and provenance:
    // their digests are in index.json, so they must match too.
    let both = ["--sbom", "spdx,cyclonedx"];
    let (a, layout_a) = build_copy("hello", "022", &both);
    let (b, layout_b) = build_copy("hello-elsewhere", "077", &both);
    assert_eq!(a, b, "index digests differ between checkouts");
    assert_eq!(layout_a, layout_b, "SBOM digests or blobs differ");
    assert_eq!(
        layout_a.matches("\"artifactType\"").count(),
        3,
        "two SBOMs and the provenance listed: {layout_a}"
    );
}

#[test]
fn a_local_base_named_by_its_absolute_path_gives_one_digest_and_names_no_path() {
    // Before, the base's name as written (`oci:/tmp/.../base:1`) went into the
    // `org.opencontainers.image.base.name` annotation and the provenance.
    let busybox = &crate::base::bases().0;
    let (a, index_a, out_a) =
        build_fixture_copy_on("hello", "hello", "022", &[], Some((busybox, "1")));
    let (b, index_b, _) =
        build_fixture_copy_on("hello", "hello-elsewhere", "022", &[], Some((busybox, "1")));
    assert_eq!(a, b, "index digests differ between checkouts");
    assert_eq!(index_a, index_b);
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_a.join("index.json")).unwrap()).unwrap();
    let read = |digest: &str| -> serde_json::Value {
        let blob = std::fs::read(out_a.join("blobs/sha256").join(&digest[7..])).unwrap();
        serde_json::from_slice(&blob).unwrap()
    };
    let image_index = read(index["manifests"][0]["digest"].as_str().unwrap());
    let manifest = read(image_index["manifests"][0]["digest"].as_str().unwrap());
    let name = manifest["annotations"]["org.opencontainers.image.base.name"]
        .as_str()
        .unwrap_or_else(|| panic!("no base name: {manifest}"))
        .to_string();
    assert!(
        name.contains("@sha256:") && !name.contains("/tmp") && !name.starts_with("oci:"),
        "base recorded as {name}"
    );
    for statement in layout_provenance(&out_a) {
        let text = String::from_utf8(statement).unwrap();
        assert!(
            !text.contains(out_a.parent().unwrap().to_str().unwrap()),
            "{text}"
        );
        assert!(text.contains(&name), "{text}");
    }
}

/// sccache's counts of one build, from `sccache --show-stats --stats-format json`.
#[derive(Debug)]
struct CacheStats {
    hits: u64,
    misses: u64,
    /// Hits per language (`Rust`, `C/C++`, `Assembler`).
    hit_languages: Vec<String>,
}

fn cache_stats(json: &str) -> CacheStats {
    let value: serde_json::Value = serde_json::from_str(json).unwrap();
    let counts = |key: &str| -> serde_json::Map<String, serde_json::Value> {
        value["stats"][key]["counts"]
            .as_object()
            .cloned()
            .unwrap_or_else(|| panic!("no {key} counts in {json}"))
    };
    let sum = |m: &serde_json::Map<String, serde_json::Value>| {
        m.values().map(|v| v.as_u64().unwrap()).sum::<u64>()
    };
    let hits = counts("cache_hits");
    CacheStats {
        hits: sum(&hits),
        misses: sum(&counts("cache_misses")),
        hit_languages: hits.keys().cloned().collect(),
    }
}

/// sccache as the compiler cache two checkouts share (CI runners check out at different
/// paths): a crate with Rust and a registry crate's C (lz4-sys) built for amd64
/// (musl-gcc) and arm64 (zig) from one checkout with a cold cache into its default target
/// dir, then from a copy at another path into another target dir given by
/// `--target-dir`. The second build hits the cache for at least 90% of what sccache can
/// cache, Rust and C, and the images are the same. Before, the path remapping named the
/// checkout in the flags of every crate built for the target, so only the host's build
/// scripts and proc macros hit (9 of example-app's 68 cacheable compilations; all 68
/// now, docs/ci.md); and no C compiled with zig under sccache at all (cargo-zigbuild's
/// compiler wrapper ran `sccache rustc -vV` from inside sccache's server).
#[test]
fn a_second_checkout_hits_the_shared_sccache_and_gives_the_same_digest() {
    let sccache = tools_dir().join("venv/bin/sccache");
    assert!(
        sccache.is_file(),
        "{} is missing: run scripts/setup.sh",
        sccache.display()
    );
    let parent = tmp();
    let port = free_port().to_string();
    let cache = parent.path().join("sccache");
    let sccache_cmd = |args: &[&str]| {
        let mut cmd = Command::new(&sccache);
        cmd.args(args)
            .env("SCCACHE_DIR", &cache)
            .env("SCCACHE_SERVER_PORT", &port)
            .env("SCCACHE_IDLE_TIMEOUT", "0")
            .env_remove("SCCACHE_BASEDIRS")
            .env_remove("RUSTC_WRAPPER");
        cmd
    };
    /// Stops the test's sccache server (started on its own port) when the test ends.
    struct Server<'a>(&'a dyn Fn(&[&str]) -> Command);
    impl Drop for Server<'_> {
        fn drop(&mut self) {
            let _ = (self.0)(&["--stop-server"]).output();
        }
    }
    run(&mut sccache_cmd(&["--start-server"])).ok();
    let _server = Server(&sccache_cmd);
    let mut results = Vec::new();
    for (name, target_dir) in [
        ("app", None),
        ("elsewhere/checkout-two", Some("target-two")),
    ] {
        let dir = parent.path().join(name);
        copy_crate(&repo().join("tests/fixtures/cache-probe"), &dir);
        run(&mut sccache_cmd(&["--zero-stats"])).ok();
        let mut build = tool();
        build
            .env_remove("CARGO_TARGET_DIR")
            .args(["microimage", "build", "--locked"])
            .args(["--platform", "linux/amd64,linux/arm64", "-o"])
            .arg(parent.path().join(format!("out-{}", results.len())))
            .current_dir(&dir)
            .env("RUSTC_WRAPPER", &sccache)
            .env("SCCACHE_DIR", &cache)
            .env("SCCACHE_SERVER_PORT", &port);
        if let Some(target_dir) = target_dir {
            build
                .arg("--target-dir")
                .arg(parent.path().join(target_dir));
        }
        let out = run(&mut build).ok();
        let stats = run(&mut sccache_cmd(&[
            "--show-stats",
            "--stats-format",
            "json",
        ]))
        .ok();
        results.push((result_line(&out.stdout).1, cache_stats(&stats.stdout)));
    }
    let (first, cold) = &results[0];
    let (second, warm) = &results[1];
    assert_eq!(first, second, "the two checkouts gave different images");
    assert!(
        cold.hits == 0 && cold.misses >= 12,
        "a cold cache: {cold:?}"
    );
    assert!(
        warm.hits * 10 >= (warm.hits + warm.misses) * 9,
        "the second checkout hit {} of {} cacheable compilations: {warm:?}",
        warm.hits,
        warm.hits + warm.misses
    );
    for language in ["Rust", "C/C++"] {
        assert!(
            warm.hit_languages.iter().any(|l| l == language),
            "no {language} hits: {warm:?}"
        );
    }
}

#[test]
fn c_code_from_two_checkouts_gives_one_digest() {
    // The fixture's C code returns its own __FILE__; the checkout path must not get in.
    let (a, _) = build_fixture_copy("cfile", "cfile-one", "022", &[]);
    let (b, _) = build_fixture_copy("cfile", "cfile-other-place", "022", &[]);
    assert_eq!(a, b, "C code made the digests differ between checkouts");
}

#[test]
fn zstd_images_are_reproducible_too() {
    let (a, _) = build_copy("hello", "022", &["--compression", "zstd"]);
    let (b, _) = build_copy("hello-zstd", "077", &["--compression", "zstd"]);
    assert_eq!(a, b, "zstd index digests differ between checkouts");
    let (gzip, _) = build_copy("hello-gzip", "022", &[]);
    assert_ne!(a, gzip, "--compression zstd changed nothing");
}

/// The base layer with default settings (gzip by libdeflate at level 6, one member per MiB,
/// since the switch from zlib-rs; see src/layers/gzip.rs). Changing the compressor, its level, the
/// templates or the webpki-root-certs version changes this digest — deliberately: update
/// it in the same commit and say why.
const GOLDEN_BASE_LAYER: &str =
    "sha256:82c59e68ae2ae9a2232a0089a021f3bcfadadf417a04dafa35becd230eded3ab";

/// The same for zstd (libzstd's version and the level are in it).
const GOLDEN_BASE_LAYER_ZSTD: &str =
    "sha256:f81d5c96aed6d29fbca80c4ae7e45a703f312c1be90472eb02b486cf22092705";

#[test]
fn golden_base_layer_digest() {
    for (compression, golden) in [
        (Compression::Gzip, GOLDEN_BASE_LAYER),
        (Compression::Zstd, GOLDEN_BASE_LAYER_ZSTD),
    ] {
        let entries = base::entries(&base::BaseOptions::default()).unwrap();
        let layer = layers::write(entries, 0, layers::Codec::new(compression, None)).unwrap();
        assert_eq!(layer.blob.digest.to_string(), golden, "{compression}");
    }
}

fn entries() -> Vec<Entry> {
    vec![
        Entry::dir("etc", 0o755),
        Entry::file("etc/a", 0o644, Content::Bytes(b"alpha".as_slice().into())),
        Entry::file("etc/b", 0o600, Content::Bytes(vec![7u8; 70_000].into())),
        Entry::dir("etc/sub", 0o755),
        Entry::file("etc/sub/c", 0o755, Content::Bytes(b"c".as_slice().into())),
        Entry::symlink("etc/link", "a"),
        Entry::dir("tmp", 0o1777),
        Entry::dir("home", 0o755),
        Entry::dir("home/nonroot", 0o700).owned_by(65532, 65532),
        Entry::file(
            "etc-x",
            0o644,
            Content::Bytes(b"sorted between etc and etc/".as_slice().into()),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn layer_digest_does_not_depend_on_input_order(
        order in Just(entries()).prop_shuffle(),
        epoch in 0u64..2_000_000_000,
        compression in prop_oneof![Just(Compression::Gzip), Just(Compression::Zstd)],
    ) {
        let codec = layers::Codec::new(compression, None);
        let reference = layers::write(entries(), epoch, codec).unwrap();
        let shuffled = layers::write(order, epoch, codec).unwrap();
        prop_assert_eq!(reference.blob.digest, shuffled.blob.digest);
        prop_assert_eq!(reference.diff_id, shuffled.diff_id);
    }
}

/// Builds a copy of the monorepo fixture (an app whose path dependency lives outside its
/// workspace) under `parent`; returns the index digest and the binary.
fn build_monorepo(
    parent: &std::path::Path,
    extra_env: &[(&str, &str)],
) -> (String, std::path::PathBuf, Run) {
    copy_crate(
        &repo().join("tests/fixtures/monorepo"),
        &parent.join("monorepo"),
    );
    let app = parent.join("monorepo/app");
    git_commit_all(&parent.join("monorepo"));
    let mut cmd = tool();
    cmd.current_dir(&app)
        .env_remove("CARGO_HOME")
        .env("CARGO_TARGET_DIR", parent.join("target"))
        .args([
            "microimage",
            "build",
            "--locked",
            "--message-format",
            "json",
            "-o",
        ])
        .arg(parent.join("image"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = run(&mut cmd).ok();
    let mut digest = String::new();
    let mut binary = std::path::PathBuf::new();
    for line in out.stdout.lines() {
        if let microimage::message::Record::ImageWritten(w) = serde_json::from_str(line).unwrap() {
            digest = w.index_digest;
            binary = w.platforms[0]
                .binary
                .clone()
                .expect("a packed binary")
                .into();
        }
    }
    (digest, binary, out)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A path dependency outside the workspace (`../shared/util`) is compiled from an absolute
/// path; the tool says so (cargo hashes that path into symbol names, which can change the
/// code's layout); here two checkouts at different places still give one image — and
/// byte-identical provenance — and neither place is in the binary.
#[test]
fn a_path_dependency_outside_the_workspace_leaves_no_path_behind() {
    let one = tmp();
    let other = tmp();
    let (a, bin_a, said) = build_monorepo(one.path(), &[]);
    let (b, bin_b, _) = build_monorepo(&other.path().join("deeper/still"), &[]);
    // The layout is named, with the way to make digests not depend on the checkout path.
    assert!(
        said.stderr.contains("the path dependency `util`")
            && said.stderr.contains("lies outside the workspace of `app`")
            && said.stderr.contains("put a workspace root above both"),
        "{}",
        said.stderr
    );
    for (bin, place) in [(&bin_a, one.path()), (&bin_b, other.path())] {
        let bytes = std::fs::read(bin).unwrap();
        assert!(
            !contains(&bytes, place.to_str().unwrap()),
            "{} is in {}",
            place.display(),
            bin.display()
        );
        let said = run(&mut Command::new(bin)).ok().stdout;
        assert!(
            said.contains("util is at /path-deps/util/src/lib.rs"),
            "{said}"
        );
    }
    assert_eq!(a, b, "the checkout path changed the image");
    // Provenance, byte for byte the same from both places, and what it says.
    let statements = layout_provenance(&one.path().join("image"));
    assert_eq!(statements.len(), 1);
    assert_eq!(
        statements,
        layout_provenance(&other.path().join("deeper/still/image")),
        "the checkout path changed the provenance"
    );
    let statement: serde_json::Value = serde_json::from_slice(&statements[0]).unwrap();
    let text = String::from_utf8(statements[0].clone()).unwrap();
    assert!(!text.contains(one.path().to_str().unwrap()), "{text}");
    let record = first_json(&said.stdout);
    let manifest = record["platforms"][0]["manifest_digest"].as_str().unwrap();
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        manifest.trim_start_matches("sha256:")
    );
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    let build = &statement["predicate"]["buildDefinition"];
    assert_eq!(build["externalParameters"]["package"], "app");
    assert_eq!(build["externalParameters"]["platform"], "linux/amd64");
    assert_eq!(build["externalParameters"]["profile"], "release");
    let dep = |name: &str| {
        build["resolvedDependencies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .clone()
    };
    let head = run(Command::new("git")
        .current_dir(one.path().join("monorepo"))
        .args(["rev-parse", "HEAD"]))
    .ok()
    .stdout;
    assert_eq!(dep("source")["digest"]["gitCommit"], head.trim());
    assert_eq!(dep("source")["annotations"]["dirty"], false);
    let lock = std::fs::read(one.path().join("monorepo/app/Cargo.lock")).unwrap();
    assert_eq!(
        dep("Cargo.lock")["digest"]["sha256"],
        sha256_hex(&lock).as_str()
    );
    let rustc = run(Command::new("rustc").arg("-vV")).ok().stdout;
    assert_eq!(
        dep("rustc")["annotations"]["version"],
        rustc.lines().next().unwrap()
    );
    let commit = rustc
        .lines()
        .find_map(|l| l.strip_prefix("commit-hash: "))
        .unwrap();
    assert_eq!(dep("rustc")["digest"]["gitCommit"], commit);
    assert_eq!(
        dep("cargo-microimage")["uri"],
        format!("pkg:cargo/cargo-microimage@{}", env!("CARGO_PKG_VERSION"))
    );
}

/// rustflags for the target in `~/.cargo/config.toml`, found without `CARGO_HOME` (a cargo
/// not installed by rustup, or the binary run directly), for a project outside `$HOME`:
/// cargo reads them, so the tool must too — the user's flag applies and the tool's path
/// remapping is not lost beside it.
#[test]
fn target_rustflags_in_the_home_cargo_config_are_kept_and_remapping_still_applies() {
    let home = tmp();
    std::fs::create_dir_all(home.path().join(".cargo")).unwrap();
    std::fs::write(
        home.path().join(".cargo/config.toml"),
        "[target.x86_64-unknown-linux-musl]\nrustflags = [\"--cfg\", \"microimage_probe\"]\n",
    )
    .unwrap();
    let project = tmp();
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap()));
    let (_, bin, _) = build_monorepo(
        project.path(),
        &[
            ("HOME", home.path().to_str().unwrap()),
            ("RUSTUP_HOME", &rustup_home),
        ],
    );
    let said = run(&mut Command::new(&bin)).ok().stdout;
    assert!(said.contains("built with the user's rustflags"), "{said}");
    assert!(said.contains("util is at /path-deps/util/"), "{said}");
    let bytes = std::fs::read(&bin).unwrap();
    assert!(
        !contains(&bytes, project.path().to_str().unwrap()),
        "the project path is in the binary"
    );
}
