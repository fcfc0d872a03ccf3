//! The configuration model, decoded strictly: unknown keys are errors.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::Duration;

/// The whole configuration of one osproxy instance.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen addresses.
    #[serde(default)]
    pub listen: Listen,
    /// Upstream OpenSearch clusters, by id.
    #[serde(default)]
    pub clusters: Vec<Cluster>,
    /// Upstream client behaviour.
    #[serde(default)]
    pub upstream: Upstream,
    /// Verbatim forwarding to one cluster, for all or some indices.
    pub passthrough: Option<Passthrough>,
    /// Process lifecycle.
    #[serde(default)]
    pub server: Server,
    /// Logging.
    #[serde(default)]
    pub log: Log,
    /// Ingress TLS: reserved; rejected by validation until it is built.
    pub tls: Option<toml::Value>,
    /// Who may call, and for which partitions.
    #[serde(default)]
    pub principals: Vec<PrincipalConfig>,
    /// The catalogue of logical indices (seeds the control plane).
    #[serde(default)]
    pub indices: Vec<IndexConfig>,
    /// Explicit placement entries (seed the control plane).
    #[serde(default)]
    pub placements: Vec<PlacementConfig>,
    /// Signing of scroll and PIT ids.
    #[serde(default)]
    pub cursors: Cursors,
    /// The control plane's backend.
    #[serde(default)]
    pub control: Control,
    /// Diagnostics: directives' outputs, the debug header, trace export.
    #[serde(default)]
    pub diagnostics: Diagnostics,
    /// Usage per partition.
    #[serde(default)]
    pub usage: Usage,
    /// Per-tenant limits (seed the control plane's `limits` key).
    #[serde(default)]
    pub limits: crate::Limits,
}

/// `[usage]`: counters per partition (`/v1/usage`, `osproxy_usage_*`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// Rows for at most this many partitions, the first seen; the rest are
    /// counted under `_other`. 0 counts every partition under `_other`.
    #[serde(default = "default_usage_partitions")]
    pub max_partitions: usize,
}

fn default_usage_partitions() -> usize {
    1000
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            max_partitions: default_usage_partitions(),
        }
    }
}

/// `[diagnostics]`: what selected requests leave behind, and how.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Diagnostics {
    /// `false` turns request tracing off entirely (directives and debug
    /// headers are then ignored): a kill switch, and the baseline of the
    /// diagnostics benchmark.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Environment variable holding the fleet key `X-Debug-Directive`
    /// headers are signed with (at least 32 characters); without a key the
    /// header is ignored (and counted).
    pub header_key_env: Option<String>,
    /// File holding that key.
    pub header_key_file: Option<String>,
    /// One JSON log line (shape level) for every request, not only for the
    /// ones a directive selects.
    #[serde(default)]
    pub log_all_requests: bool,
    /// How many explanations this instance keeps (most recent), and how
    /// many each capturing directive keeps.
    #[serde(default = "default_explain_capacity")]
    pub explain_capacity: usize,
    /// OTLP/HTTP endpoint (`http://host:4318`) selected requests are
    /// exported to as spans; no export when absent.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Per-partition request counters for at most this many partitions
    /// (the rest are counted as `_other`); 0 turns them off.
    #[serde(default)]
    pub partition_metrics: usize,
}

impl Default for Diagnostics {
    fn default() -> Self {
        Diagnostics {
            enabled: true,
            header_key_env: None,
            header_key_file: None,
            log_all_requests: false,
            explain_capacity: default_explain_capacity(),
            otlp_endpoint: None,
            service_name: default_service_name(),
            partition_metrics: 0,
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_explain_capacity() -> usize {
    1024
}
fn default_service_name() -> String {
    "osproxy".to_string()
}

/// `[control]`: where the fleet's control plane (catalogue, placements,
/// directives, fleet records) lives.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    /// `memory` (this instance alone, seeded from this file on every start)
    /// or `etcd` (shared by a fleet).
    #[serde(default)]
    pub backend: ControlBackend,
    /// The etcd store, required when `backend = "etcd"`.
    pub etcd: Option<EtcdConfig>,
}

/// The control-plane backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlBackend {
    /// In memory, seeded from the config file.
    #[default]
    Memory,
    /// An etcd v3 cluster.
    Etcd,
}

/// `[control.etcd]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// `http://host:port` client URLs of the etcd members.
    pub endpoints: Vec<String>,
    /// The fleet's key prefix; every key osproxy reads or writes is under it.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// How long start-up waits for etcd before giving up.
    #[serde(default = "default_etcd_connect_timeout")]
    pub connect_timeout: Duration,
    /// The fleet record's lease: a crashed instance leaves the fleet list
    /// this long after its last keep-alive.
    #[serde(default = "default_etcd_lease_ttl")]
    pub lease_ttl: Duration,
    /// How often the watch asks etcd to confirm it is current (a progress
    /// request); the instance's freshness is measured by these answers.
    #[serde(default = "default_etcd_progress_interval")]
    pub progress_interval: Duration,
    /// TLS to `https://` endpoints: the CA that signed etcd's certificate
    /// (default: the system's roots), a client certificate for
    /// `--client-cert-auth`, the name to check.
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// An etcd user (etcd's own authentication, `auth enable`); its
    /// password from `password_env` or `password_file`. The token etcd
    /// hands out is renewed when it expires.
    #[serde(default)]
    pub username: Option<String>,
    /// Environment variable holding the etcd user's password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// File holding the etcd user's password.
    #[serde(default)]
    pub password_file: Option<String>,
}

