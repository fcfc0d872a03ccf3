//! Shape-only request traces and the rings that keep them.
//!
//! A trace records, per stage, *what kind of thing* happened: names (an
//! endpoint kind, a cluster id, an index or partition name, a field or query
//! construct osproxy added), counts, byte sizes, flags and durations. By
//! construction it cannot hold a tenant's value: [`Value`] has no variant
//! for free text, and a [`Name`] is built either from a `&'static str` in
//! osproxy's own code or from an identifier that passes the identifier
//! shape check. Error reasons (which may quote a request) are not recorded;
//! the stable code, the retryable flag and the remediation sentence are.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Map, Value as Json};

/// The stages of a request, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Reading the request head.
    Ingress,
    /// Finding and checking the principal.
    Authenticate,
    /// Naming the endpoint and the indices.
    Classify,
    /// Finding the partition and its placement (or the passthrough route).
    Resolve,
    /// Rewriting the request for its placement.
    Rewrite,
    /// The exchange with the cluster.
    Dispatch,
    /// Rewriting the answer back.
    Reverse,
}

impl Stage {
    const ALL: [Stage; 7] = [
        Stage::Ingress,
        Stage::Authenticate,
        Stage::Classify,
        Stage::Resolve,
        Stage::Rewrite,
        Stage::Dispatch,
        Stage::Reverse,
    ];

    /// Its name in explanations.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Ingress => "ingress",
            Stage::Authenticate => "authenticate",
            Stage::Classify => "classify",
            Stage::Resolve => "resolve",
            Stage::Rewrite => "rewrite",
            Stage::Dispatch => "dispatch",
            Stage::Reverse => "reverse",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How much a trace shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Detail {
    /// Names, ids, counts and sizes.
    Shape = 1,
    /// Plus durations.
    Timing = 2,
    /// Plus the field names and constructs the rewrite added or removed.
    RewriteDiff = 3,
}

/// A name osproxy may record: never a value from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(std::borrow::Cow<'static, str>);

impl Name {
    /// A name written in osproxy's own code.
    pub const fn fixed(s: &'static str) -> Name {
        Name(std::borrow::Cow::Borrowed(s))
    }

    /// An identifier from configuration or a request path (an index,
    /// partition, principal or cluster name): kept only when it has an
    /// identifier's shape (1–255 of `[A-Za-z0-9_.:*+-]`), else replaced by
    /// a marker.
    pub fn ident(s: &str) -> Name {
        let ok = !s.is_empty()
            && s.len() <= 255
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:*+-".contains(&b));
        if ok {
            Name(std::borrow::Cow::Owned(s.to_string()))
        } else {
            Name::fixed("<not an identifier>")
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A recorded value: no variant can hold free text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A name.
    Name(Name),
    /// A count of things.
    Count(u64),
    /// A size in bytes.
    Bytes(u64),
    /// A yes/no fact.
    Flag(bool),
}

impl Value {
    fn to_json(&self) -> Json {
        match self {
            Value::Name(n) => Json::from(n.as_str()),
            Value::Count(c) | Value::Bytes(c) => Json::from(*c),
            Value::Flag(f) => Json::from(*f),
        }
    }
}

/// Whether the rewrite added or removed a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Added to the request (a field, a filter, a parameter).
    Added,
    /// Removed (from the request, or from the answer on the way back).
    Removed,
}

/// Why a request failed, in stable terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The stage it failed in.
    pub stage: Stage,
    /// A stable error code.
    pub code: &'static str,
    /// The HTTP status answered.
    pub status: u16,
    /// Whether repeating the request can succeed.
    pub retryable: bool,
    /// What to do about it.
    pub remediation: &'static str,
}

/// The attributes directives match on.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// Endpoint kind.
    pub endpoint: Option<&'static str>,
    /// Principal name.
    pub principal: Option<Name>,
    /// Partition id.
    pub partition: Option<Name>,
    /// Logical index.
    pub index: Option<Name>,
}

/// One request's trace.
#[derive(Debug)]
pub struct Trace {
    request_id: Name,
    started: Instant,
    current: Stage,
    /// (offset from start, duration) per stage, in µs.
    times: [Option<(u64, u64)>; 7],
    entered: [Option<Instant>; 7],
    records: Vec<(Stage, &'static str, Value)>,
    diff: Vec<(Stage, Change, Name)>,
    failure: Option<Failure>,
    status: u16,
    /// What directives match on.
    pub subject: Subject,
    /// The `traceparent` to send upstream (only when the request is
    /// exported).
    pub propagate: Option<String>,
}

impl Trace {
    /// A trace starting now.
    pub fn new(request_id: &str) -> Trace {
        let now = Instant::now();
        let mut t = Trace {
            request_id: Name::ident(request_id),
            started: now,
            current: Stage::Ingress,
            times: [None; 7],
            entered: [None; 7],
            records: Vec::new(),
            diff: Vec::new(),
            failure: None,
            status: 0,
            subject: Subject::default(),
            propagate: None,
        };
        t.entered[0] = Some(now);
        t
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        self.request_id.as_str()
    }

