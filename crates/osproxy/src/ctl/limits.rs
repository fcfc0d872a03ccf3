//! `osproxy ctl limits` and `osproxy ctl usage`: the per-tenant limits
//! (read, changed one partition at a time with compare-and-swap, or
//! replaced whole) and usage per partition, as tables.

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Map, Value};

use super::{call, CtlArgs, CtlError};

#[derive(Subcommand, Debug)]
pub(super) enum LimitsCommand {
    /// The fleet's limits, the epoch, and how many instances share them.
    Get,
    /// Set limits of one partition (or of the default): the rates given
    /// replace the partition's, the others stay. Retried on a concurrent
    /// change.
    Set {
        /// The partition; `--default` for partitions with no entry.
        #[arg(required_unless_present = "default")]
        partition: Option<String>,
        #[arg(long, conflicts_with = "partition")]
        default: bool,
        #[command(flatten)]
        rates: Rates,
        /// Fields to remove (no longer limited), comma-separated:
        /// reads_per_second, writes_per_second, documents_per_second,
        /// bytes_per_second, concurrent_requests.
        #[arg(long, value_delimiter = ',')]
        unset: Vec<String>,
    },
    /// Remove a partition's entry (it falls back to the default).
    Remove { partition: String },
    /// Publish a whole limits document (strict: any problem refuses it all
    /// and the previous limits stay), compare-and-swap on --epoch.
    Put {
        /// '{"default":{"reads_per_second":100},"partitions":{"acme":{"writes_per_second":10}}}',
        /// or @FILE.
        #[arg(long)]
        set: String,
        /// The epoch you read; absent means none are published yet.
        #[arg(long)]
        epoch: Option<u64>,
    },
    /// Remove every limit (compare-and-swap on --epoch).
    Clear {
        #[arg(long)]
        epoch: u64,
    },
}

/// The rates of `limits set`; each is the whole fleet's budget.
#[derive(Args, Debug)]
pub(super) struct Rates {
    /// Read requests a second.
    #[arg(long, value_name = "N")]
    reads_per_second: Option<f64>,
    /// Write requests a second.
    #[arg(long, value_name = "N")]
    writes_per_second: Option<f64>,
    /// Bulk items and single-document writes a second.
    #[arg(long, value_name = "N")]
    documents_per_second: Option<f64>,
    /// Request body bytes a second ("10mb" or a number of bytes).
    #[arg(long, value_name = "SIZE")]
    bytes_per_second: Option<String>,
    /// Requests in flight at once.
    #[arg(long, value_name = "N")]
    concurrent_requests: Option<u32>,
}

const FIELDS: [&str; 5] = [
    "reads_per_second",
    "writes_per_second",
    "documents_per_second",
    "bytes_per_second",
    "concurrent_requests",
];

impl Rates {
    fn apply(&self, entry: &mut Map<String, Value>) -> Result<(), CtlError> {
        let mut put = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                entry.insert(k.to_string(), v);
            }
        };
        put("reads_per_second", self.reads_per_second.map(Value::from));
        put("writes_per_second", self.writes_per_second.map(Value::from));
        put(
            "documents_per_second",
            self.documents_per_second.map(Value::from),
        );
        if let Some(b) = &self.bytes_per_second {
            let bytes =
                osproxy_config::ByteSize::parse(b).map_err(|e| CtlError::Invalid(e.to_string()))?;
            put("bytes_per_second", Some(Value::from(bytes.bytes())));
        }
        put(
            "concurrent_requests",
            self.concurrent_requests.map(Value::from),
        );
        Ok(())
    }
}

