use super::*;
use serde_json::json;

pub(super) const POLICY: SearchPolicy<'static> = SearchPolicy {
    field: "_tenant",
    partition: "acme",
    allow_scripts: false,
    ids: None,
};

pub(super) const SCRIPTS: SearchPolicy<'static> = SearchPolicy {
    allow_scripts: true,
    ..POLICY
};

pub(super) fn confine(body: Value, policy: &SearchPolicy) -> Result<Value, Refusal> {
    confine_search(body.to_string().as_bytes(), policy)
        .map(|out| serde_json::from_slice(&out).unwrap())
}

/// The refused construct and path, or a panic if the body was let through.
pub(super) fn refused(body: Value) -> (String, String) {
    match confine(body.clone(), &POLICY) {
        Err(Refusal::Construct {
            construct, path, ..
        }) => (construct, path),
        other => panic!("{body} was not refused: {other:?}"),
    }
}

pub(super) fn partition_term() -> Value {
    json!({"term": {"_tenant": "acme"}})
}

#[test]
fn wraps_the_query_under_the_partition_filter() {
    let query = json!({"bool": {"should": [{"match": {"t": "x"}}], "minimum_should_match": 1}});
    let out = confine(
        json!({"query": query, "size": 3, "sort": ["_doc"]}),
        &POLICY,
    )
    .unwrap();
    assert_eq!(out["query"]["bool"]["filter"], json!([partition_term()]));
    assert_eq!(out["query"]["bool"]["must"], json!([query]));
    assert_eq!(out["size"], json!(3));
    assert_eq!(out["sort"], json!(["_doc"]));
    assert_eq!(out.as_object().unwrap().len(), 3);
}

#[test]
fn no_query_means_only_the_filter() {
    for body in [&b""[..], b"  \n", b"{}", b"{\"size\":0}"] {
        let out: Value = serde_json::from_slice(&confine_search(body, &POLICY).unwrap()).unwrap();
        assert_eq!(
            out["query"],
            json!({"bool": {"filter": [partition_term()]}})
        );
    }
}

#[test]
fn field_and_partition_are_escaped() {
    let policy = SearchPolicy {
        field: "we\"ird",
        partition: "a\\b",
        allow_scripts: false,
        ids: None,
    };
    let out = confine(json!({}), &policy).unwrap();
    assert_eq!(
        out["query"]["bool"]["filter"][0],
        json!({"term": {"we\"ird": "a\\b"}})
    );
}

#[test]
fn bad_bodies() {
    for body in [
        &b"[]"[..],
        b"1",
        b"{",
        b"{\"query\":1}",
        b"{\"aggs\":[]}",
        b"{\"aggs\":{\"a\":1}}",
    ] {
        assert!(
            matches!(confine_search(body, &POLICY), Err(Refusal::BadBody { .. })),
            "{}",
            String::from_utf8_lossy(body)
        );
    }
}

#[test]
fn global_aggregations_at_any_depth() {
    assert_eq!(
        refused(json!({"aggs": {"all": {"global": {}}}})),
        ("`global` aggregation".into(), "aggs.all.global".into())
    );
    let body = json!({"aggregations": {"f": {"filter": {"term": {"a": 1}}, "aggs": {
        "by": {"terms": {"field": "k"}, "aggregations": {"all": {"global": {}, "aggs": {}}}}
    }}}});
    assert_eq!(
        refused(body).1,
        "aggregations.f.aggs.by.aggregations.all.global"
    );
    // An aggregation named `global` is fine.
    assert!(confine(
        json!({"aggs": {"global": {"terms": {"field": "k"}}}}),
        &POLICY
    )
    .is_ok());
}

