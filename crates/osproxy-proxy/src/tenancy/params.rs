//! Query-string parameters of tenancy requests: an allow-list per operation.
//! Parameters that could widen a request beyond its partition (`routing`,
//! `preference`, and `q` and friends, which replace a search body's query)
//! are refused in shared placements; unknown ones are refused everywhere
//! rather than forwarded blind.

use osproxy_core::{ErrorCode, ProxyError};
use percent_encoding::percent_decode_str;

/// What the request does, for the parameter allow-list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// Index or create a document.
    Write,
    /// Get a document or its source.
    Get,
    /// Delete a document.
    Delete,
    /// Partial update.
    Update,
    /// `_search`.
    Search,
    /// `_count`.
    Count,
}

const COMMON: &[&str] = &["pretty", "human", "error_trace", "filter_path", "format"];

fn allowed(op: Op) -> &'static [&'static str] {
    match op {
        Op::Write => &[
            "refresh",
            "timeout",
            "wait_for_active_shards",
            "version",
            "version_type",
            "if_seq_no",
            "if_primary_term",
            "op_type",
        ],
        Op::Get => &[
            "_source",
            "_source_includes",
            "_source_excludes",
            "stored_fields",
            "realtime",
            "refresh",
            "version",
            "version_type",
        ],
        Op::Delete => &[
            "refresh",
            "timeout",
            "wait_for_active_shards",
            "version",
            "version_type",
            "if_seq_no",
            "if_primary_term",
        ],
        Op::Update => &[
            "refresh",
            "timeout",
            "wait_for_active_shards",
            "if_seq_no",
            "if_primary_term",
            "retry_on_conflict",
        ],
        Op::Search => &[
            "scroll",
            "from",
            "size",
            "timeout",
            "terminate_after",
            "track_total_hits",
            "track_scores",
            "_source",
            "_source_includes",
            "_source_excludes",
            "stored_fields",
            "docvalue_fields",
            "sort",
            "request_cache",
            "allow_partial_search_results",
            "batched_reduce_size",
            "max_concurrent_shard_requests",
            "pre_filter_shard_size",
            "search_type",
            "seq_no_primary_term",
            "version",
            "explain",
            "typed_keys",
            "rest_total_hits_as_int",
            "ignore_unavailable",
            "allow_no_indices",
            "expand_wildcards",
            "cancel_after_time_interval",
            "phase_took",
            "include_named_queries_score",
            "ccs_minimize_roundtrips",
        ],
        Op::Count => &[
            "min_score",
            "terminate_after",
            "ignore_unavailable",
            "allow_no_indices",
            "expand_wildcards",
        ],
    }
}

/// Allowed only where the physical index is the partition's own.
fn dedicated_only(op: Op) -> &'static [&'static str] {
    match op {
        // An ingest pipeline could rewrite the partition field, `_id` or routing.
        Op::Write => &["routing", "preference", "pipeline"],
        Op::Get | Op::Delete | Op::Update => &["routing", "preference"],
        Op::Search | Op::Count => &[
            "routing",
            "preference",
            "q",
            "df",
            "analyzer",
            "analyze_wildcard",
            "default_operator",
            "lenient",
        ],
    }
}

/// The upstream query string for a tenancy request: the allowed parameters
/// verbatim, plus `routing=<partition>` in shared placements
/// (`refresh=true` becomes `refresh=true&routing=acme`).
pub(crate) fn rewrite_query(
    query: Option<&str>,
    op: Op,
    shared: bool,
    partition: &str,
) -> Result<String, ProxyError> {
    let mut out = String::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
        let key = percent_decode_str(raw_key).decode_utf8_lossy();
        let key = key.as_ref();
        let ok = COMMON.contains(&key)
            || allowed(op).contains(&key)
            || (!shared && dedicated_only(op).contains(&key));
        if !ok {
            let why = if dedicated_only(op).contains(&key) {
                "it could reach other tenants' documents in a shared placement"
            } else {
                "it is not accepted for logical indices"
            };
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("query parameter `{}` is refused: {why}", shown(key)),
            ));
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(pair);
    }
    if shared {
        if !out.is_empty() {
            out.push('&');
        }
        // Partition ids are [A-Za-z0-9_.-]: nothing to encode.
        out.push_str("routing=");
        out.push_str(partition);
    }
    Ok(out)
}

/// The query string with only `allowed` parameters, verbatim; any other
/// parameter is refused, naming it and what is accepted `where_`.
pub(crate) fn allow_only(
    query: Option<&str>,
    allowed: &[&str],
    where_: &str,
) -> Result<String, ProxyError> {
    let mut out = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(k, _)| k);
        if !allowed.contains(&key) {
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!(
                    "query parameter `{}` is refused {where_} (allowed: {})",
                    shown(key),
                    allowed.join(", ")
                ),
            ));
        }
        out.push(pair);
    }
    Ok(out.join("&"))
}

fn shown(key: &str) -> String {
    key.chars().take(64).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_adds_routing_and_refuses_overrides() {
        assert_eq!(
            rewrite_query(Some("refresh=true"), Op::Write, true, "acme").unwrap(),
            "refresh=true&routing=acme"
        );
        assert_eq!(
            rewrite_query(None, Op::Get, true, "acme").unwrap(),
            "routing=acme"
        );
        for q in [
            "routing=globex",
            "preference=_shards:0",
            "ROUTING=x",
            "rout%69ng=x",
            "unknown=1",
        ] {
            assert!(
                rewrite_query(Some(q), Op::Get, true, "acme").is_err(),
                "{q}"
            );
        }
        assert!(rewrite_query(Some("q=*:*"), Op::Search, true, "acme").is_err());
        assert!(rewrite_query(Some("pipeline=rewrite"), Op::Write, true, "acme").is_err());
        assert!(rewrite_query(Some("pipeline=enrich"), Op::Write, false, "acme").is_ok());
        assert!(rewrite_query(Some("df=x"), Op::Count, true, "acme").is_err());
    }

    #[test]
    fn allow_only_keeps_listed_pairs_verbatim() {
        assert_eq!(
            allow_only(
                Some("refresh=true&timeout=1m"),
                &["refresh", "timeout"],
                "here"
            )
            .unwrap(),
            "refresh=true&timeout=1m"
        );
        assert_eq!(allow_only(None, &["refresh"], "here").unwrap(), "");
        let e = allow_only(Some("refresh=true&routing=x"), &["refresh"], "on a bulk").unwrap_err();
        assert!(
            e.reason.contains("`routing`") && e.reason.contains("on a bulk"),
            "{}",
            e.reason
        );
    }

    #[test]
    fn dedicated_keeps_routing_and_q() {
        assert_eq!(
            rewrite_query(Some("q=title:x&routing=r"), Op::Search, false, "acme").unwrap(),
            "q=title:x&routing=r"
        );
        assert!(rewrite_query(Some("scroll=1m"), Op::Search, false, "acme").is_ok());
        assert!(rewrite_query(Some("search_pipeline=x"), Op::Search, false, "acme").is_err());
    }
}
