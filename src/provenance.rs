//! Build provenance: one SLSA v1 statement per platform image (an in-toto Statement v1 with
//! predicate type `https://slsa.dev/provenance/v1`, [`statement`]), attached as an OCI 1.1
//! referrer of the platform manifest, the way SBOMs are ([`attach`]):
//!
//! - unsigned: the statement itself, artifact type `application/vnd.in-toto+json`;
//! - with `--sign-key`: a Sigstore bundle v0.3 holding the statement in a DSSE envelope
//!   signed with that key (`crate::sign::dsse_bundle`), artifact type
//!   `application/vnd.dev.sigstore.bundle.v0.3+json` — how cosign 3 stores the attestations
//!   it makes (`cosign attest --key`), and what `cosign verify-attestation`, Kyverno and
//!   Sigstore's policy-controller look for among an image's referrers.
//!
//! What the statement says (docs/supply-chain.md, "Provenance", documents each field):
//! `buildType` [`BUILD_TYPE`]; `externalParameters`: the package, binary, platform, profile,
//! features and the image options that shaped the image (never a credential, a key or an
//! environment value: only the names of `--env` keys); `resolvedDependencies`: the git
//! commit and whether the tree was dirty, Cargo.lock's sha256, rustc's version and commit,
//! zig's version when it compiled C code, the allocator crate, the base image's digest,
//! the prebuilt binary's sha256 (`pack`), and this tool; `runDetails.builder.id`
//! [`BUILDER_ID`]. No timestamp and no path: the same inputs give the same bytes, from any
//! checkout path, on any day.
//!
//! Not for: where the referrers go (`crate::sinks`).

use std::collections::BTreeMap;

use oci_spec::image::MediaType;
use serde_json::{json, Value};

use crate::blob::Blob;
use crate::error::Result;
use crate::image::{canonical_json, ImageSet, ImageSpec, Referrer};
use crate::layers::base::CaCerts;
use crate::platform::Platform;
use crate::sbom::Contents;

/// The statement's `_type`.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const PREDICATE_TYPE: &str = "https://slsa.dev/provenance/v1";
/// The media type (and artifact type) of an unsigned in-toto statement.
pub const STATEMENT_MEDIA_TYPE: &str = "application/vnd.in-toto+json";
/// The media type (and artifact type) of a Sigstore bundle v0.3.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
/// The annotation naming the predicate type of an unsigned statement (as buildx writes
/// it on its attestation manifests).
pub const PREDICATE_ANNOTATION: &str = "in-toto.io/predicate-type";
/// The annotations cosign's bundle specification gives a bundle's manifest.
pub const BUNDLE_PREDICATE_ANNOTATION: &str = "dev.sigstore.bundle.predicateType";
pub const BUNDLE_CONTENT_ANNOTATION: &str = "dev.sigstore.bundle.content";

/// This tool's build type: how to read `externalParameters` and `resolvedDependencies`.
pub const BUILD_TYPE: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/provenance/build/v1");
/// The builder: this tool, run by whoever ran it (its version is in `builder.version`).
pub const BUILDER_ID: &str = concat!(env!("CARGO_PKG_REPOSITORY"), "/builder/v1");

pub use crate::settings::Provenance as Mode;

/// The cargo build behind an image (`build`/`push`), the same for each of its platforms
/// but the C compiler.
#[derive(Debug, Clone, Default)]
pub struct Recipe {
    pub package: String,
    pub version: String,
    pub bin: String,
    pub profile: String,
    pub features: Vec<String>,
    pub all_features: bool,
    pub no_default_features: bool,
    /// The sha256 of the workspace's Cargo.lock.
    pub lock_sha256: Option<String>,
    /// The first line of `rustc -vV`, and its `commit-hash`.
    pub rustc: Option<String>,
    pub rustc_commit: Option<String>,
    /// The standard library was built from source (`-Zbuild-std`) by that rustc.
    pub std_from_source: bool,
}

/// What is known of how one platform's binary came to be.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The build, when this tool compiled the binary; `None` for `pack` of a binary made
    /// elsewhere.
    pub recipe: Option<Recipe>,
    /// The C compiler that compiled C code for the binary, when it was zig: `zig 0.13.0`.
    pub zig: Option<String>,
    /// The binary's sha256 (`pack`: what was packed).
    pub binary_sha256: Option<String>,
}

