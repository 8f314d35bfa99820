//! Image settings from Cargo.toml (DESIGN §2): `[workspace.metadata.microimage]`,
//! `[package.metadata.microimage]` and `[package.metadata.microimage.bin.<name>]`, read
//! from `cargo metadata`, validated strictly (an unknown key or a wrong type is an error
//! naming the key and the file), and merged: command line > bin > package > workspace >
//! built-in default. Maps (`env`, `labels`, `annotations`) merge key by key; lists and
//! scalars replace.
//!
//! Not for: defaults and command-line parsing (see `crate::options`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::options::ImageOptions;

/// One level of image settings, as written in Cargo.toml. Keys use the flag names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ImageConfig {
    pub platforms: Option<Vec<String>>,
    pub tag: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub annotations: Option<BTreeMap<String, String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub expose: Option<Vec<Port>>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub args: Option<Vec<String>>,
    pub include: Option<Vec<String>>,
    pub ca_certs: Option<String>,
    pub tzdata: Option<bool>,
    pub compression: Option<crate::layers::Compression>,
}

/// `expose = ["8080/tcp", 9090]`: a string or a bare port number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Port {
    Number(u16),
    Text(String),
}

impl Port {
    fn text(&self) -> String {
        match self {
            Port::Number(n) => n.to_string(),
            Port::Text(s) => s.clone(),
        }
    }
}

/// Where a level of settings came from, for error messages and relative paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The Cargo.toml holding it.
    pub manifest: PathBuf,
    /// `[workspace.metadata.microimage]` etc.
    pub table: String,
}

impl ImageConfig {
    /// `self` overridden by `higher`: scalars and lists replace, maps merge by key.
    pub fn overridden_by(self, higher: ImageConfig) -> ImageConfig {
        fn map(
            low: Option<BTreeMap<String, String>>,
            high: Option<BTreeMap<String, String>>,
        ) -> Option<BTreeMap<String, String>> {
            match (low, high) {
                (Some(mut l), Some(h)) => {
                    l.extend(h);
                    Some(l)
                }
                (l, h) => h.or(l),
            }
        }
        ImageConfig {
            platforms: higher.platforms.or(self.platforms),
            tag: higher.tag.or(self.tag),
            labels: map(self.labels, higher.labels),
            annotations: map(self.annotations, higher.annotations),
            env: map(self.env, higher.env),
            expose: higher.expose.or(self.expose),
            user: higher.user.or(self.user),
            workdir: higher.workdir.or(self.workdir),
            args: higher.args.or(self.args),
            include: higher.include.or(self.include),
            ca_certs: higher.ca_certs.or(self.ca_certs),
            tzdata: higher.tzdata.or(self.tzdata),
            compression: higher.compression.or(self.compression),
        }
    }

    /// Applies the command line on top: given flags win; `--env`, `--label`,
    /// `--annotation` merge key by key; lists given on the command line replace.
    pub fn with_command_line(self, cli: &ImageOptions) -> ImageOptions {
        let merge = |config: Option<BTreeMap<String, String>>, flags: &[(String, String)]| {
            let mut out: Vec<(String, String)> = config.unwrap_or_default().into_iter().collect();
            for (k, v) in flags {
                crate::options::set_key(&mut out, k, v);
            }
            out
        };
        let list = |flags: &[String], config: Option<Vec<String>>| {
            if flags.is_empty() {
                config.unwrap_or_default()
            } else {
                flags.to_vec()
            }
        };
        ImageOptions {
            tag: cli.tag.clone().or(self.tag),
            labels: merge(self.labels, &cli.labels),
            annotations: merge(self.annotations, &cli.annotations),
            env: merge(self.env, &cli.env),
            expose: list(
                &cli.expose,
                self.expose.map(|p| p.iter().map(Port::text).collect()),
            ),
            user: cli.user.clone().or(self.user),
            workdir: cli.workdir.clone().or(self.workdir),
            args: list(&cli.args, self.args),
            include: if cli.include.is_empty() {
                self.include
                    .unwrap_or_default()
                    .into_iter()
                    .map(|spec| (spec, IncludeBase::Package))
                    .collect()
            } else {
                cli.include.clone()
            },
            ca_certs: cli.ca_certs.clone().or(self
                .ca_certs
                .map(|s| crate::layers::base::CaCerts::parse(&s))),
            tzdata: cli.tzdata.or(self.tzdata),
            source_date_epoch: cli.source_date_epoch,
            compression: cli.compression.or(self.compression),
        }
    }
}

