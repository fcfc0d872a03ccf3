//! `osproxy ctl`: a client of the admin API, with readable output by default
//! and `--json` for scripts.

use std::process::ExitCode;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

mod limits;
mod watch;

#[derive(Args, Debug)]
pub struct CtlArgs {
    /// The admin listener [default: $OSPROXY_ADMIN, then http://127.0.0.1:9600]
    #[arg(long, env = "OSPROXY_ADMIN", default_value = "http://127.0.0.1:9600")]
    admin: String,
    /// An operator principal's bearer token [default: $OSPROXY_TOKEN]
    #[arg(long, env = "OSPROXY_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// For an https:// admin listener (listen.admin_tls): the CA its
    /// certificate is verified against [default: $OSPROXY_CA_FILE, then
    /// the system's roots]
    #[arg(long, env = "OSPROXY_CA_FILE")]
    ca_file: Option<String>,
    /// Print the admin API's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: CtlCommand,
}

#[derive(Subcommand, Debug)]
enum CtlCommand {
    /// Live instances and what they have applied.
    Fleet,
    /// The catalogue of logical indices.
    Catalogue {
        #[command(subcommand)]
        command: CatalogueCommand,
    },
    /// The placement table.
    Placement {
        #[command(subcommand)]
        command: PlacementCommand,
    },
    /// The shape-only explanation of one request (ask the instance that
    /// served it), or with --directive, what a capturing directive kept.
    Explain {
        /// The request id (`x-request-id` of the response).
        request_id: Option<String>,
        /// A capturing directive's id.
        #[arg(long)]
        directive: Option<String>,
    },
    /// Move a partition between placements while it is written to.
    Migrate {
        #[command(subcommand)]
        command: MigrateCommand,
    },
    /// The fleet's diagnostics directive set.
    Directives {
        #[command(subcommand)]
        command: DirectivesCommand,
    },
    /// Per-tenant limits, for the whole fleet.
    Limits {
        #[command(subcommand)]
        command: limits::LimitsCommand,
    },
    /// Usage per partition on the instance asked (requests, bytes,
    /// documents, upstream time, refusals), busiest first.
    Usage,
}

/// A placement on the command line: `--kind --cluster [--index-name]`.
#[derive(Args, Debug)]
struct PlacementArgs {
    /// shared, index or cluster
    #[arg(long)]
    kind: String,
    #[arg(long)]
    cluster: String,
    /// The physical index (required for shared and index).
    #[arg(long)]
    index_name: Option<String>,
}

impl PlacementArgs {
    /// The placement value the admin API takes.
    fn value(&self) -> Value {
        let mut v = serde_json::json!({"kind": self.kind, "cluster": self.cluster});
        if let Some(i) = &self.index_name {
            v["index"] = Value::from(i.as_str());
        }
        v
    }
}

#[derive(Subcommand, Debug)]
enum MigrateCommand {
    /// Start moving a partition to another placement.
    Start {
        index: String,
        partition: String,
        /// The destination.
        #[command(flatten)]
        to: PlacementArgs,
        /// Delete the partition's documents from the old placement after the flip.
        #[arg(long)]
        delete_source: bool,
        /// Copy at most this many documents a second (the tenants still on
        /// the source keep their share of the cluster).
        #[arg(long, value_name = "N")]
        max_docs_per_second: Option<u64>,
        /// Follow the migration until it ends (as `migrate watch`); exits
        /// non-zero when it fails or is aborted.
        #[arg(long)]
        wait: bool,
    },
    /// Follow a migration until it ends: a progress line on a terminal,
    /// one line per phase otherwise; exits non-zero when it fails or is
    /// aborted.
    Watch { index: String, partition: String },
    /// One migration's record: phase, progress, error.
    Status { index: String, partition: String },
    /// Stop a migration before its flip (the partition stays at its source).
    Abort { index: String, partition: String },
    /// Every migration record.
    List,
}

