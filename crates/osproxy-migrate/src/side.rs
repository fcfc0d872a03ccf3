//! One side of a move (a placement of one partition of a logical index)
//! and what is read from it or set up on it: the mapping and settings a
//! destination is created with, the catch-up checkpoint, scroll pages,
//! counts and id sets.

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use osproxy_control::LogicalIndex;
use osproxy_core::{PartitionId, Placement};
use serde_json::{json, Value};

use osproxy_upstream::{read_answer, Answering, RequestBody, UpstreamCluster};

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
    pub(crate) fn index(&self) -> &str {
        self.placement.physical_index(&self.logical.name)
    }

    pub(crate) fn shared(&self) -> bool {
        self.placement.is_shared()
    }

    /// The query that selects the partition's documents here.
    pub(crate) fn scope(&self) -> Value {
        if self.shared() {
            json!({"term": {self.logical.field.as_str(): self.partition.as_str()}})
        } else {
            json!({"match_all": {}})
        }
    }

    pub(crate) fn logical_id<'i>(&self, physical: &'i str) -> Option<&'i str> {
        if self.shared() {
            self.logical
                .id_template
                .logical(self.partition.as_str(), physical)
        } else {
            Some(physical)
        }
    }

    /// A bulk action line (without its newline) for `logical` here.
    /// The action line that writes a copied document here: its `_version`
    /// kept (`external_gte`: a copy never replaces a newer version, and
    /// copying one version again is harmless) and, between dedicated
    /// placements, its custom routing (in a shared one routing is the
    /// partition).
    pub(crate) fn copy_action(
        &self,
        logical: &str,
        version: Option<u64>,
        routing: Option<&str>,
    ) -> String {
        let mut meta = json!({"_index": self.index(), "_id": self.physical_id(logical)});
        if self.shared() {
            meta["routing"] = Value::from(self.partition.as_str());
        } else if let Some(r) = routing {
            meta["routing"] = Value::from(r);
        }
        if let Some(v) = version {
            meta["version"] = Value::from(v);
            meta["version_type"] = Value::from("external_gte");
        }
        json!({ "index": meta }).to_string()
    }

    /// The action line that deletes `logical` here, routed as it was
    /// stored (`routing`: the stored document's own, for a dedicated
    /// placement; a shared one routes by partition).
    pub(crate) fn delete_action(&self, logical: &str, routing: Option<&str>) -> String {
        let mut meta = json!({"_index": self.index(), "_id": self.physical_id(logical)});
        if self.shared() {
            meta["routing"] = Value::from(self.partition.as_str());
        } else if let Some(r) = routing {
            meta["routing"] = Value::from(r);
        }
        json!({ "delete": meta }).to_string()
    }

    pub(crate) fn physical_id(&self, logical: &str) -> String {
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

pub(crate) async fn call(
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
    // Charged, never refused: a move's page is read whatever the budget
    // (refusing it would fail the move; what it holds is counted).
    let bytes = read_answer(resp.into_body(), &cluster.id, Answering::Change)
        .await
        .map_err(|e| MoveError(e.reason))?;
    Ok((status, bytes))
}

/// A non-2xx answer as an error naming its status and OpenSearch error
/// type (never the body, which may quote a document).
fn refused(
    cluster: &UpstreamCluster,
    status: u16,
    body: &[u8],
    path: &str,
) -> Result<(), MoveError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let kind = v
        .pointer("/error/type")
        .and_then(Value::as_str)
        .unwrap_or("unknown");
    Err(MoveError(format!(
        "cluster {} answered {status} ({kind}) to {path}",
        cluster.id
    )))
}

pub(crate) async fn json_call(
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
    refused(cluster, status, &bytes, path)?;
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // A search, count or by-query answer that missed shards (or ran out of
    // time) would make a copy, a count or an id set agree with a
    // destination that lacks them.
    if v.get("timed_out").and_then(Value::as_bool) == Some(true) {
        return Err(MoveError(format!(
            "cluster {} answered {path} with a timed-out (partial) result",
            cluster.id
        )));
    }
    let failed = v
        .pointer("/_shards/failed")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if failed > 0 {
        return Err(MoveError(format!(
            "cluster {} answered {path} with {failed} failed shard(s); a migration reads only complete answers",
            cluster.id
        )));
    }
    Ok(v)
}

