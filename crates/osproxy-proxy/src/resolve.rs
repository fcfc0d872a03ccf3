//! The resolve stage's decision: which route a classified request takes,
//! from what its path says and what the catalogue holds, without I/O.

use osproxy_core::EndpointKind;

/// Where a classified request goes, decided without I/O from what the path
/// says and what the catalogue holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// A `_bulk` whose items name logical indices (the path's index, if any).
    TenancyBulk {
        /// The logical index of the path.
        index: Option<String>,
    },
    /// A scroll, PIT or PIT search naming no index: the cursor says where.
    Cursor,
    /// `_mget` or `_msearch` naming no index: each part names its own.
    UnscopedMulti,
    /// A request for a logical index.
    Logical {
        /// The index expression of the path.
        index: String,
    },
    /// A cluster-wide endpoint (`_cat`, `_cluster`, ...), operators only.
    Operator,
    /// Everything else: the passthrough router decides, or refuses.
    Passthrough,
}

impl Route {
    /// Its name in explanations and traces.
    pub const fn name(&self) -> &'static str {
        match self {
            Route::TenancyBulk { .. } => "tenancy_bulk",
            Route::Cursor => "cursor",
            Route::UnscopedMulti => "unscoped_multi",
            Route::Logical { .. } => "logical",
            Route::Operator => "operator",
            Route::Passthrough => "passthrough",
        }
    }
}

/// The route of a classified request. `claims` says whether any of the
/// path's index names is a logical index; `auth_required` whether
/// principals are configured (cluster-wide endpoints are then operators').
pub fn decide<'a>(
    c: &'a osproxy_rewrite::Classified<'a>,
    has_catalogue: bool,
    claims: impl Fn(&mut dyn Iterator<Item = &'a str>) -> bool,
    auth_required: bool,
) -> Route {
    let kind = c.kind;
    let claimed = || claims(&mut c.index_names());
    match (kind, c.index.as_deref()) {
        (EndpointKind::Bulk, None) if has_catalogue => return Route::TenancyBulk { index: None },
        (EndpointKind::Bulk, Some(i)) if claimed() => {
            return Route::TenancyBulk {
                index: Some(i.to_string()),
            }
        }
        (EndpointKind::Bulk, _) => return Route::Passthrough,
        (EndpointKind::Scroll | EndpointKind::Pit | EndpointKind::Search, None)
            if has_catalogue =>
        {
            return Route::Cursor
        }
        (EndpointKind::Mget | EndpointKind::Msearch, None) if has_catalogue => {
            return Route::UnscopedMulti
        }
        _ => {}
    }
    if claimed() {
        return Route::Logical {
            index: c.index.as_deref().unwrap_or_default().to_string(),
        };
    }
    if auth_required && matches!(kind, EndpointKind::Cat | EndpointKind::ClusterAdmin) {
        return Route::Operator;
    }
    Route::Passthrough
}

#[cfg(test)]
mod tests {
    use super::*;
    use osproxy_rewrite::classify;

    /// The route of `path` with a catalogue holding `logical`.
    fn route(path: &str, catalogue: bool, auth: bool) -> Route {
        let c = classify(path).unwrap();
        decide(
            &c,
            catalogue,
            |names: &mut dyn Iterator<Item = &str>| {
                let mut found = false;
                for n in names {
                    found |= n == "orders";
                }
                found
            },
            auth,
        )
    }

    #[test]
    fn every_route_is_decided_from_the_path_and_the_catalogue() {
        assert_eq!(
            route("/_bulk", true, true),
            Route::TenancyBulk { index: None }
        );
        assert_eq!(
            route("/orders/_bulk", true, true),
            Route::TenancyBulk {
                index: Some("orders".into())
            }
        );
        assert_eq!(route("/legacy-x/_bulk", true, true), Route::Passthrough);
        assert_eq!(route("/_bulk", false, false), Route::Passthrough);
        assert_eq!(route("/_search/scroll", true, true), Route::Cursor);
        assert_eq!(route("/_search", true, true), Route::Cursor);
        assert_eq!(route("/_search/point_in_time", true, true), Route::Cursor);
        assert_eq!(route("/_search", false, true), Route::Passthrough);
        assert_eq!(route("/_mget", true, true), Route::UnscopedMulti);
        assert_eq!(route("/_msearch", true, true), Route::UnscopedMulti);
        assert_eq!(
            route("/orders/_search", true, true),
            Route::Logical {
                index: "orders".into()
            }
        );
        assert_eq!(
            route("/orders,legacy-x/_search", true, true),
            Route::Logical {
                index: "orders,legacy-x".into()
            }
        );
        assert_eq!(route("/_cat/indices", true, true), Route::Operator);
        assert_eq!(route("/_cluster/health", true, true), Route::Operator);
        assert_eq!(route("/_cluster/health", true, false), Route::Passthrough);
        assert_eq!(route("/legacy-x/_doc/1", true, true), Route::Passthrough);
        assert_eq!(route("/", true, true), Route::Passthrough);
    }
}
