//! The osproxy data path.
//!
//! A request's life is one list of stages, named like
//! `osproxy_observe::trace::Stage` and docs/architecture.md: ingress (the
//! request id, in [`pipeline::Proxy::handle`]) → authenticate → classify →
//! resolve (a pure [`resolve::Route`] decision, [`resolve::decide`]) →
//! rewrite → dispatch → reverse (the route's own: [`tenancy`] for logical
//! indices, [`route`] and the pipeline's dispatch for passthrough). Nothing
//! on this path panics or blocks; passthrough and bulk bodies stream in both
//! directions, tenancy documents and searches are read whole (bounded).

pub mod auth;
pub mod body;
pub mod diagnostics;
pub mod ingress;
pub mod limits;
pub mod pipeline;
pub mod resolve;
pub mod route;
pub mod tenancy;

pub use osproxy_upstream as upstream;
pub use pipeline::Proxy;
