//! The registry sink: pushes an [`ImageSet`] with the `oci-client` crate (OCI distribution
//! spec, through [`crate::registry`]), so the registry stores exactly the bytes — and
//! digests — that were built.
//!
//! First a `HEAD` of the index by digest: a registry that has it has everything it refers
//! to (registries accept a manifest only once its blobs and manifests are there), so a
//! re-push checks no blob. Otherwise (DESIGN §7), in as few rounds as the registry's rules
//! allow:
//! 1. every blob, concurrently — a layer is HEAD-checked, then mounted from repositories of
//!    the same registry this machine pushed it to before (the blob-location cache), else
//!    uploaded; the small JSON blobs (configs, SBOM and provenance documents, the empty
//!    config) are uploaded without asking — while the referrers lists of the platform
//!    manifests are read;
//! 2. every manifest, concurrently: the platforms' by digest, and the SBOMs' and
//!    provenance's (referrers) not listed yet;
//! 3. the referrers lists kept under the `sha256-<hex>` tag, where the registry has no
//!    referrers API;
//! 4. the index by tag, then every extra tag; signatures last.
//!
//! No tag ever points at an image whose blobs are not all there, and a re-run uploads only
//! what is missing.

use std::collections::{BTreeMap, BTreeSet};

use oci_client::errors::OciDistributionError;
use oci_client::{Reference, RegistryOperation};

use crate::blob::{Blob, Data};
use crate::error::Result;
use crate::image::ImageSet;
use crate::registry::blob_cache::BlobCache;
use crate::registry::connection::{connect, Connection, ReferrersKept};
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
    let started = std::time::Instant::now();
    let mut cache = BlobCache::load();
    let (conn, mount_sources) = connect_with_mounts(set, to, &cache, shell).await?;
    let blobs = blobs_to_push(set);
    announce(&blobs, &to.reference, &conn.registry, shell);
    // An index the registry has is complete (registries accept a manifest only once what
    // it refers to is there): pushing the same image again needs no blob checks at all.
    let complete = conn
        .has_manifest(to.reference.repository(), set.index.digest.as_ref())
        .await;
    // The referrers lists of the manifests the SBOMs and provenance are about: ours are
    // added to them, and those listed already are not sent again. They are read while the
    // blobs go up; on a re-push of a complete image, first, since then they decide what is
    // left to send.
    let listed_first = match complete && !set.referrers.is_empty() {
        true => Some(list_referrers(&conn, set, &to.reference, shell).await?),
        false => None,
    };
    let wanted = wanted_blobs(set, complete, listed_first.as_ref())?;
    let sending = Sending {
        conn: &conn,
        set,
        to,
        blobs: &blobs,
        wanted: &wanted,
        mount_sources: &mount_sources,
        shell,
    };
    let (listed, counts) = sending.send(listed_first, &mut cache).await?;
    push_manifests(&conn, set, &to.reference, complete, &listed, shell).await?;
    tag_referrers(&conn, set, &to.reference, &listed, shell).await?;
    push_index(&conn, set, to, shell).await?;
    let signatures = match &to.sign {
        Some(key) => push_signatures(&conn, set, &to.reference, key, shell).await?,
        None => Vec::new(),
    };
    Ok(pushed(set, to, counts, signatures, started, shell))
}

/// Connects for the push, with a token that may also read the repositories of this
/// registry each blob may be mounted from (a base's, merge's sources, where this machine
/// saw it go): a registry that checks scopes refuses the mount otherwise. Also gives those
/// sources, by blob digest.
async fn connect_with_mounts<'s>(
    set: &'s ImageSet,
    to: &Target,
    cache: &BlobCache,
    shell: &Shell,
) -> Result<(Connection, BTreeMap<&'s String, Vec<String>>)> {
    let target = &to.reference;
    let mut conn = connect(target, &to.options, shell, RegistryOperation::Push).await?;
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
    Ok((conn, mount_sources))
}

