//! `cairn-cli`: everything behind the `cairn` binary, as a library that tests call directly.
//!
//! - [`run`] runs the roles of one process (`cairn serve`) until a shutdown future resolves;
//! - [`config`]: the configuration file and the embedded default;
//! - [`commands`]: the client subcommands (`submit`, `verify`, `keygen`, `shard …`);
//! - [`consumer`]: `verify-bundle`, `monitor`, `search`.
//!
//! - [`telemetry`]: logs, and OpenTelemetry export.
//!
//! `main.rs` only parses arguments, installs logging and telemetry and calls these.

pub mod commands;
pub mod config;
pub mod consumer;
pub mod schedule;
pub mod serve;
pub mod telemetry;
pub mod trust;

pub use config::ServeConfig;
pub use serve::run;
