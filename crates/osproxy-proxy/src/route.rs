//! The passthrough router: which cluster serves a request that addresses
//! no logical index (verbatim forwarding to one cluster, optionally only
//! for index-name prefixes), what of its body must be checked, or why it is
//! refused. Logical indices are routed by the tenancy module.

use http::Method;
use osproxy_config::Config;
use osproxy_core::{EndpointKind, ErrorCode, ProxyError};
use osproxy_rewrite::classify::is_canonical;
use osproxy_rewrite::prefixes::within;
use osproxy_rewrite::Classified;

/// The routing table built from the config.
#[derive(Debug, Clone)]
pub struct Router {
    passthrough: Option<Passthrough>,
    /// Cluster ids by position, for operators naming one.
    clusters: Vec<String>,
}

/// The header an operator names the cluster of a cluster-wide request in.
pub const CLUSTER_HEADER: &str = "x-osproxy-cluster";

#[derive(Debug, Clone)]
struct Passthrough {
    cluster: usize,
    prefixes: Option<Vec<String>>,
}

impl Router {
    /// Builds the table; cluster ids are resolved to positions once.
    pub fn new(config: &Config) -> Self {
        let passthrough = config.passthrough.as_ref().and_then(|p| {
            let cluster = config.clusters.iter().position(|c| c.id == p.cluster)?;
            Some(Passthrough {
                cluster,
                prefixes: p.indices.clone(),
            })
        });
        let clusters = config.clusters.iter().map(|c| c.id.clone()).collect();
        Router {
            passthrough,
            clusters,
        }
    }

    /// The cluster an operator's cluster-wide request goes to: the one named
    /// in `x-osproxy-cluster`, or the only one.
    pub fn operator_cluster(&self, headers: &http::HeaderMap) -> Result<usize, ProxyError> {
        match headers
            .get(CLUSTER_HEADER)
            .map(|v| v.to_str().unwrap_or(""))
        {
            Some(id) => self.clusters.iter().position(|c| c == id).ok_or_else(|| {
                ProxyError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "{CLUSTER_HEADER} names no configured cluster; configured: {:?}",
                        self.clusters
                    ),
                )
            }),
            None if self.clusters.len() == 1 => Ok(0),
            None => Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!(
                    "several clusters are configured: name one in {CLUSTER_HEADER} ({:?})",
                    self.clusters
                ),
            )),
        }
    }

    /// On prefix passthrough: the query parameters that name an index
    /// (OpenSearch fills a route's `{index}`, `{name}`, `{new_index}` or
    /// `{target}` from the query string when the path has no such segment:
    /// found by review, `PUT /legacy-x/_alias?name=orders-globex` claimed a
    /// name outside the prefixes) each stay within the prefixes.
    pub fn query_names_within(
        &self,
        method: &Method,
        path: &str,
        query: &osproxy_rewrite::query::Query,
    ) -> Result<(), ProxyError> {
        let Some(prefixes) = self.passthrough.as_ref().and_then(|p| p.prefixes.as_ref()) else {
            return Ok(());
        };
        // Which parameters name an index depends on the endpoint: `name`
        // and `alias` on the alias ones (on `_settings`, `name` filters
        // setting names), `new_index` and `target` on the resize ones.
        let segments: Vec<&str> = path.split('/').collect();
        let on = |endpoints: &[&str]| segments.iter().any(|s| endpoints.contains(s));
        let aliasing = on(&["_alias", "_aliases"]);
        let resizing = on(&["_rollover", "_clone", "_split", "_shrink"]);
        for param in ["index", "name", "new_index", "target", "alias"] {
            let named = match param {
                "name" | "alias" => aliasing,
                "new_index" | "target" => resizing,
                _ => true,
            };
            let Some(value) = query.get(param).filter(|_| named) else {
                continue;
            };
            if let Some(name) = value.split(',').find(|n| !within(n, prefixes)) {
                let shown: String = name.chars().take(200).collect();
                return Err(unsupported(
                    method,
                    path,
                    &format!("its query parameter `{param}` names {shown:?}, which does not start with a passthrough prefix {prefixes:?} (OpenSearch reads it as the path's `{{{param}}}`)"),
                ));
            }
        }
        Ok(())
    }

    /// Whether passthrough forwards every request (no prefixes).
    pub fn forwards_everything(&self) -> bool {
        self.passthrough
            .as_ref()
            .is_some_and(|p| p.prefixes.is_none())
    }

    /// The cluster position that serves this request.
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        c: &Classified<'_>,
    ) -> Result<Passed, ProxyError> {
        let Some(p) = &self.passthrough else {
            return Err(unsupported(method, path, "it addresses no logical index of the catalogue, and no [passthrough] is configured"));
        };
        let Some(prefixes) = &p.prefixes else {
            return Ok(Passed {
                cluster: p.cluster,
                body: BodyCheck::None,
                prefixed: false,
            });
        };
        // The banner is harmless and some clients read it on connect.
        if c.kind == EndpointKind::Root && (method == Method::GET || method == Method::HEAD) {
            return Ok(Passed {
                cluster: p.cluster,
                body: BodyCheck::None,
                prefixed: true,
            });
        }
        if !is_canonical(path) {
            return Err(unsupported(
                method,
                path,
                "the path has empty, `.` or `..` segments, which osproxy does not confine by prefix; send the plain path",
            ));
        }
        if c.index.is_none() {
            return Err(unsupported(method, path, &format!("it names no index, and only indices starting with {prefixes:?} are passed through")));
        }
        if let Some(name) = c.index_names().find(|n| !within(n, prefixes)) {
            return Err(unsupported(
                method,
                path,
                &format!("index {name:?} does not start with a passthrough prefix {prefixes:?}"),
            ));
        }
        // Names later in the path create or point at indices too: an alias,
        // the target of a clone, split, shrink or rollover.
        if let Some(name) = named_targets(path).find(|n| !within(n, prefixes)) {
            return Err(unsupported(
                method,
                path,
                &format!("it names {name:?}, which does not start with a passthrough prefix {prefixes:?}"),
            ));
        }
        if c.body_names_indices {
            if c.kind == EndpointKind::Bulk {
                // Every action line is checked as the body streams through.
                return Ok(Passed {
                    cluster: p.cluster,
                    body: BodyCheck::Bulk(prefixes.clone()),
                    prefixed: true,
                });
            }
            return Err(unsupported(
                method,
                path,
                "its body can name indices outside the passthrough prefixes, which osproxy does not inspect for this endpoint; send one request per document or search instead",
            ));
        }
        // A search template renders a body osproxy never sees.
        if c.kind == EndpointKind::Search
            && path
                .split('/')
                .any(|s| s == "template" || s == "_render" || s == "_search_template")
        {
            return Err(unsupported(
                method,
                path,
                "a search template renders a query osproxy cannot inspect for references to other indices; send the search itself",
            ));
        }
        // Bodies that hold queries (or aliases) can name other indices.
        let body = if matches!(
            c.kind,
            EndpointKind::Search
                | EndpointKind::Count
                | EndpointKind::ByQuery
                | EndpointKind::Other
                | EndpointKind::IndexAdmin
        ) {
            BodyCheck::References(prefixes.clone())
        } else {
            BodyCheck::None
        };
        Ok(Passed {
            cluster: p.cluster,
            body,
            prefixed: true,
        })
    }
}

