//! What Switchyard tells operators: Prometheus metrics and JSON log lines.

pub mod logging;
pub mod metrics;
