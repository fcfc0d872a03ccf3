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

fn collect_names(v: &Value, path: &str, names: &mut Vec<String>) -> Result<(), Refusal> {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                let at = child(path, key);
                match (key.as_str(), value) {
                    // `"index": "false"` is also a mapping parameter.
                    ("index", Value::String(name)) if name == "true" || name == "false" => {}
                    ("index" | "_index" | "alias", Value::String(name)) => names.push(name.clone()),
                    // Found by review: OpenSearch's alias endpoint reads
                    // every scalar under `index` or `alias` as a name, in a
                    // list too (`{"index":["orders-shared"]}` pointed an
                    // alias inside the prefixes at the shared index), and a
                    // number as its text. Each is a name here; a boolean
                    // under `index` is the mapping parameter.
                    ("index" | "_index" | "alias" | "indices", Value::Array(items)) => {
                        names.extend(items.iter().filter_map(scalar_name));
                    }
                    ("index" | "_index" | "alias", Value::Number(n)) => names.push(n.to_string()),
                    ("_index" | "alias", Value::Bool(b)) => names.push(b.to_string()),
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
                    ("search_pipeline" | "default_pipeline" | "final_pipeline"
                    | "index.default_pipeline" | "index.final_pipeline", _) => {
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

/// A list item OpenSearch would read as a name: a string, or a number's or
/// boolean's text (objects and lists are walked for their own members).
fn scalar_name(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}
