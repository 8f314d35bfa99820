//! Sinks for a finished [`ImageSet`]: an OCI image layout directory ([`layout`]), an OCI
//! archive or a docker-archive ([`archive`]), a registry ([`registry`]), the local podman
//! or docker ([`load`]). One image may go to several ([`deliver`], the shape of ko's
//! MultiPublisher); every sink gets the same image, and nothing in the earlier stages knows
//! where it goes.
//!
//! Every write is atomic: the output is built under a temporary name next to its
//! destination and renamed into place only when complete, so a failed or interrupted run
//! leaves no half-written output and never damages a previous good one.

pub mod archive;
pub mod layout;
pub mod load;
pub mod registry;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::guard;
use crate::image::ImageSet;
use crate::shell::Shell;

/// OUTPUT options from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputOptions {
    pub output: Option<PathBuf>,
    pub format: Option<Format>,
    /// `--load`: also hand the image to a local engine.
    pub load: Option<load::Engine>,
}

/// One destination of an image.
#[derive(Debug, Clone)]
pub enum Sink {
    Disk(Destination),
    Registry(registry::Target),
    Load(load::Engine),
}

/// Where an image went.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    pub destination: Option<Destination>,
    pub pushed: Option<registry::Pushed>,
}

/// Hands `set` to each sink in turn; the first failure stops the rest.
pub fn deliver(set: &ImageSet, sinks: &[Sink], shell: &Shell) -> Result<Delivered> {
    let mut delivered = Delivered::default();
    for sink in sinks {
        match sink {
            Sink::Disk(destination) => {
                write(set, destination, shell)?;
                delivered.destination = Some(destination.clone());
            }
            Sink::Registry(target) => delivered.pushed = Some(registry::push(set, target, shell)?),
            Sink::Load(engine) => load::load(set, *engine, shell)?,
        }
    }
    Ok(delivered)
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An OCI image layout directory.
    Oci,
    /// An OCI image layout in a tar file.
    OciArchive,
    /// The `docker save` format (`manifest.json`, uncompressed layers): what `docker load`
    /// of older engines and `podman load` take.
    DockerArchive,
}

impl Format {
    pub fn parse(s: &str) -> Result<Format> {
        match s {
            "oci" => Ok(Format::Oci),
            "oci-archive" => Ok(Format::OciArchive),
            "docker-archive" => Ok(Format::DockerArchive),
            other => Err(Error::usage(format!("unknown output format `{other}`"))
                .with_help("use --format oci, oci-archive or docker-archive")),
        }
    }

    /// The containers-transports prefix (`oci:`, `oci-archive:`, `docker-archive:`).
    pub fn transport(self) -> &'static str {
        match self {
            Format::Oci => "oci",
            Format::OciArchive => "oci-archive",
            Format::DockerArchive => "docker-archive",
        }
    }
}

/// Where an image goes on disk, and in which format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Absolute path.
    pub path: PathBuf,
    pub format: Format,
}

impl Destination {
    /// `-o PATH` and `--format`: a path ending in `.tar` is an archive (OCI unless
    /// `--format docker-archive`), anything else a layout directory; no `-o` means
    /// `default_dir` (a layout, or `default_dir.tar` for an archive format).
    pub fn resolve(
        output: Option<&Path>,
        format: Option<Format>,
        default_dir: &Path,
    ) -> Result<Destination> {
        let is_tar = |p: &Path| p.extension().is_some_and(|e| e == "tar");
        let (path, format) = match (output, format) {
            (Some(p), Some(Format::Oci)) if is_tar(p) => {
                return Err(Error::usage(format!(
                    "--format oci writes a directory, but `{}` ends in .tar",
                    p.display()
                ))
                .with_help("drop --format to write an OCI archive, or pick a directory name"))
            }
            (Some(p), Some(f)) => (p.to_path_buf(), f),
            (Some(p), None) if is_tar(p) => (p.to_path_buf(), Format::OciArchive),
            (Some(p), None) => (p.to_path_buf(), Format::Oci),
            (None, None | Some(Format::Oci)) => (default_dir.to_path_buf(), Format::Oci),
            (None, Some(f)) => (default_dir.with_extension("tar"), f),
        };
        let path = std::path::absolute(&path).path_context("resolving", &path)?;
        Ok(Destination { path, format })
    }

    /// The reference other tools take: `oci:/abs/dir:1.0`, `oci-archive:/abs/app.tar:1.0`,
    /// `docker-archive:/abs/app.tar`.
    pub fn reference(&self, set: &ImageSet) -> String {
        let path = crate::shell::path_text(&shown(&self.path));
        match self.format {
            Format::DockerArchive => format!("docker-archive:{path}"),
            f => format!("{}:{path}:{}", f.transport(), set.name.tag),
        }
    }
}

/// `path` as the result line shows it: with a `..` in it, through the real path of its
/// directory (which exists once the image is written), so `ws/app/../out` shows as
/// `ws/out`; otherwise as given.
fn shown(path: &Path) -> PathBuf {
    let climbs = path
        .components()
        .any(|c| c == std::path::Component::ParentDir);
    match (climbs, path.parent(), path.file_name()) {
        (true, Some(dir), Some(name)) => std::fs::canonicalize(dir)
            .map(|dir| dir.join(name))
            .unwrap_or_else(|_| path.to_path_buf()),
        _ => path.to_path_buf(),
    }
}

