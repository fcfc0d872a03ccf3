//! One batch of a tenancy bulk sent upstream, and its items reversed.

use bytes::Bytes;
use http::{HeaderMap, Method};
use osproxy_rewrite::bulk::{item_error, split_response};

use super::super::{reverse, Tenancy};
use super::Batch;

/// An item's answer: its position, its bytes and its status.
pub(super) type Answered = (usize, Vec<u8>, Option<u16>);

/// Sends one batch; returns every item's reversed result by position.
pub(super) async fn send(
    tenancy: &Tenancy,
    query: &str,
    headers: &HeaderMap,
    mut batch: Batch<'_>,
) -> Vec<Answered> {
    let Some(t) = batch.targets.first() else {
        return Vec::new();
    };
    let path = if query.is_empty() {
        "/_bulk".to_string()
    } else {
        format!("/_bulk?{query}")
    };
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    for name in ["x-opaque-id", "x-request-id"] {
        if let Some(v) = headers.get(name) {
            h.insert(name, v.clone());
        }
    }
    let failed = |status: u16, kind: &str, reason: &str| -> Vec<Answered> {
        batch
            .items
            .iter()
            .map(|c| {
                (
                    c.position,
                    item_error(
                        c.op,
                        Some(&t.logical.name),
                        c.logical_id.as_deref(),
                        status,
                        kind,
                        reason,
                    ),
                    Some(status),
                )
            })
            .collect()
    };
    if let Err(e) = tenancy.ensure_shared_mapping(t).await {
        return failed(e.status(), e.code.as_str(), &e.reason);
    }
    // Its answer is read whatever the budget (the batch is applied): sent
    // only while the budget has room, so that small batches asking for
    // large answers (updates with `_source`) cannot stack up past it.
    let own = batch.body.capacity() as u64;
    if let Err(e) = osproxy_upstream::budget::admit_unbreakable_freeing("this batch", own) {
        // 429, as OpenSearch rejects an item its write queue cannot take:
        // the official bulk helpers retry items with that status (found by
        // review: with 503 they gave the items up).
        return failed(429, e.code.as_str(), &e.reason);
    }
    // The epoch gate, for every partition in the batch: when one was routed
    // by a placement that changed since (or is in cutover), the batch's
    // items are refused in place (retryable), none of them written.
    let mut tickets = Vec::with_capacity(batch.targets.len());
    for target in &batch.targets {
        match tenancy.gate(target) {
            Ok(ticket) => tickets.push(ticket),
            Err(e) => return failed(e.status(), e.code.as_str(), &e.reason),
        }
    }
    let (parts, body) = match tenancy
        .exchange(
            t,
            Method::POST,
            &path,
            &h,
            Some(Bytes::from(std::mem::take(&mut batch.body))),
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return failed(e.status(), e.code.as_str(), &e.reason),
    };
    // Acknowledged only under the lease the batch was admitted under.
    if let Some(e) = tickets
        .iter()
        .find_map(|ticket| tenancy.acknowledge(ticket).err())
    {
        return failed(e.status(), e.code.as_str(), &e.reason);
    }
    if !parts.status.is_success() {
        let reason = String::from_utf8_lossy(&reverse::error(&body, t, None))
            .chars()
            .take(1000)
            .collect::<String>();
        return failed(parts.status.as_u16(), "upstream_bulk_failed", &reason);
    }
    let split = match split_response(&body) {
        Ok(s) if s.items.len() == batch.items.len() => s,
        Ok(s) => {
            // The cluster did read the batch: an item may have been
            // applied (found by review: the reason read as a plain failure,
            // inviting a retry of a create or an update).
            let reason = format!(
                "the cluster answered {} items for {} sent; whether this item was applied is unknown: read the document before retrying",
                s.items.len(),
                batch.items.len()
            );
            return failed(502, "upstream_bulk_mismatch", &reason);
        }
        Err(e) => {
            let reason = format!(
                "{e}; whether this item was applied is unknown: read the document before retrying"
            );
            return failed(502, "upstream_bulk_unreadable", &reason);
        }
    };
    split
        .items
        .iter()
        .zip(&batch.items)
        .map(|(item, c)| {
            let t = batch.targets.get(c.target).unwrap_or(t);
            let ids = c.physical_id.as_deref().zip(c.logical_id.as_deref());
            // The item answers under the client's op (an auto-id `index` is
            // sent as `create` in a shared placement).
            let members = osproxy_rewrite::members::members(item).unwrap_or_default();
            let (reversed, status) = match members.last() {
                Some((_, inner)) => {
                    let (inner, meta) = reverse::bulk_item(inner, t, ids);
                    let mut out = Vec::with_capacity(inner.len() + 16);
                    out.extend_from_slice(b"{\"");
                    out.extend_from_slice(c.op.as_str().as_bytes());
                    out.extend_from_slice(b"\":");
                    out.extend_from_slice(&inner);
                    out.push(b'}');
                    (out, meta.and_then(|m| m.status))
                }
                // Found by review: an item that does not scan was handed
                // on as it came (physical names and all).
                None => (
                    item_error(
                        c.op,
                        Some(&t.logical.name),
                        c.logical_id.as_deref(),
                        502,
                        "upstream_bulk_unreadable",
                        "the cluster's answer for this item could not be read; it may have been applied",
                    ),
                    Some(502),
                ),
            };
            (c.position, reversed, status)
        })
        .collect()
}
