//! Prometheus metrics with a bounded label set. Every handle the request path
//! touches is created at start-up, so recording is a few atomic adds — no
//! lock, no allocation, no label hashing.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use osproxy_core::EndpointKind;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Status classes used as a label.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    kind: String,
    status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterErrorLabels {
    cluster: String,
    error: String,
}

/// The metrics of one upstream cluster.
#[derive(Clone, Debug)]
pub struct ClusterMetrics {
    /// Time from dispatch to the upstream's response head.
    pub latency: Histogram,
    /// TCP connections opened to the cluster.
    pub connections_opened: Counter<u64, AtomicU64>,
    /// Requests sent on a connection that had already served one.
    pub connections_reused: Counter<u64, AtomicU64>,
    /// Connection could not be opened.
    pub errors_connect: Counter<u64, AtomicU64>,
    /// No response head within the deadline.
    pub errors_timeout: Counter<u64, AtomicU64>,
    /// The connection broke during the exchange.
    pub errors_io: Counter<u64, AtomicU64>,
    /// Responses by status class (1xx..5xx).
    pub responses: [Counter<u64, AtomicU64>; 5],
}

impl ClusterMetrics {
    /// Counts one upstream response.
    pub fn response(&self, status: u16) {
        if let Some(c) = self.responses.get(status_class(status)) {
            c.inc();
        }
    }
}

fn status_class(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterStatusLabels {
    cluster: String,
    status_class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    partition: String,
}

/// Why a debug header was ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderIgnored {
    /// No header key is configured, or the header has no signature.
    Unsigned,
    /// The signature does not verify.
    BadSignature,
    /// Its directive has expired.
    Expired,
    /// Not a directive.
    Malformed,
}

impl HeaderIgnored {
    const ALL: [HeaderIgnored; 4] = [
        HeaderIgnored::Unsigned,
        HeaderIgnored::BadSignature,
        HeaderIgnored::Expired,
        HeaderIgnored::Malformed,
    ];

    fn as_str(self) -> &'static str {
        match self {
            HeaderIgnored::Unsigned => "unsigned",
            HeaderIgnored::BadSignature => "bad_signature",
            HeaderIgnored::Expired => "expired",
            HeaderIgnored::Malformed => "malformed",
        }
    }
}

/// Bulk item outcomes counted.
pub const BULK_OUTCOMES: [&str; 6] = [
    "created",
    "updated",
    "deleted",
    "noop",
    "not_found",
    "failed",
];

/// Diagnostics counters.
struct DiagnosticsMetrics {
    active: Gauge,
    matched: Counter,
    ignored: [Counter; 4],
    bulk: [Counter; 6],
    limited: Family<LimitLabels, Counter>,
    partitions: Family<PartitionLabels, Counter>,
    partition_limit: usize,
    partitions_seen: std::sync::RwLock<std::collections::HashSet<String>>,
}

/// Why the data listener closed or refused a client connection.
pub const CONNECTION_CLOSES: [&str; 5] = [
    "max_connections",
    "idle_timeout",
    "send_timeout",
    "header_read_timeout",
    "protocol_error",
];

/// Connection counts for the data listener, shared by its workers.
#[derive(Clone, Debug, Default)]
pub struct ConnectionMetrics {
    open: Gauge,
    closed: Family<ReasonLabels, Counter>,
}

impl ConnectionMetrics {
    /// A connection was admitted.
    pub fn opened(&self) {
        self.open.inc();
    }

    /// An admitted connection ended.
    pub fn ended(&self) {
        self.open.dec();
    }

    /// A connection was closed or refused by osproxy, for `reason` (one of
    /// [`CONNECTION_CLOSES`]).
    pub fn closed(&self, reason: &str) {
        if let Some(reason) = CONNECTION_CLOSES.iter().find(|r| **r == reason) {
            self.closed
                .get_or_create(&ReasonLabels {
                    reason: (*reason).to_string(),
                })
                .inc();
        }
    }
}

/// One request counted in the in-flight gauge until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// All metrics of one instance.
pub struct Metrics {
    registry: Registry,
    requests: Vec<[Counter<u64, AtomicU64>; 5]>,
    in_flight: Gauge,
    buffered: Gauge,
    clusters: Vec<ClusterMetrics>,
    control: ControlMetrics,
    diagnostics: DiagnosticsMetrics,
    migrations: Family<PhaseLabels, Gauge>,
    migration_documents: Gauge,
    usage: crate::usage::Usage,
    connections: ConnectionMetrics,
    errors: Family<CodeLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: String,
}

