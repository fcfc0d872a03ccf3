//! Moving one partition's documents between placements: the copy engine a
//! migration controller drives.
//!
//! - **Copy** scrolls the source for the partition (confined to it in a
//!   shared index) and bulk-writes each document to the destination under
//!   its own physical id, converting between placement kinds (the partition
//!   field injected or stripped, shared ids built or unwrapped, routing by
//!   partition in shared indices). Only the controller writes to the
//!   destination before the flip, one step after another, so a later copy
//!   of a document simply replaces an earlier one: copying again is
//!   harmless, and a copy can be restarted from the beginning at any time.
//!   A move starts from a destination that holds nothing of the partition
//!   ([`purge`]).
//! - **Catch-up** is the same copy restricted to documents whose `_seq_no`
//!   is above a checkpoint taken before the first copy (the lowest
//!   `max_seq_no` of the source's shards): whatever was written during the
//!   copy.
//! - **Deletions** made during the copy cannot be found by sequence number;
//!   when the destination holds more documents than the source, the ids of
//!   both are compared and the extra ones deleted from the destination.
//! - **Verify** compares counts (and, for small partitions, the id sets).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use osproxy_control::LogicalIndex;
use osproxy_core::{PartitionId, Placement};
use serde_json::{json, Value};

use osproxy_upstream::{read_limited, RequestBody, UpstreamCluster};

/// Documents per scroll page and bulk request.
const PAGE: usize = 1000;

/// One side of a move: a placement of one partition of a logical index.
#[derive(Clone, Copy)]
pub struct Side<'a> {
    /// The cluster it lives on.
    pub cluster: &'a UpstreamCluster,
    /// The placement.
    pub placement: &'a Placement,
    /// The logical index.
    pub logical: &'a LogicalIndex,
    /// The partition.
    pub partition: &'a PartitionId,
}

impl std::fmt::Debug for Side<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Side")
            .field("placement", self.placement)
            .finish_non_exhaustive()
    }
}

impl Side<'_> {
    fn index(&self) -> &str {
        self.placement.physical_index(&self.logical.name)
    }

    fn shared(&self) -> bool {
        self.placement.is_shared()
    }

    /// The query that selects the partition's documents here.
    fn scope(&self) -> Value {
        if self.shared() {
            json!({"term": {self.logical.field.as_str(): self.partition.as_str()}})
        } else {
            json!({"match_all": {}})
        }
    }

    fn logical_id<'i>(&self, physical: &'i str) -> Option<&'i str> {
        if self.shared() {
            self.logical
                .id_template
                .logical(self.partition.as_str(), physical)
        } else {
            Some(physical)
        }
    }

    /// A bulk action line (without its newline) for `logical` here.
    fn action(&self, op: &str, logical: &str) -> String {
        let mut meta = json!({"_index": self.index(), "_id": self.physical_id(logical)});
        if self.shared() {
            meta["routing"] = Value::from(self.partition.as_str());
        }
        json!({ op: meta }).to_string()
    }

    fn physical_id(&self, logical: &str) -> String {
        if self.shared() {
            self.logical
                .id_template
                .physical(self.partition.as_str(), logical)
        } else {
            logical.to_string()
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Documents written to the destination.
    pub written: u64,
    /// Source bytes read.
    pub bytes: u64,
}

/// Why a step failed; the message names the cluster answer's shape, never
/// a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveError(pub String);

impl std::fmt::Display for MoveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

async fn call(
    cluster: &UpstreamCluster,
    method: Method,
    path: &str,
    body: Option<Vec<u8>>,
    content_type: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), MoveError> {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(match body {
            Some(b) => RequestBody::Full(Some(Bytes::from(b))),
            None => RequestBody::Empty,
        })
        .map_err(|e| MoveError(format!("cannot build a request: {e}")))?;
    let resp = cluster
        .send(req, timeout)
        .await
        .map_err(|e| MoveError(format!("cluster {}: {e}", cluster.id)))?;
    let status = resp.status().as_u16();
    let bytes = read_limited(resp.into_body())
        .await
        .map_err(|e| MoveError(e.reason))?;
    Ok((status, bytes))
}

async fn json_call(
    cluster: &UpstreamCluster,
    method: Method,
    path: &str,
    body: Option<Value>,
    timeout: Duration,
) -> Result<Value, MoveError> {
    let (status, bytes) = call(
        cluster,
        method,
        path,
        body.map(|b| b.to_string().into_bytes()),
        "application/json",
        timeout,
    )
    .await?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        let kind = v
            .pointer("/error/type")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        return Err(MoveError(format!(
            "cluster {} answered {status} ({kind}) to {path}",
            cluster.id
        )));
    }
    Ok(v)
}

