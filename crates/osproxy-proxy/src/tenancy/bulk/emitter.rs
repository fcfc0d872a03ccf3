//! The answer of a tenancy bulk, written as items complete.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use osproxy_rewrite::bulk::{item_error, item_status, BulkOp};

/// Writes item results to the client in the client's order as soon as they
/// are contiguous: `{"items":[...],"took":N,"errors":B}` (the keys after the
/// items, since they are known last). Results that complete ahead of an
/// earlier item wait here; batches are flushed so that this wait stays short.
pub(super) struct Emitter {
    tx: tokio::sync::mpsc::Sender<Bytes>,
    /// Positions handed out so far.
    pub(super) count: usize,
    /// The next position to write.
    next: usize,
    waiting: BTreeMap<usize, Vec<u8>>,
    /// The bytes of the results in `waiting`.
    waiting_bytes: usize,
    ready: Vec<u8>,
    errors: bool,
    metrics: Arc<osproxy_observe::Metrics>,
}

/// Which of [`osproxy_observe::BULK_OUTCOMES`] an item result is.
fn outcome(item: &[u8], status: Option<u16>) -> usize {
    // Built once: a searcher costs more to build than one item takes to search.
    static RESULT: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"result\":\""));
    let result = RESULT.find(item).and_then(|at| {
        let rest = &item[at + 10..];
        let end = memchr::memchr(b'"', rest)?;
        Some(&rest[..end])
    });
    match (status, result) {
        (_, Some(b"not_found")) => 4,
        (Some(s), _) if s >= 300 => 5,
        (None, _) => 5,
        (_, Some(b"created")) => 0,
        (_, Some(b"updated")) => 1,
        (_, Some(b"deleted")) => 2,
        (_, Some(b"noop")) => 3,
        (Some(201), _) => 0,
        _ => 1,
    }
}

impl Emitter {
    pub(super) fn new(
        tx: tokio::sync::mpsc::Sender<Bytes>,
        metrics: Arc<osproxy_observe::Metrics>,
    ) -> Self {
        Emitter {
            tx,
            count: 0,
            next: 0,
            waiting: BTreeMap::new(),
            waiting_bytes: 0,
            ready: Vec::new(),
            errors: false,
            metrics,
        }
    }

    pub(super) fn open(&mut self) {
        self.ready.extend_from_slice(b"{\"items\":[");
        self.pump();
    }

    pub(super) fn position(&mut self) -> usize {
        self.count += 1;
        self.count - 1
    }

    pub(super) fn set(&mut self, position: usize, item: Vec<u8>) {
        let status = item_status(&item);
        self.set_known(position, item, status);
    }

    /// [`Self::set`] of an item whose status is known already.
    pub(super) fn set_known(&mut self, position: usize, item: Vec<u8>, status: Option<u16>) {
        if status.is_none_or(|s| s >= 300) {
            self.errors = true;
        }
        self.metrics.bulk_item(outcome(&item, status));
        self.waiting_bytes += item.len();
        if let Some(replaced) = self.waiting.insert(position, item) {
            self.waiting_bytes -= replaced.len();
        }
        while let Some(item) = self.waiting.remove(&self.next) {
            self.waiting_bytes -= item.len();
            if self.next > 0 {
                self.ready.push(b',');
            }
            self.ready.extend_from_slice(&item);
            self.next += 1;
        }
    }

    /// The bytes of results held: waiting behind an earlier item, or
    /// ready and not yet sent.
    pub(super) fn held(&self) -> usize {
        self.waiting_bytes + self.ready.capacity()
    }

    /// Hands what is ready to the answer, without waiting: while the
    /// client is not reading (many send their whole body before they read
    /// the answer) the results wait here, counted by [`Emitter::held`] in
    /// the bulk's charge, and the body goes on being read. Waiting instead
    /// deadlocked such a client: osproxy stopped reading its body, it
    /// never finished sending, and the connection was cut with items
    /// applied and unreported. A client that went away is not an error:
    /// the writes still apply.
    pub(super) fn pump(&mut self) {
        if self.ready.is_empty() {
            return;
        }
        match self.tx.try_reserve() {
            Ok(slot) => slot.send(Bytes::from(std::mem::take(&mut self.ready))),
            Err(tokio::sync::mpsc::error::TrySendError::Full(())) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Closed(())) => self.ready = Vec::new(),
        }
    }

    /// Sends what is ready, waiting for the client to take it (the body
    /// has been read whole).
    async fn flush(&mut self) {
        if !self.ready.is_empty() {
            let chunk = Bytes::from(std::mem::take(&mut self.ready));
            let _ = self.tx.send(chunk).await;
        }
    }

    pub(super) async fn close(&mut self, took: u64) {
        for position in self.next..self.count {
            if !self.waiting.contains_key(&position) {
                self.set(
                    position,
                    item_error(
                        BulkOp::Index,
                        None,
                        None,
                        500,
                        "internal_error",
                        "no result for this item",
                    ),
                );
            }
        }
        self.ready.extend_from_slice(
            format!("],\"took\":{took},\"errors\":{}}}", self.errors).as_bytes(),
        );
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_are_written_in_the_clients_order() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut out = Emitter::new(tx, Arc::new(osproxy_observe::Metrics::new(["main"])));
        out.open();
        let p: Vec<usize> = (0..3).map(|_| out.position()).collect();
        out.set(p[2], br#"{"index":{"status":201}}"#.to_vec());
        out.set(p[1], br#"{"delete":{"status":404}}"#.to_vec());
        out.pump();
        out.set(p[0], br#"{"create":{"status":201}}"#.to_vec());
        out.close(7).await;
        drop(out);
        let mut body = Vec::new();
        while let Some(chunk) = rx.recv().await {
            body.extend_from_slice(&chunk);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["took"], 7);
        assert_eq!(v["errors"], true, "a 404 delete is an error item");
        let ops: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        assert_eq!(ops, ["create", "delete", "index"]);
    }

    #[tokio::test]
    async fn missing_results_are_reported_not_dropped() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(64);
        let mut out = Emitter::new(tx, Arc::new(osproxy_observe::Metrics::new(["main"])));
        out.open();
        let _ = out.position();
        out.close(1).await;
        drop(out);
        let mut body = Vec::new();
        while let Some(chunk) = rx.recv().await {
            body.extend_from_slice(&chunk);
        }
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["items"][0]["index"]["status"], 500);
    }
}
