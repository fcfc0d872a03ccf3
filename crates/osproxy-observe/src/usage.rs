//! Usage per partition: what each tenant asked of the clusters, for an
//! operator to see who is noisy and to bill.
//!
//! Bounded in cardinality: the first `max_partitions` partitions seen get a
//! row of their own, every later one is counted under [`OTHER`]. A row is
//! a handful of atomics: recording is lock-free once the row exists.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// The row partitions beyond the bound are counted under.
pub const OTHER: &str = "_other";

/// One partition's counters since the instance started.
#[derive(Debug, Default)]
pub struct UsageRow {
    /// Requests resolved to the partition.
    pub requests: AtomicU64,
    /// Request body bytes (as received: compressed bodies count compressed).
    pub request_bytes: AtomicU64,
    /// Response body bytes sent to the client.
    pub response_bytes: AtomicU64,
    /// Documents written (bulk items and single-document writes).
    pub documents: AtomicU64,
    /// Time spent waiting on the clusters, microseconds.
    pub upstream_us: AtomicU64,
    /// Requests refused by a per-tenant limit.
    pub limited: AtomicU64,
}

impl UsageRow {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds request body bytes.
    pub fn request_bytes(&self, n: u64) {
        Self::add(&self.request_bytes, n);
    }

    /// Adds response body bytes.
    pub fn response_bytes(&self, n: u64) {
        Self::add(&self.response_bytes, n);
    }

    /// Adds documents written.
    pub fn documents(&self, n: u64) {
        Self::add(&self.documents, n);
    }

    /// Adds time waited on a cluster.
    pub fn upstream(&self, d: std::time::Duration) {
        Self::add(
            &self.upstream_us,
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
        );
    }

    fn json(&self, partition: &str) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "partition": partition,
            "requests": get(&self.requests),
            "request_bytes": get(&self.request_bytes),
            "response_bytes": get(&self.response_bytes),
            "documents": get(&self.documents),
            "upstream_ms": get(&self.upstream_us) / 1000,
            "limited": get(&self.limited),
        })
    }
}

/// A metric family of the rows: name, help, and how a row gives its value.
type Family = (&'static str, &'static str, fn(&UsageRow) -> f64);

/// Every partition's row.
#[derive(Debug)]
pub struct Usage {
    max_partitions: usize,
    rows: RwLock<HashMap<String, Arc<UsageRow>>>,
    other: Arc<UsageRow>,
}

impl Usage {
    /// A table with rows for at most `max_partitions` partitions (0: every
    /// partition counts under [`OTHER`]).
    pub fn new(max_partitions: usize) -> Self {
        Usage {
            max_partitions,
            rows: RwLock::new(HashMap::new()),
            other: Arc::new(UsageRow::default()),
        }
    }

    /// The row of `partition`, counting one request on it.
    pub fn request(&self, partition: &str) -> Arc<UsageRow> {
        let row = self.row(partition);
        row.requests.fetch_add(1, Ordering::Relaxed);
        row
    }

    fn row(&self, partition: &str) -> Arc<UsageRow> {
        if let Some(r) = self
            .rows
            .read()
            .ok()
            .and_then(|m| m.get(partition).cloned())
        {
            return r;
        }
        let Ok(mut rows) = self.rows.write() else {
            return self.other.clone();
        };
        if let Some(r) = rows.get(partition) {
            return r.clone();
        }
        if rows.len() >= self.max_partitions {
            return self.other.clone();
        }
        let r = Arc::new(UsageRow::default());
        rows.insert(partition.to_string(), r.clone());
        r
    }

    /// Every row (the `_other` row last when it counted anything), the
    /// busiest first.
    pub fn json(&self) -> serde_json::Value {
        let mut rows: Vec<serde_json::Value> = self
            .rows
            .read()
            .map(|m| m.iter().map(|(p, r)| r.json(p)).collect())
            .unwrap_or_default();
        rows.sort_by(|a, b| {
            let n = |v: &serde_json::Value| v["requests"].as_u64().unwrap_or(0);
            n(b).cmp(&n(a))
                .then_with(|| a["partition"].as_str().cmp(&b["partition"].as_str()))
        });
        if self.other.requests.load(Ordering::Relaxed) > 0 {
            rows.push(self.other.json(OTHER));
        }
        serde_json::json!({"max_partitions": self.max_partitions, "partitions": rows})
    }

    /// The rows in the Prometheus text format (appended to `/metrics`).
    pub fn encode(&self, out: &mut String) {
        let rows: Vec<(String, Arc<UsageRow>)> = self
            .rows
            .read()
            .map(|m| m.iter().map(|(p, r)| (p.clone(), r.clone())).collect())
            .unwrap_or_default();
        let families: [Family; 6] = [
            (
                "requests",
                "Requests on logical indices, by partition",
                |r| r.requests.load(Ordering::Relaxed) as f64,
            ),
            ("request_bytes", "Request body bytes, by partition", |r| {
                r.request_bytes.load(Ordering::Relaxed) as f64
            }),
            ("response_bytes", "Response body bytes, by partition", |r| {
                r.response_bytes.load(Ordering::Relaxed) as f64
            }),
            ("documents", "Documents written, by partition", |r| {
                r.documents.load(Ordering::Relaxed) as f64
            }),
            (
                "upstream_seconds",
                "Time waited on the clusters, by partition",
                |r| r.upstream_us.load(Ordering::Relaxed) as f64 / 1e6,
            ),
            (
                "limited",
                "Requests refused by a per-tenant limit, by partition",
                |r| r.limited.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, value) in families {
            let _ = writeln!(
                out,
                "# HELP osproxy_usage_{name} {help} (bounded; the rest under {OTHER})."
            );
            let _ = writeln!(out, "# TYPE osproxy_usage_{name} counter");
            for (p, r) in rows
                .iter()
                .map(|(p, r)| (p.as_str(), r))
                .chain([(OTHER, &self.other)])
            {
                let _ = writeln!(
                    out,
                    "osproxy_usage_{name}_total{{partition=\"{p}\"}} {}",
                    value(r)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_bounded_and_the_rest_is_other() {
        let u = Usage::new(2);
        u.request("a").documents(3);
        u.request("b");
        u.request("b");
        u.request("c").request_bytes(10);
        let j = u.json();
        let parts = j["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0]["partition"], "b");
        assert_eq!(parts[1]["documents"], 3);
        assert_eq!(parts[2]["partition"], OTHER);
        assert_eq!(parts[2]["request_bytes"], 10);
        let mut text = String::new();
        u.encode(&mut text);
        assert!(
            text.contains("osproxy_usage_requests_total{partition=\"b\"} 2"),
            "{text}"
        );
        assert!(text.contains("osproxy_usage_documents_total{partition=\"a\"} 3"));
    }
}
