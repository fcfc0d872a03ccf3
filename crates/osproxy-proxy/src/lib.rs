//! The osproxy data path.
//!
//! A request's life is a fixed list of stages in [`pipeline::Proxy::handle`]:
//! identify (request id), classify, route, dispatch, respond. Each stage lives
//! in its own module. Nothing on this path panics, blocks or buffers a body
//! whole: bodies stream in both directions.

pub mod auth;
pub mod body;
pub mod controller;
pub mod diagnostics;
pub mod headers;
pub mod ingress;
pub mod migrate;
pub mod otlp;
pub mod pipeline;
pub mod probe;
pub mod route;
pub mod tenancy;
pub mod upstream;

pub use pipeline::Proxy;
