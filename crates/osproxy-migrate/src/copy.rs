//! Moving one partition's documents between placements: the copy engine a
//! migration controller drives.
//!
//! - **Copy** scrolls the source for the partition (confined to it in a
//!   shared index) and bulk-writes each document to the destination under
//!   its own physical id, converting between placement kinds (the partition
//!   field injected or stripped, shared ids built or unwrapped, routing by
//!   partition in shared indices). Each document keeps its `_version`
//!   (written `external_gte`) and, between dedicated placements, its custom
//!   routing. A copy never replaces a newer version, so copying again is
//!   harmless, a copy can be restarted from the beginning at any time, and
//!   a controller that lost its migration cannot put an older version over
//!   a newer one. A document a delete's tombstone outranks is written
//!   again without its version. A move starts from a destination that
//!   holds nothing of the partition ([`purge`]).
//! - **Catch-up** is the same copy restricted to documents whose `_seq_no`
//!   is above a checkpoint taken before the first copy: the lowest *global
//!   checkpoint* of the source's primaries (every operation at or below it
//!   is applied on every in-sync copy, so after a refresh the full copy
//!   sees it; `max_seq_no` would count operations not yet applied).
//! - **Deletions** made during the copy cannot be found by sequence number;
//!   when the destination holds more documents than the source, the ids of
//!   both are compared and the extra ones deleted from the destination.
//! - **Verify** compares counts (and, for small partitions, the id sets).

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use serde_json::{json, Value};

use crate::side::{call, exists, json_call, refresh, Scroll};
pub use crate::side::{checkpoint, count, ids, prepare, wait_for_tasks, Copied, MoveError, Side};

/// Documents per scroll page and bulk request.
const PAGE: usize = 1000;

/// What every write to a side proves first: that the move is still the
/// writer's. A controller paused (SIGSTOP, a VM freeze) loses its lease,
/// another instance adopts the migration and may finish it; on resume the
/// old one must not write a page, delete an extra document or purge: its
/// next check fails and it stops.
pub trait Fence: Sync {
    /// `Ok` while the writes may go on.
    fn check(&self) -> impl std::future::Future<Output = Result<(), MoveError>> + Send;
}

/// No fence: for a caller that is the only writer by construction (tests,
/// benchmarks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Unfenced;

impl Fence for Unfenced {
    async fn check(&self) -> Result<(), MoveError> {
        Ok(())
    }
}

/// Copies the partition's documents (those with `_seq_no` above `since`,
/// when given) from `from` to `to`. `progress` is told each page's count.
pub async fn copy(
    from: &Side<'_>,
    to: &Side<'_>,
    since: Option<i64>,
    timeout: Duration,
    mut progress: impl FnMut(&Copied),
    fence: &impl Fence,
) -> Result<Copied, MoveError> {
    if !exists(from, timeout).await? {
        return Ok(Copied::default());
    }
    let mut query = json!({"bool": {"filter": [from.scope()]}});
    if let Some(s) = since {
        if let Some(f) = query
            .pointer_mut("/bool/filter")
            .and_then(Value::as_array_mut)
        {
            f.push(json!({"range": {"_seq_no": {"gt": s}}}));
        }
    }
    // What was written before this moment must be searchable.
    refresh(from, timeout).await?;
    let first = json!({"size": PAGE, "query": query, "version": true, "sort": ["_doc"]});
    let mut scroll = Scroll::open(from, first, timeout).await?;
    let mut total = Copied::default();
    while let Some(hits) = scroll.next().await? {
        let done = write_page(from, to, &hits, timeout, fence).await?;
        total.written += done.written;
        total.bytes += done.bytes;
        progress(&total);
    }
    Ok(total)
}

async fn write_page(
    from: &Side<'_>,
    to: &Side<'_>,
    hits: &[Value],
    timeout: Duration,
    fence: &impl Fence,
) -> Result<Copied, MoveError> {
    let mut body = Vec::with_capacity(hits.len() * 256);
    let mut sent: Vec<(String, Option<String>, Vec<u8>)> = Vec::with_capacity(hits.len());
    let mut done = Copied::default();
    let field = from.logical.field.as_str();
    for hit in hits {
        let (Some(physical), Some(source)) =
            (hit.get("_id").and_then(Value::as_str), hit.get("_source"))
        else {
            return Err(MoveError("a source hit lacks _id or _source".into()));
        };
        let Some(logical) = from.logical_id(physical) else {
            return Err(MoveError(
                "a source document's id is not the partition's".into(),
            ));
        };
        let raw = serde_json::to_vec(source).map_err(|e| MoveError(e.to_string()))?;
        done.bytes += raw.len() as u64;
        let doc = match (from.shared(), to.shared()) {
            (true, false) => osproxy_rewrite::source::strip_field(&raw, field)
                .map(|c| c.into_owned())
                .map_err(|e| MoveError(e.to_string()))?,
            (false, true) => osproxy_rewrite::source::inject_field(
                &raw,
                &to.logical.field,
                to.partition.as_str(),
            )
            .map_err(|e| MoveError(e.to_string()))?,
            _ => raw,
        };
        let version = hit.get("_version").and_then(Value::as_u64);
        // Custom routing exists only in a dedicated source (a shared one
        // routes by partition) and is kept only into a dedicated one.
        let routing = hit
            .get("_routing")
            .and_then(Value::as_str)
            .filter(|_| !from.shared());
        body.extend_from_slice(to.copy_action(logical, version, routing).as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&doc);
        body.push(b'\n');
        sent.push((logical.to_string(), routing.map(str::to_string), doc));
    }
    fence.check().await?;
    let bytes = post_bulk(to, "/_bulk", body, "a bulk copy", timeout).await?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| MoveError("unreadable bulk answer".into()))?;
    let mut tombstoned = Vec::new();
    for (item, (logical, routing, doc)) in v
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .zip(sent)
    {
        let status = item
            .pointer("/index/status")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match status {
            200 | 201 => done.written += 1,
            // A newer version is there already (or a delete's tombstone).
            409 => tombstoned.push((logical, routing, doc)),
            other => {
                let kind = item
                    .pointer("/index/error/type")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown");
                return Err(MoveError(format!(
                    "the destination refused a copied document ({other}, {kind})"
                )));
            }
        }
    }
    done.written += rewrite_deleted(to, tombstoned, timeout, fence).await?;
    Ok(done)
}

