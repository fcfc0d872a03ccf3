//! Readiness: whether this instance should receive traffic. Written by the
//! proxy's cluster probes and the shutdown path, read by `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Per-cluster "answered once" flags plus a draining flag.
#[derive(Debug)]
pub struct Readiness {
    clusters: Vec<ClusterState>,
    draining: AtomicBool,
    /// Why the control snapshot is not built yet (`None`: it is).
    control: Mutex<Option<String>>,
}

#[derive(Debug)]
struct ClusterState {
    id: String,
    answered: AtomicBool,
    last_error: Mutex<String>,
}

impl Readiness {
    /// Nothing answered yet.
    pub fn new<'a>(cluster_ids: impl IntoIterator<Item = &'a str>) -> Self {
        let clusters = cluster_ids
            .into_iter()
            .map(|id| ClusterState {
                id: id.to_string(),
                answered: AtomicBool::new(false),
                last_error: Mutex::new("not probed yet".to_string()),
            })
            .collect();
        Readiness {
            clusters,
            draining: AtomicBool::new(false),
            control: Mutex::new(None),
        }
    }

    /// The cluster at `index` answered an HTTP request.
    pub fn mark_answered(&self, index: usize) {
        if let Some(c) = self.clusters.get(index) {
            c.answered.store(true, Ordering::Release);
        }
    }

    /// Whether the cluster at `index` has answered once.
    pub fn has_answered(&self, index: usize) -> bool {
        self.clusters
            .get(index)
            .is_some_and(|c| c.answered.load(Ordering::Acquire))
    }

    /// Records why the cluster at `index` has not answered.
    pub fn record_error(&self, index: usize, error: String) {
        if let Some(c) = self.clusters.get(index) {
            if let Ok(mut e) = c.last_error.lock() {
                *e = error;
            }
        }
    }

    /// The control snapshot is not built yet, for `reason`; or it is (`None`).
    pub fn set_control_pending(&self, reason: Option<String>) {
        if let Ok(mut c) = self.control.lock() {
            *c = reason;
        }
    }

    /// The instance started draining: readiness is lost for good.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// `Ok` when ready, otherwise every reason it is not.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.draining.load(Ordering::Acquire) {
            reasons.push("instance is shutting down".to_string());
        }
        if let Some(r) = self.control.lock().ok().and_then(|c| c.clone()) {
            reasons.push(r);
        }
        for c in &self.clusters {
            if !c.answered.load(Ordering::Acquire) {
                let err = c.last_error.lock().map(|e| e.clone()).unwrap_or_default();
                reasons.push(format!("cluster {} has not answered yet: {err}", c.id));
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_once_every_cluster_answered() {
        let r = Readiness::new(["a", "b"]);
        r.record_error(1, "connection refused".into());
        r.mark_answered(0);
        let reasons = r.check().err().unwrap_or_default();
        assert_eq!(
            reasons,
            ["cluster b has not answered yet: connection refused"]
        );
        r.mark_answered(1);
        assert!(r.check().is_ok());
        r.start_draining();
        assert!(r.check().is_err());
    }
}
