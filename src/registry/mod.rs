//! Registries: everything the tool needs to talk to one, whatever it is doing there —
//! pushing an image (the sink in `crate::sinks::registry`) or reading one back
//! (`crate::inspect`).
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
pub mod reference;
pub mod retry;

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

/// Runs registry work to completion on the calling thread.
pub fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime()?.block_on(work)
}