/// Every blob of `set` but the manifests and the index, each once: layers, configs, the
/// documents of the referrers (SBOMs, provenance) and their empty config.
fn blobs_to_push(set: &ImageSet) -> BTreeMap<String, &Blob> {
    let manifests: BTreeSet<String> = set
        .images
        .iter()
        .map(|i| i.manifest.digest.to_string())
        .chain(set.referrers.iter().map(|r| r.manifest.digest.to_string()))
        .chain([set.index.digest.to_string()])
        .collect();
    set.blobs
        .iter()
        .filter(|(d, _)| !manifests.contains(*d))
        .map(|(d, b)| (d.clone(), b))
        .collect()
}

/// The `Pushing` line: what goes where.
fn announce(blobs: &BTreeMap<String, &Blob>, target: &Reference, registry: &str, shell: &Shell) {
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
}

/// The blobs to send: the image's unless the registry has the whole image (`complete`),
/// and those of each referrer not listed yet.
fn wanted_blobs(
    set: &ImageSet,
    complete: bool,
    listed: Option<&Listed>,
) -> Result<BTreeSet<String>> {
    let mut wanted: BTreeSet<String> = match complete {
        true => BTreeSet::new(),
        false => set
            .images
            .iter()
            .flat_map(|i| {
                std::iter::once(i.config.digest.to_string())
                    .chain(i.layers.iter().map(|l| l.blob.digest.to_string()))
            })
            .collect(),
    };
    for r in &set.referrers {
        if !listed.is_some_and(|l| l.has(r)) {
            wanted.extend(blobs_of(&r.manifest)?);
        }
    }
    Ok(wanted)
}

/// How many blobs were uploaded, mounted, and already there.
#[derive(Default)]
struct Counts {
    uploaded: usize,
    mounted: usize,
    present: usize,
}

/// What happened to one blob.
enum Sent {
    Present,
    Mounted,
    Uploaded,
}

/// The blob round of a push: what it sends, where, and from where it may mount.
struct Sending<'a> {
    conn: &'a Connection,
    set: &'a ImageSet,
    to: &'a Target,
    blobs: &'a BTreeMap<String, &'a Blob>,
    wanted: &'a BTreeSet<String>,
    mount_sources: &'a BTreeMap<&'a String, Vec<String>>,
    shell: &'a Shell,
}