    /// Enters `stage` (ending the previous one's timing).
    pub fn enter(&mut self, stage: Stage) {
        self.leave();
        self.current = stage;
        self.entered[stage.index()] = Some(Instant::now());
    }

    fn leave(&mut self) {
        let i = self.current.index();
        if let Some(at) = self.entered[i].take() {
            let offset = at.duration_since(self.started).as_micros() as u64;
            let took = at.elapsed().as_micros() as u64;
            self.times[i] = Some(match self.times[i] {
                Some((o, d)) => (o, d + took),
                None => (offset, took),
            });
        }
    }

    /// The stage being served.
    pub fn stage(&self) -> Stage {
        self.current
    }

    /// Records one fact of the current stage.
    pub fn record(&mut self, key: &'static str, value: Value) {
        self.records.push((self.current, key, value));
    }

    /// Records a name the rewrite added or removed.
    pub fn change(&mut self, change: Change, name: Name) {
        self.diff.push((self.current, change, name));
    }

    /// Records the failure (in the current stage unless said otherwise).
    pub fn fail(&mut self, failure: Failure) {
        self.failure = Some(failure);
    }

    /// Whether a failure is recorded.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Ends the trace with the answered status.
    pub fn finish(&mut self, status: u16) {
        self.leave();
        self.status = status;
    }

    /// The answered status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Total time so far, µs.
    pub fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// Per-stage (offset, duration) in µs, for span export.
    pub fn stage_times(&self) -> impl Iterator<Item = (Stage, u64, u64)> + '_ {
        Stage::ALL
            .iter()
            .filter_map(|s| self.times[s.index()].map(|(o, d)| (*s, o, d)))
    }

    /// The explanation at `detail`, for `/v1/explain`, logs and spans.
    pub fn explain(&self, detail: Detail, directives: &[String], instance: &str) -> Json {
        let mut stages = Vec::new();
        for stage in Stage::ALL {
            let mut facts = Map::new();
            for (s, k, v) in &self.records {
                if *s == stage {
                    facts.insert((*k).to_string(), v.to_json());
                }
            }
            if detail >= Detail::RewriteDiff {
                let names = |c: Change| -> Vec<Json> {
                    self.diff
                        .iter()
                        .filter(|(s, ch, _)| *s == stage && *ch == c)
                        .map(|(_, _, n)| Json::from(n.as_str()))
                        .collect()
                };
                let (added, removed) = (names(Change::Added), names(Change::Removed));
                if !added.is_empty() {
                    facts.insert("added".into(), Json::from(added));
                }
                if !removed.is_empty() {
                    facts.insert("removed".into(), Json::from(removed));
                }
            }
            let timed = self.times[stage.index()];
            if facts.is_empty() && timed.is_none() {
                continue;
            }
            let mut entry = Map::new();
            entry.insert("stage".into(), Json::from(stage.as_str()));
            if detail >= Detail::Timing {
                if let Some((offset, took)) = timed {
                    entry.insert("start_us".into(), Json::from(offset));
                    entry.insert("duration_us".into(), Json::from(took));
                }
            }
            entry.extend(facts);
            stages.push(Json::Object(entry));
        }
        let s = &self.subject;
        let name = |n: &Option<Name>| n.as_ref().map(|n| Json::from(n.as_str()));
        let mut out = json!({
            "request_id": self.request_id.as_str(),
            "instance": Name::ident(instance).as_str(),
            "selected_by": directives,
            "level": match detail { Detail::Shape => "shape", Detail::Timing => "timing", Detail::RewriteDiff => "rewrite-diff" },
            "endpoint": s.endpoint,
            "principal": name(&s.principal),
            "partition": name(&s.partition),
            "index": name(&s.index),
            "status": self.status,
            "stages": stages,
        });
        if detail >= Detail::Timing {
            out["duration_us"] = Json::from(
                self.times
                    .iter()
                    .flatten()
                    .map(|(o, d)| o + d)
                    .max()
                    .unwrap_or(0),
            );
        }
        out["outcome"] = match &self.failure {
            None => json!({"ok": true}),
            Some(f) => json!({
                "ok": false, "failed_stage": f.stage.as_str(), "code": f.code, "status": f.status,
                "retryable": f.retryable, "remediation": f.remediation,
            }),
        };
        out
    }
}

/// At most this many capture rings (a set holds at most 64 directives;
/// signed headers add their own).
const MAX_RINGS: usize = 128;

/// A finished, selected trace with what selected it.
#[derive(Debug)]
pub struct Kept {
    /// The trace.
    pub trace: Trace,
    /// The level it is shown at.
    pub detail: Detail,
    /// The ids of the directives that selected it.
    pub directives: Vec<String>,
}

