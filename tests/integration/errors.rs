//! Every error path a user can reach before anything is built: one clear message naming
//! the subject and the next step, the right exit status (1 failure, 2 usage), nothing
//! written.

use crate::common::*;

fn build_in(dir: &std::path::Path) -> std::process::Command {
    let mut cmd = tool();
    cmd.current_dir(dir).args(["microimage", "build"]);
    cmd
}

#[test]
fn unknown_bin_lists_the_binaries() {
    let c = fixture("hello");
    let out = run(build_in(c.path()).args(["--bin", "nope"]))
        .fails_with(2, "no binary target named `nope`");
    assert!(
        out.stderr
            .contains("available binaries: `hello`, `hello-admin`"),
        "{}",
        out.stderr
    );
    assert!(!c.path().join("target").exists());
}

#[test]
fn several_binaries_without_bin_is_an_error_listing_them() {
    let c = fixture("hello");
    let out = run(&mut build_in(c.path())).fails_with(2, "has several binaries");
    assert!(
        out.stderr
            .contains("pass --bin with one of: `hello`, `hello-admin`"),
        "{}",
        out.stderr
    );
}

#[test]
fn unknown_package_lists_members() {
    let c = fixture("hello");
    run(build_in(c.path()).args(["-p", "other"])).fails_with(2, "package `other` is not a member");
}

