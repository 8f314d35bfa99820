//! `cargo microimage push`: `build`, with the images sent to a registry.

use crate::error::{Error, Result};
use crate::image::ImageName;
use crate::registry::ConnectOptions;
use crate::sinks::registry::Target;

/// `push`: where to, and how to connect.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// `registry/repository:tag` as given.
    pub reference: Option<String>,
    /// `$MICROIMAGE_REPO` (read by the CLI with its other defaults): without a reference,
    /// each image goes to `<repository>/<bin>:<tag>`.
    pub default_repository: Option<String>,
    /// Extra tags for the same repository.
    pub tags: Vec<String>,
    pub options: ConnectOptions,
    /// `--sign-key`, read (and opened) before anything is built.
    pub sign: Option<std::sync::Arc<crate::sign::Key>>,
    /// `--by-digest`: no tag; REFERENCE is `registry/repository`.
    pub by_digest: bool,
}

impl PushRequest {
    /// The registry target for an image of `bin` whose tag is `tag`, `images` being the
    /// number of images this run makes.
    pub(crate) fn target(&self, bin: &str, tag: &str, images: usize) -> Result<Target> {
        let reference = match (&self.reference, &self.default_repository) {
            (Some(_), _) if images > 1 => {
                return Err(Error::usage(format!("one REFERENCE given, but {images} images are built"))
                    .with_help("leave REFERENCE out and set MICROIMAGE_REPO: each image goes to $MICROIMAGE_REPO/<bin>:<version>"))
            }
            (Some(r), _) => r.clone(),
            (None, Some(repo)) if !repo.trim().is_empty() && self.by_digest => {
                format!("{}/{bin}", repo.trim().trim_end_matches('/'))
            }
            (None, Some(repo)) if !repo.trim().is_empty() => {
                format!("{}/{bin}:{tag}", repo.trim().trim_end_matches('/'))
            }
            (None, _) => {
                return Err(Error::usage("push needs a destination: a REFERENCE or $MICROIMAGE_REPO")
                    .with_help("e.g. `cargo microimage push ghcr.io/you/app:1.0`, or `MICROIMAGE_REPO=ghcr.io/you cargo microimage push`"))
            }
        };
        for t in &self.tags {
            if t.contains([':', '/', '@']) || ImageName::parse(&format!("x:{t}")).is_err() {
                return Err(Error::usage(format!("--tag `{t}`: with push, --tag adds a tag (like `latest`) to the pushed repository")));
            }
        }
        if self.by_digest && !self.tags.is_empty() {
            return Err(Error::usage(
                "--by-digest pushes no tag, but --tag asks for one",
            )
            .with_help("tag the image when its platforms are merged: `cargo microimage merge --push REF:TAG --tag T …`, or drop --by-digest"));
        }
        let reference = if self.by_digest {
            crate::registry::reference::parse_repository(&reference)?
        } else {
            crate::registry::reference::parse_reference(&reference)?
        };
        Ok(Target {
            reference,
            tags: self.tags.clone(),
            options: self.options.clone(),
            sign: self.sign.clone(),
            by_digest: self.by_digest,
            mounts: Default::default(),
        })
    }
}

/// `cargo microimage push`: `build`, with every image sent to the registry of
/// `request.push` (else `$MICROIMAGE_REPO`) instead of written to disk.
pub fn push(
    request: &super::BuildRequest,
    image: &crate::settings::ImageArgs,
    shell: &crate::shell::Shell,
) -> Result<Vec<super::Outcome>> {
    let mut request = request.clone();
    request.push.get_or_insert_with(PushRequest::default);
    super::build(
        &request,
        image,
        &crate::sinks::OutputOptions::default(),
        shell,
    )
}
