//! One connection to a registry: the protocol (HTTPS, or plain HTTP only for loopback
//! hosts or with `--insecure`, and only after a real probe), a retried ping, and
//! credentials from [`super::credentials`] — in as few requests as that takes.
//!
//! The ping is one `GET /v2/` of our own (with `reqwest`, the HTTP client oci-client is
//! built on, configured the same way): it decides HTTPS or HTTP, waits out a registry that
//! answers 5xx, and says whether the registry asks for authentication at all. oci-client
//! pings `/v2/` again before every request for which it holds credentials but no token —
//! which, for a registry that needs none, is every request. So for such a registry the
//! client is given no credentials; for one that does ask, oci-client authenticates once per
//! repository and operation and reuses the token (or basic credentials) after that.

use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference, RegistryOperation};

use super::errors::{chain, explain, Purpose};
use super::reference::is_loopback;
use super::retry::{answered, retry, transient};
use super::{credentials, ConnectOptions};
use crate::error::{Error, Result};
use crate::shell::Shell;

fn client(registry: &str, http: bool, options: &ConnectOptions) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut extra_root_certificates = Vec::new();
    if let Some(path) = &options.ca_file {
        let data = std::fs::read(path).map_err(|e| {
            Error::usage(format!("--ca-file `{}`: {e}", path.display()))
                .with_help("pass the path of a PEM file with the registry's CA certificate")
                .with_source(e)
        })?;
        extra_root_certificates.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(Client::new(ClientConfig {
        protocol: if http {
            ClientProtocol::HttpsExcept(vec![registry.to_string()])
        } else {
            ClientProtocol::Https
        },
        extra_root_certificates,
        // One POST and one streamed PUT per blob (the chunked default adds a PATCH per 4 MiB).
        use_monolithic_push: true,
        connect_timeout: Some(Duration::from_secs(20)),
        read_timeout: Some(Duration::from_secs(60)),
        ..ClientConfig::default()
    }))
}

/// The `reqwest` client for the ping: the same roots and timeouts as oci-client's.
fn http_client(options: &ConnectOptions) -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60));
    if let Some(path) = &options.ca_file {
        let data = std::fs::read(path).map_err(|e| {
            Error::usage(format!("--ca-file `{}`: {e}", path.display())).with_source(e)
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&data).map_err(|e| {
            Error::usage(format!(
                "--ca-file `{}` holds no PEM certificate: {e}",
                path.display()
            ))
            .with_help("pass the path of a PEM file with the registry's CA certificate")
        })?;
        builder = builder.tls_certs_merge(certs);
    }
    builder
        .build()
        .map_err(|e| Error::registry(format!("setting up HTTPS failed: {e}")))
}

/// What `GET /v2/` answered: whether the registry asks for authentication, and where a
/// bearer-token challenge sends the credentials (its `realm`).
struct Ping {
    challenge: bool,
    realm: Option<String>,
}

/// The `realm` of a `WWW-Authenticate: Bearer realm="…",…` challenge.
fn bearer_realm(header: &str) -> Option<String> {
    let rest = header.trim().strip_prefix("Bearer")?.trim_start();
    rest.split(',').find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        (key.trim().eq_ignore_ascii_case("realm"))
            .then(|| value.trim().trim_matches('"').to_string())
    })
}

/// Why credentials may not go to a token `realm` for a registry reached over `scheme`: a
/// realm over plain HTTP for a registry over HTTPS, or for a host that is not this machine
/// (they would cross the network in the clear). `None` when they may.
fn unsafe_realm(realm: &str, scheme: &str) -> Option<String> {
    let url = reqwest::Url::parse(realm).ok()?;
    match url.scheme() {
        "https" => None,
        "http" if scheme == "https" => Some(format!(
            "its token service `{realm}` is plain HTTP while the registry is HTTPS"
        )),
        "http" if !url.host_str().is_some_and(is_loopback) => Some(format!(
            "its token service `{realm}` is plain HTTP on another machine"
        )),
        "http" => None,
        other => Some(format!("its token service `{realm}` uses `{other}`")),
    }
}

