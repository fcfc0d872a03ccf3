//! Classify a request path into an [`EndpointKind`] and its index targets.
//!
//! Index names are percent-decoded before anything looks at them, because
//! OpenSearch decodes them too: `legacy-a%2Corders` names two indices.

use std::borrow::Cow;

use osproxy_core::EndpointKind;
use percent_encoding::percent_decode_str;

/// The result of classifying one request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified<'a> {
    /// What the request does.
    pub kind: EndpointKind,
    /// The decoded index expression of the path (`a,b*`), when the path
    /// starts with one rather than with an `_endpoint`.
    pub index: Option<Cow<'a, str>>,
    /// Whether the request body may name indices of its own (`_bulk`
    /// action lines, `_mget` docs, `_msearch` headers, `_mtermvectors`), so
    /// that the path alone does not bound what it touches.
    pub body_names_indices: bool,
}

impl Classified<'_> {
    /// The comma-separated index names of the path, decoded.
    pub fn index_names(&self) -> impl Iterator<Item = &str> {
        self.index.as_deref().into_iter().flat_map(|s| s.split(','))
    }
}

/// Why a path could not be classified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClassifyError {
    /// A segment does not decode to UTF-8.
    NotUtf8,
}

impl std::error::Error for ClassifyError {}

impl std::fmt::Display for ClassifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClassifyError::NotUtf8 => f.write_str("the request path does not decode to UTF-8"),
        }
    }
}

/// Classifies a path (without the query string).
///
/// ```
/// use osproxy_core::EndpointKind;
/// use osproxy_rewrite::classify;
/// let c = classify("/logs-2024,legacy-a/_search").unwrap();
/// assert_eq!(c.kind, EndpointKind::Search);
/// assert_eq!(c.index_names().collect::<Vec<_>>(), ["logs-2024", "legacy-a"]);
/// ```
pub fn classify(path: &str) -> Result<Classified<'_>, ClassifyError> {
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    let first = match segments.next() {
        None => {
            return Ok(Classified {
                kind: EndpointKind::Root,
                index: None,
                body_names_indices: false,
            })
        }
        Some(s) => decode(s)?,
    };
    if first.starts_with('_') {
        let second = segments.next();
        let (kind, body_names_indices) = classify_endpoint(&first, second);
        return Ok(Classified {
            kind,
            index: None,
            body_names_indices,
        });
    }
    let (kind, body_names_indices) = match segments.next() {
        None => (EndpointKind::IndexAdmin, false),
        Some(endpoint) => {
            let endpoint = decode(endpoint)?;
            classify_endpoint(&endpoint, segments.next())
        }
    };
    let kind = match kind {
        // `/{index}/{type-less id}` forms do not exist in 2.x; anything not
        // starting with `_` after an index is an unknown endpoint.
        EndpointKind::Root => EndpointKind::Other,
        k => k,
    };
    Ok(Classified {
        kind,
        index: Some(first),
        body_names_indices,
    })
}

/// Whether a path is in the plain form OpenSearch routes by: no empty
/// segments (`//`), and no `.` or `..` segments, encoded or not. Paths that
/// are not could be read differently by another hop than by osproxy, so a
/// route that confines requests by path refuses them.
///
/// ```
/// use osproxy_rewrite::classify::is_canonical;
/// assert!(is_canonical("/legacy-a/_doc/1"));
/// assert!(is_canonical("/"));
/// assert!(!is_canonical("/legacy-a/../orders/_search"));
/// assert!(!is_canonical("/legacy-a/%2E%2e/orders"));
/// assert!(!is_canonical("//orders/_search"));
/// ```
pub fn is_canonical(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return path.is_empty();
    };
    if rest.is_empty() {
        return true;
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    rest.split('/').all(|seg| {
        let decoded = percent_decode_str(seg).decode_utf8_lossy();
        !seg.is_empty() && decoded != "." && decoded != ".."
    })
}

