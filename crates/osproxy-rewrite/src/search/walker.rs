//! The walk of a search body: every construct checked against the
//! placement's rules (see the parent module for what is refused where).

use serde_json::{Map, Value};

use super::{bad, child, listed, refuse, Refusal};

use super::vocabulary::*;

pub(super) fn is_script_key(key: &str) -> bool {
    key == "script"
        || key == "scripted_metric"
        || key.starts_with("script_")
        || key.ends_with("_script")
}

/// Whether a terms-lookup-shaped object: `{"index":..,"id":..,"path":..}`.
fn is_lookup(v: &Value) -> bool {
    v.as_object()
        .is_some_and(|o| ["index", "id", "path"].iter().any(|k| o.contains_key(*k)))
}

type Checked = Result<(), Refusal>;

pub(super) struct Walker {
    pub(super) allow_scripts: bool,
    /// A shared placement: the partition filter confines the query, and
    /// constructs that reach past it (joins, global aggregations, index
    /// statistics) are refused too. Otherwise only what names another
    /// index, or is unknown, is refused.
    pub(super) shared: bool,
}

impl Walker {
    pub(super) fn top_level(&self, key: &str, v: &Value) -> Checked {
        match key {
            "query" | "post_filter" => self.query(v, key),
            "aggs" | "aggregations" => self.aggs(v, key),
            "rescore" => self.rescore(v, key),
            "highlight" => self.highlight(v, key),
            "suggest" if self.shared => Err(refuse(
                "`suggest`",
                key,
                "suggesters read terms from every tenant's documents, outside the query",
            )),
            "suggest" => self.generic(v, key),
            "pit" => Err(refuse(
                "`pit`",
                key,
                "a point in time is searched with `POST /_search` and the id osproxy returned, not inside an index's search",
            )),
            "indices_boost" => Err(refuse("`indices_boost`", key, OTHER_INDEX)),
            "profile" | "explain" if self.shared && v != &Value::Bool(false) => {
                Err(refuse(format!("`{key}`"), key, STATS))
            }
            // Found by review: a verbose search pipeline (an index's
            // default one) answers the hits as each processor saw them,
            // where osproxy does not reverse.
            "verbose_pipeline" if v != &Value::Bool(false) => Err(refuse(
                "`verbose_pipeline`",
                key,
                "it answers the hits as a search pipeline's processors saw them, which osproxy does not reverse",
            )),
            "search_pipeline" => Err(refuse(
                "`search_pipeline`",
                key,
                "a search pipeline runs after osproxy and could rewrite the query (dropping the partition filter, or reading another index from a template)",
            )),
            "ext" => Err(refuse(
                "`ext`",
                key,
                "search extensions go to plugins osproxy cannot inspect, so it cannot tell whether they read other tenants' documents",
            )),
            // Empty, it defines nothing (Dashboards' Discover always sends
            // `"script_fields": {}`).
            "script_fields" | "runtime_mappings" | "derived"
                if v.as_object().is_some_and(serde_json::Map::is_empty) =>
            {
                Ok(())
            }
            "script_fields" | "runtime_mappings" | "derived" => {
                self.script(key, key)?;
                self.generic(v, key)
            }
            "sort" => {
                self.physical_fields(v, key)?;
                self.sort(v, key)
            }
            "collapse" | "docvalue_fields" => {
                self.physical_fields(v, key)?;
                self.generic(v, key)
            }
            "stored_fields" | "fields" => {
                self.physical_fields_as(v, key, Patterns::None)?;
                self.generic(v, key)
            }
            k if listed(PLAIN_OPTIONS, k) => self.generic(v, key),
            other => Err(refuse(format!("unknown search option `{other}`"), key, UNKNOWN)),
        }
    }

    /// In a shared placement, sorting, collapsing or aggregating on the
    /// physical `_id`, `_routing`, `_index` or the partition field would
    /// answer with values osproxy does not reverse (partition-scoped ids,
    /// the shared index's name): refused, naming the field.
    ///
    /// A field pattern (`*`, OpenSearch's only wildcard) is refused when it
    /// can match a metadata field: one that begins with `_` or `*`. How
    /// OpenSearch expands a pattern depends on where it is (measured on
    /// 2.19): `docvalue_fields` expands every pattern, `*` included, to
    /// metadata fields too (`*ndex` answers the shared index's name in
    /// `fields._index`); a query's `fields`/`default_field` expands every
    /// pattern but the match-all `*`; the `fields` option, `stored_fields`
    /// and `_source` filtering never reach them through a wildcard.
    fn physical_fields(&self, v: &Value, path: &str) -> Checked {
        self.physical_fields_as(v, path, Patterns::All)
    }