/// `GET <scheme>://<registry>/v2/`. 5xx and 429 are errors (transient ones, so retried);
/// any other answer — 200, or 401 with a challenge — says how to go on.
async fn ping(
    http: &reqwest::Client,
    scheme: &str,
    registry: &str,
) -> std::result::Result<Ping, OciDistributionError> {
    let url = format!("{scheme}://{registry}/v2/");
    let answer = http.get(&url).send().await?;
    let status = answer.status();
    if status.is_server_error() || status.as_u16() == 429 {
        return Err(OciDistributionError::ServerError {
            code: status.as_u16(),
            url,
            message: String::new(),
        });
    }
    let challenge = answer.headers().get(reqwest::header::WWW_AUTHENTICATE);
    Ok(Ping {
        challenge: status.as_u16() == 401 && challenge.is_some(),
        realm: challenge
            .and_then(|h| h.to_str().ok())
            .and_then(bearer_realm),
    })
}

/// An authenticated client for one registry.
pub struct Connection {
    pub client: Client,
    /// For reading manifests from a registry that needs no credentials (see [`connect`]).
    /// (Made on first use: most pushes read no manifest, and each client costs loading
    /// the system's root certificates.)
    reader: Option<std::sync::OnceLock<Client>>,
    /// Plain requests (the ping, and manifest checks where no credentials are needed).
    http: reqwest::Client,
    scheme: &'static str,
    pub auth: oci_client::secrets::RegistryAuth,
    pub registry: String,
    credential: credentials::Found,
    options: ConnectOptions,
    purpose: Purpose,
    /// For the Retrying lines of reads.
    shell: Shell,
}

/// The most a config (or another small blob read whole) may hold.
pub const SMALL_BLOB_LIMIT: usize = 8 << 20;

impl Connection {
    /// A manifest as the registry stores it, and its digest.
    pub async fn pull_manifest_raw(
        &self,
        reference: &Reference,
        accept: &[&str],
    ) -> std::result::Result<(bytes::Bytes, String), OciDistributionError> {
        let client = match &self.reader {
            Some(reader) => match reader.get() {
                Some(client) => client,
                None => {
                    let made = client(&self.registry, self.scheme == "http", &self.options)
                        .map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))?;
                    reader.get_or_init(|| made)
                }
            },
            None => &self.client,
        };
        // Retried like every request (429, 5xx, connection trouble), as the README says.
        retry("reading a manifest", &self.shell, || {
            client.pull_manifest_raw(reference, &self.auth, accept)
        })
        .await
    }

    /// Whether the registry has the manifest `digest` in `repository` (false when that
    /// cannot be told). One `HEAD` where no credentials are needed; else oci-client's
    /// (a `GET` after a `HEAD` that says nothing).
    pub async fn has_manifest(&self, repository: &str, digest: &str) -> bool {
        if self.reader.is_some() {
            let url = format!(
                "{}://{}/v2/{repository}/manifests/{digest}",
                self.scheme, self.registry
            );
            return self
                .http
                .head(&url)
                .header(
                    reqwest::header::ACCEPT,
                    "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
                )
                .send()
                .await
                .is_ok_and(|r| r.status().as_u16() == 200);
        }
        let reference = Reference::with_digest(
            self.registry.clone(),
            repository.to_string(),
            digest.to_string(),
        );
        self.client
            .fetch_manifest_digest(&reference, &self.auth)
            .await
            .is_ok_and(|d| d == digest)
    }

    /// A small blob of `image`'s repository (a config), checked against `digest`: read a
    /// piece at a time, and refused as soon as it passes [`SMALL_BLOB_LIMIT`] (a registry
    /// that sends without end would otherwise take all the memory there is).
    pub async fn pull_checked(
        &self,
        image: &Reference,
        digest: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let mut stream = retry(&format!("reading the {what}"), &self.shell, || {
            self.client.pull_blob_stream(image, digest)
        })
        .await
        .map_err(|e| self.fail(e))?;
        let mut data: Vec<u8> = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk
                .map_err(|e| Error::registry(format!("reading the {what} {digest} failed: {e}")))?;
            if data.len() + chunk.len() > SMALL_BLOB_LIMIT {
                return Err(Error::registry(format!(
                    "the registry sent more than {} MiB for the {what} {digest}; a {what} is far smaller, so the read was stopped",
                    SMALL_BLOB_LIMIT >> 20
                )));
            }
            data.extend_from_slice(&chunk);
        }
        if crate::blob::sha256(&data).to_string() != digest {
            return Err(Error::registry(format!(
                "the registry sent a {what} that does not match {digest}"
            )));
        }
        Ok(data)
    }

    /// The one message a user sees for a client error.
    pub fn fail(&self, e: OciDistributionError) -> Error {
        explain(
            e,
            &self.registry,
            &self.credential,
            &self.options,
            &self.purpose,
        )
    }
}