/// This instance's explanations: the last `capacity` selected requests by
/// id, and per directive with `capture`, the last `capacity` it matched.
/// Serialised only when asked for.
#[derive(Debug)]
pub struct Explanations {
    instance: String,
    capacity: usize,
    recent: Mutex<VecDeque<Arc<Kept>>>,
    captured: Mutex<HashMap<String, VecDeque<Arc<Kept>>>>,
}

impl Explanations {
    /// Empty rings of `capacity` each.
    pub fn new(instance: &str, capacity: usize) -> Explanations {
        Explanations {
            instance: instance.to_string(),
            capacity: capacity.max(1),
            recent: Mutex::new(VecDeque::new()),
            captured: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps a selected trace; `capture` names the directives that keep it
    /// in their capture ring.
    pub fn keep(&self, kept: Kept, capture: &[String]) -> Arc<Kept> {
        let kept = Arc::new(kept);
        if let Ok(mut r) = self.recent.lock() {
            if r.len() == self.capacity {
                r.pop_front();
            }
            r.push_back(kept.clone());
        }
        if !capture.is_empty() {
            if let Ok(mut c) = self.captured.lock() {
                // Rings of directives no longer published go first once
                // there are more rings than a set may hold.
                while c.len() >= MAX_RINGS && !c.contains_key(&capture[0]) {
                    let oldest = c
                        .iter()
                        .min_by_key(|(_, r)| r.back().map(|k| k.trace.started))
                        .map(|(id, _)| id.clone());
                    match oldest {
                        Some(id) => c.remove(&id),
                        None => break,
                    };
                }
                for id in capture {
                    let ring = c.entry(id.clone()).or_default();
                    if ring.len() == self.capacity {
                        ring.pop_front();
                    }
                    ring.push_back(kept.clone());
                }
            }
        }
        kept
    }

    /// The explanation of one request, if this instance kept it.
    pub fn get(&self, request_id: &str) -> Option<Json> {
        let found = {
            let r = self.recent.lock().ok()?;
            r.iter()
                .rev()
                .find(|k| k.trace.request_id() == request_id)
                .cloned()
        };
        found.map(|k| self.render(&k))
    }

    /// The explanations a directive captured, oldest first (rendered
    /// after the ring's lock is released).
    pub fn captured(&self, directive: &str) -> Vec<Json> {
        let kept: Vec<Arc<Kept>> = self
            .captured
            .lock()
            .ok()
            .and_then(|c| c.get(directive).map(|r| r.iter().cloned().collect()))
            .unwrap_or_default();
        kept.iter().map(|k| self.render(k)).collect()
    }

    /// Renders one kept trace.
    pub fn render(&self, k: &Kept) -> Json {
        k.trace.explain(k.detail, &k.directives, &self.instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_identifiers_only() {
        assert_eq!(Name::ident("orders-acme").as_str(), "orders-acme");
        assert_eq!(Name::ident("a b").as_str(), "<not an identifier>");
        assert_eq!(Name::ident("{\"x\":1}").as_str(), "<not an identifier>");
        assert_eq!(Name::ident("").as_str(), "<not an identifier>");
    }

    #[test]
    fn explanation_levels() {
        let mut t = Trace::new("req-1");
        t.subject.endpoint = Some("search");
        t.enter(Stage::Authenticate);
        t.record("principal", Value::Name(Name::ident("acme-svc")));
        t.enter(Stage::Rewrite);
        t.change(Change::Added, Name::fixed("bool.filter.term"));
        t.record("body_bytes", Value::Bytes(120));
        t.fail(Failure {
            stage: Stage::Rewrite,
            code: "construct_refused",
            status: 400,
            retryable: false,
            remediation: "remove it",
        });
        t.finish(400);
        let shape = t.explain(Detail::Shape, &["d".into()], "i1");
        assert_eq!(shape["outcome"]["failed_stage"], "rewrite");
        assert!(shape.get("duration_us").is_none());
        let rewrite = |e: &Json| {
            e["stages"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["stage"] == "rewrite")
                .cloned()
                .unwrap()
        };
        assert!(rewrite(&shape).get("added").is_none());
        assert_eq!(rewrite(&shape)["body_bytes"], 120);
        let diff = t.explain(Detail::RewriteDiff, &[], "i1");
        assert_eq!(rewrite(&diff)["added"][0], "bool.filter.term");
        assert!(rewrite(&diff).get("duration_us").is_some());

        let ring = Explanations::new("i1", 2);
        let kept = Kept {
            trace: t,
            detail: Detail::Shape,
            directives: vec!["d".into()],
        };
        ring.keep(kept, &["d".into()]);
        assert!(ring.get("req-1").is_some());
        assert_eq!(ring.captured("d").len(), 1);
        for i in 0..3 {
            let mut t = Trace::new(&format!("r{i}"));
            t.finish(200);
            ring.keep(
                Kept {
                    trace: t,
                    detail: Detail::Shape,
                    directives: vec![],
                },
                &[],
            );
        }
        assert!(ring.get("req-1").is_none(), "the ring is bounded");
    }
}
