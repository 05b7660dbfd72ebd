//! Tools for the model pair behind Tierline's cascade: `eval` runs the edge prescreen and the cloud model over
//! a labeled image folder exactly as the runtime does and reports what the cascade achieves; `calibrate`
//! picks the edge threshold that keeps a target share of the cloud model's flags and writes it into the
//! prescreen manifest; `fit` builds an anomaly prescreen for a new surface from good frames only.

pub mod bundle;
pub mod calibrate;
pub mod cascade;
pub mod dataset;
pub mod fit;
pub mod report;
