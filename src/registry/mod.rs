//! Registries: everything the tool needs to talk to one, whatever it is doing there —
//! pushing an image (the sink in `crate::sinks::registry`) or reading one back
//! (`crate::sources::registry`).
//!
//! - [`reference`]: parsing references, telling a registry host from a path;
//! - [`connection`]: protocol, ping, authentication, one [`connection::Connection`];
//! - [`retry`]: which failures are retried, and the backoff;
//! - [`errors`]: what the registry answered, as one message for the user;
//! - [`credentials`]: docker config, credential helpers, podman's auth file;
//! - [`blob_cache`]: where blobs were pushed before, for cross-repository mounts.

pub mod blob_cache;
pub mod connection;
pub mod credentials;
pub mod errors;
pub mod limits;
pub mod reference;
pub mod retry;
pub mod token;

use std::path::PathBuf;

use crate::error::{Error, Result};

/// The manifest media types asked for when reading an image: OCI and Docker indexes and
/// manifests.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];
/// Registry connection options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Allow plain HTTP for any registry (otherwise only for loopback hosts).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
}

/// The process's async runtime for registry work (oci-client is async; the rest of the
/// tool is not). One for the whole run, with its own worker threads: a connection made on
/// one thread (see [`connection::start_early`]) stays usable from another, because the
/// tasks that drive its sockets live here and not on a runtime that ends with a call.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: std::sync::OnceLock<std::io::Result<tokio::runtime::Runtime>> =
        std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("registry")
                .enable_all()
                .build()
        })
        .as_ref()
        .map_err(|e| Error::registry(format!("starting the async runtime failed: {e}")))
}

/// Runs registry work to completion on the calling thread. A panic inside it — the
/// registry client unwrapping something a registry sent (oci-client 0.18 does, on a token
/// that is not a valid header value) — ends the work with a registry error, not the
/// process (see [`quiet_panics`]).
pub fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures_util::FutureExt;
    let runtime = runtime()?;
    let _guard = quiet_panics();
    match runtime.block_on(std::panic::AssertUnwindSafe(work).catch_unwind()) {
        Ok(result) => result,
        Err(payload) => {
            let what = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "no reason given".to_string());
            Err(Error::registry(format!(
                "the registry sent an answer the registry client could not handle ({what})"
            ))
            .with_help("the registry or something between it and this machine is misbehaving; try again, or check it with `curl -v`"))
        }
    }
}

/// While registry work runs, a panic is not printed by the default hook (it becomes the
/// work's error instead, see [`block_on`]); panics elsewhere print as usual.
fn quiet_panics() -> impl Drop {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUNNING: AtomicUsize = AtomicUsize::new(0);
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if RUNNING.load(Ordering::SeqCst) == 0 {
                default(info);
            }
        }));
    });
    RUNNING.fetch_add(1, Ordering::SeqCst);
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            RUNNING.fetch_sub(1, Ordering::SeqCst);
        }
    }
    Guard
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_panic_inside_registry_work_becomes_a_registry_error() {
        // What oci-client 0.18 does with a token that is not a header value (client.rs,
        // `parse().unwrap()`), reproduced: the error, not the panic, reaches the caller.
        let result: crate::error::Result<()> = super::block_on(async {
            let token = "tok\nInjected: 1";
            let _value: reqwest::header::HeaderValue = token.parse().unwrap();
            Ok(())
        });
        let e = result.unwrap_err();
        assert_eq!(e.kind(), &crate::error::Kind::Registry);
        assert!(
            e.message()
                .contains("the registry sent an answer the registry client could not handle"),
            "{e}"
        );
        // And work after it runs as usual.
        assert_eq!(super::block_on(async { Ok(7) }).unwrap(), 7);
    }
}
