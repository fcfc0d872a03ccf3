//! Readiness probes: each cluster is asked `GET /` until it answers once.
//! Any HTTP answer counts (a secured cluster's 401 still proves it is up).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request};
use osproxy_observe::Readiness;

use crate::body::RequestBody;
use crate::client::Upstreams;

/// Spawns one probe task per cluster; each ends once its cluster answered.
pub fn spawn_probes(upstreams: Arc<Upstreams>, readiness: Arc<Readiness>) {
    for index in 0..upstreams.len() {
        let upstreams = upstreams.clone();
        let readiness = readiness.clone();
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(100);
            loop {
                let Some(cluster) = upstreams.get(index) else {
                    return;
                };
                let req = Request::builder()
                    .method(Method::GET)
                    .uri("/")
                    .body(RequestBody::Empty);
                let Ok(req) = req else { return };
                match cluster.send(req, Duration::from_secs(5)).await {
                    Ok(_) => {
                        readiness.mark_answered(index);
                        tracing::info!(cluster = %cluster.id, "cluster answered");
                        return;
                    }
                    Err(e) => readiness.record_error(index, e.to_string()),
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        });
    }
}
