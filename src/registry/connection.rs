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

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::{Client, Reference, RegistryOperation};

use super::errors::{chain, explain, Purpose};
use super::limits::{read_body, refused, Pace, Timeouts, MANIFEST_LIMIT};
use super::reference::is_loopback;
use super::retry::{answered, retry, transient};
use super::token::{self, Bearer};
use super::{credentials, ConnectOptions};
use crate::error::{Error, Result};
use crate::shell::Shell;

fn client(
    registry: &str,
    http: bool,
    options: &ConnectOptions,
    timeouts: Timeouts,
) -> Result<Client> {
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
        connect_timeout: Some(timeouts.timeout),
        read_timeout: Some(timeouts.timeout),
        // Tokens handed over by `token` are replaced by its renewal before they expire; an
        // opaque one stays in oci-client's cache until then (its default is 60 s).
        default_token_expiration_secs: 24 * 60 * 60,
        ..ClientConfig::default()
    }))
}

/// The `reqwest` client for our own requests (the ping, manifests, referrers lists): the
/// same roots and timeouts as oci-client's.
fn http_client(options: &ConnectOptions, timeouts: Timeouts) -> Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(timeouts.timeout)
        .read_timeout(timeouts.timeout);
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

/// What `GET /v2/` answered: whether the registry asks for authentication, and its
/// bearer-token challenge if that is how (where the token service is).
struct Ping {
    challenge: bool,
    bearer: Option<Bearer>,
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
        bearer: challenge
            .and_then(|h| h.to_str().ok())
            .and_then(Bearer::parse),
    })
}

/// An authenticated client for one registry.
pub struct Connection {
    pub client: Client,
    /// Whether the registry asked for authentication (see [`connect`]): our own requests
    /// then carry a token or the credentials, else nothing.
    needs_auth: bool,
    /// The registry's token service, when it asks for bearer tokens.
    bearer: Option<Bearer>,
    /// The pull token of each repository our own requests read (`None`: the registry takes
    /// the credentials themselves, or none).
    tokens: Tokens,
    /// Keeps the connection's token fresh while it lives.
    _renewal: Option<token::Renewal>,
    /// What the connection's token is for.
    target: Reference,
    operation: RegistryOperation,
    /// Our own requests (the ping, manifests, referrers lists, manifest checks).
    http: reqwest::Client,
    scheme: &'static str,
    pub auth: oci_client::secrets::RegistryAuth,
    pub registry: String,
    credential: credentials::Found,
    options: ConnectOptions,
    purpose: Purpose,
    timeouts: Timeouts,
    /// For the Retrying lines of reads.
    shell: Shell,
}

pub use super::limits::SMALL_BLOB_LIMIT;

type Tokens = std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Option<String>>>>;

/// The status and body of a registry's answer to [`Connection::get_document`].
struct Answer {
    status: reqwest::StatusCode,
    body: bytes::Bytes,
}

impl Answer {
    /// The body of a 200; any other status as the error oci-client would give for it.
    fn ok(self, url: &str) -> std::result::Result<bytes::Bytes, OciDistributionError> {
        let status = self.status;
        match status.as_u16() {
            200 => Ok(self.body),
            401 => Err(OciDistributionError::UnauthorizedError {
                url: url.to_string(),
            }),
            400..=499 => match serde_json::from_slice(&self.body) {
                Ok(envelope) => Err(OciDistributionError::RegistryError {
                    envelope,
                    url: url.to_string(),
                }),
                Err(_) => Err(OciDistributionError::ServerError {
                    code: status.as_u16(),
                    url: url.to_string(),
                    message: String::from_utf8_lossy(&self.body).into_owned(),
                }),
            },
            code if status.is_success() => Err(refused(format!(
                "the registry answered {code} where 200 was expected ({url})"
            ))),
            code => Err(OciDistributionError::ServerError {
                code,
                url: url.to_string(),
                message: String::from_utf8_lossy(&self.body).into_owned(),
            }),
        }
    }
}

impl Connection {
    /// A manifest as the registry stores it, and its digest: at most [`MANIFEST_LIMIT`]
    /// bytes, checked against the reference's digest when it has one. (Our own request:
    /// oci-client reads a manifest whole, however long the body.)
    pub async fn pull_manifest_raw(
        &self,
        reference: &Reference,
        accept: &[&str],
    ) -> std::result::Result<(bytes::Bytes, String), OciDistributionError> {
        let at = reference
            .digest()
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let url = self.url(reference.repository(), &format!("manifests/{at}"));
        // Retried like every request (429, 5xx, connection trouble), as docs/publishing.md says.
        let body = retry("reading a manifest", &self.shell, || async {
            self.get_document(reference, &url, accept, MANIFEST_LIMIT, "a manifest")
                .await?
                .ok(&url)
        })
        .await?;
        let digest = crate::blob::sha256(&body).to_string();
        if let Some(wanted) = reference.digest() {
            if wanted != digest {
                return Err(refused(format!(
                    "the registry sent a manifest with digest {digest} for {wanted}"
                )));
            }
        }
        Ok((body, digest))
    }

