//! Property tests of the search walker: generated queries stay confined,
//! whatever passes is wrapped and clean, refused exactly when a refused
//! construct was planted, and no input panics.

use super::tests::{confine, partition_term, POLICY, SCRIPTS};
use super::*;
use proptest::prelude::*;
use serde_json::json;

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
