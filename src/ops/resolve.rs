//! `cargo microimage resolve -f PATH…` (and `apply`): Kubernetes YAML whose `image:`s say
//! `microimage://NAME` comes out with `REPO/NAME@sha256:<index digest>` there, every NAME
//! built and pushed once — ko's `resolve`, for Rust.
//!
//! The files are not rewritten by a YAML library, which would lose comments, quoting and
//! key order: they are parsed (yaml-rust2's event parser) only to find the scalars whose
//! whole value is a reference, and those bytes alone are replaced. A reference in a
//! comment, or after other text in a string, is not a scalar of its own and stays as it
//! is; a scalar that starts with `microimage://` is taken as a reference (as ko takes
//! `ko://`), so one with more after the NAME is refused as a bad NAME, not left alone.

use std::ops::Range;
use std::path::PathBuf;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

use super::{BuildRequest, Outcome, PushRequest};
use crate::error::{Error, Result};
use crate::plan::{self, Plan};
use crate::settings::ImageArgs;
use crate::shell::Shell;
use crate::sinks::load::Engine;
use crate::sinks::OutputOptions;

/// What marks a reference to an image of the workspace.
pub const SCHEME: &str = "microimage://";

/// What `resolve` takes.
#[derive(Debug, Clone, Default)]
pub struct ResolveRequest {
    /// Files, directories of `*.yaml`/`*.yml` files (sorted by name), or `-` for stdin.
    pub files: Vec<PathBuf>,
    /// Where the images go (`--repo`, else `$MICROIMAGE_REPO`): `REPO/<bin>`.
    pub repo: Option<String>,
    /// `--local`: load into this engine instead of pushing.
    pub local: Option<Engine>,
    /// The build options (cargo's, platforms) and the push options (credentials, TLS,
    /// `--sign-key`); `workspace` and `only` are set here.
    pub build: BuildRequest,
}

/// One input: where it came from (for messages) and its text.
struct Input {
    label: String,
    text: String,
}

/// The byte ranges of the scalars in `text` whose whole value is `microimage://NAME`, with
/// their NAME, in order.
pub fn references(label: &str, text: &str) -> Result<Vec<(Range<usize>, String)>> {
    struct Found {
        scalars: Vec<(String, Marker)>,
    }
    impl MarkedEventReceiver for Found {
        fn on_event(&mut self, ev: Event, mark: Marker) {
            if let Event::Scalar(value, ..) = ev {
                if value.starts_with(SCHEME) {
                    self.scalars.push((value, mark));
                }
            }
        }
    }
    let mut found = Found {
        scalars: Vec::new(),
    };
    Parser::new_from_str(text)
        .load(&mut found, true)
        .map_err(|e| {
            Error::input(format!("`{label}` is not valid YAML: {e}")).with_help(
                "resolve reads Kubernetes YAML (several documents separated by `---` are fine)",
            )
        })?;
    // The parser counts characters; the text is replaced by bytes.
    let bytes_at: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .chain(std::iter::once(text.len()))
        .collect();
    let mut out = Vec::new();
    for (value, mark) in found.scalars {
        let name = &value[SCHEME.len()..];
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/'));
        if !valid {
            return Err(Error::input(format!(
                "`{label}` line {}: `{value}` is not a reference to a binary",
                mark.line()
            ))
            .with_help(
                "write microimage://BIN, microimage://PACKAGE or microimage://PACKAGE/BIN",
            ));
        }
        let Some(&start) = bytes_at.get(mark.index()) else {
            continue;
        };
        // The scalar's text starts at the mark, after its quote if it has one.
        let rest = &text[start..];
        let at = if rest.starts_with(&value) {
            start
        } else if (rest.starts_with('"') || rest.starts_with('\'')) && rest[1..].starts_with(&value)
        {
            start + 1
        } else {
            return Err(Error::input(format!(
                "`{label}` line {}: `{value}` is written in a way resolve cannot replace in place (escapes, or split over lines)",
                mark.line()
            ))
            .with_help("write it on one line, plain or quoted: image: microimage://BIN"));
        };
        out.push((at..at + value.len(), name.to_string()));
    }
    Ok(out)
}

/// `text` with each of `found` replaced by what `names` gives its NAME.
fn replace(text: &str, found: &[(Range<usize>, String)], names: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (range, name) in found {
        out.push_str(&text[at..range.start]);
        let image = names
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| i.as_str())
            .unwrap_or(&text[range.clone()]);
        out.push_str(image);
        at = range.end;
    }
    out.push_str(&text[at..]);
    out
}

