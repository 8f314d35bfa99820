//! Installability: `scripts/release.sh` builds exactly the archives that
//! `[package.metadata.binstall]` in Cargo.toml points `cargo binstall` at — the tool built
//! by itself for x86_64 and aarch64 musl, static, and runnable on both.

use std::path::Path;
use std::process::Command;

use crate::common::*;

/// Fills a cargo-binstall template (`{ name }`, `{ version }`, …).
fn render(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (key, value) in vars {
        out = out.replace(&format!("{{ {key} }}"), value);
    }
    assert!(!out.contains('{'), "unfilled template: {out}");
    out
}

#[test]
fn release_archives_are_what_binstall_metadata_describes() {
    let manifest: toml::Table = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let package = manifest["package"].as_table().unwrap();
    let name = package["name"].as_str().unwrap();
    let version = package["version"].as_str().unwrap();
    let repository = package["repository"].as_str().unwrap();
    let binstall = package["metadata"]["binstall"].as_table().unwrap();
    assert_eq!(binstall["pkg-fmt"].as_str(), Some("tgz"));

    let out = tmp();
    let dist = out.path().join("dist");
    let script = run(Command::new("bash")
        .arg(repo().join("scripts/release.sh"))
        .arg(&dist)
        .env("CARGO_MICROIMAGE", env!("CARGO_BIN_EXE_cargo-microimage"))
        .env("CARGO_TARGET_DIR", shared_target())
        // Unoptimised: what is checked here (the archives' names and layout, the checksums,
        // static binaries for the right platform that run) does not depend on it, and
        // optimising the tool's 300 crates for two targets took 7 minutes of the suite.
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))
    .ok();
    let mut archives: Vec<String> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tar.gz"))
        .collect();
    archives.sort();
    run(Command::new("sha256sum")
        .arg("-c")
        .arg("SHA256SUMS")
        .current_dir(&dist))
    .ok();

    let mut expected = Vec::new();
    for (target, platform, runs_on) in [
        (
            "x86_64-unknown-linux-musl",
            "linux/amd64",
            "x86_64-unknown-linux-musl",
        ),
        (
            "aarch64-unknown-linux-musl",
            "linux/arm64",
            "aarch64-unknown-linux-musl",
        ),
        // What binstall asks for on a glibc host: the musl archive of the architecture.
        (
            "x86_64-unknown-linux-gnu",
            "linux/amd64",
            "x86_64-unknown-linux-musl",
        ),
        (
            "aarch64-unknown-linux-gnu",
            "linux/arm64",
            "aarch64-unknown-linux-musl",
        ),
    ] {
        let overrides = binstall
            .get("overrides")
            .and_then(|o| o.get(target))
            .and_then(|o| o.as_table());
        let key = |k: &str| {
            overrides
                .and_then(|o| o.get(k))
                .or_else(|| binstall.get(k))
                .and_then(|v| v.as_str())
                .unwrap()
                .to_string()
        };
        let vars = [
            ("name", name),
            ("version", version),
            ("repo", repository),
            ("target", target),
            ("bin", "cargo-microimage"),
            ("binary-ext", ""),
            ("archive-format", "tgz"),
        ];
        let url = render(&key("pkg-url"), &vars);
        let file = url.rsplit('/').next().unwrap().to_string();
        assert!(
            url.starts_with(&format!("{repository}/releases/download/v{version}/")),
            "{url}"
        );
        assert!(file.contains(runs_on), "{target}: {file}");
        let bin_dir = render(&key("bin-dir"), &vars);
        let archive = dist.join(&file);
        assert!(
            archive.is_file(),
            "{target}: no {file} in {archives:?}\n{}",
            script.stderr
        );
        let unpacked = out.path().join(target);
        std::fs::create_dir(&unpacked).unwrap();
        run(Command::new("tar")
            .arg("-xzf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked))
        .ok();
        let binary = unpacked.join(&bin_dir);
        let verified = run(tool().arg("verify").arg(&binary)).ok().stdout;
        assert!(
            verified.contains(&format!("static, {platform}")),
            "{verified}"
        );
        // It runs (arm64 through qemu-user binfmt) and is this version.
        let version_line = run(Command::new(&binary).arg("--version")).ok().stdout;
        assert_eq!(version_line.trim(), format!("cargo-microimage {version}"));
        let listing = run(Command::new("tar").arg("-tvzf").arg(&archive))
            .ok()
            .stdout;
        assert!(listing.contains(" 0/0 "), "numeric root owners: {listing}");
        expected.push(file);
    }
    expected.sort();
    expected.dedup();
    assert_eq!(archives, expected, "archives the metadata does not name");
    assert!(Path::new(&dist).join("SHA256SUMS").is_file());
}
