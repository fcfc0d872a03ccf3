//! The admin listener's routes: `/healthz`, `/readyz`, `/metrics`.
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

/// What the admin routes read.
#[derive(Debug, Clone)]
pub struct Admin {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl Admin {
    /// The admin routes over this instance's state.
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        Admin { metrics, readiness }
    }

    /// Answers one admin request.
    pub async fn handle<B>(self, req: Request<B>) -> Result<Response<Full<Bytes>>, Infallible> {
        Ok(self.route(req.method(), req.uri().path()))
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

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
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
