//! Confinement of `_search` and `_count` bodies for `shared` placements: the
//! client's query is nested under a partition filter it cannot escape, and
//! constructs that could reach other tenants' documents are refused.

use std::fmt;

use serde_json::{Map, Value};

/// How to confine a search body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SearchPolicy<'a> {
    /// The injected partition field.
    pub field: &'a str,
    /// The caller's partition.
    pub partition: &'a str,
    /// Whether scripts (and runtime or derived fields) are let through.
    pub allow_scripts: bool,
    /// The partition's id template: document ids a query names (`ids`, a
    /// `term`, `terms` or `match` on `_id`) are translated to physical ids.
    /// `None`: ids are passed as given.
    pub ids: Option<&'a crate::IdTemplate>,
}

/// Checks a search body of a dedicated placement (`index` or `cluster`),
/// where the physical index holds one partition only: nothing is added to
/// the query, but every construct that names another index or a document
/// of one (terms lookup, like-documents, percolate by id, indexed shapes,
/// `indices_boost`, point-in-time ids) is refused, and so is what osproxy
/// does not know. The body comes back re-serialised: what is forwarded is
/// what was checked.
pub fn check_dedicated(body: &[u8], allow_scripts: bool) -> Result<Vec<u8>, Refusal> {
    let top = parse_top(body)?;
    let walker = Walker {
        allow_scripts,
        shared: false,
    };
    for (key, value) in &top {
        walker.top_level(key, value).map_err(|r| match r {
            Refusal::Construct {
                construct,
                path,
                reason,
                ..
            } => Refusal::Construct {
                construct,
                path,
                reason,
                shared: false,
            },
            other => other,
        })?;
    }
    if top.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serialise(&Value::Object(top), body.len()))
}

/// Serialises a rewritten body into a buffer sized from the body it came
/// from (re-serialised JSON is at most as long as what was read, plus what
/// the rewrite added), not one grown by doubling: a large body's copy
/// holds about its own size, as the process-wide budget counts it, not up
/// to twice that.
fn serialise(value: &Value, read: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(read.saturating_add(512));
    // Writing a `Value` into a `Vec` cannot fail: its keys are strings and
    // the writer never errors.
    if serde_json::to_writer(&mut out, value).is_err() {
        out.clear();
    }
    out
}

fn parse_top(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    if body
        .iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
    {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("the body", "a JSON object")),
        Err(e) => Err(Refusal::BadBody {
            reason: format!("it is not valid JSON: {e}"),
        }),
    }
}

/// Why a search body was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The body, or a part of it, does not have the shape of a search body.
    BadBody {
        /// What is wrong.
        reason: String,
    },
    /// A construct that could reach documents outside the partition, or that
    /// osproxy cannot inspect.
    Construct {
        /// The construct, as a client would name it (`` `global` aggregation``).
        construct: String,
        /// Its JSON path in the body (`aggs.by_day.aggs.all.global`).
        path: String,
        /// Why it is refused.
        reason: String,
        /// Whether it was refused in a shared placement's check.
        shared: bool,
    },
}

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadBody { reason } => write!(f, "the search body is refused: {reason}"),
            Refusal::Construct {
                construct,
                path,
                reason,
                shared,
            } => write!(
                f,
                "{construct} at `{path}` is refused {}: {reason}",
                if *shared {
                    "in a shared placement"
                } else {
                    "for logical indices"
                }
            ),
        }
    }
}

fn refuse(construct: impl Into<String>, path: &str, reason: &str) -> Refusal {
    Refusal::Construct {
        construct: construct.into(),
        path: path.to_string(),
        reason: reason.to_string(),
        shared: true,
    }
}

fn bad(path: &str, what: &str) -> Refusal {
    Refusal::BadBody {
        reason: format!("`{path}` must be {what}"),
    }
}

/// Confines a `_search` or `_count` body to `policy.partition`.
///
/// An empty body means `{}`. Every part of the body is inspected; on success
/// the body comes back with its `query` replaced by
/// `{"bool":{"filter":[{"term":{field:partition}}],"must":[query]}}` (no
/// `must` without a query) and every other top-level key kept.
///
/// ```
/// use osproxy_rewrite::search::{confine_search, SearchPolicy};
/// let policy = SearchPolicy { field: "_tenant", partition: "acme", allow_scripts: false, ids: None };
/// let out = confine_search(br#"{"query":{"match":{"title":"x"}},"size":5}"#, &policy).unwrap();
/// assert_eq!(
///     out,
///     br#"{"query":{"bool":{"filter":[{"term":{"_tenant":"acme"}}],"must":[{"match":{"title":"x"}}]}},"size":5}"#
/// );
/// let refused = confine_search(br#"{"aggs":{"all":{"global":{}}}}"#, &policy).unwrap_err();
/// assert!(refused.to_string().starts_with("`global` aggregation at `aggs.all.global` is refused"));
/// ```
pub fn confine_search(body: &[u8], policy: &SearchPolicy<'_>) -> Result<Vec<u8>, Refusal> {
    let mut top = parse_top(body)?;
    let walker = Walker {
        allow_scripts: policy.allow_scripts,
        shared: true,
    };
    for (key, value) in &top {
        walker.top_level(key, value)?;
    }
    let mut term = Map::new();
    term.insert(policy.field.to_string(), Value::from(policy.partition));
    let mut filter = Map::new();
    filter.insert("term".to_string(), Value::Object(term));
    let mut confined = Map::new();
    confined.insert(
        "filter".to_string(),
        Value::Array(vec![Value::Object(filter)]),
    );
    if let Some(mut query) = top.remove("query") {
        if let Some(template) = policy.ids {
            physical_ids(&mut query, &|id| template.physical(policy.partition, id));
        }
        confined.insert("must".to_string(), Value::Array(vec![query]));
    }
    if let (Some(template), Some(post)) = (policy.ids, top.get_mut("post_filter")) {
        physical_ids(post, &|id| template.physical(policy.partition, id));
    }
    let mut wrapper = Map::new();
    wrapper.insert("bool".to_string(), Value::Object(confined));
    top.insert("query".to_string(), Value::Object(wrapper));
    Ok(serialise(&Value::Object(top), body.len()))
}

/// Whether `name` is one of the whitespace-separated names of `list`.
fn listed(list: &str, name: &str) -> bool {
    list.split_ascii_whitespace().any(|n| n == name)
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

mod ids;
mod references;
mod vocabulary;
mod walker;

use ids::physical_ids;
pub use references::{first_flat_name, is_pipeline_setting, named_indices};
#[cfg(test)]
use walker::is_script_key;
use walker::Walker;
pub use walker::{names_metadata, Patterns};

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_placements;
#[cfg(test)]
mod tests_properties;