    fn physical_fields_as(&self, v: &Value, path: &str, patterns: Patterns) -> Checked {
        if !self.shared {
            return Ok(());
        }
        let physical = |name: &str| names_metadata(name, patterns);
        // An object names a field by its key (`{"_id": ...}`) or by its
        // `field` (`{"field": "*", "format": ...}`), alone or in a list.
        // Found by review: the list's objects were checked by key only, so
        // `docvalue_fields: [{"field": "*"}]` reached the metadata fields.
        let object = |o: &Map<String, Value>| {
            o.keys()
                .find(|k| physical(k))
                .cloned()
                .or_else(|| match o.get("field") {
                    Some(Value::String(f)) if physical(f) => Some(f.clone()),
                    _ => None,
                })
        };
        let found = match v {
            Value::String(s) => physical(s).then(|| s.clone()),
            Value::Array(items) => items.iter().find_map(|i| match i {
                Value::String(s) if physical(s) => Some(s.clone()),
                Value::Object(o) => object(o),
                _ => None,
            }),
            Value::Object(o) => object(o),
            _ => None,
        };
        match found {
            Some(f) => Err(refuse(
                format!("`{f}`"),
                path,
                "in a shared placement it holds physical values (partition-scoped ids, the shared index) that osproxy does not translate back",
            )),
            None => Ok(()),
        }
    }

    /// In a shared placement a leaf query on `_index`, `_routing` or
    /// `_seq_no` (or on `_id`, other than the `term`/`terms`/`match` forms
    /// whose ids are translated) is an oracle for physical names: refused.
    fn leaf_on_physical(&self, kind: &str, body: &Value, path: &str) -> Checked {
        if !self.shared {
            return Ok(());
        }
        let Some(fields) = body.as_object() else {
            return Ok(());
        };
        // Found by review: the suffix is joined to field names
        // (`_ind` + `ex`), which no check of the names alone sees. A
        // suffix that begins with `.` names a sub-field, never a metadata
        // field (they have no dot).
        if kind == "query_string"
            && fields
                .get("quote_field_suffix")
                .is_some_and(|s| !s.as_str().is_some_and(|s| s.starts_with('.')))
        {
            return Err(refuse(
                "`quote_field_suffix` other than `.<sub-field>`",
                &child(path, "quote_field_suffix"),
                "in a shared placement it builds field names osproxy cannot check, metadata fields among them",
            ));
        }
        // Query syntax can name fields in its text: `_index:orders-shared`
        // (`simple_query_string` has no such syntax). Each field name as
        // OpenSearch's parser reads it: `_in\dex` and `\u005findex` name
        // `_index` too; `user_id:5` names no metadata field.
        if kind == "query_string" {
            let text = body.get("query").and_then(Value::as_str).unwrap_or("");
            if let Some(f) = text_fields(text)
                .iter()
                .flat_map(|f| name_pieces(f))
                .find(|f| names_metadata(f, Patterns::AllButMatchAll))
            {
                return Err(refuse(
                    format!("`{kind}` naming the metadata field `{f}`"),
                    &child(path, "query"),
                    "in a shared placement it matches physical values (partition-scoped ids, the shared index) that osproxy does not translate",
                ));
            }
        }
        let translated = matches!(kind, "term" | "terms" | "match" | "match_phrase" | "ids");
        for field in fields.keys() {
            let physical = matches!(field.as_str(), "_index" | "_routing" | "_seq_no")
                || (field == "_id" && !translated);
            if physical {
                return Err(refuse(
                    format!("`{kind}` on `{field}`"),
                    &child(path, field),
                    "in a shared placement it matches physical values (partition-scoped ids, the shared index) that osproxy does not translate",
                ));
            }
        }
        Ok(())
    }

    fn script(&self, key: &str, path: &str) -> Checked {
        if self.allow_scripts {
            Ok(())
        } else {
            Err(refuse(
                format!("`{key}`"),
                path,
                "scripts and script-defined fields are refused unless the logical index allows scripts",
            ))
        }
    }