impl Sending<'_> {
    /// Sends the wanted blobs concurrently (bounded, like skopeo's copies) while the
    /// referrers lists are read (unless `listed_first` has them), and records where each
    /// blob now is in the blob-location cache.
    async fn send(
        &self,
        listed_first: Option<Listed>,
        cache: &mut BlobCache,
    ) -> Result<(Listed, Counts)> {
        use futures_util::stream::{self, StreamExt};
        let (set, target, shell) = (self.set, &self.to.reference, self.shell);
        let registry = self.conn.registry.clone();
        // Layers are checked (HEAD) before they are sent: they are large, and a new image
        // shares most of them with the last one. The rest (configs, the documents of the
        // SBOMs and provenance, the empty config) are small JSON that a new image always
        // changes, so they are sent without asking, a request saved each — unless the blob
        // may be there: this machine pushed it to this registry before, or it comes from
        // the registry (a merge's sources).
        let layers: BTreeSet<String> = set
            .images
            .iter()
            .flat_map(|i| i.layers.iter().map(|l| l.blob.digest.to_string()))
            .collect();
        let ask_first = |digest: &String, data: &Data| {
            layers.contains(digest)
                || self.to.mounts.contains_key(digest)
                || cache.seen(&registry, digest)
                || matches!(data, Data::Remote(_))
        };
        let to_send: u64 = self
            .blobs
            .iter()
            .filter(|(d, _)| self.wanted.contains(*d))
            .fold(0u64, |sum, (_, b)| sum.saturating_add(b.size()));
        let progress = shell.progress("Uploading", to_send);
        let jobs: Vec<_> = self
            .blobs
            .iter()
            .filter(|(digest, _)| self.wanted.contains(*digest))
            .map(|(digest, blob)| {
                let sources = self.mount_sources.get(digest).cloned().unwrap_or_default();
                // (A blob with mount sources is one the mounts or the cache know: asked
                // about.)
                let ask = ask_first(digest, &blob.data);
                self.one(digest.clone(), blob, sources, ask, &progress)
            })
            .collect();
        let uploads = stream::iter(jobs)
            .buffer_unordered(CONCURRENT_BLOBS)
            .collect::<Vec<_>>();
        let (listed, results) = match listed_first {
            Some(listed) => (listed, uploads.await),
            None => {
                let (listed, results) = futures_util::future::join(
                    list_referrers(self.conn, set, target, shell),
                    uploads,
                )
                .await;
                (listed?, results)
            }
        };
        let skipped = self
            .blobs
            .keys()
            .filter(|d| !self.wanted.contains(*d))
            .count();
        let mut counts = Counts {
            present: skipped,
            ..Counts::default()
        };
        for result in results {
            let (digest, sent) = result.map_err(|e| self.conn.fail(e))?;
            match sent {
                Sent::Present => counts.present += 1,
                Sent::Mounted => counts.mounted += 1,
                Sent::Uploaded => counts.uploaded += 1,
            }
            cache.record(&registry, &digest, target.repository());
        }
        drop(progress);
        cache.save();
        Ok((listed, counts))
    }

    /// Sends one blob: HEAD-checked first when `ask`, then mounted from one of `sources`,
    /// else uploaded (or, when it is only described, read from where it is and uploaded
    /// as it arrives).
    async fn one(
        &self,
        digest: String,
        blob: &Blob,
        sources: Vec<String>,
        ask: bool,
        progress: &crate::shell::Progress,
    ) -> std::result::Result<(String, Sent), OciDistributionError> {
        let (client, registry) = (&self.conn.client, &self.conn.registry);
        let (target, shell) = (&self.to.reference, self.shell);
        let (size, data) = (blob.size(), &blob.data);
        let exists = ask
            && retry("checking a blob", shell, || {
                client.blob_exists(target, &digest)
            })
            .await?;
        if exists {
            progress.inc(size);
            return Ok((digest, Sent::Present));
        }
        for source in &sources {
            let from = Reference::with_tag(registry.clone(), source.clone(), "latest".into());
            if client.mount_blob(target, &from, &digest).await.is_ok() {
                shell.verbose("Mounted", format!("{digest} from {source}"));
                progress.inc(size);
                return Ok((digest, Sent::Mounted));
            }
        }
        if matches!(data, Data::Remote(_)) {
            // Only described (a base on this registry): the registry declined the mount
            // (some do no mounts at all), so the blob is read from where it is and
            // uploaded as it arrives.
            stream_across(client, target, registry, &sources, &digest, size, shell).await?;
            progress.inc(size);
            return Ok((digest, Sent::Uploaded));
        }
        // Counted as the HTTP body is read; an attempt that fails takes its count back
        // before the next one starts.
        let counted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        retry("uploading a blob", shell, || {
            progress.dec(counted.swap(0, std::sync::atomic::Ordering::Relaxed));
            let body = upload_body(data.clone(), progress, counted.clone());
            client.push_blob_stream(target, body, &digest, Some(size))
        })
        .await?;
        progress.inc(size - counted.load(std::sync::atomic::Ordering::Relaxed));
        Ok((digest, Sent::Uploaded))
    }
}

