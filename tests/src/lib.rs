//! Harnesses for Tierline's end-to-end tests: a real Mosquitto process on a free port (stoppable, killable,
//! restartable), the embedded broker, edge and cloud builders on temporary directories, and an oracle over
//! what the edge decided and what the cloud stored, and a fresh PostgreSQL database per test.

pub mod bundles;
pub mod camera;
pub mod http;
pub mod mosquitto;
pub mod oracle;
pub mod outage;
pub mod pg;
pub mod pgserver;
pub mod pipeline;
pub mod process;
pub mod proxy;
pub mod review;
pub mod shipped;

pub use mosquitto::Mosquitto;
