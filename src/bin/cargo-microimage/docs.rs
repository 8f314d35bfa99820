//! Checks of the README and the book (`docs/`, an mdBook) against themselves and the CLI:
//! every relative link and anchor resolves, and every flag `--help` prints is in the
//! commands chapter. Test-only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use clap::CommandFactory;

use crate::cli::Cli;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file of the book.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut book: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    book.sort();
    files.extend(book);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |l| {
        if l.trim_start().starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// `line` without its inline code spans (a link inside backticks is not a link).
fn without_code(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// The anchor GitHub and mdBook give a heading: lower case, punctuation dropped, spaces as
/// hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    prose(text)
        .filter_map(|l| {
            let hashes = l.len() - l.trim_start_matches('#').len();
            (1..=6)
                .contains(&hashes)
                .then(|| l[hashes..].strip_prefix(' '))
                .flatten()
                .map(slug)
        })
        .collect()
}

/// The targets of the inline links `[text](target)` of a Markdown file.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let line = without_code(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            let end = after.find(')').unwrap_or(after.len());
            out.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    out
}

/// Every relative link of the README and the book names a file that exists, and every
/// `#anchor` a heading of that file (or of the same file).
#[test]
fn every_relative_link_and_anchor_in_the_readme_and_the_book_resolves() {
    let mut headings: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", doc.display()));
                continue;
            }
            if anchor.is_empty() {
                continue;
            }
            let known = headings
                .entry(file.clone())
                .or_insert_with(|| anchors(&std::fs::read_to_string(&file).unwrap_or_default()));
            if !known.contains(anchor) {
                broken.push(format!("{}: {target}: no such heading", doc.display()));
            }
        }
    }
    assert!(checked > 50, "only {checked} relative links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// Every chapter of the book is in its SUMMARY.md, so none is left out of the built book.
#[test]
fn every_chapter_is_in_the_summary() {
    let summary = std::fs::read_to_string(repo().join("docs/SUMMARY.md")).unwrap();
    let listed: BTreeSet<String> = links(&summary).into_iter().collect();
    for doc in documents().iter().skip(1) {
        let name = doc.file_name().unwrap().to_str().unwrap();
        if name != "SUMMARY.md" {
            assert!(listed.contains(name), "{name} is not in docs/SUMMARY.md");
        }
    }
}

/// The long flags `cmd` and its subcommands show in `--help`, with the command they are
/// for.
fn flags(cmd: &clap::Command, path: &str, out: &mut BTreeSet<(String, String)>) {
    for arg in cmd.get_arguments() {
        if arg.is_hide_set() {
            continue;
        }
        if let Some(long) = arg.get_long() {
            out.insert((format!("--{long}"), path.to_string()));
        }
    }
    for sub in cmd.get_subcommands() {
        if !sub.is_hide_set() {
            flags(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }
}

/// Every flag any `--help` prints is named in the book's commands chapter.
#[test]
fn every_flag_help_prints_is_in_the_commands_chapter() {
    let chapter = std::fs::read_to_string(repo().join("docs/commands.md")).unwrap();
    let mut all = BTreeSet::new();
    flags(&Cli::command(), "cargo microimage", &mut all);
    assert!(all.len() > 40, "{all:?}");
    let missing: Vec<String> = all
        .iter()
        .filter(|(flag, _)| {
            // A whole word: `--tag` is not found in `--tagged`.
            !chapter.match_indices(flag.as_str()).any(|(at, _)| {
                !chapter[at + flag.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
            })
        })
        .map(|(flag, cmd)| format!("{flag} ({cmd})"))
        .collect();
    assert!(
        missing.is_empty(),
        "flags --help shows that docs/commands.md does not name:\n{}",
        missing.join("\n")
    );
}

#[test]
fn anchors_are_made_as_github_and_mdbook_make_them() {
    assert_eq!(
        slug("musl's other differences, and what to do"),
        "musls-other-differences-and-what-to-do"
    );
    assert_eq!(slug("Compiler caches (sccache)"), "compiler-caches-sccache");
    assert_eq!(slug("`--base` and `include_dir`"), "--base-and-include_dir");
    assert!(anchors("```\n# not a heading\n```\n## A heading\n").contains("a-heading"));
    assert_eq!(
        links("[a](x.md) `[b](y.md)` [c](z.md#h)"),
        ["x.md", "z.md#h"]
    );
}
