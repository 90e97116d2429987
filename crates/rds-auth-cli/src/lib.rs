//! The edge both binaries share: what only a program, never a library, may do.
//!
//! What it owns:
//! - [`config`]: layering defaults < TOML file < environment < flags with figment, and
//!   turning every configuration mistake into a miette diagnostic that names the key and
//!   points at it in the file;
//! - [`telemetry`]: text or JSON logs on stderr with a level filter;
//! - [`shell`]: shell completions and man pages from the binaries' clap definitions;
//! - [`limits`]: raising the open-file limit, which Rust, unlike Go, leaves at the soft value
//!   (often 256 or 1 024 on a laptop).
//!
//! Only the two binaries depend on this crate (checked by `cargo xtask deps`).

pub mod config;
pub mod limits;
pub mod shell;
pub mod telemetry;
