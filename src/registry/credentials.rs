//! Registry credentials (DESIGN §7), looked up in this order: the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths`, `credHelpers`,
//! `credsStore`), then podman's auth file (`$REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`), else anonymous. `auths` entries are read by
//! the `docker_credential` crate; credential helpers are run here ([`run_helper`]), with a
//! deadline and a bound on what they print, which that crate's call has not (a helper that
//! never exits would hang the tool).
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show them; nothing here
//! prints or logs a credential.

use std::fmt;
use std::path::{Path, PathBuf};

use docker_credential::{CredentialRetrievalError, DockerCredential};
use oci_client::secrets::RegistryAuth;

use crate::error::{Error, Result};

/// A string that is never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

/// What to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Anonymous,
    Basic {
        username: String,
        password: Secret,
    },
    /// A docker `identitytoken`, used as a bearer token.
    Token(Secret),
}

impl Credential {
    pub fn to_auth(&self) -> RegistryAuth {
        match self {
            Credential::Anonymous => RegistryAuth::Anonymous,
            Credential::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.0.clone())
            }
            Credential::Token(t) => RegistryAuth::Bearer(t.0.clone()),
        }
    }
}

/// A credential and where it was found (for messages; never the secret itself).
#[derive(Debug, Clone)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

/// The docker config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".docker")))
        .map(|d| d.join("config.json"))
}

/// podman's auth file: `$REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/auth.json`
/// if it is there, else `~/.config/containers/auth.json` (podman-login(1)).
fn podman_auth_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("REGISTRY_AUTH_FILE") {
        return Some(PathBuf::from(file));
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(|d| Path::new(&d).join("containers/auth.json"))
        .filter(|p| p.is_file());
    runtime.or_else(|| {
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".config/containers/auth.json"))
    })
}

/// The places looked at, for error messages.
pub fn places() -> String {
    let show = |p: Option<PathBuf>, default: &str| {
        p.map_or(default.to_string(), |p| p.display().to_string())
    };
    format!(
        "{} (auths, credHelpers, credsStore), then {}",
        show(docker_config(), "~/.docker/config.json"),
        show(podman_auth_file(), "$XDG_RUNTIME_DIR/containers/auth.json")
    )
}

/// The keys a registry may be stored under.
fn keys(registry: &str) -> Vec<String> {
    let mut keys = vec![registry.to_string()];
    if matches!(
        registry,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    ) {
        keys.push("https://index.docker.io/v1/".into());
    }
    keys
}

fn convert(c: DockerCredential) -> Credential {
    match c {
        DockerCredential::UsernamePassword(username, password) => Credential::Basic {
            username,
            password: Secret(password),
        },
        DockerCredential::IdentityToken(t) => Credential::Token(Secret(t)),
    }
}

/// How long a credential helper may take.
const HELPER_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);
/// The most a credential helper's answer may hold.
const HELPER_OUTPUT_LIMIT: u64 = 1 << 20;

