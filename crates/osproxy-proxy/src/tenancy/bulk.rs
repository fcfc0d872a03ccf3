//! `_bulk` on logical indices, streamed: the body is read line by line; each
//! item resolves its own logical index, partition and placement (cached per
//! request), is rewritten like a single-document write, and joins the batch
//! of its target. Batches are real upstream `_bulk` requests, bounded in
//! items and bytes; a full batch is sent before more of the body is read, so
//! memory stays bounded by the batch limits, not the body. The response
//! lists every item in the client's order; an item that cannot be routed
//! gets a positioned error while the others proceed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderMap, Request, Response, StatusCode};
use osproxy_core::{ErrorCode, ProxyError};
use osproxy_rewrite::bulk::{
    check_update_body, is_blank, item_error, parse_action, ActionLine, BulkOp, LineSplitter,
};
use osproxy_upstream::budget::Charge;
use osproxy_upstream::ClientBody;

use super::document::confine_body;
use super::params::{allow_only, Op};
use super::{body_partition, strict_body, Target, Tenancy, MAX_BUFFERED};
use crate::auth::Principal;
use crate::body::ResponseBody;
use osproxy_control::PartitionRule;
use osproxy_observe::InFlight;

/// Items per upstream `_bulk` request.
const MAX_BATCH_ITEMS: usize = 1000;
/// Bytes per upstream `_bulk` request.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// How far (in items) a result may wait behind later ones before its batch
/// is sent anyway; bounds the results held for in-order answering.
const MAX_REORDER: usize = 10_000;
/// Batches sent at once when the body has been read.
const MAX_CONCURRENT_BATCHES: usize = 4;

/// What is needed to reverse one item's result.
struct ItemCtx {
    position: usize,
    /// Which of its batch's targets (partitions) the item belongs to.
    target: usize,
    op: BulkOp,
    logical_id: Option<String>,
    physical_id: Option<String>,
}

/// Items for one physical index, sent as one upstream `_bulk`. A shared
/// index's batch may hold several partitions' items: each partition keeps
/// its own target, so the batch is gated by every partition's placement
/// entry (a moving partition's items never ride on another's gate) and each
/// item is reversed with its own partition's ids.
struct Batch<'t> {
    targets: Vec<Target<'t>>,
    body: Vec<u8>,
    items: Vec<ItemCtx>,
}

/// An action waiting for its source line.
struct Pending {
    position: usize,
    index: String,
    action: ActionLine,
}

/// An item ready to join its target's batch.
struct Prepared<'t> {
    key: (String, String),
    target: Target<'t>,
    action: Vec<u8>,
    ctx: ItemCtx,
}