/// Every manifest at once: the platforms' by digest (unless the registry has the image)
/// and the referrers' not listed yet. A registry takes a referrer before its subject (the
/// OCI distribution spec says it should; distribution 2.8 does not look at `subject`), so
/// they need not wait.
async fn push_manifests(
    conn: &Connection,
    set: &ImageSet,
    target: &Reference,
    complete: bool,
    listed: &Listed,
    shell: &Shell,
) -> Result<()> {
    let (registry, repository) = (conn.registry.clone(), target.repository().to_string());
    let by_digest = |blob: &Blob, what: &'static str| {
        let reference = Reference::with_digest(
            registry.clone(),
            repository.clone(),
            blob.digest.to_string(),
        );
        let media = header(blob);
        let raw = raw(blob);
        async move {
            let raw = raw?;
            retry(what, shell, || {
                conn.client
                    .push_manifest_raw(&reference, raw.clone(), media.clone())
            })
            .await
            .map_err(|e| conn.fail(e))
        }
    };
    let manifests = set
        .images
        .iter()
        .filter(|_| !complete)
        .map(|image| by_digest(&image.manifest, "pushing a manifest"))
        .chain(
            set.referrers
                .iter()
                .filter(|r| !listed.has(r))
                .map(|r| by_digest(&r.manifest, "pushing a referrer")),
        );
    for result in futures_util::future::join_all(manifests).await {
        result?;
    }
    Ok(())
}

/// The index: by its tag (by digest with `--by-digest`), then under every extra tag.
async fn push_index(conn: &Connection, set: &ImageSet, to: &Target, shell: &Shell) -> Result<()> {
    let (registry, repository) = (&conn.registry, to.reference.repository());
    let mut references = if to.by_digest {
        vec![Reference::with_digest(
            registry.clone(),
            repository.to_string(),
            set.index.digest.to_string(),
        )]
    } else {
        vec![to.reference.clone()]
    };
    for tag in &to.tags {
        references.push(Reference::with_tag(
            registry.clone(),
            repository.to_string(),
            tag.clone(),
        ));
    }
    let media = header(&set.index);
    let index = raw(&set.index)?;
    for reference in &references {
        retry("pushing the index", shell, || {
            conn.client
                .push_manifest_raw(reference, index.clone(), media.clone())
        })
        .await
        .map_err(|e| conn.fail(e))?;
    }
    Ok(())
}

/// What was pushed, and the `Pushed` line that says so.
fn pushed(
    set: &ImageSet,
    to: &Target,
    counts: Counts,
    signatures: Vec<Signed>,
    started: std::time::Instant,
    shell: &Shell,
) -> Pushed {
    let target = &to.reference;
    let shown = if to.by_digest {
        format!("{}/{}", target.registry(), target.repository())
    } else {
        target.whole()
    };
    let (pinned_digest, pinned_kind) = match set.images.as_slice() {
        [one] if to.by_digest => (one.manifest.digest.to_string(), PinnedKind::Manifest),
        _ => (set.index.digest.to_string(), PinnedKind::Index),
    };
    let Counts {
        uploaded,
        mounted,
        present,
    } = counts;
    shell.status(
        "Pushed",
        format!(
            "{shown}@{} ({uploaded} uploaded, {mounted} mounted, {present} already there) in {:.2} s",
            set.index.digest,
            started.elapsed().as_secs_f64()
        ),
    );
    Pushed {
        pinned: format!("{shown}@{pinned_digest}"),
        pinned_kind,
        reference: shown,
        tags: to.tags.clone(),
        uploaded,
        mounted,
        present,
        signatures,
    }
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
    // Each manifest's signature at once: they do not depend on each other.
    let signing = digests.map(|digest| {
        let (registry, repository, identity) =
            (registry.clone(), repository.clone(), identity.clone());
        async move {
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
            Ok::<_, crate::error::Error>(Signed {
                digest,
                reference: format!("{registry}/{repository}:{tag}"),
                added,
            })
        }
    });
    let signed = futures_util::future::join_all(signing)
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    for s in &signed {
        shell.status(
            "Signed",
            format!(
                "{}{} ({})",
                s.digest,
                if s.added { "" } else { ", already" },
                s.reference
            ),
        );
    }
    Ok(signed)
}

/// The referrers already listed for each subject of `set`'s referrers, and who keeps each
/// list (see [`tag_referrers`]).
struct Listed {
    /// By subject digest: the list's entries and who keeps it.
    subjects: BTreeMap<String, (Vec<serde_json::Value>, ReferrersKept)>,
}

