//! The OCI image layout sink: `oci-layout`, `index.json`, `blobs/sha256/<hex>`.
//!
//! Our entry in `index.json` points at the image index, annotated with the tag in
//! `org.opencontainers.image.ref.name` (so `skopeo inspect oci:DIR:TAG` and
//! `podman run oci:DIR:TAG` find it) and the full name in `io.containerd.image.name`.
//!
//! Writing into a layout that already exists keeps everything else in it, as skopeo does:
//! the new blobs are added (each under a temporary name, all synced, then renamed), then
//! `index.json` is replaced in one rename with every other entry kept and only the entry
//! of our tag replaced; blobs that only the replaced entry used are removed afterwards. A
//! reader sees the old layout or the new one, never a mix. A new layout is built under a
//! temporary name and renamed into place. A directory that is not a layout (and not
//! empty) is never written into.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::Path;

use oci_spec::image::{ImageIndexBuilder, MediaType};
use serde_json::Value;

use crate::blob;
use crate::error::{Error, IoContext, Result};
use crate::guard::{self, Temporary, PREFIX};
use crate::image::{annotated, canonical_json, ImageSet};
use crate::shell::Shell;

/// The content of the `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Our `index.json` entry for `set`.
fn entry(set: &ImageSet) -> oci_spec::image::Descriptor {
    annotated(
        set.index.descriptor(),
        &[
            (REF_NAME, set.name.tag.clone()),
            ("io.containerd.image.name", set.name.to_string()),
        ],
    )
}

/// The `index.json` entries of `set`'s referrers (SBOMs): no tag, so `oci:DIR:TAG` still
/// names one image, with the `artifactType` that says what each is.
fn referrer_entries(set: &ImageSet) -> Vec<oci_spec::image::Descriptor> {
    set.referrers
        .iter()
        .map(|r| {
            let mut d = r.manifest.descriptor();
            d.set_artifact_type(Some(MediaType::Other(r.artifact_type.clone())));
            d
        })
        .collect()
}

/// A layout's `index.json` holding `set` alone (and its referrers).
pub fn index_json(set: &ImageSet) -> Result<Vec<u8>> {
    let mut manifests = vec![entry(set)];
    manifests.extend(referrer_entries(set));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .map_err(|e| Error::output(format!("building index.json failed: {e}")))?;
    canonical_json(&index)
}

/// A file written under a temporary name in its directory, its writeback to disk started
/// but not waited for: [`Batch::finish`] syncs it and renames it to its name once every
/// file of the batch is written. The disk writes of all of them then overlap, and each
/// `fsync` finds its data on its way (on ext4, 12 small files and a layer took 3 ms so,
/// 7 ms synced one after the other); what `fsync` guarantees is unchanged, and no file
/// written here is under its name before it is on disk (a blob linked in from the spill
/// directory is, as before: it is synced with the batch, before `index.json` names it).
/// A batch holds one descriptor per file until it finishes.
struct Pending {
    tmp: tempfile::NamedTempFile,
    path: std::path::PathBuf,
    _registered: Temporary,
}

/// The files of one write, synced and put in place together.
#[derive(Default)]
struct Batch {
    pending: Vec<Pending>,
    /// Files already under their names (blobs linked in) that still need syncing.
    linked: Vec<(fs::File, std::path::PathBuf)>,
}

impl Batch {
    /// Writes a file into `dir` under a temporary name, filled by `fill`, and starts its
    /// writeback.
    fn put_with(
        &mut self,
        dir: &Path,
        name: &str,
        fill: impl FnOnce(&mut fs::File) -> std::io::Result<()>,
    ) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        let mut tmp = tempfile::Builder::new()
            .prefix(PREFIX)
            .permissions(fs::Permissions::from_mode(0o666))
            .tempfile_in(dir)
            .path_context("creating a temporary file in", dir)?;
        let registered = Temporary::register(tmp.path());
        fill(tmp.as_file_mut()).path_context("writing", &path)?;
        start_writeback(tmp.as_file());
        self.pending.push(Pending {
            tmp,
            path,
            _registered: registered,
        });
        Ok(())
    }

    /// [`Batch::put_with`] for bytes in memory.
    fn put(&mut self, dir: &Path, name: &str, data: &[u8]) -> Result<()> {
        self.put_with(dir, name, |f| f.write_all(data))
    }

    /// Syncs every file of the batch, then renames each written one to its name.
    fn finish(self) -> Result<()> {
        for p in &self.pending {
            p.tmp
                .as_file()
                .sync_all()
                .path_context("writing", &p.path)?;
        }
        for (file, path) in &self.linked {
            file.sync_all().path_context("writing", path)?;
        }
        for p in self.pending {
            p.tmp
                .persist(&p.path)
                .map_err(|e| Error::io("writing", &p.path, e.error))?;
        }
        Ok(())
    }
}