#[test]
fn display_names_construct_path_and_reason() {
    let err = confine_search(br#"{"aggs":{"all":{"global":{}}}}"#, &POLICY).unwrap_err();
    assert_eq!(
        err.to_string(),
        "`global` aggregation at `aggs.all.global` is refused in a shared placement: \
         it would aggregate over every tenant's documents"
    );
}

#[test]
fn suggest_pit_pipelines_and_unknown_options() {
    assert_eq!(
        refused(json!({"suggest": {"s": {"text": "x", "term": {"field": "t"}}}})).1,
        "suggest"
    );
    assert_eq!(refused(json!({"pit": {"id": "x"}})).0, "`pit`");
    assert_eq!(
        refused(json!({"search_pipeline": "p"})).0,
        "`search_pipeline`"
    );
    assert_eq!(
        refused(json!({"search_pipeline": {"request_processors": []}})).0,
        "`search_pipeline`"
    );
    assert_eq!(refused(json!({"ext": {}})).0, "`ext`");
    assert_eq!(
        refused(json!({"source": "{}"})).0,
        "unknown search option `source`"
    );
}

#[test]
fn terms_lookup_anywhere() {
    let lookup = json!({"index": "users", "id": "2", "path": "followers"});
    assert_eq!(
        refused(json!({"query": {"terms": {"user": lookup}}})),
        ("`terms` lookup".into(), "query.terms.user".into())
    );
    let body = json!({"query": {"nested": {"path": "n", "query": {"bool": {"should": [
        {"match": {"a": "b"}}, {"terms": {"n.user": lookup}}
    ]}}}}});
    assert_eq!(
        refused(body).1,
        "query.nested.query.bool.should[1].terms.n.user"
    );
    // Any object is a lookup in a terms query, whatever its keys.
    assert_eq!(
        refused(json!({"query": {"terms": {"u": {"x": 1}}}})).0,
        "`terms` lookup"
    );
    let in_agg = json!({"aggs": {"f": {"filter": {"terms": {"u": lookup}}}}});
    assert_eq!(refused(in_agg).1, "aggs.f.filter.terms.u");
    let in_sort =
        json!({"sort": [{"n.x": {"nested": {"path": "n", "filter": {"terms": {"u": lookup}}}}}]});
    assert_eq!(refused(in_sort).1, "sort[0].n.x.nested.filter.terms.u");
    assert!(confine(
        json!({"query": {"terms": {"u": ["a", "b"], "boost": 2}}}),
        &POLICY
    )
    .is_ok());
}

#[test]
fn more_like_this_documents() {
    // Shared: refused whole, its term selection reads index-wide frequencies.
    let ok_elsewhere =
        json!({"query": {"more_like_this": {"like": ["some text", {"doc": {"t": "x"}}]}}});
    assert_eq!(refused(ok_elsewhere.clone()).1, "query.more_like_this");
    assert!(check_dedicated(ok_elsewhere.to_string().as_bytes(), true).is_ok());
    // Dedicated: a like-document of another index, or one naming nothing.
    let docs = [
        json!({"_index": "other", "_id": "1"}),
        json!({"_index": "i", "doc": {}}),
        json!({"index": "i", "id": "1"}),
        json!({"fields": ["t"]}),
    ];
    for like in docs {
        let body = json!({"query": {"more_like_this": {"fields": ["t"], "like": ["text", like]}}});
        match check_dedicated(body.to_string().as_bytes(), true) {
            Err(Refusal::Construct { path, .. }) => {
                assert_eq!(path, "query.more_like_this.like[1]")
            }
            other => panic!("{body}: {other:?}"),
        }
    }
    let unlike = json!({"query": {"bool": {"must_not": {"more_like_this": {"unlike": {"_index": "x", "_id": "1"}}}}}});
    match check_dedicated(unlike.to_string().as_bytes(), true) {
        Err(Refusal::Construct { path, .. }) => {
            assert_eq!(path, "query.bool.must_not.more_like_this.unlike[0]")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn percolate_shapes_wrapper_and_joins() {
    let stored = json!({"query": {"percolate": {"field": "q", "index": "i", "id": "1"}}});
    assert_eq!(refused(stored).0, "`percolate` of a stored document");
    assert!(confine(
        json!({"query": {"percolate": {"field": "q", "document": {"a": 1}}}}),
        &POLICY
    )
    .is_ok());
    let shape = json!({"query": {"bool": {"filter": {"geo_shape": {"loc": {"indexed_shape": {"index": "s", "id": "1"}}}}}}});
    assert_eq!(
        refused(shape),
        (
            "`indexed_shape`".into(),
            "query.bool.filter.geo_shape.loc.indexed_shape".into()
        )
    );
    assert_eq!(
        refused(json!({"post_filter": {"wrapper": {"query": "e30="}}})).0,
        "`wrapper` query"
    );
    let deep = json!({"query": {"constant_score": {"filter": {"dis_max": {"queries": [{"wrapper": {"query": "e30="}}]}}}}});
    assert_eq!(
        refused(deep).1,
        "query.constant_score.filter.dis_max.queries[0].wrapper"
    );
    assert_eq!(
        refused(json!({"query": {"has_child": {"type": "c", "query": {"match_all": {}}}}})).0,
        "`has_child` query"
    );
    assert_eq!(
        refused(json!({"query": {"has_parent": {"parent_type": "p", "query": {}}}})).0,
        "`has_parent` query"
    );
    assert_eq!(
        refused(json!({"aggs": {"c": {"children": {"type": "answer"}}}})).0,
        "`children` aggregation"
    );
}

#[test]
fn aggregations_that_reach_other_tenants_statistics() {
    assert_eq!(
        refused(json!({"aggs": {"s": {"significant_terms": {"field": "t"}}}})).0,
        "`significant_terms` aggregation"
    );
    assert_eq!(
        refused(json!({"aggs": {"s": {"significant_text": {"field": "t"}}}})).0,
        "`significant_text` aggregation"
    );
    for min in [json!(0), json!("0"), json!(0.5), json!(null)] {
        let body = json!({"aggs": {"t": {"terms": {"field": "k", "min_doc_count": min}}}});
        assert_eq!(refused(body).1, "aggs.t.terms.min_doc_count");
    }
    assert!(confine(
        json!({"aggs": {"t": {"terms": {"field": "k", "min_doc_count": 2}}}}),
        &POLICY
    )
    .is_ok());
    assert!(confine(
        json!({"aggs": {"h": {"histogram": {"field": "k", "interval": 1, "min_doc_count": 0}}}}),
        &POLICY
    )
    .is_ok());
}

#[test]
fn queries_inside_filters_rescore_and_highlight_are_walked() {
    let w = json!({"wrapper": {"query": "e30="}});
    assert_eq!(
        refused(json!({"aggs": {"f": {"filters": {"filters": {"x": w}}}}})).1,
        "aggs.f.filters.filters.x.wrapper"
    );
    assert_eq!(
        refused(json!({"aggs": {"f": {"filters": {"filters": [w]}}}})).1,
        "aggs.f.filters.filters[0].wrapper"
    );
    assert_eq!(
        refused(json!({"aggs": {"m": {"adjacency_matrix": {"filters": {"x": w}}}}})).1,
        "aggs.m.adjacency_matrix.filters.x.wrapper"
    );
    let rescore = json!({"rescore": [{"window_size": 5, "query": {"rescore_query": w}}]});
    assert_eq!(refused(rescore).1, "rescore[0].query.rescore_query.wrapper");
    assert_eq!(
        refused(json!({"rescore": {"learning_to_rank": {}}})).0,
        "unknown rescorer `learning_to_rank`"
    );
    let hl = json!({"highlight": {"fields": {"t": {"highlight_query": {"sltr": {}}}}}});
    assert_eq!(refused(hl).0, "unknown query `sltr`");
    let hl = json!({"highlight": {"highlight_query": w}});
    assert_eq!(refused(hl).1, "highlight.highlight_query.wrapper");
    let knn = json!({"query": {"knn": {"v": {"vector": [1.0], "k": 3, "filter": w}}}});
    assert_eq!(refused(knn).1, "query.knn.v.filter.wrapper");
    let sort = json!({"sort": [{"p": {"nested": {"path": "n", "nested": {"path": "n.m", "filter": {"sltr": {}}}}}}]});
    assert_eq!(refused(sort).1, "sort[0].p.nested.nested.filter.sltr");
    let old_sort = json!({"sort": {"p": {"nested_path": "n", "nested_filter": {"sltr": {}}}}});
    assert_eq!(refused(old_sort).1, "sort.p.nested_filter.sltr");
    let inner = json!({"query": {"nested": {"path": "n", "query": {"match_all": {}},
        "inner_hits": {"sort": [{"x": {"nested": {"path": "n", "filter": {"sltr": {}}}}}]}}}});
    assert_eq!(
        refused(inner).1,
        "query.nested.inner_hits.sort[0].x.nested.filter.sltr"
    );
    let must_not = json!({"query": {"bool": {"mustNot": [{"sltr": {}}]}}});
    assert_eq!(refused(must_not).1, "query.bool.mustNot[0].sltr");
    let fs = json!({"query": {"function_score": {"functions": [{"filter": w, "weight": 2}]}}});
    assert_eq!(
        refused(fs).1,
        "query.function_score.functions[0].filter.wrapper"
    );
}

#[test]
fn unknown_queries_and_aggregations() {
    assert_eq!(
        refused(json!({"query": {"sltr": {}}})).0,
        "unknown query `sltr`"
    );
    assert_eq!(
        refused(json!({"query": {"bool": {"must": [{"fancy_plugin": {}}]}}})).1,
        "query.bool.must[0].fancy_plugin"
    );
    assert_eq!(
        refused(json!({"aggs": {"a": {"fancy": {}}}})).0,
        "unknown aggregation `fancy`"
    );
}

#[test]
fn scripts_are_refused_unless_allowed() {
    let bodies = [
        (
            json!({"query": {"script": {"script": "true"}}}),
            "query.script",
        ),
        (
            json!({"query": {"script_score": {"query": {"match_all": {}}, "script": {"source": "1"}}}}),
            "query.script_score",
        ),
        (
            json!({"query": {"function_score": {"functions": [{"script_score": {"script": "1"}}]}}}),
            "query.function_score.functions[0].script_score",
        ),
        (
            json!({"script_fields": {"x": {"script": "1"}}}),
            "script_fields",
        ),
        (
            json!({"runtime_mappings": {"x": {"type": "long"}}}),
            "runtime_mappings",
        ),
        (
            json!({"derived": {"x": {"type": "long", "script": "emit(1)"}}}),
            "derived",
        ),
        (
            json!({"sort": {"_script": {"type": "number", "script": "1"}}}),
            "sort._script",
        ),
        (
            json!({"query": {"terms_set": {"t": {"terms": ["a"], "minimum_should_match_script": {"source": "1"}}}}}),
            "query.terms_set.t.minimum_should_match_script",
        ),
        (
            json!({"aggs": {"d": {"date_histogram": {"field": "t", "interval": "day"}, "aggs": {"b": {"bucket_script": {"buckets_path": {}, "script": "1"}}}}}}),
            "aggs.d.aggs.b.bucket_script",
        ),
        (
            json!({"aggs": {"m": {"scripted_metric": {"map_script": "1"}}}}),
            "aggs.m.scripted_metric",
        ),
        (
            json!({"aggs": {"t": {"terms": {"script": {"source": "1"}}}}}),
            "aggs.t.terms.script",
        ),
        (
            json!({"query": {"intervals": {"t": {"match": {"query": "x", "filter": {"script": "1"}}}}}}),
            "query.intervals.t.match.filter.script",
        ),
    ];
    for (body, path) in bodies {
        assert_eq!(refused(body.clone()).1, path, "{body}");
        let out = confine(body.clone(), &SCRIPTS).unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_eq!(out["query"]["bool"]["filter"][0], partition_term());
    }
    // Allowing scripts does not let anything else through.
    let both = json!({"query": {"script_score": {"query": {"wrapper": {"query": "e30="}}, "script": "1"}}});
    assert!(confine(both, &SCRIPTS).is_err());
}

#[test]
fn ordinary_searches_pass() {
    let body = json!({
        "query": {"bool": {
            "must": {"multi_match": {"query": "x", "fields": ["a", "b^2"]}},
            "filter": [{"range": {"ts": {"gte": "now-1d"}}}, {"exists": {"field": "a"}}],
            "should": [{"nested": {"path": "n", "query": {"term": {"n.k": "v"}}, "inner_hits": {}}}],
            "must_not": {"ids": {"values": ["1"]}}
        }},
        "post_filter": {"term": {"color": "red"}},
        "aggs": {"by_day": {"date_histogram": {"field": "ts", "calendar_interval": "day"},
            "aggs": {"top": {"top_hits": {"size": 1, "_source": ["a"]}}, "avg": {"avg": {"field": "p"}}}}},
        "highlight": {"fields": {"a": {}}},
        "sort": [{"ts": "desc"}, "_score"],
        "_source": {"includes": ["a"]},
        "collapse": {"field": "user", "inner_hits": {"name": "last", "size": 1}},
        "track_total_hits": true, "from": 0, "size": 10, "search_after": [1, "x"]
    });
    let out = confine(body.clone(), &POLICY).unwrap();
    assert_eq!(out["query"]["bool"]["must"][0], body["query"]);
    for key in [
        "post_filter",
        "aggs",
        "highlight",
        "sort",
        "_source",
        "collapse",
        "search_after",
    ] {
        assert_eq!(out[key], body[key], "{key}");
    }
}

// Field names that collide with refused constructs are refused too: the
// conservative side of walking bodies by key name.
#[test]
fn colliding_field_names_are_refused() {
    assert_eq!(
        refused(json!({"query": {"term": {"script": "x"}}})).0,
        "`script`"
    );
    assert_eq!(
        refused(json!({"query": {"match": {"wrapper": {"query": "x"}}}})).0,
        "`wrapper` query"
    );
}
