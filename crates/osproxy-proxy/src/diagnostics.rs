//! Diagnostics on the data path: which requests a directive selects, the
//! shape-only trace they leave, and where it goes (the explain ring, a JSON
//! log line, OTLP spans).
//!
//! Cost when nothing is selected: one snapshot load and an emptiness check
//! per request (no directive published, no debug header, no log-all).
//! While directives are live, every request they could match is traced and
//! matched at the end, when its partition, index, principal and endpoint
//! are known; those that do not match are dropped unrendered.

use std::sync::{Arc, Mutex};

use http::{HeaderMap, HeaderValue};
use osproxy_control::directives::{Directive, DirectiveSet, Level, Match};
use osproxy_control::ControlPlane;
use osproxy_core::{b64, ProxyError};
use osproxy_observe::trace::{Detail, Explanations, Failure, Kept, Name, Stage, Trace, Value};
use osproxy_observe::{HeaderIgnored, Metrics};

use crate::tenancy::cursor::CursorKey;
use osproxy_observe::otlp::{Exporter, SpanContext};

tokio::task_local! {
    static CURRENT: Arc<Mutex<Trace>>;
}

/// Runs `f` on the current request's trace, if it has one (a no-op
/// otherwise: the common case costs one task-local lookup).
pub(crate) fn with(f: impl FnOnce(&mut Trace)) {
    let _ = CURRENT.try_with(|t| {
        if let Ok(mut t) = t.lock() {
            f(&mut t);
        }
    });
}

/// The current trace's stage, if the request is traced.
pub(crate) fn stage() -> Option<Stage> {
    let mut out = None;
    with(|t| out = Some(t.stage()));
    out
}

/// Enters `stage` on the current trace.
pub(crate) fn enter(stage: Stage) {
    with(|t| t.enter(stage));
}

/// Records a fact of the current stage.
pub(crate) fn record(key: &'static str, value: Value) {
    with(|t| t.record(key, value));
}

/// The `traceparent` to send upstream: only when this request is exported.
pub(crate) fn traceparent() -> Option<HeaderValue> {
    let mut out = None;
    with(|t| {
        out = t
            .propagate
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok());
    });
    out
}

/// How far ahead a signed header's directive may expire.
const MAX_HEADER_LIFETIME_SECS: u64 = 3600;

/// The header a signed per-request directive arrives in.
pub static X_DEBUG_DIRECTIVE: http::HeaderName = http::HeaderName::from_static("x-debug-directive");

struct Candidate {
    id: String,
    matcher: Match,
    detail: Detail,
    capture: bool,
}

/// A request being traced.
pub struct Active {
    trace: Arc<Mutex<Trace>>,
    candidates: Vec<Candidate>,
    log_all: bool,
    span: Option<SpanContext>,
}

impl std::fmt::Debug for Active {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Active").finish_non_exhaustive()
    }
}

impl Active {
    /// Runs the request's future with this trace as the current one.
    pub async fn scope<F: std::future::Future>(&self, fut: F) -> F::Output {
        CURRENT.scope(self.trace.clone(), fut).await
    }
}

/// The data path's diagnostics: shared by every worker of an instance.
pub struct Diagnostics {
    enabled: bool,
    control: Arc<ControlPlane>,
    header_key: Option<CursorKey>,
    log_all: bool,
    explanations: Arc<Explanations>,
    exporter: Option<Exporter>,
    metrics: Arc<Metrics>,
    instance: String,
}

impl std::fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Diagnostics")
            .field("log_all", &self.log_all)
            .finish_non_exhaustive()
    }
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Deterministic sampling: FNV-1a (64 bit) of `directive id`, a zero byte
/// and the request id, finished with the MurmurHash3 64-bit mixer (FNV
/// alone leaves the high bits of near-identical ids correlated), compared
/// with `rate × 2^64`. The same request id is selected or not on every
/// instance.
pub fn sampled(directive: &str, request_id: &str, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in directive
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0u8))
        .chain(request_id.as_bytes())
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    (h as f64) < rate * 18_446_744_073_709_551_616.0
}

fn detail(level: Level) -> Option<Detail> {
    match level {
        Level::Off => None,
        Level::Shape => Some(Detail::Shape),
        Level::Timing => Some(Detail::Timing),
        Level::RewriteDiff => Some(Detail::RewriteDiff),
    }
}

fn matches(m: &Match, t: &Trace) -> bool {
    let s = &t.subject;
    let eq = |want: &Option<String>, got: Option<&str>| match want {
        None => true,
        Some(w) => got == Some(w.as_str()),
    };
    eq(&m.partition, s.partition.as_ref().map(Name::as_str))
        && eq(&m.index, s.index.as_ref().map(Name::as_str))
        && eq(&m.principal, s.principal.as_ref().map(Name::as_str))
        && eq(&m.endpoint, s.endpoint)
}

