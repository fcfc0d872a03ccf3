use super::*;
use proptest::prelude::*;
use serde_json::json;

pub(super) const POLICY: SearchPolicy<'static> = SearchPolicy {
    field: "_tenant",
    partition: "acme",
    allow_scripts: false,
    ids: None,
};

const SCRIPTS: SearchPolicy<'static> = SearchPolicy {
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

fn partition_term() -> Value {
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

fn leaf() -> impl Strategy<Value = Value> {
    let field = "[a-z]{1,6}(\\.[a-z]{1,4})?";
    prop_oneof![
        (field, "\\PC{0,10}").prop_map(|(f, v)| json!({"match": {f: v}})),
        (field, any::<i64>()).prop_map(|(f, v)| json!({"term": {f: v}})),
        (field, "[a-z0-9]{0,8}").prop_map(|(f, v)| json!({"term": {f: {"value": v}}})),
        (field, any::<i32>(), any::<i32>())
            .prop_map(|(f, a, b)| json!({"range": {f: {"gte": a, "lt": b}}})),
        Just(json!({"match_all": {}})),
    ]
}

fn query() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 32, 4, |inner| {
        let clauses = prop::collection::vec(inner, 0..4);
        (
            clauses.clone(),
            clauses.clone(),
            clauses.clone(),
            clauses,
            any::<bool>(),
        )
            .prop_map(|(must, should, filter, must_not, single)| {
                let mut b = Map::new();
                for (k, v) in [
                    ("must", must),
                    ("should", should),
                    ("filter", filter),
                    ("must_not", must_not),
                ] {
                    if v.len() == 1 && single {
                        b.insert(k.into(), v[0].clone());
                    } else if !v.is_empty() {
                        b.insert(k.into(), Value::Array(v));
                    }
                }
                json!({"bool": b})
            })
    })
}

/// Whether an object key the walker refuses occurs anywhere in `v`.
fn has_refused_key(v: &Value, scripts: bool) -> bool {
    match v {
        Value::Object(m) => m.iter().any(|(k, c)| {
            (is_script_key(k) && !scripts)
                || (matches!(k.as_str(), "wrapper" | "has_child" | "has_parent") && c.is_object())
                || k == "indexed_shape"
                || has_refused_key(c, scripts)
        }),
        Value::Array(items) => items.iter().any(|c| has_refused_key(c, scripts)),
        _ => false,
    }
}