/// The statement for the platform image `manifest` of `spec`.
pub fn statement(
    spec: &ImageSpec,
    platform: &Platform,
    manifest: &Blob,
    contents: &Contents,
    facts: &Facts,
) -> Result<Vec<u8>> {
    let mut external = serde_json::Map::new();
    if let Some(r) = &facts.recipe {
        external.insert("package".into(), json!(r.package));
        external.insert("version".into(), json!(r.version));
        external.insert("bin".into(), json!(r.bin));
        external.insert("profile".into(), json!(r.profile));
        external.insert("features".into(), json!(r.features));
        external.insert("allFeatures".into(), json!(r.all_features));
        external.insert("noDefaultFeatures".into(), json!(r.no_default_features));
    } else {
        external.insert("bin".into(), json!(spec.bin_name));
        external.insert("prebuilt".into(), json!(true));
    }
    external.insert("platform".into(), json!(platform.oci_name()));
    external.insert("image".into(), image_options(spec));

    let mut deps: Vec<Value> = Vec::new();
    let annotations = &spec.annotations;
    if let Some(commit) = annotations.get("org.opencontainers.image.revision") {
        let mut source = json!({
            "name": "source",
            "digest": {"gitCommit": commit},
            "annotations": {
                "dirty": annotations.get("rs.microimage.source.dirty").is_some_and(|d| d == "true"),
            },
        });
        if let Some(url) = annotations
            .get("org.opencontainers.image.source")
            .and_then(|u| public_url(u))
        {
            source["uri"] = json!(format!("git+{url}"));
        }
        deps.push(source);
    }
    if let Some(r) = &facts.recipe {
        if let Some(lock) = &r.lock_sha256 {
            deps.push(json!({"name": "Cargo.lock", "digest": {"sha256": lock}}));
        }
        if let Some(line) = &r.rustc {
            let mut rustc = json!({"name": "rustc", "annotations": {"version": line}});
            if let Some(v) = line.split_whitespace().nth(1) {
                rustc["uri"] = json!(format!("pkg:generic/rustc@{v}"));
            }
            if let Some(commit) = &r.rustc_commit {
                rustc["digest"] = json!({"gitCommit": commit});
            }
            if r.std_from_source {
                rustc["annotations"]["standardLibrary"] = json!("built from source (-Zbuild-std)");
            }
            deps.push(rustc);
        }
    }
    if let Some(zig) = &facts.zig {
        let version = zig.trim_start_matches("zig ").trim();
        deps.push(json!({"name": "zig", "uri": format!("pkg:generic/zig@{version}")}));
    }
    if let Some(name) = crate::build::runtime::own_allocator(&contents.crates) {
        if let Some(c) = contents.crates.iter().skip(1).find(|c| c.name == name) {
            let mut allocator = json!({
                "name": "allocator",
                "uri": format!("pkg:cargo/{}@{}", c.name, c.version),
            });
            if let Some(sum) = &c.checksum {
                allocator["digest"] = json!({"sha256": sum});
            }
            deps.push(allocator);
        }
    }
    if let Some(from) = &spec.from {
        let digest = from
            .for_platform(platform)
            .and_then(|p| p.manifest_digest.clone())
            .or_else(|| from.digest.clone());
        let mut base = json!({"name": "base", "annotations": {"reference": from.name}});
        if let Some((registry, repository)) = &from.remote {
            base["uri"] = json!(format!("oci://{registry}/{repository}"));
        }
        if let Some((algorithm, hex)) = digest.as_deref().and_then(|d| d.split_once(':')) {
            base["digest"] = json!({ algorithm: hex });
        }
        deps.push(base);
    }
    if let Some(sum) = &facts.binary_sha256 {
        deps.push(json!({"name": "binary", "digest": {"sha256": sum}}));
    }
    let tool = env!("CARGO_PKG_VERSION");
    deps.push(json!({
        "name": "cargo-microimage",
        "uri": format!("pkg:cargo/cargo-microimage@{tool}"),
    }));

    let hex = crate::blob::hex(&manifest.digest).to_string();
    let statement = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": spec.name.repository, "digest": {"sha256": hex}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": external,
                "resolvedDependencies": deps,
            },
            "runDetails": {
                "builder": {
                    "id": BUILDER_ID,
                    "version": {"cargo-microimage": tool},
                },
            },
        },
    });
    canonical_json(&statement)
}