pub(crate) async fn serve(
    tenancy: Arc<Tenancy>,
    mut req: Request<ClientBody>,
    principal: Option<Arc<Principal>>,
    path_index: Option<String>,
    in_flight: InFlight,
) -> Result<Response<ResponseBody>, ProxyError> {
    let started = Instant::now();
    let query = bulk_query(req.uri().query())?;
    let headers = req.headers().clone();
    // Kept while the body is read: the answer streams meanwhile, and a
    // client that reads it only once it has sent everything is not stuck.
    let mut uploading = req.extensions_mut().remove::<crate::ingress::Uploading>();
    let mut body = req.into_body();
    // Read up to the first line before answering, so that an empty body is
    // a 400 like OpenSearch's rather than an empty 200.
    let mut splitter = LineSplitter::keeping_blank(MAX_BUFFERED);
    let mut first: Vec<Bytes> = Vec::new();
    let mut ended = false;
    let mut charge = Charge::default();
    while first.iter().all(|l| is_blank(l)) {
        match osproxy_upstream::next_frame(&mut body).await? {
            Some(frame) => {
                let frame = frame.map_err(|e| osproxy_upstream::body_error(&*e))?;
                if let Ok(data) = frame.into_data() {
                    charge.set(splitter.buffered_after(data.len()) as u64)?;
                    first = splitter
                        .feed(&data)
                        .map_err(|e| ProxyError::new(ErrorCode::BadRequest, e.to_string()))?;
                    let lines: usize = first.iter().map(Bytes::len).sum();
                    charge.set((splitter.buffered() + lines) as u64)?;
                }
            }
            None => {
                ended = true;
                break;
            }
        }
    }
    let mut splitter = Some(splitter);
    if ended {
        if let Some(last) = splitter.take().and_then(LineSplitter::finish) {
            first.push(last);
        }
    }
    if first.iter().all(|l| is_blank(l)) {
        return Err(ProxyError::new(
            ErrorCode::BadRequest,
            "request body is required: a _bulk body of action and source lines",
        ));
    }

    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    let account = crate::limits::current();
    let run = async move {
        let mut run = BulkStream {
            tenancy: &tenancy,
            principal: principal.as_deref(),
            headers: &headers,
            path_index: path_index.as_deref(),
            query,
            targets: HashMap::new(),
            batches: HashMap::new(),
            out: Emitter::new(tx, tenancy.metrics.clone()),
            pending: None,
            skip_source: false,
            poisoned: false,
            charge,
        };
        run.out.open();
        for line in first {
            run.line(line).await;
        }
        if let Some(mut splitter) = splitter {
            loop {
                let frame = match osproxy_upstream::next_frame(&mut body).await {
                    Ok(Some(frame)) => frame,
                    Ok(None) => break,
                    Err(e) => {
                        // Reading stops here: the answer no longer waits on the body.
                        uploading.take();
                        run.abort_with(e.status(), e.code.as_str(), &e.reason).await;
                        return;
                    }
                };
                let data = match frame {
                    Ok(f) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Err(e) => {
                        // The client's body broke off: what is batched was
                        // never complete; stop here.
                        // Reading stops here: the answer no longer waits on the body.
                        uploading.take();
                        run.abort(&format!("the bulk body could not be read: {e}"))
                            .await;
                        return;
                    }
                };
                // Charged before the splitter grows, given back after.
                if let Err(e) = run.hold(splitter.buffered_after(data.len())).await {
                    // Reading stops here: the answer no longer waits on the body.
                    uploading.take();
                    run.abort_with(e.status(), e.code.as_str(), &e.reason).await;
                    return;
                }
                match splitter.feed(&data) {
                    Ok(lines) => {
                        for line in lines {
                            run.line(line).await;
                        }
                    }
                    Err(e) => {
                        // Reading stops here: the answer no longer waits on the body.
                        uploading.take();
                        run.abort(&e.to_string()).await;
                        return;
                    }
                }
                // Given back, not taken: the charge before the feed covered
                // the growth, so the last frame never fails here.
                run.settle(splitter.buffered());
            }
            if let Some(line) = splitter.finish() {
                run.line(line).await;
            }
        }
        uploading.take();
        run.finish().await;
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        run.out.close(took).await;
    };
    // The items go on being charged to the request's account.
    tokio::spawn(async move {
        match account {
            Some(a) => a.scope(run).await,
            None => run.await,
        }
    });
    let mut resp = Response::new(ResponseBody::channel(rx, in_flight));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    Ok(resp)
}

/// Query parameters a tenancy bulk accepts (applied to every batch).
fn bulk_query(query: Option<&str>) -> Result<String, ProxyError> {
    const ALLOWED: [&str; 6] = [
        "refresh",
        "timeout",
        "wait_for_active_shards",
        "pretty",
        "human",
        "error_trace",
    ];
    allow_only(query, &ALLOWED, "on a bulk of logical indices").map(|q| q.encode())
}

struct BulkStream<'a, 't> {
    tenancy: &'t Tenancy,
    principal: Option<&'a Principal>,
    headers: &'a HeaderMap,
    path_index: Option<&'a str>,
    query: String,
    /// By (logical index, partition named in the document): a pair, so
    /// no index name can pose as another index's partition.
    targets: HashMap<(String, Option<String>), Result<Target<'t>, ProxyError>>,
    batches: HashMap<(String, String), Batch<'t>>,
    out: Emitter,
    pending: Option<Pending>,
    /// The current action was refused; its source line is dropped.
    skip_source: bool,
    /// An action line could not be read at all: item boundaries are lost,
    /// so nothing after it is executed.
    poisoned: bool,
    /// What the bulk holds (a line not yet complete, unsent batches), on
    /// the process-wide budget.
    charge: Charge,
}