fn hostile() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("query".to_string()),
        Just("bool".to_string()),
        Just("must".to_string()),
        Just("filter".to_string()),
        Just("aggs".to_string()),
        Just("terms".to_string()),
        Just("global".to_string()),
        Just("wrapper".to_string()),
        Just("script".to_string()),
        Just("has_child".to_string()),
        Just("indexed_shape".to_string()),
        Just("nested".to_string()),
        Just("sort".to_string()),
        Just("index".to_string()),
        "[a-z_]{1,6}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        "[a-z]{0,4}".prop_map(Value::from)
    ];
    leaf.prop_recursive(5, 48, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A query with refused constructs planted at random depths, and whether
/// one was planted.
fn planted_query() -> impl Strategy<Value = (Value, bool)> {
    let danger = prop_oneof![
        Just(json!({"wrapper": {"query": "e30="}})),
        Just(json!({"terms": {"u": {"index": "i", "id": "1", "path": "p"}}})),
        Just(json!({"has_parent": {"parent_type": "p", "query": {"match_all": {}}}})),
        Just(json!({"script": {"script": "true"}})),
        Just(json!({"geo_shape": {"loc": {"indexed_shape": {"index": "s", "id": "1"}}}})),
        Just(json!({"more_like_this": {"like": [{"_id": "1"}]}})),
        Just(json!({"percolate": {"field": "q", "index": "i", "id": "1"}})),
        Just(json!({"sltr": {"featureset": "f"}})),
    ];
    let leaves =
        prop_oneof![4 => leaf().prop_map(|q| (q, false)), 1 => danger.prop_map(|q| (q, true))];
    leaves.prop_recursive(4, 24, 3, |inner| {
        let clause = prop::sample::select(vec!["must", "should", "filter", "must_not"]);
        prop_oneof![
            (clause, prop::collection::vec(inner.clone(), 1..3)).prop_map(|(c, qs)| {
                let bad = qs.iter().any(|(_, b)| *b);
                let qs: Vec<Value> = qs.into_iter().map(|(q, _)| q).collect();
                (json!({"bool": {c: qs}}), bad)
            }),
            inner.clone().prop_map(|(q, b)| (json!({"nested": {"path": "n", "query": q}}), b)),
            inner.clone().prop_map(|(q, b)| (json!({"constant_score": {"filter": q}}), b)),
            (inner.clone(), inner).prop_map(|((q, b), (f, c))| {
                let fs = json!({"function_score": {"query": q, "functions": [{"filter": f, "weight": 2}]}});
                (fs, b || c)
            }),
        ]
    })
}

/// Aggregations with refused constructs planted at random depths.
fn planted_aggs() -> impl Strategy<Value = (Value, bool)> {
    let kinds = prop_oneof![
        Just((json!({"terms": {"field": "k"}}), false)),
        Just((json!({"avg": {"field": "p"}}), false)),
        Just((
            json!({"date_histogram": {"field": "t", "calendar_interval": "day"}}),
            false
        )),
        Just((json!({"global": {}}), true)),
        Just((json!({"significant_terms": {"field": "k"}}), true)),
        Just((json!({"terms": {"field": "k", "min_doc_count": 0}}), true)),
        Just((json!({"scripted_metric": {"map_script": "1"}}), true)),
        planted_query().prop_map(|(q, b)| (json!({"filter": q}), b)),
    ];
    let named = ("[a-z]{1,5}", kinds).prop_map(|(name, (agg, b))| (json!({name: agg}), b));
    named.prop_recursive(3, 12, 2, |inner| {
        ("[a-z]{1,5}", inner.clone(), inner).prop_map(|(name, (sub, b), (sibling, c))| {
            let mut aggs = sibling.as_object().cloned().unwrap_or_default();
            // A name the sibling already uses would overwrite (and so drop)
            // what was planted there while keeping its flag.
            let mut name = name;
            while aggs.contains_key(&name) {
                name.push('_');
            }
            aggs.insert(name, json!({"nested": {"path": "n"}, "aggs": sub}));
            (Value::Object(aggs), b || c)
        })
    })
}

fn planted_body() -> impl Strategy<Value = (Value, bool)> {
    (
        prop::option::of(planted_query()),
        prop::option::of(planted_query()),
        prop::option::of(planted_aggs()),
        prop::option::of(planted_query()),
    )
        .prop_map(|(query, post_filter, aggs, sort_filter)| {
            let mut body = Map::new();
            let mut bad = false;
            for (key, part) in [
                ("query", query),
                ("post_filter", post_filter),
                ("aggs", aggs),
            ] {
                if let Some((v, b)) = part {
                    body.insert(key.into(), v);
                    bad |= b;
                }
            }
            if let Some((filter, b)) = sort_filter {
                body.insert(
                    "sort".into(),
                    json!([{"n.x": {"nested": {"path": "n", "filter": filter}}}]),
                );
                bad |= b;
            }
            (Value::Object(body), bad)
        })
}

/// The property below checks what passes; it proves something only if a
/// fair share of the generated hostile bodies does pass.
#[test]
fn hostile_bodies_are_often_let_through() {
    use proptest::strategy::{Strategy, ValueTree};
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = hostile();
    let passed = (0..400)
        .filter(|_| {
            let body = strategy.new_tree(&mut runner).unwrap().current();
            confine(body, &POLICY).is_ok()
        })
        .count();
    assert!(
        passed >= 40,
        "only {passed} of 400 hostile bodies passed: the property is vacuous"
    );
}

proptest! {
    #[test]
    fn confined_queries_stay_confined(q in query(), size in 0u32..100) {
        let out = confine(json!({"query": q, "size": size}), &POLICY).unwrap();
        prop_assert_eq!(&out["query"]["bool"]["filter"][0], &partition_term());
        prop_assert_eq!(&out["query"]["bool"]["must"][0], &q);
        prop_assert_eq!(&out["size"], &json!(size));
        let again = confine(out.clone(), &POLICY).unwrap();
        prop_assert_eq!(&again["query"]["bool"]["filter"][0], &partition_term());
        prop_assert_eq!(&again["query"]["bool"]["must"][0], &out["query"]);
    }

    #[test]
    fn whatever_passes_is_wrapped_and_clean(body in hostile(), scripts in any::<bool>()) {
        let policy = if scripts { SCRIPTS } else { POLICY };
        if let Ok(out) = confine(body, &policy) {
            prop_assert_eq!(&out["query"]["bool"]["filter"][0], &partition_term());
            let mut rest = out.clone();
            let must = rest["query"]["bool"]["must"].take();
            rest["query"].take();
            prop_assert!(!has_refused_key(&rest, scripts), "{}", out);
            prop_assert!(!has_refused_key(&must, scripts), "{}", out);
        }
    }

    #[test]
    fn refused_exactly_when_something_was_planted((body, planted) in planted_body()) {
        match confine(body.clone(), &POLICY) {
            Ok(out) => {
                prop_assert!(!planted, "let through: {}", body);
                prop_assert_eq!(&out["query"]["bool"]["filter"][0], &partition_term());
            }
            Err(e) => prop_assert!(planted, "refused {}: {}", body, e),
        }
    }

    #[test]
    fn never_panics(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = confine_search(&bytes, &POLICY);
    }
}
