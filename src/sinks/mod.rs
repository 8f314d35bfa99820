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
                write(set, destination)?;
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
        let path = crate::shell::path_text(&self.path);
        match self.format {
            Format::DockerArchive => format!("docker-archive:{path}"),
            f => format!("{}:{path}:{}", f.transport(), set.name.tag),
        }
    }
}

/// Writes `set` to `dest`, atomically.
pub fn write(set: &ImageSet, dest: &Destination) -> Result<()> {
    match dest.format {
        Format::Oci => atomic_dir(&dest.path, |dir| layout::write(set, dir)),
        Format::OciArchive => atomic_file(&dest.path, |file| archive::write_oci(set, file)),
        Format::DockerArchive => atomic_file(&dest.path, |file| archive::write_docker(set, file)),
    }
}

/// Builds a directory under a temporary name beside `dest`, then swaps it into place.
///
/// An existing `dest` is replaced only if it is an OCI layout (has an `oci-layout` file)
/// or empty, so `-o .` or a typo cannot wipe an unrelated directory.
pub fn atomic_dir(dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let parent = parent_of(dest)?;
    if dest.exists() {
        let replaceable = dest.is_dir()
            && (dest.join("oci-layout").is_file()
                || fs::read_dir(dest)
                    .path_context("reading", dest)?
                    .next()
                    .is_none());
        if !replaceable {
            return Err(Error::output(format!(
                "refusing to replace `{}`: it exists and is not an OCI image layout",
                dest.display()
            ))
            .with_help("pass another -o path, or remove it first"));
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".microimage-")
        .tempdir_in(parent)
        .path_context("creating a temporary directory in", parent)?;
    fill(tmp.path())?;
    set_mode(tmp.path(), 0o755)?;
    if dest.exists() {
        // Swap new and old in one step; the old one is then deleted with `tmp`.
        rustix::fs::renameat_with(
            rustix::fs::CWD,
            tmp.path(),
            rustix::fs::CWD,
            dest,
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| Error::io("replacing", dest, e.into()))?;
    } else {
        fs::rename(tmp.path(), dest).path_context("creating", dest)?;
    }
    Ok(())
}

/// Writes a file under a temporary name beside `dest`, then renames it into place.
pub fn atomic_file(dest: &Path, fill: impl FnOnce(&mut fs::File) -> Result<()>) -> Result<()> {
    let parent = parent_of(dest)?;
    if dest.is_dir() {
        return Err(
            Error::output(format!("`{}` is a directory, not a file", dest.display())).with_help(
                "pass a path ending in .tar for an archive, or drop --format for a layout",
            ),
        );
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(".microimage-")
        .tempfile_in(parent)
        .path_context("creating a temporary file in", parent)?;
    fill(tmp.as_file_mut())?;
    tmp.as_file_mut().flush().path_context("writing", dest)?;
    set_mode(tmp.path(), 0o644)?;
    tmp.persist(dest)
        .map_err(|e| Error::io("creating", dest, e.error))?;
    Ok(())
}

fn parent_of(dest: &Path) -> Result<&Path> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Error::output(format!("`{}` has no parent directory", dest.display())))?;
    fs::create_dir_all(parent).path_context("creating", parent)?;
    Ok(parent)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .path_context("setting permissions of", path)
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
    fn atomic_dir_keeps_the_old_output_when_filling_fails() {
        let t = tempfile::tempdir().unwrap();
        let dest = t.path().join("out");
        atomic_dir(&dest, |d| {
            fs::write(d.join("oci-layout"), "1").unwrap();
            Ok(())
        })
        .unwrap();
        let err = atomic_dir(&dest, |d| {
            fs::write(d.join("oci-layout"), "2").unwrap();
            Err(Error::output("boom"))
        });
        assert!(err.is_err());
        assert_eq!(fs::read_to_string(dest.join("oci-layout")).unwrap(), "1");
        atomic_dir(&dest, |d| {
            fs::write(d.join("oci-layout"), "3").unwrap();
            Ok(())
        })
        .unwrap();
        assert_eq!(fs::read_to_string(dest.join("oci-layout")).unwrap(), "3");
        // Nothing temporary is left next to it.
        assert_eq!(fs::read_dir(t.path()).unwrap().count(), 1);
    }

    #[test]
    fn atomic_dir_refuses_to_replace_other_directories() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("precious"), "x").unwrap();
        let err = atomic_dir(t.path(), |_| Ok(())).unwrap_err();
        assert!(err.message().contains("not an OCI image layout"));
        assert!(t.path().join("precious").exists());
    }
}