#[test]
fn bad_env_syntax() {
    let c = fixture("hello");
    let out =
        run(build_in(c.path()).args(["--bin", "hello", "--env", "NOVALUE"])).fails_with(2, "--env");
    assert!(
        out.stderr.contains("`NOVALUE` is not KEY=VALUE"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_expose_syntax() {
    let c = fixture("hello");
    let out = run(build_in(c.path()).args(["--bin", "hello", "--expose", "80/icmp"]))
        .fails_with(2, "--expose");
    assert!(
        out.stderr.contains("`80/icmp` is not a port to expose"),
        "{}",
        out.stderr
    );
    run(build_in(c.path()).args(["--bin", "hello", "--expose", "99999"]))
        .fails_with(2, "`99999` is not a port");
}

#[test]
fn unknown_platform_lists_the_supported_ones() {
    let c = fixture("hello");
    let out = run(build_in(c.path()).args(["--bin", "hello", "--platform", "linux/mips64le"]))
        .fails_with(2, "unsupported platform `linux/mips64le`");
    assert!(
        out.stderr.contains("linux/amd64, linux/arm64"),
        "{}",
        out.stderr
    );
}

#[test]
fn gnu_target_is_refused() {
    let c = fixture("hello");
    run(build_in(c.path()).args(["--bin", "hello", "--target", "x86_64-unknown-linux-gnu"]))
        .fails_with(2, "only musl targets give fully static binaries");
}

#[test]
fn missing_manifest() {
    let t = tmp();
    let missing = t.path().join("nowhere/Cargo.toml");
    run(tool()
        .args(["microimage", "build", "--manifest-path"])
        .arg(&missing))
    .fails_with(
        2,
        &format!("manifest path `{}` does not exist", missing.display()),
    );
}

#[test]
fn outside_a_cargo_project() {
    let t = tmp();
    let out = run(&mut build_in(t.path())).fails_with(1, "could not find `Cargo.toml`");
    assert!(out.stderr.contains("--manifest-path"), "{}", out.stderr);
}

#[test]
fn bad_tag() {
    let c = fixture("hello");
    run(build_in(c.path()).args(["--bin", "hello", "--tag", "Hello:1"]))
        .fails_with(2, "invalid image name `Hello:1`");
}

#[test]
fn bad_source_date_epoch_env() {
    let c = fixture("hello");
    run(build_in(c.path())
        .args(["--bin", "hello"])
        .env("SOURCE_DATE_EPOCH", "yesterday"))
    .fails_with(2, "SOURCE_DATE_EPOCH");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    run(tool().args(["microimage", "build", "--no-such-flag"])).fails_with(2, "--no-such-flag");
}

#[test]
fn output_refuses_to_replace_a_directory_that_is_not_an_image() {
    let c = fixture("hello");
    let precious = tmp();
    std::fs::write(precious.path().join("keep.txt"), "mine").unwrap();
    let target = tmp();
    run(build_in(c.path())
        .env("CARGO_TARGET_DIR", target.path())
        .args(["--bin", "hello", "-o"])
        .arg(precious.path()))
    .fails_with(1, "is not an OCI image layout");
    assert_eq!(
        std::fs::read_to_string(precious.path().join("keep.txt")).unwrap(),
        "mine"
    );
}

#[test]
fn inspect_of_something_that_is_not_an_image() {
    let t = tmp();
    run(tool().args(["microimage", "inspect"]).arg(t.path())).fails_with(1, "is not an OCI layout");
    run(tool()
        .args(["microimage", "inspect"])
        .arg(t.path().join("gone")))
    .fails_with(1, "does not exist");
    // A relative path that does not exist is a path, not a Docker Hub image.
    run(tool()
        .current_dir(t.path())
        .args(["microimage", "inspect", "target/microimage/app"]))
    .fails_with(1, "`target/microimage/app` does not exist");
}

#[test]
fn works_when_called_directly_and_defaults_to_build() {
    // `cargo-microimage --bin nope` (no `microimage` word, no subcommand) is a build.
    let c = fixture("hello");
    run(tool().current_dir(c.path()).args(["--bin", "nope"]))
        .fails_with(2, "no binary target named `nope`");
    let help = run(tool().arg("--help")).ok();
    assert!(
        help.stdout.contains("Usage: cargo microimage"),
        "{}",
        help.stdout
    );
}

/// What a new user met on other people's projects, read as they would read it: the
/// message says what happened, the help says what to do, each said once.
#[test]
fn first_contact_messages_say_what_to_do() {
    let c = fixture("hello");
    let t = tmp();
    let target = t.path().join("target");
    let manifest = c.path().join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let build = |extra: &[&str]| {
        run(build_in(c.path())
            .env("CARGO_TARGET_DIR", &target)
            .args(["--bin", "hello", "-o"])
            .arg(t.path().join("image"))
            .args(extra))
    };

    // A crate that needs a newer rustc: cargo's refusal ended in our generic failure line.
    std::fs::write(
        &manifest,
        text.replace(
            "edition = \"2021\"",
            "edition = \"2021\"\nrust-version = \"1.999\"",
        ),
    )
    .unwrap();
    let out = build(&[]).fails_with(1, "is not supported by the following package");
    assert!(
        out.stderr.contains(
            "help: hello 1.2.3 needs rustc 1.999.0 (its `rust-version`), and this is rustc 1."
        ) && out.stderr.contains("`rustup update`")
            && out.stderr.contains("`--ignore-rust-version`"),
        "{}",
        out.stderr
    );
    build(&["--ignore-rust-version"]).ok();
    std::fs::write(&manifest, &text).unwrap();

    // resolve prints YAML: JSON records would corrupt it.
    run(tool().args([
        "microimage",
        "--message-format",
        "json",
        "resolve",
        "-f",
        "x.yaml",
    ]))
    .fails_with(2, "--message-format json would mix records into it");

    // An include outside the package: "include" was said twice, with no help.
    let assets = tempfile::tempdir_in(c.path().parent().unwrap()).unwrap();
    std::fs::write(assets.path().join("app.toml"), "port = 8080\n").unwrap();
    let outside = format!(
        "../{}/app.toml",
        assets.path().file_name().unwrap().to_string_lossy()
    );
    let out = build(&["--include", &outside]).fails_with(2, "lies outside");
    assert_eq!(out.stderr.matches("include").count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "help: give it a destination: `{outside}:/etc/app/app.toml`"
        )),
        "{}",
        out.stderr
    );
    // With a destination it goes in; from an absolute path too, and to the same digest.
    let relative = build(&["--include", &format!("{outside}:/etc/app/app.toml")]).ok();
    let absolute = assets.path().join("app.toml");
    let absolute = build(&[
        "--include",
        &format!("{}:/etc/app/app.toml", absolute.display()),
    ])
    .ok();
    assert_eq!(relative.stdout, absolute.stdout);
    let report = run(tool()
        .args(["microimage", "inspect", "--message-format", "json"])
        .arg(t.path().join("image")))
    .ok();
    let json: serde_json::Value =
        serde_json::from_str(report.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(
        json["platforms"][0]["layers"].as_array().unwrap().len(),
        3,
        "{}",
        report.stdout
    );
}