/// Whether the side's physical index exists (a partition nobody wrote to
/// yet may have none: it moves as an empty one).
pub(crate) async fn exists(side: &Side<'_>, timeout: Duration) -> Result<bool, MoveError> {
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

/// The lowest global checkpoint over the source index's primaries: every
/// operation at or below it is applied on every in-sync copy (so a refresh
/// makes it visible to the full copy), and every later write has a higher
/// sequence number on its shard (-1 when the index does not exist yet:
/// everything is after).
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
        .filter_map(|c| {
            c.pointer("/seq_no/global_checkpoint")
                .and_then(Value::as_i64)
        })
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
        let mut body = json!({"mappings": {"properties": properties}});
        // A dedicated destination is made for the move and read by no one
        // before its flip: created without periodic refresh for the bulk
        // load (`restore_refresh` gives it back before the cutover).
        if !to.shared() {
            body["settings"] = json!({"index": {"refresh_interval": "-1"}});
        }
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

/// One search hit as a move reads it: the document's source is kept as
/// the exact bytes the cluster sent (never parsed into a tree and written
/// out again).
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Hit {
    #[serde(rename = "_id")]
    pub(crate) id: String,
    #[serde(rename = "_source", default)]
    pub(crate) source: Option<Box<serde_json::value::RawValue>>,
    #[serde(rename = "_version", default)]
    pub(crate) version: Option<u64>,
    #[serde(rename = "_routing", default)]
    pub(crate) routing: Option<String>,
}

#[derive(serde::Deserialize)]
struct Page {
    #[serde(rename = "_scroll_id", default)]
    scroll_id: Option<String>,
    #[serde(default)]
    hits: PageHits,
    #[serde(rename = "_shards", default)]
    shards: Option<ShardCount>,
    #[serde(default)]
    timed_out: bool,
}

#[derive(serde::Deserialize, Default)]
struct PageHits {
    #[serde(default)]
    hits: Vec<Hit>,
}

#[derive(serde::Deserialize)]
struct ShardCount {
    #[serde(default)]
    failed: u64,
}

/// A search or scroll answer read as a [`Page`]: anything but 2xx, or a
/// page that missed shards, is an error (like [`json_call`]'s).
async fn page_call(
    cluster: &UpstreamCluster,
    method: Method,
    path: &str,
    body: Value,
    timeout: Duration,
) -> Result<Page, MoveError> {
    let (status, bytes) = call(
        cluster,
        method,
        path,
        Some(body.to_string().into_bytes()),
        "application/json",
        timeout,
    )
    .await?;
    refused(cluster, status, &bytes, path)?;
    let page: Page = serde_json::from_slice(&bytes).map_err(|e| {
        MoveError(format!(
            "cluster {} answered {path} with an unreadable page: {e}",
            cluster.id
        ))
    })?;
    let failed = page.shards.as_ref().map_or(0, |s| s.failed);
    if page.timed_out {
        return Err(MoveError(format!(
            "cluster {} answered {path} with a timed-out (partial) page",
            cluster.id
        )));
    }
    if failed > 0 {
        return Err(MoveError(format!(
            "cluster {} answered {path} with {failed} failed shard(s); a migration reads only complete answers",
            cluster.id
        )));
    }
    Ok(page)
}

/// A scroll over one side's index: pages until the first empty one, then
/// the scroll is cleared. A page without a scroll id is an error (reading
/// on could only return part of the partition).
pub(crate) struct Scroll<'s> {
    side: &'s Side<'s>,
    timeout: Duration,
    /// The first page, from opening the scroll.
    first: Option<Page>,
    id: Option<String>,
    /// The last page was read (and the scroll cleared).
    done: bool,
}