    /// Checks that apply to a key wherever it occurs, so that constructs
    /// which read documents by reference are refused even in places this
    /// walker does not model. Field names that collide with them are refused
    /// too; that is the conservative side.
    fn check_key(&self, key: &str, v: &Value, path: &str) -> Checked {
        if is_script_key(key) {
            self.script(key, path)?;
        }
        match key {
            "wrapper" if v.is_object() => Err(refuse(
                "`wrapper` query",
                path,
                "the wrapped query is encoded, so osproxy cannot inspect it",
            )),
            "has_child" | "has_parent" if self.shared && v.is_object() => {
                Err(refuse(format!("`{key}` query"), path, JOIN))
            }
            "indexed_shape" => Err(refuse("`indexed_shape`", path, BY_ID)),
            // A collate query is a template string osproxy cannot inspect.
            "collate" => Err(refuse(
                "`collate`",
                path,
                "its query is a template string, so osproxy cannot tell which documents it reads",
            )),
            // `cutoff_frequency` (found by review) splits a query's terms by
            // their document count in the shard, every tenant's counted.
            "max_expansions" | "fuzzy_max_expansions" | "min_doc_freq" | "max_doc_freq"
            | "cutoff_frequency"
                if self.shared =>
            {
                Err(refuse(format!("`{key}`"), path, EXPANSION))
            }
            // Every rewrite but the constant-score ones expands into one
            // clause per matching term of the shard: `top_terms_*` picks
            // them by frequency, and the boolean ones fail past the clause
            // limit (found by review: `scoring_boolean` answered whether
            // other tenants' terms with a prefix pass 1,024).
            // (Only those values: a field may be named `rewrite`, and any
            // other value is no rewrite OpenSearch knows.)
            "rewrite" | "fuzzy_rewrite"
                if self.shared
                    && v.as_str().is_some_and(|r| {
                        r.starts_with("top_terms")
                            || r == "scoring_boolean"
                            || r == "constant_score_boolean"
                    }) =>
            {
                Err(refuse(format!("`{key}` {v}"), path, EXPANSION))
            }
            // Found by review: a span query's multi-term rewrite is boolean
            // whatever `rewrite` says, and fails past 1,024 clauses among
            // every tenant's terms.
            "common" if self.shared && v.is_object() => Err(refuse(
                "`common` query",
                path,
                "it splits its terms by their document count in the shard, which counts other tenants' documents",
            )),
            "span_multi" if self.shared && v.is_object() => {
                Err(refuse("`span_multi` query", path, EXPANSION))
            }
            // An intervals rule over several terms fails when it expands
            // past its limit (128) among every tenant's terms.
            "prefix" | "wildcard" | "fuzzy" | "regexp"
                if self.shared && v.is_object() && in_intervals(path) =>
            {
                Err(refuse(format!("`intervals` `{key}` rule"), path, EXPANSION))
            }
            // `explain` in `top_hits` or `inner_hits` as well as at the top.
            "explain" | "profile" if self.shared && v != &Value::Bool(false) => {
                Err(refuse(format!("`{key}`"), path, STATS))
            }
            "docvalue_fields" if self.shared => self.physical_fields(v, path),
            "stored_fields" | "_source" if self.shared => {
                self.physical_fields_as(v, path, Patterns::None)
            }
            "field" | "default_field" | "fields" if self.shared => {
                self.physical_fields_as(v, path, Patterns::AllButMatchAll)
            }
            "terms" => match v
                .as_object()
                .and_then(|o| o.iter().find(|(_, f)| is_lookup(f)))
            {
                Some((f, _)) => Err(refuse("`terms` lookup", &child(path, f), BY_ID)),
                None => Ok(()),
            },
            "percolate" if v.get("id").is_some() || v.get("index").is_some() => {
                Err(refuse("`percolate` of a stored document", path, BY_ID))
            }
            "more_like_this" => self.more_like_this(v, path),
            _ => Ok(()),
        }
    }

