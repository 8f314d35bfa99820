//! cargo-microimage: tiny, reproducible `FROM scratch` OCI images of Rust binaries,
//! without a Docker daemon.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! [`settings`] (command line + Cargo.toml → what the image is) → [`plan`] (cargo
//! metadata) → [`build`] (cargo build for a musl target) → [`verify`] (ELF static check) →
//! [`layers`] (deterministic tar, gzip or zstd) → [`image`] (config, manifests, index) →
//! [`output`] (sinks: OCI layout, OCI archive, docker-archive, `--load`, a registry).
//! [`pipeline`] runs them in order; [`inspect`] reads images back; [`message`] is the
//! schema of `--message-format json`.

pub mod blob;
pub mod build;
pub mod error;
pub mod image;
pub mod inspect;
pub mod layers;
pub mod message;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod registry;
pub mod settings;
pub mod shell;
pub mod verify;

pub use error::{Error, Result};
