//! The registry sink: pushes an [`ImageSet`] with the `oci-client` crate (OCI distribution
//! spec), so the registry stores exactly the bytes — and digests — that were built.
//!
//! Order (DESIGN §7): every blob first — a HEAD says whether the registry has it; if not,
//! a cross-repository mount is tried from repositories of the same registry this machine
//! pushed it to before (a small blob-location cache, as containers/image keeps), else it is
//! uploaded — then each platform manifest by digest, then the index by tag, then every
//! extra tag. No tag ever points at an image whose blobs are not all there, and a re-run
//! uploads only what is missing.
//!
//! Transient failures (connection errors, timeouts, 429, 5xx) are retried with capped
//! exponential backoff and jitter; authentication failures stop at once. A registry's
//! `Retry-After` header is not seen: oci-client (0.18, the newest release) keeps the status
//! and body of an error response but not its headers, so the backoff is ours alone.

pub mod credentials;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::{Client, Reference, RegistryOperation};

use crate::blob::Blob;
use crate::error::{Error, IoContext, Result};
use crate::image::ImageSet;
use crate::shell::{human_size, Shell};

/// Registry connection options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// Allow plain HTTP for any registry (otherwise only for loopback hosts).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
}

/// Where an image was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository:tag` as given.
    pub reference: String,
    /// Extra tags pushed after it.
    pub tags: Vec<String>,
    /// Blobs uploaded, mounted, and already present.
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
}

/// Parses a push destination, `registry/repository:tag`.
pub fn parse_reference(s: &str) -> Result<Reference> {
    let image = crate::image::ImageName::parse(s)?;
    let last = s.rsplit('/').next().unwrap_or(s);
    if !last.contains(':') || s.contains('@') {
        // A missing tag would silently mean `latest`; a push names its tag.
        return Err(Error::usage(format!("`{s}` names no tag"))
            .with_help(format!("push to `{s}:TAG`, e.g. `{s}:1.0.0`")));
    }
    let has_registry = image
        .repository
        .split_once('/')
        .is_some_and(|(first, _)| first.contains(['.', ':']) || first == "localhost");
    if !has_registry {
        return Err(
            Error::usage(format!("`{s}` names no registry")).with_help(format!(
                "push to a full reference such as `ghcr.io/you/{}` or `127.0.0.1:5000/{}`",
                image, image
            )),
        );
    }
    s.parse::<Reference>()
        .map_err(|e| Error::usage(format!("`{s}` is not an image reference: {e}")))
}

/// Pushes `set` to `target` (and then each of `tags` in the same repository).
pub fn push(
    set: &ImageSet,
    target: &Reference,
    tags: &[String],
    options: &PushOptions,
    shell: &Shell,
) -> Result<Pushed> {
    block_on(push_async(set, target, tags, options, shell))
}

/// Runs registry work to completion on a single-threaded runtime (oci-client is async; the
/// rest of the tool is not).
pub(crate) fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::new(format!("starting the async runtime failed: {e}")))?
        .block_on(work)
}