/// Asks the kernel to start writing `file`'s data to disk now, without waiting (Linux's
/// `sync_file_range`; a hint, so elsewhere nothing). The `fsync` that follows still waits
/// for all of it.
fn start_writeback(file: &fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::io::AsRawFd;
        // SAFETY: a plain syscall on a descriptor this function borrows; no memory is
        // passed. Its result is ignored: it is only a hint.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Writes a file into `dir` through a temporary name: filled by `fill`, synced, renamed.
fn put(dir: &Path, name: &str, data: &[u8]) -> Result<()> {
    let mut batch = Batch::default();
    batch.put(dir, name, data)?;
    batch.finish()
}

/// Writes the blobs of `set` that `blobs` (a `blobs/sha256` directory) lacks into `batch`.
fn put_blobs(set: &ImageSet, blobs: &Path, batch: &mut Batch) -> Result<()> {
    fs::create_dir_all(blobs).path_context("creating", blobs)?;
    for b in set.blobs.values() {
        let name = blob::hex(&b.digest);
        // Content-addressed: a blob of the right size under its digest is that blob.
        if fs::metadata(blobs.join(name)).is_ok_and(|m| m.len() == b.size()) {
            continue;
        }
        match &b.data {
            blob::Data::Memory(bytes) => batch.put(blobs, name, bytes)?,
            blob::Data::File(_) | blob::Data::Remote(_) => put_file(blobs, name, &b.data, batch)?,
        }
    }
    Ok(())
}

/// Writes a blob that is on disk into `dir`: linked when it is a file of this run on the
/// same file system (no copy), else copied.
fn put_file(dir: &Path, name: &str, data: &blob::Data, batch: &mut Batch) -> Result<()> {
    let path = dir.join(name);
    let link = dir.join(format!("{PREFIX}{name}.link"));
    if data.link_as(&link, &path).is_ok() {
        // Synced where it now is with the batch (before the directory is, and before
        // index.json names it).
        let file = fs::File::open(&path).path_context("writing", &path)?;
        start_writeback(&file);
        batch.linked.push((file, path));
        return Ok(());
    }
    batch.put_with(dir, name, |f| {
        std::io::copy(&mut data.reader(), f).map(drop)
    })
}

/// Writes `set` into the OCI layout at `dest`: a new one, or an existing one whose other
/// images are kept. `dest` may be a symlink to a directory (written through).
pub fn write_into(set: &ImageSet, dest: &Path, shell: &Shell) -> Result<()> {
    let dest = super::through_symlink(dest)?;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| Error::output(format!("`{}` has no parent directory", dest.display())))?;
    let lock = guard::lock(parent, shell)?;
    guard::clean_stale(parent, &lock);
    match fs::metadata(&dest) {
        Ok(m) if m.is_dir() && dest.join("oci-layout").is_file() => {
            guard::clean_stale(&dest, &lock);
            merge(set, &dest, shell)
        }
        Ok(m) if m.is_dir() && is_empty(&dest)? => fill_new(set, &dest, parent),
        Ok(_) => Err(Error::output(format!(
            "refusing to replace `{}`: it exists and is not an OCI image layout",
            dest.display()
        ))
        .with_help("pass another -o path, or remove it first")),
        Err(_) => fill_new(set, &dest, parent),
    }
}