/// Whether the side's physical index exists (a partition nobody wrote to
/// yet may have none: it moves as an empty one).
async fn exists(side: &Side<'_>, timeout: Duration) -> Result<bool, MoveError> {
    let (status, _) = call(
        side.cluster,
        Method::HEAD,
        &format!("/{}", side.index()),
        None,
        "application/json",
        timeout,
    )
    .await?;
    Ok(status != 404)
}

/// The lowest `max_seq_no` over the source index's shards: every write
/// after this moment has a higher sequence number on its shard (-1 when
/// the index does not exist yet: everything is after).
pub async fn checkpoint(from: &Side<'_>, timeout: Duration) -> Result<i64, MoveError> {
    if !exists(from, timeout).await? {
        return Ok(-1);
    }
    let path = format!("/{}/_stats/docs?level=shards", from.index());
    let v = json_call(from.cluster, Method::GET, &path, None, timeout).await?;
    let shards = v
        .pointer(&format!("/indices/{}/shards", from.index()))
        .and_then(Value::as_object)
        .ok_or_else(|| MoveError("no shard statistics for the source index".into()))?;
    shards
        .values()
        .flat_map(|copies| copies.as_array().into_iter().flatten())
        .filter(|c| c.pointer("/routing/primary").and_then(Value::as_bool) != Some(false))
        .filter_map(|c| c.pointer("/seq_no/max_seq_no").and_then(Value::as_i64))
        .min()
        .ok_or_else(|| MoveError("no sequence numbers for the source index".into()))
}

/// Makes sure the destination index exists with the partition's field
/// mappings (and the partition field mapped `keyword` when shared).
///
/// The mappings come from the source when it is the partition's own index;
/// a shared source's mapping holds every tenant's fields, so from a shared
/// source only the catalogue's declared fields are taken (the partition's
/// documents map the rest as they are copied). Into a shared destination,
/// `copy_to` is dropped: a tenant's own mapping could otherwise copy its
/// values into the partition field, or another tenant's field, of every
/// document in the shared index.
pub async fn prepare(from: &Side<'_>, to: &Side<'_>, timeout: Duration) -> Result<(), MoveError> {
    let dest_exists = exists(to, timeout).await?;
    let declared = to
        .logical
        .mappings
        .as_deref()
        .and_then(|m| m.get("properties"))
        .cloned();
    let mut properties = if from.shared() {
        declared.unwrap_or_else(|| json!({}))
    } else if exists(from, timeout).await? {
        json_call(
            from.cluster,
            Method::GET,
            &format!("/{}/_mapping", from.index()),
            None,
            timeout,
        )
        .await?
        .pointer(&format!("/{}/mappings/properties", from.index()))
        .cloned()
        .unwrap_or_else(|| json!({}))
    } else {
        json!({})
    };
    if to.shared() {
        drop_copy_to(&mut properties);
    }
    if let Some(p) = properties.as_object_mut() {
        if to.shared() {
            p.insert(to.logical.field.clone(), json!({"type": "keyword"}));
        } else {
            p.remove(&to.logical.field);
        }
    }
    if !dest_exists {
        let body = json!({"mappings": {"properties": properties}});
        let created = call(
            to.cluster,
            Method::PUT,
            &format!("/{}", to.index()),
            Some(body.to_string().into_bytes()),
            "application/json",
            timeout,
        )
        .await?;
        if created.0 == 200
            || created.0 == 400
                && String::from_utf8_lossy(&created.1).contains("resource_already_exists")
        {
            return Ok(());
        }
        return Err(MoveError(format!(
            "cannot create the destination index (status {})",
            created.0
        )));
    }
    json_call(
        to.cluster,
        Method::PUT,
        &format!("/{}/_mapping", to.index()),
        Some(json!({"properties": properties})),
        timeout,
    )
    .await
    .map(|_| ())
}

/// Removes every `copy_to` member, at any depth of a mapping.
fn drop_copy_to(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("copy_to");
            m.values_mut().for_each(drop_copy_to);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_copy_to),
        _ => {}
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
    let first =
        json!({"size": PAGE, "query": query, "seq_no_primary_term": true, "sort": ["_doc"]});
    let mut scroll = Scroll::open(from, first, timeout).await?;
    let mut total = Copied::default();
    while let Some(hits) = scroll.next().await? {
        let done = write_page(from, to, &hits, timeout).await?;
        total.written += done.written;
        total.bytes += done.bytes;
        progress(&total);
    }
    Ok(total)
}

/// A scroll over one side's index: pages until the first empty one, then
/// the scroll is cleared. A page without a scroll id is an error (reading
/// on could only return part of the partition).
struct Scroll<'s> {
    side: &'s Side<'s>,
    timeout: Duration,
    /// The first page, from opening the scroll.
    first: Option<Value>,
    id: Option<String>,
}

