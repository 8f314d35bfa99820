//! The integration tests, in one test binary (one link, one shared example-app build; see
//! ARCHITECTURE.md "Tests"). Each module is one area; `common` holds the shared helpers.

mod common;

mod base;
mod build_example;
mod build_options;
mod cli;
mod config_workspace;
mod docker;
mod elf_fuzz;
mod errors;
mod hardening;
mod hostile;
mod merge;
mod multiarch;
mod openssl;
mod pack_verify;
mod platforms;
mod registry;
mod release;
mod reproducible;
mod resolve;
mod round_trips;
mod runtime;
mod rustup_target;
mod scale;
mod supply_chain;
mod toolchains;
mod zstd;