impl EtcdConfig {
    /// How long without an event or progress answer the snapshot still
    /// counts as fresh: four progress intervals, at least two seconds.
    pub fn freshness_bound(&self) -> std::time::Duration {
        (self.progress_interval.as_std() * 4).max(std::time::Duration::from_secs(2))
    }

    /// How long after a keep-alive was sent the fleet lease counts as held:
    /// the TTL less a margin for clock-rate differences and scheduling (a
    /// fifth of the TTL, at least one second). Writes to logical indices
    /// are admitted only within it.
    pub fn lease_held_for(&self) -> std::time::Duration {
        let ttl = self.lease_ttl.as_std();
        ttl.saturating_sub((ttl / 5).max(std::time::Duration::from_secs(1)))
    }
}

fn default_etcd_prefix() -> String {
    "/osproxy/default/".to_string()
}
fn default_etcd_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_etcd_lease_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_etcd_progress_interval() -> Duration {
    Duration::from_millis(500)
}

/// `[cursors]`: the fleet key scroll and PIT ids are signed with. Every
/// instance of a fleet needs the same key, or a cursor opened on one is
/// refused by another; without one, each instance draws a random key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cursors {
    /// Environment variable holding the key (at least 32 characters).
    pub key_env: Option<String>,
    /// File holding the key (at least 32 characters).
    pub key_file: Option<String>,
}

/// `[[principals]]`: an authenticated caller and its grants.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrincipalConfig {
    /// The principal's name, in logs and explanations.
    pub name: String,
    /// Environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// File holding the bearer token (trailing newline ignored).
    pub token_file: Option<String>,
    /// Partitions this principal may act for.
    #[serde(default)]
    pub partitions: Vec<String>,
    /// A trusted gateway that may act for any partition it names.
    #[serde(default)]
    pub any_partition: bool,
    /// May call the admin API and operator endpoints.
    #[serde(default)]
    pub operator: bool,
    /// The subject of a client certificate (verified against
    /// `listen.tls.client_ca_file`) that authenticates as this principal,
    /// like `"CN=acme-svc,O=Acme"` (the attributes in any order).
    #[serde(default)]
    pub cert_subject: Option<String>,
    /// Instead: a subject alternative name (DNS name, e-mail or URI) of the
    /// client certificate.
    #[serde(default)]
    pub cert_san: Option<String>,
}

/// Where a logical index finds a request's partition.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum PartitionSource {
    /// `{ from = "principal" }`: the principal's single grant, or the one it
    /// names in `x-osproxy-partition`.
    From(PartitionFrom),
    /// `{ header = "x-tenant" }`: a header (set by a trusted gateway).
    Header(String),
    /// `{ body = "tenant_id" }`: a top-level field of each document.
    Body(String),
}

/// The only value of `partition.from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartitionFrom {
    /// The principal's grant.
    Principal,
}

/// `[[indices]]`: one logical index of the catalogue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IndexConfig {
    /// The logical name clients use.
    pub name: String,
    /// Where the partition comes from.
    #[serde(default = "default_partition_source")]
    pub partition: PartitionSource,
    /// The physical `_id` template for shared placements.
    #[serde(default = "default_id_template")]
    pub id: String,
    /// The injected isolation field for shared placements.
    #[serde(default = "default_field")]
    pub field: String,
    /// The placement of partitions without an explicit entry.
    pub default: osproxy_core::Placement,
    /// Whether scripts are allowed in shared placements.
    #[serde(default)]
    pub allow_scripts: bool,
    /// The mappings of its shared physical indices, declared by the
    /// operator (an OpenSearch `mappings` object): osproxy creates a shared
    /// index with them, and tenants see them as the logical index's mapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappings: Option<serde_json::Value>,
    /// The index settings of its shared physical indices (an OpenSearch
    /// `settings` object), applied when osproxy creates one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<serde_json::Value>,
}

