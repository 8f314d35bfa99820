//! `cargo microimage merge`: platform images from several sources → one index.

use super::{Outcome, PushRequest};
use crate::error::{Error, Result};
use crate::image::ImageName;
use crate::registry::ConnectOptions;
use crate::shell::Shell;
use crate::sinks::registry::Target;
use crate::sinks::{Destination, OutputOptions, Sink};

/// What `merge` takes.
#[derive(Debug, Clone, Default)]
pub struct MergeRequest {
    /// Registry references, OCI layouts (`DIR[:TAG]`) and OCI archives (`FILE[:TAG]`).
    pub sources: Vec<std::ffi::OsString>,
    /// `--tag NAME[:TAG]` for an image written to disk, once at most (default: the name
    /// the sources carry, when they agree); with `--push` the tags are the push's.
    pub tags: Vec<String>,
    /// `--push REFERENCE` (with `--tag`s, `--by-digest`, `--sign-key`).
    pub push: Option<PushRequest>,
    /// Source registries are read with these (and `push`'s, when pushing).
    pub options: ConnectOptions,
    /// `--sign-key`, read before anything is read: signs what is pushed.
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
}

/// `cargo microimage merge`: the platform images of every source → one index, written to
/// disk or pushed (see [`crate::merge`]).
pub fn merge(request: &MergeRequest, output: &OutputOptions, shell: &Shell) -> Result<Outcome> {
    if request.push.is_none() {
        super::one_name(&request.tags)?;
    }
    // The mtime of an archive's entries.
    let source_date_epoch = crate::settings::source_date_epoch(None)?.unwrap_or(0);
    let sources = request
        .sources
        .iter()
        .map(|s| crate::sources::Source::parse(s))
        .collect::<Result<Vec<_>>>()?;
    // Everything the command line can get wrong, before anything is read.
    let target = push_target(request)?;
    let disk = disk_destination(target.as_ref(), output)?;
    let given_name = match &request.push {
        None => request
            .tags
            .first()
            .map(|n| ImageName::parse(n))
            .transpose()?,
        Some(_) => None,
    };
    let options = match &request.push {
        Some(push) => &push.options,
        None => &request.options,
    };
    let push_to = target.as_ref().map(|t| t.reference.registry().to_string());
    let read = crate::merge::read_sources(&sources, push_to.as_deref(), options, shell)?;
    // The sources are checked (platforms, kinds) before a missing name is asked for.
    let agreed = crate::merge::agreed_name(&read);
    let summary = summary(&read);
    let mut merged = crate::merge::combine(read, source_date_epoch)?;
    merged.set.name = merged_name(target.as_ref(), given_name, agreed)?;
    shell.status("Merging", format!("{} ({summary})", merged.set.name));
    let sink = match (target, disk) {
        (Some(mut target), _) => {
            target.mounts = merged
                .mounts
                .get(target.reference.registry())
                .cloned()
                .unwrap_or_default();
            Sink::Registry(target)
        }
        (None, Some(destination)) => Sink::Disk(destination),
        (None, None) => return Err(Error::usage("merge needs -o PATH or --push REFERENCE")),
    };
    deliver(merged.set, sink, request, shell)
}

/// Where `--push` sends the merged index, signed with `--sign-key` when given.
fn push_target(request: &MergeRequest) -> Result<Option<Target>> {
    request
        .push
        .as_ref()
        .map(|push| {
            if push.reference.is_none() {
                return Err(Error::usage("merge --push needs a REFERENCE"));
            }
            let mut target = push.target("", "", 1)?;
            target.sign = request.sign.clone().or(target.sign);
            Ok(target)
        })
        .transpose()
}

/// Where `-o` writes the merged index, when it is not pushed: a layout or an OCI archive.
fn disk_destination(
    target: Option<&Target>,
    output: &OutputOptions,
) -> Result<Option<Destination>> {
    match (target, output.output.as_deref()) {
        (Some(_), _) => Ok(None),
        (None, Some(path)) => {
            let destination = Destination::resolve(Some(path), output.format, path)?;
            if destination.format == crate::sinks::Format::DockerArchive {
                return Err(Error::usage(
                    "a docker-archive holds one platform's image, not an index",
                )
                .with_help("write the merged image as an OCI layout or an OCI archive (a path ending in .tar)"));
            }
            Ok(Some(destination))
        }
        (None, None) => Err(Error::usage("merge needs -o PATH or --push REFERENCE")
            .with_help("e.g. `cargo microimage merge -o app.tar amd64/ arm64/`")),
    }
}

/// `linux/amd64 from SOURCE, …`, for the Merging line.
fn summary(read: &[crate::merge::SourceImage]) -> String {
    read.iter()
        .flat_map(|s| {
            s.parts
                .iter()
                .map(move |p| format!("{} from {}", p.platform, s.label))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The merged image's name: the push's reference, else `--tag`, else the name every
/// source carries.
fn merged_name(
    target: Option<&Target>,
    given: Option<ImageName>,
    agreed: Option<String>,
) -> Result<ImageName> {
    match (target, given) {
        (Some(t), _) => ImageName::parse(&format!(
            "{}/{}:{}",
            t.reference.registry(),
            t.reference.repository(),
            t.reference.tag().unwrap_or("latest")
        )),
        (None, Some(name)) => Ok(name),
        (None, None) => match agreed {
            Some(name) => ImageName::parse(&name),
            None => Err(Error::usage("the sources carry no common image name")
                .with_help("name the merged image: --tag NAME[:TAG]")),
        },
    }
}

/// Signs the merged index with `--sign-key` and writes or pushes it.
fn deliver(
    mut set: crate::image::ImageSet,
    sink: Sink,
    request: &MergeRequest,
    shell: &Shell,
) -> Result<Outcome> {
    let key = request
        .sign
        .clone()
        .or_else(|| request.push.as_ref().and_then(|p| p.sign.clone()));
    if let Some(key) = key {
        super::sign_set(&mut set, &key, shell)?;
    }
    let delivered = crate::sinks::deliver(&set, &[sink], shell)?;
    shell.status(
        "Finished",
        format!(
            "{} ({} platforms): index {}",
            set.name,
            set.images.len(),
            set.index.digest
        ),
    );
    Ok(Outcome {
        set,
        destination: delivered.destination,
        pushed: delivered.pushed,
    })
}
