//! The IMAGE options as given on the command line, and the parsers of their syntax
//! (`K=V`, `PORT[/tcp|/udp]`). Plain data: making an [`ImageArgs`] does no I/O — no
//! current directory, no files, no environment (the CLI reads `SOURCE_DATE_EPOCH` with its
//! other defaults and puts it here).

use crate::error::{Error, Result};
use crate::layers::Compression;

/// IMAGE options from the command line; `None`/empty means "not given".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageArgs {
    /// `--tag`: the image name for local output, given once at most (see
    /// `crate::ops`); empty for `push`, where the tags go to the push request.
    pub tags: Vec<String>,
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    /// Normalised ports (`8080/tcp`), see [`parse_port`].
    pub expose: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    pub args: Vec<String>,
    /// `bundled`, `host`, `none` or a path (relative to the current directory).
    pub ca_certs: Option<String>,
    /// `SRC[:DEST]`, SRC relative to the current directory.
    pub include: Vec<String>,
    /// `--tzdata` (a flag: given or not).
    pub tzdata: bool,
    /// `--source-date-epoch`, else `$SOURCE_DATE_EPOCH` (read by the CLI).
    pub source_date_epoch: Option<u64>,
    pub compression: Option<Compression>,
    /// `--compression-level N`.
    pub compression_level: Option<u32>,
    /// `--no-auditable`: `Some(false)`.
    pub auditable: Option<bool>,
    /// `--sbom FORMATS`.
    pub sbom: Option<String>,
    /// `--provenance slsa|none`.
    pub provenance: Option<super::Provenance>,
    /// `--allocator` (a build option: `pack` cannot change a binary's allocator).
    pub allocator: Option<super::Allocator>,
    /// `--no-pid1-signals`: `Some(false)` (a build option, like `allocator`).
    pub pid1_signals: Option<bool>,
    /// `--thread-stack-size SIZE` (a build option, like `allocator`).
    pub thread_stack_size: Option<String>,
    /// `--build-std auto|always|never` (a build option, like `allocator`).
    pub build_std: Option<super::BuildStd>,
    /// `--base REF`: the image the app goes on.
    pub base: Option<String>,
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

/// `--source-date-epoch`, else `$SOURCE_DATE_EPOCH`: the one place the variable is read.
pub fn source_date_epoch(flag: Option<u64>) -> Result<Option<u64>> {
    match flag {
        Some(n) => Ok(Some(n)),
        None => parse_source_date_epoch(std::env::var("SOURCE_DATE_EPOCH").ok().as_deref()),
    }
}

/// `SOURCE_DATE_EPOCH` as the environment gives it (`None` when unset or empty).
pub fn parse_source_date_epoch(value: Option<&str>) -> Result<Option<u64>> {
    match value.map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            Error::usage(format!(
                "the SOURCE_DATE_EPOCH environment variable is `{s}`, not a number of seconds"
            ))
            .with_help(
                "set it to a Unix timestamp, e.g. `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`",
            )
        }),
    }
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

    #[test]
    fn source_date_epochs() {
        assert_eq!(parse_source_date_epoch(None).unwrap(), None);
        assert_eq!(parse_source_date_epoch(Some(" ")).unwrap(), None);
        assert_eq!(parse_source_date_epoch(Some("17")).unwrap(), Some(17));
        assert!(parse_source_date_epoch(Some("yesterday"))
            .unwrap_err()
            .is_usage());
    }
}