/// A push connection being made in the background, for the repository a run will push to.
struct Early {
    registry: String,
    repository: String,
    options: ConnectOptions,
    handle: std::thread::JoinHandle<Result<Connection>>,
}

/// The connection [`start_early`] began, until [`connect`] takes it.
static EARLY: std::sync::Mutex<Option<Early>> = std::sync::Mutex::new(None);

/// Begins connecting to `target`'s registry for a push, on a thread of its own, while the
/// caller goes on with work that does not need the registry (compressing the layers): the
/// ping, the protocol and the authentication are then done when the push starts. The push's
/// own [`connect`] takes the result — success or the very error it would have met — if it
/// is for the same registry, repository and options; otherwise it is dropped unused.
pub fn start_early(target: &Reference, options: &ConnectOptions, shell: &Shell) {
    let registry = target.resolve_registry().to_string();
    let repository = target.repository().to_string();
    let (target, options_, shell) = (target.clone(), options.clone(), shell.clone());
    let handle = std::thread::spawn(move || {
        super::block_on(connect_now(
            &target,
            &options_,
            &shell,
            RegistryOperation::Push,
        ))
    });
    if let Ok(mut slot) = EARLY.lock() {
        *slot = Some(Early {
            registry,
            repository,
            options: options.clone(),
            handle,
        });
    }
}

/// The early connection for this push, if one was started for it.
fn take_early(
    target: &Reference,
    options: &ConnectOptions,
    operation: RegistryOperation,
) -> Option<Result<Connection>> {
    let early = EARLY.lock().ok()?.take()?;
    let fits = matches!(operation, RegistryOperation::Push)
        && early.registry == target.resolve_registry()
        && early.repository == target.repository()
        && &early.options == options;
    if !fits {
        return None;
    }
    Some(
        early
            .handle
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e)),
    )
}

/// Finds the protocol (HTTPS, or HTTP where allowed), waits for the registry to answer,
/// and authenticates for `operation` — or takes the connection [`start_early`] made for it.
pub async fn connect(
    target: &Reference,
    options: &ConnectOptions,
    shell: &Shell,
    operation: RegistryOperation,
) -> Result<Connection> {
    if let Some(early) = take_early(target, options, operation) {
        return early;
    }
    connect_now(target, options, shell, operation).await
}

