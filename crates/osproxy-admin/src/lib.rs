//! The admin listener's routes: `/healthz`, `/readyz`, `/metrics`, and the
//! operator API over the control plane (`/v1/placements`).
//!
//! It serves operators and orchestrators, never application traffic, and it
//! must stay answerable while the data path is saturated or draining.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use osproxy_observe::{Metrics, Readiness};
use serde_json::json;

mod documents;
mod migrations;
mod placements;
mod writes;

/// Decides whether a request carries an operator's credentials.
pub type OperatorCheck = Arc<dyn Fn(&http::HeaderMap) -> bool + Send + Sync>;

/// This instance, as the fleet list shows it.
pub use osproxy_control::Member as Instance;

/// What the admin routes read.
#[derive(Clone)]
pub struct Admin {
    instance: Instance,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    control: Option<Arc<osproxy_control::ControlPlane>>,
    operator: OperatorCheck,
    explanations: Option<Arc<osproxy_observe::trace::Explanations>>,
    controller: Option<Arc<osproxy_migrate::controller::Controller>>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").finish_non_exhaustive()
    }
}

impl Admin {
    /// The health and metrics routes over this instance's state (no
    /// operator API).
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        Admin {
            instance: Instance::default(),
            metrics,
            readiness,
            control: None,
            operator: Arc::new(|_| false),
            explanations: None,
            controller: None,
        }
    }

    /// Names this instance in the fleet list.
    pub fn with_instance(mut self, instance: Instance) -> Self {
        self.instance = instance;
        self
    }

    /// Adds the operator API over `control`, gated by `operator`.
    pub fn with_control(
        mut self,
        control: Arc<osproxy_control::ControlPlane>,
        operator: OperatorCheck,
    ) -> Self {
        self.control = Some(control);
        self.operator = operator;
        self
    }

    /// Serves `/v1/migrations` with this controller.
    pub fn with_controller(mut self, c: Arc<osproxy_migrate::controller::Controller>) -> Self {
        self.controller = Some(c);
        self
    }

    /// Serves `/v1/explain` from this instance's explanations.
    pub fn with_explanations(mut self, e: Arc<osproxy_observe::trace::Explanations>) -> Self {
        self.explanations = Some(e);
        self
    }

    fn explain(&self, path: &str, query: Option<&str>) -> Response<Full<Bytes>> {
        let Some(ex) = &self.explanations else {
            return json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": "no explanations here"}),
            );
        };
        if let Some(id) = path.strip_prefix("/v1/explain/").filter(|i| !i.is_empty()) {
            return match ex.get(id) {
                Some(e) => json_response(StatusCode::OK, &e),
                None => json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("this instance kept no explanation of request {id:?}: only requests a directive (or a signed debug header) selected are explained, the most recent ones first, on the instance that served them")}),
                ),
            };
        }
        let directive = query
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("directive="));
        match directive {
            Some(d) => json_response(
                StatusCode::OK,
                &json!({"directive": d, "explanations": ex.captured(d)}),
            ),
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "GET /v1/explain/{request_id}, or /v1/explain?directive=ID for a capturing directive's ring"}),
            ),
        }
    }

    /// Answers one admin request.
    pub async fn handle<B>(self, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if req.uri().path().starts_with("/v1/") {
            if !(self.operator)(req.headers()) {
                return Ok(json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({"error": "the admin API needs `Authorization: Bearer <token>` of a principal with operator = true"}),
                ));
            }
            let Some(control) = self.control.clone() else {
                return Ok(json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": "no control plane here"}),
                ));
            };
            if req.uri().path() == "/v1/explain" || req.uri().path().starts_with("/v1/explain/") {
                if req.method() != Method::GET {
                    return Ok(json_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &json!({"error": "GET an explanation"}),
                    ));
                }
                return Ok(self.explain(req.uri().path(), req.uri().query()));
            }
            if req.uri().path() == "/v1/fleet" {
                return Ok(self.fleet(&control).await);
            }
            if req.uri().path() == "/v1/usage" {
                if req.method() != Method::GET {
                    return Ok(json_response(
                        StatusCode::METHOD_NOT_ALLOWED,
                        &json!({"error": "GET the usage"}),
                    ));
                }
                return Ok(json_response(StatusCode::OK, &self.metrics.usage().json()));
            }
            let (parts, body) = req.into_parts();
            let body =
                http_body_util::BodyExt::collect(http_body_util::Limited::new(body, 1 << 20))
                    .await
                    .map(|c| c.to_bytes())
                    .unwrap_or_default();
            if parts.uri.path().starts_with("/v1/migrations") {
                return Ok(migrations::route(
                    &control,
                    self.controller.as_ref(),
                    &parts.method,
                    parts.uri.path(),
                    &body,
                )
                .await);
            }
            let document = match parts.uri.path() {
                "/v1/directives" => Some(documents::Document::Directives),
                "/v1/limits" => Some(documents::Document::Limits),
                _ => None,
            };
            if let Some(doc) = document {
                return Ok(documents::route(
                    doc,
                    &control,
                    &parts.method,
                    parts.uri.query(),
                    &body,
                )
                .await);
            }
            return Ok(placements::route(
                &control,
                &parts.method,
                parts.uri.path(),
                parts.uri.query(),
                &body,
            )
            .await);
        }
        Ok(self.route(req.method(), req.uri().path()))
    }

    /// The live fleet: every instance's record (with the memory backend,
    /// this instance alone).
    async fn fleet(&self, control: &osproxy_control::ControlPlane) -> Response<Full<Bytes>> {
        match control.fleet(&self.instance).await {
            Ok(instances) => json_response(
                StatusCode::OK,
                &json!({"backend": control.backend(), "instances": instances}),
            ),
            Err(e) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": format!("cannot read the fleet from the control store: {e}")}),
            ),
        }
    }

    fn route(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        if method != Method::GET && method != Method::HEAD {
            return json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "only GET and HEAD are served here"}),
            );
        }
        match path {
            "/healthz" => json_response(StatusCode::OK, &json!({"status": "ok"})),
            "/readyz" => match self.readiness.check() {
                Ok(()) => json_response(StatusCode::OK, &json!({"ready": true})),
                Err(reasons) => json_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"ready": false, "reasons": reasons}),
                ),
            },
            "/metrics" => {
                if let Some(c) = &self.control {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    let active = c
                        .load()
                        .directives()
                        .map(|(set, _)| set.live(now).count())
                        .unwrap_or(0);
                    self.metrics.set_directives_active(active);
                    let snap = c.load();
                    let mut phases = [
                        ("copying", 0u64),
                        ("cutover", 0),
                        ("done", 0),
                        ("aborted", 0),
                        ("failed", 0),
                    ];
                    let mut copied = 0;
                    for (r, _) in snap.migrations() {
                        copied += r.copied;
                        let name = serde_json::to_value(r.phase)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_string))
                            .unwrap_or_default();
                        if let Some(slot) = phases.iter_mut().find(|(p, _)| *p == name) {
                            slot.1 += 1;
                        }
                    }
                    self.metrics.set_migrations(&phases, copied);
                    let n = c.counters();
                    self.metrics.set_control(osproxy_observe::ControlStanding {
                        applied_revision: n.applied_revision,
                        fresh_age_seconds: n.fresh_age_ms as f64 / 1000.0,
                        rejected_keys: n.rejected_keys,
                        events: n.events,
                        rejections: n.rejections,
                        reconnects: n.reconnects,
                        reloads: n.reloads,
                    });
                }
                let mut resp = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                resp.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                resp
            }
            _ => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no admin route {path}; try /healthz, /readyz or /metrics")}),
            ),
        }
    }
}

pub(crate) fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_reports_reasons() {
        let admin = Admin::new(
            Arc::new(Metrics::new(["main"])),
            Arc::new(Readiness::new(["main"])),
        );
        let resp = admin.route(&Method::GET, "/readyz");
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        admin.readiness.mark_answered(0);
        assert_eq!(
            admin.route(&Method::GET, "/readyz").status(),
            StatusCode::OK
        );
        assert_eq!(
            admin.route(&Method::GET, "/nope").status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            admin.route(&Method::POST, "/healthz").status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
