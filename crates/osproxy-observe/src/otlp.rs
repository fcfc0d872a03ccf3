//! OTLP/HTTP export of selected requests as spans (protobuf, `POST
//! <endpoint>/v1/traces`), continuing the caller's W3C `traceparent` or B3
//! context.
//!
//! A span's attributes come from the request's shape-only explanation, so
//! an exported span can hold nothing a log line or `/v1/explain` could not.
//! Spans are queued (bounded; dropped and counted when full) and sent in
//! batches by one task, never on the request path.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::trace::{Detail, Trace};
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use serde_json::Value as Json;

const QUEUE: usize = 4096;
const BATCH: usize = 512;

/// Where a request's span sits in its trace.
#[derive(Debug, Clone)]
pub struct SpanContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    parent: Option<[u8; 8]>,
}

fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    (out != [0u8; N]).then_some(out)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl SpanContext {
    /// The caller's context (`traceparent`, else `b3`, else `X-B3-*`) with a
    /// new span of ours under it; a new trace when there is none.
    pub fn continue_from(headers: &HeaderMap) -> SpanContext {
        let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        let parent = get("traceparent")
            .and_then(|tp| {
                let mut parts = tp.trim().split('-');
                let (version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
                (version.len() == 2 && version != "ff")
                    .then(|| Some((hex_bytes::<16>(trace)?, hex_bytes::<8>(span)?)))
                    .flatten()
            })
            .or_else(|| {
                get("b3").and_then(|b3| {
                    let mut parts = b3.trim().split('-');
                    let (trace, span) = (parts.next()?, parts.next()?);
                    Some((b3_trace(trace)?, hex_bytes::<8>(span)?))
                })
            })
            .or_else(|| {
                Some((
                    b3_trace(get("x-b3-traceid")?)?,
                    hex_bytes::<8>(get("x-b3-spanid")?)?,
                ))
            });
        let span_id = random_u64().to_be_bytes();
        match parent {
            Some((trace_id, parent)) => SpanContext {
                trace_id,
                span_id,
                parent: Some(parent),
            },
            None => {
                let mut trace_id = [0u8; 16];
                trace_id[..8].copy_from_slice(&random_u64().to_be_bytes());
                trace_id[8..].copy_from_slice(&random_u64().to_be_bytes());
                SpanContext {
                    trace_id,
                    span_id,
                    parent: None,
                }
            }
        }
    }

    /// The W3C `traceparent` naming our span, to send upstream.
    pub fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }
}

/// B3 trace ids are 16 or 32 hex digits.
fn b3_trace(s: &str) -> Option<[u8; 16]> {
    match s.len() {
        32 => hex_bytes::<16>(s),
        16 => {
            let low = hex_bytes::<8>(s)?;
            let mut out = [0u8; 16];
            out[8..].copy_from_slice(&low);
            Some(out)
        }
        _ => None,
    }
}

/// The queue into the export task.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: tokio::sync::mpsc::Sender<Span>,
    dropped: Arc<AtomicU64>,
}

