//! Moving one partition's documents between placements: the copy engine a
//! migration controller drives.
//!
//! - **Copy** scrolls the source for the partition (confined to it in a
//!   shared index) and bulk-writes each document to the destination under
//!   its own physical id, converting between placement kinds (the partition
//!   field injected or stripped, shared ids built or unwrapped, routing by
//!   partition in shared indices). Into a dedicated destination (made new
//!   by [`fresh_destination`]) each document keeps its `_version`, written
//!   `external_gte`, and its custom routing; into a shared one (emptied of
//!   the partition by [`purge`], whose tombstones would outrank copied
//!   versions) the destination counts versions afresh. Before the flip only
//!   the controller writes to the destination, and every write first
//!   proves it still owns the move ([`Fence`]), so a later copy of a
//!   document replaces an earlier one: copying again is harmless, and a
//!   copy can be restarted from the beginning at any time.
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

use crate::side::{self, call, exists, json_call, present, refresh, Scroll};
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

    /// The owner asked the copy to stop (checked without a store read, by
    /// a copy that is waiting for its pace).
    fn halted(&self) -> bool {
        false
    }
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
    pace: Option<u64>,
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
    let size = side::page_size(from, timeout).await;
    let first = json!({"size": size, "query": query, "version": true, "sort": ["_doc"]});
    let mut scroll = Scroll::open(from, first, timeout).await?;
    let mut total = Copied::default();
    let started = tokio::time::Instant::now();
    // [`IN_FLIGHT`] pages are written at once while as many are read: the
    // source's scroll and the destination's bulks overlap instead of
    // alternating. A scroll yields each document once, so the two bulks
    // never hold the same document and their order does not matter.
    let mut pages = read_pages(&mut scroll).await?;
    while !pages.is_empty() {
        let writes = async {
            // Every page's bulk is waited for, even after one fails: none
            // may still be on its way when the run stops (and cleans up).
            let each: Vec<Copied> = futures_util::future::join_all(
                pages
                    .iter()
                    .map(|hits| write_page(from, to, hits, timeout, fence)),
            )
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
            Ok::<_, MoveError>(each.iter().fold(Copied::default(), |sum, c| Copied {
                written: sum.written + c.written,
                bytes: sum.bytes + c.bytes,
            }))
        };
        let (done, next) = tokio::join!(writes, read_pages(&mut scroll));
        let done = done?;
        pages = next?;
        total.written += done.written;
        total.bytes += done.bytes;
        progress(&total);
        // At most `pace` documents a second, so a move does not starve
        // the tenants still on the source.
        if let Some(rate) = pace.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64(total.written as f64 / rate as f64);
            while tokio::time::Instant::now() < due {
                if fence.halted() {
                    return Err(MoveError("the copy was stopped".into()));
                }
                let step = tokio::time::Instant::now() + Duration::from_millis(250);
                tokio::time::sleep_until(due.min(step)).await;
            }
        }
    }
    Ok(total)
}

/// Pages in flight at once.
const IN_FLIGHT: usize = 2;

/// The next pages of a scroll, up to [`IN_FLIGHT`] (none at its end).
async fn read_pages(scroll: &mut Scroll<'_>) -> Result<Vec<Vec<side::Hit>>, MoveError> {
    let mut pages = Vec::with_capacity(IN_FLIGHT);
    while pages.len() < IN_FLIGHT {
        match scroll.next().await? {
            Some(hits) => pages.push(hits),
            None => break,
        }
    }
    Ok(pages)
}

/// A document written by a page: its logical id, routing and body.
type Sent<'h> = (&'h str, Option<&'h str>, std::borrow::Cow<'h, [u8]>);

