//! The Tierline demo: the whole pipeline (broker, cloud worker, edge with synthetic cameras) in one process,
//! with a live summary. Also provides the embedded broker to the integration tests.

pub mod broker;
pub mod summary;
