//! The typed error taxonomy. Every error osproxy itself answers with has a
//! stable [`ErrorCode`], an HTTP status, a retryable flag and a remediation
//! hint, and renders as an OpenSearch-shaped body so official clients raise
//! their usual exceptions.

use bytes::Bytes;

/// Stable error codes. The string form is part of the public contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The endpoint is not served by this instance's configuration.
    UnsupportedEndpoint,
    /// The request itself is malformed (bad path, bad header).
    BadRequest,
    /// The request body is larger than osproxy reads whole.
    RequestTooLarge,
    /// The client paused its request body past `server.body_read_timeout`.
    RequestTimeout,
    /// The request's headers are more or larger than `server.max_headers`
    /// or `server.max_header_bytes` allow.
    HeadersTooLarge,
    /// No credentials, or credentials osproxy does not know.
    Unauthenticated,
    /// The principal may not act for the partition.
    PartitionForbidden,
    /// A verified client certificate that no principal is mapped to.
    CertificateUnmapped,
    /// The partition could not be determined (several grants, none named).
    PartitionRequired,
    /// The partition id is not `[A-Za-z0-9_.-]{1,128}`.
    InvalidPartition,
    /// A construct that could read outside the partition was refused.
    ConstructRefused,
    /// The endpoint is for operator principals only.
    OperatorRequired,
    /// The upstream cluster could not be reached or broke the connection.
    UpstreamUnavailable,
    /// The upstream did not answer within the configured deadline.
    UpstreamTimeout,
    /// A write was routed by a placement entry that changed before it was
    /// dispatched (the epoch gate); nothing was written.
    StaleEpoch,
    /// The partition is in the cutover of a migration: writes pause.
    PartitionMoving,
    /// This instance cannot prove its routing table is current or that it
    /// still holds its fleet lease; the write was not sent.
    ControlPlaneStale,
    /// A write was sent, but this instance cannot say whether it holds:
    /// it lost its fleet lease while the write was in flight.
    OutcomeUnknown,
    /// The instance is shutting down.
    ShuttingDown,
    /// The instance is at a limit of its own (memory held for request
    /// bodies, connections, requests in flight); nothing was applied.
    Overloaded,
    /// The partition is over a per-tenant limit (`ctl limits`); nothing
    /// was applied.
    TooManyRequests,
    /// A bug or an unexpected condition inside osproxy.
    Internal,
}

impl ErrorCode {
    /// The stable string code, also used as the OpenSearch error `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedEndpoint => "unsupported_endpoint",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PartitionForbidden => "partition_forbidden",
            ErrorCode::RequestTooLarge => "request_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::HeadersTooLarge => "headers_too_large",
            ErrorCode::CertificateUnmapped => "certificate_unmapped",
            ErrorCode::PartitionRequired => "partition_required",
            ErrorCode::InvalidPartition => "invalid_partition",
            ErrorCode::ConstructRefused => "construct_refused",
            ErrorCode::OperatorRequired => "operator_required",
            ErrorCode::UpstreamUnavailable => "upstream_unavailable",
            ErrorCode::UpstreamTimeout => "upstream_timeout",
            ErrorCode::StaleEpoch => "stale_epoch",
            ErrorCode::PartitionMoving => "partition_moving",
            ErrorCode::ControlPlaneStale => "control_plane_stale",
            ErrorCode::OutcomeUnknown => "outcome_unknown",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::TooManyRequests => "too_many_requests",
            ErrorCode::Internal => "internal_error",
        }
    }

    /// The HTTP status this code is answered with.
    pub const fn status(self) -> u16 {
        match self {
            ErrorCode::UnsupportedEndpoint
            | ErrorCode::BadRequest
            | ErrorCode::PartitionRequired
            | ErrorCode::InvalidPartition
            | ErrorCode::ConstructRefused => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::RequestTooLarge => 413,
            ErrorCode::RequestTimeout => 408,
            ErrorCode::HeadersTooLarge => 431,
            ErrorCode::PartitionForbidden
            | ErrorCode::OperatorRequired
            | ErrorCode::CertificateUnmapped => 403,
            ErrorCode::UpstreamUnavailable => 502,
            ErrorCode::UpstreamTimeout => 504,
            ErrorCode::StaleEpoch => 409,
            ErrorCode::PartitionMoving => 409,
            ErrorCode::ControlPlaneStale => 503,
            ErrorCode::OutcomeUnknown => 503,
            ErrorCode::ShuttingDown => 503,
            ErrorCode::Overloaded => 503,
            ErrorCode::TooManyRequests => 429,
            ErrorCode::Internal => 500,
        }
    }

    /// What an operator or a caller can do about it.
    pub const fn remediation(self) -> &'static str {
        match self {
            ErrorCode::UnsupportedEndpoint => {
                "this endpoint is not served here; an operator can pass it through by adding its index prefix to [passthrough] indices"
            }
            ErrorCode::BadRequest => "fix the request as the reason says and send it again",
            ErrorCode::RequestTimeout => {
                "send the request body without long pauses (or raise server.body_read_timeout)"
            }
            ErrorCode::HeadersTooLarge => {
                "send fewer or smaller headers (the reason names the limit), or ask an operator to raise server.max_headers or server.max_header_bytes"
            }
            ErrorCode::RequestTooLarge => {
                "send a body of at most 100 MiB: split a _bulk into several requests"
            }
            ErrorCode::Unauthenticated => "send `Authorization: Bearer <token>` with a token configured for a principal",
            ErrorCode::PartitionForbidden => "grant the partition to the principal or send a token that has it",
            ErrorCode::CertificateUnmapped => {
                "map the certificate's subject (cert_subject) or a subject alternative name (cert_san) to a principal, or send a bearer token"
            }
            ErrorCode::PartitionRequired => "this principal may act for several partitions: name one in the x-osproxy-partition header",
            ErrorCode::InvalidPartition => "a partition id is 1 to 128 characters of [A-Za-z0-9_.-]",
            ErrorCode::OperatorRequired => {
                "cluster-wide endpoints (_cat, _cluster, _nodes, _tasks) are for principals with operator = true"
            }
            ErrorCode::ConstructRefused => {
                "the construct named in the reason could reach other tenants' documents in a shared placement; rewrite the request without it"
            }
            ErrorCode::UpstreamUnavailable => {
                "check that the cluster is up and reachable from osproxy; idempotent requests can be retried"
            }
            ErrorCode::UpstreamTimeout => {
                "the cluster is slow or stuck; retry later, or raise [upstream] request_timeout if the request is expected to take this long"
            }
            ErrorCode::StaleEpoch => {
                "the partition's placement changed while this write was in flight and nothing was written; retry it and it is routed by the current placement"
            }
            ErrorCode::PartitionMoving => {
                "the partition is being moved to another placement and writes pause for a moment; retry with backoff"
            }
            ErrorCode::ControlPlaneStale => {
                "this instance lost contact with the control store and cannot vouch for the partition's placement; nothing was written: retry, preferably on another instance"
            }
            ErrorCode::OutcomeUnknown => {
                "read the document (or search) to see whether the write holds, then retry what is missing, preferably on another instance"
            }
            ErrorCode::ShuttingDown => "this instance is draining; retry on another instance",
            ErrorCode::Overloaded => {
                "this instance is at its limit; retry after the Retry-After seconds, preferably on another instance"
            }
            ErrorCode::TooManyRequests => {
                "the partition is over one of its limits (the reason names it); retry after the Retry-After seconds, or ask an operator to raise it (osproxy ctl limits)"
            }
            ErrorCode::Internal => "report this with the request id",
        }
    }
}