/// The image options that shaped the image. Values a user might keep secret are left
/// out: `--env` gives its keys only (the values are in the image's config anyway, where
/// whoever can pull it reads them), and a CA bundle file is named by kind, not by path.
fn image_options(spec: &ImageSpec) -> Value {
    let ca_certs = match &spec.base.ca_certs {
        CaCerts::Bundled => "bundled",
        CaCerts::Host => "host",
        CaCerts::Path(_) => "file",
        CaCerts::None => "none",
    };
    let env: Vec<&str> = spec.env.iter().map(|(k, _)| k.as_str()).collect();
    let include: Vec<String> = spec.include.iter().map(|i| i.dest.clone()).collect();
    let mut image = json!({
        "name": spec.name.to_string(),
        "user": spec.user,
        "workdir": spec.workdir,
        "args": spec.args,
        "envKeys": env,
        "expose": spec.expose,
        "caCerts": ca_certs,
        "tzdata": spec.base.tzdata,
        "include": include,
        "compression": spec.compression.to_string(),
        "compressionLevel": spec.codec().level,
        "auditable": spec.auditable,
        "sourceDateEpoch": spec.source_date_epoch,
    });
    if let Some(from) = &spec.from {
        image["base"] = json!(from.name);
    }
    image
}

/// `url` when it is a network URL with nothing secret in it (`https://host/repo`,
/// `ssh://host/repo`): a local path would say where the checkout is; a URL with user
/// information (`https://user:token@…`, `git@host:path`, `ssh://git@…`), a query or a
/// fragment (`?access_token=…`) could carry a credential, and is left out whole.
fn public_url(url: &str) -> Option<String> {
    let url = url.trim();
    let (scheme, rest) = url.split_once("://")?;
    let host_end = rest.find('/').unwrap_or(rest.len());
    let secretive = rest[..host_end].contains('@') || rest.contains(['?', '#']);
    (!scheme.is_empty() && scheme != "file" && !secretive).then(|| url.to_string())
}

/// The provenance referrers of every platform image of `set`, added to the set: each a
/// statement (or, with `key`, a signed bundle) about its platform manifest.
pub fn attach(
    set: &mut ImageSet,
    spec: &ImageSpec,
    contents: &[Contents],
    facts: &[Facts],
    key: Option<&crate::sign::Key>,
) -> Result<()> {
    let created = spec.created()?;
    let mut made = Vec::new();
    for (i, image) in set.images.iter().enumerate() {
        let none = (Contents::default(), Facts::default());
        let contents = contents.get(i).unwrap_or(&none.0);
        let facts = facts.get(i).unwrap_or(&none.1);
        let statement = statement(spec, image.platform, &image.manifest, contents, facts)?;
        made.push(match key {
            None => referrer(
                STATEMENT_MEDIA_TYPE,
                statement,
                PREDICATE_TYPE,
                &image.manifest,
                &created,
            )?,
            Some(key) => {
                signed_referrer(key, &statement, PREDICATE_TYPE, &image.manifest, &created)?
            }
        });
    }
    set.add_referrers(made);
    Ok(())
}

/// Signatures in cosign 3's format, with `key`, of the index and every platform manifest
/// of `set`, added to it as referrers: for each, a Sigstore bundle holding an in-toto
/// statement about that digest (predicate type [`SIGN_PREDICATE_TYPE`], empty predicate)
/// in a signed DSSE envelope. Unlike cosign's older `.sig` tags they name no repository,
/// so they can be made before the image is anywhere: in a layout or an archive too.
/// The subjects are named by the set's repository; the bundles' creation time is its
/// source date epoch.
pub fn sign(set: &mut ImageSet, key: &crate::sign::Key) -> Result<()> {
    let repository = set.name.repository.clone();
    let created = crate::image::rfc3339(set.source_date_epoch)?;
    let subjects = std::iter::once(&set.index).chain(set.images.iter().map(|i| &i.manifest));
    let mut made = Vec::new();
    for subject in subjects {
        if signed_by(set, &subject.digest, key) {
            continue;
        }
        let statement = canonical_json(&json!({
            "_type": STATEMENT_TYPE,
            "subject": [{
                "name": &repository,
                "digest": {"sha256": crate::blob::hex(&subject.digest)},
            }],
            "predicateType": SIGN_PREDICATE_TYPE,
            "predicate": {},
        }))?;
        made.push(signed_referrer(
            key,
            &statement,
            SIGN_PREDICATE_TYPE,
            subject,
            &created,
        )?);
    }
    set.add_referrers(made);
    Ok(())
}

