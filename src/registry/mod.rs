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

/// Registry connection options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Allow plain HTTP for any registry (otherwise only for loopback hosts).
    pub insecure: bool,
    /// A PEM file of CA certificates to trust in addition to the system's.
    pub ca_file: Option<PathBuf>,
}

/// Runs registry work to completion on a single-threaded runtime (oci-client is async; the
/// rest of the tool is not).
pub fn block_on<T>(work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::registry(format!("starting the async runtime failed: {e}")))?
        .block_on(work)
}