/// An error osproxy answers with itself (as opposed to an upstream error,
/// which is relayed as it is).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{code:?}: {reason}")]
pub struct ProxyError {
    /// The stable code.
    pub code: ErrorCode,
    /// What happened, for humans; never contains tenant values or secrets.
    pub reason: String,
    /// Whether the same request may safely be sent again.
    pub retryable: bool,
    /// Seconds the caller should wait before retrying (`Retry-After`).
    pub retry_after: Option<u64>,
}

impl ProxyError {
    /// A new error with the code's default retryability (false).
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        ProxyError {
            code,
            reason: reason.into(),
            retryable: false,
            retry_after: None,
        }
    }

    /// Says how many seconds to wait before retrying (`Retry-After`).
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Sets whether the caller may retry.
    pub fn retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// Renders the OpenSearch-shaped body:
    ///
    /// ```
    /// use osproxy_core::{ErrorCode, ProxyError};
    /// let body = ProxyError::new(ErrorCode::BadRequest, "bad path").to_body("req-1");
    /// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    /// assert_eq!(v["status"], 400);
    /// assert_eq!(v["error"]["type"], "bad_request");
    /// assert_eq!(v["error"]["osproxy"]["request_id"], "req-1");
    /// ```
    pub fn to_body(&self, request_id: &str) -> Bytes {
        // Written in OpenSearch's own member order (root_cause, type, reason),
        // then osproxy's block; strings escaped by serde_json.
        let q = |v: &str| serde_json::Value::from(v).to_string();
        let code = q(self.code.as_str());
        let reason = q(&self.reason);
        let body = format!(
            concat!(
                r#"{{"error":{{"root_cause":[{{"type":{code},"reason":{reason}}}],"type":{code},"reason":{reason},"#,
                r#""osproxy":{{"code":{code},"retryable":{retryable},"remediation":{remediation},"request_id":{rid}}}}},"status":{status}}}"#
            ),
            code = code,
            reason = reason,
            retryable = self.retryable,
            remediation = q(self.code.remediation()),
            rid = q(request_id),
            status = self.status(),
        );
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_opensearch_shaped() {
        let err = ProxyError::new(
            ErrorCode::UpstreamTimeout,
            "cluster main did not answer in 5s",
        )
        .retryable(true);
        let body = err.to_body("abc");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(v["status"], 504);
        assert_eq!(v["error"]["type"], "upstream_timeout");
        assert_eq!(v["error"]["root_cause"][0]["type"], "upstream_timeout");
        assert_eq!(v["error"]["osproxy"]["retryable"], true);
        assert_eq!(v["error"]["osproxy"]["code"], "upstream_timeout");
        assert!(v["error"]["osproxy"]["remediation"]
            .as_str()
            .is_some_and(|s| !s.is_empty()));
    }

    #[test]
    fn members_come_in_opensearch_order() {
        let body = ProxyError::new(ErrorCode::BadRequest, "x").to_body("r");
        let text = String::from_utf8_lossy(&body);
        let at = |k: &str| text.find(k).unwrap_or(usize::MAX);
        assert!(
            at("root_cause") < at("\"type\"")
                && at("\"reason\"") < at("osproxy")
                && at("osproxy") < at("\"status\""),
            "{text}"
        );
    }

    #[test]
    fn reason_with_quotes_stays_valid_json() {
        let err = ProxyError::new(ErrorCode::BadRequest, "index \"a\\b\" is odd");
        let v: serde_json::Value = serde_json::from_slice(&err.to_body("x")).unwrap_or_default();
        assert_eq!(v["error"]["reason"], "index \"a\\b\" is odd");
    }
}