#[derive(Subcommand, Debug)]
enum DirectivesCommand {
    /// The published set and its epoch.
    Get,
    /// Publish a whole set (strict: any problem refuses it all and the
    /// previous set stays), compare-and-swap on --epoch.
    Put {
        /// '{"directives":[{"id":"dbg","match":{"partition":"acme"},"level":"timing","expires_at":"2026-11-27T13:00:00Z"}]}',
        /// or @FILE to read it from a file.
        #[arg(long)]
        set: String,
        /// The epoch you read; absent means no set is published yet.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Remove the set.
    Clear {
        #[arg(long)]
        epoch: u64,
    },
}

#[derive(Subcommand, Debug)]
enum CatalogueCommand {
    /// Every logical index.
    List,
    /// One logical index's rules.
    Get { index: String },
    /// Add or replace a logical index from a JSON spec (an `[[indices]]`
    /// entry without its name), compare-and-swap on --epoch.
    Put {
        index: String,
        /// e.g. '{"default":{"kind":"shared","cluster":"main","index":"notes-shared"}}'
        #[arg(long)]
        spec: String,
        /// The epoch you read; absent means the index must not exist yet.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Remove a logical index (only while no partition has an explicit placement).
    Delete {
        index: String,
        #[arg(long)]
        epoch: u64,
    },
}

#[derive(Subcommand, Debug)]
enum PlacementCommand {
    /// Every explicit entry of a logical index, and its default.
    List { index: String },
    /// One partition's placement.
    Get { index: String, partition: String },
    /// Set one partition's placement (compare-and-swap on --epoch).
    Set {
        index: String,
        partition: String,
        #[command(flatten)]
        placement: PlacementArgs,
        /// The epoch you read; absent means the entry must not exist yet.
        #[arg(long)]
        epoch: Option<u64>,
    },
}

pub fn run(args: CtlArgs) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("osproxy ctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(execute(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("osproxy ctl: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Why a `ctl` command did not succeed.
#[derive(Debug, thiserror::Error)]
enum CtlError {
    /// The arguments do not make a command.
    #[error("{0}")]
    Usage(&'static str),
    /// A `@file` argument could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The admin URL does not make a request.
    #[error("bad request for {url}: {source}")]
    Request {
        url: String,
        #[source]
        source: http::Error,
    },
    /// The admin API did not answer.
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// An https admin URL whose TLS settings cannot be used.
    #[error("{url}: {reason}")]
    Tls { url: String, reason: String },
    /// The https admin API did not answer.
    #[error("cannot reach {url}: {reason}")]
    UnreachableTls { url: String, reason: String },
    /// The answer broke off.
    #[error("reading the answer from {url}: {source}")]
    Answer {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The admin API answered with an error: status, message, current state.
    #[error("{0}")]
    Refused(String),
    /// An argument is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// `?epoch=N` for a compare-and-swap on the epoch read, or nothing (the
/// value must not exist yet).
fn epoch_query(epoch: Option<u64>) -> String {
    epoch.map(|e| format!("?epoch={e}")).unwrap_or_default()
}

/// An argument, or with `@FILE` the file's text.
fn argument_or_file(arg: &str) -> Result<String, CtlError> {
    match arg.strip_prefix('@') {
        Some(file) => std::fs::read_to_string(file).map_err(|source| CtlError::Read {
            file: file.to_string(),
            source,
        }),
        None => Ok(arg.to_string()),
    }
}

/// The admin API's status and whole body.
async fn read_answer<B>(
    resp: http::Response<B>,
    url: String,
) -> Result<(http::StatusCode, Bytes), CtlError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| CtlError::Answer {
            url,
            source: e.into(),
        })?
        .to_bytes();
    Ok((status, bytes))
}

/// An admin request to an https:// listener, through the very client
/// osproxy uses for https clusters (its certificate verified against
/// `--ca-file` or the system roots).
async fn over_tls(
    args: &CtlArgs,
    req: Request<Full<Bytes>>,
    url: &str,
) -> Result<http::Response<osproxy_upstream::Answer>, CtlError> {
    let tls_error = |reason: String| CtlError::Tls {
        url: url.to_string(),
        reason,
    };
    let cluster = osproxy_config::Cluster {
        id: "admin".into(),
        url: args.admin.trim_end_matches('/').to_string(),
        username: None,
        password_env: None,
        password_file: None,
        api_key_env: None,
        api_key_file: None,
        tls: Some(osproxy_config::ClusterTls {
            ca_file: args.ca_file.clone(),
            ..Default::default()
        }),
        sigv4: None,
        max_concurrent_requests: 16,
    };
    let metrics = osproxy_observe::Metrics::new(["admin"]);
    let upstreams = osproxy_upstream::Upstreams::new(
        std::slice::from_ref(&cluster),
        &osproxy_config::Upstream::default(),
        &metrics,
    )
    .map_err(|e| tls_error(e.to_string()))?;
    let admin = upstreams
        .get(0)
        .ok_or_else(|| tls_error("no client".into()))?;
    let (parts, body) = req.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut out = Request::from_parts(parts, osproxy_upstream::RequestBody::Full(Some(bytes)));
    if let Some(pq) = out.uri().path_and_query().cloned() {
        *out.uri_mut() = http::Uri::from(pq);
    }
    admin
        .send(out, std::time::Duration::from_secs(60))
        .await
        .map_err(|e| CtlError::UnreachableTls {
            url: url.to_string(),
            reason: format!("{e:?}"),
        })
}

/// One admin API request: its JSON answer, or the error it answered with
/// (status, message, the current value or epoch when it says).
async fn call(
    args: &CtlArgs,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Result<Value, CtlError> {
    let url = format!("{}{path}", args.admin.trim_end_matches('/'));
    let mut req = Request::builder().method(method).uri(&url);
    if let Some(t) = &args.token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .map_err(|source| CtlError::Request {
            url: url.clone(),
            source,
        })?;
    let (status, bytes) = if args.admin.starts_with("https://") {
        read_answer(over_tls(args, req, &url).await?, url).await?
    } else {
        let resp = Client::builder(TokioExecutor::new())
            .build_http::<Full<Bytes>>()
            .request(req)
            .await
            .map_err(|source| CtlError::Unreachable {
                url: url.clone(),
                source,
            })?;
        read_answer(resp, url).await?
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request failed");
        let current = match (
            v.get("current").filter(|c| !c.is_null()),
            v.get("current_epoch"),
        ) {
            (Some(c), _) => format!(" (current: {c})"),
            (None, Some(e)) if status == http::StatusCode::CONFLICT => {
                format!(" (current epoch: {e})")
            }
            _ => String::new(),
        };
        return Err(CtlError::Refused(format!("{status}: {msg}{current}")));
    }
    Ok(v)
}

async fn execute(args: &CtlArgs) -> Result<(), CtlError> {
    let (method, path, body) = match &args.command {
        CtlCommand::Limits { command } => return limits::run(args, command).await,
        CtlCommand::Usage => return limits::usage(args).await,
        CtlCommand::Fleet => (Method::GET, "/v1/fleet".to_string(), None),
        CtlCommand::Catalogue { command } => match command {
            CatalogueCommand::List => (Method::GET, "/v1/catalogue".to_string(), None),
            CatalogueCommand::Get { index } => {
                (Method::GET, format!("/v1/catalogue/{index}"), None)
            }
            CatalogueCommand::Put { index, spec, epoch } => {
                let query = epoch_query(*epoch);
                (
                    Method::PUT,
                    format!("/v1/catalogue/{index}{query}"),
                    Some(spec.clone()),
                )
            }
            CatalogueCommand::Delete { index, epoch } => (
                Method::DELETE,
                format!("/v1/catalogue/{index}?epoch={epoch}"),
                None,
            ),
        },
        CtlCommand::Placement { command } => match command {
            PlacementCommand::List { index } => {
                (Method::GET, format!("/v1/placements/{index}"), None)
            }
            PlacementCommand::Get { index, partition } => (
                Method::GET,
                format!("/v1/placements/{index}/{partition}"),
                None,
            ),
            PlacementCommand::Set {
                index,
                partition,
                placement,
                epoch,
            } => {
                let placement = placement.value();
                let query = epoch_query(*epoch);
                (
                    Method::PUT,
                    format!("/v1/placements/{index}/{partition}{query}"),
                    Some(placement.to_string()),
                )
            }
        },
        CtlCommand::Explain {
            request_id,
            directive,
        } => match (request_id, directive) {
            (Some(id), _) => (Method::GET, format!("/v1/explain/{id}"), None),
            (None, Some(d)) => (Method::GET, format!("/v1/explain?directive={d}"), None),
            (None, None) => return Err(CtlError::Usage("give a REQUEST_ID or --directive ID")),
        },
        CtlCommand::Migrate { command } => match command {
            MigrateCommand::Start {
                index,
                partition,
                to,
                delete_source,
                max_docs_per_second,
                ..
            } => {
                let body = serde_json::json!({"index": index, "partition": partition, "to": to.value(), "delete_source": delete_source, "max_docs_per_second": max_docs_per_second});
                (
                    Method::POST,
                    "/v1/migrations".to_string(),
                    Some(body.to_string()),
                )
            }
            MigrateCommand::Watch { index, partition } => {
                return watch::run(args, index, partition).await;
            }
            MigrateCommand::Status { index, partition } => (
                Method::GET,
                format!("/v1/migrations/{index}/{partition}"),
                None,
            ),
            MigrateCommand::Abort { index, partition } => (
                Method::DELETE,
                format!("/v1/migrations/{index}/{partition}"),
                None,
            ),
            MigrateCommand::List => (Method::GET, "/v1/migrations".to_string(), None),
        },
        CtlCommand::Directives { command } => match command {
            DirectivesCommand::Get => (Method::GET, "/v1/directives".to_string(), None),
            DirectivesCommand::Put { set, epoch } => {
                let body = argument_or_file(set)?;
                let query = epoch_query(*epoch);
                (Method::PUT, format!("/v1/directives{query}"), Some(body))
            }
            DirectivesCommand::Clear { epoch } => (
                Method::DELETE,
                format!("/v1/directives?epoch={epoch}"),
                None,
            ),
        },
    };
    let v = call(args, method, &path, body).await?;
    if let CtlCommand::Migrate {
        command:
            MigrateCommand::Start {
                index,
                partition,
                wait: true,
                ..
            },
    } = &args.command
    {
        return watch::run(args, index, partition).await;
    }
    if args.json {
        println!("{v}");
        return Ok(());
    }
    match &args.command {
        CtlCommand::Fleet => print_fleet(&v),
        CtlCommand::Catalogue {
            command: CatalogueCommand::List,
        } => print_catalogue(&v),
        CtlCommand::Migrate {
            command: MigrateCommand::List,
        } => print_migrations(&v),
        CtlCommand::Migrate { .. } => {
            print_migrations(&serde_json::json!({"migrations": [&v]}));
            if let Some(e) = v.get("error").and_then(Value::as_str) {
                println!("error: {e}");
            }
        }
        CtlCommand::Catalogue { .. }
        | CtlCommand::Directives { .. }
        | CtlCommand::Explain { .. } => {
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default())
        }
        CtlCommand::Placement { .. } => print_table(&v),
        CtlCommand::Limits { .. } | CtlCommand::Usage => {}
    }
    Ok(())
}

fn placement_text(p: &Value) -> String {
    let kind = p.get("kind").and_then(Value::as_str).unwrap_or("?");
    let cluster = p.get("cluster").and_then(Value::as_str).unwrap_or("?");
    match p.get("index").and_then(Value::as_str) {
        Some(i) => format!("{kind:<8} {cluster:<16} {i}"),
        None => format!("{kind:<8} {cluster:<16} -"),
    }
}

fn print_table(v: &Value) {
    println!(
        "{:<24} {:<8} {:<8} {:<16} INDEX",
        "PARTITION", "EPOCH", "KIND", "CLUSTER"
    );
    let row = |partition: &str, e: &Value| {
        let epoch = e.get("epoch").and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{partition:<24} {epoch:<8} {}",
            placement_text(e.get("placement").unwrap_or(&Value::Null))
        );
    };
    if let Some(entries) = v.get("entries").and_then(Value::as_array) {
        println!(
            "{:<24} {:<8} {}",
            "(default)",
            "-",
            placement_text(v.get("default").unwrap_or(&Value::Null))
        );
        for e in entries {
            row(e.get("partition").and_then(Value::as_str).unwrap_or("?"), e);
        }
    } else {
        row(v.get("partition").and_then(Value::as_str).unwrap_or("?"), v);
    }
}

fn print_migrations(v: &Value) {
    println!(
        "{:<20} {:<16} {:<9} {:<8} {:<10} TO",
        "INDEX", "PARTITION", "PHASE", "COPIED", "CUTOVER"
    );
    for m in v
        .get("migrations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let cut = m
            .get("cutover_ms")
            .and_then(Value::as_u64)
            .map(|ms| format!("{ms} ms"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<16} {:<9} {:<8} {:<10} {}",
            s("index"),
            s("partition"),
            s("phase"),
            m.get("copied").and_then(Value::as_u64).unwrap_or(0),
            cut,
            placement_text(m.get("to").unwrap_or(&Value::Null))
        );
    }
}

fn print_catalogue(v: &Value) {
    println!("{:<24} {:<8} {:<8} DEFAULT", "INDEX", "EPOCH", "ENTRIES");
    for i in v
        .get("indices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        println!(
            "{:<24} {:<8} {:<8} {}",
            i.get("name").and_then(Value::as_str).unwrap_or("?"),
            i.get("epoch").and_then(Value::as_u64).unwrap_or(0),
            i.get("entries").and_then(Value::as_u64).unwrap_or(0),
            placement_text(i.get("default").unwrap_or(&Value::Null))
        );
    }
}

fn print_fleet(v: &Value) {
    println!(
        "{:<20} {:<22} {:<10} {:<10} {:<9} REJECTED",
        "INSTANCE", "ADDRESS", "VERSION", "REVISION", "FRESH"
    );
    for i in v
        .get("instances")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let s = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
        let rev = i
            .get("applied_revision")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let fresh = i
            .get("fresh_age_ms")
            .and_then(Value::as_u64)
            .map(|ms| format!("{:.1}s ago", ms as f64 / 1000.0))
            .unwrap_or_else(|| "now".to_string());
        let rejected: Vec<String> = i
            .get("rejected_keys")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.get("key").and_then(Value::as_str).unwrap_or("?"),
                    r.get("reason").and_then(Value::as_str).unwrap_or("?")
                )
            })
            .collect();
        let rejected = if rejected.is_empty() {
            "-".to_string()
        } else {
            rejected.join("; ")
        };
        println!(
            "{:<20} {:<22} {:<10} {rev:<10} {fresh:<9} {rejected}",
            s("id"),
            s("address"),
            s("version")
        );
    }
}