/// Of the documents a version conflict refused, writes again those the
/// destination does not hold — a delete's tombstone (a purge, a deletion
/// in an aborted earlier run) outranks the copied version — without their
/// version, so the destination holds every document the source holds; a
/// document the destination holds in a newer version is left as it is.
async fn rewrite_deleted(
    to: &Side<'_>,
    refused: Vec<(String, Option<String>, Vec<u8>)>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<u64, MoveError> {
    if refused.is_empty() {
        return Ok(0);
    }
    let docs: Vec<Value> = refused
        .iter()
        .map(|(logical, routing, _)| {
            let mut d = json!({"_id": to.physical_id(logical), "_source": false});
            if to.shared() {
                d["routing"] = Value::from(to.partition.as_str());
            } else if let Some(r) = routing {
                d["routing"] = Value::from(r.as_str());
            }
            d
        })
        .collect();
    let found = json_call(
        to.cluster,
        Method::POST,
        &format!("/{}/_mget", to.index()),
        Some(json!({ "docs": docs })),
        timeout,
    )
    .await?;
    let answers = found
        .get("docs")
        .and_then(Value::as_array)
        .filter(|d| d.len() == refused.len())
        .ok_or_else(|| MoveError("the destination's _mget answer does not match".into()))?;
    let mut body = Vec::new();
    let mut n = 0;
    for ((logical, routing, doc), answer) in refused.iter().zip(answers) {
        if answer.get("found").and_then(Value::as_bool) == Some(false) {
            body.extend_from_slice(to.copy_action(logical, None, routing.as_deref()).as_bytes());
            body.push(b'\n');
            body.extend_from_slice(doc);
            body.push(b'\n');
            n += 1;
        }
    }
    if n > 0 {
        fence.check().await?;
        post_bulk(to, "/_bulk", body, "a bulk copy over tombstones", timeout).await?;
    }
    Ok(n)
}

/// Deletes every document of the partition from one side (a move's
/// destination before its first copy). Returns how many.
pub async fn purge(
    side: &Side<'_>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<u64, MoveError> {
    if !exists(side, timeout).await? {
        return Ok(0);
    }
    let _ = refresh(side, timeout).await;
    fence.check().await?;
    let v = json_call(
        side.cluster,
        Method::POST,
        &format!(
            "/{}/_delete_by_query?refresh=true&conflicts=proceed",
            side.index()
        ),
        Some(json!({"query": side.scope()})),
        timeout,
    )
    .await?;
    Ok(v.get("deleted").and_then(Value::as_u64).unwrap_or(0))
}

/// Deletes from `to` the partition's documents `from` no longer has (the
/// deletions made during the copy). Returns how many.
pub async fn remove_extra(
    from: &Side<'_>,
    to: &Side<'_>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<u64, MoveError> {
    let keep = ids(from, timeout).await?;
    let have = ids(to, timeout).await?;
    let extra: Vec<&String> = have.iter().filter(|i| !keep.contains(*i)).collect();
    for chunk in extra.chunks(PAGE) {
        let mut body = Vec::new();
        for logical in chunk {
            body.extend_from_slice(to.action("delete", logical).as_bytes());
            body.push(b'\n');
        }
        fence.check().await?;
        post_bulk(
            to,
            "/_bulk?refresh=true",
            body,
            "deleting extra documents",
            timeout,
        )
        .await?;
    }
    Ok(extra.len() as u64)
}

/// Sends an NDJSON bulk body to one side; anything but 200 is an error
/// naming `what` the bulk was for.
async fn post_bulk(
    side: &Side<'_>,
    path: &str,
    body: Vec<u8>,
    what: &str,
    timeout: Duration,
) -> Result<Bytes, MoveError> {
    let (status, bytes) = call(
        side.cluster,
        Method::POST,
        path,
        Some(body),
        "application/x-ndjson",
        timeout,
    )
    .await?;
    if status != 200 {
        return Err(MoveError(format!(
            "the destination answered {status} to {what}"
        )));
    }
    Ok(bytes)
}