fn is_loopback(registry: &str) -> bool {
    let host = registry
        .strip_prefix('[')
        .and_then(|r| r.split_once(']').map(|(h, _)| h))
        .unwrap_or_else(|| registry.rsplit_once(':').map_or(registry, |(h, _)| h));
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn client(registry: &str, http: bool, options: &PushOptions) -> Result<Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut extra_root_certificates = Vec::new();
    if let Some(path) = &options.ca_file {
        let data = std::fs::read(path).path_context("reading --ca-file", path)?;
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

const ATTEMPTS: u32 = 5;
/// Blobs transferred at once.
const CONCURRENT_BLOBS: usize = 4;

/// The error and all its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Whether an error is worth retrying: connection trouble, timeouts, 429 and 5xx — but not
/// a certificate that does not verify, which no retry fixes.
fn transient(e: &OciDistributionError) -> bool {
    if chain(e).to_ascii_lowercase().contains("certificate") {
        return false;
    }
    match e {
        OciDistributionError::RequestError(r) => {
            r.is_connect()
                || r.is_timeout()
                || r.is_body()
                || r.is_request()
                || r.status()
                    .is_some_and(|s| s.as_u16() == 429 || s.is_server_error())
        }
        OciDistributionError::ServerError { code, .. } => *code == 429 || *code >= 500,
        OciDistributionError::RegistryError { envelope, .. } => envelope
            .errors
            .iter()
            .any(|e| matches!(e.code, OciErrorCode::Toomanyrequests)),
        OciDistributionError::IoError(_) => true,
        _ => false,
    }
}

/// Whether the server answered with an HTTP status (so the protocol itself works).
fn answered(e: &OciDistributionError) -> bool {
    match e {
        OciDistributionError::RequestError(r) => r.status().is_some(),
        OciDistributionError::ServerError { .. }
        | OciDistributionError::RegistryError { .. }
        | OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => true,
        _ => false,
    }
}

/// The wait before attempt `attempt + 1`: 250 ms doubling per attempt, capped at
/// [`LONGEST_BACKOFF`], plus up to half of that again as jitter (so parallel uploads that
/// failed together do not return together).
fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(250u64 << attempt.min(8)).min(LONGEST_BACKOFF);
    base + jitter(base / 2)
}

/// The cap of one backoff step (before jitter).
const LONGEST_BACKOFF: Duration = Duration::from_secs(8);

/// A pseudo-random wait in `0..=most` (the clock's nanoseconds are random enough here).
fn jitter(most: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let most = u64::try_from(most.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(nanos % (most + 1))
}

/// Runs `op` until it succeeds, fails for good, or runs out of attempts.
async fn retry<T, F, Fut>(
    what: &str,
    shell: &Shell,
    mut op: F,
) -> std::result::Result<T, OciDistributionError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, OciDistributionError>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) && attempt + 1 < ATTEMPTS => {
                let wait = backoff(attempt);
                shell.status(
                    "Retrying",
                    format!("{what} in {:.1} s ({e})", wait.as_secs_f64()),
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What the registry answered, when it did: the HTTP status (if known) and the errors of
/// its JSON error envelope (code as on the wire, e.g. `NAME_INVALID`, and message).
fn answer(e: &OciDistributionError) -> (Option<u16>, Vec<(String, String)>) {
    let codes = |envelope: &OciEnvelope| {
        envelope
            .errors
            .iter()
            .map(|x| {
                let code = serde_json::to_value(&x.code)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default();
                (code, x.message.clone())
            })
            .collect()
    };
    match e {
        OciDistributionError::RequestError(r) => (r.status().map(|s| s.as_u16()), Vec::new()),
        OciDistributionError::ServerError { code, message, .. } => (
            Some(*code),
            serde_json::from_str::<OciEnvelope>(message)
                .map(|env| codes(&env))
                .unwrap_or_default(),
        ),
        OciDistributionError::RegistryError { envelope, .. } => (None, codes(envelope)),
        OciDistributionError::UnauthorizedError { .. } => (Some(401), Vec::new()),
        _ => (None, Vec::new()),
    }
}

/// What a connection was opened for, to say what was refused.
#[derive(Debug, Clone)]
struct Purpose {
    repository: String,
    operation: RegistryOperation,
}

/// Turns a client error into the one message a user sees.
fn explain(
    e: OciDistributionError,
    registry: &str,
    credential: &credentials::Found,
    options: &PushOptions,
    purpose: &Purpose,
) -> Error {
    let chain = chain(&e);
    let (status, codes) = answer(&e);
    let has = |wanted: &[&str]| codes.iter().any(|(c, _)| wanted.contains(&c.as_str()));
    if status == Some(429) || has(&["TOOMANYREQUESTS"]) {
        // Only reached once the retries are used up (429 is transient).
        return Error::new(format!(
            "the registry {registry} is rate-limiting this client: it still answered 429 Too Many Requests after {ATTEMPTS} attempts"
        ))
        .with_help("wait, then run the same command again: blobs already pushed are not uploaded twice");
    }
    let said = codes
        .iter()
        .map(|(_, m)| m.as_str())
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let repository = &purpose.repository;
    let doing = match purpose.operation {
        RegistryOperation::Push => format!("push to `{repository}`"),
        RegistryOperation::Pull => format!("read `{repository}`"),
    };
    let denied = matches!(e, OciDistributionError::AuthenticationFailure(_))
        || matches!(status, Some(401 | 403))
        || has(&["UNAUTHORIZED", "DENIED"]);
    if denied {
        let who = match credential.credential {
            credentials::Credential::Anonymous => "anonymous access".to_string(),
            _ => format!("the credentials from {}", credential.source),
        };
        return Error::new(format!(
            "the registry {registry} refused to let {who} {doing}: not authorized"
        ))
        .with_help(format!(
            "log in (`podman login {registry}` or `docker login {registry}`) or fix the credentials (looked in {}); \
             if they are right, check that they may {doing}: registries usually allow pushes only under your own user or organisation",
            credentials::places()
        ));
    }
    if has(&["NAME_INVALID"]) {
        return Error::new(format!(
            "the registry {registry} rejected the repository name `{repository}`: {said}"
        ))
        .with_help("push to a name this registry accepts (its rules may be stricter than the OCI grammar: lowercase, a namespace you own, a length limit)");
    }
    if has(&["NAME_UNKNOWN"]) {
        return Error::new(format!(
            "the registry {registry} has no repository `{repository}`: {said}"
        ))
        .with_help("create the repository first (some registries, such as ECR or a Harbor project, do not create one on push), or push to one that exists");
    }
    let lower = chain.to_ascii_lowercase();
    if status.is_none() && (lower.contains("certificate") || lower.contains("tls")) {
        let help = if options.ca_file.is_some() {
            "check that --ca-file holds the CA that signed the registry's certificate".to_string()
        } else {
            "if the registry uses a private CA, pass it with --ca-file PATH".to_string()
        };
        return Error::new(format!("the TLS connection to {registry} failed: {chain}"))
            .with_help(help);
    }
    if let OciDistributionError::RequestError(r) = &e {
        if r.is_connect() || r.is_timeout() {
            return Error::new(format!("cannot reach the registry {registry}: {chain}"))
                .with_help("check that the registry is running and the address is right, then run the same command again");
        }
    }
    let (verb, help) = match purpose.operation {
        RegistryOperation::Push => (
            "pushing to",
            "run the same command again: blobs already pushed are not uploaded twice",
        ),
        RegistryOperation::Pull => (
            "reading from",
            "check the reference, then run the same command again",
        ),
    };
    let what = if said.is_empty() { chain } else { said };
    Error::new(format!("{verb} {registry} failed: {what}")).with_help(help)
}

/// sha256 of nothing: a digest to probe with.
const EMPTY_DIGEST: &str =
    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// An authenticated client for one registry.
pub(crate) struct Connection {
    pub client: Client,
    pub auth: oci_client::secrets::RegistryAuth,
    pub registry: String,
    credential: credentials::Found,
    options: PushOptions,
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
pub(crate) async fn connect(
    target: &Reference,
    options: &PushOptions,
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

async fn push_async(
    set: &ImageSet,
    target: &Reference,
    tags: &[String],
    options: &PushOptions,
    shell: &Shell,
) -> Result<Pushed> {
    let started = std::time::Instant::now();
    let conn = connect(target, options, shell, RegistryOperation::Push).await?;
    let (client, registry) = (&conn.client, conn.registry.clone());
    let fail = |e: OciDistributionError| conn.fail(e);

    // Every layer and config, each once.
    let mut blobs: BTreeMap<String, &Blob> = BTreeMap::new();
    for image in &set.images {
        blobs.insert(image.config.digest.to_string(), &image.config);
        for l in &image.layers {
            blobs.insert(l.blob.digest.to_string(), &l.blob);
        }
    }
    let total: u64 = blobs.values().map(|b| b.size()).sum();
    shell.status(
        "Pushing",
        format!(
            "{} ({} blobs, {}) to {registry}",
            target,
            blobs.len(),
            human_size(total)
        ),
    );
    let progress = shell.progress("Uploading", total);
    let mut cache = BlobCache::load();
    let repository = target.repository().to_string();
    /// What happened to one blob.
    enum Sent {
        Present,
        Mounted,
        Uploaded,
    }
    // Blobs go up concurrently (bounded), like skopeo's copies; each is HEAD-checked, then
    // mounted from a known repository, then uploaded.
    let send = |digest: &String, blob: &Blob, sources: Vec<String>| {
        let (client, registry, progress) = (client, registry.clone(), &progress);
        let (digest, size) = (digest.clone(), blob.size());
        let data = bytes::Bytes::from_owner(blob.data.clone());
        async move {
            let exists = retry("checking a blob", shell, || {
                client.blob_exists(target, &digest)
            })
            .await?;
            let mut sent = Sent::Present;
            if !exists {
                sent = Sent::Uploaded;
                for source in sources {
                    let from =
                        Reference::with_tag(registry.clone(), source.clone(), "latest".into());
                    if client.mount_blob(target, &from, &digest).await.is_ok() {
                        shell.verbose("Mounted", format!("{digest} from {source}"));
                        sent = Sent::Mounted;
                        break;
                    }
                }
                if matches!(sent, Sent::Uploaded) {
                    // Counted as the HTTP body is read; an attempt that fails takes its
                    // count back before the next one starts.
                    let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
                    retry("uploading a blob", shell, || {
                        progress.dec(counted.swap(0, std::sync::atomic::Ordering::Relaxed));
                        let body = upload_body(data.clone(), progress, counted.clone());
                        client.push_blob_stream(target, body, &digest, Some(size))
                    })
                    .await?;
                    progress.inc(size - counted.load(std::sync::atomic::Ordering::Relaxed));
                    return Ok::<_, OciDistributionError>((digest, sent));
                }
            }
            progress.inc(size);
            Ok::<_, OciDistributionError>((digest, sent))
        }
    };
    use futures_util::stream::{self, StreamExt};
    let jobs: Vec<_> = blobs
        .iter()
        .map(|(digest, blob)| send(digest, blob, cache.sources(&registry, digest, &repository)))
        .collect();
    let results: Vec<_> = stream::iter(jobs)
        .buffer_unordered(CONCURRENT_BLOBS)
        .collect()
        .await;
    let (mut uploaded, mut mounted, mut present) = (0, 0, 0);
    for result in results {
        let (digest, sent) = result.map_err(fail)?;
        match sent {
            Sent::Present => present += 1,
            Sent::Mounted => mounted += 1,
            Sent::Uploaded => uploaded += 1,
        }
        cache.record(&registry, &digest, &repository);
    }
    drop(progress);
    cache.save();

    let manifests = set.images.iter().map(|image| {
        let by_digest = Reference::with_digest(
            registry.clone(),
            repository.clone(),
            image.manifest.digest.to_string(),
        );
        let media = header(&image.manifest);
        async move {
            retry("pushing a manifest", shell, || {
                client.push_manifest_raw(&by_digest, image.manifest.data.to_vec(), media.clone())
            })
            .await
        }
    });
    for result in futures_util::future::join_all(manifests).await {
        result.map_err(fail)?;
    }
    let mut references = vec![target.clone()];
    for tag in tags {
        references.push(Reference::with_tag(
            registry.clone(),
            repository.clone(),
            tag.clone(),
        ));
    }
    let media = header(&set.index);
    for reference in &references {
        retry("pushing the index", shell, || {
            client.push_manifest_raw(reference, set.index.data.to_vec(), media.clone())
        })
        .await
        .map_err(fail)?;
    }
    shell.status(
        "Pushed",
        format!(
            "{target}@{} ({uploaded} uploaded, {mounted} mounted, {present} already there) in {:.2} s",
            set.index.digest,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(Pushed {
        reference: target.whole(),
        tags: tags.to_vec(),
        uploaded,
        mounted,
        present,
    })
}

/// Bytes sent per step of an upload body (and of the progress bar).
const UPLOAD_STEP: usize = 256 * 1024;

/// A blob as an HTTP body stream that counts what has been read into `progress` (and
/// `counted`, so a failed attempt can take it back).
fn upload_body(
    data: bytes::Bytes,
    progress: &crate::shell::Progress,
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, OciDistributionError>>
       + Send
       + 'static {
    let bar = progress.handle();
    let steps: Vec<bytes::Bytes> = (0..data.len())
        .step_by(UPLOAD_STEP)
        .map(|at| data.slice(at..(at + UPLOAD_STEP).min(data.len())))
        .collect();
    use futures_util::StreamExt;
    futures_util::stream::iter(steps).map(move |step| {
        let n = step.len() as u64;
        counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        bar.inc(n);
        Ok(step)
    })
}

fn header(blob: &Blob) -> http::HeaderValue {
    http::HeaderValue::from_str(blob.media_type.as_ref())
        .expect("media types are valid header values")
}

/// Where this machine has pushed blobs before: registry → digest → repositories. Used to
/// pick cross-repository mount sources; best effort (a missing or broken file is empty).
struct BlobCache {
    path: Option<PathBuf>,
    map: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

impl BlobCache {
    fn file() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))?;
        Some(base.join("cargo-microimage").join("blob-locations.json"))
    }

    fn load() -> BlobCache {
        let path = Self::file();
        let map = path
            .as_ref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        BlobCache { path, map }
    }

    fn sources(&self, registry: &str, digest: &str, except: &str) -> Vec<String> {
        self.map
            .get(registry)
            .and_then(|d| d.get(digest))
            .map(|repos| {
                repos
                    .iter()
                    .filter(|r| r.as_str() != except)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn record(&mut self, registry: &str, digest: &str, repository: &str) {
        self.map
            .entry(registry.to_string())
            .or_default()
            .entry(digest.to_string())
            .or_default()
            .insert(repository.to_string());
    }

    fn save(&self) {
        if let Some(path) = &self.path {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Ok(data) = serde_json::to_vec(&self.map) {
                let tmp = path.with_extension("json.tmp");
                if std::fs::write(&tmp, data).is_ok() {
                    let _ = std::fs::rename(&tmp, path);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "localhost",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in [
            "ghcr.io",
            "10.0.0.1:5000",
            "registry.example.com:443",
            "[2001:db8::1]:5000",
        ] {
            assert!(!is_loopback(no), "{no}");
        }
    }

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("127.0.0.1:5000/app:1.0").unwrap().whole(),
            "127.0.0.1:5000/app:1.0"
        );
        assert!(parse_reference("127.0.0.1:5000/app")
            .unwrap_err()
            .message()
            .contains("names no tag"));
        assert!(parse_reference("app:1.0")
            .unwrap_err()
            .message()
            .contains("names no registry"));
        assert!(parse_reference("ghcr.io/Acme/app:1").is_err());
    }

    #[test]
    fn rate_limits_are_retried_then_reported() {
        let busy = OciDistributionError::ServerError {
            code: 429,
            url: "https://r.example/v2/a/blobs/uploads/".into(),
            message: r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#.into(),
        };
        assert!(transient(&busy));
        let found = credentials::Found {
            credential: credentials::Credential::Anonymous,
            source: "nowhere".into(),
        };
        let purpose = Purpose {
            repository: "a".into(),
            operation: RegistryOperation::Push,
        };
        let e = explain(busy, "r.example", &found, &PushOptions::default(), &purpose);
        assert!(e.message().contains("is rate-limiting this client"), "{e}");
        let denied = OciDistributionError::UnauthorizedError { url: "u".into() };
        assert!(!transient(&denied));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        assert!(backoff(0) < Duration::from_millis(400));
        assert!(backoff(3) >= Duration::from_millis(2000));
        for attempt in [6, 10, 40] {
            let wait = backoff(attempt);
            assert!(
                wait >= LONGEST_BACKOFF && wait <= LONGEST_BACKOFF * 3 / 2,
                "{wait:?}"
            );
        }
    }
}