/// The credential helper a docker config names for `key`: `credHelpers.<key>`, else
/// `credsStore` (docker's order).
fn helper_for(config: &serde_json::Value, key: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .or_else(|| config.get("credsStore"))
        .and_then(|h| h.as_str())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Runs `docker-credential-<name> get` with `server` on stdin (the docker credential
/// helper protocol), within [`HELPER_DEADLINE`] and [`HELPER_OUTPUT_LIMIT`]. Its output is
/// never shown: a failing helper may still print secrets.
fn run_helper(name: &str, server: &str, named_in: &str) -> Result<Credential> {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let program = format!("docker-credential-{name}");
    let failed = |why: String| {
        Error::registry(format!(
            "the credential helper `{program}` (named in {named_in}) {why}"
        ))
    };
    let mut child = match Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(failed("is not installed: it is not on PATH".to_string()).with_help(
                format!("install `{program}`, or remove `{name}` from {named_in} to use the credentials in its `auths`"),
            ))
        }
        Err(e) => return Err(failed(format!("could not be run: {e}"))),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let stdout = child.stdout.take().expect("stdout is piped");
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.take(HELPER_OUTPUT_LIMIT + 1).read_to_end(&mut out);
        out
    });
    let started = std::time::Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < HELPER_DEADLINE => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "did not answer within {} s for {server}, so it was stopped",
                    HELPER_DEADLINE.as_secs()
                ))
                .with_help(format!(
                    "run `{program} get` with `{server}` on stdin to see why"
                )));
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        return Err(failed(format!("failed for {server}")).with_help(format!(
            "run `{program} get` with `{server}` on stdin to see why"
        )));
    }
    if out.len() as u64 > HELPER_OUTPUT_LIMIT {
        return Err(failed(format!(
            "answered more than {} MiB for {server}",
            HELPER_OUTPUT_LIMIT >> 20
        )));
    }
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Answer {
        username: String,
        secret: String,
    }
    let answer: Answer = serde_json::from_slice(&out)
        .map_err(|_| failed(format!("gave an answer for {server} that is not its JSON")))?;
    // The helper protocol's way to say "an identity token".
    Ok(if answer.username == "<token>" {
        Credential::Token(Secret(answer.secret))
    } else {
        Credential::Basic {
            username: answer.username,
            password: Secret(answer.secret),
        }
    })
}

/// Looks up the credential for `registry` (`host[:port]`): the docker config, then
/// podman's auth file. A file that is not there is skipped; one that cannot be read or is
/// not valid JSON is an error naming it — never a silent anonymous push.
pub fn lookup(registry: &str) -> Result<Found> {
    let files = [
        ("the docker config", docker_config()),
        ("podman's auth file", podman_auth_file()),
    ];
    for (source, path) in files {
        let Some(path) = path else { continue };
        let data =
            match std::fs::read(&path) {
                Ok(d) => d,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::registry(format!(
                    "reading {source} `{}` failed: {e}",
                    path.display()
                ))
                .with_help(
                    "fix its permissions, or point DOCKER_CONFIG / REGISTRY_AUTH_FILE elsewhere",
                )
                .with_source(e)),
            };
        let config = match serde_json::from_slice::<serde_json::Value>(&data) {
            Ok(config) => config,
            Err(e) => {
                return Err(Error::registry(format!(
                    "{source} `{}` is not valid JSON: {e}",
                    path.display()
                ))
                .with_help("fix the file (or move it away to push without credentials)"))
            }
        };
        let shown = path.display();
        for key in keys(registry) {
            if let Some(helper) = helper_for(&config, &key) {
                let named_in = format!("{source} `{shown}`");
                return Ok(Found {
                    credential: run_helper(&helper, &key, &named_in)?,
                    source: format!("{named_in}, credential helper `{helper}` for `{key}`"),
                });
            }
            match docker_credential::get_credential_from_reader(&data[..], &key) {
                Ok(c) => {
                    return Ok(Found {
                        credential: convert(c),
                        source: format!("{source} `{shown}`, entry `{key}`"),
                    })
                }
                Err(CredentialRetrievalError::NoCredentialConfigured) => {}
                Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                    // Its output is not shown: a failing helper may still print secrets.
                    return Err(Error::registry(format!(
                        "the credential helper `{helper}` failed for {registry} (named in {source} `{shown}`)"
                    ))
                    .with_help(format!("run `{helper} get` with `{registry}` on stdin to see why")));
                }
                Err(other) => {
                    return Err(Error::registry(format!(
                        "reading credentials for {registry} from {source} `{shown}` failed: {other}"
                    ))
                    .with_help(format!("check {}", places())));
                }
            }
        }
    }
    Ok(Found {
        credential: Credential::Anonymous,
        source: "none found (anonymous)".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_not_shown() {
        let c = Credential::Basic {
            username: "u".into(),
            password: Secret("hunter2".into()),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        let f = Found {
            credential: Credential::Token(Secret("tok-123".into())),
            source: "x".into(),
        };
        assert!(!format!("{f:?}").contains("tok-123"));
    }
}
