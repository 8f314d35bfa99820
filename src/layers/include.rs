//! The include layer (`--include SRC[:DEST]`, `include = [...]`): files and directories
//! copied into the image, deterministically — sorted by the layer writer, owned by root,
//! files 0644 or 0755 (only the executable bit is kept), directories 0755, mtime = the
//! source date epoch. Symlinks inside are kept as symlinks; anything that escapes its root
//! (`..` in a path, a symlink pointing outside, an absolute symlink target) is refused.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::layers::{parents, Content, Entry, Kind};

/// One `SRC[:DEST]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// As written, for messages.
    pub spec: String,
    /// Absolute source path.
    pub src: PathBuf,
    /// What the source's symlinks must stay inside: the package root (or current directory),
    /// or for a source outside it, that directory or the file's own directory.
    pub root: PathBuf,
    /// Destination in the image, relative (`srv/static`).
    pub dest: String,
    /// The destination ended in `/`: a file goes *into* that directory, keeping its name
    /// (as Docker's `COPY` does). A directory's contents go to the destination either way.
    pub into_dir: bool,
}

impl Include {
    /// Parses `SRC[:DEST]` relative to `root`. Without DEST, the file goes to `/<SRC>`.
    ///
    /// SRC may lie outside `root` (an absolute path, or one with `..`: deploy assets are
    /// often kept beside the package, not in it); it then needs a DEST, and what it holds
    /// must stay inside it (the directory itself, or a file's directory). Only contents go
    /// into the image, never the path, so the digest does not depend on where it lies.
    pub fn parse(spec: &str, root: &Path) -> Result<Include> {
        let (src, dest) = match spec.split_once(':') {
            Some((s, d)) => (s, Some(d)),
            None => (spec, None),
        };
        let bad = |why: &str| {
            Error::usage(format!("`{spec}`: {why}"))
                .with_help("use SRC[:DEST]: SRC relative to the Cargo.toml that names it (on the command line, to the current directory), DEST an absolute path in the image")
        };
        if src.is_empty() {
            return Err(bad("the source path is empty"));
        }
        let src_path = Path::new(src);
        let full = lexical(&root.join(src_path));
        let outside = !full.starts_with(lexical(root));
        if outside && dest.is_none() {
            let name = full
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "x".to_string());
            return Err(Error::usage(format!(
                "`{spec}` lies outside `{}`, so it has no path of its own in the image",
                root.display()
            ))
            .with_help(format!(
                "give it a destination: `{src}:/etc/app/{name}` (a file) or `{src}:/srv/{name}` (a directory)"
            )));
        }
        let into_dir = dest.is_some_and(|d| d.ends_with('/'));
        let dest = match dest {
            Some(d) if !d.starts_with('/') => {
                return Err(bad(&format!("the destination `{d}` must be absolute")))
            }
            Some(d) => d.trim_matches('/').to_string(),
            None => normalise(full.strip_prefix(lexical(root)).unwrap_or(src_path)),
        };
        if dest.split('/').any(|c| c == ".." || c == ".") {
            return Err(bad("the destination must not contain `.` or `..`"));
        }
        // What the source's symlinks must stay inside.
        let confine = if !outside {
            root.to_path_buf()
        } else if full.is_dir() {
            full.clone()
        } else {
            full.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| full.clone())
        };
        Ok(Include {
            spec: spec.to_string(),
            src: full,
            root: confine,
            dest,
            into_dir,
        })
    }
}

/// `path` with `.` and `..` resolved by name (no symlink is followed).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn normalise(p: &Path) -> String {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The entries for all `includes`, with the directories leading to each destination.
pub fn entries(includes: &[Include]) -> Result<Vec<Entry>> {
    let mut out: BTreeMap<String, Entry> = BTreeMap::new();
    for inc in includes {
        let root = inc.root.canonicalize().path_context("reading", &inc.root)?;
        let meta = std::fs::symlink_metadata(&inc.src).map_err(|e| {
            Error::io("reading included", &inc.src, e)
                .with_help(format!("check the include `{}`", inc.spec))
        })?;
        let real = inc.src.canonicalize().path_context("reading", &inc.src)?;
        if !real.starts_with(&root) {
            return Err(escape(inc, &inc.src));
        }
        let dest = match inc.src.file_name() {
            // `f:/dir/` puts the file into /dir; `f:/` into the root.
            Some(name) if inc.into_dir && !meta.is_dir() => {
                let name = name.to_string_lossy();
                if inc.dest.is_empty() {
                    name.into_owned()
                } else {
                    format!("{}/{name}", inc.dest)
                }
            }
            _ => inc.dest.clone(),
        };
        if dest.is_empty() && !meta.is_dir() {
            return Err(Error::output(format!(
                "include `{}`: a file needs a destination path, not `/`",
                inc.spec
            ))
            .with_help("give it a file name, or end the destination with `/` to keep its own"));
        }
        for dir in parents(&dest) {
            add(&mut out, Entry::dir(dir, 0o755))?;
        }
        add_path(&mut out, inc, &root, &inc.src, &dest)?;
    }
    Ok(out.into_values().collect())
}

