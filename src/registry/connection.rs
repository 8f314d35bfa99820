//! One authenticated connection to a registry: the protocol (HTTPS, or plain HTTP only for
//! loopback hosts or with `--insecure`, and only after a real probe), a retried ping before
//! authenticating, and credentials from [`super::credentials`].

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

/// sha256 of nothing: a digest to probe with.
const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An authenticated client for one registry.
pub struct Connection {
    pub client: Client,
    pub auth: oci_client::secrets::RegistryAuth,
    pub registry: String,
    credential: credentials::Found,
    options: ConnectOptions,
    purpose: Purpose,
}

impl Connection {
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

/// Finds the protocol (HTTPS, or HTTP where allowed), waits for the registry to answer,
/// and authenticates for `operation`.
pub async fn connect(
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
    // Any digest will do: the question is only whether and how the registry answers.
    let probe_digest = EMPTY_DIGEST.to_string();
    let mut client = client(&registry, false, options)?;
    if let Err(e) = client.blob_exists(target, &probe_digest).await {
        let may_downgrade = is_loopback(&registry) || options.insecure;
        let certificate = chain(&e).to_ascii_lowercase().contains("certificate");
        if may_downgrade && !answered(&e) && !certificate {
            let http = self::client(&registry, true, options)?;
            let works = match http.blob_exists(target, &probe_digest).await {
                Ok(_) => true,
                Err(e) => answered(&e),
            };
            if works {
                shell.verbose("Using", format!("plain HTTP for {registry}"));
                client = http;
            }
        }
    }
    // oci-client's auth takes a 503 on `/v2/` for "no auth needed", so first wait, with
    // retries, until the registry gives a real answer.
    retry("contacting the registry", shell, || async {
        match client.blob_exists(target, &probe_digest).await {
            Err(e) if !answered(&e) || transient(&e) => Err(e),
            _ => Ok(()),
        }
    })
    .await
    .map_err(fail)?;
    let operations: &[RegistryOperation] = match operation {
        RegistryOperation::Push => &[RegistryOperation::Push, RegistryOperation::Pull],
        RegistryOperation::Pull => &[RegistryOperation::Pull],
    };
    for op in operations {
        retry("authenticating", shell, || client.auth(target, &auth, *op))
            .await
            .map_err(fail)?;
    }

    Ok(Connection {
        client,
        auth,
        registry,
        credential,
        options: options.clone(),
        purpose,
    })
}
