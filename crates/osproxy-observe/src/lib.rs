//! Observability for osproxy: Prometheus metrics, readiness, shape-only
//! request traces and the explain rings they are kept in.
//!
//! Nothing here may record a tenant's values or a secret: labels are endpoint
//! kinds, status classes and configured cluster ids only.

pub mod metrics;

pub use metrics::{
    ClusterMetrics, ControlStanding, HeaderIgnored, InFlight, Metrics, BULK_OUTCOMES,
};
/// The counter type used in metric handles.
pub use prometheus_client::metrics::counter::Counter;
pub mod readiness;
pub mod trace;

pub use readiness::Readiness;
