//! Registry credentials (DESIGN §7), looked up in this order: the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths`, `credHelpers`,
//! `credsStore`), then podman's auth file (`$REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`), else anonymous — through the
//! `docker_credential` crate.
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
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&data) {
            return Err(Error::registry(format!(
                "{source} `{}` is not valid JSON: {e}",
                path.display()
            ))
            .with_help("fix the file (or move it away to push without credentials)"));
        }
        let shown = path.display();
        for key in keys(registry) {
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
