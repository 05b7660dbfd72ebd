//! The subcommands, one module each: its arguments and what it does with a connected client.

pub mod edges;
pub mod export;
pub mod label;
pub mod list;
pub mod models;
pub mod recall;
pub mod rollout;
pub mod show;
pub mod watch;