async fn write_page(
    from: &Side<'_>,
    to: &Side<'_>,
    hits: &[side::Hit],
    timeout: Duration,
    fence: &impl Fence,
) -> Result<Copied, MoveError> {
    let mut body = Vec::with_capacity(hits.len() * 256);
    let mut sent: Vec<Sent<'_>> = Vec::with_capacity(hits.len());
    let mut done = Copied::default();
    let field = from.logical.field.as_str();
    for hit in hits {
        let Some(source) = &hit.source else {
            return Err(MoveError("a source hit lacks _source".into()));
        };
        let Some(logical) = from.logical_id(&hit.id) else {
            return Err(MoveError(
                "a source document's id is not the partition's".into(),
            ));
        };
        let raw = one_line(source.get().as_bytes());
        done.bytes += raw.len() as u64;
        let doc = match (from.shared(), to.shared()) {
            (true, false) => match osproxy_rewrite::source::strip_field(&raw, field)
                .map_err(|e| MoveError(e.to_string()))?
            {
                std::borrow::Cow::Borrowed(_) => raw,
                std::borrow::Cow::Owned(v) => std::borrow::Cow::Owned(v),
            },
            (false, true) => std::borrow::Cow::Owned(
                osproxy_rewrite::source::inject_field(
                    &raw,
                    &to.logical.field,
                    to.partition.as_str(),
                )
                .map_err(|e| MoveError(e.to_string()))?,
            ),
            _ => raw,
        };
        // Versions are kept into a dedicated destination, which starts new
        // ([`fresh_destination`]); in a shared one the partition's purged
        // documents leave tombstones that would outrank them, so there the
        // destination counts versions afresh.
        let version = hit.version.filter(|_| !to.shared());
        // Custom routing exists only in a dedicated source (a shared one
        // routes by partition) and is kept only into a dedicated one.
        let routing = hit.routing.as_deref().filter(|_| !from.shared());
        body.extend_from_slice(to.copy_action(logical, version, routing).as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&doc);
        body.push(b'\n');
        sent.push((logical, routing, doc));
    }
    fence.check().await?;
    let bytes = post_bulk(to, "/_bulk", body, "a bulk copy", timeout).await?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| MoveError("unreadable bulk answer".into()))?;
    let mut again = Vec::new();
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
            // The destination holds a higher version: an earlier copy of a
            // document the source has since deleted and re-created (its
            // version restarts once the delete's tombstone is collected).
            // Before the flip only this controller writes here, so the
            // source's current content is written anyway, counted afresh.
            409 => {
                again.extend_from_slice(to.copy_action(logical, None, routing).as_bytes());
                again.push(b'\n');
                again.extend_from_slice(&doc);
                again.push(b'\n');
                done.written += 1;
            }
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
    if !again.is_empty() {
        fence.check().await?;
        let answer = post_bulk(
            to,
            "/_bulk",
            again,
            "a bulk copy over newer versions",
            timeout,
        )
        .await?;
        if serde_json::from_slice::<Value>(&answer)
            .ok()
            .and_then(|v| v.get("errors").and_then(Value::as_bool))
            != Some(false)
        {
            return Err(MoveError(
                "the destination refused a document written over a newer version".into(),
            ));
        }
    }
    Ok(done)
}