impl Diagnostics {
    /// Diagnostics over `control`'s directive set, as `config` says.
    pub fn new(
        config: &osproxy_config::Diagnostics,
        control: Arc<ControlPlane>,
        header_key: Option<CursorKey>,
        explanations: Arc<Explanations>,
        exporter: Option<Exporter>,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Diagnostics {
        Diagnostics {
            enabled: config.enabled,
            control,
            header_key,
            log_all: config.log_all_requests,
            explanations,
            exporter,
            metrics,
            instance,
        }
    }

    /// Verifies a debug header: `<base64url(directive JSON)>.<base64url(
    /// HMAC-SHA256(fleet key, first part))>`.
    fn header_directive(&self, value: &HeaderValue, now: u64) -> Result<Directive, HeaderIgnored> {
        let key = self.header_key.as_ref().ok_or(HeaderIgnored::Unsigned)?;
        let text = value.to_str().map_err(|_| HeaderIgnored::Malformed)?;
        let (payload, mac) = text.trim().split_once('.').ok_or(HeaderIgnored::Unsigned)?;
        if !key.verify(payload.as_bytes(), mac) {
            return Err(HeaderIgnored::BadSignature);
        }
        let bytes = b64::decode_url(payload).ok_or(HeaderIgnored::Malformed)?;
        let mut d = DirectiveSet::decode_one(&bytes).map_err(|_| HeaderIgnored::Malformed)?;
        if d.expires_unix <= now {
            return Err(HeaderIgnored::Expired);
        }
        // A leaked header stays useful for an hour at most.
        if d.expires_unix > now + MAX_HEADER_LIFETIME_SECS {
            return Err(HeaderIgnored::Malformed);
        }
        // Never mixed with a published directive's captures.
        d.id = format!("header:{}", d.id);
        Ok(d)
    }

    /// Decides whether this request may be selected, and starts its trace
    /// if so.
    pub fn begin(&self, headers: &HeaderMap, request_id: &str) -> Option<Active> {
        if !self.enabled {
            return None;
        }
        let header = headers.get(&X_DEBUG_DIRECTIVE);
        let published = self
            .control
            .with_snapshot(|snap| snap.directives().map(|d| d.0.clone()));
        if published.as_ref().is_none_or(|s| s.directives.is_empty())
            && header.is_none()
            && !self.log_all
        {
            return None;
        }
        let now = now_secs();
        let mut candidates = Vec::new();
        let mut consider = |d: &Directive| {
            if let Some(detail) = detail(d.level) {
                if sampled(&d.id, request_id, d.sample_rate) {
                    candidates.push(Candidate {
                        id: d.id.clone(),
                        matcher: d.matcher.clone(),
                        detail,
                        capture: d.capture,
                    });
                }
            }
        };
        if let Some(set) = &published {
            set.live(now).for_each(&mut consider);
        }
        if let Some(h) = header {
            match self.header_directive(h, now) {
                Ok(d) => consider(&d),
                Err(why) => self.metrics.header_ignored(why),
            }
        }
        if candidates.is_empty() && !self.log_all {
            return None;
        }
        let mut trace = Trace::new(request_id);
        let span = self
            .exporter
            .as_ref()
            .filter(|_| !candidates.is_empty())
            .map(|_| SpanContext::continue_from(headers));
        trace.propagate = span.as_ref().map(SpanContext::traceparent);
        Some(Active {
            trace: Arc::new(Mutex::new(trace)),
            candidates,
            log_all: self.log_all,
            span,
        })
    }

    /// Ends a traced request: matches it against its candidates and, if
    /// selected, keeps, logs and exports its explanation.
    pub fn finish(&self, active: Active, status: u16, error: Option<&ProxyError>) {
        let Ok(mut trace) = active.trace.lock() else {
            return;
        };
        match error {
            Some(e) => {
                let stage = trace.stage();
                trace.fail(Failure {
                    stage,
                    code: e.code.as_str(),
                    status,
                    retryable: e.retryable,
                    remediation: e.code.remediation(),
                });
            }
            None if status >= 400 => {
                // The cluster answered with an error of its own.
                let (code, retryable, remediation) = if status >= 500 || status == 429 {
                    ("upstream_server_error", true, "the cluster failed or is overloaded; retry with backoff, and check the cluster's health")
                } else {
                    ("upstream_client_error", false, "the cluster refused the request as sent; read the error in the response body and fix the request")
                };
                trace.fail(Failure {
                    stage: Stage::Dispatch,
                    code,
                    status,
                    retryable,
                    remediation,
                });
            }
            None => {}
        }
        trace.finish(status);
        let matched: Vec<&Candidate> = active
            .candidates
            .iter()
            .filter(|c| matches(&c.matcher, &trace))
            .collect();
        if matched.is_empty() && !active.log_all {
            return;
        }
        let detail = matched
            .iter()
            .map(|c| c.detail)
            .max()
            .unwrap_or(Detail::Shape);
        let ids: Vec<String> = matched.iter().map(|c| c.id.clone()).collect();
        let capture: Vec<String> = matched
            .iter()
            .filter(|c| c.capture)
            .map(|c| c.id.clone())
            .collect();
        if !matched.is_empty() {
            self.metrics.directive_matched();
        }
        let explanation = trace.explain(detail, &ids, &self.instance);
        tracing::info!(target: "osproxy::explain", explanation = %explanation, "request explained");
        if let (Some(exporter), Some(span), false) =
            (&self.exporter, &active.span, matched.is_empty())
        {
            exporter.export(span, &trace, detail, &explanation);
        }
        let taken = std::mem::replace(&mut *trace, Trace::new(""));
        drop(trace);
        if !matched.is_empty() {
            self.explanations.keep(
                Kept {
                    trace: taken,
                    detail,
                    directives: ids,
                },
                &capture,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_close_to_the_rate() {
        let hits = (0..10_000)
            .filter(|i| sampled("d", &format!("req-{i}"), 0.25))
            .count();
        assert!((2200..2800).contains(&hits), "{hits}");
        // Near-identical ids spread too (30 consecutive ids at 0.5).
        let hits = (0..30)
            .filter(|i| sampled("etcd-d", &format!("etcd-globex-{i}"), 0.5))
            .count();
        assert!((6..=24).contains(&hits), "{hits}");
        assert_eq!(sampled("d", "req-7", 0.5), sampled("d", "req-7", 0.5));
        assert!(sampled("d", "x", 1.0));
        assert!(!sampled("d", "x", 0.0));
    }
}