impl<'s> Scroll<'s> {
    async fn open(side: &'s Side<'s>, body: Value, timeout: Duration) -> Result<Self, MoveError> {
        let first = json_call(
            side.cluster,
            Method::POST,
            &format!("/{}/_search?scroll=2m", side.index()),
            Some(body),
            timeout,
        )
        .await?;
        Ok(Scroll {
            side,
            timeout,
            first: Some(first),
            id: None,
        })
    }

    async fn next(&mut self) -> Result<Option<Vec<Value>>, MoveError> {
        let page = match self.first.take() {
            Some(p) => p,
            None => {
                let Some(id) = self.id.take() else {
                    return Err(MoveError(
                        "the cluster answered a page without a scroll id".into(),
                    ));
                };
                json_call(
                    self.side.cluster,
                    Method::POST,
                    "/_search/scroll",
                    Some(json!({"scroll": "2m", "scroll_id": id})),
                    self.timeout,
                )
                .await?
            }
        };
        self.id = page
            .get("_scroll_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        let hits = page
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if !hits.is_empty() {
            return Ok(Some(hits));
        }
        if let Some(id) = self.id.take() {
            let _ = json_call(
                self.side.cluster,
                Method::DELETE,
                "/_search/scroll",
                Some(json!({"scroll_id": [id]})),
                self.timeout,
            )
            .await;
        }
        Ok(None)
    }
}

/// Makes what was written to one side searchable.
async fn refresh(side: &Side<'_>, timeout: Duration) -> Result<(), MoveError> {
    json_call(
        side.cluster,
        Method::POST,
        &format!("/{}/_refresh", side.index()),
        None,
        timeout,
    )
    .await
    .map(|_| ())
}

async fn write_page(
    from: &Side<'_>,
    to: &Side<'_>,
    hits: &[Value],
    timeout: Duration,
) -> Result<Copied, MoveError> {
    let mut body = Vec::with_capacity(hits.len() * 256);
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
        body.extend_from_slice(to.action("index", logical).as_bytes());
        body.push(b'\n');
        body.extend_from_slice(&doc);
        body.push(b'\n');
    }
    let bytes = post_bulk(to, "/_bulk", body, "a bulk copy", timeout).await?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|_| MoveError("unreadable bulk answer".into()))?;
    for item in v
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let status = item
            .pointer("/index/status")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        match status {
            200 | 201 => done.written += 1,
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
    Ok(done)
}

/// Deletes every document of the partition from one side (a move's
/// destination before its first copy). Returns how many.
pub async fn purge(side: &Side<'_>, timeout: Duration) -> Result<u64, MoveError> {
    if !exists(side, timeout).await? {
        return Ok(0);
    }
    let _ = refresh(side, timeout).await;
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

/// The partition's document count on one side (after a refresh).
pub async fn count(side: &Side<'_>, timeout: Duration) -> Result<u64, MoveError> {
    if !exists(side, timeout).await? {
        return Ok(0);
    }
    let _ = refresh(side, timeout).await;
    let v = json_call(
        side.cluster,
        Method::POST,
        &format!("/{}/_count", side.index()),
        Some(json!({"query": side.scope()})),
        timeout,
    )
    .await?;
    v.get("count")
        .and_then(Value::as_u64)
        .ok_or_else(|| MoveError("no count in the answer".into()))
}

/// The partition's logical ids on one side.
pub async fn ids(side: &Side<'_>, timeout: Duration) -> Result<HashSet<String>, MoveError> {
    if !exists(side, timeout).await? {
        return Ok(HashSet::new());
    }
    let _ = refresh(side, timeout).await;
    let mut out = HashSet::new();
    let first = json!({"size": 5000, "query": side.scope(), "_source": false, "sort": ["_doc"]});
    let mut scroll = Scroll::open(side, first, timeout).await?;
    while let Some(hits) = scroll.next().await? {
        for h in &hits {
            if let Some(l) = h
                .get("_id")
                .and_then(Value::as_str)
                .and_then(|p| side.logical_id(p))
            {
                out.insert(l.to_string());
            }
        }
    }
    Ok(out)
}

/// Deletes from `to` the partition's documents `from` no longer has (the
/// deletions made during the copy). Returns how many.
pub async fn remove_extra(
    from: &Side<'_>,
    to: &Side<'_>,
    timeout: Duration,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_to_is_dropped_at_any_depth() {
        let mut m = json!({
            "t": {"type": "text", "copy_to": "_tenant"},
            "o": {"properties": {"x": {"type": "keyword", "copy_to": ["a", "b"]}}},
            "k": {"type": "text", "fields": {"raw": {"type": "keyword", "copy_to": "c"}}}
        });
        drop_copy_to(&mut m);
        assert!(!m.to_string().contains("copy_to"), "{m}");
        assert_eq!(m["t"]["type"], "text");
    }
}
