//! `cargo microimage apply -f PATH… [-- KUBECTL ARGS]`: [`super::resolve`], then the
//! result into `kubectl apply -f -` (`$KUBECTL`, else `kubectl` on PATH). kubectl's
//! messages and exit status are the user's; if resolve fails, kubectl is never run.

use std::ffi::OsString;
use std::io::Write;
use std::process::{Command, Stdio};

use super::resolve::{resolve, ResolveRequest};
use crate::error::{Error, Result};
use crate::settings::ImageArgs;
use crate::shell::Shell;

/// Resolves, then applies: kubectl's exit status.
pub fn apply(
    request: &ResolveRequest,
    image: &ImageArgs,
    kubectl_args: &[OsString],
    shell: &Shell,
) -> Result<i32> {
    let yaml = resolve(request, image, shell)?;
    let kubectl = std::env::var_os("KUBECTL")
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "kubectl".into());
    shell.status(
        "Applying",
        format!("with `{} apply -f -`", kubectl.to_string_lossy()),
    );
    let mut child = Command::new(&kubectl)
        .args(["apply", "-f", "-"])
        .args(kubectl_args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::output(format!(
                "running `{}` failed: {e}",
                kubectl.to_string_lossy()
            ))
            .with_help("install kubectl, or point $KUBECTL at it; `cargo microimage resolve` prints the YAML without applying it")
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // kubectl may stop reading (a refused manifest): its own message says why.
        let _ = stdin.write_all(yaml.as_bytes());
    }
    let status = child
        .wait()
        .map_err(|e| Error::output(format!("waiting for kubectl failed: {e}")))?;
    Ok(status.code().unwrap_or(1))
}
