//! The indices a passthrough body names by reference.

use serde_json::Value;

use super::{child, parse_top, refuse, Refusal};

/// Every index a passthrough body names by reference: the string values of
/// `index` and `_index` members anywhere in it (terms lookups, like-documents,
/// percolated and indexed-shape documents, ...), `indices` lists, and the
/// names `indices_boost` boosts. Constructs whose references cannot be
/// seen (an encoded `wrapper` query, a `pit` id, a search template's
/// `source` or stored `id`) are refused. The caller checks the names.
///
/// ```
/// use osproxy_rewrite::search::named_indices;
/// let names = named_indices(br#"{"query":{"terms":{"f":{"index":"orders-shared","id":"1","path":"f"}}}}"#).unwrap();
/// assert_eq!(names, ["orders-shared"]);
/// ```
pub fn named_indices(body: &[u8]) -> Result<Vec<String>, Refusal> {
    let top = parse_top(body)?;
    let mut names = Vec::new();
    collect_names(&Value::Object(top), "", &mut names)?;
    Ok(names)
}

/// The first name OpenSearch's alias endpoint would read from `body` for
/// which `keep` is false, or `None`. That endpoint reads the body as a flat
/// run of tokens: every plain value after the key `index` or `alias` (the
/// last key seen, at any depth, after objects close too) replaces the
/// path's names. Found by review: `{"index":[["orders-shared"]]}` and
/// `{"x":[{"index":"legacy-a"},"orders-shared"]}` pointed an alias at the
/// shared index, since a walk of the tree saw no name there. A value right
/// after `index` that is a boolean, or the string `true` or `false`, is the
/// mapping parameter. Names are checked as they are found, so nothing is
/// collected (a body of a million names holds no list of them). The body
/// has passed the strict check.
pub fn first_flat_name(body: &[u8], mut keep: impl FnMut(&str) -> bool) -> Option<String> {
    let mut last: Option<String> = None;
    let mut after_colon = false;
    let mut i = 0;
    let mut check = |text: String, last: &Option<String>, after_colon: bool| {
        let mapping = after_colon && (text == "true" || text == "false");
        let named = is_name_key(last.as_deref()) && !(mapping && last.as_deref() == Some("index"));
        (named && !keep(&text)).then_some(text)
    };
    while i < body.len() {
        match body[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < body.len() && body[i] != b'"' {
                    i += if body[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                let raw = body.get(start..i.min(body.len())).unwrap_or_default();
                let text = serde_json::from_slice::<String>(raw).unwrap_or_default();
                let next = body
                    .get(i.min(body.len())..)
                    .unwrap_or_default()
                    .iter()
                    .find(|b| !b.is_ascii_whitespace());
                if next == Some(&b':') {
                    last = Some(text);
                    after_colon = false;
                    continue;
                }
                if let Some(outside) = check(text, &last, after_colon) {
                    return Some(outside);
                }
                after_colon = false;
            }
            b':' => {
                after_colon = true;
                i += 1;
            }
            b'{' | b'[' | b'}' | b']' | b',' => {
                after_colon = false;
                i += 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => {
                // A number, `true`, `false` or `null`.
                let start = i;
                while i < body.len()
                    && !matches!(body[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                {
                    i += 1;
                }
                let text = String::from_utf8_lossy(&body[start..i]).into_owned();
                if let Some(outside) = check(text, &last, after_colon) {
                    return Some(outside);
                }
                after_colon = false;
            }
        }
    }
    None
}

/// Keys whose values OpenSearch reads as index or alias names.
fn is_name_key(key: Option<&str>) -> bool {
    matches!(key, Some("index" | "alias" | "_index" | "indices"))
}

fn collect_names(v: &Value, path: &str, names: &mut Vec<String>) -> Result<(), Refusal> {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                let at = child(path, key);
                match (key.as_str(), value) {
                    // `"index": "false"` is also a mapping parameter.
                    ("index", Value::String(name)) if name == "true" || name == "false" => {}
                    ("index" | "_index" | "alias", Value::String(name)) => names.push(name.clone()),
                    // (Lists under `index` or `alias`, and numbers, are
                    // read as names too: see `first_flat_name`.)
                    ("indices", Value::Array(items)) => {
                        names.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
                    }
                    ("aliases", Value::Object(o)) => names.extend(o.keys().cloned()),
                    ("aliases", Value::Array(items)) => {
                        names.extend(items.iter().filter_map(Value::as_str).map(str::to_string));
                    }
                    // Without `index`, an indexed shape is read from `shapes`.
                    ("indexed_shape", Value::Object(o)) if !o.contains_key("index") => {
                        names.push("shapes".to_string());
                    }
                    // A percolator field runs its stored queries (terms
                    // lookups included) when documents are indexed.
                    ("type", Value::String(t)) if t == "percolator" => {
                        return Err(refuse(
                            "a `percolator` field",
                            &at,
                            "its stored queries can fetch documents of other indices when documents are written",
                        ))
                    }
                    // Pipelines run after osproxy: a search pipeline can
                    // rewrite the query from a template, an ingest pipeline
                    // (default or final) can set a document's `_index`.
                    (k, _) if is_pipeline_setting(k) => {
                        return Err(refuse(
                            format!("`{key}`"),
                            &at,
                            "a pipeline runs after osproxy and can reach indices it cannot see",
                        ))
                    }
                    ("templates" | "template_id" | "search_template" | "collate", _) => {
                        return Err(refuse(
                            format!("`{key}`"),
                            &at,
                            "a template renders a query osproxy cannot see, so it cannot tell which indices it names",
                        ))
                    }
                    ("indices_boost", Value::Array(items)) => {
                        for item in items {
                            if let Some(o) = item.as_object() {
                                names.extend(o.keys().cloned());
                            }
                        }
                    }
                    ("indices_boost", Value::Object(o)) => names.extend(o.keys().cloned()),
                    ("wrapper", Value::Object(_)) => {
                        return Err(refuse(
                            "`wrapper` query",
                            &at,
                            "the wrapped query is encoded, so osproxy cannot see which indices it names",
                        ))
                    }
                    ("pit", Value::Object(_)) => {
                        return Err(refuse("`pit`", &at, "a point-in-time id can name any index"))
                    }
                    _ => {}
                }
                collect_names(value, &at, names)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_names(item, &format!("{path}[{i}]"), names)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a body key names a pipeline that runs after osproxy: the last
/// dotted part of the key is `search_pipeline`, `default_pipeline` or
/// `final_pipeline` (`index.search.default_pipeline`, `default_pipeline`
/// nested under `index`, ...).
pub fn is_pipeline_setting(key: &str) -> bool {
    matches!(
        key.rsplit('.').next(),
        Some("search_pipeline" | "default_pipeline" | "final_pipeline")
    )
}