/// What relative `include` paths are relative to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeBase {
    /// The package root (for `include` in Cargo.toml).
    Package,
    /// The current directory (for `--include` on the command line).
    CurrentDir,
}

/// Parses one level of settings from its JSON form (as `cargo metadata` gives it);
/// `allow_bin` permits the `bin` sub-table (package level only).
pub fn parse_level(
    value: &Value,
    source: &Source,
    allow_bin: bool,
) -> Result<(ImageConfig, BTreeMap<String, ImageConfig>)> {
    let Some(value) = value.get("microimage") else {
        return Ok(Default::default());
    };
    let Value::Object(table) = value else {
        return Err(config_error(source, "", "expected a table"));
    };
    let mut table = table.clone();
    let mut bins = BTreeMap::new();
    if let Some(bin_tables) = table.remove("bin") {
        if !allow_bin {
            return Err(config_error(
                source,
                "bin",
                "per-binary settings belong in [package.metadata.microimage.bin.<name>]",
            ));
        }
        let Value::Object(bin_tables) = bin_tables else {
            return Err(config_error(
                source,
                "bin",
                "expected a table of binary names",
            ));
        };
        for (name, v) in bin_tables {
            let bin_source = Source {
                manifest: source.manifest.clone(),
                table: format!("{}.bin.{name}", source.table.trim_end_matches(']')) + "]",
            };
            bins.insert(name, deserialize(&v, &bin_source)?);
        }
    }
    Ok((deserialize(&Value::Object(table), source)?, bins))
}

fn deserialize(value: &Value, source: &Source) -> Result<ImageConfig> {
    let config: ImageConfig = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        config_error(
            source,
            if path == "." { "" } else { &path },
            &e.inner().to_string(),
        )
    })?;
    validate(&config, source)?;
    Ok(config)
}

/// Checks values whose syntax the types do not capture.
fn validate(config: &ImageConfig, source: &Source) -> Result<()> {
    if let Some(ports) = &config.expose {
        for (i, p) in ports.iter().enumerate() {
            crate::options::parse_port(&p.text())
                .map_err(|e| config_error(source, &format!("expose[{i}]"), e.message()))?;
        }
    }
    if let Some(env) = &config.env {
        for key in env.keys() {
            if key.is_empty() || key.contains('=') || key.contains(char::is_whitespace) {
                return Err(config_error(
                    source,
                    &format!("env.{key}"),
                    "an environment variable name must be non-empty, without `=` or spaces",
                ));
            }
        }
    }
    if let Some(platforms) = &config.platforms {
        for (i, p) in platforms.iter().enumerate() {
            crate::platform::resolve(std::slice::from_ref(p), &[])
                .map_err(|e| config_error(source, &format!("platforms[{i}]"), e.message()))?;
        }
    }
    if let Some(tag) = &config.tag {
        crate::image::ImageName::parse(tag)
            .map_err(|e| config_error(source, "tag", e.message()))?;
    }
    if let Some(workdir) = &config.workdir {
        if !workdir.starts_with('/') {
            return Err(config_error(source, "workdir", "must be an absolute path"));
        }
    }
    Ok(())
}

fn config_error(source: &Source, key: &str, what: &str) -> Error {
    let at = if key.is_empty() {
        String::new()
    } else {
        format!(" key `{key}`")
    };
    Error::new(format!(
        "invalid image settings in `{}`, {}{at}: {what}",
        source.manifest.display(),
        source.table
    ))
    .with_help(
        "see the \"Configuration\" section of cargo-microimage's README for every key and its type",
    )
}