    fn more_like_this(&self, v: &Value, path: &str) -> Checked {
        if self.shared {
            return Err(refuse(
                "`more_like_this` query",
                path,
                "it picks its terms by their index-wide document frequency, which tells of other tenants' documents",
            ));
        }
        for key in ["ids", "docs"] {
            if v.get(key).is_some() && (self.shared || key == "docs") {
                return Err(refuse(
                    "`more_like_this` document",
                    &child(path, key),
                    BY_ID,
                ));
            }
        }
        for key in ["like", "unlike"] {
            let items = match v.get(key) {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(item) => vec![item],
                None => Vec::new(),
            };
            for (i, item) in items.into_iter().enumerate() {
                let Some(item) = item.as_object() else {
                    continue;
                };
                // Only artificial documents (a `doc` and no index or id)
                // pass; in a dedicated placement also a document of the
                // searched index named by id alone.
                let names_index = ["_index", "index"].iter().any(|k| item.contains_key(*k));
                let names_id = ["_id", "id"].iter().any(|k| item.contains_key(*k));
                let own = !self.shared && names_id && !names_index;
                if !own && (names_index || names_id || !item.contains_key("doc")) {
                    let at = format!("{}[{i}]", child(path, key));
                    return Err(refuse("`more_like_this` document", &at, BY_ID));
                }
            }
        }
        Ok(())
    }

    /// Walks any value, applying [`Walker::check_key`] to every object key.
    fn generic(&self, v: &Value, path: &str) -> Checked {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    let at = child(path, key);
                    self.check_key(key, value, &at)?;
                    // Sorts and highlights also occur in `inner_hits` and
                    // `top_hits`; their queries get the full query checks.
                    match key.as_str() {
                        // Found by review: a sort in `top_hits` or
                        // `inner_hits` answered `_index` and physical ids in
                        // each hit's `sort` values.
                        "sort" => {
                            self.physical_fields(value, &at)?;
                            self.sort(value, &at)?
                        }
                        "highlight" => self.highlight(value, &at)?,
                        _ => self.generic(value, &at)?,
                    }
                }
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.generic(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Sorts: like [`Walker::generic`], but the `filter` of a `nested` sort
    /// option (and the deprecated `nested_filter`) is a query.
    fn sort(&self, v: &Value, path: &str) -> Checked {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    let at = child(path, key);
                    self.check_key(key, value, &at)?;
                    if key == "nested" && value.is_object() {
                        self.compound("nested sort", value, &at, &["filter"])?;
                    } else if key == "nested_filter" {
                        // The deprecated spelling of `nested.filter`.
                        self.query(value, &at)?;
                    } else {
                        self.sort(value, &at)?;
                    }
                }
                Ok(())
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.sort(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A query, or an array of queries where the DSL allows one.
    fn queries(&self, v: &Value, path: &str) -> Checked {
        match v {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.query(item, &format!("{path}[{i}]"))?;
                }
                Ok(())
            }
            _ => self.query(v, path),
        }
    }

    fn query(&self, v: &Value, path: &str) -> Checked {
        let Some(map) = v.as_object() else {
            return Err(bad(path, "a query object"));
        };
        for (kind, body) in map {
            let at = child(path, kind);
            self.check_key(kind, body, &at)?;
            if let Some((_, slots)) = COMPOUND_QUERIES.iter().find(|(k, _)| k == kind) {
                self.compound(kind, body, &at, slots)?;
            } else if kind == "terms" {
                // The only object a terms query takes for a field is a lookup.
                if let Some((f, _)) = body
                    .as_object()
                    .and_then(|o| o.iter().find(|(_, f)| f.is_object()))
                {
                    return Err(refuse("`terms` lookup", &child(&at, f), BY_ID));
                }
                // Found by review: `{"terms":{"_index":["t*"]}}` (terms on
                // `_index` take wildcards) was never checked as a leaf.
                self.leaf_on_physical(kind, body, &at)?;
                self.generic(body, &at)?;
            } else if let (true, Some(fields)) =
                (kind == "knn" || kind == "neural", body.as_object())
            {
                // `{field: {..., "filter": query}}`
                for (field, params) in fields {
                    self.compound(kind, params, &child(&at, field), &["filter"])?;
                }
                // Found by review: an approximate search picks its top k
                // among every tenant's vectors before the partition filter
                // outside it applies, so fewer than k hits tell that other
                // tenants' vectors lie nearer.
                if self.shared {
                    return Err(refuse(
                        format!("`{kind}` query"),
                        &at,
                        "in a shared placement its nearest neighbours are chosen among every tenant's vectors before the partition filter applies, which tells of other tenants' documents; use an index or cluster placement for vector search",
                    ));
                }
            } else if listed(LEAF_QUERIES, kind) {
                self.leaf_on_physical(kind, body, &at)?;
                self.generic(body, &at)?;
            } else {
                return Err(refuse(format!("unknown query `{kind}`"), &at, UNKNOWN));
            }
        }
        Ok(())
    }