/// Runs a limits command; prints the result unless `--json`.
pub(super) async fn run(args: &CtlArgs, command: &LimitsCommand) -> Result<(), CtlError> {
    let v = match command {
        LimitsCommand::Get => call(args, Method::GET, "/v1/limits", None).await?,
        LimitsCommand::Put { set, epoch } => {
            let body = super::argument_or_file(set)?;
            let query = super::epoch_query(*epoch);
            call(args, Method::PUT, &format!("/v1/limits{query}"), Some(body)).await?
        }
        LimitsCommand::Clear { epoch } => {
            call(
                args,
                Method::DELETE,
                &format!("/v1/limits?epoch={epoch}"),
                None,
            )
            .await?
        }
        LimitsCommand::Set {
            partition,
            rates,
            unset,
            ..
        } => {
            if let Some(bad) = unset.iter().find(|f| !FIELDS.contains(&f.as_str())) {
                return Err(CtlError::Invalid(format!(
                    "--unset {bad}: not a limit; the limits are {}",
                    FIELDS.join(", ")
                )));
            }
            change(args, |doc| {
                let entry = match partition {
                    Some(p) => doc
                        .entry("partitions")
                        .or_insert_with(|| Value::Object(Map::new()))
                        .as_object_mut()
                        .map(|m| {
                            m.entry(p.clone())
                                .or_insert_with(|| Value::Object(Map::new()))
                        }),
                    None => Some(
                        doc.entry("default")
                            .or_insert_with(|| Value::Object(Map::new())),
                    ),
                };
                let Some(Value::Object(entry)) = entry else {
                    return Err(CtlError::Invalid(
                        "the published limits are not objects".into(),
                    ));
                };
                rates.apply(entry)?;
                for f in unset {
                    entry.remove(f);
                }
                // An entry left empty would make its partition unlimited
                // rather than fall back to the default: it goes.
                if entry.is_empty() {
                    match partition {
                        Some(p) => {
                            if let Some(Value::Object(m)) = doc.get_mut("partitions") {
                                m.remove(p);
                            }
                        }
                        None => {
                            doc.remove("default");
                        }
                    }
                }
                Ok(())
            })
            .await?
        }
        LimitsCommand::Remove { partition } => {
            change(args, |doc| {
                if let Some(Value::Object(m)) = doc.get_mut("partitions") {
                    m.remove(partition);
                }
                Ok(())
            })
            .await?
        }
    };
    if args.json {
        println!("{v}");
    } else if matches!(command, LimitsCommand::Get) {
        print_limits(&v);
    } else {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    }
    Ok(())
}

/// Reads the limits, changes them with `edit`, and writes them back on
/// the epoch read; a concurrent change is read again (three tries).
async fn change(
    args: &CtlArgs,
    edit: impl Fn(&mut Map<String, Value>) -> Result<(), CtlError>,
) -> Result<Value, CtlError> {
    let mut last = None;
    for _ in 0..3 {
        let current = call(args, Method::GET, "/v1/limits", None).await?;
        let epoch = current.get("epoch").and_then(Value::as_u64).unwrap_or(0);
        let mut doc = match current {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        doc.remove("epoch");
        doc.remove("fleet_size");
        edit(&mut doc)?;
        if doc
            .get("default")
            .is_some_and(|d| d.as_object().is_some_and(Map::is_empty))
        {
            doc.remove("default");
        }
        let query = super::epoch_query((epoch != 0).then_some(epoch));
        match call(
            args,
            Method::PUT,
            &format!("/v1/limits{query}"),
            Some(Value::Object(doc).to_string()),
        )
        .await
        {
            Err(CtlError::Refused(m)) if m.starts_with("409") => last = Some(m),
            other => return other,
        }
    }
    Err(CtlError::Refused(last.unwrap_or_default()))
}

fn cell(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        Some(n) if n.fract() == 0.0 => format!("{n:.0}"),
        Some(n) => n.to_string(),
        None => "-".to_string(),
    }
}

fn print_limits(v: &Value) {
    println!(
        "epoch {}, shared by {} instance(s); each enforces its share",
        v.get("epoch").and_then(Value::as_u64).unwrap_or(0),
        v.get("fleet_size").and_then(Value::as_u64).unwrap_or(1)
    );
    println!(
        "{:<24} {:>10} {:>10} {:>10} {:>14} {:>10}",
        "PARTITION", "READS/S", "WRITES/S", "DOCS/S", "BYTES/S", "CONCURRENT"
    );
    let row = |name: &str, e: &Value| {
        println!(
            "{name:<24} {:>10} {:>10} {:>10} {:>14} {:>10}",
            cell(e.get("reads_per_second")),
            cell(e.get("writes_per_second")),
            cell(e.get("documents_per_second")),
            cell(e.get("bytes_per_second")),
            cell(e.get("concurrent_requests")),
        );
    };
    if let Some(d) = v.get("default") {
        row("(default)", d);
    }
    if let Some(Value::Object(parts)) = v.get("partitions") {
        for (p, e) in parts {
            row(p, e);
        }
    }
}

/// `ctl usage`: every partition's usage on the instance asked, busiest
/// first.
pub(super) async fn usage(args: &CtlArgs) -> Result<(), CtlError> {
    let v = call(args, Method::GET, "/v1/usage", None).await?;
    if args.json {
        println!("{v}");
        return Ok(());
    }
    println!(
        "{:<24} {:>10} {:>14} {:>14} {:>10} {:>12} {:>8}",
        "PARTITION", "REQUESTS", "REQ BYTES", "RESP BYTES", "DOCUMENTS", "UPSTREAM MS", "LIMITED"
    );
    for r in v
        .get("partitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or(0);
        println!(
            "{:<24} {:>10} {:>14} {:>14} {:>10} {:>12} {:>8}",
            r.get("partition").and_then(Value::as_str).unwrap_or("?"),
            n("requests"),
            n("request_bytes"),
            n("response_bytes"),
            n("documents"),
            n("upstream_ms"),
            n("limited"),
        );
    }
    Ok(())
}