/// The settings of every level that applies to one binary.
#[derive(Debug, Clone, Default)]
pub struct Levels {
    pub workspace: ImageConfig,
    pub package: ImageConfig,
    pub bin: ImageConfig,
    /// The package root, base of relative `include` paths in Cargo.toml.
    pub package_root: PathBuf,
}

impl Levels {
    /// workspace < package < bin.
    pub fn merged(&self) -> ImageConfig {
        self.workspace
            .clone()
            .overridden_by(self.package.clone())
            .overridden_by(self.bin.clone())
    }
}

/// Reads the levels for `bin` of `package` from `cargo metadata` output.
pub fn levels(
    workspace_metadata: &Value,
    workspace_root: &Path,
    package_metadata: &Value,
    package_manifest: &Path,
    bin: &str,
) -> Result<Levels> {
    let ws_source = Source {
        manifest: workspace_root.join("Cargo.toml"),
        table: "[workspace.metadata.microimage]".into(),
    };
    let pkg_source = Source {
        manifest: package_manifest.to_path_buf(),
        table: "[package.metadata.microimage]".into(),
    };
    let (workspace, _) = parse_level(workspace_metadata, &ws_source, false)?;
    let (package, mut bins) = parse_level(package_metadata, &pkg_source, true)?;
    Ok(Levels {
        workspace,
        package,
        bin: bins.remove(bin).unwrap_or_default(),
        package_root: package_manifest
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn src() -> Source {
        Source {
            manifest: PathBuf::from("/ws/api/Cargo.toml"),
            table: "[package.metadata.microimage]".into(),
        }
    }

    fn level(v: Value) -> ImageConfig {
        parse_level(&json!({ "microimage": v }), &src(), true)
            .unwrap()
            .0
    }

    /// Precedence and merge rules, one row per rule: (workspace, package, bin, cli, expected).
    #[test]
    fn precedence_table() {
        struct Row {
            what: &'static str,
            workspace: Value,
            package: Value,
            bin: Value,
            cli: ImageOptions,
            check: fn(&ImageOptions) -> bool,
        }
        let rows = [
            Row {
                what: "scalar: bin beats package beats workspace",
                workspace: json!({"user": "1:1"}),
                package: json!({"user": "2:2"}),
                bin: json!({"user": "3:3"}),
                cli: ImageOptions::default(),
                check: |o| o.user.as_deref() == Some("3:3"),
            },
            Row {
                what: "scalar: command line beats bin",
                workspace: json!({}),
                package: json!({}),
                bin: json!({"workdir": "/bin-dir"}),
                cli: ImageOptions {
                    workdir: Some("/cli".into()),
                    ..Default::default()
                },
                check: |o| o.workdir.as_deref() == Some("/cli"),
            },
            Row {
                what: "scalar: workspace applies when nobody overrides",
                workspace: json!({"tag": "ws/app:1"}),
                package: json!({}),
                bin: json!({}),
                cli: ImageOptions::default(),
                check: |o| o.tag.as_deref() == Some("ws/app:1"),
            },
            Row {
                what: "maps merge key by key across all levels",
                workspace: json!({"labels": {"team": "payments", "tier": "ws"}}),
                package: json!({"labels": {"tier": "pkg"}}),
                bin: json!({"labels": {"bin": "yes"}}),
                cli: ImageOptions {
                    labels: vec![("cli".into(), "1".into())],
                    ..Default::default()
                },
                check: |o| {
                    o.labels
                        == vec![
                            ("bin".to_string(), "yes".to_string()),
                            ("team".into(), "payments".into()),
                            ("tier".into(), "pkg".into()),
                            ("cli".into(), "1".into()),
                        ]
                },
            },
            Row {
                what: "env: the command line overrides one key, keeps the others",
                workspace: json!({}),
                package: json!({"env": {"RUST_LOG": "info", "A": "1"}}),
                bin: json!({}),
                cli: ImageOptions {
                    env: vec![("RUST_LOG".into(), "debug".into())],
                    ..Default::default()
                },
                check: |o| {
                    o.env
                        == vec![
                            ("A".to_string(), "1".to_string()),
                            ("RUST_LOG".into(), "debug".into()),
                        ]
                },
            },
            Row {
                what: "lists replace, they do not append",
                workspace: json!({"args": ["ws"]}),
                package: json!({"args": ["serve", "--fast"]}),
                bin: json!({"args": ["--dry-run"]}),
                cli: ImageOptions::default(),
                check: |o| o.args == vec!["--dry-run".to_string()],
            },
            Row {
                what: "command-line lists replace the configured ones",
                workspace: json!({}),
                package: json!({"expose": ["8080/tcp", 9090]}),
                bin: json!({}),
                cli: ImageOptions {
                    expose: vec!["1/udp".into()],
                    ..Default::default()
                },
                check: |o| o.expose == vec!["1/udp".to_string()],
            },
            Row {
                what: "ports may be numbers",
                workspace: json!({}),
                package: json!({"expose": ["8080/tcp", 9090]}),
                bin: json!({}),
                cli: ImageOptions::default(),
                check: |o| o.expose == vec!["8080/tcp".to_string(), "9090".to_string()],
            },
            Row {
                what: "booleans: bin false beats package true",
                workspace: json!({}),
                package: json!({"tzdata": true}),
                bin: json!({"tzdata": false}),
                cli: ImageOptions::default(),
                check: |o| o.tzdata == Some(false),
            },
            Row {
                what: "compression: workspace zstd, the command line's gzip wins",
                workspace: json!({"compression": "zstd"}),
                package: json!({}),
                bin: json!({}),
                cli: ImageOptions {
                    compression: Some(crate::layers::Compression::Gzip),
                    ..ImageOptions::default()
                },
                check: |o| o.compression == Some(crate::layers::Compression::Gzip),
            },
            Row {
                what: "compression: from the workspace when nothing else says",
                workspace: json!({"compression": "zstd"}),
                package: json!({}),
                bin: json!({}),
                cli: ImageOptions::default(),
                check: |o| o.compression == Some(crate::layers::Compression::Zstd),
            },
        ];
        for row in rows {
            let levels = Levels {
                workspace: level(row.workspace),
                package: level(row.package),
                bin: level(row.bin),
                package_root: PathBuf::from("/ws/api"),
            };
            let out = levels.merged().with_command_line(&row.cli);
            assert!((row.check)(&out), "{}: got {out:?}", row.what);
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let cases = [
            (json!({"expos": ["80"]}), "key `expos`", "unknown field"),
            (
                json!({"tzdata": "yes"}),
                "key `tzdata`",
                "expected a boolean",
            ),
            (json!({"env": {"A": 1}}), "key `env.A`", "expected a string"),
            (
                json!({"expose": ["80/icmp"]}),
                "key `expose[0]`",
                "is not a port",
            ),
            (
                json!({"env": {"A B": "x"}}),
                "key `env.A B`",
                "environment variable name",
            ),
            (
                json!({"platforms": ["linux/s390x"]}),
                "key `platforms[0]`",
                "unsupported platform",
            ),
            (
                json!({"compression": "xz"}),
                "key `compression`",
                "expected `gzip` or `zstd`",
            ),
            (json!({"workdir": "rel"}), "key `workdir`", "absolute"),
            (
                json!({"bin": {"x": {"user": 5}}}),
                "bin.x] key `user`",
                "expected a string",
            ),
        ];
        for (value, key, what) in cases {
            let err = parse_level(&json!({ "microimage": value }), &src(), true).unwrap_err();
            let msg = err.message();
            assert!(msg.contains("/ws/api/Cargo.toml"), "{msg}");
            assert!(msg.contains(key), "{key}: {msg}");
            assert!(msg.contains(what), "{what}: {msg}");
        }
        let ws = Source {
            manifest: "/ws/Cargo.toml".into(),
            table: "[workspace.metadata.microimage]".into(),
        };
        let err = parse_level(&json!({"microimage": {"bin": {}}}), &ws, false).unwrap_err();
        assert!(err
            .message()
            .contains("belong in [package.metadata.microimage.bin.<name>]"));
    }
}
