//! Code shared by Tierline's edge and cloud tiers.
//!
//! - [`action`]: what the line does with a part, shared by the decision log, outbox, wire and store.
//! - [`admin`]: the HTTP admin endpoint (`/healthz`, `/readyz`, `/metrics`) and readiness checks.
//! - [`metrics`]: every exported Prometheus metric, and their rendering.
//! - [`serving`]: the served model's supervisor (golden probes, watchdog, hot reload).
//! - [`tls`]: TLS settings for MQTT (rustls).
//! - [`config`]: TOML configuration with environment overrides and byte sizes.
//! - [`wire`]: the protobuf wire contract, size limits and protocol versioning.
//! - [`topics`]: the MQTT topic scheme (`tierline/v1/<site>/<line>/<edge>/<kind>`), formatting and parsing.
//! - [`manifest`]: model manifests (input spec, normalization, output meaning, checksum, golden samples).
//! - [`onnx`]: locating and loading the ONNX Runtime library.
//! - [`preprocess`]: image decoding, resizing and normalization into model tensors.
//! - [`decode`]: reading every kind of model output (classifier, anomaly, detection, segmentation) into one
//!   score per frame with the regions it found; [`regions`]: boxes, connected areas and NMS.
//! - [`runner`]: a model runner on dedicated threads behind a bounded queue, with batching.
//! - [`mqtt`]: MQTT connection settings common to both tiers.
//! - [`service`]: the binaries' shared skeleton (exit codes, `--check`, signals, the admin endpoint, readiness,
//!   systemd and the model supervisor beside each flow).
//! - [`supervisor`]: the supervision tree of each binary's stages.
//! - [`telemetry`]: logging setup.
//! - [`time`]: wall-clock helpers.

pub mod action;
pub mod admin;
pub mod bundle;
pub mod config;
pub mod decode;
pub mod labels;
pub mod manifest;
pub mod metrics;
pub mod mqtt;
pub mod onnx;
pub mod preprocess;
pub mod rawframe;
pub mod redact;
pub mod regions;
pub mod runner;
pub mod service;
pub mod serving;
pub mod supervisor;
pub mod systemd;
pub mod telemetry;
pub mod time;
pub mod tls;
pub mod topics;
pub mod updates;
pub mod wilson;
pub mod wire;