/// The names a path gives after its endpoint: `/{i}/_alias/{names}`,
/// `/{i}/_aliases/{names}`, `/{i}/_clone|_split|_shrink/{target}`,
/// `/{alias}/_rollover/{new index}` — decoded, comma lists split.
fn named_targets(path: &str) -> impl Iterator<Item = String> + '_ {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut out = Vec::new();
    for pair in segments.windows(2) {
        if matches!(
            pair[0],
            "_alias" | "_aliases" | "_clone" | "_split" | "_shrink" | "_rollover"
        ) {
            let decoded = percent_encoding::percent_decode_str(pair[1])
                .decode_utf8_lossy()
                .into_owned();
            out.extend(decoded.split(',').map(str::to_string));
        }
    }
    out.into_iter()
}

/// What must be checked in a passed-through body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyCheck {
    /// Nothing: the path says everything.
    None,
    /// A `_bulk`: every action line must stay within these prefixes.
    Bulk(Vec<String>),
    /// A body that holds queries: every index it names by reference (terms
    /// lookups, like-documents, ...) must start with one of these prefixes.
    /// It is read whole (bounded) and strict JSON.
    References(Vec<String>),
}

/// A request allowed through: its cluster, and for a prefix-confined `_bulk`
/// the prefixes every action line must stay within.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// The cluster position.
    pub cluster: usize,
    /// What of the body must be checked.
    pub body: BodyCheck,
    /// Confined by prefixes: the query string is parsed and rebuilt, and
    /// checked bodies must be uncompressed JSON.
    pub prefixed: bool,
}

