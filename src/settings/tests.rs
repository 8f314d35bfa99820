//! Precedence, merging and provenance of every setting: each value from each source (the
//! command line, bin, package, workspace, the default), relative paths against the file
//! that set them, and errors that name the key and the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::layers::Compression;

fn level(table: &str, manifest: &str, value: Value) -> Option<Level> {
    let source = Source {
        manifest: PathBuf::from(manifest),
        table: table.to_string(),
    };
    let (config, _) =
        manifest::parse_level(&json!({ "microimage": value }), &source, false).unwrap();
    Some(Level { config, source })
}

const WS: &str = "/ws/Cargo.toml";
const PKG: &str = "/ws/api/Cargo.toml";

fn levels(workspace: Value, package: Value, bin: Value) -> Levels {
    Levels {
        workspace: level("[workspace.metadata.microimage]", WS, workspace),
        package: level("[package.metadata.microimage]", PKG, package),
        bin: level("[package.metadata.microimage.bin.api]", PKG, bin),
    }
}

fn context(cwd: &Path) -> Context<'_> {
    Context {
        default_name: ImageName::parse("api:1.0.0").unwrap(),
        bin: "api",
        annotations: BTreeMap::from([("org.opencontainers.image.title".into(), "api".into())]),
        cwd,
    }
}

fn from(table: &str, file: &str, key: &str) -> Origin {
    Origin::Manifest {
        file: file.into(),
        table: table.into(),
        key: key.into(),
    }
}

/// Every scalar setting, from each of the five sources.
#[test]
fn each_value_from_each_source() {
    let cwd = Path::new("/elsewhere");
    let cli = ImageArgs {
        user: Some("1:1".into()),
        ..Default::default()
    };
    // user: the command line beats everything.
    let all = levels(
        json!({"user": "4:4", "workdir": "/ws", "tag": "ws:1", "compression": "zstd"}),
        json!({"user": "3:3", "workdir": "/pkg", "tzdata": true}),
        json!({"user": "2:2"}),
    );
    let r = resolve(&cli, &all, &context(cwd)).unwrap();
    assert_eq!(r.spec.user, "1:1");
    assert_eq!(r.origins["user"], Origin::CommandLine);
    // Without the flag: bin.
    let r = resolve(&ImageArgs::default(), &all, &context(cwd)).unwrap();
    assert_eq!(r.spec.user, "2:2");
    assert_eq!(
        r.origins["user"],
        from("[package.metadata.microimage.bin.api]", PKG, "user")
    );
    // workdir: package (bin does not set it), over the workspace.
    assert_eq!(r.spec.workdir, "/pkg");
    assert_eq!(
        r.origins["workdir"],
        from("[package.metadata.microimage]", PKG, "workdir")
    );
    assert!(r.spec.base.tzdata);
    // tag and compression: only the workspace sets them.
    assert_eq!(r.spec.name.to_string(), "ws:1");
    assert_eq!(
        r.origins["tag"],
        from("[workspace.metadata.microimage]", WS, "tag")
    );
    assert_eq!(r.spec.compression, Compression::Zstd);
    // Nothing sets these: the defaults.
    let none = resolve(&ImageArgs::default(), &Levels::default(), &context(cwd)).unwrap();
    assert_eq!(none.spec.user, "65532:65532");
    assert_eq!(none.spec.workdir, "/home/nonroot");
    assert_eq!(none.spec.name.to_string(), "api:1.0.0");
    assert_eq!(none.spec.compression, Compression::Gzip);
    for key in [
        "user",
        "workdir",
        "tag",
        "compression",
        "tzdata",
        "ca-certs",
        "include",
    ] {
        assert_eq!(none.origins[key], Origin::Default, "{key}");
    }
    assert_eq!(
        none.spec.annotations["org.opencontainers.image.created"],
        "1970-01-01T00:00:00Z"
    );
}