fn default_partition_source() -> PartitionSource {
    PartitionSource::From(PartitionFrom::Principal)
}
fn default_id_template() -> String {
    "{partition}:{id}".to_string()
}
fn default_field() -> String {
    "_tenant".to_string()
}

/// `[[placements]]`: an explicit placement of one partition of one index.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementConfig {
    /// The logical index.
    pub index: String,
    /// The partition.
    pub partition: String,
    /// Where its data lives.
    pub placement: osproxy_core::Placement,
}

impl Config {
    /// The cluster with this id.
    pub fn cluster(&self, id: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.id == id)
    }
}

/// `[listen]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The OpenSearch-compatible data API.
    #[serde(default = "default_data_addr")]
    pub data: SocketAddr,
    /// Admin API, metrics and health.
    #[serde(default = "default_admin_addr")]
    pub admin: SocketAddr,
    /// TLS on the data listener (cleartext when absent).
    #[serde(default)]
    pub tls: Option<ListenTls>,
    /// TLS on the admin listener (cleartext when absent).
    #[serde(default)]
    pub admin_tls: Option<ListenTls>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            data: default_data_addr(),
            admin: default_admin_addr(),
            tls: None,
            admin_tls: None,
        }
    }
}

/// `listen.tls` / `listen.admin_tls`: a listener's certificate and key (PEM
/// files, re-read when they change on disk).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListenTls {
    /// The certificate chain, leaf first.
    pub cert_file: String,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// CA certificates client certificates are verified against (mTLS).
    #[serde(default)]
    pub client_ca_file: Option<String>,
    /// Whether a client certificate is asked for: "none" (default without
    /// a client CA), "optional" or "required".
    #[serde(default)]
    pub client_auth: Option<ClientAuth>,
}

/// How a TLS listener treats client certificates.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// None is asked for.
    None,
    /// One is verified when sent.
    Optional,
    /// A connection without a valid one is refused.
    Required,
}

/// `clusters[].tls`: how osproxy verifies an `https` cluster, and the
/// certificate it presents.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClusterTls {
    /// CA certificates the cluster's certificate is verified against
    /// (default: the system's roots).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// The name the certificate must carry (default: the URL's host).
    #[serde(default)]
    pub server_name: Option<String>,
    /// A client certificate chain to present (mTLS to the cluster).
    #[serde(default)]
    pub client_cert_file: Option<String>,
    /// Its private key.
    #[serde(default)]
    pub client_key_file: Option<String>,
}

fn default_data_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9200))
}

fn default_admin_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9600))
}

/// `[[clusters]]`: one upstream OpenSearch cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// The id placements and passthrough refer to.
    pub id: String,
    /// Base URL, `http://host:port`.
    pub url: String,
    /// Basic-auth user osproxy presents upstream (optional).
    pub username: Option<String>,
    /// Environment variable holding the basic-auth password.
    pub password_env: Option<String>,
    /// File holding the basic-auth password (trailing newline trimmed).
    pub password_file: Option<String>,
    /// Environment variable holding an API key, sent as
    /// `Authorization: ApiKey <value>` (instead of basic auth).
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// File holding the API key (trailing newline trimmed).
    #[serde(default)]
    pub api_key_file: Option<String>,
    /// How an `https` cluster is verified (system roots by default).
    #[serde(default)]
    pub tls: Option<ClusterTls>,
    /// Sign every request with AWS Signature Version 4 (instead of basic
    /// auth or an API key); credentials from the `AWS_*` environment or the
    /// shared credentials file.
    #[serde(default)]
    pub sigv4: Option<SigV4>,
    /// Requests this instance has waiting for the cluster's answers at
    /// once; more wait for a turn (within their deadline, then 503
    /// `overloaded`), so that a burst of clients cannot open a connection
    /// each or run the cluster out of memory.
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
}

fn default_max_concurrent_requests() -> usize {
    256
}

/// `clusters[].sigv4`: where requests are signed for.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SigV4 {
    /// The AWS region, `eu-west-1`.
    pub region: String,
    /// `es` (Amazon OpenSearch Service) or `aoss` (OpenSearch Serverless).
    pub service: String,
}

