//! OpenSSL (tests/fixtures/tlsprobe depends on `openssl`): without a vendored OpenSSL the
//! build stops before compiling, with one message naming the way in and the fixes; with
//! `--features openssl/vendored` (what that message suggests) the image runs on amd64 and
//! arm64 and makes a verified TLS handshake against a local `openssl s_server`.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;

#[test]
fn openssl_without_vendored_is_refused_before_anything_is_built() {
    let c = fixture("tlsprobe");
    let target = c.path().join("target");
    let out = run(tool()
        .current_dir(c.path())
        .env("CARGO_TARGET_DIR", &target)
        .args(["microimage", "build", "--locked", "--platform", "all"]))
    .fails_with(1, "`openssl-sys` is in the dependency graph for");
    assert!(
        out.stderr
            .contains("(tlsprobe → openssl → openssl-sys) without a vendored OpenSSL"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("--features openssl/vendored"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("rustls"), "{}", out.stderr);
    assert_eq!(out.stderr.matches("error:").count(), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("Compiling"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // Nothing was compiled or written.
    let compiled = std::fs::read_dir(&target).map(|d| d.count()).unwrap_or(0);
    assert_eq!(compiled, 0, "cargo ran: {}", target.display());
}

#[test]
fn vendored_openssl_makes_a_verified_tls_handshake_on_amd64_and_arm64() {
    let c = fixture("tlsprobe");
    let certs = tmp();
    server_certificate(certs.path());
    let layout = c.path().join("image");
    // The image's CA bundle is the test CA, so OpenSSL verifies the server through
    // SSL_CERT_FILE, which the image sets.
    run(tool()
        .current_dir(c.path())
        // OpenSSL's C unoptimised (later flags win over openssl-src's -O2), the Rust at
        // opt-level 1: a handshake is what is checked, and compiling OpenSSL twice at -O2
        // was 40 s of CPU per platform more.
        .env("CFLAGS_x86_64_unknown_linux_musl", "-O0")
        .env("CFLAGS_aarch64_unknown_linux_musl", "-O0")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
        .args([
            "microimage",
            "build",
            "--locked",
            "--features",
            "openssl/vendored",
        ])
        .args(["--platform", "all", "--ca-certs"])
        .arg(certs.path().join("ca.pem"))
        .arg("-o")
        .arg(&layout))
    .ok();
    let port = free_port();
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-cert", "cert.pem", "-key", "key.pem"])
        .current_dir(certs.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let listening = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let podman = Podman::new();
    let results: Vec<(String, Run)> = ["linux/amd64", "linux/arm64"]
        .iter()
        .map(|platform| {
            let out = podman.run_oci(
                &layout,
                "0.1.0",
                &["--network", "host", "--platform", platform],
                &[&format!("127.0.0.1:{port}")],
            );
            (platform.to_string(), out)
        })
        .collect();
    let _ = server.kill();
    let _ = server.wait();
    assert!(listening, "openssl s_server did not start");
    for (platform, out) in results {
        let out = out.ok();
        assert!(
            out.stdout.contains("handshake ok: TLSv1.3") && out.stdout.contains("OpenSSL 3."),
            "{platform}: {}",
            out.stdout
        );
        assert!(
            out.stdout.contains("HTTP/1.0 200 ok"),
            "{platform}: {}",
            out.stdout
        );
    }
}