fn add_path(
    out: &mut BTreeMap<String, Entry>,
    inc: &Include,
    root: &Path,
    path: &Path,
    dest: &str,
) -> Result<()> {
    let meta = std::fs::symlink_metadata(path).path_context("reading", path)?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).path_context("reading the symlink", path)?;
        let resolved = path.parent().unwrap_or(root).join(&target);
        if target.is_absolute() || !lexically_inside(&resolved, root) {
            return Err(escape(inc, path));
        }
        add(out, Entry::symlink(dest, &target.to_string_lossy()))
    } else if ft.is_dir() {
        if !dest.is_empty() {
            add(out, Entry::dir(dest, 0o755))?;
        }
        let mut children: Vec<PathBuf> = std::fs::read_dir(path)
            .path_context("reading", path)?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .path_context("reading", path)?;
        children.sort();
        for child in children {
            let name = child
                .file_name()
                .expect("a directory entry has a name")
                .to_string_lossy()
                .into_owned();
            let child_dest = if dest.is_empty() {
                name
            } else {
                format!("{dest}/{name}")
            };
            add_path(out, inc, root, &child, &child_dest)?;
        }
        Ok(())
    } else if ft.is_file() {
        use std::os::unix::fs::PermissionsExt;
        let mode = if meta.permissions().mode() & 0o111 != 0 {
            0o755
        } else {
            0o644
        };
        add(
            out,
            Entry::file(dest, mode, Content::File(path.to_path_buf())),
        )
    } else {
        Err(Error::output(format!(
            "include `{}`: `{}` is not a regular file, directory or symlink",
            inc.spec,
            path.display()
        )))
    }
}

/// Whether `path`, with `..` resolved lexically (symlinks in `root` are already resolved),
/// stays inside `root`.
fn lexically_inside(path: &Path, root: &Path) -> bool {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return false;
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    let real = out.canonicalize().unwrap_or(out);
    real.starts_with(root)
}

fn escape(inc: &Include, path: &Path) -> Error {
    Error::output(format!(
        "include `{}`: `{}` leads outside `{}`",
        inc.spec,
        path.display(),
        inc.root.display()
    ))
    .with_help("symlinks in an include must be relative and stay inside it")
}

fn add(out: &mut BTreeMap<String, Entry>, entry: Entry) -> Result<()> {
    match out.get(&entry.path) {
        Some(existing) if matches!((&existing.kind, &entry.kind), (Kind::Dir, Kind::Dir)) => Ok(()),
        Some(_) => Err(Error::output(format!(
            "two included files would be written to `/{}`",
            entry.path
        ))
        .with_help("give each include its own destination")),
        None => {
            out.insert(entry.path.clone(), entry);
            Ok(())
        }
    }
}

/// Checks that `inc` replaces nothing of the layers below it (`lower`: path → is a
/// directory): a file of the base layer or the binary, a directory turned into a file or a
/// file into a directory. Directories both have are fine (the lower one's owner and mode
/// are kept, see [`without_lower_dirs`]).
pub fn check_against(inc: &Include, lower: &BTreeMap<String, bool>) -> Result<()> {
    for entry in entries(std::slice::from_ref(inc))? {
        let is_dir = matches!(entry.kind, Kind::Dir);
        match lower.get(&entry.path) {
            Some(true) if is_dir => {}
            Some(&lower_dir) => {
                let what = if lower_dir { "directory" } else { "file" };
                return Err(Error::usage(format!(
                    "include `{}` would replace the {what} `/{}` that the image already has",
                    inc.spec, entry.path
                ))
                .with_help(
                    "pick a destination that is not part of the base layer or the binary's path \
                     (e.g. under /srv or /etc/<app>/); end it with `/` to put a file into a directory",
                ));
            }
            None => {}
        }
    }
    Ok(())
}