/// `[upstream]`: how osproxy talks to clusters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    /// Deadline for the upstream's response head; past it the client gets 504.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: Duration,
    /// Deadline for opening a TCP connection; past it the client gets 502.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this; keep it below the
    /// cluster's own keep-alive timeout.
    #[serde(default = "default_pool_idle_timeout")]
    pub pool_idle_timeout: Duration,
    /// Idle connections kept per cluster.
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle_per_cluster: usize,
    /// Speak HTTP/2 (prior knowledge) to clusters instead of HTTP/1.1.
    #[serde(default)]
    pub http2: bool,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            request_timeout: default_request_timeout(),
            connect_timeout: default_connect_timeout(),
            pool_idle_timeout: default_pool_idle_timeout(),
            pool_max_idle_per_cluster: default_pool_max_idle(),
            http2: false,
        }
    }
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_pool_idle_timeout() -> Duration {
    Duration::from_secs(50)
}
fn default_pool_max_idle() -> usize {
    256
}

/// `[passthrough]`: forward requests verbatim to one cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Passthrough {
    /// The cluster id requests go to.
    pub cluster: String,
    /// When set, only requests whose every index starts with one of these
    /// prefixes pass through; when absent, every request does.
    pub indices: Option<Vec<String>>,
}

/// `[server]`: process lifecycle.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish.
    #[serde(default = "default_drain_timeout")]
    pub drain_timeout: Duration,
    /// A stable instance id; a random one is chosen when absent.
    pub instance_id: Option<String>,
    /// Data-path worker threads, each with its own event loop, listening
    /// socket (`SO_REUSEPORT`) and upstream pools; default: one per core.
    pub workers: Option<usize>,
    /// The most a compressed request body (`Content-Encoding: gzip` or
    /// `deflate`) to a logical index may decode to; more is 413. Default
    /// `100mb`, OpenSearch's own `http.max_content_length`, which it also
    /// applies to the decoded body.
    #[serde(default = "default_max_decompressed_body")]
    pub max_decompressed_body: crate::ByteSize,
    /// The most request-body bytes held in memory at once, across all
    /// requests: bodies read whole (searches, documents, mget, msearch,
    /// compressed bodies once decoded) and each bulk's unsent batches. A
    /// request that would go past it is refused `503 overloaded` (retryable,
    /// `Retry-After: 1`). Default `512mb`.
    #[serde(default = "default_max_buffered_total")]
    pub max_buffered_total: crate::ByteSize,
    /// Client connections open at once (data listener, all workers); past
    /// it a new connection is answered 503 (cleartext) or closed (TLS).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests in flight at once; past it a request is 503 `overloaded`.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A connection with no request in flight and no bytes either way for
    /// this long is closed (idle keep-alive, HTTP/2 without streams, a
    /// socket that never sends a request).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
    /// A connection whose client stops reading (osproxy cannot write any of
    /// its answer) for this long is closed.
    #[serde(default = "default_send_timeout")]
    pub send_timeout: Duration,
    /// A request's headers must all arrive within this long of the
    /// connection being ready for them; a slower client is disconnected.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// A request body that pauses this long between bytes is answered 408
    /// `request_timeout`.
    #[serde(default = "default_body_read_timeout")]
    pub body_read_timeout: Duration,
    /// The most bytes a request's header fields may add up to (each
    /// counted as `name: value` and its line end); more is 431
    /// `headers_too_large`. Default `64kb`.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: crate::ByteSize,
    /// The most header fields a request may have; more is 431. Default
    /// 100.
    #[serde(default = "default_max_headers")]
    pub max_headers: usize,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            drain_timeout: default_drain_timeout(),
            instance_id: None,
            workers: None,
            max_decompressed_body: default_max_decompressed_body(),
            max_buffered_total: default_max_buffered_total(),
            max_connections: default_max_connections(),
            max_in_flight: default_max_in_flight(),
            idle_timeout: default_idle_timeout(),
            send_timeout: default_send_timeout(),
            body_read_timeout: default_body_read_timeout(),
            header_read_timeout: default_header_read_timeout(),
            max_header_bytes: default_max_header_bytes(),
            max_headers: default_max_headers(),
        }
    }
}

fn default_max_decompressed_body() -> crate::ByteSize {
    crate::ByteSize::from_bytes(100 * 1024 * 1024)
}

fn default_max_buffered_total() -> crate::ByteSize {
    crate::ByteSize::from_bytes(512 * 1024 * 1024)
}

fn default_max_header_bytes() -> crate::ByteSize {
    crate::ByteSize::from_bytes(64 * 1024)
}

fn default_max_headers() -> usize {
    100
}

fn default_max_connections() -> usize {
    10_000
}

fn default_max_in_flight() -> usize {
    4_096
}

fn default_idle_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_send_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_body_read_timeout() -> Duration {
    Duration::from_secs(60)
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(30)
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A `tracing` filter: `info`, `osproxy=debug,info`, ...
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: default_log_level(),
            format: LogFormat::Text,
        }
    }
}

fn default_log_level() -> String {
    "info".to_string()
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}
