//! Usage per partition: what each tenant asked of the clusters, for an
//! operator to see who is noisy and to bill.
//!
//! Bounded in cardinality, the busiest first: at most `max_partitions`
//! partitions have a row of their own, the rest are counted under
//! [`OTHER`]. Once the rows are full, a partition without one is counted
//! under [`OTHER`] and in a small sketch of its requests (a count-min
//! sketch: an estimate that is never below the truth); when the estimate
//! passes the rank of the least busy row, that row is retired (its counts
//! go to [`OTHER`]) and the partition gets a row, ranked from its estimate
//! (the space-saving scheme), so a tenant that becomes noisy late is seen.
//! Every event is counted once, in one row: the rows and [`OTHER`] always
//! add up to the instance's totals. A row is a handful of atomics: recording
//! is lock-free once the row exists, and a partition under [`OTHER`] only
//! takes the table's lock when it is promoted.

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
    /// What the row is ranked by: its requests, plus the estimate of those
    /// counted under [`OTHER`] before it got its row.
    rank: AtomicU64,
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

    fn counters(&self) -> [&AtomicU64; 6] {
        [
            &self.requests,
            &self.request_bytes,
            &self.response_bytes,
            &self.documents,
            &self.upstream_us,
            &self.limited,
        ]
    }

    /// Adds `other`'s counts to this row's.
    fn absorb(&self, other: &UsageRow) {
        for (to, from) in self.counters().into_iter().zip(other.counters()) {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
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

/// Cells per hash of the sketch of partitions without a row.
const SKETCH_WIDTH: usize = 2048;
/// Hashes of the sketch (its estimate is the least of their cells).
const SKETCH_DEPTH: usize = 2;

/// A count-min sketch of requests by partition name.
#[derive(Debug)]
struct Sketch {
    cells: Box<[AtomicU64]>,
    keys: [std::collections::hash_map::RandomState; SKETCH_DEPTH],
}

impl Sketch {
    fn new() -> Self {
        Sketch {
            cells: (0..SKETCH_WIDTH * SKETCH_DEPTH)
                .map(|_| AtomicU64::new(0))
                .collect(),
            keys: std::array::from_fn(|_| std::collections::hash_map::RandomState::new()),
        }
    }

    /// Counts one request of `partition`; the estimate of its requests.
    fn add(&self, partition: &str) -> u64 {
        use std::hash::BuildHasher as _;
        let mut least = u64::MAX;
        for (d, key) in self.keys.iter().enumerate() {
            let cell = (key.hash_one(partition) as usize) % SKETCH_WIDTH;
            let n = self.cells[d * SKETCH_WIDTH + cell].fetch_add(1, Ordering::Relaxed) + 1;
            least = least.min(n);
        }
        least
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
    /// Rows taken out of the table, still held by requests under way;
    /// added to [`OTHER`] once none is.
    retired: std::sync::Mutex<Vec<Arc<UsageRow>>>,
    sketch: Sketch,
    /// The least rank among the rows when the table was last changed: a
    /// partition under [`OTHER`] whose estimate is not above it is not
    /// promoted (and takes no lock).
    floor: AtomicU64,
    /// When a row was last given to a busier partition (ms after
    /// `started`; 0: never).
    promoted_ms: AtomicU64,
    started: std::time::Instant,
}

/// The least time between two promotions into a full table.
const PROMOTE_EVERY_MS: u64 = 100;

impl Usage {
    /// A table with rows for at most `max_partitions` partitions (0: every
    /// partition counts under [`OTHER`]).
    pub fn new(max_partitions: usize) -> Self {
        Usage {
            max_partitions,
            rows: RwLock::new(HashMap::new()),
            other: Arc::new(UsageRow::default()),
            retired: std::sync::Mutex::new(Vec::new()),
            sketch: Sketch::new(),
            floor: AtomicU64::new(0),
            promoted_ms: AtomicU64::new(0),
            started: std::time::Instant::now(),
        }
    }

    /// The row of `partition`, counting one request on it.
    pub fn request(&self, partition: &str) -> Arc<UsageRow> {
        let row = self.row(partition);
        row.requests.fetch_add(1, Ordering::Relaxed);
        row.rank.fetch_add(1, Ordering::Relaxed);
        row
    }

    fn row(&self, partition: &str) -> Arc<UsageRow> {
        let full = match self.rows.read() {
            Ok(m) => {
                if let Some(r) = m.get(partition) {
                    return r.clone();
                }
                m.len() >= self.max_partitions
            }
            Err(_) => return self.other.clone(),
        };
        if self.max_partitions == 0 {
            return self.other.clone();
        }
        // Counted under `_other` unless its estimate passes the least busy
        // row's rank.
        let estimate = if full {
            let estimate = self.sketch.add(partition);
            if estimate <= self.floor.load(Ordering::Relaxed) {
                return self.other.clone();
            }
            // At most one promotion per PROMOTE_EVERY_MS: a long tail of
            // partitions whose estimates all pass the floor does not take
            // the table's lock on every request.
            let last = self.promoted_ms.load(Ordering::Relaxed);
            if last != 0 && self.now_ms().saturating_sub(last) < PROMOTE_EVERY_MS {
                return self.other.clone();
            }
            estimate
        } else {
            0
        };
        let Ok(mut rows) = self.rows.try_write() else {
            // Busy: this request counts under `_other`, as it would have.
            if full {
                return self.other.clone();
            }
            let Ok(rows) = self.rows.write() else {
                return self.other.clone();
            };
            return self.insert(rows, partition, estimate);
        };
        if let Some(r) = rows.get(partition) {
            return r.clone();
        }
        if rows.len() >= self.max_partitions {
            let least = rows
                .iter()
                .min_by_key(|(_, r)| r.rank.load(Ordering::Relaxed))
                .map(|(p, r)| (p.clone(), r.rank.load(Ordering::Relaxed)));
            let Some((least, rank)) = least else {
                return self.other.clone();
            };
            if estimate <= rank {
                self.floor.store(rank, Ordering::Relaxed);
                return self.other.clone();
            }
            if let Some(out) = rows.remove(&least) {
                if let Ok(mut retired) = self.retired.lock() {
                    self.fold(&mut retired, None);
                    retired.push(out);
                }
            }
            self.promoted_ms
                .store(self.now_ms().max(1), Ordering::Relaxed);
        }
        self.insert(rows, partition, estimate)
    }

    fn insert(
        &self,
        mut rows: std::sync::RwLockWriteGuard<'_, HashMap<String, Arc<UsageRow>>>,
        partition: &str,
        estimate: u64,
    ) -> Arc<UsageRow> {
        if let Some(r) = rows.get(partition) {
            return r.clone();
        }
        if rows.len() >= self.max_partitions {
            return self.other.clone();
        }
        // Ranked from its estimate (at least its true count under `_other`,
        // where those requests stay), so the next partition must be busier
        // still to take its place.
        let r = Arc::new(UsageRow {
            rank: AtomicU64::new(estimate.saturating_sub(1)),
            ..UsageRow::default()
        });
        rows.insert(partition.to_string(), r.clone());
        if rows.len() >= self.max_partitions {
            let least = rows
                .values()
                .map(|r| r.rank.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            self.floor.store(least, Ordering::Relaxed);
        }
        r
    }

    /// The `_other` row as it stands: what was counted under it, and the
    /// retired rows (those no request holds any more are added to it for
    /// good).
    fn other_now(&self) -> UsageRow {
        let now = UsageRow::default();
        if let Ok(mut retired) = self.retired.lock() {
            self.fold(&mut retired, Some(&now));
        }
        now.absorb(&self.other);
        now
    }

    /// Adds the retired rows no request holds any more to `_other` for
    /// good; the others are added to `still` (when given) and kept.
    fn fold(&self, retired: &mut Vec<Arc<UsageRow>>, still: Option<&UsageRow>) {
        retired.retain(|r| {
            if Arc::strong_count(r) == 1 {
                // Every other holder's increments happened before it let go.
                std::sync::atomic::fence(Ordering::Acquire);
                self.other.absorb(r);
                false
            } else {
                if let Some(still) = still {
                    still.absorb(r);
                }
                true
            }
        });
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
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
        let other = self.other_now();
        if other.requests.load(Ordering::Relaxed) > 0 {
            rows.push(other.json(OTHER));
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
        let other = self.other_now();
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
                .map(|(p, r)| (p.as_str(), &**r))
                .chain([(OTHER, &other)])
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

    #[test]
    fn a_partition_that_becomes_busy_late_gets_a_row_and_nothing_is_lost() {
        let u = Usage::new(2);
        for _ in 0..3 {
            u.request("a");
            u.request("b");
        }
        // Held by a request under way when its row is retired.
        let held = u.request("b");
        let mut c = None;
        for _ in 0..10 {
            c = Some(u.request("c"));
        }
        c.unwrap().documents(5);
        held.documents(2);
        let j = u.json();
        let parts = j["partitions"].as_array().unwrap();
        let find = |p: &str| parts.iter().find(|r| r["partition"] == p).cloned();
        // "c" is promoted once its estimate passes the least busy row
        // ("a", ranked 3): its first 3 requests stay under `_other`.
        let c = find("c").expect("c has a row");
        assert_eq!(c["requests"], 7, "{j}");
        assert_eq!(c["documents"], 5, "{j}");
        assert!(find("a").is_none(), "{j}");
        assert!(find("b").is_some(), "{j}");
        let total: u64 = parts.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        assert_eq!(total, 17, "every request counted once: {j}");
        let other = find(OTHER).unwrap();
        assert_eq!(other["requests"], 3 + 3, "{j}");
        drop(held);
        // A partition that is not busier than the rows stays under `_other`.
        u.request("d");
        let j = u.json();
        let parts = j["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3, "{j}");
        let total: u64 = parts.iter().map(|r| r["requests"].as_u64().unwrap()).sum();
        assert_eq!(total, 18, "{j}");
        let docs: u64 = parts.iter().map(|r| r["documents"].as_u64().unwrap()).sum();
        assert_eq!(docs, 7, "{j}");
    }

    #[test]
    fn promotions_into_a_full_table_are_spaced() {
        let u = Usage::new(1);
        u.request("a");
        for _ in 0..3 {
            u.request("b");
        }
        // "b" took the row; "c", busier still, waits for the spacing.
        let has = |u: &Usage, p: &str| {
            u.json()["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["partition"] == p)
        };
        assert!(has(&u, "b"));
        for _ in 0..10 {
            u.request("c");
        }
        assert!(!has(&u, "c"));
        std::thread::sleep(std::time::Duration::from_millis(PROMOTE_EVERY_MS + 20));
        u.request("c");
        assert!(has(&u, "c"));
        let total: u64 = u.json()["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["requests"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 15);
    }
}
