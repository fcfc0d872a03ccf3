//! Tests of the rules that differ by placement kind: dedicated placements'
//! reference checks, shared placements' statistics and physical-field
//! refusals, id translation.

use super::tests::{confine, refused, POLICY};
use super::*;
use serde_json::json;

/// The construct a dedicated placement's check refused, or a panic.
fn refused_dedicated(body: Value) -> String {
    match check_dedicated(body.to_string().as_bytes(), true) {
        Err(Refusal::Construct { construct, .. }) => construct,
        other => panic!("{body} was not refused in a dedicated placement: {other:?}"),
    }
}

#[test]
fn dedicated_placements_refuse_what_names_another_index() {
    for body in [
        json!({"query": {"terms": {"f": {"index": "orders-shared", "id": "acme:1", "path": "f"}}}}),
        json!({"query": {"bool": {"filter": [{"terms": {"f": {"index": "x", "id": "1", "path": "f"}}}]}}}),
        json!({"query": {"more_like_this": {"like": [{"_index": "orders-shared", "_id": "globex:1"}]}}}),
        json!({"query": {"more_like_this": {"docs": [{"_index": "orders-shared", "_id": "1"}]}}}),
        json!({"query": {"percolate": {"field": "q", "index": "orders-shared", "id": "1"}}}),
        json!({"query": {"geo_shape": {"g": {"indexed_shape": {"index": "orders-shared", "id": "1", "path": "g"}}}}}),
        json!({"indices_boost": [{"orders-shared": 2.0}]}),
        json!({"query": {"wrapper": {"query": "e30="}}}),
        json!({"pit": {"id": "abc"}}),
        json!({"ext": {"x": {}}}),
        json!({"query": {"no_such_query": {}}}),
        json!({"aggs": {"a": {"no_such_agg": {}}}}),
        json!({"aggs": {"a": {"filter": {"terms": {"f": {"index": "x", "id": "1", "path": "f"}}}}}}),
    ] {
        refused_dedicated(body);
    }
    // What only reaches the partition's own index passes, re-serialised.
    for body in [
        json!({"query": {"match_all": {}}, "aggs": {"all": {"global": {}}}}),
        json!({"query": {"more_like_this": {"fields": ["t"], "like": [{"_id": "1"}, "text"]}}}),
        json!({"query": {"has_child": {"type": "c", "query": {"match_all": {}}}}}),
        json!({"profile": true, "explain": true, "suggest": {"s": {"text": "x", "term": {"field": "t"}}}}),
        json!({"aggs": {"s": {"significant_terms": {"field": "t"}}}}),
        json!({"query": {"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}}),
    ] {
        let out = check_dedicated(body.to_string().as_bytes(), true).unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), body);
    }
    assert_eq!(check_dedicated(b"", true).unwrap(), b"");
}

#[test]
fn shared_placements_refuse_statistics_and_expansion_oracles() {
    for body in [
        json!({"profile": true, "query": {"prefix": {"t": "a"}}}),
        json!({"explain": true}),
        json!({"query": {"fuzzy": {"t": {"value": "x", "max_expansions": 1}}}}),
        json!({"query": {"prefix": {"t": {"value": "a", "rewrite": "top_terms_1"}}}}),
        json!({"query": {"match_phrase_prefix": {"t": {"query": "a", "max_expansions": 1}}}}),
        json!({"query": {"more_like_this": {"like": ["text"], "min_doc_freq": 1}}}),
        json!({"query": {"more_like_this": {"like": [{"doc": {"t": "x"}}]}}}),
        json!({"indices_boost": [{"orders": 1.0}]}),
    ] {
        refused(body);
    }
    assert!(confine(json!({"profile": false, "explain": false}), &POLICY).is_ok());
}

#[test]
fn queries_naming_ids_are_translated_to_physical_ids() {
    let template = crate::IdTemplate::parse("{partition}:{id}").unwrap();
    let policy = SearchPolicy {
        ids: Some(&template),
        ..POLICY
    };
    let out = confine(
        json!({"query": {"bool": {"should": [
            {"ids": {"values": ["1", "2"]}},
            {"term": {"_id": "3"}},
            {"term": {"_id": {"value": "4"}}},
            {"terms": {"_id": ["5"]}},
            {"match": {"title": "_id"}}
        ]}}, "post_filter": {"ids": {"values": ["6"]}}}),
        &policy,
    )
    .unwrap();
    let should = &out["query"]["bool"]["must"][0]["bool"]["should"];
    assert_eq!(should[0]["ids"]["values"], json!(["acme:1", "acme:2"]));
    assert_eq!(should[1]["term"]["_id"], json!("acme:3"));
    assert_eq!(should[2]["term"]["_id"]["value"], json!("acme:4"));
    assert_eq!(should[3]["terms"]["_id"], json!(["acme:5"]));
    assert_eq!(should[4]["match"]["title"], json!("_id"));
    assert_eq!(out["post_filter"]["ids"]["values"], json!(["acme:6"]));
}

#[test]
fn physical_fields_are_refused_in_shared_placements() {
    for body in [
        json!({"sort": ["_id"]}),
        json!({"sort": [{"_id": "asc"}]}),
        json!({"sort": {"_routing": "asc"}}),
        json!({"collapse": {"field": "_id"}}),
        json!({"aggs": {"a": {"terms": {"field": "_index"}}}}),
        json!({"aggs": {"a": {"terms": {"field": "_id"}}}}),
    ] {
        refused(body);
    }
    assert!(check_dedicated(json!({"sort": ["_id"]}).to_string().as_bytes(), true).is_ok());
    assert!(confine(json!({"sort": ["title", {"n": "desc"}]}), &POLICY).is_ok());
}

#[test]
fn red_team_variants_are_refused() {
    for body in [
        json!({"query": {"match": {"t": "x"}}, "aggs": {"t": {"top_hits": {"explain": true}}}}),
        json!({"query": {"match": {"t": {"query": "x", "fuzziness": 2, "fuzzy_rewrite": "top_terms_1"}}}}),
        json!({"query": {"query_string": {"query": "x~", "fuzzy_max_expansions": 1}}}),
        json!({"docvalue_fields": ["_index"]}),
        json!({"docvalue_fields": [{"field": "_routing"}]}),
        json!({"fields": ["_i*"]}),
        // Patterns OpenSearch expands to metadata fields (found by review:
        // `*ndex` answered the shared index's name in `fields._index`).
        json!({"docvalue_fields": ["*ndex"]}),
        json!({"docvalue_fields": [{"field": "*seq_no"}]}),
        json!({"docvalue_fields": ["*"]}),
        json!({"docvalue_fields": [{"field": "*"}]}),
        json!({"query": {"prefix": {"t": {"value": "x", "rewrite": "scoring_boolean"}}}}),
        json!({"query": {"wildcard": {"t": {"value": "x*", "rewrite": "constant_score_boolean"}}}}),
        json!({"query": {"intervals": {"t": {"prefix": {"prefix": "proj"}}}}}),
        json!({"query": {"span_multi": {"match": {"prefix": {"t": {"value": "sec"}}}}}}),
        json!({"query": {"span_near": {"clauses": [{"span_multi": {"match": {"wildcard": {"t": "s*"}}}}], "slop": 1}}}),
        json!({"verbose_pipeline": true}),
        json!({"size": 0, "aggs": {"t": {"top_hits": {"size": 1, "sort": ["_index"]}}}}),
        json!({"aggs": {"t": {"top_hits": {"sort": [{"_id": "asc"}]}}}}),
        json!({"query": {"nested": {"path": "n", "query": {"match_all": {}}, "inner_hits": {"sort": [{"_index": "asc"}]}}}}),
        json!({"collapse": {"field": "user", "inner_hits": {"name": "x", "sort": ["_id"]}}}),
        json!({"query": {"match": {"body": {"query": "a b", "operator": "and", "cutoff_frequency": 7}}}}),
        json!({"query": {"common": {"body": {"query": "a b", "cutoff_frequency": 0.001}}}}),
        json!({"query": {"intervals": {"t": {"all_of": {"intervals": [{"match": {"query": "a"}}, {"wildcard": {"pattern": "b*"}}]}}}}}),
        json!({"query": {"intervals": {"t": {"any_of": {"intervals": [{"fuzzy": {"term": "abc"}}]}}}}}),
        json!({"aggs": {"h": {"top_hits": {"docvalue_fields": [{"field": "*", "format": "use_field_mapping"}]}}}}),
        json!({"aggs": {"h": {"top_hits": {"docvalue_fields": ["*ndex"]}}}}),
        json!({"query": {"query_string": {"query": "x", "fields": ["*ndex"]}}}),
        json!({"query": {"multi_match": {"query": "x", "fields": ["*outing"]}}}),
        json!({"query": {"simple_query_string": {"query": "x", "fields": ["*ndex"]}}}),
        json!({"query": {"query_string": {"query": "x", "default_field": "*ndex"}}}),
        json!({"query": {"exists": {"field": "*ndex"}}}),
        // Escapes the query parser undoes (found by review: `_in\dex:o*`
        // answered whether the shared index's name begins with `o`).
        json!({"query": {"query_string": {"query": "_in\\dex:o*"}}}),
        json!({"query": {"query_string": {"query": "\\u005findex:o*"}}}),
        json!({"query": {"query_string": {"query": "_r\\outing:acme"}}}),
        json!({"highlight": {"fields": {"_routing": {}}}}),
        // The third review: names the parser splits at `^`, `!`, `/`; an
        // approximate knn chooses among every tenant's vectors.
        json!({"query": {"query_string": {"query": "hello^1_index:o*"}}}),
        json!({"query": {"query_string": {"query": "a!_index:o*"}}}),
        json!({"query": {"query_string": {"query": "/a/_index:o*"}}}),
        json!({"query": {"knn": {"v": {"vector": [1.0], "k": 3}}}}),
        // The second review: terms on `_index` (it takes wildcards), a
        // boost suffix, a suffix joined to field names.
        json!({"query": {"terms": {"_index": ["t*"]}}}),
        json!({"query": {"query_string": {"query": "t*", "fields": ["_index^2"]}}}),
        json!({"query": {"simple_query_string": {"query": "t*", "fields": ["_index^1"]}}}),
        json!({"query": {"multi_match": {"query": "t*", "fields": "_index^1"}}}),
        json!({"query": {"query_string": {"query": "_ind:\"t*\"", "quote_field_suffix": "ex"}}}),
        json!({"highlight": {"fields": [{"*ndex": {}}]}}),
        json!({"aggs": {"m": {"multi_terms": {"terms": [{"field": "_index"}, {"field": "t"}]}}}}),
        json!({"aggs": {"c": {"composite": {"sources": [{"i": {"terms": {"field": "_index"}}}]}}}}),
        json!({"query": {"prefix": {"_index": "iso-s"}}}),
        json!({"query": {"wildcard": {"_id": "acme*"}}}),
        json!({"query": {"exists": {"field": "_routing"}}}),
        json!({"query": {"nested": {"path": "p", "query": {"match_all": {}}, "inner_hits": {"explain": true}}}}),
        json!({"query": {"query_string": {"query": "x", "default_field": "_index"}}}),
        json!({"query": {"query_string": {"query": "_index:orders-shared"}}}),
        json!({"suggest": {"s": {"text": "w", "phrase": {"field": "t", "collate": {"query": {"source": "{}"}}}}}}),
    ] {
        refused(body);
    }
    assert!(confine(json!({"query": {"term": {"_id": "1"}}}), &POLICY).is_ok());
    // Patterns that never reach a metadata field stay allowed.
    for body in [
        json!({"fields": ["*"]}),
        json!({"fields": [{"field": "*", "include_unmapped": true}]}),
        json!({"stored_fields": ["*"]}),
        json!({"docvalue_fields": ["t*", "a.*"]}),
        json!({"highlight": {"fields": {"*": {}}}}),
        json!({"query": {"query_string": {"query": "x", "fields": ["*", "t*"]}}}),
        json!({"query": {"multi_match": {"query": "x", "fields": ["*"]}}}),
        json!({"query": {"prefix": {"t": {"value": "x", "rewrite": "constant_score"}}}}),
        json!({"query": {"match": {"rewrite": "a field of that name"}}}),
        json!({"aggs": {"intervals": {"filter": {"prefix": {"t": "ab"}}}}}),
        json!({"aggs": {"f": {"filters": {"filters": {"intervals": {"prefix": {"t": "ab"}}}}}}}),
        json!({"verbose_pipeline": false}),
        json!({"aggs": {"t": {"top_hits": {"size": 1, "sort": [{"n": "desc"}]}}}}),
        json!({"query": {"intervals": {"t": {"all_of": {"intervals": [{"match": {"query": "a b"}}]}}}}}),
        json!({"query": {"bool": {"must": [{"prefix": {"t": "x"}}, {"intervals": {"t": {"match": {"query": "a"}}}}]}}}),
    ] {
        assert!(confine(body.clone(), &POLICY).is_ok(), "{body}");
    }
    let collate = json!({"suggest": {"s": {"text": "w", "phrase": {"field": "t", "collate": {"query": {"source": "{}"}}}}}});
    assert!(check_dedicated(collate.to_string().as_bytes(), true).is_err());
}