fn attr(key: String, v: &Json) -> Option<KeyValue> {
    let value = match v {
        Json::String(s) => any_value::Value::StringValue(s.clone()),
        Json::Bool(b) => any_value::Value::BoolValue(*b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => any_value::Value::IntValue(i),
            None => any_value::Value::DoubleValue(n.as_f64()?),
        },
        Json::Array(items) => any_value::Value::StringValue(
            items
                .iter()
                .filter_map(Json::as_str)
                .collect::<Vec<_>>()
                .join(","),
        ),
        _ => return None,
    };
    Some(KeyValue {
        key,
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    })
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Exporter {
    /// Starts the export task on the current runtime; it ends (after a last
    /// flush) when every `Exporter` clone is dropped.
    pub fn start(
        endpoint: &str,
        service: &str,
        instance: &str,
    ) -> (Exporter, tokio::task::JoinHandle<()>) {
        let (tx, rx) = tokio::sync::mpsc::channel(QUEUE);
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let resource = Resource {
            attributes: [
                ("service.name", service),
                ("service.instance.id", instance),
                ("service.version", env!("CARGO_PKG_VERSION")),
            ]
            .iter()
            .filter_map(|(k, v)| attr((*k).to_string(), &Json::from(*v)))
            .collect(),
            ..Default::default()
        };
        let task = tokio::spawn(send_batches(rx, url, resource));
        (
            Exporter {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            task,
        )
    }

    /// Queues one request's span (and, at `timing` and above, a child span
    /// per stage).
    pub fn export(&self, ctx: &SpanContext, trace: &Trace, detail: Detail, explanation: &Json) {
        let end = now_ns();
        let start = end.saturating_sub(trace.elapsed_us() * 1000);
        let mut attributes: Vec<KeyValue> = Vec::new();
        if let Some(obj) = explanation.as_object() {
            for (k, v) in obj {
                if k == "stages" {
                    continue;
                }
                if let Json::Object(inner) = v {
                    for (k2, v2) in inner {
                        attributes.extend(attr(format!("osproxy.{k}.{k2}"), v2));
                    }
                } else {
                    attributes.extend(attr(format!("osproxy.{k}"), v));
                }
            }
        }
        let failed = explanation["outcome"]["ok"] == Json::Bool(false);
        let endpoint = explanation["endpoint"].as_str().unwrap_or("request");
        let root = Span {
            trace_id: ctx.trace_id.to_vec(),
            span_id: ctx.span_id.to_vec(),
            parent_span_id: ctx.parent.map(|p| p.to_vec()).unwrap_or_default(),
            name: format!("osproxy {endpoint}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if failed {
                    status::StatusCode::Error as i32
                } else {
                    status::StatusCode::Ok as i32
                },
            }),
            ..Default::default()
        };
        let mut spans = vec![root];
        if detail >= Detail::Timing {
            let stages = explanation["stages"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (stage, offset, took) in trace.stage_times() {
                let facts = stages
                    .iter()
                    .find(|s| s["stage"] == stage.as_str())
                    .and_then(Json::as_object)
                    .map(|o| {
                        o.iter()
                            .filter(|(k, _)| k.as_str() != "stage")
                            .filter_map(|(k, v)| attr(format!("osproxy.{k}"), v))
                            .collect()
                    })
                    .unwrap_or_default();
                spans.push(Span {
                    trace_id: ctx.trace_id.to_vec(),
                    span_id: random_u64().to_be_bytes().to_vec(),
                    parent_span_id: ctx.span_id.to_vec(),
                    name: stage.as_str().to_string(),
                    kind: span::SpanKind::Internal as i32,
                    start_time_unix_nano: start + offset * 1000,
                    end_time_unix_nano: start + (offset + took) * 1000,
                    attributes: facts,
                    ..Default::default()
                });
            }
        }
        for s in spans {
            if self.tx.try_send(s).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn send_batches(mut rx: tokio::sync::mpsc::Receiver<Span>, url: String, resource: Resource) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut failing = false;
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut batch = vec![first];
        let deadline = tokio::time::sleep(Duration::from_millis(200));
        tokio::pin!(deadline);
        let mut open = true;
        while batch.len() < BATCH {
            tokio::select! {
                s = rx.recv() => match s {
                    Some(s) => batch.push(s),
                    None => { open = false; break; }
                },
                _ = &mut deadline => break,
            }
        }
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "osproxy".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans: batch,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let body = Bytes::from(request.encode_to_vec());
        let req = http::Request::post(&url)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(body));
        let outcome = match req {
            Ok(req) => {
                match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
                    Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
                    Ok(Ok(resp)) => Err(format!("answered {}", resp.status())),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer within 10 s".to_string()),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        match outcome {
            Ok(()) => failing = false,
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(%url, error = %e, "OTLP export failed; spans of this batch are dropped (logged once until it works again)");
            }
            Err(_) => {}
        }
        if !open {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continues_w3c_and_b3() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let c = SpanContext::continue_from(&h);
        assert_eq!(hex(&c.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            c.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(c
            .traceparent()
            .starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert_ne!(c.span_id, c.parent.unwrap());

        let mut h = HeaderMap::new();
        h.insert(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"
                .parse()
                .unwrap(),
        );
        let c = SpanContext::continue_from(&h);
        assert_eq!(hex(&c.trace_id), "80f198ee56343ba864fe8b2a57d3eff7");

        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let c = SpanContext::continue_from(&h);
        assert!(
            c.parent.is_none(),
            "an all-zero trace id starts a new trace"
        );
    }
}