impl<'t> BulkStream<'_, 't> {
    async fn line(&mut self, line: Bytes) {
        self.line_inner(line).await;
        self.flush_stragglers().await;
        self.out.pump();
    }

    async fn line_inner(&mut self, line: Bytes) {
        if self.poisoned {
            return;
        }
        if let Some(p) = self.pending.take() {
            // A blank line here is the item's (empty) source, as OpenSearch
            // reads it; what is not strict JSON is refused for this item.
            let refused = if is_blank(&line) {
                Some("the source line of this item is empty".to_string())
            } else {
                strict_body(&line).err().map(|e| e.reason)
            };
            if let Some(reason) = refused {
                self.out.set(
                    p.position,
                    item_error(
                        p.action.op,
                        Some(&p.index),
                        p.action.id.as_deref(),
                        400,
                        "illegal_argument_exception",
                        &reason,
                    ),
                );
                return;
            }
            self.source(p, &line).await;
            return;
        }
        if std::mem::take(&mut self.skip_source) {
            return;
        }
        if is_blank(&line) {
            return;
        }
        let position = self.out.position();
        let parsed = strict_body(&line)
            .map_err(|e| e.reason)
            .and_then(|()| parse_action(&line).map_err(|e| e.to_string()));
        match parsed {
            Ok(action) => self.action(position, action).await,
            Err(e) => {
                let op = op_hint(&line);
                // Found by review: past a line whose op cannot be told the
                // later actions got no item at all; this one says so, as
                // the item of a body broken off does.
                let e = match op {
                    Some(_) => e,
                    None => format!("{e}; the request body was not read past this line (where its next action begins cannot be told): this and every later item of the request were not applied"),
                };
                self.out.set(
                    position,
                    item_error(
                        op.unwrap_or(BulkOp::Index),
                        None,
                        None,
                        400,
                        "illegal_argument_exception",
                        &e,
                    ),
                );
                match op {
                    Some(op) => self.skip_source = op.has_source(),
                    None => self.poisoned = true,
                }
            }
        }
    }

    fn fail(
        &mut self,
        position: usize,
        op: BulkOp,
        index: Option<&str>,
        id: Option<&str>,
        e: &ProxyError,
    ) {
        self.out.set(
            position,
            item_error(op, index, id, e.status(), e.code.as_str(), &e.reason),
        );
        self.skip_source = op.has_source();
    }

    async fn action(&mut self, position: usize, action: ActionLine) {
        let op = action.op;
        let Some(index) = action
            .index
            .clone()
            .or_else(|| self.path_index.map(str::to_string))
        else {
            let e = ProxyError::new(
                ErrorCode::BadRequest,
                "no index: name a logical index in the path or in `_index`",
            );
            return self.fail(position, op, None, action.id.as_deref(), &e);
        };
        if op.has_source() {
            // Resolved with its source, which may name the partition.
            self.pending = Some(Pending {
                position,
                index,
                action,
            });
            return;
        }
        if let Some(p) = self.prepare(position, &index, &action, None) {
            self.append(p, None).await;
        }
    }

    async fn source(&mut self, p: Pending, line: &[u8]) {
        let op = p.action.op;
        let from_body = match self
            .tenancy
            .snapshot()
            .index(&p.index)
            .map(|l| &l.partition)
        {
            Some(PartitionRule::Body(field)) if op != BulkOp::Update => {
                match body_partition(line, field, &p.index) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        self.out.set(
                            p.position,
                            item_error(
                                op,
                                Some(&p.index),
                                p.action.id.as_deref(),
                                e.status(),
                                e.code.as_str(),
                                &e.reason,
                            ),
                        );
                        return;
                    }
                }
            }
            _ => None,
        };
        let Some(prepared) = self.prepare(p.position, &p.index, &p.action, from_body.as_deref())
        else {
            return;
        };
        let target = &prepared.target;
        // An item refused after it was routed: answered with its logical
        // index and id.
        let refused = |e: ProxyError| {
            item_error(
                op,
                Some(&target.logical.name),
                prepared.ctx.logical_id.as_deref(),
                e.status(),
                e.code.as_str(),
                &e.reason,
            )
        };
        // OpenSearch reads every update body while it parses the bulk: one
        // it cannot read would fail the whole upstream batch.
        if op == BulkOp::Update {
            if let Err(e) = check_update_body(&p.action.rest, line) {
                let item = item_error(
                    op,
                    Some(&target.logical.name),
                    prepared.ctx.logical_id.as_deref(),
                    400,
                    e.kind,
                    &e.reason,
                );
                self.out.set(p.position, item);
                return;
            }
        }
        let kept = match (&target.logical.partition, op) {
            (PartitionRule::Body(f), BulkOp::Update) => {
                super::update_keeps_partition(line, f, target.partition.as_str())
            }
            _ => Ok(()),
        };
        if let Err(e) = kept {
            let item = refused(e);
            self.out.set(p.position, item);
            return;
        }
        let source = if target.shared() {
            let body_op = if op == BulkOp::Update {
                Op::Update
            } else {
                Op::Write
            };
            match confine_body(line, body_op, target) {
                Ok(b) => b,
                Err(e) => {
                    let item = refused(e);
                    self.out.set(p.position, item);
                    return;
                }
            }
        } else {
            line.to_vec()
        };
        self.append(prepared, Some(source)).await;
    }

    async fn append(&mut self, p: Prepared<'t>, source: Option<Vec<u8>>) {
        let Prepared {
            key,
            target,
            action,
            ctx,
        } = p;
        let mut ctx = ctx;
        // One document, and its lines' bytes, for its own partition.
        crate::limits::item(
            target.partition.as_str(),
            1,
            (action.len() + source.as_ref().map_or(0, Vec::len)) as u64,
        );
        let batch = self.batches.entry(key.clone()).or_insert_with(|| Batch {
            targets: Vec::new(),
            body: Vec::new(),
            items: Vec::new(),
        });
        ctx.target = match batch
            .targets
            .iter()
            .position(|t| t.partition == target.partition && t.epoch == target.epoch)
        {
            Some(i) => i,
            None => {
                batch.targets.push(target);
                batch.targets.len() - 1
            }
        };
        batch.body.extend_from_slice(&action);
        batch.body.push(b'\n');
        if let Some(s) = source {
            batch.body.extend_from_slice(&s);
            batch.body.push(b'\n');
        }
        batch.items.push(ctx);
        if batch.items.len() >= MAX_BATCH_ITEMS || batch.body.len() >= MAX_BATCH_BYTES {
            if let Some(full) = self.batches.remove(&key) {
                let done = send(self.tenancy, &self.query, self.headers, full).await;
                self.record(done);
            }
        }
    }

    async fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            self.out.set(
                p.position,
                item_error(
                    p.action.op,
                    Some(&p.index),
                    p.action.id.as_deref(),
                    400,
                    "illegal_argument_exception",
                    "the action line has no source line after it",
                ),
            );
        }
        self.send_all().await;
    }

    /// Charges what the bulk holds to the process-wide budget: `pending`
    /// bytes of a line not yet complete and every unsent batch. Past the
    /// budget, the batches are sent at once to give their share back; if
    /// that is not enough, the bulk cannot go on.
    async fn hold(&mut self, pending: usize) -> Result<(), ProxyError> {
        if self.charge.set((pending + self.held()) as u64).is_ok() {
            return Ok(());
        }
        self.send_all().await;
        self.charge.set((pending + self.held()) as u64)
    }

    /// What the bulk holds besides the splitter's pending bytes: unsent
    /// batches, and an action waiting for its source line.
    fn held(&self) -> usize {
        let batched: usize = self.batches.values().map(|b| b.body.capacity()).sum();
        let pending = self.pending.as_ref().map_or(0, |p| {
            p.index.len()
                + p.action.id.as_ref().map_or(0, String::len)
                + p.action
                    .rest
                    .iter()
                    .map(|(k, v)| k.len() + v.get().len())
                    .sum::<usize>()
        });
        batched + pending + self.out.held()
    }

    /// Gives back what the bulk no longer holds; never refuses (a charge
    /// that would grow stays as it was, covered by the charge before).
    fn settle(&mut self, pending: usize) {
        let _ = self.charge.set((pending + self.held()) as u64);
    }

    /// Sends every unsent batch.
    async fn send_all(&mut self) {
        let mut batches: Vec<Batch<'t>> = self.batches.drain().map(|(_, b)| b).collect();
        // Bounded concurrency across targets: a few batches at a time.
        while !batches.is_empty() {
            let take = batches.len().min(MAX_CONCURRENT_BATCHES);
            let mut sending = Vec::with_capacity(take);
            for b in batches.drain(..take) {
                sending.push(send(self.tenancy, &self.query, self.headers, b));
            }
            for done in join_all(sending).await {
                self.record(done);
            }
        }
    }

    fn record(&mut self, done: Vec<send::Answered>) {
        for (pos, item, status) in done {
            self.out.set_known(pos, item, status);
        }
    }

    /// Sends every batch whose oldest item is more than [`MAX_REORDER`]
    /// positions behind, so that later results never wait long for it.
    async fn flush_stragglers(&mut self) {
        let horizon = self.out.count.saturating_sub(MAX_REORDER);
        let late: Vec<(String, String)> = self
            .batches
            .iter()
            .filter(|(_, b)| b.items.first().is_some_and(|c| c.position < horizon))
            .map(|(k, _)| k.clone())
            .collect();
        for key in late {
            if let Some(batch) = self.batches.remove(&key) {
                let done = send(self.tenancy, &self.query, self.headers, batch).await;
                self.record(done);
            }
        }
    }

    /// The client's body broke off: nothing more is applied; batched items
    /// that were never sent are answered as not applied.
    async fn abort(&mut self, reason: &str) {
        self.abort_with(400, "illegal_argument_exception", reason)
            .await;
    }

    /// [`Self::abort`] with another status and error type for the items
    /// not applied.
    async fn abort_with(&mut self, status: u16, kind: &str, reason: &str) {
        // An action whose source line never came was not applied either.
        if let Some(p) = self.pending.take() {
            let e = item_error(
                p.action.op,
                Some(&p.index),
                p.action.id.as_deref(),
                status,
                kind,
                reason,
            );
            self.out.set(p.position, e);
        }
        let batches: Vec<Batch<'t>> = self.batches.drain().map(|(_, b)| b).collect();
        for b in batches {
            let name = b
                .targets
                .first()
                .map(|t| t.logical.name.clone())
                .unwrap_or_default();
            for c in b.items {
                let e = item_error(
                    c.op,
                    Some(&name),
                    c.logical_id.as_deref(),
                    status,
                    kind,
                    reason,
                );
                self.out.set(c.position, e);
            }
        }
        // The items the body still held were never read, so they have no
        // positions: one more item says where reading stopped, so the answer
        // has `errors: true` and a client matching items to its actions in
        // order sees its next action fail, never a complete success.
        let rest = self.out.position();
        let e = item_error(
            BulkOp::Index,
            None,
            None,
            status,
            kind,
            &format!("the request body was not read past this item ({reason}): this and every later item of the request were not applied"),
        );
        self.out.set(rest, e);
        self.out.close(0).await;
    }
}

/// The op of an action line that does not parse fully, when its single key
/// says which op it is (so its source line can be skipped safely).
fn op_hint(line: &[u8]) -> Option<BulkOp> {
    // Read by its members, not into a tree (found by review: a large
    // refused line built a tree the budget never saw).
    let members = osproxy_rewrite::members::members(line).ok()?;
    let [(key, _)] = members.as_slice() else {
        return None;
    };
    match Some(key.as_ref()) {
        Some("index") => Some(BulkOp::Index),
        Some("create") => Some(BulkOp::Create),
        Some("update") => Some(BulkOp::Update),
        Some("delete") => Some(BulkOp::Delete),
        _ => None,
    }
}

mod emitter;
mod prepare;
mod send;
use emitter::Emitter;
use send::send;