async fn connect_now(
    target: &Reference,
    options: &ConnectOptions,
    shell: &Shell,
    operation: RegistryOperation,
) -> Result<Connection> {
    let registry = target.resolve_registry().to_string();
    if !is_loopback(&registry) && options.insecure {
        shell.warn(format!("--insecure: plain HTTP is allowed for {registry}"));
    }
    let credential = credentials::lookup(&registry)?;
    let auth = credential.credential.to_auth();
    let purpose = Purpose {
        repository: target.repository().to_string(),
        operation,
    };
    let fail = |e| explain(e, &registry, &credential, options, &purpose);

    // HTTPS first. Plain HTTP only for loopback hosts or with --insecure, and only when the
    // HTTPS attempt got no HTTP answer at all (a plain-HTTP server) — never because a
    // certificate did not verify — and HTTP then does answer.
    let http = http_client(options)?;
    let mut scheme = "https";
    let mut first = ping(&http, scheme, &registry).await;
    if let Err(e) = &first {
        let may_downgrade = is_loopback(&registry) || options.insecure;
        let certificate = chain(e).to_ascii_lowercase().contains("certificate");
        if may_downgrade && !answered(e) && !certificate {
            let plain = ping(&http, "http", &registry).await;
            if plain.as_ref().map_or_else(answered, |_| true) {
                shell.verbose("Using", format!("plain HTTP for {registry}"));
                scheme = "http";
                first = plain;
            }
        }
    }
    // Until the registry gives a real answer (oci-client would take a 503 on `/v2/` for "no
    // auth needed"): the first attempt counts, only failures are tried again.
    let answer = match first {
        Ok(answer) => answer,
        Err(e) if !transient(&e) => return Err(fail(e)),
        Err(_) => retry("contacting the registry", shell, || {
            ping(&http, scheme, &registry)
        })
        .await
        .map_err(fail)?,
    };
    let client = client(&registry, scheme == "http", options)?;
    // Manifests are read through oci-client calls that store the credentials they are given,
    // after which it pings before every request; for a registry that asks for none, those
    // reads go through a client of their own so the pushing one stays without.
    // Credentials go to a token service only over a connection as safe as the registry's.
    if let (Some(realm), false) = (
        &answer.realm,
        credential.credential == credentials::Credential::Anonymous,
    ) {
        if let Some(why) = unsafe_realm(realm, scheme) {
            return Err(Error::registry(format!(
                "the credentials for {registry} ({}) were not sent: {why}",
                credential.source
            ))
            .with_help("the registry's token service must be HTTPS; if this registry is yours, fix its auth.token.realm"));
        }
    }
    let reader = if answer.challenge {
        // Once per operation, before requests go out concurrently (each would authenticate
        // on its own otherwise); blob checks are pulls, uploads pushes.
        let operations: &[RegistryOperation] = match operation {
            RegistryOperation::Push => &[RegistryOperation::Push, RegistryOperation::Pull],
            RegistryOperation::Pull => &[RegistryOperation::Pull],
        };
        for op in operations {
            retry("authenticating", shell, || client.auth(target, &auth, *op))
                .await
                .map_err(fail)?;
        }
        None
    } else {
        Some(std::sync::OnceLock::new())
    };

    Ok(Connection {
        client,
        reader,
        http,
        scheme,
        auth,
        registry,
        credential,
        options: options.clone(),
        purpose,
        shell: shell.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realms_are_read_from_bearer_challenges() {
        assert_eq!(
            bearer_realm(r#"Bearer realm="https://auth.example/token",service="registry""#)
                .as_deref(),
            Some("https://auth.example/token")
        );
        assert_eq!(
            bearer_realm(r#"Bearer service="s", Realm="http://127.0.0.1:9/t""#).as_deref(),
            Some("http://127.0.0.1:9/t")
        );
        assert_eq!(bearer_realm(r#"Basic realm="registry""#), None);
    }

    #[test]
    fn credentials_go_only_to_realms_as_safe_as_the_registry() {
        assert!(unsafe_realm("https://auth.example/token", "https").is_none());
        assert!(unsafe_realm("http://auth.example/token", "https").is_some());
        assert!(unsafe_realm("http://127.0.0.1:9/token", "https").is_some());
        assert!(unsafe_realm("http://127.0.0.1:9/token", "http").is_none());
        assert!(unsafe_realm("http://[::1]:9/token", "http").is_none());
        assert!(unsafe_realm("http://auth.example/token", "http").is_some());
        assert!(unsafe_realm("ftp://auth.example/token", "https").is_some());
    }
}
