//! `/v1/directives` and `/v1/limits`: a document of the fleet's (the
//! diagnostics directive set, the per-tenant limits) read whole, replaced
//! whole (strict decoder, compare-and-swap on its epoch) or cleared.

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use osproxy_control::{ControlPlane, WriteError};
use serde_json::{json, Value};

use crate::json_response;
use crate::writes::{changed, epoch_missing, epoch_param, write_error};

/// Which document a route serves.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Document {
    Directives,
    Limits,
}

impl Document {
    fn name(self) -> &'static str {
        match self {
            Document::Directives => "the directive set",
            Document::Limits => "the limits",
        }
    }

    /// The published document and its epoch (0: none published).
    fn read(self, control: &ControlPlane) -> Value {
        let snap = control.load();
        let (mut out, epoch) = match self {
            Document::Directives => match snap.directives() {
                Some((set, epoch)) => (serde_json::to_value(&**set).unwrap_or_default(), *epoch),
                None => (json!({"directives": []}), 0),
            },
            Document::Limits => match snap.limits() {
                Some((l, epoch)) => (serde_json::to_value(&**l).unwrap_or_default(), *epoch),
                None => (json!({}), 0),
            },
        };
        out["epoch"] = json!(epoch);
        if let Document::Limits = self {
            // Each instance enforces its share of every budget.
            out["fleet_size"] = json!(control.fleet_size());
        }
        out
    }
}

pub(crate) async fn route(
    doc: Document,
    control: &ControlPlane,
    method: &Method,
    query: Option<&str>,
    body: &Bytes,
) -> Response<Full<Bytes>> {
    let epoch = match epoch_param(query) {
        Ok(e) => e,
        Err(m) => return json_response(StatusCode::BAD_REQUEST, &json!({"error": m})),
    };
    let conflict = |current| changed(doc.name(), current);
    match *method {
        Method::GET => json_response(StatusCode::OK, &doc.read(control)),
        Method::PUT => {
            let put = match doc {
                Document::Directives => control.put_directives(body, epoch).await,
                Document::Limits => control.put_limits(body, epoch).await,
            };
            match put {
                Ok(e) => json_response(StatusCode::OK, &json!({"epoch": e})),
                Err(WriteError::Conflict(c)) => conflict(c.epoch),
                Err(WriteError::Invalid(m)) => json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"error": format!("{} refused, the previous one stays: {m}", doc.name())}),
                ),
                Err(e) => write_error(e),
            }
        }
        Method::DELETE => {
            let Some(epoch) = epoch else {
                return epoch_missing();
            };
            let cleared = match doc {
                Document::Directives => control.clear_directives(epoch).await,
                Document::Limits => control.clear_limits(epoch).await,
            };
            match cleared {
                Ok(()) => json_response(StatusCode::OK, &json!({"cleared": true})),
                Err(WriteError::Conflict(c)) => conflict(c.epoch),
                Err(e) => write_error(e),
            }
        }
        _ => json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": format!("GET, PUT or DELETE {}", doc.name())}),
        ),
    }
}