/// The include layer's entries without the directories the layers below already have, so
/// their owners and modes (`/home/nonroot` 0700, owned by 65532) stay as they are.
pub fn without_lower_dirs(entries: Vec<Entry>, lower: &BTreeMap<String, bool>) -> Vec<Entry> {
    entries
        .into_iter()
        .filter(|e| !(matches!(e.kind, Kind::Dir) && lower.get(&e.path) == Some(&true)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let p = t.path();
        std::fs::create_dir_all(p.join("static/css")).unwrap();
        std::fs::write(p.join("static/index.html"), "<html>").unwrap();
        std::fs::write(p.join("static/css/site.css"), "body{}").unwrap();
        std::fs::write(p.join("run.sh"), "#!/bin/sh").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        std::os::unix::fs::symlink("index.html", p.join("static/home.html")).unwrap();
        t
    }

    #[test]
    fn directories_files_modes_and_symlinks() {
        let t = tree();
        let incs = [
            Include::parse("static:/srv/static", t.path()).unwrap(),
            Include::parse("run.sh", t.path()).unwrap(),
        ];
        let e = entries(&incs).unwrap();
        let summary: Vec<(String, u32, &str)> = e
            .iter()
            .map(|e| {
                let kind = match e.kind {
                    Kind::Dir => "dir",
                    Kind::File(_) => "file",
                    Kind::Symlink(_) => "link",
                };
                (e.path.clone(), e.mode, kind)
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("run.sh".to_string(), 0o755, "file"),
                ("srv".into(), 0o755, "dir"),
                ("srv/static".into(), 0o755, "dir"),
                ("srv/static/css".into(), 0o755, "dir"),
                ("srv/static/css/site.css".into(), 0o644, "file"),
                ("srv/static/home.html".into(), 0o777, "link"),
                ("srv/static/index.html".into(), 0o644, "file"),
            ]
        );
    }

    #[test]
    fn escapes_are_refused() {
        let t = tree();
        // Outside the package: only with a destination, and confined to itself.
        let err = Include::parse("../etc/passwd", t.path()).unwrap_err();
        assert!(err.message().contains("lies outside"), "{err}");
        assert!(
            err.help()
                .unwrap()
                .contains("../etc/passwd:/etc/app/passwd"),
            "{err:?}"
        );
        assert!(Include::parse("/etc/passwd", t.path()).is_err());
        let outside = Include::parse("/etc/hostname:/etc/h", t.path()).unwrap();
        assert_eq!(
            (outside.src.as_path(), outside.root.as_path()),
            (Path::new("/etc/hostname"), Path::new("/etc"))
        );
        let inside = Include::parse("static/../run.sh", t.path()).unwrap();
        assert_eq!(inside.dest, "run.sh");
        let assets = tempfile::tempdir().unwrap();
        let conf = assets.path().join("conf");
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(conf.join("app.toml"), "a = 1").unwrap();
        std::os::unix::fs::symlink("../../secret", conf.join("leak")).unwrap();
        let rel = format!(
            "../{}/conf:/etc/app",
            assets.path().file_name().unwrap().to_string_lossy()
        );
        let project = tempfile::tempdir_in(assets.path().parent().unwrap()).unwrap();
        let inc = Include::parse(&rel, project.path()).unwrap();
        let err = entries(std::slice::from_ref(&inc)).unwrap_err();
        assert!(err.message().contains("leads outside"), "{err}");
        std::fs::remove_file(conf.join("leak")).unwrap();
        let paths: Vec<String> = entries(&[inc])
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["etc", "etc/app", "etc/app/app.toml"]);
        assert!(Include::parse("static:relative", t.path()).is_err());
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("static/abs")).unwrap();
        let err = entries(&[Include::parse("static:/s", t.path()).unwrap()]).unwrap_err();
        assert!(err.message().contains("leads outside"), "{err}");
        std::fs::remove_file(t.path().join("static/abs")).unwrap();
        std::os::unix::fs::symlink("../../x", t.path().join("static/up")).unwrap();
        assert!(entries(&[Include::parse("static:/s", t.path()).unwrap()]).is_err());
    }

    #[test]
    fn two_files_for_one_destination_are_refused() {
        let t = tree();
        let incs = [
            Include::parse("run.sh:/x", t.path()).unwrap(),
            Include::parse("static/index.html:/x", t.path()).unwrap(),
        ];
        assert!(entries(&incs).unwrap_err().message().contains("/x"));
    }

    #[test]
    fn a_destination_ending_in_a_slash_is_a_directory_to_put_the_file_into() {
        let t = tree();
        let into = Include::parse("run.sh:/etc/app/", t.path()).unwrap();
        let paths: Vec<String> = entries(&[into])
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["etc", "etc/app", "etc/app/run.sh"]);
        let root = Include::parse("run.sh:/", t.path()).unwrap();
        let paths: Vec<String> = entries(&[root])
            .unwrap()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(paths, ["run.sh"]);
    }

    #[test]
    fn what_the_layers_below_have_is_not_replaced() {
        let t = tree();
        let lower = BTreeMap::from([
            ("etc".to_string(), true),
            ("etc/passwd".to_string(), false),
            ("home".to_string(), true),
            ("home/nonroot".to_string(), true),
            ("usr/local/bin/app".to_string(), false),
        ]);
        for (spec, refused) in [
            ("run.sh:/etc", true),
            ("run.sh:/etc/passwd", true),
            ("run.sh:/usr/local/bin/app", true),
            ("static:/etc/passwd", true),
            ("run.sh:/etc/", false),
            ("run.sh:/home/nonroot/", false),
            ("static:/srv/static", false),
        ] {
            let inc = Include::parse(spec, t.path()).unwrap();
            let result = check_against(&inc, &lower);
            assert_eq!(result.is_err(), refused, "{spec}: {result:?}");
            if let Err(e) = result {
                assert!(e.message().contains("would replace"), "{e}");
            }
        }
        // Directories the lower layers have stay theirs (owner, mode).
        let inc = Include::parse("run.sh:/home/nonroot/", t.path()).unwrap();
        let kept: Vec<String> = without_lower_dirs(entries(&[inc]).unwrap(), &lower)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(kept, ["home/nonroot/run.sh"]);
    }
}