#[test]
fn maps_merge_key_by_key_and_remember_each_keys_origin() {
    let all = levels(
        json!({"labels": {"team": "payments", "tier": "ws"}, "env": {"A": "ws"}}),
        json!({"labels": {"tier": "pkg"}, "env": {"RUST_LOG": "info", "A": "1"}}),
        json!({"labels": {"bin": "yes"}}),
    );
    let cli = ImageArgs {
        labels: vec![("cli".into(), "1".into())],
        env: vec![
            ("RUST_LOG".into(), "debug".into()),
            ("Z".into(), "z".into()),
        ],
        ..Default::default()
    };
    let r = resolve(&cli, &all, &context(Path::new("/"))).unwrap();
    assert_eq!(
        r.spec.labels,
        BTreeMap::from([
            ("bin".to_string(), "yes".to_string()),
            ("cli".into(), "1".into()),
            ("team".into(), "payments".into()),
            ("tier".into(), "pkg".into()),
        ])
    );
    // Cargo.toml keys sorted, the command line's replacing in place or appended.
    assert_eq!(
        r.spec.env,
        vec![
            ("A".to_string(), "1".to_string()),
            ("RUST_LOG".into(), "debug".into()),
            ("Z".into(), "z".into()),
        ]
    );
    assert_eq!(
        r.origins["labels.team"],
        from("[workspace.metadata.microimage]", WS, "labels.team")
    );
    assert_eq!(
        r.origins["labels.tier"],
        from("[package.metadata.microimage]", PKG, "labels.tier")
    );
    assert_eq!(
        r.origins["labels.bin"],
        from("[package.metadata.microimage.bin.api]", PKG, "labels.bin")
    );
    assert_eq!(r.origins["labels.cli"], Origin::CommandLine);
    assert_eq!(r.origins["env.RUST_LOG"], Origin::CommandLine);
    assert_eq!(
        r.origins["env.A"],
        from("[package.metadata.microimage]", PKG, "env.A")
    );
}

#[test]
fn lists_replace_they_do_not_append() {
    let all = levels(
        json!({"args": ["ws"]}),
        json!({"args": ["serve", "--fast"], "expose": ["8080/tcp", 9090]}),
        json!({"args": ["--dry-run"]}),
    );
    let r = resolve(&ImageArgs::default(), &all, &context(Path::new("/"))).unwrap();
    assert_eq!(r.spec.args, ["--dry-run"]);
    // Numbers are ports too, normalised.
    assert_eq!(r.spec.expose, ["8080/tcp", "9090/tcp"]);
    let cli = ImageArgs {
        expose: vec!["1/udp".into()],
        args: vec!["cli".into()],
        ..Default::default()
    };
    let r = resolve(&cli, &all, &context(Path::new("/"))).unwrap();
    assert_eq!(r.spec.expose, ["1/udp"]);
    assert_eq!(r.spec.args, ["cli"]);
    assert_eq!(r.origins["args"], Origin::CommandLine);
}

#[test]
fn booleans_a_lower_true_is_overridden_by_a_higher_false() {
    let all = levels(json!({}), json!({"tzdata": true}), json!({"tzdata": false}));
    let r = resolve(&ImageArgs::default(), &all, &context(Path::new("/"))).unwrap();
    assert!(!r.spec.base.tzdata);
    let cli = ImageArgs {
        tzdata: true,
        compression: Some(Compression::Gzip),
        ..Default::default()
    };
    let zstd = levels(json!({"compression": "zstd"}), json!({}), json!({}));
    let r = resolve(&cli, &zstd, &context(Path::new("/"))).unwrap();
    assert!(r.spec.base.tzdata);
    assert_eq!(r.spec.compression, Compression::Gzip);
}

/// `compression-level`: a key or the flag, checked against the compression it is for; a
/// level out of range names the key and the file (or the flag).
#[test]
fn a_compression_level_is_checked_against_its_compression() {
    let cx = context(Path::new("/"));
    let r = resolve(
        &ImageArgs::default(),
        &levels(json!({}), json!({}), json!({})),
        &cx,
    )
    .unwrap();
    assert_eq!(
        r.spec.codec(),
        crate::layers::Codec::new(Compression::Gzip, Some(6))
    );
    let zstd19 = levels(
        json!({"compression": "zstd", "compression-level": 19}),
        json!({}),
        json!({}),
    );
    let r = resolve(&ImageArgs::default(), &zstd19, &cx).unwrap();
    assert_eq!(
        r.spec.codec(),
        crate::layers::Codec::new(Compression::Zstd, Some(19))
    );
    assert!(matches!(
        r.origins["compression-level"],
        Origin::Manifest { .. }
    ));
    // The same level for gzip is out of its range: the error names the key.
    let cli = ImageArgs {
        compression: Some(Compression::Gzip),
        ..Default::default()
    };
    let err = resolve(&cli, &zstd19, &cx).unwrap_err();
    assert!(err.message().contains("key `compression-level`"), "{err}");
    assert!(
        err.message().contains("gzip levels are 1 to 12, not 19"),
        "{err}"
    );
    let cli = ImageArgs {
        compression_level: Some(0),
        ..Default::default()
    };
    let err = resolve(&cli, &levels(json!({}), json!({}), json!({})), &cx).unwrap_err();
    assert_eq!(
        err.message(),
        "--compression-level: gzip levels are 1 to 12, not 0"
    );
    assert_eq!(err.exit_code(), 2);
}

