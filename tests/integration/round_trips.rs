//! Round trips (issue: push in as few requests as skopeo): the registry's own access log
//! counts the requests of a push, ours against skopeo's for the same image, on a plain
//! registry, with htpasswd basic auth and with bearer tokens — a first push to an empty
//! repository and a second one of the unchanged image.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;
use crate::registry::{basic, docker_config, pusher, Registry, Setup};

/// The requests in the registry's access log (`METHOD path status`).
fn requests(registry: &Registry) -> Vec<String> {
    registry
        .log()
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - "))
        .filter_map(|l| l.split('"').nth(1).map(String::from))
        .collect()
}

/// The example binary, built once by the shared example build.
fn example_binary() -> PathBuf {
    example_layout();
    shared_target().join("x86_64-unknown-linux-musl/release/example-app")
}

/// A user and password, when the registry wants them.
type Creds = Option<(&'static str, &'static str)>;

#[test]
fn a_push_makes_no_more_requests_than_skopeo_plus_the_index() {
    let binary = example_binary();
    // The same image on disk, for skopeo to copy (its one platform manifest, as skopeo
    // copies an image; ours pushes that and the index).
    let t = tmp();
    let layout = t.path().join("layout");
    run(tool()
        .current_dir(t.path())
        .args([
            "microimage",
            "pack",
            "--sbom",
            "none",
            "--provenance",
            "none",
        ])
        .arg(&binary)
        .arg("-o")
        .arg(&layout))
    .ok();
    let setups: [(&str, Setup, Creds); 3] = [
        ("plain", Setup::default(), None),
        (
            "htpasswd",
            Setup {
                user: Some(("ci", "pw-basic")),
                ..Default::default()
            },
            Some(("ci", "pw-basic")),
        ),
        (
            "token",
            Setup {
                token: Some(("tok-user", "tok-pass")),
                ..Default::default()
            },
            Some(("tok-user", "tok-pass")),
        ),
    ];
    for (name, setup, creds) in setups {
        let registry = Registry::start(setup);
        let home = tmp();
        if let Some((u, p)) = creds {
            docker_config(
                home.path(),
                &serde_json::json!({"auths": {registry.host(): {"auth": basic(u, p)}}}),
            );
        }
        let ours = |repo: &str| {
            let before = requests(&registry).len();
            run(pusher(home.path())
                .current_dir(t.path())
                .args([
                    "microimage",
                    "pack",
                    "--sbom",
                    "none",
                    "--provenance",
                    "none",
                ])
                .arg(&binary)
                .arg("--push")
                .arg(format!("{}/{repo}:1", registry.host())))
            .ok();
            requests(&registry)[before..].to_vec()
        };
        let skopeo = |repo: &str| {
            let before = requests(&registry).len();
            let mut cmd = Command::new("skopeo");
            cmd.args(["copy", "-q", "--dest-tls-verify=false"]);
            if let Some((u, p)) = creds {
                cmd.arg(format!("--dest-creds={u}:{p}"));
            }
            cmd.arg(format!("oci:{}:latest", layout.display()))
                .arg(format!("docker://{}/{repo}:1", registry.host()));
            run(&mut cmd).ok();
            requests(&registry)[before..].to_vec()
        };
        let (ours_first, ours_again) = (ours("ours"), ours("ours"));
        let (theirs_first, theirs_again) = (skopeo("theirs"), skopeo("theirs"));
        assert!(
            ours_first.len() <= theirs_first.len() + 1,
            "{name}, first push: {} requests, skopeo {}:\n{ours_first:#?}\n{theirs_first:#?}",
            ours_first.len(),
            theirs_first.len()
        );
        assert!(
            ours_again.len() <= theirs_again.len() + 1,
            "{name}, second push: {} requests, skopeo {}:\n{ours_again:#?}\n{theirs_again:#?}",
            ours_again.len(),
            theirs_again.len()
        );
        // Nothing but existence checks and the manifests the second time.
        assert!(
            ours_again
                .iter()
                .all(|r| !r.starts_with("POST ") && !r.contains("/blobs/uploads/")),
            "{ours_again:#?}"
        );
        // One ping for the run. With a token service, one token for the connection (asked
        // for by us, no ping of its own); with HTTP Basic, oci-client's one per operation
        // (checks are pulls, uploads pushes); never one per request.
        let pings = ours_first
            .iter()
            .filter(|r| r.starts_with("GET /v2/ "))
            .count();
        let most = if name == "htpasswd" { 3 } else { 1 };
        assert!(pings <= most, "{name}: {pings} pings: {ours_first:#?}");
    }
}

/// tests/support/delay_proxy.py in front of a registry: every request delayed, and logged.
struct DelayProxy {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl DelayProxy {
    fn start(upstream: &Registry, delay_ms: u32) -> DelayProxy {
        DelayProxy::start_with(upstream, delay_ms, &[])
    }

    /// With `extra` arguments for the proxy (`oci-subject`).
    fn start_with(upstream: &Registry, delay_ms: u32, extra: &[&str]) -> DelayProxy {
        let dir = tmp();
        let log = dir.path().join("requests.log");
        let port = free_port();
        let upstream_port = upstream.host().rsplit_once(':').unwrap().1.to_string();
        let child = Command::new("python3")
            .arg(repo().join("tests/support/delay_proxy.py"))
            .args([&port.to_string(), &upstream_port, &delay_ms.to_string()])
            .arg(&log)
            .args(extra)
            .spawn()
            .unwrap();
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed().as_secs() < 10,
                "the delay proxy did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        DelayProxy {
            child,
            port,
            log,
            _dir: dir,
        }
    }

