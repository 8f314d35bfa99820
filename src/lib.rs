//! cargo-microimage: tiny, reproducible `FROM scratch` OCI images of Rust binaries,
//! without a Docker daemon.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! [`plan`] (cargo metadata) → [`build`] (cargo build for a musl target) → [`verify`]
//! (ELF static check) → [`layers`] (deterministic tar, gzip or zstd) → [`image`] (config, manifests,
//! index) → [`output`] (OCI layout, OCI archive, docker-archive). [`pipeline`] runs them in
//! order; [`inspect`] reads images back.

pub mod blob;
pub mod build;
pub mod config;
pub mod error;
pub mod image;
pub mod inspect;
pub mod layers;
pub mod options;
pub mod output;
pub mod pipeline;
pub mod plan;
pub mod platform;
pub mod push;
pub mod shell;
pub mod verify;

pub use error::{Error, Result};
