//! `cargo microimage inspect IMAGE`: what an image holds, from a layout, an archive or a
//! registry (read through `crate::sources`, described by `crate::inspect`).

use crate::error::Result;
use crate::inspect::{Report, Source};
use crate::registry::ConnectOptions;
use crate::shell::Shell;

/// Describes the image `image` names (a path, `oci:`/`oci-archive:`/`docker-archive:`,
/// or a registry reference).
pub fn inspect(image: &std::ffi::OsStr, options: &ConnectOptions, shell: &Shell) -> Result<Report> {
    let source = Source::parse(image)?;
    crate::inspect::inspect(&source, options, shell)
}
