//! Endpoint kinds: the bounded set of request classes osproxy reasons about
//! (and labels metrics with).

use std::fmt;

/// What a request does, as far as routing, isolation and metrics care.
///
/// The set is closed so it can be used as a bounded metrics label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EndpointKind {
    /// `GET /` — cluster banner.
    Root,
    /// Index, create, get, exists, `_source`, delete of one document.
    Document,
    /// `_update` of one document.
    Update,
    /// `_bulk`.
    Bulk,
    /// `_search` (including templates).
    Search,
    /// `_count`.
    Count,
    /// `_msearch` (including templates).
    Msearch,
    /// `_mget`.
    Mget,
    /// `_search/scroll` continue or clear.
    Scroll,
    /// Point in time open, close, list.
    Pit,
    /// `_delete_by_query` and `_update_by_query`.
    ByQuery,
    /// Index management: create, delete, mapping, settings, refresh, aliases...
    IndexAdmin,
    /// `_cat/*`.
    Cat,
    /// `_cluster/*`, `_nodes/*`, `_tasks/*`.
    ClusterAdmin,
    /// Anything else.
    Other,
}

impl EndpointKind {
    /// Every kind, in a stable order (used to pre-register metrics).
    pub const ALL: [EndpointKind; 15] = [
        EndpointKind::Root,
        EndpointKind::Document,
        EndpointKind::Update,
        EndpointKind::Bulk,
        EndpointKind::Search,
        EndpointKind::Count,
        EndpointKind::Msearch,
        EndpointKind::Mget,
        EndpointKind::Scroll,
        EndpointKind::Pit,
        EndpointKind::ByQuery,
        EndpointKind::IndexAdmin,
        EndpointKind::Cat,
        EndpointKind::ClusterAdmin,
        EndpointKind::Other,
    ];

    /// The stable lower-case name used in metrics, logs and directives.
    pub const fn as_str(self) -> &'static str {
        match self {
            EndpointKind::Root => "root",
            EndpointKind::Document => "document",
            EndpointKind::Update => "update",
            EndpointKind::Bulk => "bulk",
            EndpointKind::Search => "search",
            EndpointKind::Count => "count",
            EndpointKind::Msearch => "msearch",
            EndpointKind::Mget => "mget",
            EndpointKind::Scroll => "scroll",
            EndpointKind::Pit => "pit",
            EndpointKind::ByQuery => "by_query",
            EndpointKind::IndexAdmin => "index_admin",
            EndpointKind::Cat => "cat",
            EndpointKind::ClusterAdmin => "cluster_admin",
            EndpointKind::Other => "other",
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
