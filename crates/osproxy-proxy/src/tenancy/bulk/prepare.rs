//! Resolving a bulk item's target and rendering its upstream action line.

use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::bulk::{check_metadata, item_error, render_action, ActionLine, BulkOp};

use super::{BulkStream, ItemCtx, Prepared};
use crate::tenancy::reverse::Placed;
use crate::tenancy::Target;

/// Targets a bulk keeps resolved at once.
const MAX_CACHED_TARGETS: usize = 1024;

impl<'t> BulkStream<'_, 't> {
    /// Resolves an item's target and renders its upstream action line; a
    /// refusal is recorded at its position.
    pub(super) fn prepare(
        &mut self,
        position: usize,
        index: &str,
        action: &ActionLine,
        from_body: Option<&str>,
    ) -> Option<Prepared<'t>> {
        let op = action.op;
        let refuse = |run: &mut Self, e: ProxyError| {
            run.out.set(
                position,
                item_error(
                    op,
                    Some(index),
                    action.id.as_deref(),
                    e.status(),
                    e.code.as_str(),
                    &e.reason,
                ),
            );
            None
        };
        let target = match self.target(index, from_body) {
            Ok(t) => t,
            Err(e) => return refuse(self, e),
        };
        let shared = target.shared();
        if action.rest.iter().any(|(k, _)| k == "pipeline") {
            return refuse(
                self,
                ProxyError::new(
                    ErrorCode::BadRequest,
                    "`pipeline` is refused for logical indices: an ingest pipeline could rewrite the partition field, `_id`, routing or the target index",
                ),
            );
        }
        if shared && action.routing.is_some() {
            return refuse(
                self,
                ProxyError::new(
                    ErrorCode::BadRequest,
                    "`routing` is refused in a shared placement: osproxy routes by partition",
                ),
            );
        }
        if action.id.as_deref() == Some("") {
            return refuse(
                self,
                ProxyError::new(
                    ErrorCode::BadRequest,
                    "if _id is specified it must not be empty",
                ),
            );
        }
        let logical_id = match (&action.id, shared, op) {
            (Some(id), _, _) => Some(id.clone()),
            (None, true, BulkOp::Index | BulkOp::Create) => Some(self.tenancy.mint_id()),
            (None, true, _) => {
                return refuse(
                    self,
                    ProxyError::new(
                        ErrorCode::BadRequest,
                        format!("`{}` needs an `_id`", op.as_str()),
                    ),
                )
            }
            (None, false, _) => None,
        };
        let physical_id = logical_id.as_deref().map(|id| target.physical_id(id));
        // An auto-id index in a shared placement is written create-only,
        // as OpenSearch treats its own auto ids.
        let upstream_op = if shared && action.id.is_none() {
            BulkOp::Create
        } else {
            op
        };
        let routing = if shared {
            Some(target.partition.as_str().to_string())
        } else {
            action.routing.clone()
        };
        if let Some(id) = physical_id.as_deref().filter(|id| id.len() > 512) {
            let how = if shared {
                " (in a shared placement, the id with its partition prefix)"
            } else {
                ""
            };
            return refuse(
                self,
                ProxyError::new(
                    ErrorCode::BadRequest,
                    format!(
                        "id is too long, must be no longer than 512 bytes but was: {}{how}",
                        id.len()
                    ),
                ),
            );
        }
        // OpenSearch refuses a whole `_bulk` for one action line it cannot
        // read or validate; read here with its rules, for the op and id
        // the item is sent with, that item alone fails, and what is
        // forwarded is the canonical form of what was read.
        let rest = match check_metadata(upstream_op, physical_id.is_some(), &action.rest) {
            Ok(rest) => rest,
            Err(e) => {
                self.out.set(
                    position,
                    item_error(
                        op,
                        Some(index),
                        action.id.as_deref(),
                        400,
                        e.kind,
                        &e.reason,
                    ),
                );
                return None;
            }
        };
        let rendered = render_action(
            upstream_op,
            target.physical_index(),
            physical_id.as_deref(),
            routing.as_deref(),
            &rest,
        );
        let key = (
            target.cluster.id.clone(),
            target.physical_index().to_string(),
        );
        // An `index` with `op_type: create` is answered as OpenSearch
        // answers it, under `create`.
        let answered_as = if op == BulkOp::Index
            && rest
                .iter()
                .any(|(k, v)| k == "op_type" && v.get() == "\"create\"")
        {
            BulkOp::Create
        } else {
            op
        };
        let ctx = ItemCtx {
            position,
            target: 0,
            op: answered_as,
            logical_id,
            physical_id,
        };
        Some(Prepared {
            key,
            target,
            action: rendered,
            ctx,
        })
    }

    pub(super) fn target(
        &mut self,
        index: &str,
        from_body: Option<&str>,
    ) -> Result<Target<'t>, ProxyError> {
        let cache_key = (index.to_string(), from_body.map(str::to_string));
        // A cached target whose placement changed since is resolved again,
        // so items after a change go to the new placement.
        match self.targets.get(&cache_key) {
            Some(Ok(t)) if self.tenancy.is_current(t) => return Ok(t.clone()),
            Some(Err(e)) => return Err(e.clone()),
            _ => {}
        }
        if !self.tenancy.snapshot().is_logical(index) {
            // Not cached: the names a client makes up are not kept.
            let shown: String = index.chars().take(255).collect();
            return Err(ProxyError::new(
                ErrorCode::BadRequest,
                format!("{shown:?} is not a logical index; a bulk on logical indices may only name logical indices"),
            ));
        }
        let resolved = self
            .tenancy
            .resolve(index, self.principal, self.headers, from_body);
        // A refusal of a partition a document named is not kept (found by
        // review: a thousand refused 10 MB names were held to the end of
        // the bulk); a resolved one is a valid partition id, short.
        if resolved.is_err() && from_body.is_some() {
            return resolved;
        }
        // Bounded: partitions named in documents are the client's.
        if self.targets.len() >= MAX_CACHED_TARGETS {
            self.targets.clear();
        }
        self.targets.insert(cache_key, resolved.clone());
        resolved
    }
}
