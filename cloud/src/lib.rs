//! Tierline cloud: takes suspect frames from MQTT, runs the full ONNX model, stores exactly one verdict per
//! frame, and sends it back to the edge.
//!
//! The data flow is drawn and wired in [`app`].

pub mod acks;
pub mod api;
pub mod app;
pub mod audit;
pub mod commit;
pub mod config;
pub mod console;
pub mod health;
pub mod ingest;
pub mod lag;
pub mod leader;
pub mod order;
pub mod presence;
pub mod process;
pub mod registry;
pub mod rollout;
pub mod stats;
pub mod store;
pub mod updates;

pub use app::{App, CloudError, run};
pub use config::CloudConfig;
pub use stats::CloudStats;