fn read_inputs(files: &[PathBuf]) -> Result<Vec<Input>> {
    if files.is_empty() {
        return Err(Error::usage(
            "resolve needs -f PATH (a file, a directory, or - for stdin)",
        ));
    }
    let mut inputs = Vec::new();
    for path in files {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| Error::input(format!("reading stdin failed: {e}")))?;
            inputs.push(Input {
                label: "<stdin>".to_string(),
                text,
            });
            continue;
        }
        let meta = std::fs::metadata(path).map_err(|e| {
            Error::input(format!("-f `{}`: {e}", path.display()))
                .with_help("pass a YAML file, a directory of them, or - for stdin")
        })?;
        let paths = if meta.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| Error::io("reading", path, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
            found
        } else {
            vec![path.clone()]
        };
        for p in paths {
            let text = std::fs::read_to_string(&p).map_err(|e| Error::io("reading", &p, e))?;
            inputs.push(Input {
                label: p.display().to_string(),
                text,
            });
        }
    }
    Ok(inputs)
}

/// The binary NAME means: a binary's name, a package's (with one binary), or
/// `PACKAGE/BIN`.
fn find<'p>(plans: &'p [Plan], name: &str) -> Result<&'p Plan> {
    let matches: Vec<&Plan> = match name.split_once('/') {
        Some((package, bin)) => plans
            .iter()
            .filter(|p| p.package_name == package && p.bin == bin)
            .collect(),
        None => {
            let by_bin: Vec<&Plan> = plans.iter().filter(|p| p.bin == name).collect();
            if by_bin.is_empty() {
                plans.iter().filter(|p| p.package_name == name).collect()
            } else {
                by_bin
            }
        }
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::usage(format!(
            "microimage://{name}: the workspace has no such binary"
        ))
        .with_help(format!(
            "the workspace's binaries: {}",
            plans
                .iter()
                .map(|p| format!("{}/{}", p.package_name, p.bin))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        several => Err(Error::usage(format!(
            "microimage://{name} names {} binaries: {}",
            several.len(),
            several
                .iter()
                .map(|p| format!("{}/{}", p.package_name, p.bin))
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .with_help("write microimage://PACKAGE/BIN")),
    }
}

/// Resolves the files of `request`: their text, in order, with every reference replaced
/// (documents of different files separated by `---`). Nothing is returned, and so
/// nothing printed, unless every reference was built and pushed (or loaded).
pub fn resolve(request: &ResolveRequest, image: &ImageArgs, shell: &Shell) -> Result<String> {
    let inputs = read_inputs(&request.files)?;
    let mut found = Vec::new();
    for input in &inputs {
        found.push(references(&input.label, &input.text)?);
    }
    let mut names: Vec<String> = found
        .iter()
        .flatten()
        .map(|(_, name)| name.clone())
        .collect();
    names.sort();
    names.dedup();
    let mut images: Vec<(String, String)> = Vec::new();
    if !names.is_empty() {
        let plans = plan::plan_workspace(&request.build.cargo, &[])?;
        let mut wanted: Vec<(String, &Plan)> = Vec::new();
        for name in &names {
            wanted.push((name.clone(), find(&plans, name)?));
        }
        // In the workspace's order: the order the build makes the images in.
        let ordered: Vec<&Plan> = plans
            .iter()
            .filter(|p| wanted.iter().any(|(_, w)| std::ptr::eq(*w, *p)))
            .collect();
        let mut bins: Vec<&str> = ordered.iter().map(|p| p.bin.as_str()).collect();
        bins.sort();
        bins.dedup();
        if bins.len() < ordered.len() {
            return Err(Error::usage(
                "two of the referenced binaries have the same name, and would go to the same repository",
            )
            .with_help("rename one of them, or resolve them in two runs with different --repo"));
        }
        let refs = build_all(request, image, &ordered, shell)?;
        for (name, plan) in &wanted {
            let at = ordered
                .iter()
                .position(|p| std::ptr::eq(*p, *plan))
                .expect("every wanted plan is in the order");
            images.push((name.clone(), refs[at].clone()));
        }
    }
    let mut out = String::new();
    for (i, (input, found)) in inputs.iter().zip(&found).enumerate() {
        if i > 0 {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str("---\n");
        }
        out.push_str(&replace(&input.text, found, &images));
    }
    Ok(out)
}

/// Builds `plans` in one build, pushed to the repository (or loaded, with `--local`): the
/// image reference the YAML gets for each, in the same order.
fn build_all(
    request: &ResolveRequest,
    image: &ImageArgs,
    plans: &[&Plan],
    shell: &Shell,
) -> Result<Vec<String>> {
    let mut build = request.build.clone();
    build.workspace = true;
    build.only = plans
        .iter()
        .map(|p| format!("{}/{}", p.package_name, p.bin))
        .collect();
    let repo = request
        .repo
        .clone()
        .or_else(|| std::env::var("MICROIMAGE_REPO").ok())
        .filter(|r| !r.trim().is_empty());
    let refs: Vec<String> = match request.local {
        None => {
            let repo = repo.ok_or_else(|| {
                Error::usage(
                    "resolve needs a repository to push to: --repo REPO or $MICROIMAGE_REPO",
                )
                .with_help(
                    "e.g. `--repo ghcr.io/you`, or `--local` to load into docker or podman instead",
                )
            })?;
            let push = build.push.get_or_insert_with(PushRequest::default);
            push.reference = None;
            push.default_repository = Some(repo);
            let outcomes = super::build(&build, image, &OutputOptions::default(), shell)?;
            outcomes.iter().map(pinned).collect::<Result<_>>()?
        }
        Some(engine) => {
            build.push = None;
            let dir = tempfile::Builder::new()
                .prefix("microimage-resolve-")
                .tempdir()
                .map_err(|e| {
                    Error::output(format!("creating a temporary directory failed: {e}"))
                })?;
            let _registered = crate::guard::Temporary::register(dir.path());
            let output = OutputOptions {
                output: Some(dir.path().to_path_buf()),
                format: None,
                load: Some(engine),
            };
            let outcomes = super::build(&build, image, &output, shell)?;
            outcomes
                .iter()
                .zip(plans)
                .map(|(o, p)| local_tag(o, &p.bin, engine, shell))
                .collect::<Result<_>>()?
        }
    };
    if refs.len() != plans.len() {
        return Err(Error::build(format!(
            "{} images were made for {} binaries",
            refs.len(),
            plans.len()
        )));
    }
    Ok(refs)
}

/// `REPO/BIN@sha256:<index>` of a pushed image.
fn pinned(outcome: &Outcome) -> Result<String> {
    let pushed = outcome
        .pushed
        .as_ref()
        .ok_or_else(|| Error::build("an image resolve built was not pushed"))?;
    let reference: oci_client::Reference = pushed
        .reference
        .parse()
        .map_err(|e| Error::build(format!("`{}`: {e}", pushed.reference)))?;
    Ok(format!(
        "{}/{}@{}",
        reference.registry(),
        reference.repository(),
        outcome.set.index.digest
    ))
}

/// The name a loaded image gets in the engine, naming its digest (as `ko --local` does):
/// `microimage.local/BIN:<index digest hex>`.
fn local_tag(outcome: &Outcome, bin: &str, engine: Engine, shell: &Shell) -> Result<String> {
    let set = &outcome.set;
    let digest = set.index.digest.to_string();
    let local = format!(
        "microimage.local/{bin}:{}",
        digest.trim_start_matches("sha256:")
    );
    crate::sinks::load::tag(engine, &set.name.to_string(), &local)?;
    shell.status("Tagged", format!("{} as {local}", set.name));
    Ok(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_scalars_are_references_and_the_rest_stays_byte_for_byte() {
        let text = "# image: microimage://in-a-comment\n\
                    a: microimage://app   # trailing comment\n\
                    b: \"microimage://app\"\n\
                    c: 'microimage://pkg/bin'\n\
                    d: not microimage://app\n\
                    e: &anchor microimage://ünï-später\n\
                    f: *anchor\n\
                    ---\n\
                    g: [microimage://app, x]\n";
        let err = references("t.yaml", text).unwrap_err();
        assert!(
            err.message().contains("is not a reference to a binary"),
            "{err}"
        );
        let text = text.replace("ünï-später", "other");
        let found = references("t.yaml", &text).unwrap();
        let names: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
        assert_eq!(names, ["app", "app", "pkg/bin", "other", "app"]);
        let out = replace(
            &text,
            &found,
            &[
                ("app".into(), "r/app@sha256:1".into()),
                ("pkg/bin".into(), "r/bin@sha256:2".into()),
                ("other".into(), "r/other@sha256:3".into()),
            ],
        );
        assert_eq!(
            out,
            "# image: microimage://in-a-comment\n\
             a: r/app@sha256:1   # trailing comment\n\
             b: \"r/app@sha256:1\"\n\
             c: 'r/bin@sha256:2'\n\
             d: not microimage://app\n\
             e: &anchor r/other@sha256:3\n\
             f: *anchor\n\
             ---\n\
             g: [r/app@sha256:1, x]\n"
        );
    }

    #[test]
    fn multibyte_text_before_a_reference_keeps_the_offsets_right() {
        let text = "note: \"héllo wörld ✓\"\nimage: microimage://app\n";
        let found = references("t.yaml", text).unwrap();
        assert_eq!(&text[found[0].0.clone()], "microimage://app");
    }

    #[test]
    fn broken_yaml_is_an_error_naming_the_file() {
        let err = references("bad.yaml", "a: [1, 2\n").unwrap_err();
        assert!(
            err.message().contains("`bad.yaml` is not valid YAML"),
            "{err}"
        );
    }
}
