//! Tierline edge: prescreens camera frames with a small ONNX model, keeps suspects in a durable outbox,
//! forwards them to the cloud over MQTT, and makes a line decision for every frame within its deadline.
//!
//! The data flow is drawn and wired in [`app`].

pub mod app;
pub mod camera;
pub mod config;
pub mod decisions;
pub mod health;
pub mod intake;
pub mod link;
pub mod outbox;
pub mod prescreen;
pub mod provenance;
pub mod settle;
pub mod sink;
pub mod stats;
pub mod synth;
pub mod updates;
pub mod uplink;

pub use app::{App, EdgeError, run};
pub use config::EdgeConfig;
pub use stats::EdgeStats;
