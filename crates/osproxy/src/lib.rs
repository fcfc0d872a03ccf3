//! An osproxy instance as a library: [`Instance::build`] wires the crates
//! from a validated config, [`Instance::run`] serves until shutdown and
//! drains. The binary only parses the command line and calls both.

use std::sync::Arc;

use osproxy_admin::Admin;
use osproxy_config::{read_secret, Config, ControlBackend, SecretError};
use osproxy_control::{ControlPlane, EtcdHandle, Member, Snapshot};
use osproxy_migrate::Controller;
use osproxy_observe::otlp::Exporter;
use osproxy_observe::trace::Explanations;
use osproxy_observe::{Metrics, Readiness};
use osproxy_proxy::auth::Authenticator;
use osproxy_proxy::diagnostics::Diagnostics;
use osproxy_proxy::ingress::{bind_reuseport, serve as serve_listener, ConnectionLimits, Drained};
use osproxy_proxy::pipeline::Wiring;
use osproxy_proxy::tenancy::cursor::CursorKey;
use osproxy_proxy::Proxy;
use osproxy_upstream::Upstreams;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The background services an instance runs beside its data workers, by
/// name, in the order they start: the admin listener, the etcd follower and
/// fleet record (etcd backend), the OTLP exporter (when configured), the
/// readiness probes, and the adoption of migrations whose controller left.
pub const SERVICES: [&str; 5] = [
    "admin listener",
    "etcd follower and fleet record",
    "otlp exporter",
    "readiness probes",
    "migration adoption",
];

