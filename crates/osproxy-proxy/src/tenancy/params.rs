//! Query-string parameters of tenancy requests: an allow-list per operation.
//! Parameters that could widen a request beyond its partition (`routing`,
//! `preference`, and `q` and friends, which replace a search body's query)
//! are refused in shared placements; unknown ones are refused everywhere
//! rather than forwarded blind.

use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::query::Query;
use osproxy_rewrite::search::{names_metadata, Patterns};

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
        // No `pipeline` on any placement: an ingest pipeline could rewrite
        // the partition field, `_id`, routing or the target `_index`.
        Op::Write => &["routing", "preference"],
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

/// The client's query string read as OpenSearch reads it (split on `&`
/// and `;`, names and values percent-decoded); a malformed one is refused.
///
/// `error_trace` is accepted and not forwarded: the cluster's stack traces
/// name physical indices with their uuids, and other internals, in text
/// osproxy cannot reverse reliably.
pub(crate) fn parse(query: Option<&str>) -> Result<Query, ProxyError> {
    let mut q =
        Query::parse(query).map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
    q.remove("error_trace");
    Ok(q)
}

/// Refuses response formats osproxy cannot reverse: only JSON answers are
/// read back and rewritten, so `format` other than `json` is refused
/// rather than returned unreversed.
fn check_common(name: &str, value: &str) -> Result<(), ProxyError> {
    if name == "format" && !value.eq_ignore_ascii_case("json") {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            format!(
                "query parameter `format={}` is refused for logical indices: osproxy reads and rewrites JSON answers only; drop `format` or use `format=json`",
                shown(value)
            ),
        ));
    }
    Ok(())
}

/// Whether a field-list parameter (`sort=_id:asc`, `docvalue_fields=_index`)
/// names a physical metadata field.
fn names_physical_field(key: &str, value: &str) -> bool {
    if !matches!(
        key,
        "sort" | "docvalue_fields" | "stored_fields" | "_source" | "_source_includes"
    ) {
        return false;
    }
    // OpenSearch expands every `docvalue_fields` pattern to metadata
    // fields too (`*ndex` answers `fields._index`), as in a body.
    let patterns = if key == "docvalue_fields" {
        Patterns::All
    } else {
        Patterns::None
    };
    value
        .split(',')
        .any(|f| names_metadata(f.split(':').next().unwrap_or("").trim(), patterns))
}

/// The upstream parameters of a tenancy request: the allowed parameters,
/// decoded and checked (send them with [`Query::encode`]), plus `routing=<partition>` in shared
/// placements (`refresh=true` becomes `refresh=true&routing=acme`).
pub(crate) fn rewrite_query(
    query: Option<&str>,
    op: Op,
    shared: bool,
    partition: &str,
) -> Result<Query, ProxyError> {
    let mut q = parse(query)?;
    for (key, value) in q.pairs() {
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
        check_common(key, value)?;
        if shared && names_physical_field(key, value) {
            return Err(ProxyError::new(
                ErrorCode::ConstructRefused,
                format!("query parameter `{}` names a physical metadata field (`_id`, `_index`, `_routing`, `_seq_no`), whose values osproxy does not translate back in a shared placement", shown(key)),
            ));
        }
        if shared && key == "explain" && value != "false" {
            return Err(ProxyError::new(
                ErrorCode::ConstructRefused,
                "query parameter `explain` is refused in a shared placement: explanations print index-wide term statistics of every tenant's documents",
            ));
        }
    }
    if shared {
        // Partition ids are [A-Za-z0-9_.-]: nothing to encode.
        q.set("routing".into(), partition.into());
    }
    Ok(q)
}

/// The parameters, when only `allowed` ones are given; any other
/// parameter is refused, naming it and what is accepted `where_`.
pub(crate) fn allow_only(
    query: Option<&str>,
    allowed: &[&str],
    where_: &str,
) -> Result<Query, ProxyError> {
    let q = parse(query)?;
    for (key, value) in q.pairs() {
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
        check_common(key, value)?;
    }
    Ok(q)
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
            rewrite_query(Some("refresh=true"), Op::Write, true, "acme")
                .unwrap()
                .encode(),
            "refresh=true&routing=acme"
        );
        assert_eq!(
            rewrite_query(None, Op::Get, true, "acme").unwrap().encode(),
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
        // A pipeline can set `_index`: refused on dedicated placements too.
        assert!(rewrite_query(Some("pipeline=enrich"), Op::Write, false, "acme").is_err());
        assert!(rewrite_query(Some("df=x"), Op::Count, true, "acme").is_err());
    }

    #[test]
    fn smuggled_and_encoded_parameters_are_seen() {
        for q in [
            "size=100;q=*:*",
            "size=1%3Bq=x;q=y",
            "from=0&size=1;routing=globex",
            "size=1;search_pipeline=p",
            "size=1;suggest_field=title",
            "%71=*:*",
            "q%00=1",
            "size=1&format=yaml",
            "format=cbor",
            "size=%zz",
            "=q",
            "explain=true",
            "sort=_id:asc",
            "docvalue_fields=title,_index",
            "stored_fields=_routing",
        ] {
            assert!(
                rewrite_query(Some(q), Op::Search, true, "acme").is_err(),
                "{q}"
            );
        }
        // A client's own routing is replaced, never added beside it.
        assert_eq!(
            rewrite_query(Some("size=1;size=2&format=json"), Op::Search, true, "acme")
                .unwrap()
                .encode(),
            "size=2&format=json&routing=acme"
        );
        assert!(allow_only(Some("keep_alive=1m;routing=x"), &["keep_alive"], "here").is_err());
    }

    #[test]
    fn allow_only_keeps_listed_pairs() {
        assert_eq!(
            allow_only(
                Some("refresh=true&timeout=1m"),
                &["refresh", "timeout"],
                "here"
            )
            .unwrap()
            .encode(),
            "refresh=true&timeout=1m"
        );
        assert!(allow_only(None, &["refresh"], "here").unwrap().is_empty());
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
            rewrite_query(Some("q=title:x&routing=r"), Op::Search, false, "acme")
                .unwrap()
                .encode(),
            "q=title%3Ax&routing=r"
        );
        assert!(rewrite_query(Some("scroll=1m"), Op::Search, false, "acme").is_ok());
        assert!(rewrite_query(Some("search_pipeline=x"), Op::Search, false, "acme").is_err());
    }
}
