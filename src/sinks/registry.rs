//! The registry sink: pushes an [`ImageSet`] with the `oci-client` crate (OCI distribution
//! spec, through [`crate::registry`]), so the registry stores exactly the bytes — and
//! digests — that were built.
//!
//! First a `HEAD` of the index by digest: a registry that has it has everything it refers
//! to (registries accept a manifest only once its blobs and manifests are there), so a
//! re-push checks no blob. Otherwise (DESIGN §7): every blob first — a HEAD says whether
//! the registry has it; if not,
//! a cross-repository mount is tried from repositories of the same registry this machine
//! pushed it to before (the blob-location cache), else it is uploaded — then each platform
//! manifest by digest, then the index by tag, then every extra tag. No tag ever points at
//! an image whose blobs are not all there, and a re-run uploads only what is missing.

use std::collections::BTreeMap;

use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};

use crate::blob::{Blob, Data};
use crate::error::Result;
use crate::image::ImageSet;
use crate::registry::blob_cache::BlobCache;
use crate::registry::connection::connect;
use crate::registry::retry::retry;
use crate::registry::{block_on, ConnectOptions};
use crate::shell::{human_size, Shell};

/// Blobs transferred at once.
const CONCURRENT_BLOBS: usize = 4;

/// Where an image goes in a registry.
#[derive(Debug, Clone)]
pub struct Target {
    pub reference: Reference,
    /// Extra tags for the same repository.
    pub tags: Vec<String>,
    pub options: ConnectOptions,
    /// The key to sign the index and every platform manifest with (`--sign-key`).
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
    /// `--by-digest`: push everything but tag nothing (the tag in `reference` is a
    /// placeholder then, never sent).
    pub by_digest: bool,
    /// Repositories of the target's registry known to hold a blob (by digest): tried
    /// first as cross-repository mount sources (`merge` of images already in it).
    pub mounts: BTreeMap<String, Vec<String>>,
}

/// Where an image was pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pushed {
    /// `registry/repository:tag` as given (`registry/repository` with `--by-digest`).
    pub reference: String,
    /// `registry/repository[:tag]@sha256:…`: the index, or with `--by-digest` and one
    /// platform, that platform's manifest (what a later `merge` takes).
    pub pinned: String,
    /// What `pinned` names: `index` or `manifest`.
    pub pinned_kind: PinnedKind,
    /// Extra tags pushed after it.
    pub tags: Vec<String>,
    /// Blobs uploaded, mounted, and already present.
    pub uploaded: usize,
    pub mounted: usize,
    pub present: usize,
    /// The manifests signed (the index first), with whether a signature was added (not
    /// already there).
    pub signatures: Vec<Signed>,
}

/// What a pushed reference pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinnedKind {
    Index,
    Manifest,
}

/// One signed manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The digest signed.
    pub digest: String,
    /// `registry/repository:sha256-<hex>.sig`.
    pub reference: String,
    /// False when the registry already held this key's signature of it.
    pub added: bool,
}

/// Pushes `set` to `target` (and then each of `tags` in the same repository).
pub fn push(set: &ImageSet, target: &Target, shell: &Shell) -> Result<Pushed> {
    block_on(push_async(set, target, shell))
}