/// The control plane's standing, refreshed at scrape time.
struct ControlMetrics {
    applied_revision: Gauge,
    fresh_age_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    rejected_keys: Gauge,
    /// events, rejections, reconnects, reloads
    counters: [Counter; 4],
    seen: std::sync::Mutex<[u64; 4]>,
}

/// What the control plane reports at scrape time.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlStanding {
    /// The revision through which every store event has been applied.
    pub applied_revision: u64,
    /// Seconds since the snapshot was last confirmed current.
    pub fresh_age_seconds: f64,
    /// Keys whose latest value is refused.
    pub rejected_keys: u64,
    /// Store events applied since start.
    pub events: u64,
    /// Values refused since start.
    pub rejections: u64,
    /// Watch reconnects since start.
    pub reconnects: u64,
    /// Whole-prefix re-reads after compaction since start.
    pub reloads: u64,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers every metric, with per-cluster handles in the order of
    /// `cluster_ids`.
    pub fn new<'a>(cluster_ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix("osproxy");

        let requests_family = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by endpoint kind and status class",
            requests_family.clone(),
        );
        let requests = EndpointKind::ALL
            .iter()
            .map(|kind| {
                STATUS_CLASSES.map(|class| {
                    requests_family
                        .get_or_create(&RequestLabels {
                            kind: kind.as_str().to_string(),
                            status_class: class.to_string(),
                        })
                        .clone()
                })
            })
            .collect();

        let in_flight = Gauge::default();
        registry.register(
            "in_flight_requests",
            "Requests being served now",
            in_flight.clone(),
        );

        let buffered = Gauge::default();
        registry.register(
            "buffered_request_bytes",
            "Request-body bytes held in memory now, counted as server.max_buffered_total counts them (each byte with its parse)",
            buffered.clone(),
        );

        let latency = Family::<ClusterLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms .. ~65 s
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        registry.register(
            "upstream_response_seconds",
            "Time from dispatch to the upstream response head, per cluster",
            latency.clone(),
        );
        let opened = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "upstream_connections_opened",
            "TCP connections opened to a cluster",
            opened.clone(),
        );
        let reused = Family::<ClusterLabels, Counter>::default();
        registry.register(
            "upstream_connections_reused",
            "Upstream requests sent on an already used keep-alive connection",
            reused.clone(),
        );
        let errors = Family::<ClusterErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that failed, by cause",
            errors.clone(),
        );

        let responses = Family::<ClusterStatusLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Upstream responses, by cluster and status class",
            responses.clone(),
        );

        let clusters = cluster_ids
            .into_iter()
            .map(|id| {
                let l = ClusterLabels {
                    cluster: id.to_string(),
                };
                let err = |e: &str| {
                    errors
                        .get_or_create(&ClusterErrorLabels {
                            cluster: id.to_string(),
                            error: e.to_string(),
                        })
                        .clone()
                };
                ClusterMetrics {
                    latency: latency.get_or_create(&l).clone(),
                    connections_opened: opened.get_or_create(&l).clone(),
                    connections_reused: reused.get_or_create(&l).clone(),
                    errors_connect: err("connect"),
                    errors_timeout: err("timeout"),
                    errors_io: err("io"),
                    responses: STATUS_CLASSES.map(|class| {
                        responses
                            .get_or_create(&ClusterStatusLabels {
                                cluster: id.to_string(),
                                status_class: class.to_string(),
                            })
                            .clone()
                    }),
                }
            })
            .collect();

        let control = ControlMetrics {
            applied_revision: Gauge::default(),
            fresh_age_seconds: Gauge::default(),
            rejected_keys: Gauge::default(),
            counters: Default::default(),
            seen: std::sync::Mutex::new([0; 4]),
        };
        registry.register(
            "control_applied_revision",
            "The control-store revision through which every change has been applied",
            control.applied_revision.clone(),
        );
        registry.register(
            "control_fresh_age_seconds",
            "Seconds since the control snapshot was last confirmed current",
            control.fresh_age_seconds.clone(),
        );
        registry.register(
            "control_rejected_keys",
            "Control-store keys whose latest value was refused (the last good value is served)",
            control.rejected_keys.clone(),
        );
        for (name, help, c) in [
            (
                "control_events",
                "Control-store changes applied",
                &control.counters[0],
            ),
            (
                "control_rejections",
                "Control-store values refused",
                &control.counters[1],
            ),
            (
                "control_watch_reconnects",
                "Control-store watch streams re-established",
                &control.counters[2],
            ),
            (
                "control_reloads",
                "Whole-prefix re-reads after a compaction",
                &control.counters[3],
            ),
        ] {
            registry.register(name, help, c.clone());
        }

        let ignored_family = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "debug_header_ignored",
            "X-Debug-Directive headers ignored, by reason",
            ignored_family.clone(),
        );
        let bulk_family = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "bulk_items",
            "Bulk items answered on logical indices, by outcome",
            bulk_family.clone(),
        );
        let diagnostics = DiagnosticsMetrics {
            active: Gauge::default(),
            matched: Counter::default(),
            ignored: HeaderIgnored::ALL.map(|r| {
                ignored_family
                    .get_or_create(&ReasonLabels {
                        reason: r.as_str().to_string(),
                    })
                    .clone()
            }),
            bulk: BULK_OUTCOMES.map(|o| {
                bulk_family
                    .get_or_create(&OutcomeLabels {
                        outcome: o.to_string(),
                    })
                    .clone()
            }),
            limited: Family::default(),
            partitions: Family::default(),
            partition_limit: 0,
            partitions_seen: std::sync::RwLock::new(std::collections::HashSet::new()),
        };
        registry.register(
            "directives_active",
            "Diagnostics directives published and not expired",
            diagnostics.active.clone(),
        );
        registry.register(
            "limited",
            "Requests refused by a per-tenant limit, by the limit",
            diagnostics.limited.clone(),
        );
        registry.register(
            "directives_matched",
            "Requests selected by a diagnostics directive or a debug header",
            diagnostics.matched.clone(),
        );

        let migrations = Family::<PhaseLabels, Gauge>::default();
        registry.register(
            "migrations",
            "Migration records in the control plane, by phase",
            migrations.clone(),
        );
        let migration_documents = Gauge::default();
        registry.register(
            "migration_documents_copied",
            "Documents copied by the full copies of the migrations on record",
            migration_documents.clone(),
        );

        let connections = ConnectionMetrics::default();
        registry.register(
            "connections_open",
            "Client connections open on the data listener",
            connections.open.clone(),
        );
        for reason in CONNECTION_CLOSES {
            // Every reason shown, at 0 until it happens.
            let _ = connections.closed.get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            });
        }
        registry.register(
            "connections_closed",
            "Client connections osproxy closed or refused, by reason",
            connections.closed.clone(),
        );
        let errors = Family::<CodeLabels, Counter>::default();
        registry.register(
            "errors",
            "Requests osproxy answered with an error of its own, by its stable code (refusals of every kind included)",
            errors.clone(),
        );
        Metrics {
            registry,
            requests,
            in_flight,
            buffered,
            clusters,
            control,
            diagnostics,
            migrations,
            migration_documents,
            usage: crate::usage::Usage::new(0),
            connections,
            errors,
        }
    }

    /// Counts a request answered with osproxy's own error `code` (its
    /// stable string form).
    pub fn error(&self, code: &str) {
        self.errors
            .get_or_create(&CodeLabels {
                code: code.to_string(),
            })
            .inc();
    }

    /// The data listener's connection counts (clone it into each worker).
    pub fn connections(&self) -> ConnectionMetrics {
        self.connections.clone()
    }

    /// Keeps usage rows for at most `max_partitions` partitions (the rest
    /// under `_other`).
    pub fn with_usage(mut self, max_partitions: usize) -> Self {
        self.usage = crate::usage::Usage::new(max_partitions);
        self
    }

    /// Usage per partition.
    pub fn usage(&self) -> &crate::usage::Usage {
        &self.usage
    }

    /// Counts one answered request.
    pub fn request_done(&self, kind: EndpointKind, status: u16) {
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            _ => 4,
        };
        let k = EndpointKind::ALL
            .iter()
            .position(|x| *x == kind)
            .unwrap_or(EndpointKind::ALL.len() - 1);
        if let Some(row) = self.requests.get(k) {
            row[class].inc();
        }
    }

    /// Counts a request as in flight until the returned slot is dropped.
    pub fn enter(&self) -> InFlight {
        self.in_flight.inc();
        InFlight(self.in_flight.clone())
    }

    /// The handles of the cluster registered at `index`.
    pub fn cluster(&self, index: usize) -> Option<&ClusterMetrics> {
        self.clusters.get(index)
    }

    /// Records an upstream latency.
    pub fn observe_latency(cluster: &ClusterMetrics, d: Duration) {
        cluster.latency.observe(d.as_secs_f64());
    }

    /// Turns on per-partition request counters for at most `limit`
    /// partitions (the rest count as `_other`).
    pub fn with_partition_metrics(mut self, limit: usize) -> Self {
        if limit > 0 {
            self.diagnostics.partition_limit = limit;
            self.registry.register(
                "partition_requests",
                "Requests on logical indices, by partition (bounded; the rest under _other)",
                self.diagnostics.partitions.clone(),
            );
        }
        self
    }

    /// Counts one request for `partition` (when enabled).
    pub fn partition_request(&self, partition: &str) {
        let d = &self.diagnostics;
        if d.partition_limit == 0 {
            return;
        }
        let known = d
            .partitions_seen
            .read()
            .map(|s| s.contains(partition))
            .unwrap_or(false);
        let label = if known {
            partition
        } else if let Ok(mut seen) = d.partitions_seen.write() {
            if seen.len() < d.partition_limit {
                seen.insert(partition.to_string());
                partition
            } else {
                "_other"
            }
        } else {
            "_other"
        };
        d.partitions
            .get_or_create(&PartitionLabels {
                partition: label.to_string(),
            })
            .inc();
    }

    /// Counts a request refused by the per-tenant limit `limit`.
    pub fn limited(&self, limit: &str) {
        self.diagnostics
            .limited
            .get_or_create(&LimitLabels {
                limit: limit.to_string(),
            })
            .inc();
    }

    /// Counts bulk item outcomes (indexed like [`BULK_OUTCOMES`]).
    pub fn bulk_item(&self, outcome: usize) {
        if let Some(c) = self.diagnostics.bulk.get(outcome) {
            c.inc();
        }
    }

    /// A debug header was ignored.
    pub fn header_ignored(&self, why: HeaderIgnored) {
        if let Some(i) = HeaderIgnored::ALL.iter().position(|r| *r == why) {
            self.diagnostics.ignored[i].inc();
        }
    }

    /// A request was selected for diagnostics.
    pub fn directive_matched(&self) {
        self.diagnostics.matched.inc();
    }

    /// Migration records by phase, and documents copied (set at scrape time).
    pub fn set_migrations(&self, by_phase: &[(&str, u64)], copied: u64) {
        for (phase, n) in by_phase {
            self.migrations
                .get_or_create(&PhaseLabels {
                    phase: (*phase).to_string(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.migration_documents
            .set(i64::try_from(copied).unwrap_or(i64::MAX));
    }

    /// How many directives are live (set at scrape time).
    pub fn set_directives_active(&self, n: usize) {
        self.diagnostics
            .active
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// Records the control plane's standing (called before encoding).
    pub fn set_control(&self, s: ControlStanding) {
        let c = &self.control;
        c.applied_revision
            .set(i64::try_from(s.applied_revision).unwrap_or(i64::MAX));
        c.fresh_age_seconds.set(s.fresh_age_seconds);
        c.rejected_keys
            .set(i64::try_from(s.rejected_keys).unwrap_or(i64::MAX));
        if let Ok(mut seen) = c.seen.lock() {
            let now = [s.events, s.rejections, s.reconnects, s.reloads];
            for i in 0..4 {
                c.counters[i].inc_by(now[i].saturating_sub(seen[i]));
                seen[i] = seen[i].max(now[i]);
            }
        }
    }

    /// Requests in flight now.
    pub fn in_flight_now(&self) -> i64 {
        self.in_flight.get()
    }

    /// The gauge of request-body bytes held, for the process-wide budget
    /// to keep current.
    pub fn buffered_gauge(&self) -> Gauge {
        self.buffered.clone()
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        // The usage rows go before the exposition's end marker.
        let end = out.rfind("# EOF").unwrap_or(out.len());
        let tail = out.split_off(end);
        self.usage.encode(&mut out);
        out.push_str(&tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_encodes() {
        let m = Metrics::new(["main"]);
        m.request_done(EndpointKind::Search, 200);
        m.request_done(EndpointKind::Search, 503);
        if let Some(c) = m.cluster(0) {
            c.connections_opened.inc();
            Metrics::observe_latency(c, Duration::from_millis(3));
        }
        let text = m.encode();
        assert!(
            text.contains(r#"osproxy_requests_total{kind="search",status_class="2xx"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"osproxy_requests_total{kind="search",status_class="5xx"} 1"#));
        assert!(text.contains(r#"osproxy_upstream_connections_opened_total{cluster="main"} 1"#));
        assert!(text.contains(r#"osproxy_upstream_response_seconds_count{cluster="main"} 1"#));
        assert!(text.contains("osproxy_in_flight_requests 0"));
    }
}