    fn requests(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_a_slow_network_the_request_count_holds() {
    let binary = example_binary();
    let t = tmp();
    let layout = t.path().join("layout");
    run(tool()
        .current_dir(t.path())
        .args([
            "microimage",
            "pack",
            "--sbom",
            "none",
            "--provenance",
            "none",
        ])
        .arg(&binary)
        .arg("-o")
        .arg(&layout))
    .ok();
    let registry = Registry::start(Setup::default());
    let proxy = DelayProxy::start(&registry, 20);
    let host = format!("127.0.0.1:{}", proxy.port);
    let home = tmp();
    let before = proxy.requests();
    let out = run(pusher(home.path())
        .current_dir(t.path())
        .args([
            "microimage",
            "pack",
            "--sbom",
            "none",
            "--provenance",
            "none",
        ])
        .arg(&binary)
        .arg("--push")
        .arg(format!("{host}/ours:1")))
    .ok();
    let ours = proxy.requests() - before;
    assert!(
        out.stdout.contains(&format!("{host}/ours:1@sha256:")),
        "{}",
        out.stdout
    );
    let before = proxy.requests();
    run(Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{host}/theirs:1")))
    .ok();
    let theirs = proxy.requests() - before;
    assert!(
        ours <= theirs + 1,
        "through a 20 ms proxy: {ours} requests, skopeo {theirs}"
    );
    // What went through is what the registry holds.
    let digest = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{}/ours:1", registry.host()),
        ],
    );
    assert!(digest.contains("application/vnd.oci.image.index.v1+json"));
}

/// A registry that answers manifest PUTs with `OCI-Subject` but has no referrers API (404
/// on `/referrers/`) still gets the referrers tag: support is decided by asking
/// `/referrers/`, not by the header (ECR has sent it without the API).
#[test]
fn an_oci_subject_header_without_a_referrers_api_still_gets_the_fallback_tag() {
    let binary = example_binary();
    let registry = Registry::start(Setup::default());
    let proxy = DelayProxy::start_with(&registry, 0, &["oci-subject"]);
    let host = format!("127.0.0.1:{}", proxy.port);
    let home = tmp();
    let out = run(pusher(home.path())
        .args([
            "microimage",
            "pack",
            "--sbom",
            "none",
            "--message-format",
            "json",
        ])
        .arg(&binary)
        .arg("--push")
        .arg(format!("{host}/sub:1")))
    .ok();
    assert_eq!(
        listed_artifact_types(&registry.host(), "sub", &out.stdout),
        ["application/vnd.in-toto+json"]
    );
}

/// The artifact types listed under the referrers tag of the platform manifest that a
/// `--message-format json` push to `host/repository` reported, as skopeo reads them.
fn listed_artifact_types(host: &str, repository: &str, stdout: &str) -> Vec<String> {
    let manifest = first_json(stdout)["platforms"][0]["manifest_digest"]
        .as_str()
        .unwrap()
        .replace(':', "-");
    let listed = external(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{host}/{repository}:{manifest}"),
        ],
    );
    let index: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let mut types: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["artifactType"].as_str().unwrap().to_string())
        .collect();
    types.sort();
    types
}

/// The requests a first push of example-app's image makes with its default SBOM and
/// provenance, to a fresh registry without a referrers API (the number the README and
/// the book's Speed chapter give): the SBOM's and provenance's blobs and manifests ride with the image's, and their
/// listing under the referrers tag is one read of the API, one of the tag and one write.
const FIRST_PUSH_WITH_ATTACHMENTS: usize = 23;

#[test]
fn a_push_with_sbom_and_provenance_makes_the_documented_number_of_requests() {
    let binary = example_binary();
    let registry = Registry::start(Setup::default());
    let home = tmp();
    let t = tmp();
    let push = || {
        let before = requests(&registry).len();
        let out = run(pusher(home.path())
            .current_dir(t.path())
            .args(["microimage", "pack", "--message-format", "json"])
            .arg(&binary)
            .arg("--push")
            .arg(format!("{}/attached:1", registry.host())))
        .ok();
        (requests(&registry)[before..].to_vec(), out)
    };
    let (first, out) = push();
    assert_eq!(first.len(), FIRST_PUSH_WITH_ATTACHMENTS, "{first:#?}");
    // No blob but a layer is asked about before it is sent; every blob is sent once.
    let heads: Vec<&String> = first.iter().filter(|r| r.starts_with("HEAD ")).collect();
    assert_eq!(heads.len(), 3, "the index and the two layers: {heads:#?}");
    let puts = first
        .iter()
        .filter(|r| r.starts_with("PUT ") && r.contains("/blobs/uploads/"))
        .count();
    assert_eq!(
        puts, 6,
        "two layers, the config, SBOM, provenance, empty config"
    );
    // Both attachments are listed for the platform manifest.
    assert_eq!(
        listed_artifact_types(&registry.host(), "attached", &out.stdout),
        ["application/spdx+json", "application/vnd.in-toto+json"]
    );
    // The same image again: the index is there and lists both, so nothing is sent but the
    // tag: the ping, the index check, the two reads of the list, the index by tag.
    let (again, _) = push();
    assert_eq!(again.len(), 5, "{again:#?}");
    assert!(again.iter().all(|r| !r.contains("/blobs/")), "{again:#?}");
    let documented = format!("{FIRST_PUSH_WITH_ATTACHMENTS} requests");
    for doc in ["README.md", "docs/speed.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        assert!(
            text.contains(&documented),
            "{doc} does not say `{documented}`"
        );
    }
}
