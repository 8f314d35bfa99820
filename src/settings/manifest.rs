//! Image settings in Cargo.toml (DESIGN §2): `[workspace.metadata.microimage]`,
//! `[package.metadata.microimage]` and `[package.metadata.microimage.bin.<name>]`, read
//! from `cargo metadata` and validated strictly: an unknown key or a value of the wrong
//! type is an error naming the key and the file. Each level keeps the file and table it
//! came from, so that relative paths resolve against that file and errors can cite it.
//!
//! Not for: combining levels and the command line (see [`super::resolve`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};

/// One level of image settings, as written in Cargo.toml. Keys use the flag names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
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
    /// The compression's level: 1-12 for gzip, 1-22 for zstd.
    pub compression_level: Option<u32>,
    /// Link the dependency data into the binary (cargo-auditable format).
    pub auditable: Option<bool>,
    /// SBOM formats: `spdx`, `cyclonedx`, `spdx,cyclonedx` or `none`.
    pub sbom: Option<String>,
    /// Provenance: `slsa` or `none`.
    pub provenance: Option<super::Provenance>,
    /// The allocator `build` links in: `auto`, `mimalloc` or `system`.
    pub allocator: Option<super::Allocator>,
    /// Link the PID 1 signal hook into binaries `build` compiles.
    pub pid1_signals: Option<bool>,
    /// The default stack of threads C code starts: `"8MiB"`, `"512KiB"` or bytes.
    pub thread_stack_size: Option<Size>,
    /// Where the standard library comes from: `auto`, `always` or `never`.
    pub build_std: Option<super::BuildStd>,
    /// The image the app goes on: a registry reference, `oci:DIR[:TAG]`,
    /// `oci-archive:FILE[:TAG]` or `docker-archive:FILE`.
    pub base: Option<String>,
}

/// `expose = ["8080/tcp", 9090]`: a string or a bare port number (checked by
/// [`crate::settings::parse_port`] after reading, so that a wrong number is reported as a
/// port, not as a type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port(pub String);

/// A value written as a string or a bare number, kept as text; `expected` describes it in
/// the error for anything else.
fn string_or_number<'de, D: serde::Deserializer<'de>>(
    d: D,
    expected: &str,
) -> std::result::Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "expected {expected}, found {other}"
        ))),
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Port, D::Error> {
        string_or_number(d, "a port number or a string like \"8080/tcp\"").map(Port)
    }
}

impl Serialize for Port {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// `thread-stack-size = "8MiB"` or a number of bytes (checked by
/// [`crate::settings::parse_thread_stack`] after reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Size(pub String);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Size, D::Error> {
        string_or_number(d, "a size like \"8MiB\" or a number of bytes").map(Size)
    }
}

impl Serialize for Size {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Port {
    pub fn text(&self) -> String {
        self.0.clone()
    }
}

/// Where a level of settings came from, for error messages and relative paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The Cargo.toml holding it.
    pub manifest: PathBuf,
    /// `[workspace.metadata.microimage]` etc.
    pub table: String,
}

impl Source {
    /// The directory of the Cargo.toml: relative paths it sets start there.
    pub fn dir(&self) -> &Path {
        self.manifest.parent().unwrap_or(Path::new("."))
    }
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
            crate::settings::parse_port(&p.text())
                .map_err(|e| config_error(source, &format!("expose[{i}]"), e.message()))?;
        }
    }
    for (key, map) in [
        ("labels", &config.labels),
        ("annotations", &config.annotations),
    ] {
        if map
            .as_ref()
            .is_some_and(|m| m.keys().any(|k| k.trim().is_empty()))
        {
            return Err(config_error(source, key, "a key must not be empty"));
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
    if let Some(sbom) = &config.sbom {
        super::sbom_format::parse_formats(sbom)
            .map_err(|why| config_error(source, "sbom", &why))?;
    }
    if let Some(user) = &config.user {
        crate::layers::base::check_user(user)
            .map_err(|why| config_error(source, "user", &format!("`{user}` {why}")))?;
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
    Error::config(
        &source.manifest,
        key,
        format!(
            "invalid image settings in `{}`, {}{at}: {what}",
            source.manifest.display(),
            source.table
        ),
    )
    .with_help(
        "every key and its type: the Configuration chapter of cargo-microimage's book (docs/configuration.md)",
    )
}

/// One level of settings and where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Level {
    pub config: ImageConfig,
    pub source: Source,
}

/// The levels that apply to one binary; a level that Cargo.toml does not have is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Levels {
    pub workspace: Option<Level>,
    pub package: Option<Level>,
    pub bin: Option<Level>,
}

impl Levels {
    /// The levels from the highest precedence down: bin, package, workspace.
    pub fn by_precedence(&self) -> impl Iterator<Item = &Level> {
        [&self.bin, &self.package, &self.workspace]
            .into_iter()
            .flatten()
    }
}

/// Reads the levels for `bin` of `package` from `cargo metadata` output. A `bin.<name>`
/// table for a binary the package does not have is an error (`bins` lists the ones it
/// has).
pub fn levels(
    workspace_metadata: &Value,
    workspace_root: &Path,
    package_metadata: &Value,
    package_manifest: &Path,
    bin: &str,
    bins: &[&str],
) -> Result<Levels> {
    let ws_source = Source {
        manifest: workspace_root.join("Cargo.toml"),
        table: "[workspace.metadata.microimage]".into(),
    };
    let pkg_source = Source {
        manifest: package_manifest.to_path_buf(),
        table: "[package.metadata.microimage]".into(),
    };
    let has = |v: &Value| v.get("microimage").is_some();
    let (workspace, _) = parse_level(workspace_metadata, &ws_source, false)?;
    let (package, mut bin_levels) = parse_level(package_metadata, &pkg_source, true)?;
    if let Some(unknown) = bin_levels
        .keys()
        .find(|name| !bins.contains(&name.as_str()))
    {
        return Err(config_error(
            &pkg_source,
            &format!("bin.{unknown}"),
            &format!(
                "the package has no binary target named `{unknown}` (its binaries: {})",
                bins.join(", ")
            ),
        ));
    }
    let bin_source = Source {
        manifest: package_manifest.to_path_buf(),
        table: format!("[package.metadata.microimage.bin.{bin}]"),
    };
    Ok(Levels {
        workspace: has(workspace_metadata).then_some(Level {
            config: workspace,
            source: ws_source,
        }),
        package: has(package_metadata).then_some(Level {
            config: package,
            source: pkg_source,
        }),
        bin: bin_levels.remove(bin).map(|config| Level {
            config,
            source: bin_source,
        }),
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
                json!({"platforms": ["linux/mips64le"]}),
                "key `platforms[0]`",
                "unsupported platform",
            ),
            (
                json!({"compression": "xz"}),
                "key `compression`",
                "expected `gzip` or `zstd`",
            ),
            (
                json!({"compression-level": "best"}),
                "key `compression-level`",
                "expected u32",
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