fn is_empty(dir: &Path) -> Result<bool> {
    Ok(fs::read_dir(dir)
        .path_context("reading", dir)?
        .next()
        .is_none())
}

/// A new layout: built in a temporary directory beside `dest`, then renamed into place
/// (over an empty directory, if one is there).
fn fill_new(set: &ImageSet, dest: &Path, parent: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::Builder::new()
        .prefix(PREFIX)
        .permissions(fs::Permissions::from_mode(0o777))
        .tempdir_in(parent)
        .path_context("creating a temporary directory in", parent)?;
    let _registered = Temporary::register(tmp.path());
    // Every file in one batch: nothing names the directory before the rename below, so
    // they are all synced (with the directories) before it, not one by one.
    let blobs = tmp.path().join("blobs").join("sha256");
    let mut batch = Batch::default();
    put_blobs(set, &blobs, &mut batch)?;
    batch.put(tmp.path(), "oci-layout", OCI_LAYOUT)?;
    batch.put(tmp.path(), "index.json", &index_json(set)?)?;
    batch.finish()?;
    guard::sync_dir(&blobs)?;
    guard::sync_dir(&tmp.path().join("blobs"))?;
    guard::sync_dir(tmp.path())?;
    if dest.exists() {
        // An empty directory: swap the new layout in, and the empty one out with `tmp`.
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
    guard::sync_dir(parent)
}

/// Adds `set` to the existing layout `dir`, replacing only the entry of its tag.
fn merge(set: &ImageSet, dir: &Path, shell: &Shell) -> Result<()> {
    let index_path = dir.join("index.json");
    let text = fs::read(&index_path).path_context("reading", &index_path)?;
    let mut index: Value = serde_json::from_slice(&text).map_err(|e| {
        Error::output(format!(
            "`{}` is not valid JSON ({e}), so the layout cannot be added to",
            index_path.display()
        ))
        .with_help("pass another -o path, or repair or remove the layout")
    })?;
    let tag = &set.name.tag;
    let Some(entries) = index.get_mut("manifests").and_then(Value::as_array_mut) else {
        return Err(Error::output(format!(
            "`{}` has no `manifests` list, so the layout cannot be added to",
            index_path.display()
        )));
    };
    let blobs = dir.join("blobs").join("sha256");
    let ours = |e: &Value| e["annotations"][REF_NAME].as_str() == Some(tag.as_str());
    let mut replaced: Vec<Value> = entries.iter().filter(|e| ours(e)).cloned().collect();
    let at = entries.iter().position(ours).unwrap_or(entries.len());
    // The referrers (SBOMs, provenance, signatures) of the image being replaced go with
    // it: those of its platform manifests and those of its index.
    let mut old_manifests = manifests_of(&blobs, &replaced);
    old_manifests.extend(
        replaced
            .iter()
            .filter_map(|e| e["digest"].as_str().map(String::from)),
    );
    let about_old = |e: &Value| {
        e["annotations"][REF_NAME].is_null()
            && subject_of(&blobs, e).is_some_and(|s| old_manifests.contains(&s))
    };
    replaced.extend(entries.iter().filter(|e| about_old(e)).cloned());
    entries.retain(|e| !ours(e) && !about_old(e));
    let mut new_entries = vec![entry(set)];
    new_entries.extend(referrer_entries(set));
    let at = at.min(entries.len());
    for (i, d) in new_entries.into_iter().enumerate() {
        let value = serde_json::to_value(d)
            .map_err(|e| Error::output(format!("serialising index.json failed: {e}")))?;
        entries.insert(at + i, value);
    }
    let kept_roots: Vec<String> = entries
        .iter()
        .filter_map(|e| e["digest"].as_str().map(String::from))
        .collect();

    let mut batch = Batch::default();
    put_blobs(set, &blobs, &mut batch)?;
    batch.finish()?;
    guard::sync_dir(&blobs)?;
    warn_if_platforms_dropped(&replaced, set, &blobs, &dir.display().to_string(), shell);
    let json = serde_json::to_vec(&index).expect("a JSON value always serialises");
    put(dir, "index.json", &json)?;
    guard::sync_dir(dir)?;

    // Blobs that only the replaced entry used: nothing in the layout refers to them now.
    let old_roots: Vec<String> = replaced
        .iter()
        .filter_map(|e| e["digest"].as_str().map(String::from))
        .collect();
    let unused = reachable(&blobs, &old_roots);
    let used = reachable(&blobs, &kept_roots);
    for digest in unused.difference(&used) {
        let _ = fs::remove_file(blobs.join(digest.trim_start_matches("sha256:")));
    }
    Ok(())
}

/// The JSON of a blob of the layout, if it is JSON of modest size.
fn json_blob(blobs: &Path, digest: &str) -> Option<Value> {
    let path = blobs.join(digest.strip_prefix("sha256:")?);
    if fs::metadata(&path).map_or(true, |m| m.len() > 4 << 20) {
        return None;
    }
    serde_json::from_slice(&fs::read(path).ok()?).ok()
}

/// The platform manifests of the image indexes `entries` point at.
fn manifests_of(blobs: &Path, entries: &[Value]) -> BTreeSet<String> {
    entries
        .iter()
        .filter_map(|e| json_blob(blobs, e["digest"].as_str()?))
        .flat_map(|index| {
            index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["digest"].as_str().map(String::from))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The `subject` of the manifest an entry points at, if it has one.
fn subject_of(blobs: &Path, entry: &Value) -> Option<String> {
    let manifest = json_blob(blobs, entry["digest"].as_str()?)?;
    manifest["subject"]["digest"].as_str().map(String::from)
}

/// Every blob reachable from `roots` in a layout's `blobs/sha256`: indexes and manifests
/// are read and followed (`manifests`, `config`, `layers`, `blobs`); other blobs are leaves.
fn reachable(blobs: &Path, roots: &[String]) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<String> = roots.to_vec();
    while let Some(digest) = stack.pop() {
        if !seen.insert(digest.clone()) {
            continue;
        }
        let Some(hex) = digest.strip_prefix("sha256:") else {
            continue;
        };
        // Only JSON blobs of modest size can be manifests or indexes.
        let path = blobs.join(hex);
        if fs::metadata(&path).map_or(true, |m| m.len() > 4 << 20) {
            continue;
        }
        let Ok(value) = serde_json::from_slice::<Value>(&fs::read(&path).unwrap_or_default())
        else {
            continue;
        };
        let children = ["manifests", "layers", "blobs"]
            .iter()
            .filter_map(|k| value.get(k).and_then(Value::as_array))
            .flatten()
            .chain(value.get("config"));
        stack.extend(
            children.filter_map(|d| d.get("digest").and_then(Value::as_str).map(String::from)),
        );
    }
    seen
}

/// Says so when the image that had this tag had platforms the new one lacks (a build
/// without `--platform` after `--platform all`, to the same default output).
fn warn_if_platforms_dropped(
    replaced: &[Value],
    set: &ImageSet,
    blobs: &Path,
    dir: &str,
    shell: &Shell,
) {
    let new: BTreeSet<String> = set.images.iter().map(|i| i.platform.short_name()).collect();
    for old in replaced {
        let Some(hex) = old["digest"]
            .as_str()
            .and_then(|d| d.strip_prefix("sha256:"))
        else {
            continue;
        };
        let Ok(index) = fs::read(blobs.join(hex))
            .map_err(|_| ())
            .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
        else {
            continue;
        };
        let old_platforms: BTreeSet<String> = index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                let p = &m["platform"];
                Some(format!(
                    "{}/{}",
                    p["os"].as_str()?,
                    p["architecture"].as_str()?
                ))
            })
            .collect();
        let dropped: Vec<&String> = old_platforms.difference(&new).collect();
        if !dropped.is_empty() {
            shell.warn(format!(
                "`{dir}` held `{}` for {}; it is replaced by an image for {} only (pass --platform {} to keep them all)",
                set.name,
                old_platforms.iter().cloned().collect::<Vec<_>>().join(", "),
                new.iter().cloned().collect::<Vec<_>>().join(", "),
                old_platforms.union(&new).cloned().collect::<Vec<_>>().join(",")
            ));
        }
    }
}