/// A source as one NDJSON line: the cluster's bytes as they are, unless
/// they hold a line break (a document indexed pretty-printed keeps its
/// layout in `_source`), which a bulk body cannot carry: then compacted.
fn one_line(raw: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if !raw.iter().any(|b| *b == b'\n' || *b == b'\r') {
        return std::borrow::Cow::Borrowed(raw);
    }
    // Whitespace outside strings is dropped, byte for byte otherwise: no
    // tree, so numbers, key order and escapes stay exactly as stored (a
    // line break inside a string is always escaped in JSON).
    let mut out = Vec::with_capacity(raw.len());
    let (mut in_string, mut escaped) = (false, false);
    for &b in raw {
        if in_string {
            out.push(b);
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Makes a dedicated destination new: an index of the partition's own that
/// exists (left by an earlier move, or a run that failed) is deleted, so the
/// copy starts from nothing — no stale document, no delete tombstone that
/// would outrank a copied `_version`. A shared destination is left (it
/// holds other tenants); [`purge`] empties it of the partition instead.
pub async fn fresh_destination(
    to: &Side<'_>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<(), MoveError> {
    if to.shared() || !exists(to, timeout).await? {
        return Ok(());
    }
    fence.check().await?;
    let (status, _) = call(
        to.cluster,
        Method::DELETE,
        &format!("/{}", to.index()),
        None,
        "application/json",
        timeout,
    )
    .await?;
    match status {
        200 | 404 => Ok(()),
        other => Err(MoveError(format!(
            "cannot delete the old destination index (status {other})"
        ))),
    }
}

/// Gives a dedicated destination, created without periodic refresh for the
/// bulk load (see `prepare`), its default refresh back and refreshes it once.
/// Turning refresh off is part of creating the index, never a settings
/// change of its own, so a delayed request of a paused controller can never
/// turn it off on a live index. A shared destination is left alone. Failing
/// here fails the move (a live index that never refreshes would hide new
/// writes from searches).
pub async fn restore_refresh(
    to: &Side<'_>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<(), MoveError> {
    if to.shared() || !exists(to, timeout).await? {
        return Ok(());
    }
    fence.check().await?;
    json_call(
        to.cluster,
        Method::PUT,
        &format!("/{}/_settings", to.index()),
        Some(json!({"index": {"refresh_interval": Value::Null}})),
        timeout,
    )
    .await?;
    refresh(to, timeout).await
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
/// deletions made during the copy). Returns how many. The destination is
/// scrolled a page at a time and each page's ids looked up in the source,
/// so memory is bounded by a page, not by the partition.
pub async fn remove_extra(
    from: &Side<'_>,
    to: &Side<'_>,
    timeout: Duration,
    fence: &impl Fence,
) -> Result<u64, MoveError> {
    if !exists(to, timeout).await? {
        return Ok(0);
    }
    let _ = refresh(to, timeout).await;
    let first = json!({"size": PAGE, "query": to.scope(), "_source": false, "sort": ["_doc"]});
    let mut scroll = Scroll::open(to, first, timeout).await?;
    let mut removed = 0u64;
    while let Some(hits) = scroll.next().await? {
        let page: Vec<(&str, Option<&str>)> = hits
            .iter()
            .filter_map(|h| Some((to.logical_id(&h.id)?, h.routing.as_deref())))
            .collect();
        // Between dedicated placements a document is its id and custom
        // routing (one id may be stored under several); otherwise its id.
        let by_routing = !from.shared() && !to.shared();
        let wanted: Vec<(&str, Option<&str>)> = page
            .iter()
            .map(|(l, r)| (*l, r.filter(|_| by_routing)))
            .collect();
        let keep = present(from, &wanted, by_routing, timeout).await?;
        let mut body = Vec::new();
        let mut extra = 0u64;
        for (logical, routing) in page.iter().filter(|(l, r)| {
            let key = (l.to_string(), r.filter(|_| by_routing).map(str::to_string));
            !keep.contains(&key)
        }) {
            body.extend_from_slice(to.delete_action(logical, *routing).as_bytes());
            body.push(b'\n');
            extra += 1;
        }
        if extra == 0 {
            continue;
        }
        fence.check().await?;
        post_bulk(to, "/_bulk", body, "deleting extra documents", timeout).await?;
        removed += extra;
    }
    refresh(to, timeout).await?;
    Ok(removed)
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

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_pretty_printed_source_becomes_one_line_byte_for_byte() {
        let raw = b"{\n  \"a\": 99999999999999999999,\r\n\t\"s\": \"x \\\" \\n y\",\n  \"z\" : [1, 2.50]\n}";
        let line = one_line(raw);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            "{\"a\":99999999999999999999,\"s\":\"x \\\" \\n y\",\"z\":[1,2.50]}"
        );
        assert!(matches!(
            one_line(b"{\"a\": 1}"),
            std::borrow::Cow::Borrowed(_)
        ));
    }
}