/// `ca-certs` and `include` are relative to the Cargo.toml that sets them; the command
/// line's to the current directory. A path that is not there names the key and the file.
#[test]
fn relative_paths_resolve_against_the_file_that_set_them() {
    let t = tempfile::tempdir().unwrap();
    let ws = t.path();
    std::fs::create_dir_all(ws.join("api/certs")).unwrap();
    std::fs::create_dir_all(ws.join("api/static")).unwrap();
    std::fs::create_dir_all(ws.join("shared")).unwrap();
    let pem = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/workspace/api/certs/migrate-ca.pem");
    std::fs::copy(pem, ws.join("api/certs/ca.pem")).unwrap();
    std::fs::write(ws.join("shared/motd"), "hi").unwrap();
    let pkg = ws.join("api/Cargo.toml");
    let levels = Levels {
        workspace: level(
            "[workspace.metadata.microimage]",
            ws.join("Cargo.toml").to_str().unwrap(),
            json!({"include": ["shared/motd:/etc/motd"]}),
        ),
        package: level(
            "[package.metadata.microimage]",
            pkg.to_str().unwrap(),
            json!({"ca-certs": "certs/ca.pem"}),
        ),
        bin: None,
    };
    // Run from somewhere else entirely.
    let elsewhere = tempfile::tempdir().unwrap();
    let r = resolve(&ImageArgs::default(), &levels, &context(elsewhere.path())).unwrap();
    assert_eq!(
        r.spec.base.ca_certs,
        CaCerts::Path(ws.join("api/certs/ca.pem"))
    );
    assert_eq!(r.spec.include[0].src, ws.join("shared/motd"));

    let missing = Levels {
        package: level(
            "[package.metadata.microimage]",
            pkg.to_str().unwrap(),
            json!({"ca-certs": "certs/nope.pem"}),
        ),
        ..Default::default()
    };
    let e = resolve(&ImageArgs::default(), &missing, &context(elsewhere.path())).unwrap_err();
    assert_eq!(
        e.kind(),
        &crate::error::Kind::Config {
            file: pkg.clone(),
            key: "ca-certs".into()
        }
    );
    assert!(e.message().contains("key `ca-certs`"), "{e}");
    assert!(e.message().contains(&pkg.display().to_string()), "{e}");
    assert!(
        e.message()
            .contains(&ws.join("api/certs/nope.pem").display().to_string()),
        "{e}"
    );

    let bad_include = Levels {
        package: level(
            "[package.metadata.microimage]",
            pkg.to_str().unwrap(),
            json!({"include": ["static/missing.css:/srv/x.css"]}),
        ),
        ..Default::default()
    };
    let e = resolve(
        &ImageArgs::default(),
        &bad_include,
        &context(elsewhere.path()),
    )
    .unwrap_err();
    assert!(e.message().contains("key `include`"), "{e}");

    // The command line's paths start at the current directory, and are usage errors.
    let cli = ImageArgs {
        ca_certs: Some("certs/ca.pem".into()),
        ..Default::default()
    };
    let r = resolve(&cli, &Levels::default(), &context(&ws.join("api"))).unwrap();
    assert_eq!(
        r.spec.base.ca_certs,
        CaCerts::Path(ws.join("api/certs/ca.pem"))
    );
    let e = resolve(&cli, &Levels::default(), &context(ws)).unwrap_err();
    assert!(e.is_usage(), "{e}");
    assert!(e.message().starts_with("--ca-certs:"), "{e}");
}

#[test]
fn platforms_come_from_the_command_line_else_the_highest_level() {
    let all = levels(
        json!({"platforms": ["linux/amd64", "linux/arm64"]}),
        json!({"platforms": ["linux/arm64"]}),
        json!({}),
    );
    let arm = platform::Platform::from_oci("linux/arm64").unwrap();
    let amd = platform::Platform::from_oci("linux/amd64").unwrap();
    assert_eq!(platforms(&[], &all).unwrap(), [arm]);
    assert_eq!(platforms(&[amd], &all).unwrap(), [amd]);
    assert_eq!(
        platforms(&[], &Levels::default()).unwrap(),
        [platform::Platform::host().unwrap()]
    );
}