    /// The referrers of the manifest at `subject` (its digest): the referrers API's index,
    /// or, where the registry has no such API (404), the index under the `sha256-<hex>`
    /// tag; an empty list when neither exists. At most [`MANIFEST_LIMIT`] bytes.
    pub async fn pull_referrers(
        &self,
        subject: &Reference,
    ) -> std::result::Result<oci_client::manifest::OciImageIndex, OciDistributionError> {
        self.list_referrers(subject).await.map(|(index, _)| index)
    }

    /// [`Connection::pull_referrers`], and whether the registry keeps the list itself (it
    /// has the referrers API) or a client keeps it under the `sha256-<hex>` tag.
    pub async fn list_referrers(
        &self,
        subject: &Reference,
    ) -> std::result::Result<
        (oci_client::manifest::OciImageIndex, ReferrersKept),
        OciDistributionError,
    > {
        let digest = subject.digest().unwrap_or_default();
        let url = self.url(subject.repository(), &format!("referrers/{digest}"));
        let answer = retry("listing referrers", &self.shell, || async {
            let answer = self
                .get_document(
                    subject,
                    &url,
                    &["application/vnd.oci.image.index.v1+json"],
                    MANIFEST_LIMIT,
                    "a referrers list",
                )
                .await?;
            match answer.status.as_u16() {
                404 => Ok(None),
                _ => answer.ok(&url).map(Some),
            }
        })
        .await?;
        let (body, kept) = match answer {
            Some(body) => (body, ReferrersKept::ByRegistry),
            None => {
                let tagged = Reference::with_tag(
                    subject.registry().to_string(),
                    subject.repository().to_string(),
                    digest.replacen(':', "-", 1),
                );
                match self
                    .pull_manifest_raw(&tagged, &["application/vnd.oci.image.index.v1+json"])
                    .await
                {
                    Ok((body, _)) => (body, ReferrersKept::UnderTag),
                    Err(e) if super::errors::is_not_found(&e) => {
                        let empty = oci_client::manifest::OciImageIndex {
                            schema_version: 2,
                            media_type: Some("application/vnd.oci.image.index.v1+json".to_string()),
                            manifests: Vec::new(),
                            artifact_type: None,
                            annotations: None,
                        };
                        return Ok((empty, ReferrersKept::UnderTag));
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let index = serde_json::from_slice(&body)
            .map_err(|e| OciDistributionError::ManifestParsingError(e.to_string()))?;
        Ok((index, kept))
    }

    /// `<scheme>://<registry>/v2/<repository>/<rest>`.
    fn url(&self, repository: &str, rest: &str) -> String {
        format!("{}://{}/v2/{repository}/{rest}", self.scheme, self.registry)
    }

    /// One `GET` of a document read whole: authorized as oci-client would (a pull token of
    /// the repository, or the credentials), once more with a new token after a 401 (the
    /// old one may have expired), and bounded in size and time.
    async fn get_document(
        &self,
        reference: &Reference,
        url: &str,
        accept: &[&str],
        limit: usize,
        what: &str,
    ) -> std::result::Result<Answer, OciDistributionError> {
        let deadline = self.timeouts.document();
        let work = async {
            let mut renew = false;
            loop {
                let mut request = self
                    .http
                    .get(url)
                    .header(reqwest::header::ACCEPT, accept.join(", "));
                if self.needs_auth {
                    request = self.authorize(request, reference, renew).await?;
                }
                let response = request.send().await?;
                let status = response.status();
                if status.as_u16() == 401 && self.needs_auth && !renew {
                    renew = true;
                    continue;
                }
                let body = read_body(response, limit, what, self.timeouts).await?;
                return Ok(Answer { status, body });
            }
        };
        tokio::time::timeout(deadline, work)
            .await
            .unwrap_or_else(|_| {
                Err(refused(format!(
                    "the registry did not send {what} whole within {} s",
                    deadline.as_secs()
                )))
            })
    }

    /// `request` with the repository's pull token (asked for once, or again if `renew`),
    /// or the credentials where the registry takes them as they are.
    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        reference: &Reference,
        renew: bool,
    ) -> std::result::Result<reqwest::RequestBuilder, OciDistributionError> {
        let repository = reference.repository().to_string();
        let known = match self.tokens.lock() {
            Ok(tokens) if !renew => tokens.get(&repository).cloned(),
            _ => None,
        };
        let token = match known {
            Some(token) => token,
            None => {
                let token = self.token(reference).await?;
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(repository, token.clone());
                }
                token
            }
        };
        Ok(match (token, &self.auth) {
            (Some(token), _) => {
                let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| {
                        refused(
                            "the registry's token service sent a token that is not a valid header value"
                                .to_string(),
                        )
                    })?;
                request.header(reqwest::header::AUTHORIZATION, value)
            }
            (None, oci_client::secrets::RegistryAuth::Basic(user, password)) => {
                request.basic_auth(user, Some(password))
            }
            (None, _) => request,
        })
    }

    /// Makes the connection's token also cover pulls from `repositories` (of its
    /// registry): what a cross-repository mount from them needs on registries that check
    /// scopes (Distribution, Docker Hub, GHCR refuse the mount with 401 otherwise), and
    /// what reading a blob from them needs. One token request, renewed with the same
    /// scopes; nothing without a token service (HTTP Basic covers every repository).
    pub async fn allow_reading(
        &mut self,
        repositories: &[String],
    ) -> std::result::Result<(), OciDistributionError> {
        let Some(bearer) = self.bearer.clone().filter(|_| !repositories.is_empty()) else {
            return Ok(());
        };
        let scope = token::Scope {
            http: self.http.clone(),
            bearer,
            target: self.target.clone(),
            operation: self.operation,
            also_pull: repositories.to_vec(),
            auth: self.auth.clone(),
            timeouts: self.timeouts,
        };
        let issued = retry("authenticating", &self.shell, || scope.fetch()).await?;
        scope.hand_over(&self.client, &issued.token).await;
        self._renewal = Some(token::Renewal::start(
            self.client.clone(),
            scope,
            &issued,
            self.tokens.clone(),
        ));
        Ok(())
    }

    /// A pull token for `reference`'s repository: from the registry's token service by our
    /// own bounded request; `None` where the registry takes credentials as they are.
    async fn token(
        &self,
        reference: &Reference,
    ) -> std::result::Result<Option<String>, OciDistributionError> {
        match &self.bearer {
            Some(bearer) => token::fetch(
                &self.http,
                bearer,
                reference.repository(),
                RegistryOperation::Pull,
                &[],
                &self.auth,
                self.timeouts,
            )
            .await
            .map(|issued| Some(issued.token)),
            None => {
                authenticate(
                    &self.client,
                    reference,
                    &self.auth,
                    RegistryOperation::Pull,
                    self.timeouts,
                )
                .await
            }
        }
    }

    /// Whether the registry has the manifest `digest` in `repository` (false when that
    /// cannot be told): one `HEAD` of ours, with the connection's token or credentials
    /// where the registry asks for them (oci-client's check reads a whole manifest when the
    /// answer lacks a digest header).
    pub async fn has_manifest(&self, repository: &str, digest: &str) -> bool {
        let url = self.url(repository, &format!("manifests/{digest}"));
        let mut request = self.http.head(&url).header(
            reqwest::header::ACCEPT,
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        );
        if self.needs_auth {
            let reference = Reference::with_digest(
                self.registry.clone(),
                repository.to_string(),
                digest.to_string(),
            );
            match self.authorize(request, &reference, false).await {
                Ok(authorized) => request = authorized,
                Err(_) => return false,
            }
        }
        let answer = tokio::time::timeout(self.timeouts.document(), request.send()).await;
        matches!(answer, Ok(Ok(r)) if r.status().as_u16() == 200)
    }

    /// A small blob of `image`'s repository (a config), checked against `digest`: read a
    /// piece at a time, refused as soon as it passes [`SMALL_BLOB_LIMIT`] (a registry that
    /// sends without end would otherwise take all the memory there is), and within the
    /// time bounds of [`super::limits`].
    pub async fn pull_checked(
        &self,
        image: &Reference,
        digest: &str,
        what: &str,
    ) -> Result<Vec<u8>> {
        use futures_util::StreamExt;
        let deadline = self.timeouts.document();
        let work = async {
            let mut stream = retry(&format!("reading the {what}"), &self.shell, || {
                self.client.pull_blob_stream(image, digest)
            })
            .await
            .map_err(|e| self.fail(e))?;
            let mut data: Vec<u8> = Vec::new();
            let mut pace = Pace::new(self.timeouts);
            let slow = |why: String| {
                Error::registry(format!(
                    "the registry {} is too slow sending the {what} {digest}: {why}",
                    self.registry
                ))
            };
            while let Some(chunk) = pace.wait(stream.next()).await.map_err(slow)? {
                let chunk = chunk.map_err(|e| {
                    Error::registry(format!("reading the {what} {digest} failed: {e}"))
                })?;
                if data.len() + chunk.len() > SMALL_BLOB_LIMIT {
                    return Err(Error::registry(format!(
                        "the registry sent more than {} MiB for the {what} {digest}; a {what} is far smaller, so the read was stopped",
                        SMALL_BLOB_LIMIT >> 20
                    )));
                }
                data.extend_from_slice(&chunk);
                pace.got(chunk.len()).map_err(slow)?;
            }
            Ok(data)
        };
        let data = tokio::time::timeout(deadline, work).await.map_err(|_| {
            Error::registry(format!(
                "the registry {} did not send the {what} {digest} whole within {} s",
                self.registry,
                deadline.as_secs()
            ))
            .with_help("check the registry, or allow more time with CARGO_HTTP_TIMEOUT (seconds)")
        })??;
        if crate::blob::sha256(&data).to_string() != digest {
            return Err(Error::registry(format!(
                "the registry sent a {what} that does not match {digest}"
            )));
        }
        Ok(data)
    }

    /// The time bounds of this connection's requests.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
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

/// oci-client's authentication for `operation` (a token from the registry's token service,
/// kept by the client for its requests; returned when there is one), within the time a
/// document has: oci-client reads the token service's answer itself.
async fn authenticate(
    client: &Client,
    target: &Reference,
    auth: &oci_client::secrets::RegistryAuth,
    operation: RegistryOperation,
    timeouts: Timeouts,
) -> std::result::Result<Option<String>, OciDistributionError> {
    let deadline = timeouts.document();
    tokio::time::timeout(deadline, client.auth(target, auth, operation))
        .await
        .unwrap_or_else(|_| {
            Err(refused(format!(
                "the registry's token service did not answer within {} s",
                deadline.as_secs()
            )))
        })
}

/// Who keeps a manifest's list of referrers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrersKept {
    /// The registry, which has the referrers API: a manifest pushed with a `subject` is
    /// listed by itself.
    ByRegistry,
    /// Clients, under the referrers tag schema's `sha256-<hex>` tag.
    UnderTag,
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
    let timeouts = super::limits::Timeouts::from_env()?;
    let http = http_client(options, timeouts)?;
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
    let client = client(&registry, scheme == "http", options, timeouts)?;
    // oci-client gets credentials only when the registry asks for them (`auth` below):
    // holding some, it pings before every request that has no token. Our own requests
    // (manifests, referrers lists) carry them, or a pull token, only then too.
    // Credentials go to a token service only over a connection as safe as the registry's.
    if let (Some(bearer), false) = (
        &answer.bearer,
        credential.credential == credentials::Credential::Anonymous,
    ) {
        if let Some(why) = unsafe_realm(&bearer.realm, scheme) {
            return Err(Error::registry(format!(
                "the credentials for {registry} ({}) were not sent: {why}",
                credential.source
            ))
            .with_help("the registry's token service must be HTTPS; if this registry is yours, fix its auth.token.realm"));
        }
    }
    let mut tokens = std::collections::HashMap::new();
    let mut renewal = None;
    // Once per connection, before requests go out concurrently (each would authenticate
    // on its own otherwise); blob checks are pulls, uploads pushes.
    let operations = token::operations(operation);
    let tokens_shared: Tokens = Default::default();
    match (&answer.bearer, answer.challenge) {
        (Some(bearer), true) => {
            // One token for all the connection does (a push's scope includes pull), asked
            // for by us (see `token`) and handed to oci-client.
            let scope = token::Scope {
                http: http.clone(),
                bearer: bearer.clone(),
                target: target.clone(),
                operation,
                also_pull: Vec::new(),
                auth: auth.clone(),
                timeouts,
            };
            let issued = retry("authenticating", shell, || scope.fetch())
                .await
                .map_err(fail)?;
            scope.hand_over(&client, &issued.token).await;
            tokens.insert(target.repository().to_string(), Some(issued.token.clone()));
            renewal = Some(token::Renewal::start(
                client.clone(),
                scope,
                &issued,
                tokens_shared.clone(),
            ));
        }
        (None, true) => {
            // Not a token service (HTTP Basic): oci-client sends the credentials.
            for op in operations {
                let token = retry("authenticating", shell, || {
                    authenticate(&client, target, &auth, *op, timeouts)
                })
                .await
                .map_err(fail)?;
                if matches!(op, RegistryOperation::Pull) {
                    tokens.insert(target.repository().to_string(), token);
                }
            }
        }
        _ => {}
    }
    if let Ok(mut shared) = tokens_shared.lock() {
        shared.extend(tokens);
    }

    Ok(Connection {
        client,
        needs_auth: answer.challenge,
        bearer: answer.bearer.filter(|_| answer.challenge),
        tokens: tokens_shared,
        _renewal: renewal,
        target: target.clone(),
        operation,
        http,
        scheme,
        auth,
        registry,
        credential,
        options: options.clone(),
        purpose,
        timeouts,
        shell: shell.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
