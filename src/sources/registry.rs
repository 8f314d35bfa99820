//! A registry reference, by tag or digest, read through a registry connection
//! (`crate::registry::connection`: the credentials and transport rules of a push).
//! Manifests and configs are fetched and checked against their digests; layers are known
//! by their descriptors ([`Layers::Describe`]) or downloaded and checked
//! ([`Layers::Download`]). With [`Options::attachments`], each manifest's referrers (the
//! referrers API, else the `sha256-<hex>` tag) and cosign signatures are listed too.

use std::io::Write;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::{
    is_manifest, parse, parse_manifest, sorted, Attached, Format, Image, Layers, Manifest, Options,
    Read, Signature,
};
use crate::blob::{self, Blob, Data};
use crate::error::{Error, Result};
use crate::registry::connection::Connection;

const ACCEPT: &[&str] = crate::registry::MANIFEST_TYPES;

/// Reads `reference`.
pub fn read(reference: &str, options: &Options) -> Result<Read> {
    let target: oci_client::Reference = reference.parse().map_err(|e| {
        Error::usage(format!(
            "`{reference}` is neither a local path nor an image reference: {e}"
        ))
    })?;
    let label = reference.to_string();
    crate::registry::block_on(async {
        let conn = crate::registry::connection::connect(
            &target,
            options.connect,
            options.shell,
            oci_client::RegistryOperation::Pull,
        )
        .await?;
        let missing = |e: oci_client::errors::OciDistributionError| {
            if crate::registry::errors::is_not_found(&e) {
                Error::input(format!("`{label}` does not exist in the registry"))
                    .with_help("check the reference: its repository, and its tag or digest")
            } else {
                conn.fail(e)
            }
        };
        let (top, top_digest) = conn
            .pull_manifest_raw(&target, ACCEPT)
            .await
            .map_err(missing)?;
        if let Some(wanted) = target.digest() {
            if top_digest != wanted {
                return Err(Error::registry(format!(
                    "the registry sent a manifest with digest {top_digest} for `{label}`"
                )));
            }
        }
        let at = |digest: &str| {
            oci_client::Reference::with_digest(
                target.registry().to_string(),
                target.repository().to_string(),
                digest.to_string(),
            )
        };
        let kind: serde_json::Value = parse(&label, "manifest", &top)?;
        let mut raw_manifests = Vec::new();
        let (index, annotations) = if kind.get("manifests").is_some() {
            let index: ImageIndex = parse(&label, "image index", &top)?;
            let media_type = index.media_type().clone().unwrap_or(MediaType::ImageIndex);
            for m in index.manifests() {
                let (raw, digest) = conn
                    .pull_manifest_raw(&at(m.digest().as_ref()), ACCEPT)
                    .await
                    .map_err(missing)?;
                if blob::sha256(&raw).to_string() != m.digest().to_string()
                    || digest != m.digest().to_string()
                {
                    return Err(Error::registry(format!(
                        "the registry sent a manifest that does not match {}",
                        m.digest()
                    )));
                }
                raw_manifests.push((raw, m.platform().clone()));
            }
            (
                Some(Blob::new(media_type, top.to_vec())),
                sorted(index.annotations()),
            )
        } else {
            let manifest: ImageManifest = parse_manifest(&label, "manifest", &top)?;
            let annotations = sorted(manifest.annotations());
            raw_manifests.push((top, None));
            (None, annotations)
        };
        let mut manifests = Vec::new();
        let mut attached = Vec::new();
        for (raw, entry_platform) in raw_manifests {
            let parsed: ImageManifest = parse_manifest(&label, "manifest", &raw)?;
            // A manifest that does not say its type is an OCI one (the spec's default).
            let manifest_type = parsed
                .media_type()
                .clone()
                .unwrap_or(MediaType::ImageManifest);
            if !is_manifest(&manifest_type) {
                return Err(Error::input(format!(
                    "`{label}` holds a {manifest_type} where an image manifest should be"
                )));
            }
            let config_digest = parsed.config().digest().to_string();
            let config_raw = conn.pull_checked(&target, &config_digest, "config").await?;
            let config_json: ImageConfiguration = parse(&label, "config", &config_raw)?;
            let config = Blob::new(parsed.config().media_type().clone(), config_raw);
            let mut layers = Vec::new();
            for d in parsed.layers() {
                let data = match options.layers {
                    Layers::Download => fetch(&conn, &target, d).await?,
                    Layers::Describe => Data::Remote(d.size()),
                };
                layers.push(Blob {
                    media_type: d.media_type().clone(),
                    digest: d.digest().clone(),
                    data,
                });
            }
            let manifest = Blob::new(manifest_type, raw.to_vec());
            if options.attachments {
                attached.extend(referrers(&conn, &at(manifest.digest.as_ref()), options).await);
            }
            manifests.push(Manifest {
                entry_platform,
                annotations: sorted(parsed.annotations()),
                manifest: Some(manifest),
                config,
                config_json,
                layers,
            });
        }
        let mut signatures = Vec::new();
        if options.attachments {
            let signed: Vec<String> = std::iter::once(top_digest.clone())
                .filter(|_| index.is_some())
                .chain(manifests.iter().filter_map(|m| m.digest()))
                .collect();
            for digest in signed {
                if let Some(s) = signature(&conn, &target, &digest).await? {
                    signatures.push(s);
                }
            }
        }
        let by_tag = target.tag().filter(|_| target.digest().is_none());
        Ok(Read {
            label: label.clone(),
            location: label.clone(),
            format: Format::Registry,
            images: vec![Image {
                tags: by_tag.map(|t| vec![t.to_string()]).unwrap_or_default(),
                names: by_tag.map(|_| vec![target.whole()]).unwrap_or_default(),
                index,
                annotations,
                manifests,
            }],
            all_tags: Vec::new(),
            attached,
            signatures,
            remote: Some((
                target.registry().to_string(),
                target.repository().to_string(),
            )),
            files: None,
        })
    })
}