impl Listed {
    /// Whether `r` is listed for its subject already.
    fn has(&self, r: &crate::image::Referrer) -> bool {
        let digest = r.manifest.digest.to_string();
        self.subjects
            .get(&r.subject.to_string())
            .is_some_and(|(entries, _)| entries.iter().any(|e| e["digest"] == digest))
    }
}

/// Reads the referrers lists of the subjects of `set`'s referrers, all at once.
async fn list_referrers(
    conn: &crate::registry::connection::Connection,
    set: &ImageSet,
    target: &Reference,
    shell: &Shell,
) -> Result<Listed> {
    let subjects: std::collections::BTreeSet<String> = set
        .referrers
        .iter()
        .map(|r| r.subject.to_string())
        .collect();
    let (registry, repository) = (
        target.resolve_registry().to_string(),
        target.repository().to_string(),
    );
    let lists = subjects.into_iter().map(|subject| {
        let reference =
            Reference::with_digest(registry.clone(), repository.clone(), subject.clone());
        async move {
            let (listed, kept) = conn
                .list_referrers(&reference)
                .await
                .map_err(|e| conn.fail(e))?;
            let index = serde_json::to_value(&listed).map_err(|e| {
                crate::error::Error::registry(format!(
                    "reading the referrers of {subject} failed: {e}"
                ))
            })?;
            let entries = index["manifests"].as_array().cloned().unwrap_or_default();
            shell.verbose(
                "Listed",
                format!("{} referrers of {subject}", entries.len()),
            );
            Ok::<_, crate::error::Error>((subject, (entries, kept)))
        }
    });
    let subjects = futures_util::future::join_all(lists)
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(Listed { subjects })
}

/// The blobs `manifest` (an artifact manifest of ours) refers to: its config and layers.
fn blobs_of(manifest: &Blob) -> Result<Vec<String>> {
    let value: serde_json::Value = serde_json::from_slice(&raw(manifest)?).map_err(|e| {
        crate::error::Error::output(format!("reading manifest {} failed: {e}", manifest.digest))
    })?;
    let layers = value["layers"].as_array().cloned().unwrap_or_default();
    Ok(std::iter::once(&value["config"])
        .chain(layers.iter())
        .filter_map(|d| d["digest"].as_str().map(String::from))
        .collect())
}

/// Makes sure each of `set`'s referrers is listed for its subject, once all are pushed: a
/// registry with the referrers API lists them by itself; for one without it (Debian's
/// docker-registry, distribution 2.8), the referrers tag schema's index under the tag
/// `sha256-<hex>` of the subject gets the missing ones, keeping the entries already there
/// (`listed`, read before). Subjects are done at once.
async fn tag_referrers(
    conn: &crate::registry::connection::Connection,
    set: &ImageSet,
    target: &Reference,
    listed: &Listed,
    shell: &Shell,
) -> Result<()> {
    let (client, registry, repository) = (
        &conn.client,
        target.resolve_registry().to_string(),
        target.repository().to_string(),
    );
    let mut missing: BTreeMap<&String, Vec<&crate::image::Referrer>> = BTreeMap::new();
    for r in set.referrers.iter().filter(|r| !listed.has(r)) {
        if let Some((subject, (_, ReferrersKept::UnderTag))) =
            listed.subjects.get_key_value(&r.subject.to_string())
        {
            missing.entry(subject).or_default().push(r);
        }
    }
    let tags = missing.into_iter().map(|(subject, ours)| {
        let (registry, repository) = (registry.clone(), repository.clone());
        async move {
            let mut entries = listed.subjects[subject].0.clone();
            for r in ours {
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
            let tag = Reference::with_tag(registry, repository, subject.replace(':', "-"));
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
            .map_err(|e| conn.fail(e))
        }
    });
    for result in futures_util::future::join_all(tags).await {
        result?;
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