fn unsupported(method: &Method, path: &str, why: &str) -> ProxyError {
    let shown: String = path.chars().take(200).collect();
    ProxyError::new(
        ErrorCode::UnsupportedEndpoint,
        format!("{method} {shown} is not served by this osproxy instance: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use osproxy_rewrite::classify;

    fn router(indices: Option<&[&str]>) -> Router {
        let mut text = String::from("[[clusters]]\nid = \"x\"\nurl = \"http://127.0.0.1:1\"\n[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:2\"\n[passthrough]\ncluster = \"main\"\n");
        if let Some(list) = indices {
            let quoted: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
            text.push_str(&format!("indices = [{}]\n", quoted.join(",")));
        }
        Router::new(
            &osproxy_config::from_str(&text, std::iter::empty(), &[]).expect("valid test config"),
        )
    }

    fn route(r: &Router, method: Method, path: &str) -> Result<usize, ErrorCode> {
        let c = classify(path).map_err(|_| ErrorCode::BadRequest)?;
        r.route(&method, path, &c)
            .map(|p| p.cluster)
            .map_err(|e| e.code)
    }

    #[test]
    fn everything_passes_without_prefixes() {
        let r = router(None);
        assert_eq!(route(&r, Method::POST, "/_bulk"), Ok(1));
        assert_eq!(route(&r, Method::GET, "/_cat/indices"), Ok(1));
    }

    /// Found by review: OpenSearch fills a route's `{name}` or
    /// `{new_index}` from the query string when the path has none.
    #[test]
    fn query_parameters_that_name_indices_stay_within_the_prefixes() {
        let r = router(Some(&["legacy-"]));
        let check_on = |path: &str, q: &str| {
            let q = osproxy_rewrite::query::Query::parse(Some(q)).unwrap();
            r.query_names_within(&Method::PUT, path, &q)
                .map_err(|e| e.code)
        };
        let check = |q: &str| check_on("/legacy-x/_alias", q);
        assert_eq!(check("name=legacy-y&pretty"), Ok(()));
        for bad in [
            "name=orders-globex",
            "name=legacy-y,orders",
            "index=orders",
            "alias=x",
            "name=legacy-y&name=orders",
            "name=",
        ] {
            assert_eq!(check(bad), Err(ErrorCode::UnsupportedEndpoint), "{bad}");
        }
        for bad in ["new_index=orders-globex", "target=orders"] {
            assert_eq!(
                check_on("/legacy-x/_rollover", bad),
                Err(ErrorCode::UnsupportedEndpoint),
                "{bad}"
            );
        }
        // On `_settings`, `name` filters setting names.
        assert_eq!(
            check_on("/legacy-x/_settings", "name=index.number_*"),
            Ok(())
        );
        let open = router(None);
        let q = osproxy_rewrite::query::Query::parse(Some("name=anything")).unwrap();
        assert!(open
            .query_names_within(&Method::PUT, "/x/_alias", &q)
            .is_ok());
    }

    #[test]
    fn prefixes_confine() {
        let r = router(Some(&["legacy-", "old-"]));
        assert_eq!(route(&r, Method::GET, "/legacy-a/_doc/1"), Ok(1));
        assert_eq!(route(&r, Method::GET, "/legacy-a,old-b/_search"), Ok(1));
        assert_eq!(route(&r, Method::GET, "/legacy-*/_search"), Ok(1));
        assert_eq!(route(&r, Method::GET, "/"), Ok(1));
        let refused = Err(ErrorCode::UnsupportedEndpoint);
        assert_eq!(route(&r, Method::DELETE, "/"), refused);
        assert_eq!(route(&r, Method::GET, "/orders/_search"), refused);
        assert_eq!(route(&r, Method::GET, "/legacy-a,orders/_search"), refused);
        assert_eq!(
            route(&r, Method::GET, "/legacy-a%2Corders/_search"),
            refused
        );
        assert_eq!(route(&r, Method::GET, "/legacy-a,/_search"), refused);
        assert_eq!(
            route(&r, Method::GET, "/legacy-a,-legacy-b/_search"),
            refused
        );
        assert_eq!(route(&r, Method::GET, "/_all/_search"), refused);
        // `cluster:index` names a remote cluster's index.
        assert_eq!(route(&r, Method::GET, "/legacy-*:orders/_search"), refused);
        assert_eq!(
            route(&r, Method::GET, "/legacy-a%3Aorders/_search"),
            refused
        );
        assert_eq!(route(&r, Method::GET, "/*/_search"), refused);
        assert_eq!(route(&r, Method::GET, "/_search"), refused);
        // A bulk passes, with its action lines checked as they stream.
        assert_eq!(route(&r, Method::POST, "/legacy-a/_bulk"), Ok(1));
        assert_eq!(route(&r, Method::POST, "/legacy-a/_mget"), refused);
        assert_eq!(route(&r, Method::POST, "/legacy-a/_msearch"), refused);
        assert_eq!(route(&r, Method::GET, "/_cat/indices/legacy-a"), refused);
        assert_eq!(
            route(&r, Method::GET, "/legacy-a/../orders/_search"),
            refused
        );
        assert_eq!(route(&r, Method::GET, "//legacy-a/_search"), refused);
        assert_eq!(route(&r, Method::GET, "/legacy-a/%2e%2e/orders"), refused);
    }

    #[test]
    fn names_later_in_the_path_are_checked() {
        let names: Vec<String> = named_targets("/legacy-x/_alias/orders-shared,legacy-a").collect();
        assert_eq!(names, ["orders-shared", "legacy-a"]);
        let names: Vec<String> = named_targets("/legacy-x/_clone/orders%2Dshared").collect();
        assert_eq!(names, ["orders-shared"]);
        assert_eq!(named_targets("/legacy-x/_search").count(), 0);
    }

    #[test]
    fn no_passthrough_refuses_everything() {
        let r = Router {
            passthrough: None,
            clusters: vec![],
        };
        assert_eq!(
            route(&r, Method::GET, "/"),
            Err(ErrorCode::UnsupportedEndpoint)
        );
    }
}