impl<'s> Scroll<'s> {
    pub(crate) async fn open(
        side: &'s Side<'s>,
        body: Value,
        timeout: Duration,
    ) -> Result<Self, MoveError> {
        let first = page_call(
            side.cluster,
            Method::POST,
            &format!("/{}/_search?scroll=2m", side.index()),
            body,
            timeout,
        )
        .await?;
        Ok(Scroll {
            side,
            timeout,
            first: Some(first),
            id: None,
            done: false,
        })
    }

    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Hit>>, MoveError> {
        if self.done {
            return Ok(None);
        }
        let page = match self.first.take() {
            Some(p) => p,
            None => {
                let Some(id) = self.id.take() else {
                    return Err(MoveError(
                        "the cluster answered a page without a scroll id".into(),
                    ));
                };
                page_call(
                    self.side.cluster,
                    Method::POST,
                    "/_search/scroll",
                    json!({"scroll": "2m", "scroll_id": id}),
                    self.timeout,
                )
                .await?
            }
        };
        self.id = page.scroll_id;
        let hits = page.hits.hits;
        if !hits.is_empty() {
            return Ok(Some(hits));
        }
        self.done = true;
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

/// How many documents a page of `side` holds: 1,000, or fewer when the
/// index's documents are large, so that a page stays near
/// [`PAGE_BYTES`] (a page of 1,000 documents of 100 KiB each would be
/// 100 MiB in memory, twice over with the read-ahead). Estimated from the
/// index's stored size per document (an over-estimate: the store holds
/// more than the sources); at least 10.
pub(crate) async fn page_size(side: &Side<'_>, timeout: Duration) -> usize {
    const PAGE_DOCS: u64 = 1000;
    let path = format!("/{}/_stats/docs,store", side.index());
    let Ok(v) = json_call(side.cluster, Method::GET, &path, None, timeout).await else {
        return PAGE_DOCS as usize;
    };
    let at = |p: &str| v.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    let docs = at("/_all/primaries/docs/count");
    let bytes = at("/_all/primaries/store/size_in_bytes");
    if docs == 0 {
        return PAGE_DOCS as usize;
    }
    let per_doc = (bytes / docs).max(1);
    (PAGE_BYTES / per_doc).clamp(10, PAGE_DOCS) as usize
}

/// The bytes a scroll page aims at.
pub(crate) const PAGE_BYTES: u64 = 8 << 20;

/// Makes what was written to one side searchable.
pub(crate) async fn refresh(side: &Side<'_>, timeout: Duration) -> Result<(), MoveError> {
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
            if let Some(l) = side.logical_id(&h.id) {
                out.insert(l.to_string());
            }
        }
    }
    Ok(out)
}

/// Which of `wanted` (logical id, custom routing) the partition has on one
/// side, in one search. With `by_routing` (both sides dedicated: one id can
/// exist under several routings) a document counts only under its own
/// routing; otherwise by id. An answer that could not list every match
/// (more than the ids asked for twice over: one id under many routings) is
/// an error, never a partial set.
pub(crate) async fn present(
    side: &Side<'_>,
    wanted: &[(&str, Option<&str>)],
    by_routing: bool,
    timeout: Duration,
) -> Result<HashSet<(String, Option<String>)>, MoveError> {
    if wanted.is_empty() || !exists(side, timeout).await? {
        return Ok(HashSet::new());
    }
    let physical: Vec<String> = wanted.iter().map(|(l, _)| side.physical_id(l)).collect();
    let size = physical.len() * 2;
    let query = json!({
        "size": size,
        "_source": false,
        "track_total_hits": true,
        "query": {"bool": {"filter": [side.scope(), {"ids": {"values": physical}}]}}
    });
    let v = json_call(
        side.cluster,
        Method::POST,
        &format!("/{}/_search", side.index()),
        Some(query),
        timeout,
    )
    .await?;
    let hits = v
        .pointer("/hits/hits")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let total = v
        .pointer("/hits/total/value")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if total > hits.len() as u64 {
        return Err(MoveError(format!(
            "{total} documents match {} ids at the source (one id stored under several routings?); the deletions made during the move cannot be found exactly",
            physical.len()
        )));
    }
    Ok(hits
        .iter()
        .filter_map(|h| {
            let logical = h
                .get("_id")
                .and_then(Value::as_str)
                .and_then(|p| side.logical_id(p))?;
            let routing = h
                .get("_routing")
                .and_then(Value::as_str)
                .filter(|_| by_routing)
                .map(str::to_string);
            Some((logical.to_string(), routing))
        })
        .collect())
}

/// Waits until no update- or delete-by-query task on `side`'s cluster
/// names its index. Such a task keeps running when its caller gave up (a
/// synchronous request that timed out, a dropped connection), and changes
/// the documents after any catch-up; a task on a shared index is waited for
/// whichever tenant started it. Bounded by `timeout`.
pub async fn wait_for_tasks(side: &Side<'_>, timeout: Duration) -> Result<(), MoveError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let path = "/_tasks?actions=*byquery&detailed=true";
    loop {
        let v = json_call(side.cluster, Method::GET, path, None, timeout).await?;
        let running = v
            .get("nodes")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|nodes| nodes.values())
            .filter_map(|n| n.get("tasks").and_then(Value::as_object))
            .flat_map(|tasks| tasks.values())
            .filter_map(|t| t.get("description").and_then(Value::as_str))
            .filter(|d| d.contains(side.index()))
            .count();
        if running == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(MoveError(format!(
                "{running} by-query task(s) on the source index were still running after {timeout:?}; the migration cannot catch up while they change it"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