async fn push_async(set: &ImageSet, to: &Target, shell: &Shell) -> Result<Pushed> {
    let (target, tags, options) = (&to.reference, &to.tags[..], &to.options);
    let started = std::time::Instant::now();
    let mut conn = connect(target, options, shell, RegistryOperation::Push).await?;
    // The repositories of this registry blobs may be mounted from (a base's, merge's
    // sources, where this machine saw them go): the token must also read them, or a
    // registry that checks scopes refuses the mount.
    let mut cache = BlobCache::load();
    let mount_sources: BTreeMap<&String, Vec<String>> = set
        .blobs
        .keys()
        .map(|digest| {
            let known = to.mounts.get(digest).into_iter().flatten();
            let mut sources: Vec<String> = known
                .filter(|r| *r != target.repository())
                .cloned()
                .collect();
            for r in cache.sources(&conn.registry, digest, target.repository()) {
                if !sources.contains(&r) {
                    sources.push(r);
                }
            }
            (digest, sources)
        })
        .collect();
    let mut readable: Vec<String> = mount_sources.values().flatten().cloned().collect();
    readable.sort();
    readable.dedup();
    conn.allow_reading(&readable)
        .await
        .map_err(|e| conn.fail(e))?;
    let (client, registry) = (&conn.client, conn.registry.clone());
    let fail = |e: OciDistributionError| conn.fail(e);

    // Every blob but the manifests and the index, each once: layers, configs, the
    // documents of the referrers (SBOMs) and their empty config.
    let manifests: std::collections::BTreeSet<String> = set
        .images
        .iter()
        .map(|i| i.manifest.digest.to_string())
        .chain(set.referrers.iter().map(|r| r.manifest.digest.to_string()))
        .chain([set.index.digest.to_string()])
        .collect();
    let blobs: BTreeMap<String, &Blob> = set
        .blobs
        .iter()
        .filter(|(d, _)| !manifests.contains(*d))
        .map(|(d, b)| (d.clone(), b))
        .collect();
    // Saturating: sizes of blobs from elsewhere (merge, a base) are declared by registries.
    let total: u64 = blobs
        .values()
        .fold(0u64, |sum, b| sum.saturating_add(b.size()));
    shell.status(
        "Pushing",
        format!(
            "{} ({} blobs, {}) to {registry}",
            target,
            blobs.len(),
            human_size(total)
        ),
    );
    let repository = target.repository().to_string();
    // An index the registry has is complete (registries accept a manifest only once what
    // it refers to is there): pushing the same image again needs no blob checks at all.
    let complete = conn
        .has_manifest(&repository, set.index.digest.as_ref())
        .await;
    // With the index there, what it refers to is too; the SBOMs' blobs are not part of it.
    let in_index: std::collections::BTreeSet<String> = set
        .images
        .iter()
        .flat_map(|i| {
            std::iter::once(i.config.digest.to_string())
                .chain(i.layers.iter().map(|l| l.blob.digest.to_string()))
        })
        .collect();
    let skip = |digest: &String| complete && in_index.contains(digest);
    let to_send: u64 = blobs
        .iter()
        .filter(|(d, _)| !skip(d))
        .fold(0u64, |sum, (_, b)| sum.saturating_add(b.size()));
    let progress = shell.progress("Uploading", to_send);
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
        let data = blob.data.clone();
        async move {
            let exists = retry("checking a blob", shell, || {
                client.blob_exists(target, &digest)
            })
            .await?;
            let mut sent = Sent::Present;
            if !exists {
                sent = Sent::Uploaded;
                for source in &sources {
                    let from =
                        Reference::with_tag(registry.clone(), source.clone(), "latest".into());
                    if client.mount_blob(target, &from, &digest).await.is_ok() {
                        shell.verbose("Mounted", format!("{digest} from {source}"));
                        sent = Sent::Mounted;
                        break;
                    }
                }
                if matches!(sent, Sent::Uploaded) && matches!(data, Data::Remote(_)) {
                    // Only described (a base on this registry): the registry declined the
                    // mount (some do no mounts at all), so the blob is read from where it
                    // is and uploaded as it arrives.
                    stream_across(client, target, &registry, &sources, &digest, size, shell)
                        .await?;
                    progress.inc(size);
                    return Ok::<_, OciDistributionError>((digest, sent));
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
        .filter(|(digest, _)| !skip(digest))
        .map(|(digest, blob)| {
            let sources = mount_sources.get(digest).cloned().unwrap_or_default();
            send(digest, blob, sources)
        })
        .collect();
    let results: Vec<_> = stream::iter(jobs)
        .buffer_unordered(CONCURRENT_BLOBS)
        .collect()
        .await;
    let skipped = blobs.keys().filter(|d| skip(d)).count();
    let (mut uploaded, mut mounted, mut present) = (0, 0, skipped);
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

    let manifests = set.images.iter().filter(|_| !complete).map(|image| {
        let by_digest = Reference::with_digest(
            registry.clone(),
            repository.clone(),
            image.manifest.digest.to_string(),
        );
        let media = header(&image.manifest);
        async move {
            let raw = raw(&image.manifest)?;
            retry("pushing a manifest", shell, || {
                client.push_manifest_raw(&by_digest, raw.clone(), media.clone())
            })
            .await
            .map_err(fail)
        }
    });
    for result in futures_util::future::join_all(manifests).await {
        result?;
    }
    push_referrers(&conn, set, target, shell).await?;
    let mut references = if to.by_digest {
        vec![Reference::with_digest(
            registry.clone(),
            repository.clone(),
            set.index.digest.to_string(),
        )]
    } else {
        vec![target.clone()]
    };
    for tag in tags {
        references.push(Reference::with_tag(
            registry.clone(),
            repository.clone(),
            tag.clone(),
        ));
    }
    let media = header(&set.index);
    let index = raw(&set.index)?;
    for reference in &references {
        retry("pushing the index", shell, || {
            client.push_manifest_raw(reference, index.clone(), media.clone())
        })
        .await
        .map_err(fail)?;
    }
    let signatures = match &to.sign {
        Some(key) => push_signatures(&conn, set, target, key, shell).await?,
        None => Vec::new(),
    };
    let shown = if to.by_digest {
        format!("{}/{repository}", target.registry())
    } else {
        target.whole()
    };
    let (pinned_digest, pinned_kind) = match set.images.as_slice() {
        [one] if to.by_digest => (one.manifest.digest.to_string(), PinnedKind::Manifest),
        _ => (set.index.digest.to_string(), PinnedKind::Index),
    };
    shell.status(
        "Pushed",
        format!(
            "{shown}@{} ({uploaded} uploaded, {mounted} mounted, {present} already there) in {:.2} s",
            set.index.digest,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(Pushed {
        pinned: format!("{shown}@{pinned_digest}"),
        pinned_kind,
        reference: shown,
        tags: tags.to_vec(),
        uploaded,
        mounted,
        present,
        signatures,
    })
}

/// Signs the index and each platform manifest of `set` with `key` in cosign's format
/// (`crate::sign`): for each, the signature manifest under `sha256-<hex>.sig` gets this
/// signature, keeping any already there (other keys', earlier ones) and adding nothing if
/// this key's signature of it is there already.
async fn push_signatures(
    conn: &crate::registry::connection::Connection,
    set: &ImageSet,
    target: &Reference,
    key: &crate::sign::Key,
    shell: &Shell,
) -> Result<Vec<Signed>> {
    let (client, registry, repository) = (
        &conn.client,
        target.resolve_registry().to_string(),
        target.repository().to_string(),
    );
    let fail = |e: OciDistributionError| conn.fail(e);
    let identity = format!("{registry}/{repository}");
    let digests = std::iter::once(set.index.digest.to_string())
        .chain(set.images.iter().map(|i| i.manifest.digest.to_string()));
    let mut signed = Vec::new();
    for digest in digests {
        let tag = crate::sign::signature_tag(&digest);
        let sig_ref = Reference::with_tag(registry.clone(), repository.clone(), tag.clone());
        let existing = match retry("reading signatures", shell, || {
            conn.pull_manifest_raw(&sig_ref, &["application/vnd.oci.image.manifest.v1+json"])
        })
        .await
        {
            Ok((raw, _)) => Some(raw),
            Err(e) if crate::registry::errors::is_not_found(&e) => None,
            Err(e) => return Err(fail(e)),
        };
        let payload = crate::sign::payload(&identity, &digest);
        let image = crate::sign::signature_manifest(existing.as_deref(), &payload, key)?;
        let added = image.is_some();
        if let Some(image) = image {
            for blob in [&image.payload, &image.config] {
                let d = blob.digest.to_string();
                let exists = retry("checking a blob", shell, || client.blob_exists(target, &d))
                    .await
                    .map_err(fail)?;
                if !exists {
                    let body = raw(blob)?;
                    retry("uploading a signature", shell, || {
                        client.push_blob(target, body.clone(), &d)
                    })
                    .await
                    .map_err(fail)?;
                }
            }
            let media = header(&image.manifest);
            let manifest = raw(&image.manifest)?;
            retry("pushing a signature", shell, || {
                client.push_manifest_raw(&sig_ref, manifest.clone(), media.clone())
            })
            .await
            .map_err(fail)?;
        }
        shell.status(
            "Signed",
            format!(
                "{digest}{} ({registry}/{repository}:{tag})",
                if added { "" } else { ", already" }
            ),
        );
        signed.push(Signed {
            digest,
            reference: format!("{registry}/{repository}:{tag}"),
            added,
        });
    }
    Ok(signed)
}

/// Pushes the referrers of `set` (SBOMs) after the manifests they are about, then makes
/// sure each is listed for its subject: a registry with the referrers API lists them by
/// itself; for one without it (Debian's docker-registry, distribution 2.8), the referrers
/// tag schema's index under the tag `sha256-<hex>` of the subject gets the missing ones,
/// keeping the entries already there.
async fn push_referrers(
    conn: &crate::registry::connection::Connection,
    set: &ImageSet,
    target: &Reference,
    shell: &Shell,
) -> Result<()> {
    if set.referrers.is_empty() {
        return Ok(());
    }
    let (client, registry, repository) = (
        &conn.client,
        target.resolve_registry().to_string(),
        target.repository().to_string(),
    );
    let fail = |e: OciDistributionError| conn.fail(e);
    let pushes = set.referrers.iter().map(|r| {
        let by_digest = Reference::with_digest(
            registry.clone(),
            repository.clone(),
            r.manifest.digest.to_string(),
        );
        let media = header(&r.manifest);
        async move {
            let raw = raw(&r.manifest)?;
            retry("pushing a referrer", shell, || {
                client.push_manifest_raw(&by_digest, raw.clone(), media.clone())
            })
            .await
            .map_err(fail)
        }
    });
    for result in futures_util::future::join_all(pushes).await {
        result?;
    }
    let mut subjects: BTreeMap<String, Vec<&crate::image::Referrer>> = BTreeMap::new();
    for r in &set.referrers {
        subjects.entry(r.subject.to_string()).or_default().push(r);
    }
    for (subject, ours) in subjects {
        let subject_ref =
            Reference::with_digest(registry.clone(), repository.clone(), subject.clone());
        let listed = conn.pull_referrers(&subject_ref).await.map_err(fail)?;
        let mut index = serde_json::to_value(&listed).map_err(|e| {
            crate::error::Error::registry(format!("reading the referrers of {subject} failed: {e}"))
        })?;
        let present: std::collections::BTreeSet<String> =
            listed.manifests.iter().map(|m| m.digest.clone()).collect();
        let missing: Vec<&&crate::image::Referrer> = ours
            .iter()
            .filter(|r| !present.contains(&r.manifest.digest.to_string()))
            .collect();
        if missing.is_empty() {
            continue;
        }
        let entries = index["manifests"]
            .as_array_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        let mut entries = entries;
        for r in missing {
            let manifest: serde_json::Value =
                serde_json::from_slice(&raw(&r.manifest)?).unwrap_or_default();
            entries.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": r.manifest.digest.to_string(),
                "size": r.manifest.size(),
                "artifactType": r.artifact_type,
                "annotations": manifest["annotations"],
            }));
        }
        let fallback = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        let data = crate::image::canonical_json(&fallback)?;
        let tag = Reference::with_tag(
            registry.clone(),
            repository.clone(),
            subject.replace(':', "-"),
        );
        let media = http::HeaderValue::from_static("application/vnd.oci.image.index.v1+json");
        shell.verbose(
            "Listing",
            format!(
                "the referrers of {subject} under the tag {}",
                tag.tag().unwrap_or_default()
            ),
        );
        retry("listing a referrer", shell, || {
            client.push_manifest_raw(&tag, data.clone(), media.clone())
        })
        .await
        .map_err(fail)?;
    }
    Ok(())
}

/// Bytes sent per step of an upload body (and of the progress bar).
const UPLOAD_STEP: usize = 256 * 1024;

/// A blob as an HTTP body stream that counts what has been read into `progress` (and
/// `counted`, so a failed attempt can take it back).
/// Copies blob `digest` (`size` bytes) into `target` from the first of `sources` (other
/// repositories of the same registry) that serves it: read and uploaded a piece at a time,
/// and refused past its size (the source is another registry's word).
async fn stream_across(
    client: &oci_client::Client,
    target: &Reference,
    registry: &str,
    sources: &[String],
    digest: &str,
    size: u64,
    shell: &Shell,
) -> std::result::Result<(), OciDistributionError> {
    use futures_util::StreamExt;
    let mut last = None;
    for source in sources {
        let from = Reference::with_tag(registry.to_string(), source.clone(), "latest".into());
        let pulled = match client.pull_blob_stream(&from, digest).await {
            Ok(pulled) => pulled,
            Err(e) => {
                last = Some(e);
                continue;
            }
        };
        let mut seen = 0u64;
        let named = digest.to_string();
        let body = pulled.stream.map(move |step| {
            let step = step.map_err(|e| OciDistributionError::GenericError(Some(e.to_string())))?;
            seen += step.len() as u64;
            if seen > size {
                return Err(OciDistributionError::GenericError(Some(format!(
                    "the registry sent more than the {size} bytes of blob {named}"
                ))));
            }
            Ok(step)
        });
        match client
            .push_blob_stream(target, body, digest, Some(size))
            .await
        {
            Ok(_) => {
                shell.verbose("Copied", format!("{digest} from {source} (not mounted)"));
                return Ok(());
            }
            Err(e) => last = Some(e),
        }
    }
    Err(OciDistributionError::GenericError(Some(format!(
        "the registry has no blob {digest} in {} and would neither mount it from the repository it came from nor let it be read there{}",
        target.repository(),
        last.map(|e| format!(" ({e})")).unwrap_or_default()
    ))))
}

fn upload_body(
    data: Data,
    progress: &crate::shell::Progress,
    counted: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> impl futures_util::Stream<Item = std::result::Result<bytes::Bytes, OciDistributionError>>
       + Send
       + 'static {
    let bar = progress.handle();
    let size = data.len();
    // Steps of the blob, read as the request body is sent: from memory without a copy, from
    // a file one step at a time (so a large layer is never whole in memory).
    futures_util::stream::unfold(0u64, move |at| {
        let (data, bar, counted) = (data.clone(), bar.clone(), counted.clone());
        async move {
            if at >= size {
                return None;
            }
            let n = (size - at).min(UPLOAD_STEP as u64);
            let step = match &data {
                Data::Memory(bytes) => {
                    let (from, to) = (at as usize, (at + n) as usize);
                    Ok(bytes::Bytes::from_owner(bytes.clone()).slice(from..to))
                }
                Data::File(_) | Data::Remote(_) => {
                    let mut buf = vec![0u8; n as usize];
                    let mut reader = data.reader();
                    reader.skip(at).and_then(|()| {
                        std::io::Read::read_exact(&mut reader, &mut buf).map(|()| buf.into())
                    })
                }
            };
            match step {
                Ok(step) => {
                    counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    bar.inc(n);
                    Some((Ok(step), at + n))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), size)),
            }
        }
    })
}

/// A manifest's bytes (always in memory: only layers are ever large enough to be on disk).
fn raw(blob: &Blob) -> Result<bytes::Bytes> {
    blob.data.to_bytes().map_err(|e| {
        crate::error::Error::output(format!("reading {} failed: {e}", blob.digest)).with_source(e)
    })
}

fn header(blob: &Blob) -> http::HeaderValue {
    http::HeaderValue::from_str(blob.media_type.as_ref())
        .expect("media types are valid header values")
}