    /// A query body whose `slots` keys hold queries; `function_score`'s
    /// `functions` hold a `filter` query each.
    fn compound(&self, kind: &str, body: &Value, path: &str, slots: &[&str]) -> Checked {
        let Some(map) = body.as_object() else {
            return self.generic(body, path);
        };
        for (key, value) in map {
            let at = child(path, key);
            if let ("function_score", "functions", Value::Array(functions)) =
                (kind, key.as_str(), value)
            {
                for (i, function) in functions.iter().enumerate() {
                    self.compound("function", function, &format!("{at}[{i}]"), &["filter"])?;
                }
            } else if slots.contains(&key.as_str()) {
                self.queries(value, &at)?;
            } else if kind == "nested sort" && key == "nested" && value.is_object() {
                self.compound(kind, value, &at, slots)?;
            } else {
                self.check_key(key, value, &at)?;
                self.generic(value, &at)?;
            }
        }
        Ok(())
    }

    fn aggs(&self, v: &Value, path: &str) -> Checked {
        let Some(aggs) = v.as_object() else {
            return Err(bad(path, "an object of named aggregations"));
        };
        for (name, agg) in aggs {
            let at = child(path, name);
            let Some(agg) = agg.as_object() else {
                return Err(bad(&at, "an aggregation object"));
            };
            for (key, body) in agg {
                let key_at = child(&at, key);
                match key.as_str() {
                    "aggs" | "aggregations" => self.aggs(body, &key_at)?,
                    // Returned verbatim, never evaluated; walked all the same.
                    "meta" => self.generic(body, &key_at)?,
                    kind => self.agg(kind, body, &key_at)?,
                }
            }
        }
        Ok(())
    }

    fn agg(&self, kind: &str, body: &Value, path: &str) -> Checked {
        self.check_key(kind, body, path)?;
        if let Some(field) = body.get("field") {
            self.physical_fields(&Value::Array(vec![field.clone()]), path)?;
        }
        if !self.shared {
            return match kind {
                "filter" => self.query(body, path),
                "filters" | "adjacency_matrix" => self.filters(body, path),
                k if listed(PLAIN_AGGS, k)
                    || listed(
                        "global significant_terms significant_text children parent",
                        k,
                    ) =>
                {
                    self.generic(body, path)
                }
                other => Err(refuse(
                    format!("unknown aggregation `{other}`"),
                    path,
                    UNKNOWN,
                )),
            };
        }
        match kind {
            "global" => Err(refuse(
                "`global` aggregation",
                path,
                "it would aggregate over every tenant's documents",
            )),
            "significant_terms" | "significant_text" => Err(refuse(
                format!("`{kind}` aggregation"),
                path,
                "its background frequencies (`bg_count`) are computed over every tenant's documents",
            )),
            "children" | "parent" => Err(refuse(format!("`{kind}` aggregation"), path, JOIN)),
            "filter" => self.query(body, path),
            "filters" | "adjacency_matrix" => self.filters(body, path),
            "terms" | "multi_terms" if !min_doc_count_positive(body) => Err(refuse(
                format!("`{kind}` aggregation with `min_doc_count` 0"),
                &child(path, "min_doc_count"),
                "it would list terms that only other tenants' documents contain",
            )),
            k if listed(PLAIN_AGGS, k) => self.generic(body, path),
            other => Err(refuse(format!("unknown aggregation `{other}`"), path, UNKNOWN)),
        }
    }

    /// `filters` and `adjacency_matrix` bodies: `filters` holds named queries
    /// (or, for `filters`, an array of queries).
    fn filters(&self, body: &Value, path: &str) -> Checked {
        let Some(map) = body.as_object() else {
            return Err(bad(path, "an object"));
        };
        for (key, value) in map {
            let at = child(path, key);
            match (key.as_str(), value) {
                ("filters", Value::Object(named)) => {
                    for (name, query) in named {
                        self.query(query, &child(&at, name))?;
                    }
                }
                ("filters", _) => self.queries(value, &at)?,
                _ => {
                    self.check_key(key, value, &at)?;
                    self.generic(value, &at)?;
                }
            }
        }
        Ok(())
    }

