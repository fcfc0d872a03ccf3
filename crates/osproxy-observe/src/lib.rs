//! Observability for osproxy: Prometheus metrics, readiness, shape-only
//! request traces, the explain rings they are kept in, and the OTLP/HTTP
//! exporter that sends selected traces as spans.
//!
//! Nothing here may record a tenant's values or a secret: labels are endpoint
//! kinds, status classes and configured cluster ids only.

pub mod metrics;
pub mod otlp;

pub use metrics::{
    ClusterMetrics, ConnectionMetrics, ControlStanding, HeaderIgnored, InFlight, Metrics,
    BULK_OUTCOMES, CONNECTION_CLOSES,
};
/// The counter type used in metric handles.
pub use prometheus_client::metrics::counter::Counter;
pub mod readiness;
pub mod trace;
pub mod usage;

pub use readiness::Readiness;
