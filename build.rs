//! Records the version of the `webpki-root-certs` crate (the bundled CA roots) from
//! Cargo.lock, so images can say which Mozilla root set they carry.
fn main() {
    println!("cargo:rerun-if-changed=Cargo.lock");
    let lock = std::fs::read_to_string("Cargo.lock").unwrap_or_default();
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"webpki-root-certs\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = \"")))
        .map(|v| v.trim_end_matches('"').to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=MICROIMAGE_WEBPKI_ROOT_CERTS_VERSION={version}");
}