/// Classifies `_endpoint[/next]`, returning the kind and whether the body may
/// name indices.
fn classify_endpoint(endpoint: &str, next: Option<&str>) -> (EndpointKind, bool) {
    use EndpointKind as K;
    match endpoint {
        "_doc" | "_create" | "_source" => (K::Document, false),
        "_update" => (K::Update, false),
        "_bulk" => (K::Bulk, true),
        "_search" => match next {
            Some("scroll") => (K::Scroll, false),
            Some("point_in_time") => (K::Pit, false),
            _ => (K::Search, false),
        },
        "_count" => (K::Count, false),
        "_msearch" => (K::Msearch, true),
        "_mget" => (K::Mget, true),
        "_mtermvectors" => (K::Other, true),
        "_delete_by_query" | "_update_by_query" => (K::ByQuery, false),
        "_cat" => (K::Cat, false),
        "_cluster" | "_nodes" | "_tasks" => (K::ClusterAdmin, false),
        "_mapping"
        | "_mappings"
        | "_settings"
        | "_refresh"
        | "_flush"
        | "_alias"
        | "_aliases"
        | "_open"
        | "_close"
        | "_stats"
        | "_forcemerge"
        | "_template"
        | "_index_template"
        | "_component_template"
        | "_resolve"
        | "_analyze" => (K::IndexAdmin, false),
        _ => (K::Other, false),
    }
}

fn decode(segment: &str) -> Result<Cow<'_, str>, ClassifyError> {
    percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| ClassifyError::NotUtf8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osproxy_core::EndpointKind as K;

    fn kind(path: &str) -> K {
        classify(path).map(|c| c.kind).unwrap_or(K::Other)
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("/"), K::Root);
        assert_eq!(kind(""), K::Root);
        assert_eq!(kind("/idx"), K::IndexAdmin);
        assert_eq!(kind("/idx/_doc/1"), K::Document);
        assert_eq!(kind("/idx/_create/1"), K::Document);
        assert_eq!(kind("/idx/_source/1"), K::Document);
        assert_eq!(kind("/idx/_update/1"), K::Update);
        assert_eq!(kind("/_bulk"), K::Bulk);
        assert_eq!(kind("/idx/_bulk"), K::Bulk);
        assert_eq!(kind("/idx/_search"), K::Search);
        assert_eq!(kind("/idx/_search/template"), K::Search);
        assert_eq!(kind("/_search/scroll"), K::Scroll);
        assert_eq!(kind("/_search/point_in_time/_all"), K::Pit);
        assert_eq!(kind("/idx/_search/point_in_time"), K::Pit);
        assert_eq!(kind("/idx/_count"), K::Count);
        assert_eq!(kind("/_msearch"), K::Msearch);
        assert_eq!(kind("/idx/_mget"), K::Mget);
        assert_eq!(kind("/idx/_delete_by_query"), K::ByQuery);
        assert_eq!(kind("/_cat/indices"), K::Cat);
        assert_eq!(kind("/_cluster/health"), K::ClusterAdmin);
        assert_eq!(kind("/_nodes/stats"), K::ClusterAdmin);
        assert_eq!(kind("/idx/_mapping"), K::IndexAdmin);
        assert_eq!(kind("/idx/whatever"), K::Other);
        assert_eq!(kind("/_reindex"), K::Other);
    }

    #[test]
    fn index_is_decoded_and_split() {
        let c = classify("/legacy-a%2Corders/_search").unwrap_or_else(|_| unreachable_classified());
        assert_eq!(c.index_names().collect::<Vec<_>>(), ["legacy-a", "orders"]);
    }

    #[test]
    fn endpoint_paths_have_no_index() {
        let c = classify("/_cat/indices/legacy-*").unwrap_or_else(|_| unreachable_classified());
        assert!(c.index.is_none());
    }

    #[test]
    fn body_naming_endpoints_are_flagged() {
        for p in [
            "/a/_bulk",
            "/a/_mget",
            "/a/_msearch",
            "/a/_mtermvectors",
            "/_bulk",
        ] {
            assert!(classify(p).is_ok_and(|c| c.body_names_indices), "{p}");
        }
        assert!(classify("/a/_search").is_ok_and(|c| !c.body_names_indices));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        assert_eq!(classify("/%ff%fe/_search"), Err(ClassifyError::NotUtf8));
    }

    fn unreachable_classified() -> Classified<'static> {
        Classified {
            kind: K::Other,
            index: None,
            body_names_indices: false,
        }
    }

    #[test]
    fn canonical_paths() {
        assert!(is_canonical("/idx/_search/"));
        assert!(is_canonical(""));
        assert!(!is_canonical("/idx//_search"));
        assert!(!is_canonical("/./idx/_search"));
        assert!(!is_canonical("/idx/%2e"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(path in "\\PC{0,64}") {
            let _ = classify(&path);
        }
    }
}