/// The artifacts attached to the manifest at `manifest` (the referrers API, or the
/// `sha256-<hex>` tag where the registry has none). What is attached is extra: a registry
/// that cannot list it does not stop the read.
async fn referrers(
    conn: &Connection,
    manifest: &oci_client::Reference,
    options: &Options<'_>,
) -> Vec<Attached> {
    let subject = manifest.digest().unwrap_or_default().to_string();
    match conn.pull_referrers(manifest).await {
        Ok(r) => r
            .manifests
            .iter()
            .map(|m| Attached {
                subject: subject.clone(),
                artifact_type: m.artifact_type.clone().unwrap_or_default(),
                manifest: None,
                manifest_digest: m.digest.clone(),
                size: None,
                blobs: Vec::new(),
                annotations: m.annotations.clone().unwrap_or_default(),
            })
            .collect(),
        Err(e) => {
            options.shell.warn(format!(
                "the artifacts attached to {subject} cannot be listed: {}",
                conn.fail(e).message()
            ));
            Vec::new()
        }
    }
}

/// The cosign signatures of `digest`, under its `sha256-<hex>.sig` tag, if any.
async fn signature(
    conn: &Connection,
    target: &oci_client::Reference,
    digest: &str,
) -> Result<Option<Signature>> {
    let tag = crate::sign::signature_tag(digest);
    let sig_ref = oci_client::Reference::with_tag(
        target.registry().to_string(),
        target.repository().to_string(),
        tag.clone(),
    );
    match conn
        .pull_manifest_raw(&sig_ref, &["application/vnd.oci.image.manifest.v1+json"])
        .await
    {
        Ok((raw, manifest_digest)) => {
            let manifest: ImageManifest =
                parse_manifest(target.whole().as_str(), "signature manifest", &raw)?;
            Ok(Some(Signature {
                digest: digest.to_string(),
                tag,
                manifest_digest,
                count: manifest.layers().len(),
            }))
        }
        Err(e) if crate::registry::errors::is_not_found(&e) => Ok(None),
        Err(e) => Err(conn.fail(e)),
    }
}

/// Downloads one layer to a spill file (memory when small), checked against its digest.
pub(crate) async fn fetch(
    conn: &Connection,
    image: &oci_client::Reference,
    d: &Descriptor,
) -> Result<Data> {
    use futures_util::StreamExt;
    let failed = |e: std::io::Error| {
        Error::output(format!("keeping layer {} on disk failed: {e}", d.digest())).with_source(e)
    };
    let mut stream = conn
        .client
        .pull_blob_stream(image, d.digest().as_ref())
        .await
        .map_err(|e| conn.fail(e))?;
    let mut out = blob::HashingWriter::new(blob::SpillWriter::new());
    let mut received: u64 = 0;
    // A body that stalls or trickles is given up on (CARGO_HTTP_TIMEOUT and
    // CARGO_HTTP_LOW_SPEED_LIMIT, as cargo's downloads are).
    let mut pace = crate::registry::limits::Pace::new(conn.timeouts());
    let slow = |why: String| {
        Error::registry(format!(
            "the registry is too slow sending layer {}: {why}",
            d.digest()
        ))
        .with_help("check the registry and the network, or allow more with CARGO_HTTP_TIMEOUT (seconds) and CARGO_HTTP_LOW_SPEED_LIMIT (bytes per second)")
    };
    while let Some(chunk) = pace.wait(stream.next()).await.map_err(slow)? {
        let chunk = chunk.map_err(|e| {
            Error::registry(format!("downloading layer {} failed: {e}", d.digest()))
        })?;
        // The descriptor says how much there is: not a byte more is taken (a registry
        // that keeps sending would otherwise fill the disk before the digest check).
        received += chunk.len() as u64;
        if received > d.size() {
            return Err(Error::registry(format!(
                "the registry sent more than the {} bytes layer {} has; the download was stopped",
                d.size(),
                d.digest()
            )));
        }
        out.write_all(&chunk).map_err(failed)?;
        pace.got(chunk.len()).map_err(slow)?;
    }
    let (spill, digest, size) = out.finish();
    if digest != *d.digest() || size != d.size() {
        return Err(Error::registry(format!(
            "the registry sent {size} bytes with digest {digest} for layer {}",
            d.digest()
        )));
    }
    spill.finish().map_err(failed)
}