    fn rescore(&self, v: &Value, path: &str) -> Checked {
        let items = match v {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, r)| (format!("{path}[{i}]"), r))
                .collect(),
            other => vec![(path.to_string(), other)],
        };
        for (at, rescorer) in items {
            let Some(map) = rescorer.as_object() else {
                return Err(bad(&at, "a rescorer object"));
            };
            for (key, value) in map {
                let key_at = child(&at, key);
                match key.as_str() {
                    "window_size" => self.generic(value, &key_at)?,
                    "query" => self.compound("rescore", value, &key_at, &["rescore_query"])?,
                    other => {
                        return Err(refuse(
                            format!("unknown rescorer `{other}`"),
                            &key_at,
                            UNKNOWN,
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    fn highlight(&self, v: &Value, path: &str) -> Checked {
        let Some(map) = v.as_object() else {
            return self.generic(v, path);
        };
        for (key, value) in map {
            let at = child(path, key);
            match (key.as_str(), value) {
                ("fields", Value::Object(fields)) => {
                    // Highlighting `_routing` answers its physical value.
                    self.physical_fields_as(value, &at, Patterns::AllButMatchAll)?;
                    for (field, options) in fields {
                        self.compound(
                            "highlight",
                            options,
                            &child(&at, field),
                            &["highlight_query"],
                        )?;
                    }
                }
                ("fields", Value::Array(fields)) => {
                    for (i, one) in fields.iter().enumerate() {
                        let one_at = format!("{at}[{i}]");
                        let Some(one) = one.as_object() else {
                            self.generic(one, &one_at)?;
                            continue;
                        };
                        self.physical_fields_as(
                            &Value::Object(one.clone()),
                            &one_at,
                            Patterns::AllButMatchAll,
                        )?;
                        for (field, options) in one {
                            let field_at = child(&one_at, field);
                            self.compound("highlight", options, &field_at, &["highlight_query"])?;
                        }
                    }
                }
                ("highlight_query", _) => self.query(value, &at)?,
                _ => {
                    self.check_key(key, value, &at)?;
                    self.generic(value, &at)?;
                }
            }
        }
        Ok(())
    }
}

/// Whether `min_doc_count` is absent or a number (or numeric string) of at
/// least 1. Anything else counts as 0, the conservative reading.
fn min_doc_count_positive(body: &Value) -> bool {
    match body.get("min_doc_count") {
        None => true,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|n| n >= 1.0),
        Some(Value::String(s)) => s.trim().parse::<f64>().is_ok_and(|n| n >= 1.0),
        Some(_) => false,
    }
}

/// Which field patterns OpenSearch expands to metadata fields where a
/// field list is (see [`Walker::physical_fields`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patterns {
    /// Every pattern (`docvalue_fields`, and where unsure).
    All,
    /// Every pattern but the match-all `*` (a query's fields).
    AllButMatchAll,
    /// None (the `fields` option, `stored_fields`, `_source` filtering).
    None,
}

/// Whether a field name (or pattern), where OpenSearch expands `patterns`
/// so, can name a metadata field that holds physical values in a shared
/// placement: one of them, boosted (`_index^2`, as a query's fields read)
/// or not, a `_`-pattern anywhere, or a `*`-pattern that can match one
/// where patterns reach metadata fields.
pub fn names_metadata(field: &str, patterns: Patterns) -> bool {
    let name = field.split('^').next().unwrap_or(field);
    matches!(name, "_id" | "_routing" | "_index" | "_seq_no")
        || (name.contains('*')
            && (name.starts_with('_')
                || match patterns {
                    Patterns::All => name.starts_with('*'),
                    Patterns::AllButMatchAll => name.starts_with('*') && name != "*",
                    Patterns::None => false,
                }))
}

/// What the query parser may read as field names in a name taken up to
/// its `:`: Lucene ends a term at `^` and `~` (a boost or a slop, whose
/// number it reads on its own), `!` (not), `/` (a regex) and `&`/`|`, so
/// `hello^1_index:x` names `_index` (found by review). Each piece, and
/// each without its leading boost digits, is a name.
fn name_pieces(name: &str) -> Vec<&str> {
    name.split(['^', '~', '!', '/', '&', '|'])
        .flat_map(|p| {
            [
                p,
                p.trim_start_matches(|c: char| c.is_ascii_digit() || c == '.'),
            ]
        })
        .filter(|p| !p.is_empty())
        .collect()
}

/// The field names Lucene query syntax names in `text`, as its parser
/// reads them: each `name:` (escapes undone: `\x` is `x`, `\uXXXX` the
/// character; an escaped `\:` is part of a name, not its end) and the
/// field of each `_exists_:name`. Quoted phrases name no fields.
fn text_fields(text: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut current = String::new();
    let mut exists_next = false;
    let mut chars = text.chars().peekable();
    let end_token = |current: &mut String, exists_next: &mut bool, fields: &mut Vec<String>| {
        if *exists_next && !current.is_empty() {
            fields.push(std::mem::take(current));
            *exists_next = false;
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some('u') => {
                    let hex: String = chars.clone().take(4).collect();
                    match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                        Some(decoded) if hex.len() == 4 => {
                            current.push(decoded);
                            for _ in 0..4 {
                                chars.next();
                            }
                        }
                        _ => current.push('u'),
                    }
                }
                Some(next) => current.push(next),
                None => {}
            },
            ':' => {
                if current == "_exists_" {
                    exists_next = true;
                    current.clear();
                } else if !current.is_empty() {
                    fields.push(std::mem::take(&mut current));
                }
            }
            '"' => {
                end_token(&mut current, &mut exists_next, &mut fields);
                // A phrase, to its closing quote (escapes skipped).
                while let Some(p) = chars.next() {
                    match p {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        _ => {}
                    }
                }
            }
            '+' | '-' | '!' if current.is_empty() => {}
            c if c.is_whitespace() || "()[]{}".contains(c) => {
                end_token(&mut current, &mut exists_next, &mut fields);
            }
            c => current.push(c),
        }
    }
    end_token(&mut current, &mut exists_next, &mut fields);
    fields
}

/// Whether `path` lies inside an `intervals` query (its rules, and the
/// `intervals` lists of `all_of` and `any_of`).
fn in_intervals(path: &str) -> bool {
    // An aggregation or a `filters` bucket may be named `intervals` too
    // (found by review): there the name is not a query's.
    let segments: Vec<&str> = path.split('.').collect();
    segments.iter().enumerate().any(|(i, s)| {
        (*s == "intervals" || s.starts_with("intervals["))
            && !matches!(
                i.checked_sub(1).map(|p| segments[p]),
                Some("aggs" | "aggregations" | "filters")
            )
    })
}

#[cfg(test)]
mod text_tests {
    use super::{names_metadata, text_fields, Patterns};

    #[test]
    fn field_names_are_read_as_the_parser_reads_them() {
        assert_eq!(text_fields("user_id:5 AND title:x"), ["user_id", "title"]);
        assert_eq!(text_fields("_in\\dex:o*"), ["_index"]);
        assert_eq!(text_fields("\\u005findex:o*"), ["_index"]);
        assert_eq!(text_fields("+_index:t -a:b"), ["_index", "a"]);
        assert_eq!(text_fields("_exists_:_routing"), ["_routing"]);
        assert_eq!(text_fields("(_id:1 OR x:2)"), ["_id", "x"]);
        assert_eq!(text_fields("path:C\\:\\\\temp"), ["path"]);
        assert_eq!(text_fields("\"_index:t\" word"), Vec::<String>::new());
        assert_eq!(text_fields("_index^2:t"), ["_index^2"]);
        for f in ["_index", "_id", "_index^2", "_i*", "*ndex", "_routing"] {
            assert!(names_metadata(f, Patterns::AllButMatchAll), "{f}");
        }
        // Names the parser splits at its operators (the second review).
        for text in [
            "hello^1_index:o*",
            "a!_index:o*",
            "/a/_index:o*",
            "a~1^2_index:o*",
            "a^2_routing:A",
        ] {
            assert!(
                text_fields(text)
                    .iter()
                    .flat_map(|f| super::name_pieces(f))
                    .any(|f| names_metadata(f, Patterns::AllButMatchAll)),
                "{text}"
            );
        }
        for f in ["user_id", "order_id", "*", "title", "a*", "t*^2"] {
            assert!(!names_metadata(f, Patterns::AllButMatchAll), "{f}");
        }
    }
}