/// Writes `set` to `dest`: into an OCI layout (keeping its other images), or as an
/// archive replacing only an image archive. See [`layout::write_into`] and [`write_file`].
pub fn write(set: &ImageSet, dest: &Destination, shell: &Shell) -> Result<()> {
    match dest.format {
        Format::Oci => layout::write_into(set, &dest.path, shell),
        Format::OciArchive => write_file(&dest.path, Replace::ImageArchive, shell, |file| {
            archive::write_oci(set, file)
        }),
        Format::DockerArchive => write_file(&dest.path, Replace::ImageArchive, shell, |file| {
            archive::write_docker(set, file)
        }),
    }
}

/// What an existing file at the destination may be for [`write_file`] to replace it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replace {
    /// Only an image archive (a tar holding `oci-layout` and `index.json`, or
    /// `manifest.json`): never a user's other file.
    ImageArchive,
    /// Any regular file (`--image-refs`, which names the file it writes).
    AnyFile,
}

/// Writes a file atomically: under a temporary name beside `dest` (mode from the umask, as
/// any file a tool writes), synced, renamed into place, and the directory synced — with the
/// directory locked against other runs, and their stale temporaries removed. A `dest` that
/// is a symlink is written through to its target (the link stays); a dangling one, a
/// directory, or a file `replace` does not allow is refused.
pub fn write_file(
    dest: &Path,
    replace: Replace,
    shell: &Shell,
    fill: impl FnOnce(&mut fs::File) -> Result<()>,
) -> Result<()> {
    let target = through_symlink(dest)?;
    let parent = parent_of(&target)?;
    let lock = guard::lock(parent, shell)?;
    guard::clean_stale(parent, &lock);
    if let Ok(meta) = fs::metadata(&target) {
        if meta.is_dir() {
            return Err(
                Error::output(format!("`{}` is a directory, not a file", dest.display()))
                    .with_help(
                        "pass a path ending in .tar for an archive, or drop --format for a layout",
                    ),
            );
        }
        if !meta.is_file() {
            return Err(Error::output(format!(
                "refusing to replace `{}`: it is not a regular file",
                dest.display()
            )));
        }
        if replace == Replace::ImageArchive && !is_image_archive(&target) {
            return Err(Error::output(format!(
                "refusing to replace `{}`: it exists and is not an image archive",
                dest.display()
            ))
            .with_help("pass another -o path, or remove the file first"));
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(guard::PREFIX)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(parent)
        .path_context("creating a temporary file in", parent)?;
    let _registered = guard::Temporary::register(tmp.path());
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush().path_context("writing", dest)?;
    tmp.as_file().sync_all().path_context("writing", dest)?;
    tmp.persist(&target)
        .map_err(|e| Error::io("creating", dest, e.error))?;
    guard::sync_dir(parent)
}

/// `path`, or the path a symlink at `path` points to (resolved); a dangling link is refused.
pub fn through_symlink(path: &Path) -> Result<PathBuf> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => fs::canonicalize(path).map_err(|e| {
            Error::output(format!(
                "`{}` is a symlink to something that does not exist ({e})",
                path.display()
            ))
            .with_help("point -o at a real path, or remove the link")
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Whether `path` is a tar archive of an image (see [`crate::sources::archive_kind`]).
pub fn is_image_archive(path: &Path) -> bool {
    crate::sources::archive_kind(path).is_some()
}

fn parent_of(dest: &Path) -> Result<&Path> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Error::output(format!("`{}` has no parent directory", dest.display())))?;
    fs::create_dir_all(parent).path_context("creating", parent)?;
    Ok(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        let d = Path::new("/x/target/microimage/app");
        let r = |o: Option<&str>, f| Destination::resolve(o.map(Path::new), f, d);
        assert_eq!(r(None, None).unwrap().format, Format::Oci);
        assert_eq!(
            r(Some("/a/app.tar"), None).unwrap().format,
            Format::OciArchive
        );
        let da = r(None, Some(Format::DockerArchive)).unwrap();
        assert_eq!(da.path, Path::new("/x/target/microimage/app.tar"));
        assert!(r(Some("/a/app.tar"), Some(Format::Oci))
            .unwrap_err()
            .is_usage());
        assert!(r(Some("rel/dir"), None).unwrap().path.is_absolute());
    }

    #[test]
    fn only_image_archives_are_replaced() {
        let t = tempfile::tempdir().unwrap();
        let shell = Shell::new(crate::shell::Verbosity::Quiet);
        let notes = t.path().join("NOTES.md");
        fs::write(&notes, "mine").unwrap();
        let err = write_file(&notes, Replace::ImageArchive, &shell, |_| Ok(())).unwrap_err();
        assert!(err.message().contains("is not an image archive"), "{err}");
        assert_eq!(fs::read_to_string(&notes).unwrap(), "mine");
        // An image archive is replaced; a link to it is written through and stays a link.
        let archive = t.path().join("app.tar");
        fn tar_with(names: &'static [&'static str]) -> impl FnOnce(&mut fs::File) -> Result<()> {
            move |file| {
                let mut b = tar::Builder::new(file);
                for n in names {
                    let mut h = tar::Header::new_gnu();
                    h.set_size(0);
                    b.append_data(&mut h, n, std::io::empty()).unwrap();
                }
                b.finish().unwrap();
                Ok(())
            }
        }
        write_file(
            &archive,
            Replace::AnyFile,
            &shell,
            tar_with(&["manifest.json"]),
        )
        .unwrap();
        let link = t.path().join("link.tar");
        std::os::unix::fs::symlink(&archive, &link).unwrap();
        write_file(
            &link,
            Replace::ImageArchive,
            &shell,
            tar_with(&["oci-layout", "index.json"]),
        )
        .unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(is_image_archive(&archive));
        // Nothing temporary is left next to them.
        let left: Vec<_> = fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(guard::PREFIX))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
