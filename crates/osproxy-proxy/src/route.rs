//! Routing: which cluster serves a classified request, or why none does.
//!
//! Today the only route is passthrough (verbatim forwarding to one cluster,
//! optionally only for index-name prefixes); tenancy routes join here.

use http::Method;
use osproxy_config::Config;
use osproxy_core::{EndpointKind, ErrorCode, ProxyError};
use osproxy_rewrite::classify::is_canonical;
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

    /// The cluster position that serves this request.
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        c: &Classified<'_>,
    ) -> Result<usize, ProxyError> {
        let Some(p) = &self.passthrough else {
            return Err(unsupported(method, path, "it addresses no logical index of the catalogue, and no [passthrough] is configured"));
        };
        let Some(prefixes) = &p.prefixes else {
            return Ok(p.cluster);
        };
        // The banner is harmless and some clients read it on connect.
        if c.kind == EndpointKind::Root && (method == Method::GET || method == Method::HEAD) {
            return Ok(p.cluster);
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
        if c.body_names_indices {
            return Err(unsupported(
                method,
                path,
                "its body can name indices outside the passthrough prefixes, which osproxy does not inspect in passthrough mode; send one request per document or search instead",
            ));
        }
        Ok(p.cluster)
    }
}

/// Whether one index name of a path stays within the prefixes. Exclusions
/// (`-x`) and empty names are refused: they only make sense next to a
/// wider pattern that is itself outside.
fn within(name: &str, prefixes: &[String]) -> bool {
    !name.is_empty() && prefixes.iter().any(|p| name.starts_with(p.as_str()))
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
        r.route(&method, path, &c).map_err(|e| e.code)
    }

    #[test]
    fn everything_passes_without_prefixes() {
        let r = router(None);
        assert_eq!(route(&r, Method::POST, "/_bulk"), Ok(1));
        assert_eq!(route(&r, Method::GET, "/_cat/indices"), Ok(1));
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
        assert_eq!(route(&r, Method::GET, "/*/_search"), refused);
        assert_eq!(route(&r, Method::GET, "/_search"), refused);
        assert_eq!(route(&r, Method::POST, "/legacy-a/_bulk"), refused);
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