#[test]
fn base_references_and_paths() {
    use crate::sources::Source;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bases/runtime")).unwrap();
    // A prefixed or existing path is local, relative to the Cargo.toml's directory.
    assert_eq!(
        super::parse_base("oci:bases/runtime:1", dir.path()).unwrap(),
        Source::Local {
            path: dir.path().join("bases/runtime"),
            tag: Some("1".into())
        }
    );
    assert_eq!(
        super::parse_base("bases/runtime", dir.path()).unwrap(),
        Source::Local {
            path: dir.path().join("bases/runtime"),
            tag: None
        }
    );
    // Anything else is a registry reference, Docker Hub short names included.
    assert_eq!(
        super::parse_base("busybox:1.36", dir.path()).unwrap(),
        Source::Remote("busybox:1.36".into())
    );
    assert_eq!(
        super::parse_base("docker://ghcr.io/acme/base@sha256:0000000000000000000000000000000000000000000000000000000000000000", dir.path()).unwrap(),
        Source::Remote("ghcr.io/acme/base@sha256:0000000000000000000000000000000000000000000000000000000000000000".into())
    );
    assert!(super::parse_base("oci:missing/dir", dir.path()).is_err());
    assert!(super::parse_base("Not A Reference", dir.path()).is_err());
    assert!(super::parse_base("  ", dir.path()).is_err());
}

#[test]
fn provenance_defaults_to_slsa_and_the_key_or_flag_turns_it_off() {
    let cwd = Path::new("/");
    let none = levels(json!({}), json!({}), json!({}));
    let r = resolve(&ImageArgs::default(), &none, &context(cwd)).unwrap();
    assert_eq!(r.provenance, Provenance::Slsa);
    let off = levels(json!({}), json!({"provenance": "none"}), json!({}));
    let r = resolve(&ImageArgs::default(), &off, &context(cwd)).unwrap();
    assert_eq!(r.provenance, Provenance::None);
    assert_eq!(
        r.origins["provenance"],
        from("[package.metadata.microimage]", PKG, "provenance")
    );
    let cli = ImageArgs {
        provenance: Some(Provenance::Slsa),
        ..Default::default()
    };
    assert_eq!(
        resolve(&cli, &off, &context(cwd)).unwrap().provenance,
        Provenance::Slsa
    );
}

#[test]
fn the_thread_stack_defaults_to_glibcs_and_the_key_or_flag_changes_it_within_musls_range() {
    let cwd = Path::new("/");
    let none = levels(json!({}), json!({}), json!({}));
    let r = resolve(&ImageArgs::default(), &none, &context(cwd)).unwrap();
    assert_eq!(r.runtime.thread_stack, 8 << 20);
    let key = levels(json!({"thread-stack-size": "2MiB"}), json!({}), json!({}));
    let r = resolve(&ImageArgs::default(), &key, &context(cwd)).unwrap();
    assert_eq!(r.runtime.thread_stack, 2 << 20);
    let bytes = levels(json!({}), json!({"thread-stack-size": 131072}), json!({}));
    let r = resolve(&ImageArgs::default(), &bytes, &context(cwd)).unwrap();
    assert_eq!(r.runtime.thread_stack, 128 << 10);
    let cli = ImageArgs {
        thread_stack_size: Some("512k".into()),
        ..Default::default()
    };
    assert_eq!(
        resolve(&cli, &key, &context(cwd))
            .unwrap()
            .runtime
            .thread_stack,
        512 << 10
    );
    // Outside musl's range, or not a size: an error naming the key and the file.
    for bad in ["16MiB", "64KiB", "lots"] {
        let wrong = levels(json!({}), json!({ "thread-stack-size": bad }), json!({}));
        let err = resolve(&ImageArgs::default(), &wrong, &context(cwd)).unwrap_err();
        assert!(
            err.message().contains("thread-stack-size") && err.message().contains(PKG),
            "{}",
            err.message()
        );
    }
    let source = Source {
        manifest: PathBuf::from(PKG),
        table: "[package.metadata.microimage]".to_string(),
    };
    let typed = json!({ "microimage": { "thread-stack-size": true } });
    assert!(manifest::parse_level(&typed, &source, false).is_err());
    assert_eq!(super::parse_thread_stack("8M"), Ok(8 << 20));
    assert_eq!(super::parse_thread_stack(" 1048576 "), Ok(1 << 20));
    assert!(super::parse_thread_stack("9MiB")
        .unwrap_err()
        .contains("8MiB"));
}