/// Why an instance could not start or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// A listener could not be bound.
    #[error("cannot listen on {key} = {addr}")]
    Bind {
        /// The config key (`listen.data`, `listen.admin`).
        key: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A cluster could not be given a client.
    #[error(transparent)]
    Upstream(#[from] osproxy_upstream::SetupError),
    /// The control plane could not start (the store did not answer, the
    /// first snapshot was refused, ...).
    #[error("control plane: {0}")]
    Catalogue(#[from] osproxy_control::CatalogueError),
    /// The etcd store could not be reached or read at start-up.
    #[error("control plane: {0}")]
    Store(#[from] osproxy_control::StoreError),
    /// A key or credential named by the config could not be read.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A listener's TLS certificate or key is not usable.
    #[error(transparent)]
    Tls(#[from] osproxy_upstream::tls::TlsError),
    /// The principals' tokens do not make an authenticator.
    #[error(transparent)]
    Principals(#[from] osproxy_proxy::auth::AuthConfigError),
    /// A thread or runtime of the instance failed.
    #[error("{what}")]
    Runtime {
        /// What failed.
        what: String,
        /// Why, when an I/O error says.
        #[source]
        source: Option<std::io::Error>,
    },
}

impl InstanceError {
    fn runtime(what: impl Into<String>, source: std::io::Error) -> Self {
        InstanceError::Runtime {
            what: what.into(),
            source: Some(source),
        }
    }
}

impl From<String> for InstanceError {
    fn from(what: String) -> Self {
        InstanceError::Runtime { what, source: None }
    }
}

/// A built instance, not yet serving data requests.
pub struct Instance {
    config: Config,
    nonce: u64,
    instance_id: String,
    workers: usize,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    data: Vec<std::net::TcpListener>,
    data_addr: std::net::SocketAddr,
    admin_addr: std::net::SocketAddr,
    probe_upstreams: Arc<Upstreams>,
    data_tls: Option<Arc<rustls::ServerConfig>>,
    auth: Arc<Authenticator>,
    cursor_key: CursorKey,
    plane: Arc<ControlPlane>,
    control: tokio::runtime::Runtime,
    /// Where migrations run: their copy pages, JSON and id sets never delay
    /// the control thread's watch, lease keep-alive and admin answers.
    migrations: tokio::runtime::Runtime,
    export_task: Option<tokio::task::JoinHandle<()>>,
    diagnostics: Arc<Diagnostics>,
    controller: Arc<Controller>,
    stop_admin: tokio::sync::oneshot::Sender<()>,
    admin_task: tokio::task::JoinHandle<Drained>,
    etcd: Option<EtcdHandle>,
}

/// Random bits for request ids and the instance id, from the OS-seeded
/// hasher keys std already draws (no extra dependency).
fn instance_nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    h.finish()
}

/// An instance runs `workers` data-path threads, each a single-threaded
/// event loop with its own listening socket and upstream pools (a request
/// never hops threads, so no cross-thread wake-ups on the hot path), plus a
/// control thread for the admin listener, the control plane's services and
/// signals.
impl Instance {
    /// Builds an instance from a validated config: binds the listeners
    /// (failing with the address that could not be bound), builds the
    /// control plane (with etcd: reads the first snapshot, failing fast
    /// naming the endpoint), the upstream pools, the principals and the
    /// admin listener. Nothing serves data requests until [`Instance::run`].
    pub fn build(config: Config) -> Result<Instance, InstanceError> {
        let nonce = instance_nonce();
        let instance_id = config
            .server
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{nonce:016x}"));
        let workers = config.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        let cluster_ids: Vec<&str> = config.clusters.iter().map(|c| c.id.as_str()).collect();
        let metrics = Arc::new(
            Metrics::new(cluster_ids.iter().copied())
                .with_partition_metrics(config.diagnostics.partition_metrics)
                .with_usage(config.usage.max_partitions),
        );
        let readiness = Arc::new(Readiness::new(cluster_ids.iter().copied()));

        let data =
            bind_reuseport(config.listen.data, workers).map_err(|source| InstanceError::Bind {
                key: "listen.data",
                addr: config.listen.data,
                source,
            })?;
        let admin = std::net::TcpListener::bind(config.listen.admin)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|source| InstanceError::Bind {
                key: "listen.admin",
                addr: config.listen.admin,
                source,
            })?;
        let data_addr = data
            .first()
            .and_then(|l| l.local_addr().ok())
            .ok_or_else(|| InstanceError::from("no data listener".to_string()))?;
        let admin_addr = admin
            .local_addr()
            .map_err(|e| InstanceError::runtime("the admin listener has no address", e))?;

        warn_cleartext_credentials(&config);
        let data_tls = listener_tls("listen.tls", config.listen.tls.as_ref())?;
        let admin_tls = listener_tls("listen.admin_tls", config.listen.admin_tls.as_ref())?;
        // Built before any worker starts so that an unusable cluster entry
        // (an unreadable password file) fails start-up instead of a worker.
        let probe_upstreams = Arc::new(Upstreams::new(
            &config.clusters,
            &config.upstream,
            &metrics,
        )?);
        let auth = Arc::new(Authenticator::from_config(&config)?);
        let cursor_key = cursor_key(&config)?;
        let etcd_backend = config.control.backend == ControlBackend::Etcd;
        // The memory backend starts from the config; etcd's first snapshot is
        // read from the store before any worker starts.
        let initial = if etcd_backend {
            Snapshot::default()
        } else {
            Snapshot::from_config(&config)?
        };
        let plane = Arc::new(ControlPlane::new(
            initial,
            config.clusters.iter().map(|c| c.id.clone()).collect(),
        ));
        if etcd_backend {
            plane.expect_store();
        }
        if let Some(pt) = &config.passthrough {
            plane.reserve_passthrough(pt.cluster.clone(), pt.indices.clone());
        }
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let member = Member {
            id: instance_id.clone(),
            address: data_addr.to_string(),
            admin: admin_addr.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            started,
        };
        let control = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| InstanceError::runtime("cannot start the control runtime", e))?;
        let explanations = Arc::new(Explanations::new(
            &instance_id,
            config.diagnostics.explain_capacity,
        ));
        // The exporter's task lives on the control runtime; workers only queue.
        let (exporter, export_task) = match &config.diagnostics.otlp_endpoint {
            Some(endpoint) => {
                let _guard = control.enter();
                let (e, task) =
                    Exporter::start(endpoint, &config.diagnostics.service_name, &instance_id);
                (Some(e), Some(task))
            }
            None => (None, None),
        };
        let diagnostics = Arc::new(Diagnostics::new(
            &config.diagnostics,
            plane.clone(),
            debug_header_key(&config)?,
            explanations.clone(),
            exporter,
            metrics.clone(),
            instance_id.clone(),
        ));
        // The admin listener answers (readyz: 503) while the first snapshot is
        // read; a store that cannot be read fails start-up.
        let migrations = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("osproxy-migrate")
            .enable_all()
            .build()
            .map_err(|e| InstanceError::runtime("cannot start the migration runtime", e))?;
        // Pools of its own: their connections live on the migration thread;
        // and bounds of its own, so a fenced write never queues behind
        // client traffic after its fence check.
        let migration_upstreams =
            Arc::new(Upstreams::new(&config.clusters, &config.upstream, &metrics)?.apart());
        let controller = Arc::new(Controller::new(
            plane.clone(),
            migration_upstreams,
            instance_id.clone(),
            config.upstream.request_timeout.as_std(),
            migrations.handle().clone(),
        ));
        let operator_auth = auth.clone();
        let admin_routes = Admin::new(metrics.clone(), readiness.clone())
            .with_instance(member.clone())
            .with_explanations(explanations.clone())
            .with_controller(controller.clone())
            .with_control(
                plane.clone(),
                Arc::new(move |h| operator_auth.authenticate(h).is_ok_and(|p| p.operator)),
            );
        let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
        let admin_task = control.block_on(async {
            let admin = TcpListener::from_std(admin)
                .map_err(|e| InstanceError::runtime("cannot serve the admin listener", e))?;
            Ok::<_, InstanceError>(tokio::spawn(serve_listener(
                admin,
                admin_tls,
                move |req| admin_routes.clone().handle(req),
                async {
                    let _ = admin_stopped.await;
                },
                std::time::Duration::from_secs(1),
                ConnectionLimits::default(),
            )))
        })?;
        let etcd = if etcd_backend {
            readiness.set_control_pending(Some(
                "the control snapshot is not built yet (reading etcd)".into(),
            ));
            let handle = control.block_on(plane.start_etcd(&config, member.clone()))?;
            readiness.set_control_pending(None);
            Some(handle)
        } else {
            None
        };
        Ok(Instance {
            config,
            nonce,
            instance_id,
            workers,
            metrics,
            readiness,
            data,
            data_addr,
            admin_addr,
            probe_upstreams,
            data_tls,
            auth,
            cursor_key,
            plane,
            control,
            migrations,
            export_task,
            diagnostics,
            controller,
            stop_admin,
            admin_task,
            etcd,
        })
    }

    /// The data listener's address.
    pub fn data_addr(&self) -> std::net::SocketAddr {
        self.data_addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> std::net::SocketAddr {
        self.admin_addr
    }

    /// Runs the instance: one worker per data listener, then its background
    /// services ([`SERVICES`]), until `shutdown` resolves (naming why); then
    /// drains (readiness off, listeners closed, in-flight requests finished
    /// up to the drain deadline), leaves the fleet and stops the services.
    pub fn run(
        self,
        shutdown: impl std::future::Future<Output = &'static str> + Send,
    ) -> Result<(), InstanceError> {
        let Instance {
            config,
            nonce,
            instance_id,
            workers,
            metrics,
            readiness,
            data,
            data_addr,
            admin_addr,
            probe_upstreams,
            data_tls,
            auth,
            cursor_key,
            plane,
            control,
            migrations,
            export_task,
            diagnostics,
            controller,
            stop_admin,
            admin_task,
            etcd,
        } = self;
        let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
        let drain = config.server.drain_timeout.as_std();
        // One count of open connections for all workers.
        let data_limits = ConnectionLimits::new(
            config.server.max_connections,
            config.server.idle_timeout.as_std(),
            config.server.send_timeout.as_std(),
        )
        .with_header_read_timeout(config.server.header_read_timeout.as_std())
        .with_header_limits(
            config.server.max_headers,
            usize::try_from(config.server.max_header_bytes.bytes()).unwrap_or(usize::MAX),
        )
        .with_metrics(metrics.connections());
        // One set of per-tenant buckets for all workers: a worker's share
        // would multiply the budget by the workers.
        let limiter = Arc::new(osproxy_proxy::limits::Limiter::new(plane.clone()));
        let mut threads = Vec::with_capacity(workers);
        for (i, listener) in data.into_iter().enumerate() {
            let limits = data_limits.clone();
            let limiter = limiter.clone();
            let config = config.clone();
            let metrics = metrics.clone();
            let auth = auth.clone();
            let plane = plane.clone();
            let cursor_key = cursor_key.clone();
            let diagnostics = diagnostics.clone();
            let tls = data_tls.clone();
            let mut shutdown = shutdown_rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("osproxy-worker-{i}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| e.to_string())?;
                    rt.block_on(async move {
                        let listener =
                            TcpListener::from_std(listener).map_err(|e| e.to_string())?;
                        let upstreams = Arc::new(
                            Upstreams::new(&config.clusters, &config.upstream, &metrics)
                                .map_err(|e| e.to_string())?,
                        );
                        let parts = Wiring {
                            auth,
                            control: plane,
                            upstreams,
                            metrics,
                            cursor_key,
                            diagnostics,
                            limiter,
                        };
                        let proxy =
                            Arc::new(Proxy::new(&config, parts, nonce.wrapping_add(i as u64)));
                        let stop = async move {
                            let _ = shutdown.wait_for(|stop| *stop).await;
                        };
                        Ok::<Drained, String>(
                            serve_listener(
                                listener,
                                tls,
                                // Boxed: hyper moves a request's future twice on its way in.
                                move |req| Box::pin(proxy.clone().handle(req)),
                                stop,
                                drain,
                                limits,
                            )
                            .await,
                        )
                    })
                });
            threads.push(spawned.map_err(|e| {
                InstanceError::runtime(format!("cannot start worker thread {i}"), e)
            })?);
        }

        let outcome = control.block_on(async move {
            osproxy_upstream::probe::spawn_probes(probe_upstreams, readiness.clone());
            // Migrations whose controller left the fleet are adopted here.
            tokio::spawn(controller.adopt_orphans(std::time::Duration::from_secs(1)));

            info!(%instance_id, workers, backend = plane.backend(), version = env!("CARGO_PKG_VERSION"), data = %data_addr, admin = %admin_addr, "osproxy listening");
            // One parseable line on stdout for scripts and the test harness.
            println!("osproxy listening data={data_addr} admin={admin_addr}");

            let signal = shutdown.await;
            info!(signal, "shutting down: refusing new connections, draining in-flight requests");
            readiness.start_draining();
            let _ = shutdown_tx.send(true);
            let outcomes = tokio::task::spawn_blocking(move || threads.into_iter().map(|t| t.join()).collect::<Vec<_>>())
                .await
                .map_err(|e| InstanceError::from(e.to_string()))?;
            let mut failure = None;
            for outcome in outcomes {
                match outcome {
                    Ok(Ok(Drained::Complete)) => {}
                    Ok(Ok(Drained::TimedOut)) => {
                        warn!(deadline_ms = drain.as_millis() as u64, "drain deadline passed; cut the remaining requests");
                    }
                    Ok(Err(e)) => failure = Some(e),
                    Err(_) => failure = Some("a worker thread panicked".to_string()),
                }
            }
            info!("drained");
            if let Some(etcd) = etcd {
                etcd.shutdown().await;
            }
            // The workers' queues are gone with them: the exporter sends what
            // is left and ends.
            drop(diagnostics);
            if let Some(task) = export_task {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
            }
            let _ = stop_admin.send(());
            let _ = admin_task.await;
            failure.map_or(Ok(()), |e| Err(InstanceError::from(e)))
        });
        // A migration still running stops here; its record is adopted.
        migrations.shutdown_background();
        outcome
    }
}

/// Credentials configured toward a cleartext endpoint travel readable by
/// anyone on the path: allowed (a private network, a sidecar), but said.
fn warn_cleartext_credentials(config: &Config) {
    for c in &config.clusters {
        let credentials =
            c.username.is_some() || c.api_key_env.is_some() || c.api_key_file.is_some();
        if credentials && c.url.starts_with("http://") {
            warn!(cluster = %c.id, "credentials are sent to this cluster over cleartext http://; use an https:// url");
        }
    }
    if let Some(etcd) = &config.control.etcd {
        if etcd.username.is_some() && etcd.endpoints.iter().any(|e| e.starts_with("http://")) {
            warn!("the etcd user's password and token are sent over cleartext http://; use https:// endpoints");
        }
    }
}

/// A listener's TLS server configuration, if it has one.
fn listener_tls(
    key: &str,
    tls: Option<&osproxy_config::ListenTls>,
) -> Result<Option<Arc<rustls::ServerConfig>>, InstanceError> {
    Ok(tls
        .map(|t| osproxy_upstream::tls::server_config(key, t))
        .transpose()?)
}

/// Everything TLS the config names, built as `serve` would build it, so
/// `osproxy check` refuses an unreadable or mismatched certificate and key,
/// a CA file that does not parse, or `https` without a trust root (each
/// naming its key) before anything starts.
pub fn check_tls(config: &Config) -> Result<(), InstanceError> {
    listener_tls("listen.tls", config.listen.tls.as_ref())?;
    listener_tls("listen.admin_tls", config.listen.admin_tls.as_ref())?;
    if let Some(etcd) = &config.control.etcd {
        if etcd.endpoints.iter().any(|e| e.starts_with("https://")) {
            osproxy_upstream::tls::client_config("control.etcd.tls", etcd.tls.as_ref(), false)?;
        }
    }
    for (i, c) in config.clusters.iter().enumerate() {
        if c.sigv4.is_some() {
            osproxy_upstream::sigv4::Credentials::from_environment().map_err(|source| {
                osproxy_upstream::SetupError::SigV4 {
                    cluster: format!("{} (clusters[{i}])", c.id),
                    source,
                }
            })?;
        }
        if c.url.starts_with("https://") {
            osproxy_upstream::tls::client_config(
                &format!("clusters[{i}].tls"),
                c.tls.as_ref(),
                config.upstream.http2,
            )?;
        }
    }
    Ok(())
}

/// The key scroll and PIT ids are signed with: the configured fleet key, or
/// a random one for this instance alone.
fn cursor_key(config: &Config) -> Result<CursorKey, InstanceError> {
    let c = &config.cursors;
    if let Some(secret) = read_secret("cursors.key", c.key_env.as_deref(), c.key_file.as_deref())? {
        return Ok(CursorKey::new(secret.as_bytes()));
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| InstanceError::runtime("cannot read random bytes for the cursor key", e))?;
    if !config.indices.is_empty() {
        warn!("no [cursors] key configured: scroll and PIT ids are valid on this instance only; set cursors.key_env for a fleet");
    }
    Ok(CursorKey::new(&bytes))
}

/// The key `X-Debug-Directive` headers are signed with, if configured.
fn debug_header_key(config: &Config) -> Result<Option<CursorKey>, SecretError> {
    let d = &config.diagnostics;
    let secret = read_secret(
        "diagnostics.header_key",
        d.header_key_env.as_deref(),
        d.header_key_file.as_deref(),
    )?;
    Ok(secret.map(|s| CursorKey::new(s.as_bytes())))
}
