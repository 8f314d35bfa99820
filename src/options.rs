//! The IMAGE and OUTPUT options as plain values, and the parsers for their syntax
//! (`K=V`, `PORT[/tcp|/udp]`, `SRC[:DEST]`). The CLI fills these; the pipeline reads them.

use std::path::PathBuf;

use crate::config::IncludeBase;
use crate::error::{Error, Result};
use crate::image::{ImageName, ImageSpec};
use crate::layers::base::CaCerts;
use crate::layers::include::Include;
use crate::layers::Compression;
use crate::output::Format;

/// IMAGE options from the command line; `None`/empty means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageOptions {
    pub tag: Option<String>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    pub expose: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub args: Vec<String>,
    pub ca_certs: Option<CaCerts>,
    /// `SRC[:DEST]` specs and what relative sources are relative to.
    pub include: Vec<(String, IncludeBase)>,
    pub tzdata: Option<bool>,
    pub source_date_epoch: Option<u64>,
    pub compression: Option<Compression>,
}

impl ImageOptions {
    /// Applies these options on top of the defaults for `bin`; relative `include` paths
    /// from Cargo.toml are taken from `package_root` (else the current directory).
    pub fn to_spec(
        &self,
        default_name: ImageName,
        bin: &str,
        package_root: Option<&std::path::Path>,
    ) -> Result<ImageSpec> {
        let name = match &self.tag {
            Some(tag) => ImageName::parse(tag)?,
            None => default_name,
        };
        let mut spec = ImageSpec::new(name, bin);
        if let Some(user) = &self.user {
            spec.user = user.clone();
        }
        if let Some(workdir) = &self.workdir {
            if !workdir.starts_with('/') {
                return Err(Error::usage(format!(
                    "--workdir `{workdir}` must be an absolute path"
                )));
            }
            spec.workdir = workdir.clone();
        }
        spec.env = self.env.clone();
        spec.expose = self
            .expose
            .iter()
            .map(|p| parse_port(p))
            .collect::<Result<Vec<_>>>()?;
        spec.expose.sort();
        spec.expose.dedup();
        spec.args = self.args.clone();
        spec.labels = self.labels.iter().cloned().collect();
        spec.annotations = self.annotations.iter().cloned().collect();
        if let Some(ca) = &self.ca_certs {
            spec.base.ca_certs = ca.clone();
        }
        spec.base.tzdata = self.tzdata.unwrap_or(false);
        spec.compression = self.compression.unwrap_or_default();
        let cwd = std::env::current_dir()
            .map_err(|e| Error::new(format!("reading the current directory failed: {e}")))?;
        spec.include = self
            .include
            .iter()
            .map(|(text, base)| match (base, package_root) {
                (IncludeBase::Package, Some(root)) => Include::parse(text, root).map_err(|e| {
                    e.context(format!(
                        "invalid image settings in `{}`, key `include`",
                        root.join("Cargo.toml").display()
                    ))
                }),
                _ => Include::parse(text, &cwd),
            })
            .collect::<Result<Vec<_>>>()?;
        spec.source_date_epoch = match self.source_date_epoch {
            Some(n) => n,
            None => source_date_epoch_from_env()?,
        };
        Ok(spec)
    }
}

/// OUTPUT options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputOptions {
    pub output: Option<PathBuf>,
    pub format: Option<Format>,
    /// `--load`: also hand the image to a local engine.
    pub load: Option<crate::output::load::Engine>,
}

/// Sets `key` to `value` in an ordered key/value list: replaced in place if present,
/// appended otherwise (how `--env`, `--label` and `--annotation` override).
pub fn set_key(list: &mut Vec<(String, String)>, key: &str, value: &str) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value.to_string(),
        None => list.push((key.to_string(), value.to_string())),
    }
}

/// `SOURCE_DATE_EPOCH` from the environment, else 0.
pub fn source_date_epoch_from_env() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.trim().is_empty() => s.trim().parse().map_err(|_| {
            Error::usage(format!(
                "the SOURCE_DATE_EPOCH environment variable is `{s}`, not a number of seconds"
            ))
            .with_help(
                "set it to a Unix timestamp, e.g. `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`",
            )
        }),
        _ => Ok(0),
    }
}

/// Parses `KEY=VALUE` (the value may be empty or contain `=`).
pub fn parse_key_value(s: &str) -> std::result::Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !k.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(format!(
            "`{s}` is not KEY=VALUE (a non-empty key without spaces, then `=`)"
        )),
    }
}

/// Parses `PORT`, `PORT/tcp`, `PORT/udp` into the normalised `PORT/proto`.
pub fn parse_port(s: &str) -> Result<String> {
    let (port, proto) = s.split_once('/').unwrap_or((s, "tcp"));
    let proto = proto.to_ascii_lowercase();
    let valid_port = port.parse::<u16>().is_ok_and(|p| p > 0);
    if !valid_port || !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(
            Error::usage(format!("`{s}` is not a port to expose")).with_help(
                "use PORT or PORT/tcp or PORT/udp, with PORT between 1 and 65535, e.g. 8080/tcp",
            ),
        );
    }
    Ok(format!(
        "{}/{proto}",
        port.parse::<u16>().expect("checked above")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(
            parse_key_value("A=b=c").unwrap(),
            ("A".into(), "b=c".into())
        );
        assert_eq!(parse_key_value("A=").unwrap(), ("A".into(), "".into()));
        assert!(parse_key_value("A").is_err());
        assert!(parse_key_value("=x").is_err());
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("8080").unwrap(), "8080/tcp");
        assert_eq!(parse_port("53/UDP").unwrap(), "53/udp");
        for bad in ["0", "70000", "http", "80/icmp", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
