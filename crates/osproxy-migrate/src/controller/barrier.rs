//! The cutover barrier: every live instance has applied the cutover,
//! accepted the partition's value, and drained the writes it admitted
//! before.

use std::time::Duration;

use super::*;

impl Controller {
    /// How long a barrier waits: the upstream deadline (a write admitted
    /// before the cutover may take that long) plus 5 s, at least
    /// [`BARRIER_TIMEOUT`].
    fn barrier_limit(&self) -> Duration {
        BARRIER_TIMEOUT.max(self.timeout + Duration::from_secs(5))
    }

    /// Waits until every live instance has applied `revision`, accepted the
    /// partition's value at it, and has no write in flight that it admitted
    /// under an older revision. An instance that refused the value (its
    /// config lacks a cluster, say) would keep writing to the old placement:
    /// the migration fails, naming it.
    pub(super) async fn barrier(
        &self,
        revision: u64,
        index: &str,
        partition: &str,
    ) -> Result<(), Stop> {
        if self.plane.backend() == "memory" {
            // One instance: the value is applied when the step returns;
            // its own writes in flight are counted here.
            return self.drain_local(revision).await;
        }
        let me = osproxy_control::Member::default();
        let key_end = format!("/placements/{index}/{partition}");
        let limit = self.barrier_limit();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let fleet = self
                .plane
                .fleet(&me)
                .await
                .map_err(|e| Stop::Failed(format!("cannot read the fleet: {e}")))?;
            let mut behind = Vec::new();
            for r in &fleet {
                let id = r
                    .get("id")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?");
                let at = |k: &str| r.get(k).and_then(serde_json::Value::as_u64);
                let refused = r
                    .get("rejected_keys")
                    .and_then(serde_json::Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|k| {
                        k.get("key")
                            .and_then(serde_json::Value::as_str)
                            .is_some_and(|k| k.ends_with(&key_end))
                    });
                if let Some(k) = refused {
                    let reason = k
                        .get("reason")
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("");
                    return Err(Stop::Failed(format!(
                        "instance {id} refused the partition's migrating value ({reason}); it would keep writing to the old placement — fix its configuration, then start the migration again"
                    )));
                }
                // An instance that does not report what it has in flight is
                // counted by its applied revision alone.
                let drained = at("inflight_from").or(at("applied_revision"));
                if at("applied_revision").is_none_or(|a| a < revision)
                    || drained.is_none_or(|d| d < revision)
                {
                    behind.push(id.to_string());
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Stop::Failed(format!(
                    "instances {behind:?} did not confirm the cutover (applied and writes drained) within {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The memory backend's barrier: this instance's writes admitted before
    /// `revision` have all been answered.
    pub(super) async fn drain_local(&self, revision: u64) -> Result<(), Stop> {
        let limit = self.barrier_limit();
        let deadline = tokio::time::Instant::now() + limit;
        while self.plane.inflight_from() < revision {
            if tokio::time::Instant::now() > deadline {
                return Err(Stop::Failed(format!(
                    "writes admitted before the cutover were still in flight after {limit:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }
}
