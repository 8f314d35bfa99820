//! Registry credentials (DESIGN §7), looked up in this order: the docker config
//! (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`: `auths`, `credHelpers`,
//! `credsStore`), then podman's auth file (`$REGISTRY_AUTH_FILE`, else
//! `$XDG_RUNTIME_DIR/containers/auth.json`), else anonymous — through the
//! `docker_credential` crate.
//!
//! Secrets live in [`Secret`], whose `Debug` and `Display` never show them; nothing here
//! prints or logs a credential.

use std::fmt;

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

/// The places looked at, for error messages.
pub fn places() -> String {
    let docker = std::env::var_os("DOCKER_CONFIG")
        .map(|d| format!("{}/config.json", std::path::Path::new(&d).display()))
        .unwrap_or_else(|| "~/.docker/config.json".to_string());
    let podman = std::env::var_os("REGISTRY_AUTH_FILE")
        .map(|p| std::path::PathBuf::from(p).display().to_string())
        .unwrap_or_else(|| "$XDG_RUNTIME_DIR/containers/auth.json".to_string());
    format!("{docker} (auths, credHelpers, credsStore), then {podman}")
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

/// A credential source of `docker_credential`.
type Lookup = fn(&str) -> std::result::Result<DockerCredential, CredentialRetrievalError>;

/// Looks up the credential for `registry` (`host[:port]`).
pub fn lookup(registry: &str) -> Result<Found> {
    let lookups: [(&str, Lookup); 2] = [
        ("the docker config", docker_credential::get_credential),
        (
            "podman's auth file",
            docker_credential::get_podman_credential,
        ),
    ];
    for (source, get) in lookups {
        for key in keys(registry) {
            match get(&key) {
                Ok(c) => {
                    return Ok(Found {
                        credential: convert(c),
                        source: format!("{source}, entry `{key}`"),
                    })
                }
                Err(
                    CredentialRetrievalError::NoCredentialConfigured
                    | CredentialRetrievalError::ConfigNotFound
                    | CredentialRetrievalError::ConfigReadError,
                ) => {}
                Err(CredentialRetrievalError::HelperFailure { helper, .. }) => {
                    // Its output is not shown: a failing helper may still print secrets.
                    return Err(Error::registry(format!(
                        "the credential helper `docker-credential-{helper}` failed for {registry} ({source})"
                    ))
                    .with_help(format!("run `docker-credential-{helper} get` with `{registry}` on stdin to see why")));
                }
                Err(other) => {
                    return Err(Error::registry(format!(
                        "reading credentials for {registry} from {source} failed: {other}"
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
