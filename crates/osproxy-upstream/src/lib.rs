//! The upstream side of osproxy: one pooled client per configured cluster
//! ([`client::Upstreams`]), the single exchange function every request and
//! migration step goes through ([`client::UpstreamCluster::send`], with its
//! deadline and connection accounting), the bodies sent upstream, bounded
//! reads, hop-by-hop header hygiene, and the readiness probes.

pub mod body;
pub mod budget;
pub mod client;
pub mod decode;
mod h1;
pub mod headers;
pub mod probe;
pub mod sigv4;
pub mod tls;

pub use body::{
    answer_pause, body_read_timeout, next_frame, read_answer, read_limited, set_answer_pause,
    set_body_read_timeout, Answering, BodyError, CheckedBody, RequestBody, MAX_BUFFERED,
};
pub use client::{is_idempotent, SetupError, UpstreamCluster, UpstreamError, Upstreams};
pub use decode::{body_error, is_zlib_header, ClientBody, Coding, DecodeError, Upload};
pub use h1::Answer;