/// Whether `set` already holds a cosign 3 signature of `subject` by `key` (a layout signed
/// when it was built, then merged and signed again): one is enough.
fn signed_by(set: &ImageSet, subject: &oci_spec::image::Digest, key: &crate::sign::Key) -> bool {
    set.referrers
        .iter()
        .filter(|r| r.subject == *subject)
        .filter(|r| r.predicate_type.as_deref() == Some(SIGN_PREDICATE_TYPE))
        .any(|r| {
            let bundle =
                serde_json::from_slice::<Value>(&r.manifest.data.to_vec().unwrap_or_default())
                    .ok()
                    .and_then(|m| m["layers"][0]["digest"].as_str().map(str::to_string))
                    .and_then(|d| set.blobs.get(&d))
                    .and_then(|b| b.data.to_vec().ok())
                    .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
            bundle.is_some_and(|b| crate::sign::bundle_signed_by(&b, key))
        })
}

/// The predicate type of cosign 3's image signatures.
pub const SIGN_PREDICATE_TYPE: &str = "https://sigstore.dev/cosign/sign/v1";

/// A referrer of `subject` holding `doc` (`media_type`, which is also its artifact type).
fn referrer(
    media_type: &str,
    doc: Vec<u8>,
    predicate_type: &str,
    subject: &Blob,
    created: &str,
) -> Result<(Referrer, Blob)> {
    let annotation = match media_type {
        BUNDLE_MEDIA_TYPE => BUNDLE_PREDICATE_ANNOTATION,
        _ => PREDICATE_ANNOTATION,
    };
    let mut annotations = BTreeMap::from([(annotation.to_string(), predicate_type.to_string())]);
    if media_type == BUNDLE_MEDIA_TYPE {
        annotations.insert(
            BUNDLE_CONTENT_ANNOTATION.to_string(),
            "dsse-envelope".to_string(),
        );
    }
    let doc = Blob::new(MediaType::Other(media_type.into()), doc);
    let manifest =
        crate::image::artifact_manifest(media_type, &doc, subject, created, annotations)?;
    Ok((
        Referrer {
            subject: subject.digest.clone(),
            artifact_type: media_type.to_string(),
            predicate_type: Some(predicate_type.to_string()),
            manifest,
        },
        doc,
    ))
}

/// A referrer of `subject` holding `statement` signed with `key` in a Sigstore bundle.
fn signed_referrer(
    key: &crate::sign::Key,
    statement: &[u8],
    predicate_type: &str,
    subject: &Blob,
    created: &str,
) -> Result<(Referrer, Blob)> {
    let bundle = crate::sign::dsse_bundle(key, STATEMENT_MEDIA_TYPE, statement)?;
    referrer(BUNDLE_MEDIA_TYPE, bundle, predicate_type, subject, created)
}

/// The predicate type a referrer's annotations name (an unsigned statement's, or a
/// Sigstore bundle's).
pub fn predicate_of(annotations: &BTreeMap<String, String>) -> Option<String> {
    annotations
        .get(PREDICATE_ANNOTATION)
        .or_else(|| annotations.get(BUNDLE_PREDICATE_ANNOTATION))
        .cloned()
}

/// What an artifact type and its annotations say it is, for `inspect`: the predicate
/// type of the statement it holds and whether it is signed, when it holds one.
pub fn describe(
    artifact_type: &str,
    annotations: &BTreeMap<String, String>,
) -> Option<(String, bool)> {
    match artifact_type {
        STATEMENT_MEDIA_TYPE => Some((predicate_of(annotations)?, false)),
        BUNDLE_MEDIA_TYPE => Some((predicate_of(annotations)?, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_network_urls_without_credentials_are_recorded() {
        assert_eq!(
            public_url("https://github.com/o/r").as_deref(),
            Some("https://github.com/o/r")
        );
        assert_eq!(public_url("https://user:token@github.com/o/r"), None);
        assert_eq!(public_url("https://token@github.com/o/r"), None);
        assert_eq!(public_url("file:///home/me/src"), None);
        assert_eq!(public_url("/home/me/src"), None);
        assert_eq!(public_url("ssh://git@host/r"), None);
        // A token in the query was recorded before.
        assert_eq!(public_url("https://host/r.git?access_token=s3cret"), None);
        assert_eq!(public_url("https://host/r.git#s3cret"), None);
        assert_eq!(public_url("git@github.com:o/r.git"), None);
    }

    #[test]
    fn modes_parse() {
        assert_eq!("slsa".parse::<Mode>().unwrap(), Mode::Slsa);
        assert_eq!("none".parse::<Mode>().unwrap(), Mode::None);
        assert!("spdx".parse::<Mode>().is_err());
    }
}
